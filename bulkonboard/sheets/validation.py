"""The rules a row must pass before anything is sent, applied to the whole sheet at once.

Every rule is a pandas operation over entire columns, so a sheet of a million rows is checked in seconds. The
outcome is kept as one small integer per row (a bit per rule that failed) rather than a list of objects per
row: most rows pass, and the messages, which are what a person reads, are only worded for the rows that fail,
when the caller iterates. Nothing here asks the network; what is known about each customer arrives as
`CustomerFacts`.

The limits follow Entra's rules for user accounts (user principal name, password, name lengths): Partner Center creates users in the customer's Entra directory and refuses what Entra refuses, so catching it
here saves a call and tells the person which cell to fix.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import IntEnum
from functools import cache
from importlib import resources
from itertools import combinations
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from ..errors import InputError
from ..model import FIELDS, Code, Problem, Status, UserRow
from .facts import ANY_CUSTOMER, CustomerFacts

# --- limits (Entra) -----------------------------------------------------------------------------------------

UPN_LOCAL_MAX = 64
UPN_DOMAIN_MAX = 48
UPN_MAX = 113
PASSWORD_MIN = 8
PASSWORD_MAX = 256
DISPLAY_NAME_MAX = 256
NAME_MAX = 64  # firstName, lastName

#: What may stand before the @ of a user principal name.
UPN_LOCAL_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'.-_!#^~")
#: What a DNS name may be made of (letters, digits and hyphens in labels, dots between labels).
DOMAIN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.")
#: The symbols Entra accepts in a password; the space counts as one.
PASSWORD_SYMBOLS = "@#$%^&*-_!+=[]{}|\\:',.?/`~\"();<> "
PASSWORD_CHARS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789" + PASSWORD_SYMBOLS
)

_TRUE_WORDS = frozenset({"true", "yes", "y", "1"})
_FALSE_WORDS = frozenset({"false", "no", "n", "0"})

#: At most this many of a customer's domains are listed in a `domain.unknown` message.
_DOMAINS_LISTED = 5
#: Rows turned into objects at a time while iterating: bounds memory, not correctness.
_CHUNK = 8192


def _char_class(chars: str) -> str:
    """A regex character class of exactly these characters (no ranges, no locale or Unicode classes)."""
    return "[" + "".join("\\" + c if c in "\\]^-[" else c for c in chars) + "]"


_ALNUM = "A-Za-z0-9"  # written out: \w and \d would also accept Unicode letters and digits
_LABEL = f"[{_ALNUM}]+(?:-+[{_ALNUM}]+)*"  # no ambiguity between the parts, so no catastrophic backtracking
_UPN_LOCAL_NOT_DOT = _char_class("".join(sorted(UPN_LOCAL_CHARS - {"."})))
_UPN_RE = (
    f"{_char_class(''.join(sorted(UPN_LOCAL_CHARS)))}{{0,{UPN_LOCAL_MAX - 1}}}{_UPN_LOCAL_NOT_DOT}"
    f"@(?=[{_ALNUM}.-]{{1,{UPN_DOMAIN_MAX}}}\\Z){_LABEL}(?:\\.{_LABEL})*"
)
_PASSWORD_KINDS = ("[a-z]", "[A-Z]", "[0-9]", _char_class(PASSWORD_SYMBOLS))
# one pass per cell: some three of the four kinds present (lookaheads), then only allowed characters, 8-256 of them
_PASSWORD_RE = (
    "(?s)(?:"
    + "|".join("".join(f"(?=.*{kind})" for kind in three) for three in combinations(_PASSWORD_KINDS, 3))
    + f"){_char_class(''.join(sorted(PASSWORD_CHARS)))}{{{PASSWORD_MIN},{PASSWORD_MAX}}}"
)


# --- the shapes others code against -----------------------------------------------------------------------


class SheetLike(Protocol):
    """What validation reads of `reader.Sheet`; a protocol, so that validation does not import the reader."""

    @property
    def frame(self) -> pd.DataFrame: ...

    @property
    def present(self) -> frozenset[str]: ...

    @property
    def path(self) -> Path: ...


@dataclass(frozen=True, slots=True)
class CheckedRow:
    """A row as it would be sent, with everything wrong with it, so the report and the run share one verdict."""

    user: UserRow  # normalised: usageLocation upper-cased, forceChangePassword a bool, customerTenantId resolved
    status: Status  # VALID, INVALID or SKIPPED
    problems: tuple[Problem, ...]
    existing_user_id: str | None  # when the user already exists in the tenant


class _Rule(IntEnum):
    """One bit per rule; the order is the order problems are listed in."""

    UPN_MISSING = 0
    UPN_SYNTAX = 1
    UPN_DUPLICATE = 2
    DOMAIN_UNKNOWN = 3
    DOMAIN_FEDERATED = 4
    DISPLAY_NAME_MISSING = 5
    DISPLAY_NAME_TOO_LONG = 6
    FIRST_NAME_TOO_LONG = 7
    LAST_NAME_TOO_LONG = 8
    USAGE_LOCATION_MISSING = 9
    USAGE_LOCATION_INVALID = 10
    PASSWORD_MISSING = 11
    PASSWORD_WEAK = 12
    IMMUTABLE_ID_INVALID = 13
    FORCE_CHANGE_INVALID = 14
    CUSTOMER_MISSING = 15
    USER_EXISTS = 16


_RULE_CODE_FIELD: dict[_Rule, tuple[str, str]] = {
    _Rule.UPN_MISSING: (Code.FIELD_MISSING, "userPrincipalName"),
    _Rule.UPN_SYNTAX: (Code.UPN_SYNTAX, "userPrincipalName"),
    _Rule.UPN_DUPLICATE: (Code.UPN_DUPLICATE, "userPrincipalName"),
    _Rule.DOMAIN_UNKNOWN: (Code.DOMAIN_UNKNOWN, "userPrincipalName"),
    _Rule.DOMAIN_FEDERATED: (Code.DOMAIN_FEDERATED, "userPrincipalName"),
    _Rule.DISPLAY_NAME_MISSING: (Code.FIELD_MISSING, "displayName"),
    _Rule.DISPLAY_NAME_TOO_LONG: (Code.FIELD_TOO_LONG, "displayName"),
    _Rule.FIRST_NAME_TOO_LONG: (Code.FIELD_TOO_LONG, "firstName"),
    _Rule.LAST_NAME_TOO_LONG: (Code.FIELD_TOO_LONG, "lastName"),
    _Rule.USAGE_LOCATION_MISSING: (Code.FIELD_MISSING, "usageLocation"),
    _Rule.USAGE_LOCATION_INVALID: (Code.USAGE_LOCATION_INVALID, "usageLocation"),
    _Rule.PASSWORD_MISSING: (Code.FIELD_MISSING, "password"),
    _Rule.PASSWORD_WEAK: (Code.PASSWORD_WEAK, "password"),
    _Rule.IMMUTABLE_ID_INVALID: (Code.IMMUTABLE_ID_INVALID, "immutableId"),
    _Rule.FORCE_CHANGE_INVALID: (Code.FIELD_INVALID, "forceChangePassword"),
    _Rule.CUSTOMER_MISSING: (Code.FIELD_MISSING, "customerTenantId"),
    _Rule.USER_EXISTS: (Code.USER_EXISTS, "userPrincipalName"),
}

_EXISTS_BIT = 1 << _Rule.USER_EXISTS
_RULES_BY_BIT = tuple(sorted(_Rule))


# --- countries ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Country:
    code: str
    alpha3: str
    name: str


@cache
def _countries() -> tuple[_Country, ...]:
    """Partner Center's list, not ISO 3166: it adds Kosovo (XK) and others and leaves out sanctioned countries."""
    text = (
        resources.files("bulkonboard")
        .joinpath("data/partner-center-countries.csv")
        .read_text(encoding="utf-8")
    )
    return tuple(
        _Country(code=r["code"].strip().upper(), alpha3=r["alpha3"].strip().upper(), name=r["name"].strip())
        for r in csv.DictReader(io.StringIO(text))
        if r.get("code")
    )


