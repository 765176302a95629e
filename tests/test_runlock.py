"""One run per journal: a second process is refused with the holder's pid; a dead holder's lock is taken over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bulkonboard.errors import JournalBusy
from bulkonboard.runlock import RunLock, lock_path_for

HOLDER = """
import sys
from pathlib import Path
from bulkonboard.runlock import RunLock
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
