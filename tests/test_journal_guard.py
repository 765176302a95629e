"""The journal guard, through the real command: one run per journal FILE however it is named, a journal opened
only if it is one, never chmod-ed, a damaged or read-only one refused with exit 4 and left as it was, and the
embedded sandbox's journal usable run after run.

Each case asserts the exit code, ONE line on stderr, no traceback, and that what must survive survived.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import openpyxl
import pytest

from bulkonboard.journal.file import APPLICATION_ID
from tests.support import (
    CONTOSO,
    FORMAT_1_SCHEMA,
    ROOT,
    SANDBOX_DATA,
    assert_one_clear_line,
    clean_env,
    person,
    run_cli,
    write_sheet,
)

pytestmark = pytest.mark.timeout(120)

HOLDER = """
import sys
from pathlib import Path
from bulkonboard.journal.lock import RunLock
lock = RunLock(Path(sys.argv[1]), what="run nightly.csv")
lock.acquire()
print("locked", flush=True)
sys.stdin.readline()
"""


def bulkonboard(*args: str | Path, cwd: Path = ROOT, tmp: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {"XDG_STATE_HOME": str(tmp / "state")} if tmp else {}
    return run_cli(*args, cwd=cwd, env={**env, "PYTHONPATH": str(ROOT)}, timeout=120)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_sandbox(tmp: Path, journal: Path | str, *, n: int = 3, cwd: Path = ROOT, results: str = "r.xlsx",
                extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    sheet = tmp / "sheet.csv"
    if not sheet.exists():
        write_sheet(sheet, [person(i) for i in range(1, n + 1)])
    return bulkonboard(
        "run", sheet, "--sandbox", "--customer", CONTOSO, "--results", tmp / results, "--journal", journal,
        "--quiet", *extra, cwd=cwd, tmp=tmp,
    )


def journal_rows(path: Path) -> dict[str, tuple[str, int]]:
    connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return {key: (state, run) for key, state, run in connection.execute("SELECT upn_key, state, run_id FROM rows")}
    finally:
        connection.close()


def statuses(results: Path) -> list[str]:
    book = openpyxl.load_workbook(results, read_only=True)
    values = list(book["Rows"].iter_rows(values_only=True))
    column = [str(h) for h in values[0]].index("status")
    return [str(row[column]) for row in values[1:]]


@contextmanager
def holder_of(journal: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the run lock, as a run does for its whole length; released on leaving."""
    env = clean_env(PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(journal)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "locked"  # waits on the condition, not on time
        yield proc
    finally:
        assert proc.stdin is not None
        proc.stdin.write("\n")
        proc.stdin.flush()
        proc.wait(timeout=30)


@pytest.fixture
def made_journal(tmp_path: Path) -> Path:
    """A real journal, written by a real run of three users."""
    journal = tmp_path / "j.sqlite"
    result = run_sandbox(tmp_path, journal)
    assert result.returncode == 0, result.stderr
    assert len(journal_rows(journal)) == 3
    return journal


# ---------------------------------------------------------------------------------------------------------------
# 1. one run per journal file, however it is named


def test_a_second_run_reaching_the_journal_any_way_is_refused_and_changes_nothing(
    tmp_path: Path, made_journal: Path
) -> None:
    (tmp_path / "sub").mkdir()
    symlink = tmp_path / "link.sqlite"
    symlink.symlink_to(made_journal)
    hard_link = tmp_path / "sub" / "hard.sqlite"
    os.link(made_journal, hard_link)
    before = journal_rows(made_journal)
    with holder_of(made_journal) as holder:
        names: list[tuple[Path | str, Path]] = [
            (symlink, ROOT),
            ("j.sqlite", tmp_path),  # relative, from the journal's folder
            (tmp_path / "sub" / ".." / "j.sqlite", ROOT),
            (hard_link, ROOT),
        ]
        for name, cwd in names:
            result = run_sandbox(tmp_path, name, cwd=cwd, results=f"r-{len(str(name))}.xlsx")
            line = assert_one_clear_line(result, 3, "another run holds the journal")
            assert f"pid {holder.pid}" in line, (name, line)
            if name != hard_link:
                assert "run nightly.csv" in line  # the holder's own words, from the lock file
        forget = bulkonboard("journal", "forget", "--journal", symlink, "--status", "created", "--yes", tmp=tmp_path)
        assert_one_clear_line(forget, 3, "another run holds the journal", f"pid {holder.pid}")
    assert journal_rows(made_journal) == before  # nothing re-sent, nothing rewritten
    result = run_sandbox(tmp_path, symlink, results="after.xlsx")  # released: the next run goes
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------------------------------------------
# 2. a journal is opened only if it is one


def test_an_unrelated_sqlite_database_is_refused_untouched(tmp_path: Path) -> None:
    other = tmp_path / "contacts.db"
    connection = sqlite3.connect(other)
    connection.execute("CREATE TABLE contacts (name TEXT, phone TEXT)")
    connection.execute("INSERT INTO contacts VALUES ('Ada', '555-0100')")
    connection.commit()
    connection.close()
    before = sha256(other)
    result = run_sandbox(tmp_path, other)
    assert_one_clear_line(result, 2, f"{other}: is an SQLite database but not a bulkonboard journal", "contacts")
    assert sha256(other) == before
    assert not Path(f"{other}-wal").exists()

    connection = sqlite3.connect(other)
    connection.execute("PRAGMA application_id = 1234")
    connection.commit()
    connection.close()
    before = sha256(other)
    result = run_sandbox(tmp_path, other)
    assert_one_clear_line(result, 2, "another program's SQLite database (application id 0x000004d2)")
    assert sha256(other) == before


def test_an_empty_file_and_a_file_that_is_not_sqlite_say_so(tmp_path: Path) -> None:
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    result = run_sandbox(tmp_path, empty)
    assert_one_clear_line(result, 2, f"{empty}: is an empty file (0 bytes), not a bulkonboard journal")
    assert empty.stat().st_size == 0
    show = bulkonboard("journal", "show", "--journal", empty, tmp=tmp_path)
    assert_one_clear_line(show, 2, "empty file (0 bytes)")

    notes = tmp_path / "notes.sqlite"
    notes.write_text("new hires to onboard on Monday\n")
    result = run_sandbox(tmp_path, notes)
    assert_one_clear_line(result, 2, f"{notes}: is not an SQLite file")
    assert notes.read_text() == "new hires to onboard on Monday\n"




def make_old_journal(path: Path, service: str) -> None:
    """A journal as the release before this one left it: WAL, our tables and meta, application id 0."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.executescript(FORMAT_1_SCHEMA)
    connection.executemany(
        "INSERT INTO meta VALUES (?, ?)",
        [("format", "bulkonboard-journal"), ("version", "1"), ("service", service), ("created", "2026-12-01")],
    )
    connection.execute(
        "INSERT INTO runs (started, finished, input_path, input_sha256, customer, correlation_id, pid, host, counts, "
        "exit_code) VALUES ('2026-12-01T23:00:00+00:00', '2026-12-01T23:01:00+00:00', 'nightly.csv', 'ab', ?, 'c', "
        "1, 'h', '{\"created\": 1}', 0)",
        (CONTOSO,),
    )
    connection.execute(
        "INSERT INTO rows (customer, upn_key, upn, row, state, request_id, user_id, run_id, created_at, updated_at) "
        "VALUES (?, 'old.hire@contoso.com', 'old.hire@contoso.com', 2, 'created', 'req-1', 'uid-1', 1, "
        "'2026-12-01T23:00:30+00:00', '2026-12-01T23:00:30+00:00')",
        (CONTOSO,),
    )
    assert connection.execute("PRAGMA application_id").fetchone()[0] == 0
    connection.close()
    os.chmod(path, 0o600)


def test_a_journal_of_the_release_before_opens_and_is_upgraded_keeping_its_rows(tmp_path: Path) -> None:
    old = tmp_path / "old.sqlite"
    make_old_journal(old, "https://api.partnercenter.microsoft.com")
    show = bulkonboard("journal", "show", "--journal", old, "--rows", "--format", "json", tmp=tmp_path)
    assert show.returncode == 0, show.stderr
    document = json.loads(show.stdout)
    assert [run["input_path"] for run in document["runs"]] == ["nightly.csv"]
    assert [(row["upn"], row["state"]) for row in document["rows"]] == [("old.hire@contoso.com", "created")]
    connection = sqlite3.connect(old)
    assert connection.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    connection.close()
    # ...and, upgraded, still refused for another service: it remembers what Partner Center holds.
    result = run_sandbox(tmp_path, old)
    assert_one_clear_line(result, 2, "belongs to https://api.partnercenter.microsoft.com")
    assert journal_rows(old) == {"old.hire@contoso.com": ("created", 1)}


# ---------------------------------------------------------------------------------------------------------------
# 3. never chmod-ed; read-only or damaged: exit 4, left as it was


def test_a_read_only_journal_is_refused_not_chmod_ed(tmp_path: Path, made_journal: Path) -> None:
    os.chmod(made_journal, 0o444)
    before = sha256(made_journal)
    result = run_sandbox(tmp_path, made_journal, results="again.xlsx")
    assert_one_clear_line(result, 4, f"{made_journal}: the journal is read-only (mode 0444)", "chmod u+w")
    assert stat.S_IMODE(made_journal.stat().st_mode) == 0o444
    assert sha256(made_journal) == before


@contextmanager
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder holding a journal that cannot be written to: a read-only tmpfs as root (root ignores modes),
    a 0555 folder otherwise."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        try:
            yield folder
        finally:
            folder.chmod(0o755)
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)], capture_output=True).returncode:
        pytest.skip("running as root without the right to mount a tmpfs: a read-only folder cannot be made")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def test_a_journal_in_a_read_only_folder_says_what_is_wrong(tmp_path: Path) -> None:
    with read_only_folder(tmp_path) as folder:
        journal = folder / "j.sqlite"
        assert run_sandbox(tmp_path, journal).returncode == 0
        if os.geteuid() == 0:
            subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        else:
            folder.chmod(0o555)
        before = sha256(journal)
        result = run_sandbox(tmp_path, journal, results="again.xlsx")
        # (A 0555 folder lets the lock file be opened, and the journal's own check says it; a read-only file
        # system stops at the lock, which says the same.)
        line = assert_one_clear_line(result, 4, str(journal), "-wal")
        assert f"the journal's folder {folder} is read-only" in line or "Read-only file system" in line
        assert "not a bulkonboard journal" not in result.stderr
        assert sha256(journal) == before


def test_a_damaged_journal_page_exits_4_and_the_file_is_left_for_inspection(tmp_path: Path) -> None:
    journal = tmp_path / "j.sqlite"
    result = run_sandbox(tmp_path, journal, n=400)
    assert result.returncode == 0, result.stderr
    size = journal.stat().st_size
    assert size > 8 * 4096  # pages enough that the middle one is a page of rows
    with journal.open("r+b") as handle:
        handle.seek((size // 4096 // 2) * 4096 + 100)
        handle.write(b"\xde\xad\xbe\xef" * 512)
    before = sha256(journal)
    result = run_sandbox(tmp_path, journal, results="again.xlsx")
    assert_one_clear_line(result, 4, f"{journal}: the journal is damaged", "left as it is")
    assert sha256(journal) == before
    show = bulkonboard("journal", "show", "--journal", journal, tmp=tmp_path)
    assert_one_clear_line(show, 4, "the journal is damaged")
    assert sha256(journal) == before


# ---------------------------------------------------------------------------------------------------------------
# 4. --sandbox --journal J, twice


def test_the_embedded_sandbox_journal_serves_run_after_run(tmp_path: Path) -> None:
    journal = tmp_path / "j.sqlite"
    first = run_sandbox(tmp_path, journal, results="first.xlsx")
    assert first.returncode == 0, first.stderr
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600  # a new journal: owner only
    assert statuses(tmp_path / "first.xlsx") == ["created"] * 3
    second = run_sandbox(tmp_path, journal, results="second.xlsx")
    assert second.returncode == 0, second.stderr
    assert "Traceback" not in second.stderr
    # A fresh embedded sandbox holds none of the first run's users: they are created again, in it.
    assert statuses(tmp_path / "second.xlsx") == ["created"] * 3
    assert set(journal_rows(journal).values()) == {("created", 2)}
    show = bulkonboard("journal", "show", "--journal", journal, "--format", "json", tmp=tmp_path)
    document = json.loads(show.stdout)
    assert [run["counts"].get("created") for run in document["runs"]] == [3, 3]  # both runs kept
    assert document["service"] == f"sandbox:embedded:{SANDBOX_DATA.resolve()}"

    other_data = tmp_path / "other.toml"
    shutil.copy(SANDBOX_DATA, other_data)
    third = run_sandbox(tmp_path, journal, results="third.xlsx", extra=("--sandbox-data", str(other_data)))
    assert_one_clear_line(third, 2, f"this run talks to sandbox:embedded:{other_data.resolve()}")
    assert set(journal_rows(journal).values()) == {("created", 2)}


# ---------------------------------------------------------------------------------------------------------------
# 5. a journal that cannot be written any more


def test_a_journal_on_a_full_disk_exits_4_with_one_line_and_keeps_its_rows(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True
    ).returncode:
        pytest.skip("a small disk needs root and the right to mount a tmpfs")
    try:
        journal = disk / "j.sqlite"
        assert run_sandbox(tmp_path, journal).returncode == 0
        before = journal_rows(journal)
        filler = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:  # the rest of the disk, to the last block
            while os.write(filler, b"\0" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(filler)
        more = tmp_path / "more.csv"
        write_sheet(more, [person(i) for i in range(10, 60)])
        result = bulkonboard(
            "run", more, "--sandbox", "--customer", CONTOSO, "--results", tmp_path / "more.xlsx", "--journal",
            journal, "--quiet", tmp=tmp_path,
        )
        assert_one_clear_line(result, 4, f"{journal}: cannot ")
        (disk / "filler").unlink()
        assert journal_rows(journal) == before
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)
