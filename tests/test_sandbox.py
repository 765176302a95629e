"""The sandbox over real HTTP on loopback: every route, every refusal, paging, replay, faults, Graph, auth, state.

Each test starts its own in-process Sandbox on 127.0.0.1 port 0 and talks to it with aiohttp, so what is checked
is what a client sees on the wire (status, body shape, headers), plus the store behind it (what was created).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bulkonboard.sandbox import (
    DUPLICATE_UPN_CODE,
    DUPLICATE_UPN_TEXT,
    GRAPH_AUDIENCE,
    PARTNER_CENTER_AUDIENCE,
    Sandbox,
    SandboxDataError,
    SandboxOptions,
    parse_data,
)
from bulkonboard.sandbox.codes import (
    DOMAIN_FEDERATED_CODE,
    DOMAIN_UNKNOWN_CODE,
    IMMUTABLE_ID_INVALID_CODE,
    INVALID_INPUT_CODE,
    PASSWORD_WEAK_CODE,
    SERVICE_UNAVAILABLE_CODE,
    TENANT_NOT_FOUND_CODE,
    TOKEN_MISSING_CODE,
    UPN_INVALID_CODE,
    USAGE_LOCATION_INVALID_CODE,
    USER_NOT_FOUND_CODE,
)
from bulkonboard.sandbox.state import read_state

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "sandbox.toml"
CONTOSO = "3c9a8f12-5e6b-4c1d-9a7e-2f4b8d6c1e90"
NORTHWIND = "7d2e4b61-0c3a-4f8e-b5d9-1a6c3e8f2b47"
PASSWORD = "Qx7!vLm#93zR"  # distinctive, so a leak anywhere is unmistakable
AUTH = {"Authorization": "Bearer sandbox"}
DISCONNECTED = (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError)

Start = Callable[..., Awaitable[Sandbox]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    """Start sandboxes on port 0; every one is stopped at the end, whatever the test did."""
    started: list[Sandbox] = []

    async def _start(options: SandboxOptions | None = None, data: Any = SAMPLE, **kwargs: Any) -> Sandbox:
        box = Sandbox(data, options or SandboxOptions(seed=0), **kwargs)
        await box.start()
        started.append(box)
        return box

    yield _start
    for box in started:
        await box.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def new_user(upn: str = "new.hire@contoso.com", **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "usageLocation": "US",
        "userPrincipalName": upn,
        "firstName": "New",
        "lastName": "Hire",
        "displayName": "New Hire",
        "passwordProfile": {"password": PASSWORD, "forceChangePassword": True},
        "attributes": {"objectType": "CustomerUser"},
    }
    body.update(changes)
    return body


async def post_user(
    http: aiohttp.ClientSession,
    box: Sandbox,
    body: Any,
    request_id: str | None = None,
    customer: str = CONTOSO,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, dict[str, str]]:
    sent = {**AUTH, "MS-CorrelationId": "corr-1"}
    if request_id is not None:
        sent["MS-RequestId"] = request_id
    sent.update(headers or {})
    kwargs: dict[str, Any] = {"data": body} if isinstance(body, (str, bytes)) else {"json": body}
    async with http.post(f"{box.url}/v1/customers/{customer}/users", headers=sent, **kwargs) as response:
        text = await response.text()
        return response.status, (json.loads(text) if text else None), dict(response.headers)


async def get_json(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    async with http.get(url, headers={**AUTH, **(headers or {})}) as response:
        text = await response.text()
        return response.status, (json.loads(text) if text else None)


def assert_pc_error(body: Any, code: int) -> None:
    """Partner Center's error shape: `data` only when there is some detail (never `[]`)."""
    assert {"code", "description", "source"} <= set(body) <= {"code", "description", "data", "source"}
    assert body["code"] == code and body["source"] == "PartnerFD"
    assert isinstance(body["description"], str) and 0 < len(body["description"]) <= 1024
    if "data" in body:
        assert isinstance(body["data"], list) and body["data"]


# ---------------------------------------------------------------------------------------------------------------
# Partner Center: customers and users


async def test_customer_profile_reports_the_initial_domain(start: Start, http: aiohttp.ClientSession) -> None:
    box = await start()
    status, contoso = await get_json(http, f"{box.url}/v1/customers/{CONTOSO}")
    _, northwind = await get_json(http, f"{box.url}/v1/customers/{NORTHWIND.upper()}")  # GUIDs ignore case
    assert status == 200
    assert contoso["id"] == CONTOSO and contoso["attributes"] == {"objectType": "Customer"}
    assert contoso["companyProfile"]["domain"] == "contoso.onmicrosoft.com"
    assert contoso["companyProfile"]["tenantId"] == CONTOSO
    assert contoso["companyProfile"]["companyName"] == "Contoso"
    assert northwind["companyProfile"]["domain"] == "northwind.onmicrosoft.com"


@pytest.mark.parametrize(
    "method,suffix", [("GET", ""), ("GET", "/users"), ("POST", "/users"), ("GET", "/users/x")]
)
async def test_unknown_customer_is_404_60003(
    start: Start, http: aiohttp.ClientSession, method: str, suffix: str
) -> None:
    box = await start()
    unknown = str(uuid.UUID(int=42))
    async with http.request(
        method, f"{box.url}/v1/customers/{unknown}{suffix}", headers=AUTH, json=new_user()
    ) as response:
        body = await response.json()
    assert response.status == 404
    assert_pc_error(body, TENANT_NOT_FOUND_CODE)


async def test_create_answers_200_with_the_documented_user(start: Start, http: aiohttp.ClientSession) -> None:
    box = await start()
    status, created, _ = await post_user(http, box, new_user(immutableId="000123"))
    assert status == 200
    assert uuid.UUID(created["id"])
    assert created["state"] == "active" and created["userDomainType"] == "none"  # as the documented answer
    assert created["softDeletionTime"] is None and created["lastDirectorySyncTime"] is None
    assert created["attributes"] == {"objectType": "CustomerUser"}
    for name in ("userPrincipalName", "firstName", "lastName", "displayName", "usageLocation"):
        assert created[name] == new_user()[name]
    assert created["immutableId"] == "000123"
    # the documented answer echoes the password: faithful, once
    assert created["passwordProfile"] == {"password": PASSWORD, "forceChangePassword": True}

    status, fetched = await get_json(http, f"{box.url}/v1/customers/{CONTOSO}/users/{created['id']}")
    stored = box.store.user_by_upn(CONTOSO, "NEW.HIRE@contoso.com")
    assert status == 200 and stored is not None
    self_uri = f"/customers/{CONTOSO}/users/{created['id']}"
    assert fetched.pop("links") == {"self": {"uri": self_uri, "method": "GET", "headers": []}}
    assert fetched == stored
    assert fetched["passwordProfile"] == {"forceChangePassword": True}
    assert {k: v for k, v in created.items() if k != "passwordProfile"} == {
        k: v for k, v in fetched.items() if k != "passwordProfile"
    }
    assert PASSWORD not in json.dumps(box.store.users(CONTOSO))
    assert box.stats.creations == 1


