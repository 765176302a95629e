"""The generated-passwords workbook: the one workbook that may hold passwords, readable by its owner only (0600).

Why it is read back: a resumed run adds its new passwords to the earlier run's, so the file is read, checked
for exposure (mode), and written again whole.
"""

from __future__ import annotations

import io
import os
import stat
import zipfile
from collections.abc import Iterable
from pathlib import Path

from ..errors import InputError
from .atomic import AtomicTarget, close_workbook, new_workbook
from .fastrows import Table

PASSWORDS_SHEET = "Passwords"
PASSWORDS_COLUMNS: tuple[str, ...] = ("row", "userPrincipalName", "password")


def write_passwords(path: Path, entries: Iterable[tuple[int, str, str]]) -> None:
    """The generated passwords, (row, upn, password) each, in a workbook only its owner can read (0600).

    It replaces any file at `path` atomically: a caller adding to an earlier run's passwords reads them with
    `read_passwords` and writes them all again. Built in memory, so no password reaches a temp file.
    """
    path = Path(path)
    target = AtomicTarget(path, 0o600)
    try:
        workbook = new_workbook(target, in_memory=True)
        bold = workbook.add_format({"bold": True})
        table = Table(workbook, PASSWORDS_SHEET, PASSWORDS_COLUMNS, bold)
        for row, upn, password in entries:
            table.append(row, (upn, password))
        table.finish()
    except BaseException:
        target.discard()
        raise
    close_workbook(workbook, target)


def read_passwords(path: Path) -> dict[str, str]:
    """Casefolded UPN -> password from a workbook `write_passwords` wrote; the first entry for a UPN stands.

    Refuses a file that others may read: it has been exposed, and carrying on would hide that.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise InputError(f"{path}: cannot read the passwords workbook ({exc.strerror or exc})") from None
    try:
        # The mode is checked on the open file itself, so a swap of the path after the check changes nothing.
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"{path}: the passwords workbook is not a regular file")
        if os.name == "posix" and info.st_mode & 0o077:
            raise InputError(
                f"{path}: the passwords workbook may be read by others (mode {stat.S_IMODE(info.st_mode):04o}); "
                "it must be 0600 (chmod 600, and consider those passwords exposed)"
            )
        with os.fdopen(os.dup(fd), "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the passwords workbook ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    return _passwords_from(path, raw)


def _passwords_from(path: Path, raw: bytes) -> dict[str, str]:
    import openpyxl  # only reading needs it; openpyxl uses defusedxml's guards when installed

    try:
        book = openpyxl.load_workbook(io.BytesIO(raw), read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        raise InputError(f"{path}: is not a readable passwords workbook ({type(exc).__name__})") from None
    try:
        if PASSWORDS_SHEET not in book.sheetnames:
            raise InputError(f"{path}: has no sheet {PASSWORDS_SHEET!r}")
        rows = book[PASSWORDS_SHEET].iter_rows(values_only=True)
        header = [str(cell).strip().casefold() if cell is not None else "" for cell in next(rows, ())]
        try:
            upn_col = header.index("userprincipalname")
            password_col = header.index("password")
        except ValueError:
            raise InputError(
                f"{path}: the {PASSWORDS_SHEET} sheet needs columns userPrincipalName and password"
            ) from None
        passwords: dict[str, str] = {}
        for values in rows:
            upn = _text_of(values[upn_col] if upn_col < len(values) else None).strip()
            password = _text_of(values[password_col] if password_col < len(values) else None)
            if upn and password:
                passwords.setdefault(upn.casefold(), password)
        return passwords
    finally:
        book.close()


def _text_of(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
