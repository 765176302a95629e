"""Partner Center's license routes: the customer's subscribed SKUs, a user's licenses, and `licenseupdates`.

`licenseupdates` is a write like a create: MS-RequestId replay, GDAP (User Administrator, Directory Writers or
License Administrator, else 403/900308), the limiters (429), `--fail-rate` (503) and `--drop-rate` (assigned,
then the connection closed), in that order, then the rules of `licensing`. Its answer is documented as 201 with
the update echoed.

Documented: the item shape of `subscribedskus` and of a user's `licenses`; `licenseGroupIds` (repeatable) picks
the license groups to list, and without it only the default group, `group1`, is listed. Not documented (the
sandbox's own): the descriptions of its refusals, and the codes other than 60012 (see `codes`).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .codes import (
    LICENSE_GROUPS_MIXED_CODE,
    LICENSE_NOT_ASSIGNABLE_CODE,
    LICENSE_NOT_ASSIGNED_CODE,
    LICENSE_SKU_UNKNOWN_CODE,
    LICENSE_USAGE_LOCATION_CODE,
    NOT_ENOUGH_LICENSES_CODE,
    ApiError,
    invalid_input,
    user_not_found_error,
)
from .context import CONTEXT
from .data_directory import DEFAULT_LICENSE_GROUP, SkuData
from .licensing import LicenseRefusal, Refused, available_units, change_licenses
from .newuser import case_insensitive
from .partner_center import (
    admit,
    final_error,
    final_or_drop,
    pc_error,
    readable_customer,
    with_throttle_warning,
    writable_customer,
)
from .permissions import Action
from .store import ACTIVE, LICENSES, CustomerState

_REFUSAL_CODES = {
    Refused.UNKNOWN_SKU: LICENSE_SKU_UNKNOWN_CODE,
    Refused.MIXED_GROUPS: LICENSE_GROUPS_MIXED_CODE,
    Refused.NO_USAGE_LOCATION: LICENSE_USAGE_LOCATION_CODE,
    Refused.NOT_ASSIGNABLE: LICENSE_NOT_ASSIGNABLE_CODE,
    Refused.INSUFFICIENT: NOT_ENOUGH_LICENSES_CODE,
    Refused.NOT_ASSIGNED: LICENSE_NOT_ASSIGNED_CODE,
    Refused.BOTH_WAYS: LICENSE_NOT_ASSIGNED_CODE,
}


def routes(prefix: str) -> list[web.RouteDef]:
    customer = prefix + "/customers/{customer_id}"
    return [
        web.get(customer + "/subscribedskus", subscribed_skus),
        web.post(customer + "/users/{user_id}/licenseupdates", license_updates),
        web.get(customer + "/users/{user_id}/licenses", user_licenses),
    ]


def product_sku(sku: SkuData) -> dict[str, Any]:
    return {
        "id": sku.sku_id,
        "name": sku.product_name,
        "skuPartNumber": sku.sku_part_number,
        "targetType": "User",
        "licenseGroupId": sku.license_group_id,
    }


def _groups(request: web.Request) -> set[str]:
    return {g.casefold() for g in request.query.getall("licenseGroupIds", [DEFAULT_LICENSE_GROUP])}


def _collection(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"totalCount": len(items), "items": items, "attributes": {"objectType": "Collection"}}


async def subscribed_skus(request: web.Request) -> web.StreamResponse:
    customer = await readable_customer(request, Action.READ_LICENSES)
    if isinstance(customer, web.Response):
        return customer
    groups = _groups(request)
    items = [
        subscribed_sku(customer, sku)
        for sku in customer.skus.values()
        if sku.license_group_id.casefold() in groups
    ]
    return web.json_response(_collection(items))


def subscribed_sku(customer: CustomerState, sku: SkuData) -> dict[str, Any]:
    """One SubscribedSku: `availableUnits` is total - assigned (0 for a SKU that cannot be assigned)."""
    status = sku.capability_status
    return {
        "availableUnits": available_units(customer, sku),
        "activeUnits": sku.total_units if status == "Enabled" else 0,
        "consumedUnits": customer.consumed_units(sku.sku_id),
        "suspendedUnits": sku.total_units if status in ("Suspended", "LockedOut") else 0,
        "totalUnits": sku.total_units,
        "warningUnits": sku.total_units if status == "Warning" else 0,
        "productSku": product_sku(sku),
        "servicePlans": [],
        "capabilityStatus": status,
        "attributes": {"objectType": "SubscribedSku"},
    }


async def user_licenses(request: web.Request) -> web.StreamResponse:
    customer = await readable_customer(request, Action.READ_LICENSES)
    if isinstance(customer, web.Response):
        return customer
    user_id = request.match_info["user_id"]
    record = customer.get(user_id)
    if record is None or record["state"] != ACTIVE:
        return pc_error(user_not_found_error(user_id))
    groups = _groups(request)
    held = [customer.sku(sku_id) for sku_id in record.get(LICENSES, [])]
    items = [
        {"servicePlans": [], "productSku": product_sku(sku), "attributes": {"objectType": "License"}}
        for sku in held
        if sku is not None and sku.license_group_id.casefold() in groups
    ]
    return web.json_response(_collection(items))


async def license_updates(request: web.Request) -> web.StreamResponse:
    return with_throttle_warning(request, await _license_updates(request))


async def _license_updates(request: web.Request) -> web.StreamResponse:
    context = request.app[CONTEXT]
    opened = await writable_customer(request, Action.ASSIGN_LICENSES)
    if isinstance(opened, web.StreamResponse):
        return opened
    # From here to the answer: no await, so two updates cannot both take the last unit.
    customer, key, body = opened
    fate = admit(request, customer)
    if isinstance(fate, web.Response):
        return fate
    update = body if isinstance(body, ApiError) else read_update(body)
    if isinstance(update, ApiError):
        context.stats.refused += 1
        return final_error(request, key, update)
    add, remove, echo = update
    user_id = request.match_info["user_id"]
    record = customer.get(user_id)
    if record is None or record["state"] != ACTIVE:
        return final_error(request, key, user_not_found_error(user_id))
    result = change_licenses(customer, record, add, remove, one_group=True)
    if isinstance(result, LicenseRefusal):
        context.stats.refused += 1
        return final_error(request, key, license_error(result))
    context.store.replace(customer, {**record, LICENSES: result})
    context.stats.license_updates += 1
    return final_or_drop(request, key, 201, echo, fate)


def license_error(refusal: LicenseRefusal) -> ApiError:
    """Partner Center's 400 for a refused update; `data` carries the SKU at fault, as the underlying exception's
    detail (documented for 60012)."""
    data = (refusal.sku.sku_id,) if refusal.sku is not None else ()
    return ApiError(400, _REFUSAL_CODES[refusal.reason], refusal.message, data)


def read_update(body: Any) -> tuple[list[str], list[str], dict[str, Any]] | ApiError:
    """The SKU ids to add and remove, and the update as the 201 echoes it; or 400/800002 for a malformed body."""
    if not isinstance(body, dict):
        return invalid_input("The request body must be a LicenseUpdate object.")
    members = case_insensitive(body)
    assign = members.get("licensestoassign") or []
    remove = members.get("licensestoremove") or []
    if not isinstance(assign, list) or not isinstance(remove, list):
        return invalid_input("LicensesToAssign and LicensesToRemove must be lists.", "LicensesToAssign")
    add: list[str] = []
    echoed: list[dict[str, Any]] = []
    for item in assign:
        fields = case_insensitive(item) if isinstance(item, dict) else {}
        sku_id, excluded = fields.get("skuid"), fields.get("excludedplans")
        if not isinstance(sku_id, str) or not sku_id.strip():
            return invalid_input("Each license to assign needs a SkuId.", "LicensesToAssign.SkuId")
        if excluded is not None and not (
            isinstance(excluded, list) and all(isinstance(p, str) for p in excluded)
        ):
            return invalid_input(
                "ExcludedPlans must be null or a list of plan ids.", "LicensesToAssign.ExcludedPlans"
            )
        add.append(sku_id.strip())
        echoed.append({"excludedPlans": excluded, "skuId": sku_id.strip()})
    if not all(isinstance(sku_id, str) and sku_id.strip() for sku_id in remove):
        return invalid_input("LicensesToRemove must be a list of SKU ids.", "LicensesToRemove")
    if not add and not remove:
        return invalid_input(
            "The update assigns and removes nothing.", "LicensesToAssign", "LicensesToRemove"
        )
    echo = {
        "licensesToAssign": echoed,
        "licensesToRemove": [sku_id.strip() for sku_id in remove] or None,
        "licenseWarnings": [],
        "attributes": {"objectType": "LicenseUpdate"},
    }
    return add, [sku_id.strip() for sku_id in remove], echo
