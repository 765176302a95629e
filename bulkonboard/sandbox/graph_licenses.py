"""Graph's license routes for customer T under `/graph/T/v1.0`: `GET /subscribedSkus`,
`POST /users/{id}/assignLicense` and `GET /users/{id}/licenseDetails`.

They read and change the same units as Partner Center's `subscribedskus` and `licenseupdates` (`licensing`): a
license assigned through either is one unit, seen by both. Graph has no license groups, so one `assignLicense`
may mix SKUs of several. Documented: the shapes (`skuId`, `skuPartNumber`, `prepaidUnits`, `consumedUnits`;
`addLicenses: [{skuId, disabledPlans}]`, `removeLicenses: [skuId]`, both members required; the answer is the
user) and the usage-location text. The other refusals' texts are the sandbox's own.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .context import CONTEXT
from .graph import bad_request, graph_ok, graph_tenant, not_found, written
from .graph_directory import selected
from .graph_users import find_user, user_write
from .licensing import LicenseRefusal, change_licenses, units_by_status
from .permissions import Action
from .store import LICENSES

METADATA = "https://graph.microsoft.com/v1.0/$metadata"


def routes(prefix: str) -> list[web.RouteDef]:
    tenant = prefix + "/{tenant}/v1.0"
    return [
        web.get(tenant + "/subscribedSkus", subscribed_skus),
        web.post(tenant + "/users/{user}/assignLicense", assign_license),
        web.get(tenant + "/users/{user}/licenseDetails", license_details),
    ]


async def subscribed_skus(request: web.Request) -> web.StreamResponse:
    customer = await graph_tenant(request, Action.READ_LICENSES)
    if isinstance(customer, web.Response):
        return customer
    value = [
        {
            "accountId": customer.id,
            "accountName": customer.name,
            "appliesTo": "User",
            "capabilityStatus": sku.capability_status,
            "consumedUnits": customer.consumed_units(sku.sku_id),
            "id": f"{customer.id}_{sku.sku_id}",
            "prepaidUnits": units_by_status(sku),
            "servicePlans": [],
            "skuId": sku.sku_id,
            "skuPartNumber": sku.sku_part_number,
            "subscriptionIds": [],
        }
        for sku in customer.skus.values()
    ]
    return graph_ok(request, {"@odata.context": f"{METADATA}#subscribedSkus", "value": value})


async def license_details(request: web.Request) -> web.StreamResponse:
    customer = await graph_tenant(request, Action.READ_LICENSES)
    if isinstance(customer, web.Response):
        return customer
    record = find_user(customer, request.match_info["user"])
    if record is None:
        return not_found(request, request.match_info["user"])
    value = []
    for sku_id in record.get(LICENSES, []):
        sku = customer.sku(sku_id)
        if sku is not None:
            # Graph's licenseDetails id is opaque; the sandbox's is the user's id and the SKU's.
            value.append(
                {
                    "id": f"{record['id']}_{sku.sku_id}",
                    "skuId": sku.sku_id,
                    "skuPartNumber": sku.sku_part_number,
                    "servicePlans": [],
                }
            )
    context_url = f"{METADATA}#users('{record['id']}')/licenseDetails"
    return graph_ok(request, {"@odata.context": context_url, "value": value})


async def assign_license(request: web.Request) -> web.StreamResponse:
    opened = await user_write(request, Action.ASSIGN_LICENSES)
    if isinstance(opened, web.Response):
        return opened
    customer, body, fate, record = opened  # from here to the answer: no await, so the last unit goes to one request
    change = read_assignment(body)
    if isinstance(change, str):
        return bad_request(request, change)
    result = change_licenses(customer, record, *change, one_group=False)
    context = request.app[CONTEXT]
    if isinstance(result, LicenseRefusal):
        context.stats.refused += 1
        return bad_request(request, result.message)
    updated = {**record, LICENSES: result}
    context.store.replace(customer, updated)
    context.stats.license_updates += 1
    answer = selected(updated, None)
    assert isinstance(answer, dict)
    return written(request, customer, graph_ok(request, answer), fate)


def read_assignment(body: Any) -> tuple[list[str], list[str]] | str:
    """The SKU ids to add and to remove, or why the body is refused."""
    if not isinstance(body, dict) or "addLicenses" not in body or "removeLicenses" not in body:
        return "The body needs both addLicenses and removeLicenses (either may be an empty list)."
    add_items, remove_items = body["addLicenses"], body["removeLicenses"]
    if not isinstance(add_items, list) or not isinstance(remove_items, list):
        return "addLicenses and removeLicenses must be lists."
    add: list[str] = []
    for item in add_items:
        sku_id = item.get("skuId") if isinstance(item, dict) else None
        plans = item.get("disabledPlans", []) if isinstance(item, dict) else None
        if not isinstance(sku_id, str) or not sku_id.strip():
            return "Each item of addLicenses needs a skuId."
        if plans is not None and not isinstance(plans, list):
            return "disabledPlans must be a list of service plan ids."
        add.append(sku_id.strip())
    if not all(isinstance(sku_id, str) and sku_id.strip() for sku_id in remove_items):
        return "removeLicenses must be a list of SKU ids."
    return add, [sku_id.strip() for sku_id in remove_items]
