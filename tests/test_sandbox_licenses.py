"""Partner Center's license routes in the sandbox over real HTTP: subscribed SKUs and what is available, license
updates (201, 60012 when units run out, one license group, a usage location), a user's licenses, GDAP, replay by
MS-RequestId, and the faults and throttling that touch license updates as they touch creations."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp

from bulkonboard.sandbox import Sandbox, SandboxOptions
from bulkonboard.sandbox.codes import (
    INSUFFICIENT_PRIVILEGES_CODE,
    INVALID_INPUT_CODE,
    LICENSE_GROUPS_MIXED_CODE,
    LICENSE_NOT_ASSIGNABLE_CODE,
    LICENSE_NOT_ASSIGNED_CODE,
    LICENSE_SKU_UNKNOWN_CODE,
    LICENSE_USAGE_LOCATION_CODE,
    NOT_ENOUGH_LICENSES_CODE,
    SERVICE_UNAVAILABLE_CODE,
    USER_NOT_FOUND_CODE,
)

from .sandbox_http import (
    CONTOSO,
    DISCONNECTED,
    E3,
    FLOW,
    JANE,
    MINECRAFT,
    NO_LOCATION,
    NORTHWIND,
    READERS,
    SAM,
    SUSPENDED,
    Start,
    assert_pc_error,
    call,
    license_update,
    licensed_data,
    pc_base,
)


async def _start(start: Start, **options: Any) -> Sandbox:
    return await start(SandboxOptions(**{"seed": 0, **options}), data=licensed_data())


def _user_id(box: Sandbox, upn: str, customer: str = CONTOSO) -> str:
    user = box.store.user_by_upn(customer, upn)
    assert user is not None
    return str(user["id"])


async def _skus(
    http: aiohttp.ClientSession, box: Sandbox, query: str = "", customer: str = CONTOSO
) -> dict[str, Any]:
    status, body, _ = await call(http, "GET", f"{pc_base(box, customer)}/subscribedskus{query}")
    assert status == 200 and body["attributes"] == {"objectType": "Collection"}
    assert body["totalCount"] == len(body["items"])
    return {item["productSku"]["skuPartNumber"]: item for item in body["items"]}


async def _update(
    http: aiohttp.ClientSession,
    box: Sandbox,
    upn: str,
    body: Any,
    request_id: str | None = None,
    customer: str = CONTOSO,
) -> tuple[int, Any, dict[str, str]]:
    headers = {"MS-RequestId": request_id} if request_id else {}
    url = f"{pc_base(box, customer)}/users/{_user_id(box, upn, customer)}/licenseupdates"
    return await call(http, "POST", url, body, headers)


async def _licenses(http: aiohttp.ClientSession, box: Sandbox, upn: str, query: str = "") -> list[str]:
    status, body, _ = await call(http, "GET", f"{pc_base(box)}/users/{_user_id(box, upn)}/licenses{query}")
    assert status == 200 and body["totalCount"] == len(body["items"])
    assert all(item["attributes"] == {"objectType": "License"} for item in body["items"])
    return [item["productSku"]["skuPartNumber"] for item in body["items"]]


async def test_subscribed_skus_in_the_documented_shape_with_the_seeded_licenses_counted(
    start: Start, http: aiohttp.ClientSession
) -> None:
    box = await _start(start)
    skus = await _skus(http, box)
    assert set(skus) == {"ENTERPRISEPACK", "FLOW_FREE", "DEVELOPERPACK"}  # group1 only, by default
    e3 = skus["ENTERPRISEPACK"]
    assert e3["productSku"] == {
        "id": E3,
        "name": "Office 365 E3",
        "skuPartNumber": "ENTERPRISEPACK",
        "targetType": "User",
        "licenseGroupId": "group1",
    }
    assert (e3["totalUnits"], e3["consumedUnits"], e3["availableUnits"], e3["activeUnits"]) == (3, 1, 2, 3)
    assert e3["capabilityStatus"] == "Enabled" and e3["attributes"] == {"objectType": "SubscribedSku"}
    suspended = skus["DEVELOPERPACK"]
    assert suspended["capabilityStatus"] == "Suspended" and suspended["availableUnits"] == 0
    assert suspended["suspendedUnits"] == 10
    both = await _skus(http, box, "?licenseGroupIds=group1&licenseGroupIds=Group2")
    assert set(both) == set(skus) | {"MINECRAFT"}
    assert set(await _skus(http, box, "?licenseGroupIds=group2")) == {"MINECRAFT"}


async def test_an_update_is_201_with_the_update_echoed_and_availability_moves_both_ways(
    start: Start, http: aiohttp.ClientSession
) -> None:
    box = await _start(start)
    status, echoed, _ = await _update(http, box, SAM, license_update(E3, FLOW))
    assert status == 201
    assert echoed == {
        "licensesToAssign": [{"excludedPlans": None, "skuId": E3}, {"excludedPlans": None, "skuId": FLOW}],
        "licensesToRemove": None,
        "licenseWarnings": [],
        "attributes": {"objectType": "LicenseUpdate"},
    }
    assert await _licenses(http, box, SAM) == ["ENTERPRISEPACK", "FLOW_FREE"]
    skus = await _skus(http, box)
    assert (skus["ENTERPRISEPACK"]["availableUnits"], skus["FLOW_FREE"]["consumedUnits"]) == (1, 1)

    status, _, _ = await _update(http, box, SAM, license_update(remove=[E3]))
    assert status == 201
    assert await _licenses(http, box, SAM) == ["FLOW_FREE"]
    assert (await _skus(http, box))["ENTERPRISEPACK"]["availableUnits"] == 2
    assert await _licenses(http, box, JANE) == ["ENTERPRISEPACK"]  # the data file's licenses


async def test_an_assignment_the_user_already_holds_takes_no_second_unit(
    start: Start, http: aiohttp.ClientSession
) -> None:
    box = await _start(start)
    assert (await _update(http, box, JANE, license_update(E3)))[0] == 201
    assert (await _skus(http, box))["ENTERPRISEPACK"]["consumedUnits"] == 1
    assert await _licenses(http, box, JANE) == ["ENTERPRISEPACK"]


async def test_when_units_run_out_it_is_400_with_60012_and_the_detail(
    start: Start, http: aiohttp.ClientSession
) -> None:
    box = await _start(start)
    for n in range(2):
        status, _, _ = await call(http, "POST", f"{pc_base(box)}/users", _pc_user(f"e3.{n}@contoso.com"))
        assert status == 200
        assert (await _update(http, box, f"e3.{n}@contoso.com", license_update(E3)))[0] == 201
    status, body, _ = await _update(http, box, SAM, license_update(E3))
    assert status == 400
    assert_pc_error(body, NOT_ENOUGH_LICENSES_CODE)
    assert body["data"] == [E3] and "ENTERPRISEPACK" in body["description"]
    assert await _licenses(http, box, SAM) == []
    assert (await _skus(http, box))["ENTERPRISEPACK"]["availableUnits"] == 0


async def test_the_last_unit_goes_to_exactly_one_of_many_concurrent_updates(
    start: Start, http: aiohttp.ClientSession
) -> None:
    box = await _start(start)
    upns = [f"race{n}@contoso.com" for n in range(6)]
    for upn in upns:
        assert (await call(http, "POST", f"{pc_base(box)}/users", _pc_user(upn)))[0] == 200
    assert (await _update(http, box, SAM, license_update(E3)))[0] == 201  # 1 unit left
    answers = await asyncio.gather(*(_update(http, box, upn, license_update(E3)) for upn in upns))
    assert sorted(status for status, _, _ in answers) == [201] + [400] * 5
    assert (await _skus(http, box))["ENTERPRISEPACK"]["consumedUnits"] == 3


async def test_refusals_each_in_partner_centers_shape(start: Start, http: aiohttp.ClientSession) -> None:
    box = await _start(start)
    cases: list[tuple[str, Any, int]] = [
        (SAM, license_update(E3, MINECRAFT), LICENSE_GROUPS_MIXED_CODE),
        (NO_LOCATION, license_update(FLOW), LICENSE_USAGE_LOCATION_CODE),
        (SAM, license_update(str(uuid.UUID(int=7))), LICENSE_SKU_UNKNOWN_CODE),
        (SAM, license_update(SUSPENDED), LICENSE_NOT_ASSIGNABLE_CODE),
        (SAM, license_update(remove=[FLOW]), LICENSE_NOT_ASSIGNED_CODE),
        (JANE, license_update(E3, remove=[E3]), LICENSE_NOT_ASSIGNED_CODE),
        (SAM, {"LicensesToAssign": [{"ExcludedPlans": None}]}, INVALID_INPUT_CODE),
        (SAM, license_update(), INVALID_INPUT_CODE),
        (SAM, ["not", "an", "object"], INVALID_INPUT_CODE),
    ]
    for upn, body, code in cases:
        status, answer, _ = await _update(http, box, upn, body)
        assert status == 400, (upn, body)
        assert_pc_error(answer, code)
    status, text, _ = await _update(http, box, NO_LOCATION, license_update(FLOW))
    assert "usage location" in text["description"]
    assert (await _skus(http, box))["FLOW_FREE"]["consumedUnits"] == 0 and box.stats.license_updates == 0
    missing = f"{pc_base(box)}/users/{uuid.uuid4()}/licenseupdates"
    status, answer, _ = await call(http, "POST", missing, license_update(FLOW))
    assert status == 404
    assert_pc_error(answer, USER_NOT_FOUND_CODE)


async def test_a_replayed_request_id_gets_the_same_answer_and_changes_nothing_more(
    start: Start, http: aiohttp.ClientSession
) -> None:
    box = await _start(start)
    request_id = str(uuid.uuid4())
    first = await _update(http, box, SAM, license_update(FLOW), request_id)
    await _update(http, box, SAM, license_update(remove=[FLOW]), str(uuid.uuid4()))
    again = await _update(http, box, SAM, license_update(FLOW), request_id)
    assert first[:2] == again[:2] and first[0] == 201
    assert await _licenses(http, box, SAM) == []  # the replay did not assign it again
    assert box.stats.replays == 1 and box.stats.license_updates == 2
    refused_id = str(uuid.uuid4())
    refused = await _update(http, box, SAM, license_update(SUSPENDED), refused_id)
    assert (
        refused[0] == 400
        and (await _update(http, box, SAM, license_update(SUSPENDED), refused_id))[:2] == refused[:2]
    )


async def test_gdap_license_administrator_assigns_and_reads_a_reader_cannot_assign(
    start: Start, http: aiohttp.ClientSession
) -> None:
    box = await _start(start)
    nancy = "nancy@northwind.onmicrosoft.com"
    assert (await _update(http, box, nancy, license_update(E3), customer=NORTHWIND))[0] == 201
    assert (await _skus(http, box, customer=NORTHWIND))["ENTERPRISEPACK"]["availableUnits"] == 1
    status, body, _ = await _update(
        http, box, "rita@readers.onmicrosoft.com", license_update(E3), customer=READERS
    )
    assert status == 403
    assert_pc_error(body, INSUFFICIENT_PRIVILEGES_CODE)
    assert (await _skus(http, box, customer=READERS))["ENTERPRISEPACK"]["consumedUnits"] == 0  # readers read
    # License Administrator alone may not create users
    status, body, _ = await call(
        http, "POST", f"{pc_base(box, NORTHWIND)}/users", _pc_user("x@northwind.onmicrosoft.com")
    )
    assert status == 403


async def test_fail_rate_answers_503_and_assigns_nothing(start: Start, http: aiohttp.ClientSession) -> None:
    box = await _start(start, fail_rate=1.0)
    status, body, _ = await _update(http, box, SAM, license_update(FLOW), str(uuid.uuid4()))
    assert status == 503
    assert_pc_error(body, SERVICE_UNAVAILABLE_CODE)
    assert box.store.user_by_upn(CONTOSO, SAM).get("licenses") is None  # type: ignore[union-attr]


async def test_drop_rate_assigns_then_hangs_up_and_the_replay_gets_the_lost_201(
    start: Start, http: aiohttp.ClientSession
) -> None:
    box = await _start(start, drop_rate=1.0)
    request_id = str(uuid.uuid4())
    try:
        await _update(http, box, SAM, license_update(E3), request_id)
        raise AssertionError("the answer should have been dropped")
    except DISCONNECTED:
        pass
    assert box.stats.dropped == 1
    assert box.store.user_by_upn(CONTOSO, SAM)["licenses"] == [E3]  # type: ignore[index]
    status, body, _ = await _update(http, box, SAM, license_update(E3), request_id)
    assert status == 201 and body["licensesToAssign"] == [{"excludedPlans": None, "skuId": E3}]
    assert (await _skus(http, box))["ENTERPRISEPACK"]["consumedUnits"] == 2  # jane + sam, once


async def test_faults_repeat_with_the_seed_across_creates_and_license_updates(
    start: Start, http: aiohttp.ClientSession
) -> None:
    async def run() -> list[int | str]:
        box = await _start(start, seed=3, fail_rate=0.4)
        outcomes: list[int | str] = []
        for n in range(12):
            upn = f"seq{n}@contoso.com"
            outcomes.append((await call(http, "POST", f"{pc_base(box)}/users", _pc_user(upn)))[0])
            if outcomes[-1] == 200:
                outcomes.append((await _update(http, box, upn, license_update(FLOW)))[0])
        return outcomes

    first = await run()
    assert {201, 503} <= set(first) and first == await run()


async def test_license_updates_are_throttled_like_creations(
    start: Start, http: aiohttp.ClientSession
) -> None:
    box = await start(SandboxOptions(seed=0, rate_limit=(2, 60.0)), data=licensed_data(), clock=lambda: 0.0)
    assert (await call(http, "POST", f"{pc_base(box)}/users", _pc_user("t@contoso.com")))[0] == 200
    assert (await _update(http, box, SAM, license_update(FLOW)))[0] == 201
    status, body, headers = await _update(http, box, "t@contoso.com", license_update(FLOW))
    assert status == 429 and headers["Retry-After"] == "60"
    assert body == {"statusCode": 429, "message": "Rate limit is exceeded. Try again in 60 seconds."}
    assert (await _licenses(http, box, SAM)) == ["FLOW_FREE"]  # reads are not counted
    assert box.store.user_by_upn(CONTOSO, "t@contoso.com").get("licenses") is None  # type: ignore[union-attr]


def _pc_user(upn: str) -> dict[str, Any]:
    return {
        "userPrincipalName": upn,
        "displayName": "Licensed Hire",
        "usageLocation": "US",
        "passwordProfile": {"password": "Qx7!vLm#93zR", "forceChangePassword": True},
        "attributes": {"objectType": "CustomerUser"},
    }
