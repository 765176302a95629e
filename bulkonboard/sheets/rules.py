"""The rules a row must pass before anything is sent: Entra's limits, one bit per rule, and the words for a failure.

Why apart from the driver (validation.py): the limits follow Entra's rules for user accounts (user principal
name, password, name lengths), and Partner Center refuses what Entra refuses; a rule changes with Microsoft's
documentation, the vectorised driver changes with pandas. Catching a failure here saves a call and tells the
person which cell to fix; the explanations are only worded for the rows that failed.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from enum import IntEnum
from functools import cache
from importlib import resources
from itertools import combinations

import numpy as np
import pandas as pd

from ..model import Code

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

TRUE_WORDS = frozenset({"true", "yes", "y", "1"})
FALSE_WORDS = frozenset({"false", "no", "n", "0"})


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


class Rule(IntEnum):
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
    USER_DELETED = 17
    LICENSE_UNKNOWN = 18  # licenses.py: a SKU the customer does not hold
    LICENSE_NOT_ASSIGNABLE = 19  # a SKU whose subscription cannot take a user (capabilityStatus)
    LICENSE_INSUFFICIENT = 20  # past the free units, in input order
    PROFILE = 21  # profile.py: a profile cell Graph would refuse (its own bits say which, with what code)
    MANAGER_INVALID = 22  # managers.py: the manager cell is not a UPN
    MANAGER_UNKNOWN = 23  # neither a user of the customer nor a row of the sheet
    MANAGER_CYCLE = 24  # managers that manage each other, or a row its own manager
    MANAGER_ROW_INVALID = 25  # the manager is a row of the sheet that is invalid: it will not be created


#: The problem code and the column each rule reports, as the report and the journal show them.
RULE_CODE_FIELD: dict[Rule, tuple[str, str]] = {
    Rule.UPN_MISSING: (Code.FIELD_MISSING, "userPrincipalName"),
    Rule.UPN_SYNTAX: (Code.UPN_SYNTAX, "userPrincipalName"),
    Rule.UPN_DUPLICATE: (Code.UPN_DUPLICATE, "userPrincipalName"),
    Rule.DOMAIN_UNKNOWN: (Code.DOMAIN_UNKNOWN, "userPrincipalName"),
    Rule.DOMAIN_FEDERATED: (Code.DOMAIN_FEDERATED, "userPrincipalName"),
    Rule.DISPLAY_NAME_MISSING: (Code.FIELD_MISSING, "displayName"),
    Rule.DISPLAY_NAME_TOO_LONG: (Code.FIELD_TOO_LONG, "displayName"),
    Rule.FIRST_NAME_TOO_LONG: (Code.FIELD_TOO_LONG, "firstName"),
    Rule.LAST_NAME_TOO_LONG: (Code.FIELD_TOO_LONG, "lastName"),
    Rule.USAGE_LOCATION_MISSING: (Code.FIELD_MISSING, "usageLocation"),
    Rule.USAGE_LOCATION_INVALID: (Code.USAGE_LOCATION_INVALID, "usageLocation"),
    Rule.PASSWORD_MISSING: (Code.FIELD_MISSING, "password"),
    Rule.PASSWORD_WEAK: (Code.PASSWORD_WEAK, "password"),
    Rule.IMMUTABLE_ID_INVALID: (Code.IMMUTABLE_ID_INVALID, "immutableId"),
    Rule.FORCE_CHANGE_INVALID: (Code.FIELD_INVALID, "forceChangePassword"),
    Rule.CUSTOMER_MISSING: (Code.FIELD_MISSING, "customerTenantId"),
    Rule.USER_EXISTS: (Code.USER_EXISTS, "userPrincipalName"),
    Rule.USER_DELETED: (Code.USER_DELETED, "userPrincipalName"),
    Rule.LICENSE_UNKNOWN: (Code.LICENSE_UNKNOWN, "licenses"),
    Rule.LICENSE_NOT_ASSIGNABLE: (Code.LICENSE_UNKNOWN, "licenses"),  # the contract's code: not a SKU to use
    Rule.LICENSE_INSUFFICIENT: (Code.LICENSE_INSUFFICIENT, "licenses"),
    Rule.PROFILE: (Code.FIELD_INVALID, ""),  # expanded into one problem per cell by profile.py
    Rule.MANAGER_INVALID: (Code.FIELD_INVALID, "manager"),
    Rule.MANAGER_UNKNOWN: (Code.MANAGER_UNKNOWN, "manager"),
    Rule.MANAGER_CYCLE: (Code.MANAGER_CYCLE, "manager"),
    Rule.MANAGER_ROW_INVALID: (Code.FIELD_INVALID, "manager"),
}

EXISTS_BIT = 1 << Rule.USER_EXISTS
DELETED_BIT = 1 << Rule.USER_DELETED
RULES_BY_BIT = tuple(sorted(Rule))


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


#: Codes people type that ISO 3166 (and so Partner Center) spells otherwise: the United Kingdom's domain and
#: the EU's code for Greece.
_NOT_ISO_CODES = {"UK": "GB", "EL": "GR"}


def usage_location_message(raw: str) -> str:
    """Why a usage location is refused, with the code the person probably meant when we can tell."""
    value = raw.strip()
    folded = value.casefold()
    for country in _countries():
        if folded in (country.alpha3.casefold(), country.name.casefold()):
            return f"{value} is not a two-letter code: usageLocation needs {country.code} ({country.name})"
    if value.upper() in _NOT_ISO_CODES:
        code = _NOT_ISO_CODES[value.upper()]
        return f"{value.upper()} is not an ISO country code: did you mean {code}?"
    if len(value) == 2 and value.isascii() and value.isalpha():
        return f"{value.upper()} is not a country/region Partner Center supports"
    return (
        f"{value} is not a two-letter country/region code (such as US, GB or DE) that Partner Center supports"
    )


def valid_default_usage_location(default_usage_location: str | None) -> str | None:
    """`--usage-location` as a code Partner Center accepts, or None: a bad default would spoil every row."""
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


def describe_chars(chars: str) -> str:
    """The offending characters, each once and at most five, so an invisible one is still named (U+200B)."""
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
            f"{describe_chars(bad_local)} cannot be used {where} (allowed: letters A-Z, digits 0-9 and ' . - _ ! # ^ ~)"
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
                    f"{describe_chars(bad_domain)} cannot be used in the domain "
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


def too_long(field: str, value: str, limit: int) -> str:
    """The length is said, never the value: a person sees what to cut without a wall of text."""
    return f"{field} has {len(value)} characters, more than the {limit} allowed"


def upn_syntax_ok(upn: pd.Series) -> np.ndarray:
    """Per cell, whether Entra would take it as a UPN: one regex pass over the column, not a loop in Python."""
    ok = (upn.str.len() <= UPN_MAX).to_numpy(
        dtype=bool, copy=True
    )  # the regex only sees cells of a plausible length
    ok[ok] = upn[ok].str.fullmatch(_UPN_RE).to_numpy(dtype=bool)
    return ok


def password_ok(password: pd.Series) -> np.ndarray:
    """Per cell, whether the password meets Entra's policy: one regex pass over the column."""
    ok = (password.str.len() <= PASSWORD_MAX).to_numpy(dtype=bool, copy=True)
    ok[ok] = password[ok].str.fullmatch(_PASSWORD_RE).to_numpy(dtype=bool)
    return ok
