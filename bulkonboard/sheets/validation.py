"""Every row of a sheet checked against the rules at once, and the outcome walked row by row.

Every rule is a pandas operation over entire columns, so a sheet of a million rows is checked in seconds. The
outcome is kept as one small integer per row (a bit per rule that failed) rather than a list of objects per
row: most rows pass, and the messages, which are what a person reads, are only worded for the rows that fail,
when the caller iterates. Nothing here asks the network; what is known about each customer arrives as
`CustomerFacts`. The rules themselves, Entra's limits and the words for a failure, are in rules.py.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from ..model import FIELDS, OPTIONAL_FIELDS, Problem, Status, UserRow, plain_tenant_id
from .cellchecks import (
    Upns,
    check_force_change,
    check_names,
    check_passwords,
    check_upns,
    check_usage_locations,
    flag,
)
from .deletedusers import deleted_user_message, find_deleted_users
from .facts import ANY_CUSTOMER, CustomerFacts, DeletedUser
from .licenses import (
    LicenseCheck,
    fill_default_licenses,
    flag_licenses,
    licenses_need_usage,
    split_licenses,
)
from .managers import ManagerCheck, flag_managers
from .profile import ProfileCheck
from .rules import (
    DELETED_BIT,
    DISPLAY_NAME_MAX,
    EXISTS_BIT,
    NAME_MAX,
    RULE_CODE_FIELD,
    RULES_BY_BIT,
    Rule,
    describe_chars,
    explain_upn_syntax,
    explain_weak_password,
    supported_usage_locations,
    too_long,
    usage_location_message,
)

#: At most this many of a customer's domains are listed in a `domain.unknown` message.
_DOMAINS_LISTED = 5
#: Rows turned into objects at a time while iterating: bounds memory, not correctness.
_CHUNK = 8192
#: The frame's columns a `UserRow` takes as they are.
_ROW_COLUMNS = ("row", "userPrincipalName", "firstName", "lastName", "displayName", "immutableId", "password",
                "forceChangePassword", "licenses")  # fmt: skip


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
    deleted_user: DeletedUser | None = None  # when the UPN belongs to a soft-deleted user (`user.deleted`)


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
        deleted_user: np.ndarray,
        facts: Mapping[str, CustomerFacts],
        licenses: LicenseCheck | None = None,
        profile: ProfileCheck | None = None,
        managers: ManagerCheck | None = None,
        restore_deleted: bool = False,
    ) -> None:
        self._frame = frame
        self._restore_deleted = restore_deleted
        # Bits that do not make a row invalid: an existing user (skipped); a deleted one to restore (valid).
        self._tolerated = np.int64(EXISTS_BIT | (DELETED_BIT if restore_deleted else 0))
        self._usage_location = usage_location
        self._customer = customer
        self._force_change = force_change
        self._failed = failed
        self._first_row_of_duplicate = first_row_of_duplicate
        self._existing_user_id = existing_user_id
        self._deleted_user = deleted_user
        self._facts = facts
        self._licenses = licenses or LicenseCheck.nothing(len(failed))
        self._profile = profile or ProfileCheck.of(frame.iloc[0:0])
        self._managers = managers or ManagerCheck.nothing(len(failed), frame["row"].to_numpy())
        #: The Summary's table per SKU, and the one line said when licenses could not be checked (offline).
        self.license_demand = self._licenses.demand
        self.licenses_note = self._licenses.unchecked_note

        exists = (failed & EXISTS_BIT) != 0
        invalid = (failed & ~self._tolerated) != 0
        skipped = int(exists.sum())
        invalid_only = int((invalid & ~exists).sum())
        self.counts: dict[Status, int] = {
            Status.VALID: len(failed) - skipped - invalid_only,
            Status.INVALID: invalid_only,
            Status.SKIPPED: skipped,
        }
        self.problem_counts: dict[str, int] = dict(self._profile.counts)  # one per cell, not per row
        for rule in RULES_BY_BIT:
            if rule is Rule.PROFILE:
                continue
            hits = int(((failed >> int(rule)) & 1).sum())
            if hits:
                code = RULE_CODE_FIELD[rule][0]
                self.problem_counts[code] = self.problem_counts.get(code, 0) + hits

    def __len__(self) -> int:
        return len(self._failed)

    def __iter__(self) -> Iterator[CheckedRow]:
        for start in range(0, len(self), _CHUNK):
            yield from self._checked_rows(start, min(start + _CHUNK, len(self)))

    def manager_levels(self) -> list[list[CheckedRow]]:
        """The rows that manage another row of the sheet and will be sent, by depth (top managers first): a run
        creates them before the other rows (managers.py)."""
        return [[self._checked_at(int(p)) for p in level] for level in self._managers.levels(self._failed)]

    def _checked_at(self, position: int) -> CheckedRow:
        return next(self._checked_rows(position, position + 1))

    def _checked_rows(self, start: int, stop: int) -> Iterator[CheckedRow]:
        frame = self._frame
        columns = {name: frame[name].iloc[start:stop].tolist() for name in _ROW_COLUMNS}
        usage = self._usage_location[start:stop].tolist()
        customer = self._customer[start:stop].tolist()
        force_change = self._force_change[start:stop].tolist()
        failed = self._failed[start:stop].tolist()
        profile, managers = self._profile, self._managers.cells
        for i in range(stop - start):
            position = start + i
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
                licenses=split_licenses(columns["licenses"][i]) if columns["licenses"][i] else (),
                profile=profile.profile_at(position),
                manager=managers[position],
            )
            bits = failed[i]
            if not bits:
                yield CheckedRow(user=user, status=Status.VALID, problems=(), existing_user_id=None)
                continue
            problems = tuple(
                problem
                for rule in RULES_BY_BIT
                if bits >> int(rule) & 1
                for problem in self._problems(rule, user, position, columns["forceChangePassword"][i])
            )
            existing = None
            if bits & EXISTS_BIT:
                status = Status.SKIPPED
                existing = str(self._existing_user_id[position])
            else:
                status = Status.INVALID if bits & ~self._tolerated else Status.VALID
            deleted = self._deleted_user[position] if bits & DELETED_BIT else None
            yield CheckedRow(user, status, problems, existing, deleted)

    def _problems(self, rule: Rule, user: UserRow, position: int, raw: str) -> tuple[Problem, ...]:
        if rule is Rule.PROFILE:
            return self._profile.problems_at(position)
        return (self._problem(rule, user, position, raw),)

    def _problem(self, rule: Rule, user: UserRow, position: int, raw_force_change: str) -> Problem:
        code, field = RULE_CODE_FIELD[rule]
        return Problem(code, self._message(rule, user, position, raw_force_change), field)

    def _message(self, rule: Rule, user: UserRow, position: int, raw_force_change: str) -> str:  # noqa: C901
        # One flat `match`, a case per rule: C901 counts the cases, and splitting the table would hide it.
        upn = user.userPrincipalName
        match rule:
            case Rule.UPN_MISSING:
                return "userPrincipalName is empty"
            case Rule.UPN_SYNTAX:
                return explain_upn_syntax(upn)
            case Rule.UPN_DUPLICATE:
                first = int(self._first_row_of_duplicate[position])
                return f"{upn} repeats the user principal name of row {first} (compared ignoring case)"
            case Rule.DOMAIN_UNKNOWN:
                return self._unknown_domain_message(user)
            case Rule.DOMAIN_FEDERATED:
                return (
                    f"{user.domain} is federated: users on it are created in the customer's own directory, "
                    "not through Partner Center"
                )
            case Rule.DISPLAY_NAME_MISSING:
                return "displayName is empty"
            case Rule.DISPLAY_NAME_TOO_LONG:
                return too_long("displayName", user.displayName, DISPLAY_NAME_MAX)
            case Rule.FIRST_NAME_TOO_LONG:
                return too_long("firstName", user.firstName, NAME_MAX)
            case Rule.LAST_NAME_TOO_LONG:
                return too_long("lastName", user.lastName, NAME_MAX)
            case Rule.USAGE_LOCATION_MISSING:
                return (
                    "usageLocation is empty: fill it in, or give --usage-location CODE for rows without one"
                ) + licenses_need_usage(user.licenses)
            case Rule.USAGE_LOCATION_INVALID:
                return usage_location_message(self._raw_usage(position)) + licenses_need_usage(user.licenses)
            case Rule.PASSWORD_MISSING:
                return "password is empty: fill it in, or give --generate-passwords PATH.xlsx"
            case Rule.PASSWORD_WEAK:
                return explain_weak_password(user.password)
            case Rule.IMMUTABLE_ID_INVALID:
                bad = describe_chars("".join(c for c in user.immutableId if c in "$_"))
                return f"immutableId {user.immutableId} contains {bad}, which Entra does not allow in it"
            case Rule.FORCE_CHANGE_INVALID:
                return f"forceChangePassword is {raw_force_change!r}: use TRUE or FALSE (or leave it empty for TRUE)"
            case Rule.CUSTOMER_MISSING:
                return "no customerTenantId for this row, and no --customer given"
            case Rule.USER_EXISTS:
                return f"{upn} already exists in the tenant (id {self._existing_user_id[position]})"
            case Rule.USER_DELETED:
                return deleted_user_message(upn, self._deleted_user[position], restoring=self._restore_deleted)
            case Rule.MANAGER_INVALID | Rule.MANAGER_UNKNOWN | Rule.MANAGER_CYCLE | Rule.MANAGER_ROW_INVALID:
                return self._managers.message(rule, position, user.customerTenantId)
            case Rule.LICENSE_UNKNOWN | Rule.LICENSE_NOT_ASSIGNABLE | Rule.LICENSE_INSUFFICIENT:
                cell = self._frame["licenses"].iat[position]
                return self._licenses.message(rule, cell, position, user.customerTenantId)
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
        whose = (
            "the customer" if user.customerTenantId == ANY_CUSTOMER else f"customer {user.customerTenantId}"
        )
        return f"{user.domain} is not a domain of {whose}: {known}"


# --- the checks --------------------------------------------------------------------------------------------------


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
    default_licenses: Sequence[str] = (),
    restore_deleted: bool = False,
) -> Validation:
    """Check every row; `facts` must hold every customer `customers_in` names (else KeyError).

    `default_licenses` (`--license`) serves the rows whose `licenses` cell is empty. `restore_deleted`
    (`--restore-deleted`): a row whose UPN belongs to a soft-deleted user is valid, to restore that user (it still
    carries its `user.deleted` note, saying so), instead of invalid."""
    frame = _prepare(sheet.frame)
    if default_licenses:
        frame["licenses"] = fill_default_licenses(frame["licenses"], default_licenses)
    failed = np.zeros(len(frame), dtype=np.int64)
    upns = check_upns(frame, failed)
    check_names(frame, failed)
    usage_location = check_usage_locations(frame, failed, default_usage_location)
    check_passwords(frame, failed, generate_passwords)
    flag(failed, Rule.IMMUTABLE_ID_INVALID, frame["immutableId"].str.contains("[$_]", regex=True))
    force_change = check_force_change(frame, failed)
    customer = _resolve_customer(frame["customerTenantId"], default_customer)
    flag(failed, Rule.CUSTOMER_MISSING, customer == "")
    existing_user_id = _check_against_facts(upns, customer, facts, failed)
    unclaimed = upns.present & ~upns.repeated & pd.isna(existing_user_id)
    deleted_user = find_deleted_users(upns.keys, unclaimed, customer, facts)
    flag(failed, Rule.USER_DELETED, pd.notna(deleted_user))
    licenses = flag_licenses(frame["licenses"], customer, facts, failed)
    profile = ProfileCheck.of(frame)
    flag(failed, Rule.PROFILE, profile.any_failed())
    # Last: a row whose manager row is invalid for any reason above is invalid too.
    managers = flag_managers(frame, upns.keys, upns.present & ~upns.repeated, customer, facts, failed)
    return Validation(
        frame,
        usage_location=usage_location,
        customer=customer,
        force_change=force_change,
        failed=failed,
        first_row_of_duplicate=upns.first_row_of_duplicate,
        existing_user_id=existing_user_id,
        deleted_user=deleted_user,
        facts=facts,
        licenses=licenses,
        profile=profile,
        managers=managers,
        restore_deleted=restore_deleted,
    )


def _check_against_facts(
    upns: Upns, customer: np.ndarray, facts: Mapping[str, CustomerFacts], failed: np.ndarray
) -> np.ndarray:
    """Flags unknown and federated domains and users that exist already, a customer at a time; returns the
    existing user's id per row (None where there is none)."""
    n = len(customer)
    existing_user_id = np.full(n, None, dtype=object)
    keys = upns.keys
    domain_values = np.full(n, "", dtype=object)
    well_formed = upns.well_formed
    domain_values[well_formed] = [key.partition("@")[2] for key in keys[well_formed]]  # exactly one @ there
    first_occurrence = upns.present & ~upns.repeated
    for customer_id, positions in pd.Series(customer).groupby(customer, sort=False).indices.items():
        if not customer_id:
            continue
        customer_facts = facts[customer_id]
        checked = positions[well_formed[positions]]
        if len(checked):
            row_domains = pd.Series(domain_values[checked])
            known = row_domains.isin(list(customer_facts.domains)).to_numpy()
            federated_names = [key for key, d in customer_facts.domains.items() if d.federated]
            federated = row_domains.isin(federated_names).to_numpy()
            flag(failed, Rule.DOMAIN_UNKNOWN, _at(n, checked[~known]))
            flag(failed, Rule.DOMAIN_FEDERATED, _at(n, checked[federated]))
        if customer_facts.existing_users:
            candidates = positions[first_occurrence[positions]]
            ids = pd.Series(keys[candidates]).map(customer_facts.existing_users).to_numpy()
            found = pd.notna(ids)
            existing_user_id[candidates[found]] = ids[found]
            flag(failed, Rule.USER_EXISTS, _at(n, candidates[found]))
    return existing_user_id


def _at(n: int, positions: np.ndarray) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    mask[positions] = True
    return mask


def _prepare(frame: pd.DataFrame) -> pd.DataFrame:
    """The sheet's frame with a plain positional index and every field as text ("" for empty)."""
    frame = frame.reset_index(drop=True)
    columns = {"row": frame["row"].astype("int64")}
    columns.update({name: _text_column(frame, name) for name in FIELDS})
    columns.update({name: _text_column(frame, name) for name in OPTIONAL_FIELDS if name in frame.columns})
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
    own = own.str.lower().str.replace(r"^\{([0-9a-f-]{36})\}$", r"\1", regex=True)  # a {GUID} as PowerShell shows it
    if default_customer:
        own = own.mask(own == "", plain_tenant_id(default_customer).lower())
    return own.to_numpy(dtype=object)


#: `supported_usage_locations` lived here before the rules moved to rules.py; callers still import it from here.
__all__ = [
    "CheckedRow",
    "SheetLike",
    "Validation",
    "customers_in",
    "supported_usage_locations",
    "validate",
]
