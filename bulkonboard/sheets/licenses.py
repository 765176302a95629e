"""The `licenses` column: SKUs a row asks for, checked against what the customer holds before anything is sent.

Why a dry run checks it: a license that cannot be assigned is found by the run only after the user exists, when
the fix costs a portal session per person. The customer's subscribed SKUs are read once per customer (facts.py)
and every row is judged against them here: a SKU the customer does not hold (or cannot assign: a suspended
subscription), and rows past the free units in input order. A cell names a SKU by its part number
(`ENTERPRISEPACK`), its product name as Partner Center shows it (`Office 365 E3`) or its id, in any case.

Like the other rules, the work is done once per distinct cell text (a sheet of 5,000 new hires has a handful of
different cells), and a message is only worded for a row that failed.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import InputError
from ..model import LicenseDemand
from .facts import ANY_CUSTOMER, CustomerFacts, SubscribedSku
from .rules import EXISTS_BIT, Rule

LICENSES_FIELD = "licenses"
SEPARATOR = ";"
#: At most this many of the customer's SKUs are named as the closest to an unknown one.
_CLOSEST = 3
#: Without a close one, at most this many of the customer's SKUs are listed.
_LISTED = 5

OFFLINE_NOTE = (
    "not checked: an offline dry run (--domains alone) cannot read the customer's subscriptions; "
    "check with --sandbox, --sandbox-url or the service"
)


def split_licenses(cell: str) -> tuple[str, ...]:
    """The SKUs of one cell, trimmed, empty parts dropped, each once (compared ignoring case)."""
    seen: set[str] = set()
    out: list[str] = []
    for part in cell.split(SEPARATOR):
        reference = part.strip()
        if reference and reference.casefold() not in seen:
            seen.add(reference.casefold())
            out.append(reference)
    return tuple(out)


def default_licenses_text(defaults: Iterable[str]) -> str:
    """`--license` values as one cell; refuses an empty one (a typo like `--license ""` must not pass silently)."""
    references: list[str] = []
    for value in defaults:
        parts = split_licenses(value)
        if not parts:
            raise InputError(
                "--license: give a SKU (a part number such as ENTERPRISEPACK, a product name or an id)"
            )
        references.extend(parts)
    return f"{SEPARATOR} ".join(split_licenses(SEPARATOR.join(references)))


def fill_default_licenses(column: pd.Series, defaults: Iterable[str]) -> pd.Series:
    """Rows whose cell is empty take `--license`; a row's own cell always wins."""
    text = default_licenses_text(defaults)
    if not text:
        return column
    return column.mask(column.str.strip() == "", text)


def shown(sku: SubscribedSku) -> str:
    return (
        sku.product_name if sku.product_name == sku.part_number else f"{sku.product_name} ({sku.part_number})"
    )


class SkuCatalog:
    """One customer's SKUs, found by part number, product name or id, ignoring case."""

    def __init__(self, skus: Iterable[SubscribedSku]) -> None:
        self.skus = tuple(skus)
        self._by_name: dict[str, SubscribedSku] = {}
        for sku in self.skus:  # a part number or id wins over another SKU's product name
            self._by_name.setdefault(sku.product_name.casefold(), sku)
        for sku in self.skus:
            self._by_name[sku.part_number.casefold()] = sku
            self._by_name[sku.sku_id.casefold()] = sku

    def find(self, reference: str) -> SubscribedSku | None:
        return self._by_name.get(reference.strip().casefold())

    def closest(self, reference: str) -> str:
        """The customer's SKUs nearest to an unknown name, as the message names them."""
        names = {}
        for sku in self.skus:
            names[sku.part_number.casefold()] = sku
            names[sku.product_name.casefold()] = sku
        near = difflib.get_close_matches(reference.casefold(), list(names), n=_CLOSEST * 2, cutoff=0.5)
        picked = list(dict.fromkeys(names[name] for name in near))[:_CLOSEST]
        if picked:
            return "closest: " + ", ".join(shown(sku) for sku in picked)
        if not self.skus:
            return "it holds no licenses"
        listed = ", ".join(shown(sku) for sku in self.skus[:_LISTED])
        more = f" and {len(self.skus) - _LISTED} more" if len(self.skus) > _LISTED else ""
        return f"it holds {listed}{more}"


