"""Graph's license routes in the sandbox over real HTTP, and the units they share with Partner Center's: a license
assigned through either door is one unit, seen through both."""

from __future__ import annotations

import uuid
from typing import Any

import aiohttp

from bulkonboard.sandbox import Sandbox, SandboxOptions

from .sandbox_http import (
    CONTOSO,
    E3,
    FLOW,
    JANE,
    MINECRAFT,
    NO_LOCATION,
    SAM,
    SUSPENDED,
    Start,
    assert_graph_error,
    call,
    graph_base,
    license_update,
    licensed_data,
    pc_base,
)


async def _start(start: Start) -> Sandbox:
    return await start(SandboxOptions(seed=0), data=licensed_data())


def _assign(*add: str, remove: list[str] | None = None) -> dict[str, Any]:
    return {
        "addLicenses": [{"skuId": sku_id, "disabledPlans": []} for sku_id in add],
        "removeLicenses": remove or [],
    }


async def _graph_skus(http: aiohttp.ClientSession, box: Sandbox) -> dict[str, Any]:
    status, body, _ = await call(http, "GET", f"{graph_base(box)}/subscribedSkus")
    assert status == 200
    return {sku["skuPartNumber"]: sku for sku in body["value"]}


async def _details(http: aiohttp.ClientSession, box: Sandbox, user: str) -> list[str]:
    status, body, _ = await call(http, "GET", f"{graph_base(box)}/users/{user}/licenseDetails")
    assert status == 200
    return [detail["skuPartNumber"] for detail in body["value"]]


async def test_subscribed_skus_in_graphs_shape(start: Start, http: aiohttp.ClientSession) -> None:
    box = await _start(start)
    skus = await _graph_skus(http, box)
    assert set(skus) == {
        "ENTERPRISEPACK",
        "FLOW_FREE",
        "MINECRAFT",
        "DEVELOPERPACK",
    }  # no license groups in Graph
    e3 = skus["ENTERPRISEPACK"]
    assert (e3["skuId"], e3["consumedUnits"], e3["capabilityStatus"], e3["appliesTo"]) == (
        E3,
        1,
        "Enabled",
        "User",
    )
    assert e3["prepaidUnits"] == {"enabled": 3, "lockedOut": 0, "suspended": 0, "warning": 0}
    assert skus["DEVELOPERPACK"]["prepaidUnits"]["suspended"] == 10


async def test_assign_license_answers_the_user_and_counts_the_units_partner_center_counts(
    start: Start, http: aiohttp.ClientSession
) -> None:
    box = await _start(start)
    base = graph_base(box)
    status, user, _ = await call(http, "POST", f"{base}/users/{SAM}/assignLicense", _assign(E3, MINECRAFT))
    assert status == 200 and user["userPrincipalName"] == SAM  # Graph mixes license groups freely
    assert await _details(http, box, SAM) == ["ENTERPRISEPACK", "MINECRAFT"]
    status, pc_skus, _ = await call(http, "GET", f"{pc_base(box)}/subscribedskus")
    e3 = next(item for item in pc_skus["items"] if item["productSku"]["id"] == E3)
    assert (e3["consumedUnits"], e3["availableUnits"]) == (2, 1)

    sam = box.store.user_by_upn(CONTOSO, SAM)
    assert sam is not None
    status, _, _ = await call(
        http, "POST", f"{pc_base(box)}/users/{sam['id']}/licenseupdates", license_update(FLOW)
    )
    assert status == 201
    assert await _details(http, box, sam["id"]) == ["ENTERPRISEPACK", "MINECRAFT", "FLOW_FREE"]
    assert (await _graph_skus(http, box))["FLOW_FREE"]["consumedUnits"] == 1
    status, _, _ = await call(http, "POST", f"{base}/users/{SAM}/assignLicense", _assign(remove=[E3, FLOW]))
    assert status == 200 and await _details(http, box, SAM) == ["MINECRAFT"]
    status, pc_licenses, _ = await call(
        http,
        "GET",
        f"{pc_base(box)}/users/{sam['id']}/licenses?licenseGroupIds=group1&licenseGroupIds=group2",
    )
    assert [item["productSku"]["skuPartNumber"] for item in pc_licenses["items"]] == ["MINECRAFT"]


async def test_units_that_run_out_through_one_door_are_out_through_the_other(
    start: Start, http: aiohttp.ClientSession
) -> None:
    box = await _start(start)
    base = graph_base(box)
    for upn in ("a@contoso.com", "b@contoso.com"):
        body = {
            "accountEnabled": True,
            "displayName": upn,
            "mailNickname": upn.partition("@")[0],
            "userPrincipalName": upn,
            "passwordProfile": {"password": "Qx7!vLm#93zR"},
            "usageLocation": "FR",
        }
        assert (await call(http, "POST", f"{base}/users", body))[0] == 201
    assert (await call(http, "POST", f"{base}/users/a@contoso.com/assignLicense", _assign(E3)))[0] == 200
    b = box.store.user_by_upn(CONTOSO, "b@contoso.com")
    assert b is not None
    url = f"{pc_base(box)}/users/{b['id']}/licenseupdates"
    assert (await call(http, "POST", url, license_update(E3)))[0] == 201  # the third and last unit
    status, body, _ = await call(http, "POST", f"{base}/users/{SAM}/assignLicense", _assign(E3))
    assert status == 400 and E3 in assert_graph_error(body, "Request_BadRequest")
    assert (await _graph_skus(http, box))["ENTERPRISEPACK"]["consumedUnits"] == 3


async def test_assign_license_refusals_in_graphs_shape(start: Start, http: aiohttp.ClientSession) -> None:
    box = await _start(start)
    base = graph_base(box)
    status, body, _ = await call(http, "POST", f"{base}/users/{NO_LOCATION}/assignLicense", _assign(FLOW))
    assert status == 400
    assert assert_graph_error(body, "Request_BadRequest") == (
        "License assignment cannot be done for user with invalid usage location."
    )
    refused: list[dict[str, Any]] = [
        _assign(str(uuid.uuid4())),
        _assign(SUSPENDED),
        _assign(remove=[FLOW]),
        {"addLicenses": [{"skuId": FLOW}]},  # removeLicenses is required
        {"addLicenses": [{"disabledPlans": []}], "removeLicenses": []},
    ]
    for sent in refused:
        status, body, _ = await call(http, "POST", f"{base}/users/{SAM}/assignLicense", sent)
        assert status == 400, sent
        assert_graph_error(body, "Request_BadRequest")
    status, body, _ = await call(http, "POST", f"{base}/users/{uuid.uuid4()}/assignLicense", _assign(FLOW))
    assert status == 404 and assert_graph_error(body, "Request_ResourceNotFound")
    assert await _details(http, box, SAM) == [] and await _details(http, box, JANE) == ["ENTERPRISEPACK"]
    assert box.stats.license_updates == 0
