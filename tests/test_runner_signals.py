"""`bulkonboard run` as a process, stopped by signals as a person (Ctrl-C twice) or a scheduler (SIGTERM, then
SIGTERM again before the kill) stops it: the results are written for what finished, whatever the signals."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from bulkonboard.sending.pipeline import RUN_INTERRUPTED

from .support import (
    CONTOSO,
    ROOT,
    clean_env,
    cli,
    person,
    results_rows,
    standalone_sandbox,
    summary_items,
    write_sheet,
)

pytestmark = pytest.mark.timeout(90)

def test_a_second_signal_abandons_the_requests_in_flight_and_still_writes_the_results(tmp_path: Path) -> None:
    people = 8
    sheet = write_sheet(tmp_path / "hires.csv", [person(n) for n in range(1, people + 1)])
    upns = {f"new.hire{n}@contoso.com" for n in range(1, people + 1)}
    results = tmp_path / "results.xlsx"
    # Each call takes a second: the requests in flight are still in flight when the second signal comes.
    with standalone_sandbox("--latency-ms", "1000") as sandbox:
        command = cli(
            "run", sheet, "--customer", CONTOSO, "--sandbox-url", sandbox.url, "--journal", tmp_path / "j.sqlite",
            "--results", results, "--rate", "50", "--concurrency", "4", "--log-format", "json",
        )  # fmt: skip
        process = subprocess.Popen(command, cwd=ROOT, env=clean_env(), stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while not any(u["userPrincipalName"] in upns for u in sandbox.users()):
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "no user was created in time"
            process.send_signal(signal.SIGTERM)
            assert process.stderr is not None
            for line in process.stderr:  # the first signal was taken: stopping gently
                if json.loads(line).get("event") == "warning":
                    break
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
        assert process.returncode == 130, stderr
        assert "Traceback" not in stderr

        rows = results_rows(results)
        assert [int(r["row"]) for r in rows] == list(range(2, 2 + people))
        held = {u["userPrincipalName"]: u["id"] for u in sandbox.users()}
        cut_short = 0
        for result in rows:
            if result["status"] == "created":
                assert held[result["userPrincipalName"]] == result["userId"]
            else:
                assert result["status"] == "pending" and result["problems"].startswith(RUN_INTERRUPTED)
                if "may exist" in result["problems"]:
                    cut_short += 1
                    assert "same journal" in result["problems"] and result["requestId"]
        assert cut_short  # requests were in flight, and were abandoned rather than waited for
        assert summary_items(results)["interrupted"] == "yes"
        # No row the service never answered reads as failed: pending, counted apart, in ONE log line.
        pending = [r for r in rows if r["status"] == "pending"]
        assert summary_items(results)["pending"] == str(len(pending)) and summary_items(results)["failed"] == "0"
        (line,) = [e for e in map(json.loads, stderr.splitlines()) if e["event"] == "pending"]
        assert line["count"] == len(pending) and line["may_exist"] == cut_short


def test_the_closing_table_counts_a_stopped_runs_rows_as_pending_not_failed(tmp_path: Path) -> None:
    people = 60
    sheet = write_sheet(tmp_path / "hires.csv", [person(n) for n in range(1, people + 1)])
    upns = {f"new.hire{n}@contoso.com" for n in range(1, people + 1)}
    results = tmp_path / "results.xlsx"
    with standalone_sandbox("--latency-ms", "30") as sandbox:
        command = cli(
            "run", sheet, "--customer", CONTOSO, "--sandbox-url", sandbox.url, "--journal", tmp_path / "j.sqlite",
            "--results", results, "--rate", "40", "--concurrency", "2",
        )  # fmt: skip
        process = subprocess.Popen(command, cwd=ROOT, env=clean_env(), stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while sum(u["userPrincipalName"] in upns for u in sandbox.users()) < 3:
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "no user was created in time"
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    rows = results_rows(results)
    pending = sum(r["status"] == "pending" for r in rows)
    assert pending and not any(r["status"] == "failed" for r in rows)
    table = {}
    for line in stderr.splitlines():  # the closing table: "│ pending │ 12 │"
        cells = [cell.strip() for cell in line.strip("│┃ ").split("│")]
        if len(cells) == 2 and cells[1].replace(",", "").isdigit():
            table[cells[0]] = int(cells[1].replace(",", ""))
    assert table["pending"] == pending and table["failed"] == 0, stderr
    assert table["created"] == sum(r["status"] == "created" for r in rows)
