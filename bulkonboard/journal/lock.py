"""One run at a time per journal: a second run on the same journal is refused, naming the run that holds it.

A journal can be named many ways (a symlink, a relative path, `..`, a hard link), so the lock follows the FILE,
not the words: a lock on `<real path>.lock` (the path with every symlink and `..` resolved), which carries the
holder's name, and a lock on the journal file itself, which a hard link cannot dodge (a new journal is made,
whole and empty, before it is locked). The system releases both the moment the process dies, even under
kill -9: a stale lock file left by a dead process holds nothing and is simply taken over. The lock file's
content (pid, host, start time, command) is only there to tell the person who is refused which run is in the way.

Portability: the locks are portalocker's (a maintained library): `flock` on Linux, BSD and macOS, the C
runtime's `msvcrt.locking` on Windows. On Linux `flock` and SQLite's POSIX (fcntl) locks are independent, so
locking the journal file does not touch SQLite's own locking. On Windows a lock is mandatory (it would stop
SQLite reading its own file), so there only the `.lock` file is locked: hard links to a journal are rare there,
and every other name still meets the `.lock` file. On NFS, Linux emulates `flock` with POSIX locks, which would
conflict with SQLite's, but a WAL journal does not work on NFS anyway.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

import portalocker
from portalocker.exceptions import AlreadyLocked, LockException

from ..errors import InputError, JournalBusy, OwnFailure
from . import file as journal_file


def real_path(journal: Path) -> Path:
    """The journal's path with symlinks, `..` and the current folder resolved: one name per file (but for hard
    links, which the lock on the file itself covers)."""
    return Path(os.path.realpath(journal))


def lock_path_for(journal: Path) -> Path:
    real = real_path(journal)
    return real.with_name(real.name + ".lock")


class RunLock:
    """Held for the whole run; `with RunLock(journal_path, what="run new_hires.xlsx"):`."""

    def __init__(self, journal: Path, *, what: str = "") -> None:
        self.journal = Path(journal)
        self.path = lock_path_for(self.journal)
        self.what = what
        self._fd: int | None = None
        self._file_fd: int | None = None

    def acquire(self) -> None:
        fd = self._open_lock_file()
        try:
            portalocker.lock(fd, _EXCLUSIVE_NOW)
        except AlreadyLocked:
            holder = _describe(_read_holder(fd))
            os.close(fd)
            raise self._busy(holder) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            if not os.path.exists(self.journal):
                # Made now, whole (`journal_file.create`), so that the file itself is locked from the start: a
                # hard link made to it while this run goes cannot dodge the lock.
                journal_file.create(real_path(self.journal))
            self._file_fd = self._lock_journal_file()
        except BaseException:
            portalocker.unlock(fd)
            os.close(fd)
            raise
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "what": self.what,
        }
        try:
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, json.dumps(me).encode())
        except OSError:
            pass  # a full disk: the lock is held all the same; only its courtesy note is missing
        self._fd = fd

    def _open_lock_file(self) -> int:
        """A journal that exists but whose lock cannot be made (a read-only folder) is bulkonboard's own work
        that cannot go on (exit 4, as the journal says of itself); a new journal's path that cannot hold one is
        a path to fix (exit 2)."""
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if os.path.isfile(self.journal):
                raise OwnFailure(
                    f"{self.journal}: cannot lock the journal: {self.path} cannot be written ({reason}); its "
                    "folder must be writable for a run (SQLite's -wal and -shm files go there too)"
                ) from None
            raise InputError(f"{self.path}: cannot create the journal's lock ({reason})") from None

    def _lock_journal_file(self) -> int | None:
        """The journal file itself, locked too: another name of it (a hard link) has another `.lock` file.

        Opened read-only (a lock needs no write access, and a read-only journal is refused later with its own
        line). Kept open until the journal's SQLite connections are closed: closing a descriptor of a file drops
        the POSIX locks SQLite's connections of this process hold on it, so it is closed only in `release`."""
        if os.name == "nt":  # a mandatory lock would keep SQLite out of its own file (see the module's note)
            return None
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
        try:
            fd = os.open(real_path(self.journal), flags)
        except OSError:
            return None  # not openable (a folder, no permission): the journal says so in its own words
        try:
            portalocker.lock(fd, _EXCLUSIVE_NOW)
        except AlreadyLocked:
            holder = _holder_of_file(fd)
            os.close(fd)
            raise self._busy(holder) from None
        except LockException:  # a file system without locks: the `.lock` file still serves every name but hard links
            os.close(fd)
            return None
        return fd

    def _busy(self, holder: str) -> JournalBusy:
        real = real_path(self.journal)
        named = f"{self.journal}" if real == self.journal.absolute() else f"{self.journal} (that is {real})"
        return JournalBusy(
            f"another run holds the journal {named}: {holder}; wait for it to finish (or stop it) and run again"
        )

    def release(self) -> None:
        if self._fd is None:
            return
        # Leave the file: deleting it would race a second run that opened it already and is waiting to lock it.
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass
        portalocker.unlock(self._fd)
        os.close(self._fd)
        self._fd = None
        if self._file_fd is not None:
            os.close(self._file_fd)  # closing drops its flock
            self._file_fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


#: Take the lock now or say who holds it: never wait (a nightly run must not queue behind a stuck one).
_EXCLUSIVE_NOW = portalocker.LockFlags.EXCLUSIVE | portalocker.LockFlags.NON_BLOCKING


def _read_holder(fd: int) -> dict[str, object]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        raw = os.read(fd, 4096)
        value = json.loads(raw.decode() or "{}")
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _holder_of_file(fd: int) -> str:
    """Who holds the journal file's flock, reached under another name (a hard link): its own `.lock` file is
    named after that other name, so the kernel is asked (Linux's /proc/locks: pid by device and inode)."""
    info = os.fstat(fd)
    try:
        wanted = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
        with open("/proc/locks", encoding="ascii", errors="replace") as locks:
            for line in locks:
                fields = line.split()
                if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted and fields[4].isdigit():
                    return f"pid {fields[4]} (through another name of the same file: a hard link)"
    except (OSError, AttributeError):  # no /proc/locks (macOS), or no os.major (Windows)
        pass
    return "a run that reached the same file through another name (a hard link)"


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
