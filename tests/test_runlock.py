"""One run per journal: a second process is refused with the holder's pid; a dead holder's lock is taken over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bulkonboard.errors import InputError, JournalBusy, OwnFailure
from bulkonboard.journal.lock import RunLock, lock_path_for

HOLDER = """
import sys
from pathlib import Path
from bulkonboard.journal.lock import RunLock
lock = RunLock(Path(sys.argv[1]), what="run nightly.csv")
lock.acquire()
print("locked", flush=True)
sys.stdin.readline()
"""


def start_holder(journal: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(journal)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "locked"  # waits on the condition, not on time
    return proc


def test_second_process_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    journal = tmp_path / "journal.sqlite"
    holder = start_holder(journal)
    try:
        with pytest.raises(JournalBusy) as caught:
            RunLock(journal).acquire()
        message = caught.value.message
        assert f"pid {holder.pid}" in message
        assert "run nightly.csv" in message and "started" in message
        assert caught.value.exit_code == 3
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(timeout=30)
    with RunLock(journal):  # released on a clean exit
        pass


def test_lock_of_a_killed_process_is_taken_over(tmp_path: Path) -> None:
    journal = tmp_path / "journal.sqlite"
    holder = start_holder(journal)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    stale = json.loads(lock_path_for(journal).read_text())
    assert stale["pid"] == holder.pid  # the file still names the dead run...
    with RunLock(journal, what="tonight"):  # ...but holds nothing
        now = json.loads(lock_path_for(journal).read_text())
        assert now["pid"] == os.getpid() and now["what"] == "tonight"
    assert os.stat(lock_path_for(journal)).st_mode & 0o777 == 0o600


def test_same_process_twice_is_refused(tmp_path: Path) -> None:
    journal = tmp_path / "j.sqlite"
    with RunLock(journal):
        with pytest.raises(JournalBusy):
            RunLock(journal).acquire()


def test_every_name_of_the_journal_file_shares_one_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = tmp_path / "j.sqlite"
    journal.write_bytes(b"x")  # the file exists: the lock also holds the file itself
    (tmp_path / "sub").mkdir()
    symlink = tmp_path / "sub" / "link.sqlite"
    symlink.symlink_to(journal)
    hard_link = tmp_path / "sub" / "hard.sqlite"
    os.link(journal, hard_link)
    monkeypatch.chdir(tmp_path / "sub")
    holder = start_holder(journal)
    try:
        for name in (symlink, Path("link.sqlite"), Path("../j.sqlite"), tmp_path / "sub" / ".." / "j.sqlite"):
            assert lock_path_for(name) == lock_path_for(journal)
            with pytest.raises(JournalBusy, match=f"pid {holder.pid} .*run nightly.csv") as caught:
                RunLock(name).acquire()
            # named as given, and as it really is
            assert caught.value.message.startswith(f"another run holds the journal {name} (that is {journal}): ")
        assert lock_path_for(hard_link) != lock_path_for(journal)  # another name, another lock file...
        with pytest.raises(JournalBusy, match=f"pid {holder.pid} .*hard link"):
            RunLock(hard_link).acquire()  # ...but the same file, locked
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(timeout=30)
    with RunLock(hard_link), pytest.raises(JournalBusy, match="hard link"):
        RunLock(journal).acquire()  # and the other way round, in one process
    assert not lock_path_for(hard_link).read_text()  # released and emptied


def test_a_lock_that_cannot_be_made_beside_an_existing_journal_is_exit_4(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() == 0:
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)]).returncode:
            pytest.skip("root without the right to mount a tmpfs")
    try:
        (folder / "j.sqlite").write_bytes(b"x")
        if os.geteuid() == 0:
            subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        else:
            folder.chmod(0o555)
        with pytest.raises(OwnFailure, match="cannot lock the journal") as caught:
            RunLock(folder / "j.sqlite").acquire()
        assert caught.value.exit_code == 4
        with pytest.raises(InputError, match="cannot create the journal's lock"):
            RunLock(folder / "new.sqlite").acquire()  # a new journal's path: a path to fix, exit 2
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", "-l", str(folder)], check=True)
        else:
            folder.chmod(0o755)


def test_a_new_journal_is_locked_as_a_file_from_the_start(tmp_path: Path) -> None:
    journal = tmp_path / "new.sqlite"
    with RunLock(journal, what="the first run"):
        assert journal.read_bytes().startswith(b"SQLite format 3\x00")  # made whole, before it is locked
        assert os.stat(journal).st_mode & 0o777 == 0o600
        hard_link = tmp_path / "hard.sqlite"
        os.link(journal, hard_link)  # a second name, made while the first run goes
        with pytest.raises(JournalBusy, match="hard link"):
            RunLock(hard_link).acquire()
