"""The license step of `run`, through the real CLI against a standalone sandbox with SKUs (over loopback): each
user ends with exactly its row's licenses, asked of the sandbox over HTTP; units move once per user whatever the
faults; a refused license makes the row `partial` (exit 1) and the next run of the same journal assigns only it;
rows whose SKU is short when the run starts are refused up front."""

from __future__ import annotations

import json
import shlex
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from bulkonboard.journal.store import open_existing

from .license_support import (
    available_units,
    held_licenses,
    licensed_data,
    licensed_sandbox,
    licensed_sheet,
    units_used,
)
from .sandbox_http import CONTOSO, E3, SAM, license_update
from .support import ROOT, clean_env, results_rows, run_cli, sheet_rows, summary_items

pytestmark = pytest.mark.timeout(240)

TOKEN = {"BULKONBOARD_ACCESS_TOKEN": "sandbox"}


def run(sheet: Path, url: str, journal: Path, results: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "run", sheet, "--sandbox-url", url, "--customer", CONTOSO, "--journal", journal, "--results", results,
        "--rate", "inf", "--log-format", "json", *extra, env=TOKEN,
    )  # fmt: skip


def closing_line(result: subprocess.CompletedProcess[str]) -> dict[str, object]:
    """The run's one JSON summary line (the last on stderr); never a traceback before it."""
    assert "Traceback" not in result.stderr, result.stderr
    summary: dict[str, object] = json.loads(result.stderr.strip().splitlines()[-1])
    assert summary["event"] == "summary", result.stderr
    return summary


def rows_of(results: Path) -> dict[str, tuple[str, str]]:
    """The results' rows: UPN -> (status, licenses)."""
    return {row["userPrincipalName"]: (row["status"], row["licenses"]) for row in results_rows(results)}


def test_each_user_gets_exactly_its_rows_licenses_once_and_a_rerun_sends_nothing(tmp_path: Path) -> None:
    sheet = licensed_sheet(
        tmp_path / "hires.csv",
        [
            ("ann", "ENTERPRISEPACK"),
            ("bob", "office 365 e3; FLOW_FREE; Minecraft Education"),  # two license groups: two requests
            ("cem", ""),  # takes --license
            ("dee", "f30db892-07e9-47e9-837c-80727f46fd3d"),  # FLOW_FREE by its SKU id
            ("jane.doe", "FLOW_FREE"),  # in the tenant before the run, not this journal's: never touched
        ],
    )
    journal = tmp_path / "journal.sqlite"
    with licensed_sandbox(licensed_data(tmp_path / "data.toml")) as sandbox:
        before = available_units(sandbox)
        first = run(sheet, sandbox.url, journal, tmp_path / "first.xlsx", "--license", "flow_free")
        after_first = available_units(sandbox)
        held_first = held_licenses(sandbox)
        again = run(sheet, sandbox.url, journal, tmp_path / "again.xlsx", "--license", "flow_free")
        held_again, after_again = held_licenses(sandbox), available_units(sandbox)

    assert first.returncode == 0 and closing_line(first)["counts"] == {
        "created": 4, "restored": 0, "partial": 0, "skipped": 1, "invalid": 0, "failed": 0, "pending": 0,
    }  # fmt: skip
    wanted = {
        "ann@contoso.com": ["ENTERPRISEPACK"],
        "bob@contoso.com": ["ENTERPRISEPACK", "FLOW_FREE", "MINECRAFT"],
        "cem@contoso.com": ["FLOW_FREE"],
        "dee@contoso.com": ["FLOW_FREE"],
    }
    assert {upn: held_first[upn] for upn in wanted} == wanted
    assert held_first["jane.doe@contoso.com"] == ["ENTERPRISEPACK"]  # someone else's user: untouched
    assert rows_of(tmp_path / "first.xlsx")["jane.doe@contoso.com"] == ("skipped", "")
    assert {sku: before[sku] - after_first[sku] for sku in before} == {
        "ENTERPRISEPACK": 2, "FLOW_FREE": 3, "MINECRAFT": 1, "DEVELOPERPACK": 0,
    }  # fmt: skip
    rows = {row["userPrincipalName"]: row for row in results_rows(tmp_path / "first.xlsx")}
    assert {upn: rows[upn]["licenses"] for upn in wanted} == {
        "ann@contoso.com": "ENTERPRISEPACK",
        "bob@contoso.com": "ENTERPRISEPACK; FLOW_FREE; MINECRAFT",
        "cem@contoso.com": "FLOW_FREE",
        "dee@contoso.com": "FLOW_FREE",
    }
    assert units_used(tmp_path / "first.xlsx") == {
        "ENTERPRISEPACK": (2, 0), "FLOW_FREE": (3, 0), "MINECRAFT": (1, 0),
    }  # fmt: skip
    assert summary_items(tmp_path / "first.xlsx")["step requests"] == "5"

    # The same journal again: nothing created, nothing assigned, and the results still say what each user holds
    # (from the journal's record of the earlier run).
    assert again.returncode == 0 and closing_line(again)["counts"]["skipped"] == 5  # type: ignore[index]
    assert held_again == held_first and after_again == after_first
    assert summary_items(tmp_path / "again.xlsx")["step requests"] == "0"
    assert units_used(tmp_path / "again.xlsx") == {}
    again_rows = {row["userPrincipalName"]: row["licenses"] for row in results_rows(tmp_path / "again.xlsx")}
    assert {upn: again_rows[upn] for upn in wanted} == {upn: rows[upn]["licenses"] for upn in wanted}


