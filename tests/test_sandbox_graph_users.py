"""Graph's user routes in the sandbox over real HTTP: create with the whole profile, read by id or UPN with
`$select`, PATCH, the manager, Graph's error shape, no idempotency key, and one directory shared with Partner
Center (a user made through either is seen through both)."""

from __future__ import annotations

import uuid
from typing import Any

import aiohttp
import pytest

from bulkonboard.sandbox import DUPLICATE_UPN_TEXT, Sandbox, SandboxOptions

from .sandbox_http import (
    CONTOSO,
    JANE,
    PASSWORD,
    READERS,
    SAM,
    Start,
    assert_graph_error,
    call,
    graph_base,
    graph_new_user,
    licensed_data,
    new_user,
    pc_base,
)

PROFILE = {
    "givenName": "Ada",
    "surname": "Lovelace",
    "jobTitle": "Analyst",
    "department": "Engineering",
    "officeLocation": "Building 7, 2nd floor",
    "companyName": "Contoso Ltd",
    "employeeId": "E-000123",
    "employeeType": "Contractor",
    "employeeHireDate": "2026-12-01T00:00:00Z",
    "mobilePhone": "+44 7700 900123",
    "businessPhones": ["+44 20 7946 0958"],
    "streetAddress": "1 Analytical Way",
    "city": "London",
    "state": "Greater London",
    "postalCode": "EC1A 1BB",
    "country": "United Kingdom",
    "preferredLanguage": "en-GB",
}


async def _start(start: Start, **options: Any) -> Sandbox:
    return await start(SandboxOptions(**{"seed": 0, **options}), data=licensed_data())


async def _create(
    http: aiohttp.ClientSession, box: Sandbox, upn: str, **changes: Any
) -> tuple[int, Any, dict[str, str]]:
    return await call(http, "POST", f"{graph_base(box)}/users", graph_new_user(upn, **changes))


async def test_a_user_created_with_the_whole_profile_reads_back_exactly_as_sent(
    start: Start, http: aiohttp.ClientSession
) -> None:
    box = await _start(start)
    status, created, _ = await _create(http, box, "ada@contoso.com", **PROFILE)
    assert status == 201 and created["userPrincipalName"] == "ada@contoso.com"
    assert "passwordProfile" not in created and PASSWORD not in str(created)
    select = ",".join([*PROFILE, "mailNickname", "accountEnabled", "usageLocation"])
    for wanted in (created["id"], "ADA@contoso.com"):
        status, read, _ = await call(http, "GET", f"{graph_base(box)}/users/{wanted}?$select={select}")
        assert status == 200
        assert {name: read[name] for name in PROFILE} == PROFILE
        assert (read["mailNickname"], read["accountEnabled"], read["usageLocation"]) == ("ada", True, "US")
        assert set(read) == {"@odata.context", *PROFILE, "mailNickname", "accountEnabled", "usageLocation"}
    status, default, _ = await call(http, "GET", f"{graph_base(box)}/users/{created['id']}")
    assert "department" not in default and default["jobTitle"] == "Analyst"  # Graph's default set


async def test_graph_refuses_what_graph_refuses_in_its_error_shape(
    start: Start, http: aiohttp.ClientSession
) -> None:
    box = await _start(start)
    cases: list[dict[str, Any]] = [
        {"mailNickname": None},
        {"accountEnabled": "yes"},
        {"employeeId": "E" * 17},
        {"businessPhones": ["+1 555 0100", "+1 555 0101"]},
        {"employeeHireDate": "2026-12-01"},
        {"usageLocation": "ZZ"},
        {"favouriteColour": "blue"},
        {"passwordProfile": {"password": "short"}},
        {"userPrincipalName": "x@unknown.example"},
        {"userPrincipalName": "fed@fabrikam.com"},
    ]
    for changes in cases:
        status, body, _ = await _create(http, box, "refused@contoso.com", **changes)
        assert status == 400, changes
        assert_graph_error(body, "Request_BadRequest")
    assert box.store.user_by_upn(CONTOSO, "refused@contoso.com") is None
    status, body, _ = await _create(http, box, "fed@fabrikam.com", onPremisesImmutableId="aW1tdXRhYmxl")
    assert status == 201  # Graph creates a federated user that carries an immutable id
    status, body, _ = await call(http, "GET", f"{graph_base(box)}/users/{uuid.uuid4()}")
    assert status == 404 and assert_graph_error(body, "Request_ResourceNotFound")
    status, body, _ = await call(http, "GET", f"{graph_base(box)}/users/{JANE}?$select=id,nonsense")
    assert status == 400 and "nonsense" in assert_graph_error(body, "Request_BadRequest")


