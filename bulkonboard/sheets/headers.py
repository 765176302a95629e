"""Which column of a sheet means which field: header names matched loosely (case, spaces, `_`, `-`), Entra's
bracketed Graph names and version row, the Microsoft 365 admin center's names, and a one-line refusal that names
the columns it did find when the headers are not where they should be.

Apart from reader.py because it is a concern of its own: reading bytes into cells is one thing, knowing what a
person meant by their column names is another, and both grow.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NoReturn

from ..errors import InputError
from ..model import FIELDS, OPTIONAL_FIELDS
from .profile import PROFILE_HEADERS

LAYOUT_PLAIN = "plain"
LAYOUT_ENTRA = "entra"
LAYOUT_M365 = "m365"

#: Every spelling we accept, squashed (see `_squash`), -> canonical field. The API's own names, Graph's names
#: as Entra's bulk template puts them in brackets, and the Microsoft 365 admin center's `User Name`.
_ALIASES: dict[str, str] = {name.casefold(): name for name in FIELDS} | {
    "username": "userPrincipalName",  # Microsoft 365 admin center template
    "upn": "userPrincipalName",
    "givenname": "firstName",  # Graph / Entra
    "surname": "lastName",
    "passwordprofile": "password",
    "onpremisesimmutableid": "immutableId",
    "forcechangepasswordnextsignin": "forceChangePassword",
    "license": "licenses",  # one license a row is the common case; British spelling too
    "licence": "licenses",
    "licences": "licenses",
} | PROFILE_HEADERS  # profile and manager columns (the contract's additions of 2026-12-03)
#: Graph names that Entra's template carries and that we deliberately do not use (every user is created
#: enabled by Partner Center). Named so that the words outside their bracket are not tried either.
_IGNORED = frozenset({"accountenabled"})
_M365_MARKERS = frozenset({"username"})
_SQUASH = re.compile(r"[\s_\-]+")
_BRACKET = re.compile(r"\[([^\[\]]*)\]")


def _squash(text: str) -> str:
    return _SQUASH.sub("", text).casefold()


def header_field(name: str) -> str | None:
    """The canonical field a header names, or None for a column we keep out of the way.

    Matching ignores case, spaces, `_` and `-`. A bracket (Entra's `User name [userPrincipalName] Required`)
    holds Graph's name and wins over the words around it; an unknown column is never an error.
    """
    text = name.strip()
    if not text:
        return None
    for inside in _BRACKET.findall(text):
        key = _squash(inside)
        if key in _IGNORED:
            return None
        if key in _ALIASES:
            return _ALIASES[key]
    return _ALIASES.get(_squash(_BRACKET.sub("", text)))


def frame_fields(header: Header) -> tuple[str, ...]:
    return (*FIELDS, *(name for name in OPTIONAL_FIELDS if name in header.columns))


def is_version_row(cells: Sequence[str]) -> bool:
    """Entra's template starts with a `version:v1.0` row above its headers."""
    first = next((c for c in cells if c), "")
    return first.strip().strip('"').casefold().startswith("version:")


def _shown(header: str) -> str:
    """A header for a one-line message: quoted, whitespace (even a newline in a cell) collapsed."""
    return '"' + " ".join(header.split()) + '"'


@dataclass(frozen=True)
class Header:
    row: int  # the sheet's row number
    columns: dict[str, int]  # field -> 0-based column index
    span: range  # the columns from the first named one to the last; cells outside are not part of the table
    layout: str


def find_header(label: str, rows: Iterable[tuple[int, list[str]]]) -> Header:
    """The first non-blank row is the header, unless it is Entra's version row: then the next one is."""
    version_seen = False
    for number, cells in rows:
        if not any(cells):
            continue
        if not version_seen and is_version_row(cells):
            version_seen = True
            continue
        if not any(header_field(cell) for cell in cells):
            _refuse_headerless(label, number, rows)
        return _map_header(label, number, cells, version_seen)
    if version_seen:
        raise InputError(f"{label}: has Entra's version row but no header row after it")
    raise InputError(f"{label}: is empty (no header row)")


_HEADER_LOOKAHEAD = 10  # rows below a row without headers where the headers are looked for, to name them


def _refuse_headerless(label: str, number: int, rows: Iterable[tuple[int, list[str]]]) -> NoReturn:
    """Row `number` names no column: name the row just below that does (a title row above the headers is the usual
    cause). Never a cell's text (a data row may hold a password): only the columns recognised, by their names."""
    for count, (below, cells) in enumerate(rows):
        fields = [field for cell in cells if (field := header_field(cell))]
        if len(fields) >= 2:
            raise InputError(
                f"{label}: row {number} has no recognisable column header, but row {below} has "
                f"({', '.join(fields)}): delete the row(s) above row {below} (a title?) so the headers come first"
            )
        if count >= _HEADER_LOOKAHEAD:
            break
    raise InputError(
        f"{label}: row {number} has no recognisable column header (nor do the {_HEADER_LOOKAHEAD} rows below "
        "it); expected names such as userPrincipalName, displayName, usageLocation, password (or Microsoft's "
        "Entra / Microsoft 365 bulk template headers)"
    )


def _map_header(label: str, number: int, cells: list[str], version_seen: bool) -> Header:
    columns: dict[str, int] = {}
    bracketed = m365 = False
    for index, cell in enumerate(cells):
        field = header_field(cell)
        if field is None:
            continue
        if field in columns:
            first = cells[columns[field]]
            raise InputError(
                f"{label}: columns {_shown(first)} and {_shown(cell)} both mean {field}; keep only one"
            )
        columns[field] = index
        bracketed = bracketed or bool(_BRACKET.search(cell))
        m365 = m365 or _squash(cell) in _M365_MARKERS
    named = [index for index, cell in enumerate(cells) if cell]
    layout = LAYOUT_ENTRA if version_seen or bracketed else LAYOUT_M365 if m365 else LAYOUT_PLAIN
    return Header(row=number, columns=columns, span=range(named[0], named[-1] + 1), layout=layout)
