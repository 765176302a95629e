"""The checks of a row's own cells, each over a whole column at once (validation.py's way): UPNs (syntax, repeats
in the file), names, usage locations, passwords, forceChangePassword. Each marks the rule it checks in the rows'
bit masks (`flag`); what a check learnt that later checks need is returned.

Apart from validation.py, which walks the outcome row by row and words it, so that each stays readable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .rules import (
    DISPLAY_NAME_MAX,
    FALSE_WORDS,
    NAME_MAX,
    TRUE_WORDS,
    Rule,
    password_ok,
    supported_usage_locations,
    upn_syntax_ok,
)


def flag(failed: np.ndarray, rule: Rule, mask: pd.Series | np.ndarray) -> None:
    """Mark `rule` as failed on the rows where `mask` is true: one bit per rule, in one integer per row."""
    failed[np.asarray(mask, dtype=bool)] |= 1 << int(rule)


@dataclass(frozen=True, slots=True)
class Upns:
    """What the UPN checks learnt that the checks against a customer's facts need again."""

    present: np.ndarray
    well_formed: np.ndarray
    keys: np.ndarray  # casefolded: a UPN compares ignoring case
    repeated: np.ndarray  # a later row with the UPN of an earlier one
    first_row_of_duplicate: np.ndarray  # the earlier row's number, where repeated


def check_upns(frame: pd.DataFrame, failed: np.ndarray) -> Upns:
    upn = frame["userPrincipalName"]
    has_upn = (upn != "").to_numpy()
    flag(failed, Rule.UPN_MISSING, ~has_upn)
    upn_ok = has_upn & upn_syntax_ok(upn)
    flag(failed, Rule.UPN_SYNTAX, has_upn & ~upn_ok)

    upn_key = upn.str.casefold()
    duplicate = upn_key.duplicated(keep="first").to_numpy() & has_upn
    flag(failed, Rule.UPN_DUPLICATE, duplicate)
    first_row_of_duplicate = np.zeros(len(frame), dtype=np.int64)
    if duplicate.any():
        firsts = has_upn & ~duplicate
        first_row = pd.Series(frame["row"].to_numpy()[firsts], index=upn_key.to_numpy()[firsts])
        first_row_of_duplicate[duplicate] = first_row.reindex(upn_key.to_numpy()[duplicate]).to_numpy()
    return Upns(has_upn, upn_ok, upn_key.to_numpy(), duplicate, first_row_of_duplicate)


def check_names(frame: pd.DataFrame, failed: np.ndarray) -> None:
    display = frame["displayName"]
    flag(failed, Rule.DISPLAY_NAME_MISSING, display == "")
    flag(failed, Rule.DISPLAY_NAME_TOO_LONG, display.str.len() > DISPLAY_NAME_MAX)
    flag(failed, Rule.FIRST_NAME_TOO_LONG, frame["firstName"].str.len() > NAME_MAX)
    flag(failed, Rule.LAST_NAME_TOO_LONG, frame["lastName"].str.len() > NAME_MAX)


def check_usage_locations(
    frame: pd.DataFrame, failed: np.ndarray, default_usage_location: str | None
) -> np.ndarray:
    """Flags the usage locations; returns each row's as it will be sent (upper-cased, the default filled in)."""
    usage = frame["usageLocation"]
    default_usage = (default_usage_location or "").strip()
    if default_usage:
        usage = usage.mask(usage == "", default_usage)
    codes = list(supported_usage_locations())
    usage_upper = usage.copy()
    not_a_code = ~usage.isin(codes)  # most cells already are a valid code: upper-case only the others
    # The template's drop-down offers "US - United States": the code is what is sent.
    usage_upper[not_a_code] = usage[not_a_code].str.replace(PICKED_COUNTRY, r"\1", regex=True).str.upper()
    flag(failed, Rule.USAGE_LOCATION_MISSING, usage_upper == "")
    flag(failed, Rule.USAGE_LOCATION_INVALID, (usage_upper != "") & ~usage_upper.isin(codes))
    return usage_upper.to_numpy(dtype=object)


#: A usage location as the template's drop-down writes it: the code, " - ", the country's name.
PICKED_COUNTRY = r"^([A-Za-z]{2}) - \S.*$"


def check_passwords(frame: pd.DataFrame, failed: np.ndarray, generate_passwords: bool) -> None:
    password = frame["password"]
    has_password = (password != "").to_numpy()
    if not generate_passwords:
        flag(failed, Rule.PASSWORD_MISSING, ~has_password)
    flag(failed, Rule.PASSWORD_WEAK, has_password & ~password_ok(password))


def check_force_change(frame: pd.DataFrame, failed: np.ndarray) -> np.ndarray:
    """Flags the unreadable forceChangePassword cells; returns each row's value (empty or unreadable: True)."""
    force_change_word = frame["forceChangePassword"].str.casefold()
    force_change_false = force_change_word.isin(FALSE_WORDS).to_numpy()
    force_change_known = (force_change_word == "").to_numpy() | force_change_false
    force_change_known |= force_change_word.isin(TRUE_WORDS).to_numpy()
    flag(failed, Rule.FORCE_CHANGE_INVALID, ~force_change_known)
    return ~force_change_false