@dataclass(frozen=True, slots=True)
class _Cell:
    """What one distinct cell text resolves to for one customer."""

    skus: tuple[SubscribedSku, ...]  # the SKUs found and assignable, in the cell's order
    unknown: tuple[str, ...]  # references no SKU of the customer answers to
    not_assignable: tuple[SubscribedSku, ...]


def _resolve(cell: str, catalog: SkuCatalog) -> _Cell:
    found: list[SubscribedSku] = []
    unknown: list[str] = []
    blocked: list[SubscribedSku] = []
    for reference in split_licenses(cell):
        sku = catalog.find(reference)
        if sku is None:
            unknown.append(reference)
        elif not sku.assignable:
            blocked.append(sku)
        elif sku not in found:
            found.append(sku)
    return _Cell(tuple(found), tuple(unknown), tuple(blocked))


@dataclass(slots=True)
class LicenseCheck:
    """What the license rules found: the rows that failed (as masks) and what a message or the Summary needs."""

    unknown: np.ndarray  # bool per row: a SKU the customer does not hold
    not_assignable: np.ndarray  # bool per row: a SKU whose subscription cannot take a user now
    insufficient: np.ndarray  # bool per row: past the free units of a SKU, in input order
    #: per customer, each SKU with the rows that would take it, in input order (the first `available` get one)
    takers: dict[str, list[tuple[SubscribedSku, np.ndarray]]] = field(default_factory=dict)
    demand: tuple[LicenseDemand, ...] = ()
    unchecked_note: str = ""  # said once (the Summary) when the rows' licenses could not be checked
    catalogs: dict[str, SkuCatalog] = field(default_factory=dict)  # by customer

    @classmethod
    def nothing(cls, n: int) -> LicenseCheck:
        return cls(np.zeros(n, dtype=bool), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool))

    def message(self, rule: Rule, cell: str, position: int, customer: str) -> str:
        if rule is Rule.LICENSE_UNKNOWN:
            return self.unknown_message(cell, customer)
        if rule is Rule.LICENSE_NOT_ASSIGNABLE:
            return self.not_assignable_message(cell, customer)
        return self.insufficient_message(position, customer)

    def unknown_message(self, cell: str, customer: str) -> str:
        catalog = self.catalogs[customer]
        resolved = _resolve(cell, catalog)
        return ", and ".join(
            f"{reference} is not a license {_whose(customer)} holds ({catalog.closest(reference)})"
            for reference in resolved.unknown
        )

    def not_assignable_message(self, cell: str, customer: str) -> str:
        resolved = _resolve(cell, self.catalogs[customer])
        return ", and ".join(
            f"{shown(sku)} cannot be assigned: {_whose(customer)}'s subscription to it is {sku.capability_status} "
            "(only Enabled or Warning take users); reactivate it or pick another license"
            for sku in resolved.not_assignable
        )

    def insufficient_message(self, position: int, customer: str) -> str:
        parts = []
        for sku, takers in self.takers.get(customer, []):
            place = int(np.searchsorted(takers, position)) + 1
            if place > sku.available_units and place <= len(takers) and takers[place - 1] == position:
                parts.append(
                    f"no {shown(sku)} unit left for this row: {_whose(customer)} has {sku.available_units} "
                    f"available and {len(takers)} rows to create ask for it (this is number {place} in input "
                    f"order); buy {len(takers) - sku.available_units} more or take the license off some rows"
                )
        return ", and ".join(parts)


