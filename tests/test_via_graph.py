"""`run --via graph`: users created through Graph's `POST /users` with the whole profile in one request, through
the real CLI against a standalone sandbox over loopback. Graph has no idempotency key, so lost answers
(`--drop-rate`) and a kill -9 mid-run must still leave each user exactly once, with its profile and manager."""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from .sandbox_http import CONTOSO, JANE, LICENSED_TOML
from .support import ROOT, clean_env, cli, results_rows, run_cli, standalone_sandbox, summary_items

pytestmark = pytest.mark.timeout(300)

PASSWORD = "Str0ng!Passw0rd"
HEADER = "userPrincipalName,displayName,usageLocation,password,jobTitle,employeeHireDate,mailNickname,manager\n"


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "licensed.toml"
    path.write_text(LICENSED_TOML, encoding="utf-8")
    return path


def team(path: Path, people: int) -> dict[str, str]:
    """`people` hires in teams of five; each team's lead is the team's LAST row (created first all the same), and
    every lead reports to jane (in the tenant). Returns upn -> manager."""
    managers: dict[str, str] = {}
    lines = []
    for n in range(people):
        lead = f"lead{n // 5}@contoso.com"
        upn = lead if n % 5 == 4 else f"hire{n}@contoso.com"
        managers[upn] = JANE if upn == lead else lead
        lines.append(f"{upn},Hire {n},US,{PASSWORD},Title {n},2026-12-{1 + n % 28:02d},,{managers[upn]}\n")
    path.write_text(HEADER + "".join(lines), encoding="utf-8")
    return managers


def graph_get(url: str, path: str) -> Any:
    request = urllib.request.Request(f"{url}/graph/{CONTOSO}/v1.0/{path}", headers={"Authorization": "Bearer sandbox"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.load(answer)
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise


def assert_each_once_with_profile_and_manager(url: str, listed: list[dict[str, Any]], managers: dict[str, str]) -> None:
    upns = [u["userPrincipalName"].casefold() for u in listed]
    ours = [upn for upn in upns if upn in managers]
    assert sorted(ours) == sorted(managers), "a user is missing or was created twice"
    for n, upn in enumerate(managers):
        held = graph_get(url, f"users/{upn}?$select=jobTitle,employeeHireDate,mailNickname,accountEnabled")
        assert held["jobTitle"] == f"Title {n}"
        assert held["employeeHireDate"] == f"2026-12-{1 + n % 28:02d}T00:00:00Z"
        assert held["mailNickname"] == upn.partition("@")[0] and held["accountEnabled"] is True
        boss = graph_get(url, f"users/{upn}/manager")
        assert boss is not None and boss["userPrincipalName"].casefold() == managers[upn]


def run_via_graph(url: str, sheet: Path, tmp_path: Path, results: Path) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "run", sheet, "--customer", CONTOSO, "--sandbox-url", url, "--journal", tmp_path / "j.sqlite",
        "--results", results, "--rate", "inf", "--concurrency", "4", "--via", "graph",
    )  # fmt: skip


def test_via_graph_creates_each_user_once_with_its_profile_despite_lost_answers(tmp_path: Path, data: Path) -> None:
    managers = team(tmp_path / "hires.csv", 20)
    results = tmp_path / "results.xlsx"
    with standalone_sandbox("--data", str(data), "--drop-rate", "0.3", "--seed", "7") as sandbox:
        first = run_via_graph(sandbox.url, tmp_path / "hires.csv", tmp_path, results)
        assert "Traceback" not in first.stderr and first.returncode in (0, 1), first.stderr
        rows = results_rows(results)
        assert int(summary_items(results)["retries"]) > 0  # answers were lost, and the rows were sent again
        if first.returncode == 1:  # a row whose every answer was lost: the next run of the journal settles it
            again = run_via_graph(sandbox.url, tmp_path / "hires.csv", tmp_path, tmp_path / "again.xlsx")
            assert again.returncode == 0, again.stderr
            rows = results_rows(tmp_path / "again.xlsx")
            assert {r["status"] for r in rows} <= {"created", "skipped"}
        else:
            assert {r["status"] for r in rows} == {"created"}
        assert_each_once_with_profile_and_manager(sandbox.url, sandbox.users(), managers)


def test_via_graph_killed_mid_run_resumes_and_creates_nobody_twice(tmp_path: Path, data: Path) -> None:
    managers = team(tmp_path / "hires.csv", 60)
    journal = tmp_path / "j.sqlite"
    with standalone_sandbox("--data", str(data), "--latency-ms", "20-60", "--seed", "3") as sandbox:
        killed = subprocess.Popen(
            cli("run", tmp_path / "hires.csv", "--customer", CONTOSO, "--sandbox-url", sandbox.url, "--journal",
                journal, "--results", tmp_path / "killed.xlsx", "--rate", "inf", "--concurrency", "4", "--via",
                "graph", "--log-format", "json"),
            cwd=ROOT, env=clean_env(TMPDIR=str(tmp_path)),  # its scratch left by the kill stays here
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert killed.stderr is not None
            written = 0
            for line in killed.stderr:  # one JSON line per row written: kill once 8 rows are out
                event = json.loads(line)
                written += event.get("event") == "row" and event.get("status") == "created"
                if written == 8:
                    break
            killed.send_signal(signal.SIGKILL)
        finally:
            if killed.poll() is None:
                killed.kill()
            killed.communicate(timeout=30)
        assert killed.returncode == -signal.SIGKILL
        created_before = {u["userPrincipalName"] for u in sandbox.users() if u["userPrincipalName"] in managers}
        assert 8 <= len(created_before) < len(managers)

        again = run_via_graph(sandbox.url, tmp_path / "hires.csv", tmp_path, tmp_path / "again.xlsx")
        assert again.returncode == 0, again.stderr
        rows = {r["userPrincipalName"]: r["status"] for r in results_rows(tmp_path / "again.xlsx")}
        assert {upn for upn, status in rows.items() if status == "created"} == set(managers) - created_before
        assert_each_once_with_profile_and_manager(sandbox.url, sandbox.users(), managers)


def test_via_graph_honours_graphs_429_and_its_retry_after(tmp_path: Path, data: Path) -> None:
    """The sandbox's Graph throttles writes past 6 in 2 s (429 TooManyRequests with Retry-After): the run waits
    and sends again, and every user is created once."""
    managers = team(tmp_path / "hires.csv", 10)
    results = tmp_path / "results.xlsx"
    with standalone_sandbox("--data", str(data), "--rate-limit", "6/2s") as sandbox:
        done = run_via_graph(sandbox.url, tmp_path / "hires.csv", tmp_path, results)
        assert done.returncode == 0, done.stderr
        assert {r["status"] for r in results_rows(results)} == {"created"}
        assert int(summary_items(results)["throttled (429)"]) > 0
        assert_each_once_with_profile_and_manager(sandbox.url, sandbox.users(), managers)