async def test_body_members_bind_case_insensitively(start: Start, http: aiohttp.ClientSession) -> None:
    """Partner Center is .NET: `UserPrincipalName` binds like `userPrincipalName`; UPN domains ignore case too."""
    box = await start()
    body = {
        "UserPrincipalName": "Mixed.Case@CONTOSO.COM",
        "DisplayName": "Mixed Case",
        "UsageLocation": "gb",
        "PasswordProfile": {"Password": PASSWORD},
    }
    status, created, _ = await post_user(http, box, body)
    assert status == 200, created
    assert created["userPrincipalName"] == "Mixed.Case@CONTOSO.COM"
    assert created["usageLocation"] == "gb"  # stored as sent
    assert "passwordProfile" in created and "forceChangePassword" not in created["passwordProfile"]


async def test_unknown_user_is_404_60002(start: Start, http: aiohttp.ClientSession) -> None:
    box = await start()
    status, body = await get_json(http, f"{box.url}/v1/customers/{CONTOSO}/users/{uuid.UUID(int=7)}")
    assert status == 404
    assert_pc_error(body, USER_NOT_FOUND_CODE)


async def test_seeded_users_have_stable_ids(start: Start, http: aiohttp.ClientSession) -> None:
    first = await start()
    second = await start()
    one = first.store.user_by_upn(CONTOSO, "jane.doe@contoso.com")
    other = second.store.user_by_upn(CONTOSO, "jane.doe@contoso.com")
    assert one is not None and other is not None and one["id"] == other["id"]
    status, fetched = await get_json(http, f"{first.url}/v1/customers/{CONTOSO}/users/{one['id']}")
    assert status == 200 and fetched["displayName"] == "Jane Doe" and fetched["usageLocation"] == "US"


# ---------------------------------------------------------------------------------------------------------------
# Paging


def _many_users_data(count: int) -> Any:
    users = "\n".join(
        f'[[customers.users]]\nuserPrincipalName = "user{i:03d}@contoso.com"\ndisplayName = "User {i}"\nusageLocation = "US"\n'
        for i in range(count)
    )
    text = SAMPLE.read_text(encoding="utf-8")
    head, _, tail = text.partition('[[customers]]\nid = "7d2e')  # put the users under Contoso
    return parse_data(head + users + '\n[[customers]]\nid = "7d2e' + tail)


async def _all_pages(http: aiohttp.ClientSession, box: Sandbox, first_url: str) -> list[dict[str, Any]]:
    pages: list[dict[str, Any]] = []
    status, page = await get_json(http, first_url)
    assert status == 200
    pages.append(page)
    while "next" in page["links"]:
        link = page["links"]["next"]
        assert link["method"] == "GET" and link["uri"].startswith(f"/customers/{CONTOSO}/users?")
        headers = {h["key"]: h["value"] for h in link["headers"]}
        assert set(headers) == {"MS-ContinuationToken"}
        status, page = await get_json(http, f"{box.url}/v1{link['uri']}", headers=headers)
        assert status == 200
        pages.append(page)
        assert len(pages) < 100, "paging does not end"
    return pages


async def test_paging_walks_every_user_once(start: Start, http: aiohttp.ClientSession) -> None:
    box = await start(SandboxOptions(page_size=7), data=_many_users_data(248))  # + jane and wei = 250
    pages = await _all_pages(http, box, f"{box.url}/v1/customers/{CONTOSO}/users")
    upns = [item["userPrincipalName"] for page in pages for item in page["items"]]
    assert len(pages) == 36  # 250 / 7, rounded up
    assert all(len(page["items"]) == 7 for page in pages[:-1]) and len(pages[-1]["items"]) == 250 - 35 * 7
    assert all(page["totalCount"] == len(page["items"]) for page in pages)
    assert all(page["attributes"] == {"objectType": "Collection"} for page in pages)
    assert len(upns) == len(set(upns)) == 250
    assert set(upns) == {u["userPrincipalName"] for u in box.store.users(CONTOSO)}


async def test_listing_never_shows_a_password_and_skips_deleted_users(
    start: Start, http: aiohttp.ClientSession
) -> None:
    box = await start(SandboxOptions(page_size=2))
    status, created, _ = await post_user(http, box, new_user())
    assert status == 200
    jane = box.store.user_by_upn(CONTOSO, "jane.doe@contoso.com")
    assert jane is not None
    async with http.delete(f"{box.url}/v1/customers/{CONTOSO}/users/{jane['id']}", headers=AUTH) as response:
        assert response.status == 204
    pages = await _all_pages(http, box, f"{box.url}/v1/customers/{CONTOSO}/users")
    listed = [item for page in pages for item in page["items"]]
    assert [u["userPrincipalName"] for u in listed] == ["wei.zhang@contoso.com", "new.hire@contoso.com"]
    assert PASSWORD not in json.dumps(pages) and "password" not in _keys(pages)
    assert all("passwordProfile" not in item for item in listed)  # list items carry none, as documented


