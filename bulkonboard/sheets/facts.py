"""What validation needs to know about a customer, and where it comes from.

Validation never asks the network: it is handed `CustomerFacts`. The sources are behind one small protocol so
that the offline file (`--domains`), the sandbox and the real Graph + Partner Center look the same to it.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..errors import BulkOnboardError, InputError
from .inputfile import read_regular_file
from .textencoding import decode

#: The customer an offline dry run (`--domains FILE`, no `--customer`) checks against: the file's domains serve
#: every customer alike, so a sheet needs no customer to be checked offline. Never shown in a workbook.
ANY_CUSTOMER = "*"

#: A domains file lists a customer's domains: tens of lines. 16 MiB is a bound no real one nears.
DOMAINS_FILE_BYTES = 16 * 1024 * 1024

MANAGED = "Managed"
FEDERATED = "Federated"

log = logging.getLogger("bulkonboard")


@dataclass(frozen=True, slots=True)
class Domain:
    name: str  # as the service spells it
    authentication_type: str  # "Managed" or "Federated", as Graph says it

    @property
    def federated(self) -> bool:
        return self.authentication_type.casefold() == FEDERATED.casefold()


@dataclass(frozen=True, slots=True)
class DeletedUser:
    """A soft-deleted user: in the customer's recycle bin for 30 days, still holding its UPN (a create with that
    UPN is refused), and restorable by its id."""

    id: str
    userPrincipalName: str
    deleted_at: str | None  # the service's `softDeletionTime` (ISO 8601), when its answer has one


#: capabilityStatus values whose units can be assigned: Warning is the grace period after a subscription lapsed
#: (its units still work); Suspended, LockedOut and Deleted cannot take a new user.
ASSIGNABLE_STATUSES = frozenset({"enabled", "warning"})


@dataclass(frozen=True, slots=True)
class SubscribedSku:
    """A product the customer holds units of, as Partner Center's `subscribedskus` shows it."""

    sku_id: str
    part_number: str  # skuPartNumber, e.g. ENTERPRISEPACK
    product_name: str  # productSku.name, e.g. Office 365 E3
    available_units: int
    capability_status: str = "Enabled"
    license_group_id: str = "group1"

    @property
    def assignable(self) -> bool:
        return self.capability_status.casefold() in ASSIGNABLE_STATUSES


@dataclass(slots=True)
class CustomerFacts:
    """Domains keyed by lower-cased name; existing users keyed by case-folded UPN -> user id; soft-deleted users
    keyed by case-folded UPN.

    `existing_users` and `deleted_users` are None when the source cannot tell (the offline `--domains` file):
    then no row is marked `user.exists` or `user.deleted` in a dry run. `subscribed_skus` is None likewise: then
    licenses are not checked.
    """

    customer_id: str
    domains: dict[str, Domain] = field(default_factory=dict)
    existing_users: dict[str, str] | None = None
    deleted_users: dict[str, DeletedUser] | None = None
    subscribed_skus: tuple[SubscribedSku, ...] | None = None
    #: Why the service would not list the SKUs: raised (one line, exit 3) only if a row of the customer asks for
    #: a license, so a partner without a role that reads licenses can still check a sheet that asks none.
    licenses_unreadable: BulkOnboardError | None = None

    def domain(self, name: str) -> Domain | None:
        return self.domains.get(name.casefold())


class FactsSource(Protocol):
    """Anything that can tell validation about a customer: a file, the sandbox, the real service."""

    async def customer_facts(self, customer_id: str) -> CustomerFacts: ...


class DomainsFile:
    """`--domains FILE`: a CSV `domain,authenticationType` that serves every customer alike, offline.

    A file cannot know the customer's users: the first time it serves as the dry run's only source it says so,
    once (a warning), rather than letting a clean report suggest that no UPN is taken or in the recycle bin.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._domains = _read_domains_csv(path)
        self._said_what_it_cannot_know = False

    @property
    def domains(self) -> dict[str, Domain]:
        """The file's domains, for a source that asks the service about users (no warning: it can know)."""
        return dict(self._domains)

    async def customer_facts(self, customer_id: str) -> CustomerFacts:
        if not self._said_what_it_cannot_know:
            self._said_what_it_cannot_know = True
            log.warning(
                "checked against the domains file %s alone: it cannot know the customer's users, so no row is "
                "checked for a user that exists or is in the recycle bin (soft-deleted); check against the "
                "service (--sandbox, --sandbox-url or credentials) for that",
                self.path,
                extra={"fields": {"event": "warning"}},
            )
        return CustomerFacts(customer_id=customer_id, domains=self.domains)


def _read_domains_csv(path: Path) -> dict[str, Domain]:
    raw = read_regular_file(path, "the domains file", limit=DOMAINS_FILE_BYTES)
    text, _ = decode(path, raw)
    reader = csv.DictReader(io.StringIO(text))
    fields = {(name or "").strip().casefold(): name for name in (reader.fieldnames or [])}
    if "domain" not in fields or "authenticationtype" not in fields:
        raise InputError(f"{path}: the domains file needs the columns domain,authenticationType")
    domains: dict[str, Domain] = {}
    for line_no, record in enumerate(reader, start=2):
        name = (record.get(fields["domain"]) or "").strip()
        kind = (record.get(fields["authenticationtype"]) or "").strip()
        if not name:
            continue
        if kind.casefold() not in {MANAGED.casefold(), FEDERATED.casefold()}:
            raise InputError(
                f"{path}: row {line_no}: authenticationType of {name} is {kind!r}, expected Managed or Federated"
            )
        kind = MANAGED if kind.casefold() == MANAGED.casefold() else FEDERATED
        domains[name.casefold()] = Domain(name=name, authentication_type=kind)
    if not domains:
        raise InputError(f"{path}: the domains file lists no domain")
    return domains
