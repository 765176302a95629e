"""The service's own field rules (Entra's), written here independently of bulkonboard.sheets.validation.

The sandbox is the double every test runs against; if it shared the client's rule code it would share its bugs and
a wrong rule could never show up as a failing test. So these checks are a second, separate reading of the same
documented rules (Entra's password policy, UPN syntax, Partner Center's supported countries).
"""

from __future__ import annotations

import csv
import io
from functools import cache
from importlib import resources

PASSWORD_MIN = 8
PASSWORD_MAX = 256
#: Entra's allowed symbols (space included); any other character makes the password unacceptable.
PASSWORD_SYMBOLS = frozenset("@#$%^&*-_!+=[]{}|\\:',.?/`~\"();<> ")

UPN_LOCAL_MAX = 64
UPN_DOMAIN_MAX = 48
UPN_MAX = 113
UPN_LOCAL_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'.-_!#^~")

DISPLAY_NAME_MAX = 256
NAME_MAX = 64  # firstName, lastName

IMMUTABLE_ID_FORBIDDEN = frozenset("$_")


@cache
def supported_usage_locations() -> frozenset[str]:
    """The two-letter codes Partner Center accepts (not ISO's list: it has XK, XJ..., lacks CU, IR...)."""
    text = resources.files("bulkonboard.data").joinpath("partner-center-countries.csv").read_text("utf-8")
    return frozenset(
        row["code"].strip().upper() for row in csv.DictReader(io.StringIO(text)) if row.get("code")
    )


def usage_location_ok(code: str) -> bool:
    # Entra treats country codes case-insensitively; what was sent is stored as sent.
    return len(code) == 2 and code.upper() in supported_usage_locations()


def password_problem(password: str) -> str | None:
    """Why Entra would refuse this password, or None. Never includes the password itself."""
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        return f"it must be {PASSWORD_MIN} to {PASSWORD_MAX} characters long"
    lower = upper = digit = symbol = False
    for char in password:
        if "a" <= char <= "z":
            lower = True
        elif "A" <= char <= "Z":
            upper = True
        elif "0" <= char <= "9":
            digit = True
        elif char in PASSWORD_SYMBOLS:
            symbol = True
        else:
            return "it contains a character that is not allowed"
    if lower + upper + digit + symbol < 3:
        return "it needs three of: lowercase letters, uppercase letters, digits, symbols"
    return None


def upn_problem(upn: str) -> str | None:
    """Why a UPN is syntactically invalid, or None. Whether its domain is the customer's is checked elsewhere."""
    if len(upn) > UPN_MAX:
        return f"it is longer than {UPN_MAX} characters"
    if upn.count("@") != 1:
        return "it must contain exactly one @"
    local, _, domain = upn.partition("@")
    if not local:
        return "it has nothing before the @"
    if not domain:
        return "it has no domain after the @"
    if len(local) > UPN_LOCAL_MAX:
        return f"the part before the @ is longer than {UPN_LOCAL_MAX} characters"
    if len(domain) > UPN_DOMAIN_MAX:
        return f"the domain is longer than {UPN_DOMAIN_MAX} characters"
    if local.endswith("."):
        return "a period cannot come right before the @"
    bad = sorted({char for char in local if char not in UPN_LOCAL_CHARS})
    if bad:
        return "the part before the @ contains characters that are not allowed: " + " ".join(
            repr(c) for c in bad
        )
    return None


def immutable_id_ok(immutable_id: str) -> bool:
    return not any(char in IMMUTABLE_ID_FORBIDDEN for char in immutable_id)