def _keys(value: Any) -> set[str]:
    """Every key anywhere in a JSON value, lower-cased."""
    if isinstance(value, dict):
        return {str(k).lower() for k in value} | set().union(*(_keys(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_keys(v) for v in value))
    return set()


async def test_users_created_while_paging_show_up_on_a_later_page(
    start: Start, http: aiohttp.ClientSession
) -> None:
    box = await start(SandboxOptions(page_size=1))
    status, first = await get_json(http, f"{box.url}/v1/customers/{CONTOSO}/users")
    assert status == 200 and [u["userPrincipalName"] for u in first["items"]] == ["jane.doe@contoso.com"]
    await post_user(http, box, new_user())
    link = first["links"]["next"]
    rest = [first]
    headers = {h["key"]: h["value"] for h in link["headers"]}
    status, page = await get_json(http, f"{box.url}/v1{link['uri']}", headers=headers)
    rest.append(page)
    while "next" in page["links"]:
        link = page["links"]["next"]
        status, page = await get_json(
            http, f"{box.url}/v1{link['uri']}", headers={h["key"]: h["value"] for h in link["headers"]}
        )
        rest.append(page)
    assert [u["userPrincipalName"] for p in rest for u in p["items"]] == [
        "jane.doe@contoso.com",
        "wei.zhang@contoso.com",
        "new.hire@contoso.com",
    ]


async def test_size_parameter_is_capped_by_the_page_size(start: Start, http: aiohttp.ClientSession) -> None:
    box = await start(SandboxOptions(page_size=2), data=_many_users_data(5))
    _, one = await get_json(http, f"{box.url}/v1/customers/{CONTOSO}/users?size=1")
    _, capped = await get_json(http, f"{box.url}/v1/customers/{CONTOSO}/users?size=100")
    status, refused = await get_json(http, f"{box.url}/v1/customers/{CONTOSO}/users?size=-1")
    assert len(one["items"]) == 1 and "size=1" in one["links"]["next"]["uri"]
    assert len(capped["items"]) == 2
    assert status == 400
    assert_pc_error(refused, INVALID_INPUT_CODE)


@pytest.mark.parametrize("token", ["garbage!", "eyJjdXN0b21lciI6IngiLCJwb3NpdGlvbiI6MX0", ""])
async def test_a_bad_continuation_token_is_400(start: Start, http: aiohttp.ClientSession, token: str) -> None:
    box = await start()
    status, body = await get_json(
        http,
        f"{box.url}/v1/customers/{CONTOSO}/users?seekOperation=Next",
        headers={"MS-ContinuationToken": token},
    )
    if token == "":
        assert status == 200  # an empty header is no token: the first page
        return
    assert status == 400
    assert_pc_error(body, INVALID_INPUT_CODE)


async def test_a_token_of_another_customer_is_refused(start: Start, http: aiohttp.ClientSession) -> None:
    box = await start(SandboxOptions(page_size=1))
    _, page = await get_json(http, f"{box.url}/v1/customers/{CONTOSO}/users")
    headers = {h["key"]: h["value"] for h in page["links"]["next"]["headers"]}
    status, body = await get_json(http, f"{box.url}/v1/customers/{NORTHWIND}/users", headers=headers)
    assert status == 400
    assert_pc_error(body, INVALID_INPUT_CODE)


# ---------------------------------------------------------------------------------------------------------------
# The service's own refusals

REFUSALS = [
    pytest.param(new_user("JANE.DOE@contoso.COM"), DUPLICATE_UPN_CODE, id="duplicate-upn-any-case"),
    pytest.param(new_user("x@unknown.com"), DOMAIN_UNKNOWN_CODE, id="unknown-domain"),
    pytest.param(new_user("x@northwindtraders.com"), DOMAIN_UNKNOWN_CODE, id="another-customers-domain"),
    pytest.param(new_user("x@fabrikam.com"), DOMAIN_FEDERATED_CODE, id="federated-domain"),
    pytest.param(
        new_user("x@FABRIKAM.com", immutableId="abc"), DOMAIN_FEDERATED_CODE, id="federated-with-immutable-id"
    ),
    pytest.param(new_user(usageLocation="CU"), USAGE_LOCATION_INVALID_CODE, id="unsupported-country"),
    pytest.param(new_user(usageLocation="ZZ"), USAGE_LOCATION_INVALID_CODE, id="not-a-country"),
    pytest.param(new_user(usageLocation="USA"), USAGE_LOCATION_INVALID_CODE, id="three-letters"),
    pytest.param(
        new_user(passwordProfile={"password": "Sh0rt!x"}), PASSWORD_WEAK_CODE, id="password-7-chars"
    ),
    pytest.param(
        new_user(passwordProfile={"password": "alllowercase123"}), PASSWORD_WEAK_CODE, id="password-2-classes"
    ),
    pytest.param(
        new_user(passwordProfile={"password": "Pässword123!"}), PASSWORD_WEAK_CODE, id="password-non-ascii"
    ),
    pytest.param(
        new_user(passwordProfile={"password": "Tab\there123"}), PASSWORD_WEAK_CODE, id="password-tab"
    ),
    pytest.param(
        new_user(passwordProfile={"password": "Aa1!" * 64 + "x"}), PASSWORD_WEAK_CODE, id="password-257"
    ),
    pytest.param(new_user("no-at-sign"), UPN_INVALID_CODE, id="upn-without-at"),
    pytest.param(new_user("a@b@contoso.com"), UPN_INVALID_CODE, id="upn-two-ats"),
    pytest.param(new_user("dot.@contoso.com"), UPN_INVALID_CODE, id="upn-dot-before-at"),
    pytest.param(new_user("zoë@contoso.com"), UPN_INVALID_CODE, id="upn-non-ascii"),
    pytest.param(new_user("a b@contoso.com"), UPN_INVALID_CODE, id="upn-space"),
    pytest.param(new_user("x" * 65 + "@contoso.com"), UPN_INVALID_CODE, id="upn-local-65"),
    pytest.param(new_user("@contoso.com"), UPN_INVALID_CODE, id="upn-empty-local"),
    pytest.param(new_user(immutableId="abc$def"), IMMUTABLE_ID_INVALID_CODE, id="immutable-id-dollar"),
    pytest.param(new_user(immutableId="abc_def"), IMMUTABLE_ID_INVALID_CODE, id="immutable-id-underscore"),
    pytest.param(new_user(displayName="x" * 257), INVALID_INPUT_CODE, id="display-name-257"),
    pytest.param(new_user(firstName="x" * 65), INVALID_INPUT_CODE, id="first-name-65"),
    pytest.param(new_user(displayName=5), INVALID_INPUT_CODE, id="display-name-not-text"),
    pytest.param(
        new_user(passwordProfile={"password": PASSWORD, "forceChangePassword": "yes"}),
        INVALID_INPUT_CODE,
        id="force-change-not-bool",
    ),
    pytest.param("{not json", INVALID_INPUT_CODE, id="not-json"),
    pytest.param([new_user()], INVALID_INPUT_CODE, id="array-body"),
]


@pytest.mark.parametrize("body,code", REFUSALS)
async def test_refusals_are_400_with_partner_center_errors(
    start: Start, http: aiohttp.ClientSession, body: Any, code: int
) -> None:
    box = await start()
    before = len(box.store.users(CONTOSO))
    status, answer, _ = await post_user(http, box, body)
    assert status == 400
    assert_pc_error(answer, code)
    assert PASSWORD not in json.dumps(answer)
    assert len(box.store.users(CONTOSO)) == before, "a refusal creates nothing"
    assert box.stats.refused == 1 and box.stats.creations == 0


async def test_duplicate_upn_uses_graphs_text(start: Start, http: aiohttp.ClientSession) -> None:
    box = await start()
    status, answer, _ = await post_user(http, box, new_user("Wei.Zhang@Contoso.com"))
    assert status == 400
    assert answer["code"] == DUPLICATE_UPN_CODE and answer["description"] == DUPLICATE_UPN_TEXT
    assert answer["data"] == ["userPrincipalName", "ObjectConflict"]  # Graph's target and detail code


@pytest.mark.parametrize("missing", ["userPrincipalName", "displayName", "usageLocation", "password"])
async def test_missing_required_fields_are_named(
    start: Start, http: aiohttp.ClientSession, missing: str
) -> None:
    box = await start()
    body = new_user()
    if missing == "password":
        body["passwordProfile"] = {"forceChangePassword": True}
    else:
        body[missing] = "  " if missing == "displayName" else None  # blank counts as missing
    status, answer, _ = await post_user(http, box, body)
    assert status == 400
    assert_pc_error(answer, INVALID_INPUT_CODE)
    assert any(missing in field for field in answer["data"]) and missing in answer["description"]


@pytest.mark.parametrize(
    "password",
    ["abcDEF12", "Abc def 1", "abcDEF!!", "ABC123!!", "a1!" + "b" * 253, "x" * 200 + "Y1" + "Zz" * 27],
)
async def test_passwords_entra_accepts(start: Start, http: aiohttp.ClientSession, password: str) -> None:
    box = await start()
    status, answer, _ = await post_user(http, box, new_user(passwordProfile={"password": password}))
    assert status == 200, answer


@pytest.mark.parametrize(
    "upn", ["o'brien@contoso.com", "a.b-c_d!e#f^g~h@contoso.co.uk", "x" * 64 + "@contoso.com"]
)
async def test_upns_entra_accepts(start: Start, http: aiohttp.ClientSession, upn: str) -> None:
    box = await start()
    status, answer, _ = await post_user(http, box, new_user(upn))
    assert status == 200, answer


async def test_usage_locations_follow_partner_centers_list(start: Start, http: aiohttp.ClientSession) -> None:
    box = await start()
    accepted = [
        (await post_user(http, box, new_user(f"u{code}@contoso.com", usageLocation=code)))[0]
        for code in ("XK", "NA", "AN")
    ]
    assert accepted == [200, 200, 200]


# ---------------------------------------------------------------------------------------------------------------
# Soft delete and restore


async def test_delete_is_soft_and_patch_restores(start: Start, http: aiohttp.ClientSession) -> None:
    box = await start()
    jane = box.store.user_by_upn(CONTOSO, "jane.doe@contoso.com")
    assert jane is not None
    user_url = f"{box.url}/v1/customers/{CONTOSO}/users/{jane['id']}"
    async with http.delete(user_url, headers=AUTH) as response:
        assert response.status == 204 and await response.read() == b""
    status, deleted = await get_json(http, user_url)
    assert status == 200 and deleted["state"] == "inactive" and deleted["softDeletionTime"]
    graph_status, _ = await get_json(http, f"{box.url}/graph/{CONTOSO}/v1.0/users/jane.doe@contoso.com")
    assert graph_status == 404
    async with http.delete(user_url, headers=AUTH) as response:  # already deleted
        assert response.status == 404
        assert_pc_error(await response.json(), USER_NOT_FOUND_CODE)

    restore = {"State": "active", "Attributes": {"ObjectType": "CustomerUser"}}
    async with http.patch(user_url, headers=AUTH, json=restore) as response:
        restored = await response.json()
        assert response.status == 200
    assert restored["state"] == "active" and restored["softDeletionTime"] is None
    assert restored["id"] == jane["id"] and restored["displayName"] == "Jane Doe"
    assert restored.pop("links")["self"]["uri"] == f"/customers/{CONTOSO}/users/{jane['id']}"
    assert box.store.user_by_upn(CONTOSO, "jane.doe@contoso.com") == restored


async def test_restore_is_refused_when_a_new_user_holds_the_upn(
    start: Start, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """The API cannot get there any more (a deleted user holds its UPN), but a state file written before it
    could holds a deleted jane and a newer active one: restoring the old one must not make two janes."""
    jane_id, replacement_id = str(uuid.UUID(int=1)), str(uuid.UUID(int=2))

    def jane(user_id: str, state: str) -> dict[str, Any]:
        return {"id": user_id, "userPrincipalName": "jane.doe@contoso.com", "displayName": "Jane", "state": state}

    state = tmp_path / "state.json"
    state.write_text(
        json.dumps(
            {
                "format": "bulkonboard-sandbox-state",
                "version": 1,
                "customers": {CONTOSO: {"users": [jane(jane_id, "inactive"), jane(replacement_id, "active")]}},
            }
        )
    )
    box = await start(state_path=state)
    user_url = f"{box.url}/v1/customers/{CONTOSO}/users/{jane_id}"
    replacement = {"id": replacement_id}
    async with http.patch(user_url, headers=AUTH, json={"state": "active"}) as response:
        body = await response.json()
        assert response.status == 400
    assert_pc_error(body, DUPLICATE_UPN_CODE)
    assert box.store.user_by_upn(CONTOSO, "jane.doe@contoso.com")["id"] == replacement["id"]  # type: ignore[index]


@pytest.mark.parametrize(
    "patch,code",
    [
        ({"State": "inactive"}, INVALID_INPUT_CODE),
        ({"usageLocation": "CU"}, USAGE_LOCATION_INVALID_CODE),
        ([1], INVALID_INPUT_CODE),
    ],
)
async def test_bad_patches_are_refused(
    start: Start, http: aiohttp.ClientSession, patch: Any, code: int
) -> None:
    box = await start()
    jane = box.store.user_by_upn(CONTOSO, "jane.doe@contoso.com")
    assert jane is not None
    async with http.patch(
        f"{box.url}/v1/customers/{CONTOSO}/users/{jane['id']}", headers=AUTH, json=patch
    ) as response:
        body = await response.json()
        assert response.status == 400
    assert_pc_error(body, code)
    assert box.store.user_by_upn(CONTOSO, "jane.doe@contoso.com") == jane


async def test_patch_updates_names(start: Start, http: aiohttp.ClientSession) -> None:
    box = await start()
    wei = box.store.user_by_upn(CONTOSO, "wei.zhang@contoso.com")
    assert wei is not None
    async with http.patch(
        f"{box.url}/v1/customers/{CONTOSO}/users/{wei['id']}",
        headers=AUTH,
        json={"DisplayName": "Wei Z.", "usageLocation": "SG"},
    ) as response:
        assert response.status == 200
    assert box.store.user_by_upn(CONTOSO, "wei.zhang@contoso.com") == {
        **wei,
        "displayName": "Wei Z.",
        "usageLocation": "SG",
    }


async def test_patch_and_delete_of_an_unknown_user_are_404(start: Start, http: aiohttp.ClientSession) -> None:
    box = await start()
    url = f"{box.url}/v1/customers/{CONTOSO}/users/{uuid.UUID(int=9)}"
    async with http.patch(url, headers=AUTH, json={"State": "active"}) as patched:
        assert patched.status == 404
        assert_pc_error(await patched.json(), USER_NOT_FOUND_CODE)
    async with http.delete(url, headers=AUTH) as deleted:
        assert deleted.status == 404


# ---------------------------------------------------------------------------------------------------------------
# MS-RequestId replay


async def test_a_replayed_request_id_gets_the_same_answer_and_creates_nothing(
    start: Start, http: aiohttp.ClientSession
) -> None:
    box = await start()
    first = await post_user(http, box, new_user(), request_id="req-1")
    again = await post_user(http, box, new_user(), request_id="req-1")
    assert first[0] == again[0] == 200
    assert again[1] == first[1]  # the very same answer, as the contract says
    assert again[1]["passwordProfile"]["password"] == first[1]["passwordProfile"]["password"]
    assert [u["userPrincipalName"] for u in box.store.users(CONTOSO)].count("new.hire@contoso.com") == 1
    assert (box.stats.creations, box.stats.replays) == (1, 1)
    # a fresh id for the same user is a duplicate, as in the real service
    status, answer, _ = await post_user(http, box, new_user(), request_id="req-2")
    assert status == 400 and answer["code"] == DUPLICATE_UPN_CODE


async def test_a_refusal_is_final_too(start: Start, http: aiohttp.ClientSession) -> None:
    """A 4xx other than 429 is the id's final answer: corrected data under the same id is not looked at."""
    box = await start()
    status, refused, _ = await post_user(http, box, new_user(usageLocation="ZZ"), request_id="req-bad")
    status_again, again, _ = await post_user(http, box, new_user(), request_id="req-bad")
    assert status == status_again == 400 and again == refused
    assert box.store.user_by_upn(CONTOSO, "new.hire@contoso.com") is None
    status, _, _ = await post_user(http, box, new_user(), request_id="req-good")
    assert status == 200


async def test_concurrent_requests_with_one_id_create_one_user(
    start: Start, http: aiohttp.ClientSession
) -> None:
    box = await start(SandboxOptions(seed=0, latency_ms=20))
    answers = await asyncio.gather(
        *(post_user(http, box, new_user(), request_id="req-same") for _ in range(8))
    )
    assert {status for status, _, _ in answers} == {200}
    assert len({body["id"] for _, body, _ in answers}) == 1
    assert (box.stats.creations, box.stats.replays) == (1, 7)


async def test_a_503_id_is_processed_afresh(start: Start, http: aiohttp.ClientSession) -> None:
    box = await start(SandboxOptions(seed=3, fail_rate=0.5))
    status = 503
    tries = 0
    while status == 503:  # the same id until the seeded draws let it through
        status, answer, _ = await post_user(http, box, new_user(), request_id="req-retry")
        tries += 1
        assert tries < 50
    assert status == 200 and box.stats.replays == 0
    assert box.stats.failed == tries - 1
    if tries == 1:  # the seed must exercise the point of the test
        pytest.fail("seed 3 did not produce a 503 first; pick a seed that does")
    assert box.store.user_by_upn(CONTOSO, "new.hire@contoso.com")["id"] == answer["id"]  # type: ignore[index]


async def test_a_429_id_is_processed_afresh(start: Start, http: aiohttp.ClientSession) -> None:
    now = [1000.0]
    box = await start(SandboxOptions(seed=0, rate_limit=(1, 60.0)), clock=lambda: now[0])
    assert (await post_user(http, box, new_user("first@contoso.com"), request_id="req-a"))[0] == 200
    status, _, _ = await post_user(http, box, new_user(), request_id="req-b")
    assert status == 429
    now[0] += 60
    status, answer, _ = await post_user(http, box, new_user(), request_id="req-b")
    assert status == 200 and answer["userPrincipalName"] == "new.hire@contoso.com"
    assert box.stats.replays == 0 and box.stats.throttled == 1


async def test_a_401_is_not_remembered(start: Start, http: aiohttp.ClientSession) -> None:
    box = await start()
    status, _, _ = await post_user(
        http, box, new_user(), request_id="req-auth", headers={"Authorization": "Bearer wrong"}
    )
    assert status == 401
    status, _, _ = await post_user(http, box, new_user(), request_id="req-auth")
    assert status == 200 and box.stats.replays == 0


async def test_delete_replay_answers_204_again(start: Start, http: aiohttp.ClientSession) -> None:
    box = await start()
    jane = box.store.user_by_upn(CONTOSO, "jane.doe@contoso.com")
    assert jane is not None
    url = f"{box.url}/v1/customers/{CONTOSO}/users/{jane['id']}"
    statuses = []
    for _ in range(2):
        async with http.delete(url, headers={**AUTH, "MS-RequestId": "req-del"}) as response:
            statuses.append(response.status)
    async with http.delete(url, headers={**AUTH, "MS-RequestId": "req-del-2"}) as response:
        statuses.append(response.status)
    assert statuses == [204, 204, 404] and box.stats.replays == 1


# ---------------------------------------------------------------------------------------------------------------
# Faults


async def _create_many(http: aiohttp.ClientSession, box: Sandbox, count: int) -> list[int | str]:
    """Sequential creations; a dropped connection shows as "dropped"."""
    outcomes: list[int | str] = []
    for i in range(count):
        try:
            status, _, _ = await post_user(http, box, new_user(f"user{i}@contoso.com"), request_id=f"req-{i}")
            outcomes.append(status)
        except DISCONNECTED:
            outcomes.append("dropped")
    return outcomes


async def test_fail_rate_answers_503_without_creating_and_repeats_with_the_seed(
    start: Start, http: aiohttp.ClientSession
) -> None:
    first = await start(SandboxOptions(seed=11, fail_rate=0.3))
    outcomes = await _create_many(http, first, 40)
    failed = [i for i, outcome in enumerate(outcomes) if outcome == 503]
    assert 0 < len(failed) < 40 and set(outcomes) == {200, 503}
    assert first.stats.failed == len(failed)
    created = {u["userPrincipalName"] for u in first.store.users(CONTOSO)}
    assert all((f"user{i}@contoso.com" in created) == (i not in failed) for i in range(40))

    again = await start(SandboxOptions(seed=11, fail_rate=0.3))
    assert await _create_many(http, again, 40) == outcomes

    status, body, _ = await post_user(http, await start(SandboxOptions(seed=0, fail_rate=1.0)), new_user())
    assert status == 503
    assert_pc_error(body, SERVICE_UNAVAILABLE_CODE)


async def test_drop_rate_creates_then_hangs_up(start: Start, http: aiohttp.ClientSession) -> None:
    first = await start(SandboxOptions(seed=5, drop_rate=0.4))
    outcomes = await _create_many(http, first, 20)
    dropped = [i for i, outcome in enumerate(outcomes) if outcome == "dropped"]
    assert 0 < len(dropped) < 20 and set(outcomes) == {200, "dropped"}
    assert first.stats.dropped == len(dropped) and first.stats.creations == 20
    for i in range(20):  # dropped or not, every user exists
        assert first.store.user_by_upn(CONTOSO, f"user{i}@contoso.com") is not None

    # the lost answer is what a retry with the same id gets
    i = dropped[0]
    status, replayed, _ = await post_user(
        http, first, new_user(f"user{i}@contoso.com"), request_id=f"req-{i}"
    )
    assert status == 200
    assert replayed["id"] == first.store.user_by_upn(CONTOSO, f"user{i}@contoso.com")["id"]  # type: ignore[index]

    again = await start(SandboxOptions(seed=5, drop_rate=0.4))
    assert await _create_many(http, again, 20) == outcomes


async def test_rate_limit_answers_429_in_partner_centers_shape(
    start: Start, http: aiohttp.ClientSession
) -> None:
    now = [500.0]
    box = await start(SandboxOptions(seed=0, rate_limit=(3, 60.0)), clock=lambda: now[0])
    statuses = []
    for i in range(3):
        statuses.append((await post_user(http, box, new_user(f"u{i}@contoso.com")))[0])
        now[0] += 10
    status, body, headers = await post_user(http, box, new_user("u3@contoso.com"))
    assert statuses == [200, 200, 200] and status == 429
    assert headers["Retry-After"] == "30"  # the first admission (t=500) leaves the window at t=560
    assert body == {"statusCode": 429, "message": "Rate limit is exceeded. Try again in 30 seconds."}
    assert box.store.user_by_upn(CONTOSO, "u3@contoso.com") is None and box.stats.throttled == 1
    # refused attempts do not count; once the first admission leaves the window, one slot is free
    now[0] = 560.0
    assert (await post_user(http, box, new_user("u3@contoso.com")))[0] == 200
    assert (await post_user(http, box, new_user("u4@contoso.com")))[0] == 429


async def test_replays_and_reads_do_not_count_against_the_rate_limit(
    start: Start, http: aiohttp.ClientSession
) -> None:
    box = await start(SandboxOptions(seed=0, rate_limit=(1, 60.0)), clock=lambda: 0.0)
    assert (await post_user(http, box, new_user(), request_id="req-x"))[0] == 200
    assert (await post_user(http, box, new_user(), request_id="req-x"))[0] == 200
    assert (await get_json(http, f"{box.url}/v1/customers/{CONTOSO}/users"))[0] == 200
    assert (await post_user(http, box, new_user("other@contoso.com"), request_id="req-y"))[0] == 429


async def test_retry_after_is_whole_seconds_at_least_one(start: Start, http: aiohttp.ClientSession) -> None:
    now = [0.0]
    box = await start(SandboxOptions(seed=0, rate_limit=(1, 1.0)), clock=lambda: now[0])
    await post_user(http, box, new_user("a@contoso.com"))
    now[0] = 0.95
    status, body, headers = await post_user(http, box, new_user("b@contoso.com"))
    assert status == 429 and headers["Retry-After"] == "1"
    assert body["message"] == "Rate limit is exceeded. Try again in 1 seconds."


async def test_throttle_warnings_past_80_percent(start: Start, http: aiohttp.ClientSession) -> None:
    box = await start(
        SandboxOptions(seed=0, rate_limit=(10, 60.0), throttle_warnings=True), clock=lambda: 0.0
    )
    seen = [
        (await post_user(http, box, new_user(f"w{i}@contoso.com")))[2].get("x-ms-throttle-limit-percentage")
        for i in range(11)
    ]
    assert seen == [None] * 8 + ["0.90", "1.00", "1.00"]

    quiet = await start(SandboxOptions(seed=0, rate_limit=(2, 60.0)), clock=lambda: 0.0)
    headers = [(await post_user(http, quiet, new_user(f"q{i}@contoso.com")))[2] for i in range(3)]
    assert all("x-ms-throttle-limit-percentage" not in h for h in headers)


async def test_latency_slows_every_call(start: Start, http: aiohttp.ClientSession) -> None:
    box = await start(SandboxOptions(seed=0, latency_ms=150))
    for url in (f"{box.url}/v1/customers/{CONTOSO}", f"{box.url}/graph/{CONTOSO}/v1.0/domains"):
        began = time.monotonic()
        status, _ = await get_json(http, url)
        assert status == 200 and time.monotonic() - began >= 0.15


# ---------------------------------------------------------------------------------------------------------------
# Headers, auth, unknown routes


async def test_request_and_correlation_ids_are_echoed(start: Start, http: aiohttp.ClientSession) -> None:
    box = await start(SandboxOptions(seed=0, rate_limit=(1, 60.0)), clock=lambda: 0.0)
    request_ids = [str(uuid.uuid4()) for _ in range(4)]
    answers = [
        await post_user(http, box, new_user(), request_ids[0]),  # 200
        await post_user(http, box, new_user("b@contoso.com"), request_ids[1]),  # 429
        await post_user(http, box, new_user(), request_ids[2], headers={"Authorization": "Bearer no"}),  # 401
        await post_user(http, box, new_user(), request_ids[3], customer=str(uuid.UUID(int=1))),  # 404
    ]
    assert [status for status, _, _ in answers] == [200, 429, 401, 404]
    for request_id, (_, _, headers) in zip(request_ids, answers, strict=True):
        assert headers["MS-RequestId"] == request_id and headers["MS-CorrelationId"] == "corr-1"
    async with http.get(f"{box.url}/v1/customers/{CONTOSO}", headers=AUTH) as response:
        made_up = response.headers["MS-RequestId"], response.headers["MS-CorrelationId"]
    assert all(uuid.UUID(value) for value in made_up)


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", "Basic c2FuZGJveA==", "Bearer", "sandbox"])
@pytest.mark.parametrize(
    "method,suffix",
    [("GET", ""), ("GET", "/users"), ("POST", "/users"), ("DELETE", "/users/x"), ("PATCH", "/users/x")],
)
async def test_partner_center_needs_the_token(
    start: Start, http: aiohttp.ClientSession, authorization: str | None, method: str, suffix: str
) -> None:
    box = await start()
    headers = {"Authorization": authorization} if authorization is not None else {}
    async with http.request(
        method, f"{box.url}/v1/customers/{CONTOSO}{suffix}", headers=headers, json=new_user()
    ) as response:
        body = await response.json()
        assert response.status == 401 and response.headers["WWW-Authenticate"] == "Bearer"
    assert_pc_error(body, TOKEN_MISSING_CODE)
    assert box.stats.creations == 0 and len(box.store.users(CONTOSO)) == 2


async def test_another_token_can_be_configured(start: Start, http: aiohttp.ClientSession) -> None:
    box = await start(SandboxOptions(token="s3cret-token"))
    async with http.get(
        f"{box.url}/v1/customers/{CONTOSO}", headers={"Authorization": "bearer s3cret-token"}
    ) as ok:
        assert ok.status == 200
    async with http.get(f"{box.url}/v1/customers/{CONTOSO}", headers=AUTH) as refused:
        assert refused.status == 401


async def test_unknown_routes_answer_in_the_services_shape(start: Start, http: aiohttp.ClientSession) -> None:
    box = await start()
    async with http.get(f"{box.url}/v1/nothing/here", headers=AUTH) as response:
        assert response.status == 404
        assert (await response.json())["source"] == "PartnerFD"
    async with http.put(f"{box.url}/v1/customers/{CONTOSO}/users", headers=AUTH) as response:
        assert response.status == 405
    async with http.get(f"{box.url}/graph/{CONTOSO}/v1.0/groups", headers=AUTH) as response:
        assert response.status == 404 and "error" in await response.json()


# ---------------------------------------------------------------------------------------------------------------
# Graph


async def test_graph_lists_the_customers_domains(start: Start, http: aiohttp.ClientSession) -> None:
    box = await start()
    status, body = await get_json(http, f"{box.url}/graph/{CONTOSO}/v1.0/domains")
    assert status == 200
    domains = {d["id"]: d for d in body["value"]}
    assert set(domains) == {"contoso.onmicrosoft.com", "contoso.com", "contoso.co.uk", "fabrikam.com"}
    assert {d["authenticationType"] for d in domains.values()} == {"Managed", "Federated"}
    assert domains["fabrikam.com"]["authenticationType"] == "Federated"
    assert [d for d, v in domains.items() if v["isInitial"]] == ["contoso.onmicrosoft.com"]
    assert [d for d, v in domains.items() if v["isDefault"]] == ["contoso.com"]
    assert all(v["isVerified"] is True and isinstance(v["supportedServices"], list) for v in domains.values())

    _, northwind = await get_json(
        http, f"{box.url}/graph/northwindtraders.com/v1.0/domains"
    )  # tenant by domain
    assert {d["id"] for d in northwind["value"]} == {"northwind.onmicrosoft.com", "northwindtraders.com"}


async def test_graph_finds_a_user_by_upn_in_any_case(start: Start, http: aiohttp.ClientSession) -> None:
    box = await start()
    status, wei = await get_json(http, f"{box.url}/graph/{CONTOSO}/v1.0/users/WEI.ZHANG@contoso.com")
    stored = box.store.user_by_upn(CONTOSO, "wei.zhang@contoso.com")
    assert status == 200 and stored is not None
    assert wei["id"] == stored["id"] and wei["userPrincipalName"] == "wei.zhang@contoso.com"
    assert (wei["displayName"], wei["givenName"], wei["surname"], wei["usageLocation"]) == (
        "Wei Zhang",
        "Wei",
        "Zhang",
        "CN",
    )
    assert wei["mail"] is None and wei["businessPhones"] == []

    _, created, _ = await post_user(http, box, new_user("o'neil@contoso.com"))
    status, found = await get_json(http, f"{box.url}/graph/{CONTOSO}/v1.0/users/O%27Neil@Contoso.com")
    assert status == 200 and found["id"] == created["id"]
    status, by_id = await get_json(http, f"{box.url}/graph/{CONTOSO}/v1.0/users/{created['id']}")
    assert status == 200 and by_id["userPrincipalName"] == "o'neil@contoso.com"


async def test_graph_404_has_graphs_error_body(start: Start, http: aiohttp.ClientSession) -> None:
    box = await start()
    async with http.get(
        f"{box.url}/graph/{CONTOSO}/v1.0/users/nobody@contoso.com",
        headers={**AUTH, "client-request-id": "cri-1"},
    ) as response:
        body = await response.json()
        assert response.status == 404 and response.headers["client-request-id"] == "cri-1"
    assert set(body) == {"error"}
    assert (
        body["error"]["code"] == "Request_ResourceNotFound"
        and "nobody@contoso.com" in body["error"]["message"]
    )
    assert set(body["error"]["innerError"]) == {"date", "request-id", "client-request-id"}
    assert body["error"]["innerError"]["client-request-id"] == "cri-1"
    # the other customer's users are not in this tenant
    status, _ = await get_json(
        http, f"{box.url}/graph/{CONTOSO}/v1.0/users/nancy.davolio@northwindtraders.com"
    )
    assert status == 404


@pytest.mark.parametrize("authorization,message", [(None, "empty"), ("Bearer wrong", "validation")])
@pytest.mark.parametrize("suffix", ["domains", "users/jane.doe@contoso.com"])
async def test_graph_401_is_invalid_authentication_token(
    start: Start, http: aiohttp.ClientSession, authorization: str | None, message: str, suffix: str
) -> None:
    box = await start()
    headers = {"Authorization": authorization} if authorization else {}
    async with http.get(f"{box.url}/graph/{CONTOSO}/v1.0/{suffix}", headers=headers) as response:
        body = await response.json()
        assert response.status == 401
    assert body["error"]["code"] == "InvalidAuthenticationToken" and message in body["error"]["message"]


async def test_graph_unknown_tenant_is_404(start: Start, http: aiohttp.ClientSession) -> None:
    box = await start()
    status, body = await get_json(http, f"{box.url}/graph/{uuid.UUID(int=5)}/v1.0/domains")
    assert status == 404 and body["error"]["code"] == "Request_ResourceNotFound"


# ---------------------------------------------------------------------------------------------------------------
# Pluggable auth and routes


async def test_a_token_verifier_hears_token_tenant_and_audience(
    start: Start, http: aiohttp.ClientSession
) -> None:
    heard: list[tuple[str, str | None, str]] = []

    async def verifier(token: str, tenant: str | None, audience: str) -> bool:  # async verifiers are awaited
        heard.append((token, tenant, audience))
        return token == ("pc" if audience == PARTNER_CENTER_AUDIENCE else f"graph-{tenant}")

    box = await start(verifier=verifier)
    async with http.get(f"{box.url}/v1/customers/{CONTOSO}", headers={"Authorization": "Bearer pc"}) as pc:
        assert pc.status == 200
    async with http.get(
        f"{box.url}/graph/contoso.com/v1.0/domains", headers={"Authorization": f"Bearer graph-{CONTOSO}"}
    ) as graph:
        assert graph.status == 200
    async with http.get(
        f"{box.url}/graph/{NORTHWIND}/v1.0/domains", headers={"Authorization": f"Bearer graph-{CONTOSO}"}
    ) as other:
        assert other.status == 401
    assert heard == [
        ("pc", None, PARTNER_CENTER_AUDIENCE),
        (f"graph-{CONTOSO}", CONTOSO, GRAPH_AUDIENCE),  # the tenant's id, though the path named a domain
        (f"graph-{CONTOSO}", NORTHWIND, GRAPH_AUDIENCE),
    ]


async def test_extra_routes_share_the_server(start: Start, http: aiohttp.ClientSession) -> None:
    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"hello": "world"})

    def setup(app: web.Application) -> None:
        app.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", hello)

    box = await start(extra_routes=[web.get("/hello", hello)], setup_app=setup)
    for path in ("/hello", "/contoso/v2.0/.well-known/openid-configuration"):
        async with http.get(f"{box.url}{path}") as response:  # no token: these are not the API
            assert response.status == 200 and await response.json() == {"hello": "world"}
    status, _ = await get_json(http, f"{box.url}/graph/{CONTOSO}/v1.0/domains")
    assert status == 200