def supported_usage_locations() -> dict[str, str]:
    """Code -> country/region name for every usage location Partner Center accepts."""
    return {c.code: c.name for c in _countries()}


def _usage_location_message(raw: str) -> str:
    """Why a usage location is refused, with the code the person probably meant when we can tell."""
    value = raw.strip()
    folded = value.casefold()
    for country in _countries():
        if folded in (country.alpha3.casefold(), country.name.casefold()):
            return f"{value} is not a two-letter code: usageLocation needs {country.code} ({country.name})"
    if len(value) == 2 and value.isascii() and value.isalpha():
        return f"{value.upper()} is not a country/region Partner Center supports"
    return (
        f"{value} is not a two-letter country/region code (such as US, GB or DE) that Partner Center supports"
    )


def _valid_default_usage_location(default_usage_location: str | None) -> str | None:
    if default_usage_location is None:
        return None
    code = default_usage_location.strip().upper()
    return code if code in supported_usage_locations() else None


# --- explanations for one failing value (only called for rows that failed the vectorised rule) ---------------


def _shorten(text: str, limit: int = 120) -> str:
    """A pasted paragraph in a UPN cell should not turn into a paragraph in every message about it."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _describe_char(ch: str) -> str:
    if ch == " ":
        return "a space"
    if ch.isascii() and ch.isprintable():
        return f"'{ch}'"
    if ch.isprintable():
        return f"'{ch}' (U+{ord(ch):04X})"
    return f"U+{ord(ch):04X}"


def _describe_chars(chars: str) -> str:
    seen = list(dict.fromkeys(chars))
    shown = ", ".join(_describe_char(c) for c in seen[:5])
    return shown + (f" and {len(seen) - 5} more" if len(seen) > 5 else "")


def explain_upn_syntax(upn: str) -> str:
    """Every reason Entra would refuse this user principal name, worded so the person knows what to change."""
    reasons: list[str] = []
    at_count = upn.count("@")
    if len(upn) > UPN_MAX:
        reasons.append(f"it is {len(upn)} characters long, more than the {UPN_MAX} allowed")
    if at_count == 0:
        reasons.append("it has no @ between the user name and the domain")
        local, domain = upn, None
    else:
        if at_count > 1:
            reasons.append(
                f"it has {at_count} @ characters: only one is allowed, between the user name and the domain"
            )
        local, domain = upn.split("@", 1)[0], upn.rsplit("@", 1)[1]
    if not local and domain is not None:
        reasons.append("it has nothing before the @")
    bad_local = "".join(c for c in local if c not in UPN_LOCAL_CHARS)
    if bad_local:
        where = "before the @" if domain is not None else "in a user principal name"
        reasons.append(
            f"{_describe_chars(bad_local)} cannot be used {where} (allowed: letters A-Z, digits 0-9 and ' . - _ ! # ^ ~)"
        )
    if domain is not None and local.endswith("."):
        reasons.append("a . cannot stand right before the @")
    if len(local) > UPN_LOCAL_MAX:
        reasons.append(f"it has {len(local)} characters before the @, more than the {UPN_LOCAL_MAX} allowed")
    if domain is not None:
        if not domain:
            reasons.append("it has no domain after the @")
        else:
            if len(domain) > UPN_DOMAIN_MAX:
                reasons.append(
                    f"its domain {_shorten(domain)} has {len(domain)} characters, more than the {UPN_DOMAIN_MAX} allowed"
                )
            bad_domain = "".join(c for c in domain if c not in DOMAIN_CHARS)
            if bad_domain:
                reasons.append(
                    f"{_describe_chars(bad_domain)} cannot be used in the domain "
                    "(allowed: letters A-Z, digits 0-9, hyphens, and dots between the parts)"
                )
            labels = domain.split(".")
            if any(not label for label in labels):
                reasons.append(
                    f"the domain {_shorten(domain)} has an empty part (a dot at the start or end, or two in a row)"
                )
            hyphened = [label for label in labels if label.startswith("-") or label.endswith("-")]
            if hyphened:
                reasons.append(f"the domain part {_shorten(hyphened[0])} starts or ends with a hyphen")
    if not reasons:  # the vectorised rule and this explanation disagree: still say something true
        reasons.append("it is not a valid user principal name")
    return f"{_shorten(upn)} is not a valid user principal name: " + ", and ".join(reasons)


def explain_weak_password(password: str) -> str:
    """Which of Entra's password requirements fail. Never quotes the password or any character of it."""
    reasons: list[str] = []
    if len(password) < PASSWORD_MIN:
        reasons.append(f"it has {len(password)} characters, fewer than the {PASSWORD_MIN} required")
    if len(password) > PASSWORD_MAX:
        reasons.append(f"it has {len(password)} characters, more than the {PASSWORD_MAX} allowed")
    not_allowed = sum(1 for c in password if c not in PASSWORD_CHARS)
    if not_allowed:
        reasons.append(
            f"it has {not_allowed} character{'s' if not_allowed > 1 else ''} Entra does not accept "
            f"(allowed: letters A-Z a-z, digits 0-9, spaces and {' '.join(PASSWORD_SYMBOLS.strip())}; "
            "no accented letters or other Unicode)"
        )
    missing_kinds = [
        name
        for name, members in (
            ("a lowercase letter", "abcdefghijklmnopqrstuvwxyz"),
            ("an uppercase letter", "ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
            ("a digit", "0123456789"),
            ("a symbol", PASSWORD_SYMBOLS),
        )
        if not any(c in members for c in password)
    ]
    if len(missing_kinds) > 1:
        reasons.append(
            f"it uses {4 - len(missing_kinds)} of the 4 kinds of character (lowercase, uppercase, digit, symbol) "
            f"and needs at least 3: add {' or '.join(missing_kinds)}"
        )
    if not reasons:
        reasons.append("it does not meet Entra's password policy")
    return "the password does not meet Entra's policy: " + ", and ".join(reasons)


# --- the result ----------------------------------------------------------------------------------------------


class Validation:
    """The outcome for a whole sheet: counts at once, rows (with their worded problems) as they are iterated.

    A million rows never become a million objects at once: the per-row state is a handful of arrays, and
    `CheckedRow`s are built a chunk at a time as the caller walks through them.
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        *,
        usage_location: np.ndarray,
        customer: np.ndarray,
        force_change: np.ndarray,
        failed: np.ndarray,
        first_row_of_duplicate: np.ndarray,
        existing_user_id: np.ndarray,
        facts: Mapping[str, CustomerFacts],
    ) -> None:
        self._frame = frame
        self._usage_location = usage_location
        self._customer = customer
        self._force_change = force_change
        self._failed = failed
        self._first_row_of_duplicate = first_row_of_duplicate
        self._existing_user_id = existing_user_id
        self._facts = facts

        exists = (failed & _EXISTS_BIT) != 0
        invalid = (failed & ~np.int64(_EXISTS_BIT)) != 0
        skipped = int(exists.sum())
        invalid_only = int((invalid & ~exists).sum())
        self.counts: dict[Status, int] = {
            Status.VALID: len(failed) - skipped - invalid_only,
            Status.INVALID: invalid_only,
            Status.SKIPPED: skipped,
        }
        self.problem_counts: dict[str, int] = {}
        for rule in _RULES_BY_BIT:
            hits = int(((failed >> int(rule)) & 1).sum())
            if hits:
                code = _RULE_CODE_FIELD[rule][0]
                self.problem_counts[code] = self.problem_counts.get(code, 0) + hits

    def __len__(self) -> int:
        return len(self._failed)

    def __iter__(self) -> Iterator[CheckedRow]:
        frame = self._frame
        for start in range(0, len(self), _CHUNK):
            stop = min(start + _CHUNK, len(self))
            columns = {
                name: frame[name].iloc[start:stop].tolist()
                for name in (
                    "row",
                    "userPrincipalName",
                    "firstName",
                    "lastName",
                    "displayName",
                    "immutableId",
                    "password",
                    "forceChangePassword",
                )
            }
            usage = self._usage_location[start:stop].tolist()
            customer = self._customer[start:stop].tolist()
            force_change = self._force_change[start:stop].tolist()
            failed = self._failed[start:stop].tolist()
            for i in range(stop - start):
                user = UserRow(
                    row=int(columns["row"][i]),
                    userPrincipalName=columns["userPrincipalName"][i],
                    firstName=columns["firstName"][i],
                    lastName=columns["lastName"][i],
                    displayName=columns["displayName"][i],
                    usageLocation=usage[i],
                    immutableId=columns["immutableId"][i],
                    password=columns["password"][i],
                    forceChangePassword=force_change[i],
                    customerTenantId=customer[i],
                )
                bits = failed[i]
                if not bits:
                    yield CheckedRow(user=user, status=Status.VALID, problems=(), existing_user_id=None)
                    continue
                position = start + i
                problems = tuple(
                    self._problem(rule, user, position, columns["forceChangePassword"][i])
                    for rule in _RULES_BY_BIT
                    if bits >> int(rule) & 1
                )
                existing = None
                if bits & _EXISTS_BIT:
                    status = Status.SKIPPED
                    existing = str(self._existing_user_id[position])
                else:
                    status = Status.INVALID
                yield CheckedRow(user=user, status=status, problems=problems, existing_user_id=existing)

    def _problem(self, rule: _Rule, user: UserRow, position: int, raw_force_change: str) -> Problem:
        code, field = _RULE_CODE_FIELD[rule]
        return Problem(code, self._message(rule, user, position, raw_force_change), field)

    def _message(self, rule: _Rule, user: UserRow, position: int, raw_force_change: str) -> str:  # noqa: C901
        # One flat `match`, a case per rule: C901 counts the cases, and splitting the table would hide it.
        upn = user.userPrincipalName
        match rule:
            case _Rule.UPN_MISSING:
                return "userPrincipalName is empty"
            case _Rule.UPN_SYNTAX:
                return explain_upn_syntax(upn)
            case _Rule.UPN_DUPLICATE:
                first = int(self._first_row_of_duplicate[position])
                return f"{upn} repeats the user principal name of row {first} (compared ignoring case)"
            case _Rule.DOMAIN_UNKNOWN:
                return self._unknown_domain_message(user)
            case _Rule.DOMAIN_FEDERATED:
                return (
                    f"{user.domain} is federated: users on it are created in the customer's own directory, "
                    "not through Partner Center"
                )
            case _Rule.DISPLAY_NAME_MISSING:
                return "displayName is empty"
            case _Rule.DISPLAY_NAME_TOO_LONG:
                return _too_long("displayName", user.displayName, DISPLAY_NAME_MAX)
            case _Rule.FIRST_NAME_TOO_LONG:
                return _too_long("firstName", user.firstName, NAME_MAX)
            case _Rule.LAST_NAME_TOO_LONG:
                return _too_long("lastName", user.lastName, NAME_MAX)
            case _Rule.USAGE_LOCATION_MISSING:
                return (
                    "usageLocation is empty: fill it in, or give --usage-location CODE for rows without one"
                )
            case _Rule.USAGE_LOCATION_INVALID:
                return _usage_location_message(self._raw_usage(position))
            case _Rule.PASSWORD_MISSING:
                return "password is empty: fill it in, or give --generate-passwords PATH.xlsx"
            case _Rule.PASSWORD_WEAK:
                return explain_weak_password(user.password)
            case _Rule.IMMUTABLE_ID_INVALID:
                bad = _describe_chars("".join(c for c in user.immutableId if c in "$_"))
                return f"immutableId {user.immutableId} contains {bad}, which Entra does not allow in it"
            case _Rule.FORCE_CHANGE_INVALID:
                return f"forceChangePassword is {raw_force_change!r}: use TRUE or FALSE (or leave it empty for TRUE)"
            case _Rule.CUSTOMER_MISSING:
                return "no customerTenantId for this row, and no --customer given"
            case _Rule.USER_EXISTS:
                return f"{upn} already exists in the tenant (id {self._existing_user_id[position]})"
        raise AssertionError(rule)  # pragma: no cover - every rule is matched above

    def _raw_usage(self, position: int) -> str:
        raw = str(self._frame["usageLocation"].iat[position])
        return raw or str(self._usage_location[position])

    def _unknown_domain_message(self, user: UserRow) -> str:
        facts = self._facts[user.customerTenantId]
        # Only the domains a user could be moved to: a federated one would be refused too.
        names = sorted(d.name for d in facts.domains.values() if not d.federated)
        if not names:
            known = "no managed domains are known for it"
        elif len(names) <= _DOMAINS_LISTED:
            known = "its managed domains are " + ", ".join(names)
        else:
            known = f"it has {len(names)} managed domains, such as " + ", ".join(names[:_DOMAINS_LISTED])
        whose = "the customer" if user.customerTenantId == ANY_CUSTOMER else f"customer {user.customerTenantId}"
        return f"{user.domain} is not a domain of {whose}: {known}"


def _too_long(field: str, value: str, limit: int) -> str:
    return f"{field} has {len(value)} characters, more than the {limit} allowed"


# --- the checks --------------------------------------------------------------------------------------------------


def check_columns(
    sheet: SheetLike,
    *,
    generate_passwords: bool = False,
    default_usage_location: str | None = None,
    default_customer: str = "",
) -> None:
    """Refuse a sheet that could not produce a single valid row, before facts are fetched or rows are read.

    One line names every missing column at once, so the person fixes the sheet in one go.
    """
    required = ["userPrincipalName", "displayName"]
    if default_usage_location is None:
        required.append("usageLocation")
    if not generate_passwords:
        required.append("password")
    missing = [name for name in required if name not in sheet.present]
    complaints: list[str] = []
    if missing:
        noun = "column" if len(missing) == 1 else "columns"
        complaints.append(f"missing required {noun}: {', '.join(missing)}")
    if not default_customer and "customerTenantId" not in sheet.present:
        complaints.append("no customer: give --customer or a customerTenantId column")
    if default_usage_location is not None and _valid_default_usage_location(default_usage_location) is None:
        complaints.append("--usage-location: " + _usage_location_message(default_usage_location or "(empty)"))
    if complaints:
        raise InputError(f"{sheet.path}: " + "; ".join(complaints))


def customers_in(sheet: SheetLike, default_customer: str = "") -> list[str]:
    """The distinct customers the rows belong to, in order of first appearance; one facts request each."""
    own = _text_column(sheet.frame, "customerTenantId")
    return [str(c) for c in pd.unique(_resolve_customer(own, default_customer)) if c]


def validate(
    sheet: SheetLike,
    facts: Mapping[str, CustomerFacts],
    *,
    default_customer: str = "",
    generate_passwords: bool = False,
    default_usage_location: str | None = None,
) -> Validation:
    """Check every row; `facts` must hold every customer `customers_in` names (else KeyError)."""
    frame = _prepare(sheet.frame)
    n = len(frame)
    failed = np.zeros(n, dtype=np.int64)

    def flag(rule: _Rule, mask: pd.Series | np.ndarray) -> None:
        failed[np.asarray(mask, dtype=bool)] |= 1 << int(rule)

    upn = frame["userPrincipalName"]
    has_upn = (upn != "").to_numpy()
    flag(_Rule.UPN_MISSING, ~has_upn)
    upn_ok = has_upn & _upn_syntax_ok(upn)
    flag(_Rule.UPN_SYNTAX, has_upn & ~upn_ok)

    upn_key = upn.str.casefold()
    duplicate = upn_key.duplicated(keep="first").to_numpy() & has_upn
    flag(_Rule.UPN_DUPLICATE, duplicate)
    first_row_of_duplicate = np.zeros(n, dtype=np.int64)
    if duplicate.any():
        firsts = has_upn & ~duplicate
        first_row = pd.Series(frame["row"].to_numpy()[firsts], index=upn_key.to_numpy()[firsts])
        first_row_of_duplicate[duplicate] = first_row.reindex(upn_key.to_numpy()[duplicate]).to_numpy()

    display = frame["displayName"]
    flag(_Rule.DISPLAY_NAME_MISSING, display == "")
    flag(_Rule.DISPLAY_NAME_TOO_LONG, display.str.len() > DISPLAY_NAME_MAX)
    flag(_Rule.FIRST_NAME_TOO_LONG, frame["firstName"].str.len() > NAME_MAX)
    flag(_Rule.LAST_NAME_TOO_LONG, frame["lastName"].str.len() > NAME_MAX)

    usage = frame["usageLocation"]
    default_usage = (default_usage_location or "").strip()
    if default_usage:
        usage = usage.mask(usage == "", default_usage)
    codes = list(supported_usage_locations())
    usage_upper = usage.copy()
    not_a_code = ~usage.isin(codes)  # most cells already are a valid code: upper-case only the others
    usage_upper[not_a_code] = usage[not_a_code].str.upper()
    flag(_Rule.USAGE_LOCATION_MISSING, usage_upper == "")
    flag(_Rule.USAGE_LOCATION_INVALID, (usage_upper != "") & ~usage_upper.isin(codes))

    password = frame["password"]
    has_password = (password != "").to_numpy()
    if not generate_passwords:
        flag(_Rule.PASSWORD_MISSING, ~has_password)
    flag(_Rule.PASSWORD_WEAK, has_password & ~_password_ok(password))

    flag(_Rule.IMMUTABLE_ID_INVALID, frame["immutableId"].str.contains("[$_]", regex=True))

    force_change_word = frame["forceChangePassword"].str.casefold()
    force_change_false = force_change_word.isin(_FALSE_WORDS).to_numpy()
    force_change_known = (force_change_word == "").to_numpy() | force_change_false
    force_change_known |= force_change_word.isin(_TRUE_WORDS).to_numpy()
    flag(_Rule.FORCE_CHANGE_INVALID, ~force_change_known)

    customer = _resolve_customer(frame["customerTenantId"], default_customer)
    flag(_Rule.CUSTOMER_MISSING, customer == "")

    existing_user_id = np.full(n, None, dtype=object)
    keys = upn_key.to_numpy()
    domain_values = np.full(n, "", dtype=object)
    domain_values[upn_ok] = [key.partition("@")[2] for key in keys[upn_ok]]  # exactly one @ where upn_ok
    first_occurrence = has_upn & ~duplicate
    for customer_id, positions in pd.Series(customer).groupby(customer, sort=False).indices.items():
        if not customer_id:
            continue
        customer_facts = facts[customer_id]
        checked = positions[upn_ok[positions]]
        if len(checked):
            row_domains = pd.Series(domain_values[checked])
            known = row_domains.isin(list(customer_facts.domains)).to_numpy()
            federated_names = [key for key, d in customer_facts.domains.items() if d.federated]
            federated = row_domains.isin(federated_names).to_numpy()
            flag(_Rule.DOMAIN_UNKNOWN, _at(n, checked[~known]))
            flag(_Rule.DOMAIN_FEDERATED, _at(n, checked[federated]))
        if customer_facts.existing_users:
            candidates = positions[first_occurrence[positions]]
            ids = pd.Series(keys[candidates]).map(customer_facts.existing_users).to_numpy()
            found = pd.notna(ids)
            existing_user_id[candidates[found]] = ids[found]
            flag(_Rule.USER_EXISTS, _at(n, candidates[found]))

    return Validation(
        frame,
        usage_location=usage_upper.to_numpy(dtype=object),
        customer=customer,
        force_change=~force_change_false,
        failed=failed,
        first_row_of_duplicate=first_row_of_duplicate,
        existing_user_id=existing_user_id,
        facts=facts,
    )


def _at(n: int, positions: np.ndarray) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    mask[positions] = True
    return mask


def _prepare(frame: pd.DataFrame) -> pd.DataFrame:
    """The sheet's frame with a plain positional index and every field as text ("" for empty)."""
    frame = frame.reset_index(drop=True)
    columns = {"row": frame["row"].astype("int64")}
    columns.update({name: _text_column(frame, name) for name in FIELDS})
    return pd.DataFrame(columns)


def _text_column(frame: pd.DataFrame, name: str) -> pd.Series:
    """The reader promises text with "" for empty; this keeps a hand-made frame (tests, library callers) safe."""
    if name not in frame.columns:
        return pd.Series("", index=frame.index, dtype=str)
    column = frame[name]
    if column.hasnans:
        column = column.fillna("")
    return column.astype(str)


def _resolve_customer(own: pd.Series, default_customer: str) -> np.ndarray:
    """A row's own customerTenantId wins; the command line's --customer serves the rows without one.

    Tenant ids are GUIDs, which compare case-insensitively: they are lower-cased here, once, so `3C9A...` and
    `3c9a...` are one customer (one facts request, one preflight, one line in the summary)."""
    own = own.str.lower()
    if default_customer:
        own = own.mask(own == "", default_customer.lower())
    return own.to_numpy(dtype=object)


def _upn_syntax_ok(upn: pd.Series) -> np.ndarray:
    ok = (upn.str.len() <= UPN_MAX).to_numpy(
        dtype=bool, copy=True
    )  # the regex only sees cells of a plausible length
    ok[ok] = upn[ok].str.fullmatch(_UPN_RE).to_numpy(dtype=bool)
    return ok


def _password_ok(password: pd.Series) -> np.ndarray:
    ok = (password.str.len() <= PASSWORD_MAX).to_numpy(dtype=bool, copy=True)
    ok[ok] = password[ok].str.fullmatch(_PASSWORD_RE).to_numpy(dtype=bool)
    return ok