def test_units_gone_between_validate_and_run_are_refused_before_anything_is_sent(tmp_path: Path) -> None:
    """The dry run found enough; then someone took a unit. `run` validates again: the row past the units left is
    invalid (`license.insufficient`), as is one naming a SKU the customer does not hold: never created, never
    half-done."""
    sheet = licensed_sheet(
        tmp_path / "hires.csv",
        [("ann", "ENTERPRISEPACK"), ("bob", "ENTERPRISEPACK"), ("cem", "Office 365 E5")],
    )
    data = licensed_data(tmp_path / "data.toml")
    with licensed_sandbox(data) as sandbox:
        checked = run_cli(
            "validate", sheet, "--sandbox-url", sandbox.url, "--customer", CONTOSO, "--report",
            tmp_path / "report.xlsx", env=TOKEN,
        )  # fmt: skip
        assert checked.returncode == 1 and sheet_rows(tmp_path / "report.xlsx")[1]["status"] == "valid"
        sam = next(u for u in sandbox.users() if u["userPrincipalName"] == SAM)
        took = _assign(sandbox.url, sam["id"], E3)
        assert took == 201
        result = run(sheet, sandbox.url, tmp_path / "j.sqlite", tmp_path / "results.xlsx")
        held = held_licenses(sandbox)

    assert result.returncode == 1 and closing_line(result)["counts"] == {
        "created": 1, "restored": 0, "partial": 0, "skipped": 0, "invalid": 2, "failed": 0, "pending": 0,
    }  # fmt: skip
    rows = results_rows(tmp_path / "results.xlsx")
    assert [(r["status"], r["licenses"]) for r in rows] == [
        ("created", "ENTERPRISEPACK"), ("invalid", ""), ("invalid", ""),
    ]  # fmt: skip
    assert rows[2]["problems"].startswith("license.unknown: Office 365 E5 is not a license")
    assert rows[1]["problems"].startswith("license.insufficient: no Office 365 E3 (ENTERPRISEPACK) unit left")
    assert "bob@contoso.com" not in held and "cem@contoso.com" not in held
    assert held["ann@contoso.com"] == ["ENTERPRISEPACK"]


