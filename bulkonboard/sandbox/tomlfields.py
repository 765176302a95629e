"""Reading TOML tables strictly: every mistake is a `Bad(where, message)` naming its place in the file. Shared by
the data file's parts (`data` for customers, domains and users; `data_directory` for SKUs, licenses and profiles).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any


class Bad(Exception):
    def __init__(self, where: str, message: str) -> None:
        super().__init__(message)
        self.where = where
        self.message = message


def checked_table(raw: Any, where: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise Bad(where, "expected a table")
    unknown = [key for key in raw if key not in allowed]
    if unknown:
        raise Bad(where, f"unknown key {unknown[0]!r} (allowed: {', '.join(allowed)})")
    return raw


def text_of(table: Mapping[str, Any], key: str, where: str, required: bool = False) -> str | None:
    value = table.get(key)
    if value is None:
        if required:
            raise Bad(where, f"{key} is required")
        return None
    if not isinstance(value, str):
        raise Bad(where, f"{key} must be a string")
    value = value.strip()
    if not value and required:
        raise Bad(where, f"{key} is required")
    return value


def flag_of(table: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise Bad(where, f"{key} must be true or false")
    return value


_READABLE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def guid_of(table: Mapping[str, Any], key: str, where: str, required: bool = False) -> str | None:
    value = text_of(table, key, where, required=required)
    if value is None:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        pass
    # Real ids are GUIDs; a rehearsal file may use a readable one (the contract's own example is "3c9a...-guid").
    # Anything that can stand in a URL path segment is accepted.
    if not _READABLE_ID.fullmatch(value):
        raise Bad(where, f"{key} {value!r} is neither a GUID nor a plain id (letters, digits, . _ -)")
    return value


def is_iso_time(text: str) -> bool:
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def one_line(text: str) -> str:
    return " ".join(text.split())
