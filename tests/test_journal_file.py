"""The journal file's guard, unit by unit: what is a journal, how a new one is made, and what a failed write or a
read-only place says (exit 4, naming the journal). The same cases through the command: test_journal_guard.py."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from bulkonboard.journal import file as journal_file
from bulkonboard.journal.file import APPLICATION_ID
from bulkonboard.journal.store import JournalError, JournalFailure, open_existing, open_journal
from tests.support import ROOT, clean_env
from tests.test_journal_guard import make_old_journal

SERVICE = "https://pc.test"
CUSTOMER = "3c9a8f12-5e6b-4c1d-9a7e-2f4b8d6c1e90"

pytestmark = pytest.mark.timeout(60)


def application_id(path: Path) -> int:
    connection = sqlite3.connect(path)
    try:
        return int(connection.execute("PRAGMA application_id").fetchone()[0])
    finally:
        connection.close()


def test_a_new_journal_is_made_whole_private_and_marked(tmp_path: Path) -> None:
    path = tmp_path / "state" / "j.sqlite"
    with open_journal(path, service=SERVICE) as journal:
        journal.begin_run(input_path="a.csv", input_sha256="x", customer=CUSTOMER, correlation_id="c")
    assert application_id(path) == APPLICATION_ID
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["j.sqlite"]  # no temporary left behind


def test_a_creation_killed_half_way_leaves_nothing_in_the_way(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    killed = tmp_path / ".j.sqlite.new-999999"  # what kill -9 in the middle of a creation leaves
    killed.write_bytes(b"")
    assert not path.exists()
    open_journal(path, service=SERVICE).close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["j.sqlite"]
    assert application_id(path) == APPLICATION_ID


def test_a_journal_of_the_release_before_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    make_old_journal(path, SERVICE)
    with open_journal(path, service=SERVICE) as journal:
        assert [(row.upn_key, row.state) for row in journal.rows()] == [("old.hire@contoso.com", "created")]
        assert [run.input_path for run in journal.runs()] == ["nightly.csv"]
    assert application_id(path) == APPLICATION_ID


def test_an_old_looking_database_with_tables_of_its_own_is_not_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "mixed.sqlite"
    make_old_journal(path, SERVICE)
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE invoices (id INTEGER)")
    connection.commit()
    connection.close()
    with pytest.raises(JournalError, match="not a bulkonboard journal .its tables: invoices, meta, rows, runs"):
        open_journal(path, service=SERVICE)
    assert application_id(path) == 0


def test_an_empty_sqlite_database_is_not_taken_for_a_new_journal(tmp_path: Path) -> None:
    path = tmp_path / "blank.sqlite"
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA user_version = 7")  # a valid, table-less database someone made
    connection.commit()
    connection.close()
    with pytest.raises(JournalError, match="it holds no tables") as caught:
        open_journal(path, service=SERVICE)
    assert caught.value.exit_code == 2
    connection = sqlite3.connect(path)
    assert connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
    connection.close()


def test_a_run_record_that_cannot_be_written_is_exit_4_naming_the_journal(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with open_journal(path, service=SERVICE) as journal:
        other = sqlite3.connect(path)
        other.execute("CREATE TRIGGER refuse BEFORE INSERT ON runs BEGIN SELECT RAISE(ABORT, 'I/O error'); END")
        other.commit()
        other.close()
        with pytest.raises(JournalFailure, match=f"{path}: cannot write the journal .I/O error") as caught:
            journal.begin_run(input_path="a.csv", input_sha256="x", customer=CUSTOMER, correlation_id="c")
        assert caught.value.exit_code == 4


async def test_a_full_disk_mid_run_stops_the_send_with_exit_4_and_keeps_what_was_committed(
    small_disk: Path,
) -> None:
    path = small_disk / "j.sqlite"
    journal = open_journal(path, service=SERVICE)
    try:
        journal.begin_run(input_path="a.csv", input_sha256="x", customer=CUSTOMER, correlation_id="c")
        await journal.sending(CUSTOMER, "first@contoso.com", 2, "req-first")
        filler = os.open(small_disk / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:  # the rest of the disk, to the last block
            while os.write(filler, b"\0" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(filler)
        failure: JournalFailure | None = None
        for n in range(20_000):  # until the WAL needs a block the disk no longer has
            try:
                await journal.sending(CUSTOMER, f"user{n}@contoso.com", n + 3, f"req-{n:040d}")
            except JournalFailure as exc:
                failure = exc
                break
        assert failure is not None
        assert failure.exit_code == 4
        assert failure.message.startswith(f"{path}: cannot write the journal (")
        assert "full" in failure.message
    finally:
        journal.abandon()
    (small_disk / "filler").unlink()
    with open_existing(path) as reopened:
        states = {row.upn_key: row.state for row in reopened.rows()}
    assert states["first@contoso.com"] == "sent"  # committed before the disk filled: still there


def test_a_journal_in_a_read_only_folder_is_exit_4_saying_so(small_disk: Path) -> None:
    path = small_disk / "j.sqlite"
    open_journal(path, service=SERVICE).close()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    with pytest.raises(JournalFailure, match=f"{path}: the journal is on a read-only file system"):
        open_journal(path, service=SERVICE)


def test_outcomes_failing_at_the_end_of_a_run_are_exit_4(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with open_journal(path, service=SERVICE) as journal:
        run_id = journal.begin_run(input_path="a.csv", input_sha256="x", customer=CUSTOMER, correlation_id="c")
        other = sqlite3.connect(path)
        other.execute("CREATE TRIGGER refuse BEFORE UPDATE ON runs BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END")
        other.commit()
        other.close()
        with pytest.raises(JournalFailure, match="cannot write the journal .disk I/O error"):
            journal.end_run(counts={"created": 1}, exit_code=0)
        assert journal.runs(run_id=run_id)[0].finished is None  # rolled back whole, not half-written


AS_ANOTHER_USER = """
import sys
from pathlib import Path
from bulkonboard.journal.store import JournalFailure, open_journal
try:
    open_journal(Path(sys.argv[1]), service="https://pc.test")
