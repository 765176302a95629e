"""The profile columns (job title, department, office, phones, address...), by Microsoft Graph's names: the headers
that mean them, and the checks a cell passes before anything is sent.

Why checked here rather than left to Graph: the profile is set after the user is created (Partner Center's create
has no such fields), so a value Graph refuses would leave a half-made user (`partial`) to fix by hand; refused
before anything is sent, the person fixes one cell and runs again. The limits are the maxima Graph's user resource
documents; where it documents none, ours are marked and chosen from Active Directory's own attribute bounds.

Every check is a pandas operation over a whole column, kept as one bit per (column, kind of fault) in one integer
per row; the words are only built for the rows that failed, as validation.py does for its own rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

import numpy as np
import pandas as pd

from ..model import PROFILE_FIELDS, Code, Problem

#: Headers that mean a profile field, squashed (lower case, no spaces, `_` or `-`) -> Graph's name. Graph's own
#: names (any case) are matched by the reader; these are the contract's template headers that differ.
PROFILE_HEADERS: dict[str, str] = {name.casefold(): name for name in (*PROFILE_FIELDS, "manager")} | {
    # Entra's bulk template, by the names in its brackets
    "physicaldeliveryofficename": "officeLocation",
    "telephonenumber": "businessPhones",
    "mobile": "mobilePhone",
    # the Microsoft 365 admin center's template
    "officenumber": "officeLocation",
    "officephone": "businessPhones",
    "address": "streetAddress",
    "stateorprovince": "state",
    "ziporpostalcode": "postalCode",
    "countryorregion": "country",
}

#: Maximum lengths, as Graph's user resource documents them, except where marked.
PROFILE_LIMITS: dict[str, int] = {
    "jobTitle": 128,
    "department": 64,
    "officeLocation": 128,  # not documented by Graph: Active Directory's physicalDeliveryOfficeName bound
    "companyName": 64,
    "employeeId": 16,
    "employeeType": 64,  # not documented by Graph: ours
    "employeeHireDate": 64,  # the date's own form decides; this only stops a paragraph early
    "mobilePhone": 64,
    "businessPhones": 64,  # the one number's
    "streetAddress": 1024,
    "city": 128,
    "state": 128,
    "postalCode": 40,
    "country": 128,
    "preferredLanguage": 16,  # not documented by Graph: an ISO 639-1 tag such as en-US is far shorter
    "mailNickname": 64,
}

PHONE_FIELDS = frozenset({"mobilePhone", "businessPhones"})
HIRE_DATE = "employeeHireDate"
#: A telephone number as people write one: an optional +, digits with spaces, dots, dashes, slashes or brackets,
#: and an optional extension (x123, ext. 123). At least 3 and at most 20 digits are counted apart.
_PHONE_RE = r"\+?[0-9][0-9 ().\-/]*(?:\s*(?:x|ext\.?)\s*[0-9]{1,6})?"
_DIGITS_MIN, _DIGITS_MAX = 3, 20
#: A language tag (ISO 639-1 language, optional region or script), as Graph's preferredLanguage takes it.
_LANGUAGE_RE = r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8})*"
#: What Exchange refuses in an alias (mailNickname): Graph answers 400 for these.
_NICKNAME_BAD = r"[^A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.]"
_TOO_LONG, _INVALID = 0, 1


def _bit(index: int, kind: int) -> int:
    return 1 << (2 * index + kind)


@dataclass(slots=True)
class ProfileCheck:
    """The profile columns a sheet has, checked: per row the faults (bits), the values as they will be sent."""

    columns: dict[str, np.ndarray]  # the sheet's profile columns, as sent (a hire date as Graph's date-time)
    raw: dict[str, np.ndarray]  # as typed, for the messages
    failed: np.ndarray  # per row: one bit per (field, too long | invalid)
    counts: dict[str, int] = field(default_factory=dict)  # problem code -> rows

    @classmethod
    def of(cls, frame: pd.DataFrame) -> ProfileCheck:
        """Check the profile columns of `frame` that are there; the others cost nothing."""
        failed = np.zeros(len(frame), dtype=np.int64)
        columns: dict[str, np.ndarray] = {}
        raw: dict[str, np.ndarray] = {}
        for index, name in enumerate(PROFILE_FIELDS):
            if name not in frame.columns:
                continue
            cells = frame[name].fillna("").astype(str)
            raw[name] = cells.to_numpy(dtype=object)
            filled = (cells != "").to_numpy()
            if not filled.any():
                continue
            failed[filled & (cells.str.len() > PROFILE_LIMITS[name]).to_numpy()] |= _bit(index, _TOO_LONG)
            bad, sent = _form(name, cells, filled)
            failed[bad] |= _bit(index, _INVALID)
            columns[name] = sent
        check = cls(columns, raw, failed)
        for index, _name in enumerate(PROFILE_FIELDS):
            for kind, code in ((_TOO_LONG, Code.FIELD_TOO_LONG), (_INVALID, Code.FIELD_INVALID)):
                hits = int(((failed & _bit(index, kind)) != 0).sum())
                if hits:
                    check.counts[code] = check.counts.get(code, 0) + hits
        return check

    def any_failed(self) -> np.ndarray:
        return self.failed != 0

    def profile_at(self, position: int) -> tuple[tuple[str, str], ...]:
        """The row's filled profile cells, as sent, in Graph's order."""
        found = []
        for name, values in self.columns.items():
            value = values[position]
            if value:
                found.append((name, value))
        return tuple(found)

    def problems_at(self, position: int) -> tuple[Problem, ...]:
        bits = int(self.failed[position])
        found: list[Problem] = []
        for index, name in enumerate(PROFILE_FIELDS):
            value = str(self.raw[name][position]) if name in self.raw else ""
            if bits & _bit(index, _TOO_LONG):
                limit = PROFILE_LIMITS[name]
                message = f"{name} has {len(value)} characters, more than the {limit} allowed"
                found.append(Problem(Code.FIELD_TOO_LONG, message, name))
            elif bits & _bit(index, _INVALID):
                found.append(Problem(Code.FIELD_INVALID, _invalid_message(name, value), name))
        return tuple(found)


def _form(name: str, cells: pd.Series, filled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cells of one column that have the wrong form, and the column as it will be sent."""
    bad = np.zeros(len(cells), dtype=bool)
    sent = cells.to_numpy(dtype=object, copy=True)
    if name in PHONE_FIELDS:
        shaped = cells.str.fullmatch(_PHONE_RE, case=False).to_numpy(dtype=bool)
        digits = cells.str.count(r"[0-9]").to_numpy()
        bad = filled & ~(shaped & (digits >= _DIGITS_MIN) & (digits <= _DIGITS_MAX))
    elif name == HIRE_DATE:
        for position in np.flatnonzero(filled):
            moment = hire_date_time(str(sent[position]))
            if moment is None:
                bad[position] = True
            else:
                sent[position] = moment
    elif name == "preferredLanguage":
        bad = filled & ~cells.str.fullmatch(_LANGUAGE_RE).to_numpy(dtype=bool)
    elif name == "mailNickname":
        bad = filled & cells.str.contains(_NICKNAME_BAD, regex=True).to_numpy(dtype=bool)
    return bad, sent


