"""Exit 4, through the real command: bulkonboard's own failures (a full disk, a journal that stops taking writes, a
bug) get one line and exit 4, never 1 ("rows to fix"), and nothing the service did is lost.

A full disk is a small tmpfs where this machine lets the tests mount one (root), and an injected write failure
everywhere, so that the same promise is checked on every machine.
"""

from __future__ import annotations

import os
import re
import shlex
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import (
    CONTOSO,
    ROOT,
    assert_one_clear_line,
    clean_env,
    person,
    run_cli,
    sheet_rows,
    standalone_sandbox,
    summary_of,
    write_sheet,
)

bulkonboard = run_cli


#: Runs the real CLI after making one of its writes fail as a full disk does (argv: the command's own).
INJECT = """
import errno, sys
what = sys.argv.pop(1)
if what == "results":
    import xlsxwriter
    def full(self):
        raise OSError(errno.ENOSPC, "No space left on device")
    xlsxwriter.Workbook.close = full
elif what == "journal":
    import sqlite3
    from bulkonboard.journal import commits as journal
    calls = {"n": 0}
    real = journal._grouped
    def grouped(batch):
        if any(write.waiter is not None for write in batch):
            calls["n"] += 1
            if calls["n"] > 3:
                raise sqlite3.OperationalError("database or disk is full")
        return real(batch)
    journal._grouped = grouped
elif what == "begin":
    import sqlite3
    from bulkonboard.journal import store as journal
    def full(self, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")
    journal.Journal.begin_run = full
elif what == "bug":
    from bulkonboard.app import runner
    def broken(*args, **kwargs):
        raise RuntimeError("an invariant broke\\nsecond line")
    runner.run_details = broken
from bulkonboard.cli.commands import main
sys.argv = ["bulkonboard", *sys.argv[1:]]
main()
"""


def bulkonboard_with(fault: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", INJECT, fault, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
        timeout=300, env=clean_env(), stdin=subprocess.DEVNULL,
    )  # fmt: skip


def journal_rows(path: Path) -> dict[str, tuple[str, str | None]]:
    with sqlite3.connect(path) as connection:
        found = connection.execute("SELECT upn_key, state, user_id FROM rows").fetchall()
    return {upn: (state, user_id) for upn, state, user_id in found}


def rebuild_command(line: str) -> list[str]:
    """The rebuild command the exit-4 line names, as a person would copy it."""
    match = re.search(r"`bulkonboard (journal results [^`]+)`", line)
    assert match, line
    return shlex.split(match.group(1))


def fill(disk: Path, leave: int) -> None:
    """Fill `disk` until only about `leave` bytes are free."""
    stats = os.statvfs(disk)
    free = stats.f_bavail * stats.f_frsize
    (disk / "filler").write_bytes(b"\0" * max(0, free - leave))


def test_results_on_a_full_disk_exit_4_and_the_journal_gives_them_back(tmp_path: Path, small_disk: Path) -> None:
    sheet = write_sheet(tmp_path / "hires.csv", [person(n) for n in range(1, 41)] + [person(41, "fabrikam.com")])
    journal = tmp_path / "state" / "journal.sqlite"
    fill(small_disk, leave=8 * 1024)  # far less than the results workbook needs
    result = bulkonboard(
        "run", sheet, "--sandbox", "--customer", CONTOSO, "--journal", journal, "--results",
        small_disk / "results.xlsx", "--rate", "200",
    )  # fmt: skip
    line = assert_one_clear_line(result, 4)
    assert "results.xlsx: cannot write the results workbook" in line and "No space left" in line
    assert not (small_disk / "results.xlsx").exists()
    assert [p.name for p in small_disk.iterdir()] == ["filler"]  # no half-written temp file left behind

    # Nothing is lost: every created user is in the journal, and the line's own command gives the results back.
    recorded = journal_rows(journal)
    assert len(recorded) == 40 and {state for state, _ in recorded.values()} == {"created"}
    out = tmp_path / "rebuilt.xlsx"
    rebuilt = bulkonboard(*rebuild_command(line.replace("OUT.xlsx", str(out))))
    assert rebuilt.returncode == 0, rebuilt.stderr
    rows = sheet_rows(out)
    assert sorted(str(r["userPrincipalName"]) for r in rows) == sorted(recorded)
    assert all(r["status"] == "created" and r["userId"] == recorded[str(r["userPrincipalName"])][1] for r in rows)
    assert summary_of(out)["exit code"] == 4


