"""One run at a time per journal: a second run on the same journal is refused, naming the run that holds it.

The lock is an `flock` on `<journal>.lock`, so the kernel releases it the moment its process dies, even under
kill -9: a stale lock file left by a dead process holds nothing and is simply taken over. The file's content (pid,
host, start time, command) is only there to tell the person who is refused which run is in the way.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from .errors import InputError, JournalBusy


def lock_path_for(journal: Path) -> Path:
    return journal.with_name(journal.name + ".lock")


class RunLock:
    """Held for the whole run; `with RunLock(journal_path, what="run new_hires.xlsx"):`."""

    def __init__(self, journal: Path, *, what: str = "") -> None:
        self.path = lock_path_for(journal)
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise InputError(f"{self.path}: cannot create the journal's lock ({exc.strerror or exc})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(_read_holder(fd))
            os.close(fd)
            raise JournalBusy(
                f"another run holds the journal {self.path.with_suffix('')}: {holder}; "
                "wait for it to finish (or stop it) and run again"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "what": self.what,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        # Leave the file: deleting it would race a second run that opened it already and is waiting to lock it.
        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _read_holder(fd: int) -> dict[str, object]:
    try:
        raw = os.pread(fd, 4096, 0)
        value = json.loads(raw.decode() or "{}")
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _describe(holder: dict[str, object]) -> str:
    if not holder:
        return "a run that has not said who it is yet"
    parts = [f"pid {holder.get('pid')}"]
    if holder.get("host"):
        parts.append(f"on {holder['host']}")
    if holder.get("started"):
        parts.append(f"started {holder['started']}")
    if holder.get("what"):
        parts.append(f"({holder['what']})")
    return " ".join(parts)
