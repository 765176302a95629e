"""Reading a file a person named, safely: only a regular file, and only up to a bound.

A path can name a FIFO (opening it blocks until someone writes: the run hangs forever), a device (`/dev/zero`
never ends: the run eats memory until the kernel kills it) or a folder. So the file is opened without
blocking, checked with fstat on the very descriptor that is then read (no window between a check and the
open), and read only up to a size that a real HR sheet never reaches.

The bounds of the input live here so that docs/CONTRACT-ADDITIONS.md and every reader name the same numbers.
"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

from ..errors import InputError

#: A file of more bytes is refused before it is read: 5x the 1,000,000-row CSV of the benchmarks (~92 MB).
MAX_FILE_BYTES = 512 * 1024 * 1024
#: Data rows of a sheet (Excel's own sheet holds at most 1,048,576 rows; a CSV dry run of 1,000,000 rows is
#: benchmarked, so twice that).
MAX_ROWS = 2_000_000
#: Cells of a sheet: rows x columns of the table read (1,000,000 rows of 20 columns). For an xlsx it is the
#: rectangle from A1 to the furthest cell, which calamine allocates at ~32 bytes a cell (640 MB at the bound).
MAX_CELLS = 20_000_000
#: The sum of an xlsx's parts, uncompressed: ~5x the 100,000-row workbook of the benchmarks (53 MB of sheet
#: XML). A zip bomb (a few hundred KB that inflate to GBs) is refused before any part is inflated.
MAX_XLSX_UNCOMPRESSED = 256 * 1024 * 1024
#: Parts in an xlsx: a real workbook has tens; millions of tiny parts would be a bomb of another kind.
MAX_XLSX_PARTS = 10_000

_KINDS = {
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a directory",
}


def mib(size: int) -> str:
    return f"{size:,} bytes" if size < 1024 * 1024 else f"{size / (1024 * 1024):,.0f} MiB"


def read_regular_file(path: Path, what: str, *, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of `path`, which must be a regular file of at most `limit` bytes; else one InputError line.

    `what` names the file in the message ("the input sheet", "the domains file").
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise InputError(f"{path}: cannot read {what} (no such file)") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not {what}") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    try:
        _check_regular(path, what, os.fstat(fd), limit)
        with io.FileIO(fd, "rb", closefd=False) as handle:
            raw = _read_up_to(handle, limit + 1)  # a file that grows while it is read still stops at the bound
    except OSError as exc:
        raise InputError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    if len(raw) > limit:
        raise InputError(f"{path}: {what} is over the bound of {mib(limit)} (file size)")
    return raw


def _check_regular(path: Path, what: str, info: os.stat_result, limit: int) -> None:
    if not stat.S_ISREG(info.st_mode):
        kind = _KINDS.get(stat.S_IFMT(info.st_mode), "not a regular file")
        raise InputError(f"{path}: is {kind}, not {what}; only regular files are read")
    if info.st_size > limit:
        raise InputError(f"{path}: {what} is {mib(info.st_size)}, over the bound of {mib(limit)} (file size)")


def _read_up_to(handle: io.FileIO, size: int) -> bytes:
    """One read() may return less than asked (a network file system); read until EOF or `size`."""
    parts: list[bytes] = []
    left = size
    while left > 0:
        chunk = handle.read(left)
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)
