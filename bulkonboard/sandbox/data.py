"""The sandbox's data file (TOML): customers, their domains, the partner's GDAP standing in each, and the users
that already exist (soft-deleted ones too, with `state = "inactive"`).

A bad file must stop the sandbox with one line that says where the mistake is (`customers[0].domains[2]: ...`),
never with a traceback or, worse, a sandbox that quietly serves something other than what the file meant. So keys
are checked strictly (a misspelt `authenticationtype` is an error, not an ignored key).
"""

from __future__ import annotations

import tomllib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..sheets.inputfile import read_regular_file
from . import rules
from .data_directory import (
    USER_DIRECTORY_KEYS,
    SkuData,
    UserDirectoryData,
    check_customer_directory,
    parse_skus,
    parse_user_directory,
)
from .permissions import KNOWN_ROLES, canonical_role
from .tomlfields import Bad, checked_table, flag_of, guid_of, is_iso_time, one_line, text_of

#: Where the sandbox looks when no data file is named: relative to the current directory, as the contract says.
DEFAULT_DATA_PATH = Path("samples/sandbox.toml")
#: Only a regular file of at most this size is read: a FIFO would hang the sandbox, a device fill its memory.
DATA_FILE_BYTES = 64 * 1024 * 1024

MANAGED = "Managed"
FEDERATED = "Federated"

#: Namespace for the ids of users the file lists without one, so they keep the same id from run to run.
USER_ID_NAMESPACE = uuid.UUID("6f1c2b9e-3d47-4a5e-9c81-0b7e4d2a6c35")

_CUSTOMER_KEYS = ("id", "name", "domains", "users", "gdapRoles", "relationship", "skus")
_DOMAIN_KEYS = ("name", "authenticationType", "isDefault", "isInitial", "isVerified")
_USER_KEYS = (
    "id",
    "userPrincipalName",
    "firstName",
    "lastName",
    "displayName",
    "usageLocation",
    "immutableId",
    "state",
    "softDeletionTime",
    *USER_DIRECTORY_KEYS,
)
#: A user's `state` in the file, as Partner Center spells it: active, or soft-deleted (in the recycle bin).
USER_STATES = ("active", "inactive")


class SandboxDataError(InputError):
    """The data or state file cannot be used; exit code 2 like any unusable input."""


@dataclass(frozen=True, slots=True)
class DomainData:
    name: str
    authentication_type: str  # "Managed" or "Federated", as Graph spells it
    is_default: bool = False
    is_initial: bool = False
    is_verified: bool = True

    @property
    def federated(self) -> bool:
        return self.authentication_type == FEDERATED


@dataclass(frozen=True, slots=True)
class UserData:
    """A user that exists before the sandbox starts. Field names are the API's, so it maps onto a record 1:1."""

    id: str
    userPrincipalName: str
    displayName: str
    firstName: str | None = None
    lastName: str | None = None
    usageLocation: str | None = None
    immutableId: str | None = None
    state: str = "active"
    #: When an inactive user was deleted (ISO 8601); None for an active one, or when the file leaves it out.
    softDeletionTime: str | None = None
    #: Licenses (SKU ids), profile (Graph's names) and manager (a UPN): see `data_directory`.
    directory: UserDirectoryData = field(default_factory=UserDirectoryData)


@dataclass(frozen=True, slots=True)
class CustomerData:
    id: str
    name: str
    domains: tuple[DomainData, ...]
    users: tuple[UserData, ...] = field(default=())
    #: The partner's GDAP roles in this customer (Entra's display names); None grants every role.
    gdap_roles: tuple[str, ...] | None = None
    #: False: the partner has no relationship with this customer, so every call about it is refused (20002).
    relationship: bool = True
    #: The products the customer is subscribed to, with their units.
    skus: tuple[SkuData, ...] = field(default=())

    @property
    def initial_domain(self) -> DomainData:
        """The `*.onmicrosoft.com` domain every tenant has; `companyProfile.domain` reports it."""
        return next(d for d in self.domains if d.is_initial)


@dataclass(frozen=True, slots=True)
class SandboxData:
    customers: tuple[CustomerData, ...]

    def customer(self, customer_id: str) -> CustomerData | None:
        key = customer_id.lower()
        return next((c for c in self.customers if c.id.lower() == key), None)


def stable_user_id(customer_id: str, upn: str) -> str:
    """An id that depends only on customer and UPN, so a seeded user has the same id in every run."""
    return str(uuid.uuid5(USER_ID_NAMESPACE, f"{customer_id.lower()}/{upn.casefold()}"))


