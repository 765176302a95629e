"""Assigning and removing licenses: the rules both doors (Partner Center's `licenseupdates`, Graph's
`assignLicense`) apply to the one directory of a customer, so a unit is counted once whichever door took it.

Documented: all SKUs of one Partner Center request belong to one license group; a user needs a usage location
before a license can be assigned (Graph's text: "License assignment cannot be done for user with invalid usage
location."); units run out (Partner Center 400/60012). The sandbox's own reading where the docs are silent:
- assigning a SKU the user already holds is accepted and takes no second unit (so a retried assignment is
  harmless, as Entra's is);
- removing a SKU the user does not hold, naming a SKU the customer has no subscription to, or adding and removing
  the same SKU in one request is refused;
- only SKUs whose capabilityStatus is Enabled or Warning can be assigned (Suspended, Deleted, LockedOut cannot).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .data_directory import SkuData
from .store import LICENSES, CustomerState, Record


class Refused(Enum):
    UNKNOWN_SKU = "unknown sku"
    NOT_ASSIGNABLE = "sku not enabled"
    MIXED_GROUPS = "license groups mixed"
    NO_USAGE_LOCATION = "no usage location"
    INSUFFICIENT = "not enough licenses"
    NOT_ASSIGNED = "license not assigned"
    BOTH_WAYS = "added and removed at once"


@dataclass(frozen=True, slots=True)
class LicenseRefusal:
    """Why a license change is refused, for each door to say in its own shape."""

    reason: Refused
    message: str
    sku: SkuData | None = None


USAGE_LOCATION_TEXT = "License assignment cannot be done for user with invalid usage location."


def change_licenses(
    customer: CustomerState, record: Record, add: list[str], remove: list[str], *, one_group: bool
) -> list[str] | LicenseRefusal:
    """The user's SKU ids after adding `add` and removing `remove` (SKU ids, any case), or why not."""
    adding = _known(customer, add)
    removing = _known(customer, remove)
    if isinstance(adding, LicenseRefusal):
        return adding
    if isinstance(removing, LicenseRefusal):
        return removing
    held = list(record.get(LICENSES, []))
    held_keys = {sku_id.lower() for sku_id in held}
    for sku in removing:
        if sku.sku_id.lower() not in held_keys:
            return LicenseRefusal(
                Refused.NOT_ASSIGNED,
                f"User does not have a license for {sku.sku_part_number} ({sku.sku_id}).",
                sku,
            )
    removed_keys = {sku.sku_id.lower() for sku in removing}
    both = next((sku for sku in adding if sku.sku_id.lower() in removed_keys), None)
    if both is not None:
        return LicenseRefusal(Refused.BOTH_WAYS, f"{both.sku_id} is both assigned and removed.", both)
    if one_group and len({sku.license_group_id.casefold() for sku in [*adding, *removing]}) > 1:
        return LicenseRefusal(
            Refused.MIXED_GROUPS, "All licenses of one license update must belong to the same license group."
        )
    new = [sku for sku in adding if sku.sku_id.lower() not in held_keys]
    refused = _assignable(customer, record, new)
    if refused is not None:
        return refused
    kept = [sku_id for sku_id in held if sku_id.lower() not in removed_keys]
    return kept + [sku.sku_id for sku in new]


def _known(customer: CustomerState, sku_ids: list[str]) -> list[SkuData] | LicenseRefusal:
    skus: list[SkuData] = []
    for sku_id in sku_ids:
        sku = customer.sku(sku_id)
        if sku is None:
            return LicenseRefusal(
                Refused.UNKNOWN_SKU, f"The customer has no subscription to a product with SKU id {sku_id}."
            )
        if sku not in skus:
            skus.append(sku)
    return skus


def _assignable(customer: CustomerState, record: Record, new: list[SkuData]) -> LicenseRefusal | None:
    if new and not record.get("usageLocation"):
        return LicenseRefusal(Refused.NO_USAGE_LOCATION, USAGE_LOCATION_TEXT)
    for sku in new:
        if not sku.assignable:
            return LicenseRefusal(
                Refused.NOT_ASSIGNABLE,
                f"Licenses of {sku.sku_part_number} ({sku.sku_id}) cannot be assigned: the subscription is "
                f"{sku.capability_status}.",
                sku,
            )
        if available_units(customer, sku) < 1:
            return LicenseRefusal(
                Refused.INSUFFICIENT,
                f"Not enough licenses available for {sku.sku_part_number} ({sku.sku_id}): {sku.total_units} in "
                f"all, {customer.consumed_units(sku.sku_id)} assigned, 0 available.",
                sku,
            )
    return None


def available_units(customer: CustomerState, sku: SkuData) -> int:
    """Units that can still be assigned: total - assigned, for a SKU that can be assigned at all; else 0."""
    if not sku.assignable:
        return 0
    return max(0, sku.total_units - customer.consumed_units(sku.sku_id))


def units_by_status(sku: SkuData) -> dict[str, int]:
    """The SKU's units in Graph's `prepaidUnits` buckets: all of them in the bucket of its capabilityStatus (the
    sandbox's simplification: a real subscription can have units in several)."""
    units = {"enabled": 0, "lockedOut": 0, "suspended": 0, "warning": 0}
    bucket = {"Enabled": "enabled", "Warning": "warning", "Suspended": "suspended", "LockedOut": "lockedOut"}
    if sku.capability_status in bucket:
        units[bucket[sku.capability_status]] = sku.total_units
    return units