def hire_date_time(text: str) -> str | None:
    """An ISO date (2026-12-01), or a date and time as an xlsx date cell reads (2026-12-01T00:00:00), as Graph's
    employeeHireDate takes it: a date-time with an offset. A date is midnight UTC of that day (Graph shows the hire
    date as a date). None when it is not an ISO date."""
    try:
        if len(text) == 10:
            return date.fromisoformat(text).isoformat() + "T00:00:00Z"
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T", 1))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return moment.isoformat(timespec="seconds") + "Z"
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _invalid_message(name: str, value: str) -> str:
    shown = value if len(value) <= 60 else value[:59] + "…"
    if name in PHONE_FIELDS:
        one = " (one number only: Graph keeps a single business phone)" if name == "businessPhones" else ""
        return (
            f"{name} {shown!r} is not a telephone number{one}: digits, an optional leading +, spaces, dots, dashes "
            f"or brackets, {_DIGITS_MIN} to {_DIGITS_MAX} digits"
        )
    if name == HIRE_DATE:
        return f"{name} {shown!r} is not an ISO date: write it as YYYY-MM-DD, e.g. 2026-12-01"
    if name == "preferredLanguage":
        return f"{name} {shown!r} is not a language tag such as en-US or de-DE"
    return f"{name} {shown!r} has characters an Exchange alias cannot hold (spaces, @, brackets, quotes, accents...)"