async def test_a_duplicate_upn_is_graphs_400_whichever_api_made_the_first(
    start: Start, http: aiohttp.ClientSession
) -> None:
    box = await _start(start)
    assert (await call(http, "POST", f"{pc_base(box)}/users", new_user("pc.made@contoso.com")))[0] == 200
    for upn in ("PC.Made@contoso.com", JANE):
        status, body, _ = await _create(http, box, upn)
        assert status == 400 and assert_graph_error(body, "Request_BadRequest") == DUPLICATE_UPN_TEXT
        assert body["error"]["details"] == [
            {"code": "ObjectConflict", "message": DUPLICATE_UPN_TEXT, "target": "userPrincipalName"}
        ]


async def test_graph_has_no_idempotency_key_so_a_repeated_create_is_a_duplicate(
    start: Start, http: aiohttp.ClientSession
) -> None:
    box = await _start(start)
    same = {"MS-RequestId": str(uuid.uuid4()), "client-request-id": str(uuid.uuid4())}
    url = f"{graph_base(box)}/users"
    first = await call(http, "POST", url, graph_new_user("once@contoso.com"), same)
    second = await call(http, "POST", url, graph_new_user("once@contoso.com"), same)
    assert first[0] == 201 and second[0] == 400
    assert assert_graph_error(second[1], "Request_BadRequest") == DUPLICATE_UPN_TEXT
    other = await call(http, "POST", url, graph_new_user("twice@contoso.com"), same)
    assert other[0] == 201 and other[1]["id"] != first[1]["id"]  # the same ids do not replay an answer
    assert box.stats.replays == 0 and box.stats.creations == 2


async def test_one_directory_a_user_made_either_way_is_seen_both_ways(
    start: Start, http: aiohttp.ClientSession
) -> None:
    box = await _start(start)
    status, made, _ = await call(
        http, "POST", f"{pc_base(box)}/users", new_user("pc@contoso.com", firstName="Pat")
    )
    assert status == 200
    status, seen, _ = await call(
        http, "GET", f"{graph_base(box)}/users/pc@contoso.com?$select=id,givenName,mailNickname"
    )
    assert status == 200 and (seen["id"], seen["givenName"], seen["mailNickname"]) == (
        made["id"],
        "Pat",
        "pc",
    )

    status, created, _ = await _create(http, box, "graph@contoso.com", givenName="Gus", jobTitle="Chef")
    status, listed, _ = await call(http, "GET", f"{pc_base(box)}/users")
    items = {item["userPrincipalName"]: item for item in listed["items"]}
    assert (
        items["graph@contoso.com"]["id"] == created["id"] and items["graph@contoso.com"]["firstName"] == "Gus"
    )
    status, one, _ = await call(http, "GET", f"{pc_base(box)}/users/{created['id']}")
    for answer in (items["graph@contoso.com"], one):  # Partner Center's CustomerUser: no Graph-only fields
        assert not {"profile", "licenses", "managerId", "jobTitle"} & set(answer)
    assert one["passwordProfile"] == {"forceChangePassword": True}


