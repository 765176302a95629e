"""The vocabulary every layer shares: fields, statuses, problems, one row's outcome.

Kept free of pandas, aiohttp and openpyxl so that any layer can import it without dragging another layer's
dependencies along (the arrows of the architecture point one way; this module is at their root).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

#: The API's field names, in the order the results workbook shows them. `customerTenantId` is ours: one
#: customer per row when a sheet serves several customers.
FIELDS: tuple[str, ...] = (
    "userPrincipalName",
    "firstName",
    "lastName",
    "displayName",
    "usageLocation",
    "immutableId",
    "password",
    "forceChangePassword",
    "customerTenantId",
    "licenses",  # the contract's additions of 2026-12-03: SKUs separated by `;`
)

#: Optional columns of the contract's additions of 2026-12-03, by Microsoft Graph's names: a user's profile, set
#: after create (a Graph PATCH) or in Graph's create itself (`--via graph`). Kept apart from FIELDS so that a sheet
#: without them costs nothing: the reader adds a column to its frame only when the sheet has it.
PROFILE_FIELDS: tuple[str, ...] = (
    "jobTitle",
    "department",
    "officeLocation",
    "companyName",
    "employeeId",
    "employeeType",
    "employeeHireDate",
    "mobilePhone",
    "businessPhones",
    "streetAddress",
    "city",
    "state",
    "postalCode",
    "country",
    "preferredLanguage",
    "mailNickname",
)
#: The manager's UPN: a user of the customer, or a row of the same sheet.
MANAGER_FIELD = "manager"
OPTIONAL_FIELDS: tuple[str, ...] = (*PROFILE_FIELDS, MANAGER_FIELD)

#: Fields that are never written to a report, results workbook, log line or journal.
SECRET_FIELDS: frozenset[str] = frozenset({"password"})


class Status(StrEnum):
    """A row's outcome; the values are the contract's `status` column."""

    VALID = "valid"  # validate only: would be created
    CREATED = "created"
    SKIPPED = "skipped"  # already exists (tenant, or an earlier run of the same journal)
    INVALID = "invalid"  # refused before any call
    FAILED = "failed"  # the service refused it, or retries gave up
    # the contract's additions of 2026-12-03 (sending writes PARTIAL when a step after create fails; the others
    # are for the work of issue 15):
    PARTIAL = "partial"  # the user exists (userId filled), a later step of its plan did not succeed
    PENDING = "pending"  # the run stopped before this row's outcome was known, or before it was sent
    RESTORED = "restored"  # a soft-deleted user with the row's UPN was restored instead of created


#: Problem codes of the contract. `api.<status>` codes are built with `api_code()`.
class Code:
    FIELD_MISSING = "field.missing"
    FIELD_TOO_LONG = "field.too_long"
    FIELD_INVALID = "field.invalid"  # ours, added to the contract: e.g. forceChangePassword not TRUE/FALSE
    UPN_SYNTAX = "upn.syntax"
    UPN_DUPLICATE = "upn.duplicate"
    DOMAIN_UNKNOWN = "domain.unknown"
    DOMAIN_FEDERATED = "domain.federated"
    USAGE_LOCATION_INVALID = "usageLocation.invalid"
    PASSWORD_WEAK = "password.weak"
    IMMUTABLE_ID_INVALID = "immutableId.invalid"
    USER_EXISTS = "user.exists"
    # ours, added to the contract (docs/CONTRACT-ADDITIONS.md):
    API_UNREACHABLE = "api.unreachable"  # no usable answer came back for the row, however often it was asked
    RUN_INTERRUPTED = "run.interrupted"  # the run was stopped before this row finished
    # the contract's additions of 2026-12-03:
    USER_DELETED = "user.deleted"
    PERMISSION_DENIED = "permission.denied"
    API_MISMATCH = "api.mismatch"  # the service's answer names another user than the one asked for
    LICENSE_UNKNOWN = "license.unknown"
    LICENSE_INSUFFICIENT = "license.insufficient"
    LICENSE_FAILED = "license.failed"
    MANAGER_UNKNOWN = "manager.unknown"
    MANAGER_CYCLE = "manager.cycle"
    PROFILE_FAILED = "profile.failed"
    MANAGER_FAILED = "manager.failed"


@dataclass(frozen=True, slots=True)
class LicenseDemand:
    """One SKU of one customer as a dry run sees it: what is free, what the sheet asks; the Summary's table."""

    customer: str
    sku_part_number: str
    product_name: str
    available: int
    asked: int  # rows that would be created and ask for it

    @property
    def short(self) -> int:
        return max(0, self.asked - self.available)


