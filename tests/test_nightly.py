"""Unattended nightly runs as a scheduler drives them: processes, signals, one run per journal, JSON logs."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from bulkonboard.journal.store import open_existing

from .support import CONTOSO, ROOT, clean_env, cli, sheet_rows, standalone_sandbox, summary_items

TOKEN = "tok-nightly-5ecret-9b1f"
PASSWORD = "Nightly-Pa55word!"
PEOPLE = 120


def write_sheet(path: Path, count: int) -> Path:
    lines = ["userPrincipalName,displayName,usageLocation,password"]
    lines += [f"night.owl{n}@contoso.com,Night Owl {n},NA,{PASSWORD}" for n in range(1, count + 1)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def wait_until(condition: Callable[[], object], process: subprocess.Popen[str], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, f"the run ended before {what}: {process.communicate()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"


def test_sigterm_stops_gracefully_and_the_same_command_finishes_the_rest(tmp_path: Path) -> None:
    sheet = write_sheet(tmp_path / "hires.csv", PEOPLE)
    journal, results = tmp_path / "journal.sqlite", tmp_path / "results.xlsx"
    with standalone_sandbox("--latency-ms", "30", token=TOKEN) as sandbox:
        command = cli(
            "run", sheet, "--customer", CONTOSO, "--sandbox-url", sandbox.url, "--journal", journal,
            "--results", results, "--rate", "40", "--log-format", "json",
        )
        env = clean_env(BULKONBOARD_ACCESS_TOKEN=TOKEN)
        existing = len(sandbox.users())
        first = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_until(lambda: len(sandbox.users()) >= existing + 10, first, "ten users were created")
        first.send_signal(signal.SIGTERM)
        _, stderr = first.communicate(timeout=60)
        assert first.returncode == 130, stderr
        assert "Traceback" not in stderr

        # The results say what finished, in order, and list every other row as not sent; nothing is in doubt.
        done = sheet_rows(results)
        assert [r["row"] for r in done] == list(range(2, 2 + PEOPLE))
        held = {u["userPrincipalName"]: u["id"] for u in sandbox.users()}
        created = [row for row in done if row["status"] == "created"]
        assert 10 <= len(created) < PEOPLE
        for row in done:
            if row["status"] == "created":
                assert held[str(row["userPrincipalName"])] == row["userId"]
            else:
                assert row["status"] == "pending" and str(row["problems"]).startswith("run.interrupted: not sent")
        summary = json.loads(stderr.strip().splitlines()[-1])
        assert summary["event"] == "summary" and summary["exit_code"] == 130 and summary["not_reached"] > 0
        # Pending rows are counted apart from failed, and logged as ONE line, not one per row.
        pending_rows = [row for row in done if row["status"] == "pending"]
        assert pending_rows and summary["counts"]["pending"] == len(pending_rows)
        assert summary["counts"]["failed"] == 0 and summary["counts"]["created"] == len(created)
        entries = [json.loads(line) for line in stderr.splitlines()]
        (pending,) = [e for e in entries if e["event"] == "pending"]
        assert pending["count"] == len(pending_rows) and pending["level"] == "warning"
        assert not [e for e in entries if e["event"] == "row" and e["status"] == "pending"]
        assert sum(e["event"] == "row" for e in entries) == len(created)
        workbook = summary_items(results)
        assert workbook["pending"] == str(len(pending_rows)) and workbook["failed"] == "0"

        second = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stderr
        listed = sandbox.users()
        assert len(listed) == existing + PEOPLE  # every person once
        assert len({u["userPrincipalName"].casefold() for u in listed}) == len(listed)
        final = sheet_rows(results)
        assert len(final) == PEOPLE and {r["status"] for r in final} <= {"created", "skipped"}
        with open_existing(journal) as left:
            assert left.count_rows() == {"created": PEOPLE}
            runs = left.runs()
        assert [r.exit_code for r in runs] == [130, 0]


def test_a_second_run_on_the_same_journal_is_refused_with_the_first_runs_pid(tmp_path: Path) -> None:
    # 600 rows at 20/s: the first run is still going when the second has started, however loaded the machine
    # (60 rows, 3 s, were done before a slow second start once; the first is stopped by SIGTERM at the end).
    sheet = write_sheet(tmp_path / "hires.csv", 600)
    journal = tmp_path / "journal.sqlite"
    with standalone_sandbox("--latency-ms", "50") as sandbox:
        def command(results: str) -> list[str]:
            return cli(
                "run", sheet, "--customer", CONTOSO, "--sandbox-url", sandbox.url, "--journal", journal,
                "--results", tmp_path / results, "--rate", "20", "--quiet",
            )

        existing = len(sandbox.users())
        first = subprocess.Popen(command("one.xlsx"), cwd=ROOT, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_until(lambda: len(sandbox.users()) > existing, first, "the first run started sending")
            second = subprocess.run(command("two.xlsx"), cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=60)
            assert second.returncode == 3
            lines = second.stderr.strip().splitlines()
            assert len(lines) == 1 and f"pid {first.pid}" in lines[0] and "started" in lines[0]
            assert not (tmp_path / "two.xlsx").exists()
        finally:
            first.send_signal(signal.SIGTERM)
            first.communicate(timeout=60)
        assert first.returncode in (0, 130)


def test_json_logs_parse_and_hold_no_secret(tmp_path: Path) -> None:
    sheet = write_sheet(tmp_path / "hires.csv", 12)
    with sheet.open("a", encoding="utf-8") as handle:
        handle.write("broken@contoso.com,Broken,XX,weak\n")
    with standalone_sandbox(token=TOKEN) as sandbox:
        result = subprocess.run(
            cli("run", sheet, "--customer", CONTOSO, "--sandbox-url", sandbox.url, "--journal", tmp_path / "j.sqlite",
                "--results", tmp_path / "r.xlsx", "--log-format", "json"),
            cwd=ROOT, env=clean_env(BULKONBOARD_ACCESS_TOKEN=TOKEN), capture_output=True, text=True, timeout=120,
        )
    assert result.returncode == 1  # the broken row
    assert result.stdout == ""
    entries = [json.loads(line) for line in result.stderr.splitlines()]
    rows = [e for e in entries if e["event"] == "row"]
    (summary,) = [e for e in entries if e["event"] == "summary"]
    assert len(rows) == 13
    assert {e["correlation_id"] for e in rows} == {summary["correlation_id"]}
    assert sum(e["status"] == "created" for e in rows) == 12
    (broken,) = [e for e in rows if e["status"] == "invalid"]
    assert broken["level"] == "warning" and {p["code"] for p in broken["problems"]} == {"usageLocation.invalid", "password.weak"}
    assert summary["counts"] == {"created": 12, "restored": 0, "partial": 0, "skipped": 0, "invalid": 1, "failed": 0, "pending": 0}
    for secret in (TOKEN, PASSWORD, "weak"):
        assert secret not in result.stderr.replace("password.weak", "")