def test_results_that_cannot_be_written_exit_4_with_the_rebuild_command(tmp_path: Path) -> None:
    sheet = write_sheet(tmp_path / "hires.csv", [person(n) for n in range(1, 11)])
    journal = tmp_path / "journal.sqlite"
    result = bulkonboard_with(
        "results", "run", sheet, "--sandbox", "--customer", CONTOSO, "--journal", journal, "--results",
        tmp_path / "results.xlsx", "--rate", "200",
    )  # fmt: skip
    line = assert_one_clear_line(result, 4)
    assert "cannot write the results workbook (No space left on device)" in line
    assert f"--journal {journal} --run 1" in line
    assert not list(tmp_path.glob("*results*"))
    assert [state for state, _ in journal_rows(journal).values()] == ["created"] * 10

    out = tmp_path / "back.xlsx"
    rebuilt = bulkonboard(*rebuild_command(line.replace("OUT.xlsx", str(out))))
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert sorted(int(str(r["row"])) for r in sheet_rows(out)) == list(range(2, 12))


def test_results_of_an_embedded_rehearsal_never_point_at_its_throwaway_journal(tmp_path: Path) -> None:
    sheet = write_sheet(tmp_path / "hires.csv", [person(1)])
    result = bulkonboard_with("results", "run", sheet, "--sandbox", "--customer", CONTOSO, "--rate", "200")
    line = assert_one_clear_line(result, 4)
    assert "throwaway journal" in line and "journal results" not in line


def test_a_journal_that_fails_mid_run_stops_sending_keeps_the_results_and_exits_4(tmp_path: Path) -> None:
    sheet = write_sheet(tmp_path / "hires.csv", [person(n) for n in range(1, 31)])
    journal = tmp_path / "journal.sqlite"
    results = tmp_path / "results.xlsx"
    with standalone_sandbox() as sandbox:
        result = bulkonboard_with(
            "journal", "run", sheet, "--sandbox-url", sandbox.url, "--customer", CONTOSO, "--journal", journal,
            "--results", results, "--rate", "200", "--concurrency", "4",
        )  # fmt: skip
        line = assert_one_clear_line(result, 4)
        assert "cannot write the journal" in line and "no further row was sent" in line and str(results) in line
        in_tenant = {u["userPrincipalName"] for u in sandbox.users() if u["userPrincipalName"].startswith("new.hire")}

    # Exactly once depends on this: no request left without "sent" committed before it.
    recorded = journal_rows(journal)
    assert in_tenant and in_tenant <= set(recorded)
    assert len(in_tenant) < 30  # the run stopped sending
    rows = sheet_rows(results)
    assert [int(str(r["row"])) for r in rows] == list(range(2, 32))  # every row listed, in order
    created = {str(r["userPrincipalName"]) for r in rows if r["status"] == "created"}
    assert created <= in_tenant
    for row in rows:
        if row["status"] != "created":
            assert row["status"] == "pending" and "cannot write the journal" in str(row["problems"])
    assert "cannot write the journal" in str(summary_of(results)["run failed"])


