"""The license step of a row's plan: assign the licenses its `licenses` cell (or `run --license`) names, once.

Why one step per license group (`license:group1`, `license:group2`) rather than one step per row: Partner Center
takes the SKUs of ONE license group per `licenseupdates` request, and a step is one request with one request id
(the service's idempotency key; steps.py). Each group's request is then journaled, settled and retried on its
own: a Minecraft license refused does not make the next run send the Office licenses again. Nearly every row
asks for Group1 SKUs only, so nearly every row has one license request.

The rules it keeps (docs/ARCHITECTURE.md, "The plan of steps"):
- References (part number, product name or SKU id, any case) resolve against the customer's `subscribedskus`,
  read once per run with the facts, as the dry run resolves them: validation has refused the rows to create
  whose SKU is unknown, suspended or short of units. A row an earlier run created can reach this step unchecked
  (validation does not judge licenses of users that exist); a reference that no longer resolves then fails the
  row's first license step, and none of its licenses is sent: all of a row's licenses or a clear problem.
- A SKU of a license group Partner Center does not document goes with Group1's request: the service then says
  whether it takes it, in the row's problem.
- `reconcile` reads the user's licenses: every SKU of the group held is done; none (or some) held, the request
  is sent again with the same request id, which the service answers again without taking a second unit.
- The results' `licenses` column lists what the user was given (part numbers), from this run's answers or the
  journal's record of an earlier one: never what the sheet asked for.

Two ways in, one step: Partner Center (`licenseupdates`, one license group per request), or with `--via graph`
Graph (`assignLicense`, `licenseDetails`: service/graph_licenses.py), which has no license groups and takes any
SKUs in one request. A book made with `one_request=True` files every SKU under Group1's step, so a row's
licenses are one request and one journal step (`license:group1`) either way it has only Group1 SKUs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from ..model import Code, LicenseUse, Status
from ..service.partnercenter import LICENSE_GROUPS, Refused
from ..sheets.facts import CustomerFacts, SubscribedSku
from ..sheets.licenses import SEPARATOR, SkuCatalog, shown
from .messages import describe
from .sender import Sender
from .steps import RowState, StepOutcome

#: The step names, one per documented license group; stable (journal keys).
STEP_PREFIX = "license:"
_GROUP_KEYS = tuple(group.casefold() for group in LICENSE_GROUPS)


class LicenseService(Protocol):
    """The two calls the step makes (service.partnercenter.PartnerCenterClient keeps it, and
    service.graph.GraphClient for `--via graph`)."""

    async def assign_licenses(
        self, customer_id: str, user_id: str, sku_ids: Iterable[str], *, request_id: str
    ) -> None: ...

    async def user_licenses(self, customer_id: str, user_id: str) -> frozenset[str]: ...


@dataclass(frozen=True, slots=True)
class Wanted:
    """A row's licenses resolved: the SKUs by license group, or why they cannot be sent."""

    by_group: dict[str, tuple[SubscribedSku, ...]]
    problem: str = ""


@dataclass(slots=True)
class _Use:
    sku: SubscribedSku
    assigned: int = 0
    confirmed: int = 0


@dataclass
class LicenseBook:
    """Each customer's SKUs as this run read them (once, with the facts), and the units its license steps used.

    Filled by the runner once the facts are read (`learn`), before any row is sent. `one_request`: the way in
    takes any SKUs at once (Graph): every SKU goes with Group1's step."""

    one_request: bool = False
    catalogs: dict[str, SkuCatalog] = field(default_factory=dict)
    _used: dict[tuple[str, str], _Use] = field(default_factory=dict)

    def learn(self, facts: Mapping[str, CustomerFacts]) -> None:
        for customer, known in facts.items():
            if known.subscribed_skus is not None:
                self.catalogs[customer.casefold()] = SkuCatalog(known.subscribed_skus)

    def wanted(self, customer: str, references: tuple[str, ...]) -> Wanted:
        catalog = self.catalogs.get(customer.casefold())
        if catalog is None:
            return Wanted(
                {}, "the customer's licenses (subscribed SKUs) could not be read: nothing was assigned"
            )
        by_group: dict[str, list[SubscribedSku]] = {}
        unknown: list[str] = []
        for reference in references:
            sku = catalog.find(reference)
            if sku is None:
                unknown.append(
                    f"{reference} is not a license the customer holds ({catalog.closest(reference)})"
                )
            elif not sku.assignable:
                unknown.append(
                    f"{shown(sku)} cannot be assigned: the subscription is {sku.capability_status}"
                )
            else:
                skus = by_group.setdefault(_GROUP_KEYS[0] if self.one_request else group_of(sku), [])
                if sku not in skus:
                    skus.append(sku)
        if unknown:
            return Wanted({}, "no license was sent: " + ", and ".join(unknown) + "; fix the licenses cell")
        return Wanted({group: tuple(skus) for group, skus in by_group.items()})

    def count(self, customer: str, skus: Iterable[SubscribedSku], *, confirmed: bool = False) -> None:
        for sku in skus:
            use = self._used.setdefault((customer, sku.sku_id.casefold()), _Use(sku))
            if confirmed:
                use.confirmed += 1
            else:
                use.assigned += 1

    def usage(self) -> tuple[LicenseUse, ...]:
        """Units used per SKU, for the Summary: in the order first used."""
        return tuple(
            LicenseUse(customer, use.sku.part_number, use.sku.product_name, use.assigned, use.confirmed)
            for (customer, _), use in self._used.items()
        )