@dataclass(frozen=True, slots=True)
class LicenseUse:
    """One SKU of one customer as a run used it: the results' Summary table "units used per SKU"."""

    customer: str
    sku_part_number: str
    product_name: str
    assigned: int  # units this run's requests took (the service answered them)
    confirmed: int = 0  # found assigned after an earlier request's answer was lost (that request took the unit)


def api_code(http_status: int) -> str:
    return f"api.{http_status}"


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a row, phrased so that the person fixing the sheet knows what to do."""

    code: str
    message: str
    field: str | None = None

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


#: A tenant GUID as Windows and PowerShell print it, in braces: `{3c9a8f12-...}`.
_BRACED_GUID = re.compile(r"\{([0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})\}")


def plain_tenant_id(text: str) -> str:
    """A customer id as typed, with the braces of a `{GUID}` (copied from PowerShell or the registry) taken off:
    Partner Center knows the GUID alone, and refused the braced one as "not one of the partner's customers"."""
    text = text.strip()
    braced = _BRACED_GUID.fullmatch(text)
    return braced.group(1) if braced else text


def join_problems(problems: tuple[Problem, ...] | list[Problem]) -> str:
    """The contract's `problems` cell: `code: message` items joined by `; `."""
    return "; ".join(str(p) for p in problems)


@dataclass(frozen=True, slots=True)
class UserRow:
    """One input row as text, trimmed and normalised, ready to be sent.

    `row` is the row number as the sheet shows it, so a person can find it in Excel.
    `password` may be empty when the run generates passwords.
    """

    row: int
    userPrincipalName: str
    firstName: str = ""
    lastName: str = ""
    displayName: str = ""
    usageLocation: str = ""
    immutableId: str = ""
    password: str = field(default="", repr=False)
    forceChangePassword: bool = True
    customerTenantId: str = ""
    licenses: tuple[str, ...] = ()  # the SKUs the row asks for, as written (part number, product name or id)
    #: The profile cells that are filled, (Graph name, value as it is sent), in PROFILE_FIELDS order; a tuple
    #: rather than a dict so that the many rows without a profile share one empty value.
    profile: tuple[tuple[str, str], ...] = ()
    manager: str = ""  # the manager's UPN, as typed

    @property
    def profile_body(self) -> dict[str, object]:
        """The profile as Graph takes it: `businessPhones` is a list (of one number)."""
        return {name: [value] if name == "businessPhones" else value for name, value in self.profile}

    @property
    def upn_key(self) -> str:
        """UPNs compare case-insensitively everywhere (file duplicates, the journal, the service)."""
        return self.userPrincipalName.casefold()

    @property
    def domain(self) -> str:
        return self.userPrincipalName.rpartition("@")[2].casefold()


@dataclass(slots=True)
class RowResult:
    """A row's outcome: a value, never an exception, so one bad row cannot stop a worker or a run.

    `display` carries the row's non-secret fields for the results workbook (never the password).
    """

    row: int
    userPrincipalName: str
    status: Status
    userId: str | None = None
    problems: tuple[Problem, ...] = ()
    requestId: str | None = None
    customerTenantId: str = ""
    display: dict[str, str] = field(default_factory=dict)
    attempts: int = 0

    @property
    def problems_text(self) -> str:
        return join_problems(self.problems)