except JournalFailure as exc:
    print(exc.exit_code, exc.message)
"""


def test_a_journal_in_a_folder_its_user_cannot_write_is_exit_4_naming_the_folder() -> None:
    """A 0555 folder, as a user who is not root (root writes anywhere): run through setpriv as `nobody`."""
    if os.geteuid() == 0 and not shutil.which("setpriv"):
        pytest.skip("root without setpriv: no other user to be")
    folder = Path(tempfile.mkdtemp(prefix="bulkonboard-ro-"))
    try:
        os.chmod(folder, 0o755)
        path = folder / "j.sqlite"
        open_journal(path, service=SERVICE).close()
        prefix: list[str] = []
        if os.geteuid() == 0:
            os.chown(folder, 65534, 65534)
            os.chown(path, 65534, 65534)
            prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        os.chmod(folder, 0o555)
        before = path.read_bytes()
        said = subprocess.run(
            [*prefix, sys.executable, "-c", AS_ANOTHER_USER, str(path)],
            capture_output=True, text=True, timeout=60, cwd=ROOT, env=clean_env(PYTHONPATH=str(ROOT)),
        )
        assert said.returncode == 0, said.stderr
        assert said.stdout.startswith(f"4 {path}: the journal's folder {folder} is read-only"), said.stdout
        assert path.read_bytes() == before
    finally:
        os.chmod(folder, 0o755)
        shutil.rmtree(folder)


def test_a_journal_made_but_never_written_says_so_to_journal_show(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal_file.create(path)  # a creation that stopped before its first run wrote its meta
    with pytest.raises(JournalError, match="holds nothing yet"):
        open_existing(path)
    with open_journal(path, service=SERVICE) as journal:  # a run takes it as the new journal it is
        assert journal.service == SERVICE