def default_data_path() -> Path:
    """`samples/sandbox.toml` when run from the repository, else the copy shipped in the package (the same
    file, so `--sandbox` works from any folder)."""
    if DEFAULT_DATA_PATH.is_file():
        return DEFAULT_DATA_PATH
    return Path(str(resources.files("bulkonboard.sandbox").joinpath("sample.toml")))


def load_data(source: Path | str | SandboxData | None = None) -> SandboxData:
    """Data from a file, or as given; `None` means `default_data_path()`."""
    if isinstance(source, SandboxData):
        return source
    if source is None:
        source = default_data_path()
    path = Path(source)
    try:
        text = read_regular_file(path, "the sandbox data file", limit=DATA_FILE_BYTES).decode("utf-8")
    except InputError as exc:
        raise SandboxDataError(exc.message) from None
    except UnicodeDecodeError:
        raise SandboxDataError(f"{path}: the sandbox data file is not UTF-8 text") from None
    return parse_data(text, origin=str(path))


def parse_data(text: str, origin: str = "sandbox data") -> SandboxData:
    """Parse and check TOML text; every mistake is one SandboxDataError line naming the place."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SandboxDataError(f"{origin}: not valid TOML: {one_line(str(exc))}") from None
    try:
        return _parse_document(document)
    except Bad as bad:
        raise SandboxDataError(
            f"{origin}: {bad.where}: {bad.message}" if bad.where else f"{origin}: {bad.message}"
        ) from None


def _parse_document(document: Mapping[str, Any]) -> SandboxData:
    unknown = sorted(set(document) - {"customers"})
    if unknown:
        raise Bad("", f"unknown top-level key {unknown[0]!r} (expected [[customers]] tables)")
    raw_customers = document.get("customers")
    if not isinstance(raw_customers, list) or not raw_customers:
        raise Bad("", "no [[customers]] table: the sandbox needs at least one customer")
    customers: list[CustomerData] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_customers):
        where = f"customers[{index}]"
        customer = _parse_customer(raw, where)
        if customer.id.lower() in seen:
            raise Bad(where, f"customer id {customer.id} appears twice")
        seen.add(customer.id.lower())
        customers.append(customer)
    return SandboxData(customers=tuple(customers))


def _parse_customer(raw: Any, where: str) -> CustomerData:
    table = checked_table(raw, where, _CUSTOMER_KEYS)
    customer_id = guid_of(table, "id", where, required=True)
    assert customer_id is not None
    name = text_of(table, "name", where) or customer_id
    raw_domains = table.get("domains")
    if not isinstance(raw_domains, list) or not raw_domains:
        raise Bad(where, "domains must be a non-empty list of { name = ..., authenticationType = ... }")
    domains = [_parse_domain(d, f"{where}.domains[{i}]") for i, d in enumerate(raw_domains)]
    names = [d.name.casefold() for d in domains]
    for i, key in enumerate(names):
        if key in names[:i]:
            raise Bad(f"{where}.domains[{i}]", f"domain {domains[i].name} appears twice")
    domains = _settle_initial_and_default(domains, where)
    skus = parse_skus(table.get("skus"), where)
    users = _parse_users(table, where, customer_id, {d.name.casefold(): d for d in domains}, skus)
    return CustomerData(
        id=customer_id,
        name=name,
        domains=tuple(domains),
        users=tuple(users),
        gdap_roles=_gdap_roles(table, where),
        relationship=flag_of(table, "relationship", where, True),
        skus=skus,
    )


def _parse_users(
    table: Mapping[str, Any],
    where: str,
    customer_id: str,
    domains: dict[str, DomainData],
    skus: tuple[SkuData, ...],
) -> list[UserData]:
    raw_users = table.get("users", [])
    if not isinstance(raw_users, list):
        raise Bad(where, "users must be [[customers.users]] tables")
    users: list[UserData] = []
    upns: set[str] = set()
    for i, raw_user in enumerate(raw_users):
        user = _parse_user(raw_user, f"{where}.users[{i}]", customer_id, domains, skus)
        if user.userPrincipalName.casefold() in upns:
            raise Bad(f"{where}.users[{i}]", f"userPrincipalName {user.userPrincipalName} appears twice")
        upns.add(user.userPrincipalName.casefold())
        users.append(user)
    ids = [u.id.lower() for u in users]
    for i, user_id in enumerate(ids):
        if user_id in ids[:i]:
            raise Bad(f"{where}.users[{i}]", f"user id {users[i].id} appears twice")
    check_customer_directory(where, skus, [(u.userPrincipalName, u.state, u.directory) for u in users])
    return users


def _gdap_roles(table: Mapping[str, Any], where: str) -> tuple[str, ...] | None:
    """The roles as Entra names them; a misspelt role is an error, since ignoring it would grant or deny the
    wrong thing without a word."""
    raw = table.get("gdapRoles")
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise Bad(where, 'gdapRoles must be a list of role names, e.g. ["User Administrator"]')
    roles: list[str] = []
    for item in raw:
        role = canonical_role(item)
        if role is None:
            raise Bad(where, f"gdapRoles: unknown role {item!r} (known: {', '.join(KNOWN_ROLES)})")
        if role not in roles:
            roles.append(role)
    return tuple(roles)


def _parse_domain(raw: Any, where: str) -> DomainData:
    table = checked_table(raw, where, _DOMAIN_KEYS)
    name = text_of(table, "name", where, required=True)
    assert name is not None
    if "@" in name or " " in name or "." not in name:
        raise Bad(where, f"{name!r} is not a domain name")
    kind = text_of(table, "authenticationType", where, required=True)
    assert kind is not None
    if kind.casefold() not in {MANAGED.casefold(), FEDERATED.casefold()}:
        raise Bad(where, f"authenticationType must be Managed or Federated, not {kind!r}")
    return DomainData(
        name=name,
        authentication_type=MANAGED if kind.casefold() == MANAGED.casefold() else FEDERATED,
        is_default=flag_of(table, "isDefault", where, False),
        is_initial=flag_of(table, "isInitial", where, False),
        is_verified=flag_of(table, "isVerified", where, True),
    )


def _settle_initial_and_default(domains: list[DomainData], where: str) -> list[DomainData]:
    """Every tenant has exactly one initial and one default domain; fill them in when the file leaves them out."""
    initial = [i for i, d in enumerate(domains) if d.is_initial]
    default = [i for i, d in enumerate(domains) if d.is_default]
    if len(initial) > 1:
        raise Bad(where, "more than one domain has isInitial = true")
    if len(default) > 1:
        raise Bad(where, "more than one domain has isDefault = true")
    if not initial:
        # The initial domain is the tenant's *.onmicrosoft.com one; fall back to the first domain listed.
        pick = next((i for i, d in enumerate(domains) if d.name.casefold().endswith(".onmicrosoft.com")), 0)
        domains[pick] = replace(domains[pick], is_initial=True)
        initial = [pick]
    if domains[initial[0]].federated:
        raise Bad(where, f"the initial domain {domains[initial[0]].name} cannot be Federated")
    if not default:
        domains[initial[0]] = replace(domains[initial[0]], is_default=True)
    return domains


def _parse_user(
    raw: Any, where: str, customer_id: str, domains: dict[str, DomainData], skus: tuple[SkuData, ...]
) -> UserData:
    table = checked_table(raw, where, _USER_KEYS)
    upn = text_of(table, "userPrincipalName", where, required=True)
    assert upn is not None
    problem = rules.upn_problem(upn)
    if problem:
        raise Bad(where, f"userPrincipalName {upn!r} is invalid: {problem}")
    domain = upn.rpartition("@")[2].casefold()
    if domain not in domains:
        raise Bad(where, f"userPrincipalName {upn}: {domain} is not one of this customer's domains")
    display_name = text_of(table, "displayName", where, required=True)
    assert display_name is not None
    usage_location = text_of(table, "usageLocation", where)
    if usage_location is not None and not rules.usage_location_ok(usage_location):
        raise Bad(
            where, f"usageLocation {usage_location!r} is not a country or region Partner Center supports"
        )
    state = (text_of(table, "state", where) or "active").casefold()
    if state not in USER_STATES:
        raise Bad(where, f"state must be active or inactive (soft-deleted), not {table['state']!r}")
    deleted_at = text_of(table, "softDeletionTime", where)
    if deleted_at is not None and state != "inactive":
        raise Bad(where, 'softDeletionTime is for a soft-deleted user (state = "inactive")')
    if deleted_at is not None and not is_iso_time(deleted_at):
        raise Bad(
            where, f"softDeletionTime must be an ISO 8601 time (2026-11-20T09:30:00Z), not {deleted_at!r}"
        )
    return UserData(
        id=guid_of(table, "id", where) or stable_user_id(customer_id, upn),
        userPrincipalName=upn,
        displayName=display_name,
        firstName=text_of(table, "firstName", where),
        lastName=text_of(table, "lastName", where),
        usageLocation=usage_location,
        immutableId=text_of(table, "immutableId", where),
        state=state,
        softDeletionTime=deleted_at,
        directory=_licensable(parse_user_directory(table, where, skus), usage_location, where),
    )


def _licensable(directory: UserDirectoryData, usage_location: str | None, where: str) -> UserDirectoryData:
    # Entra never holds a licensed user without a usage location, so neither may the file.
    if directory.licenses and usage_location is None:
        raise Bad(where, "a user with licenses needs a usageLocation")
    return directory
