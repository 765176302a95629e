"""`bulkonboard journal show` and `journal forget`, on journals written through the journal's own API."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from bulkonboard.app import paths
from bulkonboard.cli.journal_commands import journal_command
from bulkonboard.journal.lock import RunLock
from bulkonboard.journal.store import open_existing, open_journal
from bulkonboard.model import Problem, RowResult, Status

CONTOSO = "3c9a8f12-5e6b-4c1d-9a7e-2f4b8d6c1e90"
NORTHWIND = "7d2e4b61-0c3a-4f8e-b5d9-1a6c3e8f2b47"
SERVICE = "http://127.0.0.1:8765"
ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(60)


def build_journal(path: Path, customer: str = CONTOSO) -> None:
    """Two runs of a sheet: the first finished (3 created, 1 refused), the second killed with 1 row in flight and
    1 more created."""

    async def write() -> None:
        with open_journal(path, service=SERVICE) as journal:
            journal.begin_run(
                input_path="/hr/new_hires.xlsx",
                input_sha256="a" * 64,
                customer=customer,
                correlation_id="corr-1",
            )
            for n in range(1, 5):
                upn = f"new.hire{n}@contoso.com"
                await journal.sending(customer, upn, n + 1, f"req-{n}")
                if n == 4:
                    failure = (Problem("api.400", "HTTP 400 800002: Invalid usage location"),)
                    outcome = RowResult(n + 1, upn, Status.FAILED, problems=failure, requestId=f"req-{n}")
                else:
                    outcome = RowResult(n + 1, upn, Status.CREATED, userId=f"id-{n}", requestId=f"req-{n}")
                journal.finished(customer, upn, outcome)
            journal.end_run(counts={"created": 3, "skipped": 1, "invalid": 2, "failed": 1}, exit_code=1)

            journal.begin_run(
                input_path="/hr/new_hires.xlsx",
                input_sha256="b" * 64,
                customer=customer,
                correlation_id="corr-2",
            )
            await journal.sending(customer, "new.hire5@contoso.com", 6, "req-5")
            journal.finished(
                customer,
                "new.hire5@contoso.com",
                RowResult(6, "New.Hire5@contoso.com", Status.CREATED, userId="id-5", requestId="req-5"),
            )
            await journal.sending(customer, "new.hire6@contoso.com", 7, "req-6")
            # ... and the process is killed here: no end_run.

    asyncio.run(write())


def invoke(*args: str, input: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(journal_command, list(args), input=input, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def states(path: Path) -> dict[str, str]:
    with open_existing(path) as journal:
        return {row.upn_key: row.state for row in journal.rows()}


# ---------------------------------------------------------------------------------------------------------------
# show


def test_show_lists_runs_with_their_counts_and_a_killed_run_as_such(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    build_journal(path)
    code, out, _ = invoke("show", "--journal", str(path))
    assert code == 0
    lines = out.splitlines()
    assert f"customer: {CONTOSO}" in lines and "input: new_hires.xlsx" in lines  # what every run shares, once
    header = next(line for line in lines if line.startswith("run "))
    assert header.split() == ["run", "started", "finished", "created", "skipped", "invalid", "failed", "exit"]
    table = {cells[0]: cells for line in lines if (cells := line.split()) and cells[0].isdigit()}
    first, second = table["1"], table["2"]
    assert first[4:] == ["3", "1", "2", "1", "1"]  # created, skipped, invalid, failed, exit
    unfinished = " ".join(second[3:])
    assert "did not finish" in unfinished and "created 1, sent 1" in unfinished and second[-1] == "1"

    with RunLock(path, what="run new_hires.xlsx"):  # what a run that is still going leaves in the lock file
        code, out, _ = invoke("show", "--journal", str(path), "--format", "json")
    assert [run["state"] for run in json.loads(out)["runs"]] == ["finished", "running"]


def test_show_json_has_runs_and_with_run_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    build_journal(path)
    code, out, _ = invoke("show", "--journal", str(path), "--format", "json")
    assert code == 0
    document = json.loads(out)
    assert document["service"] == SERVICE and "rows" not in document
    first, second = document["runs"]
    assert (first["id"], first["exit_code"], first["counts"]["created"], first["state"]) == (
        1,
        1,
        3,
        "finished",
    )
    assert (
        first["input_sha256"] == "a" * 64
        and first["correlation_id"] == "corr-1"
        and first["pid"] == os.getpid()
    )
    assert second["finished"] is None and second["rows_by_state"] == {"created": 1, "sent": 1}

    code, out, _ = invoke("show", "--journal", str(path), "--run", "2", "--format", "json")
    document = json.loads(out)
    assert [run["id"] for run in document["runs"]] == [2]
    assert [(row["upn"], row["state"], row["request_id"]) for row in document["rows"]] == [
        ("New.Hire5@contoso.com", "created", "req-5"),
        ("new.hire6@contoso.com", "sent", "req-6"),
    ]

    code, out, _ = invoke("show", "--journal", str(path), "--status", "failed", "--format", "json")
    rows = json.loads(out)["rows"]
    assert [(row["upn_key"], row["reason"]) for row in rows] == [
        ("new.hire4@contoso.com", "api.400: HTTP 400 800002: Invalid usage location")
    ]

    code, out, err = invoke("show", "--journal", str(path), "--run", "9")
    assert code == 2 and "no run 9" in err


def test_show_rows_as_a_table(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    build_journal(path)
    code, out, _ = invoke("show", "--journal", str(path), "--rows")
    assert code == 0
    for n in range(1, 7):
        assert f"new.hire{n}@contoso.com".casefold() in out.casefold()
    assert "Invalid usage location" in out


def test_show_finds_journals_under_the_state_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    code, out, _ = invoke("show")
    assert code == 0 and "no journals under" in out

    contoso = paths.default_journal(SERVICE, CONTOSO)
    northwind = paths.default_journal(SERVICE, NORTHWIND)
    build_journal(contoso, CONTOSO)
    build_journal(northwind, NORTHWIND)
    code, out, _ = invoke("show", "--format", "json")
    listed = {Path(entry["journal"]): entry for entry in json.loads(out)}
    assert set(listed) == {contoso, northwind}
    assert listed[contoso]["customers"] == [CONTOSO] and listed[contoso]["runs"] == 2

    code, out, _ = invoke("show", "--customer", NORTHWIND.upper(), "--format", "json")
    assert code == 0
    (document,) = json.loads(out)
    assert Path(document["journal"]) == northwind and {r["customer"] for r in document["runs"]} == {NORTHWIND}

    code, _, err = invoke("show", "--customer", "00000000-0000-0000-0000-000000000000")
    assert code == 2 and "no journal under" in err


def test_show_a_missing_journal_is_exit_2(tmp_path: Path) -> None:
    code, _, err = invoke("show", "--journal", str(tmp_path / "nope.sqlite"))
    assert code == 2 and "no such journal" in err
    assert not (tmp_path / "nope.sqlite").exists()


# ---------------------------------------------------------------------------------------------------------------
# forget


def test_forget_needs_a_filter(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    build_journal(path)
    code, _, err = invoke("forget", "--journal", str(path), "--yes")
    assert code == 2 and "say which rows to forget" in err
    assert len(states(path)) == 6


def test_forget_without_a_terminal_refuses_unless_told_yes(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    build_journal(path)
    code, out, err = invoke("forget", "--journal", str(path), "--status", "failed")
    assert code == 2
    assert "will forget 1 row" in out and "new.hire4@contoso.com" in out
    assert "standard input is not a terminal" in err and "--yes" in err
    assert states(path)["new.hire4@contoso.com"] == "failed"

    code, out, _ = invoke("forget", "--journal", str(path), "--status", "failed", "--yes")
    assert code == 0 and "forgot 1 row" in out
    assert "new.hire4@contoso.com" not in states(path)
    with open_existing(path) as journal:
        assert journal.prior(CONTOSO, "new.hire4@contoso.com") is None


def test_forget_says_what_it_forgets_and_warns_loudly_about_created_rows(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    build_journal(path)
    code, out, err = invoke(
        "forget", "--journal", str(path), "--status", "created", "--status", "sent", "--yes"
    )
    assert code == 0
    assert "will forget 5 rows" in out and "created 4, sent 1" in out
    assert "new.hire1@contoso.com" in out and "and 0 more" not in out
    assert "4 rows recorded as CREATED" in err and "create the user again" in err
    assert "1 row sent without a known outcome" in err
    assert states(path) == {"new.hire4@contoso.com": "failed"}


def test_forget_names_the_first_few_and_counts_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"

    async def write() -> None:
        with open_journal(path, service=SERVICE) as journal:
            for n in range(12):
                await journal.sending(CONTOSO, f"p{n:02d}@contoso.com", n + 2, f"r{n}")

    asyncio.run(write())
    code, out, _ = invoke(
        "forget", "--journal", str(path), "--status", "sent", "--customer", CONTOSO, "--yes"
    )
    assert code == 0
    assert (
        "p00@contoso.com, p01@contoso.com, p02@contoso.com, p03@contoso.com, p04@contoso.com and 7 more"
        in out
    )
    assert states(path) == {}


def test_forget_by_upn_and_run(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    build_journal(path)
    code, out, _ = invoke(
        "forget",
        "--journal",
        str(path),
        "--upn",
        "NEW.HIRE1@contoso.com",
        "--upn",
        "new.hire5@contoso.com",
        "--yes",
    )
    assert code == 0 and "forgot 2 rows" in out
    code, out, _ = invoke("forget", "--journal", str(path), "--run", "2", "--yes")
    assert code == 0 and "forgot 1 row" in out  # new.hire6; new.hire5 was forgotten already
    code, out, _ = invoke("forget", "--journal", str(path), "--upn", "nobody@contoso.com", "--yes")
    assert code == 0 and "nothing to forget" in out
    assert set(states(path)) == {"new.hire2@contoso.com", "new.hire3@contoso.com", "new.hire4@contoso.com"}


def test_forget_never_touches_a_journal_a_run_holds(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    build_journal(path)
    with RunLock(path, what="run new_hires.xlsx"):
        code, _, err = invoke("forget", "--journal", str(path), "--status", "failed", "--yes")
    assert code == 3
    assert (
        "another run holds the journal" in err and f"pid {os.getpid()}" in err and "run new_hires.xlsx" in err
    )
    assert states(path)["new.hire4@contoso.com"] == "failed"


@pytest.mark.parametrize(("answer", "forgotten"), [("y", True), ("n", False)])
def test_forget_asks_at_a_terminal(tmp_path: Path, answer: str, forgotten: bool) -> None:
    path = tmp_path / "j.sqlite"
    build_journal(path)
    controller, terminal = os.openpty()
    try:
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from bulkonboard.cli.journal_commands import journal_command; journal_command()",
                "forget",
                "--journal",
                str(path),
                "--status",
                "failed",
            ],
            stdin=terminal,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
        )
        os.write(controller, f"{answer}\n".encode())
        out, err = process.communicate(timeout=30)
    finally:
        os.close(controller)
        os.close(terminal)
    text = out.decode()
    assert "will forget 1 row" in text and "Forget 1 row?" in text
    if forgotten:
        assert process.returncode == 0 and "forgot 1 row" in text
        assert "new.hire4@contoso.com" not in states(path)
    else:
        assert process.returncode == 1 and "nothing forgotten" in text
        assert states(path)["new.hire4@contoso.com"] == "failed"
