"""What a killed run leaves behind, and how the next one tells it from a live run's: an advisory lock.

A workbook is written to `.<name>.<hex>.tmp` beside its target and xlsxwriter's parts to a `bulkonboard-xlsx-*`
folder in the temp directory (workbook.py). kill -9 leaves both. Each writer holds an exclusive `flock` on its
temp file and on its scratch folder for as long as it lives; the kernel drops the lock when the process dies,
however it dies. So a left-over whose lock can be taken belongs to no live process, and is removed; one whose
lock is held is another run's, and is never touched. Only our exact name patterns, only our own files (same
owner), never a symlink, and never anything younger than a few seconds (a writer takes its lock just after it
creates the file). Without `flock` (Windows) only left-overs older than a day go.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import stat
import tempfile
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("bulkonboard")

#: Whether this system has the locks that tell a live writer's files from a killed one's.
LOCKS = fcntl is not None

#: `.<target name>.<12 hex>.tmp`, the name `workbook._AtomicTarget` gives its temp file (targets are .xlsx).
TEMP_FILE = re.compile(r"\..+\.xlsx\.[0-9a-f]{12}\.tmp")
SCRATCH_PREFIX = "bulkonboard-xlsx-"
#: `tempfile.mkdtemp(prefix=SCRATCH_PREFIX)`: eight characters of its own alphabet follow the prefix.
SCRATCH_DIR = re.compile(re.escape(SCRATCH_PREFIX) + r"[a-z0-9_]{8}")
#: A writer creates its file, then takes the lock: younger than this, a left-over is left alone.
MIN_AGE_SECONDS = 10.0
#: Without locks to ask, only this old.
MIN_AGE_WITHOUT_LOCKS = 24 * 3600.0


def hold(fd: int) -> bool:
    """Take the exclusive lock on `fd` without waiting; True if taken (or if locks are not available here)."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def remove_leftovers(folder: Path) -> int:
    """Remove killed runs' temp workbooks in `folder` and scratch folders in the temp directory; how many went."""
    removed = 0
    for place, pattern, is_dir in ((folder, TEMP_FILE, False), (Path(tempfile.gettempdir()), SCRATCH_DIR, True)):
        try:
            entries = list(os.scandir(place))
        except OSError:
            continue
        for entry in entries:
            if pattern.fullmatch(entry.name) and _remove_if_abandoned(Path(entry.path), is_dir=is_dir):
                removed += 1
    if removed:
        log.info("removed %d left-over temp file(s) of an earlier run that was killed", removed)
    return removed


def _remove_if_abandoned(path: Path, *, is_dir: bool) -> bool:
    try:
        info = path.lstat()
    except OSError:
        return False
    if (stat.S_ISDIR(info.st_mode) if is_dir else stat.S_ISREG(info.st_mode)) is False:
        return False  # a symlink, or a file where a folder belongs: not ours
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        return False
    age = time.time() - info.st_mtime
    if age < (MIN_AGE_SECONDS if fcntl is not None else MIN_AGE_WITHOUT_LOCKS):
        return False
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | (getattr(os, "O_DIRECTORY", 0) if is_dir else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return False
    try:
        if not hold(fd):
            return False  # a live run holds it
        # Removed while the lock is ours: no writer can be starting on it meanwhile (its name is new each time).
        if is_dir:
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
        return not path.exists()
    finally:
        os.close(fd)
