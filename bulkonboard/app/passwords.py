"""`--generate-passwords`: a strong password for each row to send that has none, kept where only the admin reads it.

Apart from the runner because it is a policy of its own: passwords are saved (0600) before any row that uses one
is sent, and an earlier run's passwords are reused, so that a replayed request carries the same body.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..model import Status
from ..sheets.validation import CheckedRow, Validation
from ..workbook.writers import example_password, read_passwords, write_passwords


def with_generated_passwords(validation: Validation, path: Path) -> tuple[Iterator[CheckedRow], Path | None]:
    """The rows to send, each with a password, and the workbook written (None: every row had its own, so no
    workbook is written and none is named).

    Passwords already in `path` (an earlier run of the same sheet) are reused for the same UPN: a user an
    earlier run created has that password, and a replayed request must carry the same body.
    """
    earlier = read_passwords(path) if path.exists() else {}
    chosen: dict[str, str] = {}
    entries: list[tuple[int, str, str]] = []
    for checked in validation:
        user = checked.user
        if checked.status is not Status.VALID or user.password or checked.deleted_user is not None:
            continue  # a user to restore keeps its own password: none is made up that it would not have
        password = earlier.get(user.upn_key) or example_password(16)
        chosen[user.upn_key] = password
        entries.append((user.row, user.userPrincipalName, password))
    # Keep the earlier run's passwords for users not in this sheet: they may be the only copy.
    kept = [(0, upn, password) for upn, password in earlier.items() if upn not in chosen]
    if not entries and not kept:
        return iter(validation), None
    write_passwords(path, entries + kept)
    return _fill_passwords(validation, chosen), path


def with_passwords_from(path: Path | None, levels: list[list[CheckedRow]]) -> list[list[CheckedRow]]:
    """Rows a run sends apart from the stream (managers first: sending/ordering.py) with the passwords written
    for them in `path` (None: none was generated)."""
    if path is None or not levels:
        return levels
    chosen = read_passwords(path)
    return [list(_fill_passwords(level, chosen)) for level in levels]


def _fill_passwords(rows: Iterable[CheckedRow], chosen: dict[str, str]) -> Iterator[CheckedRow]:
    for checked in rows:
        password = chosen.get(checked.user.upn_key) if checked.status is Status.VALID else None
        if password and not checked.user.password:
            checked = dataclasses.replace(checked, user=dataclasses.replace(checked.user, password=password))
        yield checked
