"""The sandbox over real HTTP on loopback: customers and users, paging, the service's refusals, soft delete and
restore, MS-RequestId replay (faults, headers, Graph, pluggable auth and --state are in test_sandbox_faults.py).

Each test starts its own in-process Sandbox on 127.0.0.1 port 0 and talks to it with aiohttp, so what is checked
is what a client sees on the wire (status, body shape, headers), plus the store behind it (what was created).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bulkonboard.sandbox import (
    DUPLICATE_UPN_CODE,
    DUPLICATE_UPN_TEXT,
    Sandbox,
    SandboxOptions,
    parse_data,
)
from bulkonboard.sandbox.codes import (
    DOMAIN_FEDERATED_CODE,
    DOMAIN_UNKNOWN_CODE,
    IMMUTABLE_ID_INVALID_CODE,
    INVALID_INPUT_CODE,
    PASSWORD_WEAK_CODE,
    TENANT_NOT_FOUND_CODE,
    UPN_INVALID_CODE,
    USAGE_LOCATION_INVALID_CODE,
    USER_NOT_FOUND_CODE,
)

from .sandbox_http import (
    AUTH,
    CONTOSO,
    NORTHWIND,
    PASSWORD,
    SAMPLE,
    Start,
    assert_pc_error,
    get_json,
    new_user,
    post_user,
)

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