async def test_patch_sets_and_clears_the_profile_and_reads_back(
    start: Start, http: aiohttp.ClientSession
) -> None:
    box = await _start(start)
    user = box.store.user_by_upn(CONTOSO, SAM)
    assert user is not None
    url = f"{graph_base(box)}/users/{user['id']}"
    status, body, _ = await call(http, "PATCH", url, {**PROFILE, "displayName": "Samuel Lee"})
    assert status == 204 and body is None
    select = ",".join([*PROFILE, "displayName"])
    status, read, _ = await call(http, "GET", f"{url}?$select={select}")
    assert {name: read[name] for name in PROFILE} == PROFILE and read["displayName"] == "Samuel Lee"
    assert (await call(http, "PATCH", url, {"jobTitle": None, "businessPhones": []}))[0] == 204
    status, read, _ = await call(http, "GET", f"{url}?$select=jobTitle,businessPhones,city")
    assert (read["jobTitle"], read["businessPhones"], read["city"]) == (None, [], "London")
    status, pc_user, _ = await call(http, "GET", f"{pc_base(box)}/users/{user['id']}")
    assert pc_user["displayName"] == "Samuel Lee" and pc_user["lastName"] == "Lovelace"  # surname, shared

    jane_url = f"{graph_base(box)}/users/{JANE}"
    status, body, _ = await call(http, "PATCH", jane_url, {"usageLocation": None})  # jane holds a license
    assert status == 400 and "usage location" in assert_graph_error(body, "Request_BadRequest")
    for bad in ({"employeeId": "E" * 17}, {"userPrincipalName": "renamed@contoso.com"}, {"nope": 1}):
        status, body, _ = await call(http, "PATCH", url, bad)
        assert status == 400 and assert_graph_error(body, "Request_BadRequest")
    status, body, _ = await call(http, "PATCH", f"{graph_base(box)}/users/{uuid.uuid4()}", {"city": "Oslo"})
    assert status == 404 and assert_graph_error(body, "Request_ResourceNotFound")


async def test_the_manager_is_set_by_reference_and_read_back(
    start: Start, http: aiohttp.ClientSession
) -> None:
    box = await _start(start)
    base = graph_base(box)
    status, boss, _ = await _create(http, box, "boss@contoso.com")
    status, report, _ = await _create(http, box, "report@contoso.com")
    reference = {"@odata.id": f"https://graph.microsoft.com/v1.0/users/{boss['id']}"}
    status, body, _ = await call(http, "PUT", f"{base}/users/{report['id']}/manager/$ref", reference)
    assert status == 204 and body is None
    status, manager, _ = await call(http, "GET", f"{base}/users/{report['id']}/manager")
    assert (
        status == 200 and manager["id"] == boss["id"] and manager["userPrincipalName"] == "boss@contoso.com"
    )
    assert manager["@odata.type"] == "#microsoft.graph.user"
    status, seeded, _ = await call(
        http, "GET", f"{base}/users/{SAM}/manager"
    )  # `manager = "upn"` in the data file
    assert status == 200 and seeded["userPrincipalName"] == JANE

    status, body, _ = await call(http, "GET", f"{base}/users/{boss['id']}/manager")
    assert status == 404 and assert_graph_error(body, "Request_ResourceNotFound")
    refusals = [
        (
            {"@odata.id": f"https://graph.microsoft.com/v1.0/users/{uuid.uuid4()}"},
            404,
            "Request_ResourceNotFound",
        ),
        ({"@odata.id": f"https://graph.microsoft.com/v1.0/users/{report['id']}"}, 400, "Request_BadRequest"),
        ({"manager": boss["id"]}, 400, "Request_BadRequest"),
    ]
    for body_sent, code, error in refusals:
        status, body, _ = await call(http, "PUT", f"{base}/users/{report['id']}/manager/$ref", body_sent)
        assert status == code and assert_graph_error(body, error)
    status, still, _ = await call(http, "GET", f"{base}/users/{report['id']}/manager")
    assert still["id"] == boss["id"]


@pytest.mark.parametrize(
    "method,path,body",
    [
        ("POST", "/users", graph_new_user("no@readers.onmicrosoft.com")),
        ("PATCH", "/users/rita@readers.onmicrosoft.com", {"city": "Oslo"}),
        ("PUT", "/users/rita@readers.onmicrosoft.com/manager/$ref", {"@odata.id": "x/users/y"}),
    ],
)
async def test_a_reader_cannot_write_through_graph(
    start: Start, http: aiohttp.ClientSession, method: str, path: str, body: Any
) -> None:
    box = await _start(start)
    status, answer, _ = await call(http, method, f"{graph_base(box, READERS)}{path}", body)
    assert status == 403 and assert_graph_error(answer, "Authorization_RequestDenied")
    assert (await call(http, "GET", f"{graph_base(box, READERS)}/users/rita@readers.onmicrosoft.com"))[
        0
    ] == 200