def test_a_mid_run_journal_failure_on_a_full_disk_exits_4(tmp_path: Path, small_disk: Path) -> None:
    sheet = write_sheet(tmp_path / "hires.csv", [person(n) for n in range(1, 401)])
    journal = small_disk / "journal.sqlite"
    results = tmp_path / "results.xlsx"
    with standalone_sandbox() as sandbox:
        first = bulkonboard(
            "run", write_sheet(tmp_path / "one.csv", [person(1000)]), "--sandbox-url", sandbox.url, "--customer",
            CONTOSO, "--journal", journal, "--results", tmp_path / "one.xlsx",
        )  # fmt: skip
        assert first.returncode == 0, first.stderr
        fill(small_disk, leave=48 * 1024)
        result = bulkonboard(
            "run", sheet, "--sandbox-url", sandbox.url, "--customer", CONTOSO, "--journal", journal, "--results",
            results, "--rate", "500", "--concurrency", "4",
        )  # fmt: skip
        line = assert_one_clear_line(result, 4)
        assert "journal" in line and "full" in line
        in_tenant = {u["userPrincipalName"] for u in sandbox.users() if u["userPrincipalName"].startswith("new.hire")}
    (small_disk / "filler").unlink()
    recorded = journal_rows(journal)
    assert in_tenant <= set(recorded)  # nothing left without its journal record
    assert len(in_tenant) < 401
    assert [int(str(r["row"])) for r in sheet_rows(results)] == list(range(2, 402))


def test_a_bug_is_one_line_and_exit_4_never_1(tmp_path: Path) -> None:
    sheet = write_sheet(tmp_path / "hires.csv", [person(1)])
    journal = tmp_path / "journal.sqlite"
    result = bulkonboard_with(
        "bug", "run", sheet, "--sandbox", "--customer", CONTOSO, "--journal", journal, "--results",
        tmp_path / "r.xlsx",
    )  # fmt: skip
    line = assert_one_clear_line(result, 4)
    assert "unexpected RuntimeError: an invariant broke" in line and "second line" not in line
    assert journal_rows(journal)["new.hire1@contoso.com"][0] == "created"


@pytest.mark.parametrize("with_passwords", [True, False])
def test_the_passwords_workbook_is_named_only_when_it_was_written(tmp_path: Path, with_passwords: bool) -> None:
    header = ["userPrincipalName", "firstName", "lastName", "displayName", "usageLocation", "password"]
    rows = [person(n) if with_passwords else [*person(n)[:-1], ""] for n in range(1, 4)]
    sheet = write_sheet(tmp_path / "hires.csv", rows, header=header)
    passwords = tmp_path / "passwords.xlsx"
    results = tmp_path / "results.xlsx"
    result = bulkonboard(
        "run", sheet, "--sandbox", "--customer", CONTOSO, "--results", results, "--generate-passwords", passwords,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    named_in_table = f"generated passwords: {passwords}" in result.stderr
    named_in_summary = summary_of(results).get("generated passwords") == str(passwords)
    assert passwords.exists() is (not with_passwords)
    assert named_in_table is named_in_summary is passwords.exists()


@pytest.fixture
def read_only_disk(small_disk: Path) -> Path:
    folder = small_disk / "results"
    folder.mkdir()
    done = subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"this machine refuses a read-only remount: {done.stderr.decode(errors='replace').strip()}")
    return folder


def test_results_on_a_read_only_file_system_exit_4_before_anything_is_sent(
    tmp_path: Path, read_only_disk: Path
) -> None:
    sheet = write_sheet(tmp_path / "hires.csv", [person(n) for n in range(1, 4)])
    journal = tmp_path / "journal.sqlite"
    result = bulkonboard(
        "run", sheet, "--sandbox", "--customer", CONTOSO, "--journal", journal, "--results",
        read_only_disk / "results.xlsx",
    )  # fmt: skip
    line = assert_one_clear_line(result, 4)
    assert "results.xlsx: cannot write the workbook there (Read-only file system)" in line
    assert journal_rows(journal) == {}  # nothing was sent


def test_a_journal_that_takes_no_write_at_the_start_exits_4_and_sends_nothing(tmp_path: Path) -> None:
    sheet = write_sheet(tmp_path / "hires.csv", [person(1)])
    with standalone_sandbox() as sandbox:
        result = bulkonboard_with(
            "begin", "run", sheet, "--sandbox-url", sandbox.url, "--customer", CONTOSO, "--journal",
            tmp_path / "journal.sqlite", "--results", tmp_path / "r.xlsx",
        )  # fmt: skip
        line = assert_one_clear_line(result, 4)
        assert "cannot record the run in the journal" in line and "nothing was sent" in line
        assert not [u for u in sandbox.users() if u["userPrincipalName"].startswith("new.hire")]