def licenses_need_usage(licenses: tuple[str, ...]) -> str:
    """Said on a usage-location problem of a row with licenses: CIPP's most repeated licensing error is "License
    assignment cannot be done for user with invalid usage location", found here where it is fixed."""
    if not licenses:
        return ""
    return " (the row asks for licenses, and a license can only be assigned to a user with a usage location)"


def flag_licenses(
    licenses: pd.Series, customer: np.ndarray, facts: Mapping[str, CustomerFacts], failed: np.ndarray
) -> LicenseCheck:
    """Run last, because whether a row takes a unit depends on every other rule: a row that will not be created
    takes none. Users that exist already are never touched, so their licenses are not judged."""
    check = check_licenses(licenses, customer, facts, failed, skip=(failed & EXISTS_BIT) != 0)
    for rule, mask in (
        (Rule.LICENSE_UNKNOWN, check.unknown),
        (Rule.LICENSE_NOT_ASSIGNABLE, check.not_assignable),
        (Rule.LICENSE_INSUFFICIENT, check.insufficient),
    ):
        failed[mask] |= 1 << int(rule)
    return check


def _whose(customer: str) -> str:
    return "the customer" if customer == ANY_CUSTOMER else f"customer {customer}"


def check_licenses(
    licenses: pd.Series,
    customer: np.ndarray,
    facts: Mapping[str, CustomerFacts],
    failed: np.ndarray,
    *,
    skip: np.ndarray,
) -> LicenseCheck:
    """Judge every row that asks for licenses; `failed` (the other rules' bits) says which rows would be created.

    Rows in `skip` (users that exist already: never touched) are not judged. Raises the customer's
    `licenses_unreadable` (one line, exit 3) when rows of it ask for licenses the service would not list.
    """
    check = LicenseCheck.nothing(len(licenses))
    asking = (licenses.str.strip() != "").to_numpy() & ~skip
    if not asking.any():
        return check
    cells = licenses.to_numpy(dtype=object)
    would_create = failed == 0
    for customer_id, positions in pd.Series(customer).groupby(customer, sort=False).indices.items():
        positions = positions[asking[positions]]  # ascending: input order
        if not customer_id or not len(positions):
            continue
        customer_facts = facts[customer_id]
        if customer_facts.subscribed_skus is None:
            if customer_facts.licenses_unreadable is not None:
                raise customer_facts.licenses_unreadable
            check.unchecked_note = OFFLINE_NOTE
            continue
        catalog = check.catalogs[customer_id] = SkuCatalog(customer_facts.subscribed_skus)
        codes, distinct = pd.factorize(cells[positions])  # a handful of distinct cells, however many rows
        resolved = [_resolve(str(cell), catalog) for cell in distinct]
        check.unknown[positions] = np.array([bool(r.unknown) for r in resolved])[codes]
        check.not_assignable[positions] = np.array([bool(r.not_assignable) for r in resolved])[codes]
        takes = would_create[positions] & ~check.unknown[positions] & ~check.not_assignable[positions]
        _count_units(check, str(customer_id), positions[takes], codes[takes], resolved)
    return check


def _count_units(
    check: LicenseCheck, customer: str, positions: np.ndarray, codes: np.ndarray, resolved: list[_Cell]
) -> None:
    """Give out each SKU's free units to the rows that would be created (`positions`, in input order), and flag
    the rows past them; a SKU's takers are kept so that a message can say which place a row had."""
    skus = list(dict.fromkeys(sku for cell in resolved for sku in cell.skus))  # in order of first appearance
    for sku in skus:
        holds = np.array([sku in cell.skus for cell in resolved], dtype=bool)
        takers = positions[holds[codes]]
        if not len(takers):
            continue
        available = max(0, sku.available_units)
        check.insufficient[takers[available:]] = True
        check.takers.setdefault(customer, []).append((sku, takers))
        check.demand += (LicenseDemand(customer, sku.part_number, sku.product_name, available, len(takers)),)
