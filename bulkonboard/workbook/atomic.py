"""A workbook appears at its path whole or not at all.

Why: it is written to a temp file beside the target and renamed over it at the end, so an interrupted run never
leaves half a file where a person expects results; xlsxwriter's own scratch files go to a private folder, locked
while the writer lives, so the next run can tell a killed run's leftovers from a live one's (leftovers.py).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any

import xlsxwriter
from xlsxwriter.exceptions import XlsxWriterException

from ..errors import OwnFailure
from .cells import SAFE_TEXT_OPTIONS
from .leftovers import LOCKS, SCRATCH_PREFIX, hold, remove_leftovers


class WorkbookNotWritten(OwnFailure):
    """A workbook that could not be written (a full disk, a read-only or forbidden folder): exit 4, bulkonboard's
    own failure. `reason` alone (the system's words) lets a caller say in its own line how to get it back."""

    def __init__(self, path: Path, what: str, reason: str) -> None:
        super().__init__(f"{path}: {what} ({reason})")
        self.reason = reason


class AtomicTarget:
    """A temp file beside `path`, created exclusively with `mode`; `commit` renames it over `path`.

    The temp file is in the same folder so that the rename is atomic; O_EXCL means it is ours and new, with
    its mode set at creation (no window where a passwords file is readable by others). The temp file and the
    scratch folder are locked while this writer lives, so that the next run removes them if it is killed, and
    never while it lives (leftovers.py); that next run is any writer's start.
    """

    def __init__(self, path: Path, mode: int) -> None:
        self.path = path
        remove_leftovers(path.parent)
        self.temp_path = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_BINARY", 0)
        try:
            fd = os.open(self.temp_path, flags, mode)
        except OSError as exc:
            raise WorkbookNotWritten(
                path, "cannot write the workbook there", exc.strerror or str(exc)
            ) from None
        hold(fd)
        self.file: IO[bytes] = os.fdopen(fd, "wb")
        self._scratch_lock: int | None = None
        # xlsxwriter's own temp files (constant_memory row data, parts being zipped) go to a private folder
        # (mode 0700), so that they are easy to remove however the writing ends.
        try:
            self.scratch_dir = tempfile.mkdtemp(prefix=SCRATCH_PREFIX)
            self._scratch_lock = os.open(self.scratch_dir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError as exc:
            self.file.close()
            self.temp_path.unlink(missing_ok=True)
            raise OwnFailure(
                f"{path}: cannot make a scratch folder in {tempfile.gettempdir()} ({exc.strerror or exc})"
            ) from None
        hold(self._scratch_lock)

    def commit(self) -> None:
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            # Renamed while still open, so still locked: the next run's clean-up never takes it in between.
            # (Windows renames no open file, and has no such locks to keep.)
            if not LOCKS:
                self.file.close()
            os.replace(self.temp_path, self.path)
            self.file.close()
        except OSError as exc:
            self.discard()
            raise WorkbookNotWritten(
                self.path, "cannot write the workbook", exc.strerror or str(exc)
            ) from None
        self._remove_scratch()

    def discard(self) -> None:
        if not self.file.closed:
            # Closing flushes what is buffered, which fails again on a full disk: the file goes all the same.
            with contextlib.suppress(OSError):
                self.file.close()
        with contextlib.suppress(OSError):
            self.temp_path.unlink(missing_ok=True)
        self._remove_scratch()

    def _remove_scratch(self) -> None:
        shutil.rmtree(self.scratch_dir, ignore_errors=True)
        if self._scratch_lock is not None:
            os.close(self._scratch_lock)
            self._scratch_lock = None


def new_workbook(target: AtomicTarget, *, constant_memory: bool = False, in_memory: bool = False) -> Any:
    options = dict(SAFE_TEXT_OPTIONS, tmpdir=target.scratch_dir)
    if constant_memory:
        options["constant_memory"] = True
    if in_memory:
        options["in_memory"] = True
    return xlsxwriter.Workbook(target.file, options)


def close_workbook(workbook: Any, target: AtomicTarget) -> None:
    """Finish the zip and put it in place; on any failure leave neither the file nor the temp file behind."""
    try:
        workbook.close()
    except (OSError, XlsxWriterException) as exc:
        target.discard()
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise WorkbookNotWritten(target.path, "cannot write the workbook", reason) from None
    except BaseException:
        target.discard()
        raise
    target.commit()


def abandon_workbook(workbook: Any, target: AtomicTarget) -> None:
    """Drop a workbook that will never be finished: close the sheets' open temp files, then remove them all.

    xlsxwriter has no abort call; in constant_memory mode each sheet holds an open row-data file
    (`row_data_fh`), closed here so that the folder can be removed on every platform.
    """
    for sheet in workbook.worksheets():
        handle = getattr(sheet, "row_data_fh", None)
        if handle is not None and not handle.closed:
            handle.close()
    target.discard()
