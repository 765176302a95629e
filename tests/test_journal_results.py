"""`bulkonboard journal results`: a run's results workbook rebuilt from its journal, through the real command."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from bulkonboard.journal.store import open_journal
from bulkonboard.model import Problem, RowResult, Status
from tests.support import CONTOSO, ROOT, SANDBOX_DATA, run_cli, sheet_rows, summary_of

SAMPLES = ROOT / "samples"


bulkonboard = run_cli


def test_the_rebuilt_results_match_the_runs_own_for_every_row_the_journal_holds(tmp_path: Path) -> None:
    journal = tmp_path / "journal.sqlite"
    results = tmp_path / "results.xlsx"
    ran = bulkonboard(
        "run", SAMPLES / "new_hires.csv", "--sandbox", "--sandbox-data", SANDBOX_DATA, "--customer", CONTOSO,
        "--journal", journal, "--results", results, "--rate", "200",
    )  # fmt: skip
    assert ran.returncode == 1, ran.stderr  # the sample's deliberate mistakes
    out = tmp_path / "rebuilt.xlsx"
    rebuilt = bulkonboard("journal", "results", "--journal", journal, out)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "run 1" in rebuilt.stdout and "created 26" in rebuilt.stdout

    original = {r["userPrincipalName"]: r for r in sheet_rows(results, "Rows")}
    again = sheet_rows(out, "Rows")
    assert len(again) == 26
    for row in again:
        first = original[row["userPrincipalName"]]
        assert (row["row"], row["status"], row["userId"], row["requestId"]) == (
            first["row"], first["status"], first["userId"], first["requestId"],
        )  # fmt: skip
    summary = summary_of(out)
    ours = summary_of(results)
    assert summary["correlation id"] == ours["correlation id"] and summary["customer"] == ours["customer"]
    assert summary["exit code"] == 1 and summary["run finished"] == "yes"
    assert "invalid 8" in str(summary["counts the run recorded at its end"])
    assert "invalid rows" in str(summary["not in the journal"])  # said, never made up
    assert summary["invalid"] == 0

    refused = bulkonboard("journal", "results", "--journal", journal, out)
    assert refused.returncode == 2 and "--force" in refused.stderr and "Traceback" not in refused.stderr
    missing = bulkonboard("journal", "results", "--journal", journal, "--run", "7", tmp_path / "x.xlsx")
    assert missing.returncode == 2 and "no run 7" in missing.stderr and len(missing.stderr.splitlines()) == 1


def test_rows_without_a_known_outcome_say_so_and_problems_come_back(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"

    async def record() -> None:
        with open_journal(path, service="https://example.test") as journal:
            journal.begin_run(
                input_path="hires.csv", input_sha256="0" * 64, customer=CONTOSO, correlation_id="c-1", command="run"
            )
            await journal.sending(CONTOSO, "a@contoso.com", 2, "req-a")  # then killed: in doubt
            await journal.sending(CONTOSO, "b@contoso.com", 3, "req-b")
            failed = RowResult(
                3, "b@contoso.com", Status.FAILED, requestId="req-b",
                problems=(Problem("api.400", "bad; really bad"), Problem("password.weak", "too short")),
            )  # fmt: skip
            journal.finished(CONTOSO, "b@contoso.com", failed)
            # d: stopped before its retry, recorded as certainly not created (`failed` + run.interrupted)
            await journal.sending(CONTOSO, "d@contoso.com", 5, "req-d")
            stopped = RowResult(
                5, "d@contoso.com", Status.FAILED, requestId="req-d",
                problems=(Problem("run.interrupted", "not created: the run was stopped before it could be retried"),),
            )  # fmt: skip
            journal.finished(CONTOSO, "d@contoso.com", stopped)

    asyncio.run(record())
    # c: taken by a run of an earlier release, never sent (`pending`, which no release writes any more)
    connection = sqlite3.connect(path)
    with connection:
        connection.execute(
            "INSERT INTO rows (customer, upn_key, upn, row, state, run_id, updated_at) "
            "VALUES (?, 'c@contoso.com', 'c@contoso.com', 4, 'pending', 1, '2026-11-01T00:00:00.000+00:00')",
            (CONTOSO,),
        )
    connection.close()
    out = tmp_path / "out.xlsx"
    rebuilt = bulkonboard("journal", "results", "--journal", path, "--run", "1", out)
    assert rebuilt.returncode == 0, rebuilt.stderr
    rows = {r["userPrincipalName"]: r for r in sheet_rows(out, "Rows")}
    # Rows never answered are pending, never failed; a row the service refused stays failed.
    assert rows["a@contoso.com"]["status"] == "pending" and "may exist" in str(rows["a@contoso.com"]["problems"])
    assert rows["c@contoso.com"]["status"] == "pending" and rows["d@contoso.com"]["status"] == "pending"
    assert rows["b@contoso.com"]["status"] == "failed"
    assert rows["a@contoso.com"]["requestId"] == "req-a"
    assert rows["b@contoso.com"]["problems"] == "api.400: bad; really bad; password.weak: too short"
    assert "not sent" in str(rows["c@contoso.com"]["problems"])
    problems = sheet_rows(out, "Problems")
    assert [(p["userPrincipalName"], p["code"]) for p in problems if p["userPrincipalName"] == "b@contoso.com"] == [
        ("b@contoso.com", "api.400"), ("b@contoso.com", "password.weak"),
    ]  # fmt: skip
    summary = summary_of(out)
    assert summary["sent, outcome unknown"] == 1 and str(summary["run finished"]).startswith("no")
    assert summary["exit code"] == "not recorded"
    assert (summary["pending"], summary["failed"]) == (3, 1)