# ---------------------------------------------------------------------------------------------------------------
# The store seen by tests


async def test_store_hands_out_copies(start: Start) -> None:
    box = await start()
    users = box.store.users(CONTOSO)
    users[0]["displayName"] = "changed"
    jane = box.store.user_by_upn(CONTOSO, "Jane.Doe@Contoso.com")
    assert jane is not None and jane["displayName"] == "Jane Doe"
    assert box.store.user_by_upn(CONTOSO, "nobody@contoso.com") is None
    with pytest.raises(KeyError):
        box.store.users(str(uuid.UUID(int=1)))


async def test_url_has_no_trailing_slash_and_needs_a_start() -> None:
    box = Sandbox(SAMPLE)
    with pytest.raises(RuntimeError):
        _ = box.url
    async with box:
        assert box.url.startswith("http://127.0.0.1:") and not box.url.endswith("/")
        port = int(box.url.rsplit(":", 1)[1])
        assert port > 0


# ---------------------------------------------------------------------------------------------------------------
# --state


def _state_upns(path: Path) -> dict[str, str]:
    """What a restarted sandbox would load (the snapshot and the write log after it)."""
    saved = read_state(path) or {}
    return {u["userPrincipalName"]: u["state"] for u in saved.get(CONTOSO, [])}


async def test_state_keeps_users_across_restarts_without_passwords(
    start: Start, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    state = tmp_path / "state.json"
    box = await start(state_path=state)
    status, created, _ = await post_user(http, box, new_user())
    assert status == 200
    assert "new.hire@contoso.com" in _state_upns(state), "on disk before the answer came"
    jane = box.store.user_by_upn(CONTOSO, "jane.doe@contoso.com")
    assert jane is not None
    async with http.delete(f"{box.url}/v1/customers/{CONTOSO}/users/{jane['id']}", headers=AUTH) as response:
        assert response.status == 204
    await box.stop()

    text = state.read_text(encoding="utf-8")
    assert PASSWORD not in text and '"password"' not in text
    assert _state_upns(state) == {
        "jane.doe@contoso.com": "inactive",
        "wei.zhang@contoso.com": "active",
        "new.hire@contoso.com": "active",
    }
    assert not list(tmp_path.glob(".state.json.*")), "no temporary file left behind"

    reborn = await start(state_path=state)
    kept = reborn.store.user_by_upn(CONTOSO, "NEW.HIRE@contoso.com")
    assert kept is not None and kept["id"] == created["id"]
    status, fetched = await get_json(http, f"{reborn.url}/v1/customers/{CONTOSO}/users/{created['id']}")
    assert status == 200 and fetched["displayName"] == "New Hire"
    assert reborn.store.user_by_upn(CONTOSO, "jane.doe@contoso.com")["state"] == "inactive"  # type: ignore[index]
    status, _, _ = await post_user(http, reborn, new_user())
    assert status == 400, "the kept user still holds its UPN"


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        '{"format": "other"}',
        '{"format": "bulkonboard-sandbox-state", "version": 1, "customers": {"x": {"users": [{"id": 1}]}}}',
    ],
)
def test_a_bad_state_file_is_one_clear_line(tmp_path: Path, content: str) -> None:
    state = tmp_path / "state.json"
    state.write_text(content, encoding="utf-8")
    with pytest.raises(SandboxDataError) as caught:
        Sandbox(SAMPLE, state_path=state)
    assert str(state) in str(caught.value) and "\n" not in str(caught.value)


async def test_users_the_data_file_gained_join_the_saved_ones(start: Start, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    first = await start(state_path=state)
    await first.stop()
    grown = SAMPLE.read_text(encoding="utf-8").replace(
        '[[customers]]\nid = "7d2e',
        '[[customers.users]]\nuserPrincipalName = "late.joiner@contoso.com"\ndisplayName = "Late Joiner"\n\n'
        '[[customers]]\nid = "7d2e',
    )
    reborn = await start(data=parse_data(grown), state_path=state)
    upns = [u["userPrincipalName"] for u in reborn.store.users(CONTOSO)]
    assert upns == ["jane.doe@contoso.com", "wei.zhang@contoso.com", "late.joiner@contoso.com"]


def test_a_state_file_in_a_missing_directory_is_refused_at_once(tmp_path: Path) -> None:
    with pytest.raises(SandboxDataError, match="directory does not exist"):
        Sandbox(SAMPLE, state_path=tmp_path / "nowhere" / "state.json")