def _assign(url: str, user_id: str, sku_id: str) -> int:
    import urllib.request

    request = urllib.request.Request(
        f"{url}/v1/customers/{CONTOSO}/users/{user_id}/licenseupdates",
        data=json.dumps(license_update(sku_id)).encode(),
        headers={"Authorization": "Bearer sandbox", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return int(answer.status)


def port_of(url: str) -> str:
    return url.rsplit(":", 1)[1]


def test_a_refused_license_makes_the_row_partial_and_the_next_run_assigns_only_it(tmp_path: Path) -> None:
    """Users an earlier run of the journal created, licensed by a later run (the sheet's licenses added since):
    validation does not judge licenses of users that exist, so the service refuses the one past the units (400
    60012). That row is `partial` (the user kept, exit 1); once units are bought (a sandbox restarted on the same
    state with more), the same command assigns that license alone."""
    sheet = licensed_sheet(tmp_path / "hires.csv", [("ann", ""), ("bob", ""), ("cem", "")])
    journal, state = tmp_path / "journal.sqlite", tmp_path / "state.json"
    licensed = ("--license", "ENTERPRISEPACK", "--concurrency", "1")  # one at a time: cem comes last
    with licensed_sandbox(licensed_data(tmp_path / "short.toml"), "--state", str(state)) as sandbox:
        url = sandbox.url
        created = run(sheet, url, journal, tmp_path / "created.xlsx")
        users = {u["userPrincipalName"]: u["id"] for u in sandbox.users()}
        refused = run(sheet, url, journal, tmp_path / "refused.xlsx", *licensed)
        held_then = held_licenses(sandbox)
        rebuilt = run_cli("journal", "results", "--journal", journal, "--run", "1", tmp_path / "rebuilt.xlsx")
    more = licensed_data(tmp_path / "more.toml", e3_units=10)
    with licensed_sandbox(more, "--state", str(state), "--port", port_of(url)) as sandbox:
        assert sandbox.url == url  # the same service, so the same journal
        finished = run(sheet, url, journal, tmp_path / "finished.xlsx", *licensed)
        held = held_licenses(sandbox)
        users_after = {u["userPrincipalName"]: u["id"] for u in sandbox.users()}

    assert created.returncode == 0 and closing_line(created)["counts"]["created"] == 3  # type: ignore[index]
    assert refused.returncode == 1 and closing_line(refused)["counts"] == {
        "created": 0, "restored": 0, "partial": 1, "skipped": 2, "invalid": 0, "failed": 0, "pending": 0,
    }  # fmt: skip
    rows = results_rows(tmp_path / "refused.xlsx")
    assert [(r["status"], r["licenses"]) for r in rows] == [
        ("skipped", "ENTERPRISEPACK"), ("skipped", "ENTERPRISEPACK"), ("partial", ""),
    ]  # fmt: skip
    cem = rows[2]
    assert cem["userId"] == users["cem@contoso.com"]
    assert cem["problems"].startswith("user.exists: ")  # created by an earlier run of this journal: ours
    assert (
        "; license.failed: license:group1: Office 365 E3 (ENTERPRISEPACK) not assigned: HTTP 400 60012: "
        in (cem["problems"])
    )
    assert "Not enough licenses" in cem["problems"] and E3 in cem["problems"]  # the service's detail
    # `journal results` of the run that created them says the same, from the journal alone.
    assert rebuilt.returncode == 0, rebuilt.stderr
    again = results_rows(tmp_path / "rebuilt.xlsx")
    assert [(r["status"], r["licenses"]) for r in again] == [
        ("created", "ENTERPRISEPACK"), ("created", "ENTERPRISEPACK"), ("partial", ""),
    ]  # fmt: skip
    assert again[2]["problems"] == (
        "license.failed: license:group1: " + cem["problems"].split("; license.failed: license:group1: ", 1)[1]
    )
    assert summary_items(tmp_path / "rebuilt.xlsx")["partial"] == "1"
    assert held_then["cem@contoso.com"] == [] and units_used(tmp_path / "refused.xlsx") == {
        "ENTERPRISEPACK": (2, 0)
    }

    assert finished.returncode == 0 and closing_line(finished)["counts"]["skipped"] == 3  # type: ignore[index]
    assert summary_items(tmp_path / "finished.xlsx")["step requests"] == "1"  # cem's, alone
    assert units_used(tmp_path / "finished.xlsx") == {"ENTERPRISEPACK": (1, 0)}
    assert [r["licenses"] for r in results_rows(tmp_path / "finished.xlsx")] == ["ENTERPRISEPACK"] * 3
    assert {
        upn: held[upn] for upn in ("ann@contoso.com", "bob@contoso.com", "cem@contoso.com")
    } == dict.fromkeys(("ann@contoso.com", "bob@contoso.com", "cem@contoso.com"), ["ENTERPRISEPACK"])
    assert users_after == users  # nobody created again


FAULTY_ROWS = [
    (f"f{n:02d}", cell)
    for n, cell in enumerate(
        ["ENTERPRISEPACK", "ENTERPRISEPACK; FLOW_FREE", "FLOW_FREE; MINECRAFT", "FLOW_FREE", "office 365 e3"]
        * 3
    )
]


def test_drops_and_failures_then_a_rerun_leave_every_user_exactly_its_licenses_each_unit_counted_once(
    tmp_path: Path,
) -> None:
    """Lost answers and 503s on creates and license updates alike (seeded); the rerun (the sandbox restarted
    without faults, on the same state) finishes what was left. Every user holds exactly its row's licenses; each
    unit taken is counted once across the two runs' Summary tables, and availability moved by exactly that."""
    sheet = licensed_sheet(tmp_path / "hires.csv", FAULTY_ROWS)
    journal, state = tmp_path / "journal.sqlite", tmp_path / "state.json"
    data = licensed_data(tmp_path / "data.toml", e3_units=40)
    faults = ("--state", str(state), "--drop-rate", "0.25", "--fail-rate", "0.25", "--seed", "16")
    with licensed_sandbox(data, *faults) as sandbox:
        url, before = sandbox.url, available_units(sandbox)
        first = run(sheet, url, journal, tmp_path / "first.xlsx")
    with licensed_sandbox(data, "--state", str(state), "--port", port_of(url)) as sandbox:
        rerun = run(sheet, url, journal, tmp_path / "rerun.xlsx")
        held, after = held_licenses(sandbox, prefix="f"), available_units(sandbox)

    assert first.returncode in (0, 1) and closing_line(first)["counts"]["pending"] == 0  # type: ignore[index]
    assert rerun.returncode == 0, rerun.stderr
    wanted = {
        f"{local}@contoso.com": sorted(
            {"office 365 e3": "ENTERPRISEPACK"}.get(part.strip(), part.strip()) for part in cell.split(";")
        )
        for local, cell in FAULTY_ROWS
    }
    assert held == wanted
    rows = results_rows(tmp_path / "rerun.xlsx")
    assert {r["userPrincipalName"]: sorted(r["licenses"].split("; ")) for r in rows} == wanted
    taken = {sku: before[sku] - after[sku] for sku in before}
    holders = {sku: sum(sku in skus for skus in wanted.values()) for sku in before}
    assert taken == holders
    counted = {sku: 0 for sku in before}
    for results in (tmp_path / "first.xlsx", tmp_path / "rerun.xlsx"):
        for sku, (assigned, confirmed) in units_used(results).items():
            counted[sku] += assigned + confirmed
    assert counted == holders
    # The faults did reach the license calls: more license requests than the 18 groups to assign (retries with
    # the same request id, lookups after lost answers).
    sent = sum(
        int(summary_items(path)["step requests"])
        for path in (tmp_path / "first.xlsx", tmp_path / "rerun.xlsx")
    )
    assert sent > sum(1 + (";" in cell and "MINECRAFT" in cell) for _, cell in FAULTY_ROWS) == 18


def child(url: str, journal: Path, count: int, *hang: str) -> list[str]:
    return [sys.executable, "-m", "tests.license_child", url, str(journal), str(count), *hang]


def license_records(path: Path) -> dict[str, tuple[str, str, str | None]]:
    """The journal's license steps as the file holds them: upn -> (state, request id, detail)."""
    with sqlite3.connect(path) as connection:
        found = connection.execute("SELECT upn_key, step, state, request_id, detail FROM steps").fetchall()
    assert all(step == "license:group1" for _, step, _, _, _ in found)
    return {upn: (state, request_id, detail) for upn, _, state, request_id, detail in found}


@pytest.mark.parametrize("moment", ["before", "after"])
def test_a_kill_9_between_create_and_license_resumes_at_the_license_exactly_once(
    tmp_path: Path, moment: str
) -> None:
    """Killed while a row's license request is in flight (its record "sent" is durable): before the request
    left, the rerun's reconcile finds no license and sends it with the same request id; after its answer came,
    the rerun finds it assigned and sends nothing. Either way: each user once, one unit each, never created again."""
    journal, hung = tmp_path / "journal.sqlite", "licensed4@contoso.com"
    with licensed_sandbox(licensed_data(tmp_path / "data.toml", e3_units=10)) as sandbox:
        before = available_units(sandbox)["ENTERPRISEPACK"]
        killed = subprocess.Popen(
            child(sandbox.url, journal, 4, moment, hung), cwd=ROOT, env=clean_env(),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert killed.stdout is not None
            said = killed.stdout.readline()  # blocks until the license step of `hung` hangs
            assert said == "reached\n", said + (killed.stderr.read() if killed.stderr else "")
            killed.send_signal(signal.SIGKILL)
        finally:
            if killed.poll() is None:
                killed.kill()
            killed.communicate(timeout=30)
        assert killed.returncode == -signal.SIGKILL
        left = license_records(journal)
        with open_existing(journal) as opened:
            creates_then = {r.upn_key: r.state for r in opened.rows()}
        users_then = held_licenses(sandbox, prefix="licensed")
        rerun = subprocess.run(
            child(sandbox.url, journal, 4),
            cwd=ROOT,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert rerun.returncode == 0 and "Traceback" not in rerun.stderr, rerun.stderr
        report = json.loads(rerun.stdout.splitlines()[-1])
        held = held_licenses(sandbox, prefix="licensed")
        after = available_units(sandbox)["ENTERPRISEPACK"]

    assert left[hung][0] == "sent"  # killed between create (done) and license (in flight)
    assert (users_then[hung] == ["ENTERPRISEPACK"]) is (moment == "after")
    # Only a create whose lazy "created" record the kill beat is sent again (same request id, answered by replay).
    assert report["requests"] == sum(state == "sent" for state in creates_then.values())
    in_doubt = {upn for upn, state in creates_then.items() if state == "sent"}
    assert creates_then[hung] == "created" and set(users_then) <= set(held)
    assert set(held) - set(users_then) <= in_doubt  # the rerun created only what may not have been created
    assert held == dict.fromkeys((f"licensed{n}@contoso.com" for n in range(2, 6)), ["ENTERPRISEPACK"])
    assert before - after == 4  # one unit per user, whatever the kill
    # The hung row's license finished under the request id recorded before the kill.
    assert license_records(journal)[hung] == ("done", left[hung][1], "ENTERPRISEPACK")
    rows = {row["upn"]: row for row in report["rows"]}
    assert rows[hung]["licenses"] == "ENTERPRISEPACK"


def test_the_readmes_licensing_example_runs_as_written(tmp_path: Path) -> None:
    """README's "Licenses" commands, as written (their `out/` folder moved to a temporary one): exit 0, and each
    user of the sample sheet holds what its row asked for."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("## Licenses\n", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [
        shlex.split(line.replace("out/", f"{tmp_path}/")) for line in block.replace("\\\n", " ").splitlines()
    ]
    assert [command[:2] for command in commands] == [["bulkonboard", "validate"], ["bulkonboard", "run"]]
    for command in commands:
        done = run_cli(*command[1:])
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    rows = results_rows(tmp_path / "licensed-results.xlsx")
    assert [(r["status"], r["licenses"]) for r in rows] == [
        ("created", "ENTERPRISEPACK; FLOW_FREE"), ("created", "ENTERPRISEPACK"), ("created", "FLOW_FREE"),
    ]  # fmt: skip


def test_a_license_the_customer_does_not_hold_for_a_user_created_earlier_is_partial_and_nothing_is_sent(
    tmp_path: Path,
) -> None:
    """Users this journal created earlier, then asked for a SKU the customer does not hold: validation does not
    judge existing users, so the step itself says so, sends nothing, and the row is `partial` (exit 1)."""
    sheet = licensed_sheet(tmp_path / "hires.csv", [("ann", "")])
    journal = tmp_path / "journal.sqlite"
    with licensed_sandbox(licensed_data(tmp_path / "data.toml")) as sandbox:
        assert run(sheet, sandbox.url, journal, tmp_path / "created.xlsx").returncode == 0
        before = available_units(sandbox)
        asked = run(sheet, sandbox.url, journal, tmp_path / "asked.xlsx", "--license", "Office 365 E5")
        after, held = available_units(sandbox), held_licenses(sandbox)

    assert asked.returncode == 1 and closing_line(asked)["counts"]["partial"] == 1  # type: ignore[index]
    [row] = results_rows(tmp_path / "asked.xlsx")
    assert row["status"] == "partial" and row["userId"] and row["licenses"] == ""
    assert (
        "; license.failed: license:group1: no license was sent: Office 365 E5 is not a license the customer holds "
        "(closest: Office 365 E3 (ENTERPRISEPACK)" in row["problems"]
    ), row["problems"]
    assert after == before and held["ann@contoso.com"] == []
    assert summary_items(tmp_path / "asked.xlsx")["step requests"] == "0"
