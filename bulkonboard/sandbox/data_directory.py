"""The data file's licensing and profile parts: `[[customers.skus]]`, and a user's `licenses`, profile fields and
`manager`.

```toml
[[customers.skus]]
skuId = "6fd2c87f-b296-42f0-b197-1e91e994b900"
skuPartNumber = "ENTERPRISEPACK"
productName = "Office 365 E3"
totalUnits = 25                  # available = total - assigned
licenseGroupId = "group1"        # optional, default "group1"
capabilityStatus = "Enabled"     # optional: Enabled (default), Warning, Suspended, Deleted, LockedOut

[[customers.users]]
licenses = ["ENTERPRISEPACK"]    # a skuPartNumber or a skuId, any case; counted against totalUnits
jobTitle = "Engineer"            # any profile field by Graph's name (`profile.PROFILE_FIELDS`)
manager = "boss@contoso.com"     # the UPN of another user of the same customer
profile = { state = "WA" }       # the same fields in a table: the only way to give Graph's `state` (province),
                                 # since a user's top-level `state` is its soft-delete state (active/inactive)
```
Mistakes are refused as for the rest of the file: an unknown SKU, a SKU held by more users than it has units, a
manager who is not a user of the customer, a user who is their own manager.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .profile import PROFILE_FIELDS, profile_problem
from .tomlfields import Bad, checked_table, guid_of, text_of

DEFAULT_LICENSE_GROUP = "group1"
#: Graph's capabilityStatus values; units of a SKU in the first two can be assigned (Warning is the grace period
#: after a subscription expired: the sandbox's reading), the others cannot.
CAPABILITY_STATUSES = ("Enabled", "Warning", "Suspended", "Deleted", "LockedOut")
ASSIGNABLE_STATUSES = ("Enabled", "Warning")

SKU_KEYS = ("skuId", "skuPartNumber", "productName", "totalUnits", "licenseGroupId", "capabilityStatus")
#: Profile keys allowed at the top of a user's table (`state` is taken by the soft-delete state).
TOP_LEVEL_PROFILE_KEYS = tuple(name for name in PROFILE_FIELDS if name != "state")
USER_DIRECTORY_KEYS = ("licenses", "manager", "profile", *TOP_LEVEL_PROFILE_KEYS)


@dataclass(frozen=True, slots=True)
class SkuData:
    """A product the customer is subscribed to, with its units."""

    sku_id: str
    sku_part_number: str
    product_name: str
    total_units: int
    license_group_id: str = DEFAULT_LICENSE_GROUP
    capability_status: str = "Enabled"

    @property
    def assignable(self) -> bool:
        return self.capability_status in ASSIGNABLE_STATUSES


@dataclass(frozen=True, slots=True)
class UserDirectoryData:
    """A seeded user's licenses (SKU ids), profile (Graph's names) and manager (a UPN)."""

    licenses: tuple[str, ...] = ()
    profile: tuple[tuple[str, Any], ...] = ()
    manager: str | None = None


def parse_skus(raw: Any, where: str) -> tuple[SkuData, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise Bad(where, "skus must be [[customers.skus]] tables")
    skus = [_parse_sku(item, f"{where}.skus[{i}]") for i, item in enumerate(raw)]
    for i, sku in enumerate(skus):
        for other in skus[:i]:
            if other.sku_id.lower() == sku.sku_id.lower():
                raise Bad(f"{where}.skus[{i}]", f"skuId {sku.sku_id} appears twice")
            if other.sku_part_number.casefold() == sku.sku_part_number.casefold():
                raise Bad(f"{where}.skus[{i}]", f"skuPartNumber {sku.sku_part_number} appears twice")
    return tuple(skus)


def _parse_sku(raw: Any, where: str) -> SkuData:
    table = checked_table(raw, where, SKU_KEYS)
    sku_id = guid_of(table, "skuId", where, required=True)
    part_number = text_of(table, "skuPartNumber", where, required=True)
    assert sku_id is not None and part_number is not None
    total = table.get("totalUnits")
    if not isinstance(total, int) or isinstance(total, bool) or total < 0:
        raise Bad(where, "totalUnits must be a whole number, 0 or more")
    status = text_of(table, "capabilityStatus", where) or "Enabled"
    canonical = next((s for s in CAPABILITY_STATUSES if s.casefold() == status.casefold()), None)
    if canonical is None:
        raise Bad(where, f"capabilityStatus must be one of {', '.join(CAPABILITY_STATUSES)}, not {status!r}")
    return SkuData(
        sku_id=sku_id,
        sku_part_number=part_number,
        product_name=text_of(table, "productName", where) or part_number,
        total_units=total,
        license_group_id=text_of(table, "licenseGroupId", where) or DEFAULT_LICENSE_GROUP,
        capability_status=canonical,
    )


def parse_user_directory(
    table: Mapping[str, Any], where: str, skus: tuple[SkuData, ...]
) -> UserDirectoryData:
    """A user's licenses (resolved to SKU ids), profile fields (top level and `profile = {...}`) and manager."""
    raw_licenses = table.get("licenses", [])
    if not isinstance(raw_licenses, list) or not all(isinstance(item, str) for item in raw_licenses):
        raise Bad(where, 'licenses must be a list of SKUs, e.g. ["ENTERPRISEPACK"]')
    licenses: list[str] = []
    for reference in raw_licenses:
        sku = find_sku(skus, reference)
        if sku is None:
            raise Bad(
                where, f"licenses: {reference!r} is not a skuPartNumber or skuId of this customer's skus"
            )
        if sku.sku_id not in licenses:
            licenses.append(sku.sku_id)
    profile: dict[str, Any] = {name: table[name] for name in TOP_LEVEL_PROFILE_KEYS if name in table}
    nested = table.get("profile", {})
    profile.update(checked_table(nested, f"{where}.profile", PROFILE_FIELDS))
    for name, value in profile.items():
        if isinstance(value, str):
            value = profile[name] = value.strip()
        problem = profile_problem(name, value)
        if problem is not None:
            raise Bad(where, f"{name}: {problem}")
    return UserDirectoryData(
        licenses=tuple(licenses),
        profile=tuple(profile.items()),
        manager=text_of(table, "manager", where),
    )


def find_sku(skus: tuple[SkuData, ...], reference: str) -> SkuData | None:
    key = reference.strip().casefold()
    return next((s for s in skus if key in (s.sku_id.casefold(), s.sku_part_number.casefold())), None)


def check_customer_directory(
    where: str, skus: tuple[SkuData, ...], users: list[tuple[str, str, UserDirectoryData]]
) -> None:
    """Across a customer's users (UPN, state, directory data): no SKU over its units (active users hold units),
    and every manager a user of the customer other than the user itself."""
    held = {sku.sku_id: 0 for sku in skus}
    upns = {upn.casefold() for upn, _, _ in users}
    for index, (upn, state, directory) in enumerate(users):
        if state == "active":
            for sku_id in directory.licenses:
                held[sku_id] += 1
        manager = directory.manager
        if manager is not None and (manager.casefold() not in upns or manager.casefold() == upn.casefold()):
            raise Bad(
                f"{where}.users[{index}]",
                f"manager {manager!r} must be the UPN of another user of this customer",
            )
    for sku in skus:
        if held[sku.sku_id] > sku.total_units:
            raise Bad(
                where,
                f"{held[sku.sku_id]} users hold {sku.sku_part_number}, but its totalUnits is {sku.total_units}",
            )