def group_of(sku: SubscribedSku) -> str:
    key = sku.license_group_id.casefold()
    return key if key in _GROUP_KEYS else _GROUP_KEYS[0]


class LicenseStep:
    """`Step` for one license group: one `licenseupdates` request with the row's SKUs of that group."""

    code = Code.LICENSE_FAILED
    fails_row_as = Status.PARTIAL

    def __init__(self, group: str, client: LicenseService, book: LicenseBook) -> None:
        self.group = group.casefold()
        self.name = STEP_PREFIX + self.group
        self._client = client
        self._book = book
        self._reports_problems = self.group == _GROUP_KEYS[0]  # a row's unresolvable cell is said once

    def _wanted(self, row: RowState) -> Wanted:
        return self._book.wanted(row.customer, row.user.licenses)

    def _skus(self, row: RowState) -> tuple[SubscribedSku, ...]:
        return self._wanted(row).by_group.get(self.group, ())

    def needed(self, row: RowState) -> bool:
        if not row.user.licenses:
            return False
        wanted = self._wanted(row)
        return bool(wanted.by_group.get(self.group)) or (bool(wanted.problem) and self._reports_problems)

    async def run(self, row: RowState, request_id: str, sender: Sender) -> StepOutcome:
        wanted = self._wanted(row)
        if wanted.problem:
            return StepOutcome.failed(wanted.problem)
        skus = wanted.by_group.get(self.group, ())
        ids = [sku.sku_id for sku in skus]
        try:
            await sender.request(
                lambda: self._client.assign_licenses(row.customer, row.user_id, ids, request_id=request_id)
            )
        except Refused as refusal:  # the service's final word: named with the SKUs it was about
            return StepOutcome.failed(f"{_names(skus)} not assigned: {describe(refusal)}")
        self._book.count(row.customer, skus)
        return StepOutcome.done(self.effect(row))

    async def reconcile(self, row: RowState, request_id: str, sender: Sender) -> bool | None:
        wanted = self._wanted(row)
        skus = wanted.by_group.get(self.group, ())
        if wanted.problem or not skus:
            return None  # the cell no longer says what was sent: only the tenant's admin can tell
        held = await sender.request(lambda: self._client.user_licenses(row.customer, row.user_id))
        if all(sku.sku_id.casefold() in held for sku in skus):
            self._book.count(row.customer, skus, confirmed=True)
            return True
        return False

    def effect(self, row: RowState) -> str:
        """The part numbers assigned, as the journal keeps them and the results show them."""
        return f"{SEPARATOR} ".join(sku.part_number for sku in self._skus(row))

    def show(self, row: RowState, detail: str) -> None:
        """Add what this group's step assigned to the row's `licenses` column (empty until a step is done)."""
        if not detail:
            return
        before = row.result.display.get("licenses", "")
        row.result.display["licenses"] = f"{before}{SEPARATOR} {detail}" if before else detail


def license_steps(client: LicenseService, book: LicenseBook) -> list[LicenseStep]:
    """The license steps of a plan, Group1's first (it says what is wrong with a cell that cannot be sent); one
    step when the way in takes every SKU in one request."""
    groups = LICENSE_GROUPS[:1] if book.one_request else LICENSE_GROUPS
    return [LicenseStep(group, client, book) for group in groups]


def _names(skus: tuple[SubscribedSku, ...]) -> str:
    return ", ".join(shown(sku) for sku in skus)
