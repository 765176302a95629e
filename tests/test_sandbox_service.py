"""The sandbox behaves like the documented service (issue 15), over real HTTP on 127.0.0.1 port 0:
GDAP roles and relationship (403 with 900308 / 20002), soft-deleted users (the `UserState` filter, the UPN they
keep, restore), `size=0`, `links.self` on users, no `passwordProfile` in lists, `data` only when there is some.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from bulkonboard.sandbox import Sandbox, SandboxDataError, SandboxOptions, parse_data
from bulkonboard.sandbox.codes import (
    DUPLICATE_UPN_CODE,
    INVALID_INPUT_CODE,
    TENANT_NOT_FOUND_CODE,
)
from bulkonboard.sandbox.permissions import SANDBOX_PARTNER_ID

AUTH = {"Authorization": "Bearer sandbox"}
PASSWORD = "Gd4p!Roles#2026"
FULL = "11111111-0000-4000-8000-000000000001"  # every role; soft-deleted users in the file
READER = "11111111-0000-4000-8000-000000000002"  # Directory Readers only
NO_RELATIONSHIP = "11111111-0000-4000-8000-000000000003"
WRITER = "11111111-0000-4000-8000-000000000004"  # Directory Writers: creates, cannot delete or restore
DELETED_AT = "2026-11-20T09:30:00.000000Z"
DELETED_FILTER = '{"Field":"UserState","Value":"Inactive","Operator":"equals"}'
INSUFFICIENT = {
    "code": 900308,
    "description": "Insufficient privileges to complete the operation.",
    "source": "PartnerFD",
}


def _customer(customer_id: str, name: str, extra: str = "", users: str = "") -> str:
    return f"""
[[customers]]
id = "{customer_id}"
name = "{name}"
domains = [{{ name = "{name}.onmicrosoft.com", authenticationType = "Managed", isInitial = true }}]
{extra}

[[customers.users]]
userPrincipalName = "ann@{name}.onmicrosoft.com"
displayName = "Ann"
usageLocation = "US"
{users}
"""


DELETED_USERS = f"""
[[customers.users]]
userPrincipalName = "bob@full.onmicrosoft.com"
displayName = "Bob"
state = "inactive"
softDeletionTime = "{DELETED_AT}"

[[customers.users]]
userPrincipalName = "cy@full.onmicrosoft.com"
displayName = "Cy"
state = "inactive"

[[customers.users]]
userPrincipalName = "dee@full.onmicrosoft.com"
displayName = "Dee"
"""

DATA = (
    _customer(FULL, "full", users=DELETED_USERS)
    + _customer(READER, "reader", 'gdapRoles = ["Directory Readers"]')
    + _customer(NO_RELATIONSHIP, "norel", "relationship = false")
    + _customer(WRITER, "writer", 'gdapRoles = ["directory writers", "Directory Readers"]')
)


@pytest.fixture
async def box(tmp_path: Path) -> AsyncIterator[Sandbox]:
    sandbox = Sandbox(
        parse_data(DATA), SandboxOptions(seed=0, page_size=2), state_path=tmp_path / "state.json"
    )
    await sandbox.start()
    try:
        yield sandbox
    finally:
        await sandbox.stop()


async def call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    kwargs: dict[str, Any] = {} if body is None else {"json": body}
    async with http.request(method, url, headers={**AUTH, **(headers or {})}, **kwargs) as response:
        text = await response.text()
        return response.status, (json.loads(text) if text else None)


def new_user(upn: str) -> dict[str, Any]:
    return {
        "userPrincipalName": upn,
        "displayName": "New Hire",
        "usageLocation": "US",
        "passwordProfile": {"password": PASSWORD, "forceChangePassword": True},
        "attributes": {"objectType": "CustomerUser"},
    }


def users_url(box: Sandbox, customer: str) -> str:
    return f"{box.url}/v1/customers/{customer}/users"


async def every_page(http: aiohttp.ClientSession, box: Sandbox, url: str) -> list[dict[str, Any]]:
    """Follow `links.next` (its uri and its MS-ContinuationToken) to the end; every item, in order."""
    status, page = await call(http, "GET", url)
    assert status == 200, page
    items = list(page["items"])
    while "next" in page["links"]:
        link = page["links"]["next"]
        headers = {h["key"]: h["value"] for h in link["headers"]}
        status, page = await call(http, "GET", f"{box.url}/v1{link['uri']}", headers=headers)
        assert status == 200, page
        items.extend(page["items"])
    return items


# ---------------------------------------------------------------------------------------------------------------
# GDAP


async def test_a_reader_only_partner_lists_users_but_cannot_create_them(
    box: Sandbox, http: aiohttp.ClientSession
) -> None:
    before = box.store.users(READER)
    status, refused = await call(http, "POST", users_url(box, READER), new_user("new@reader.onmicrosoft.com"))
    assert status == 403 and refused == INSUFFICIENT  # the documented body, and no `data`
    assert box.store.users(READER) == before and box.stats.creations == 0

    status, listed = await call(http, "GET", users_url(box, READER))
    assert status == 200 and [u["userPrincipalName"] for u in listed["items"]] == [
        "ann@reader.onmicrosoft.com"
    ]
    ann = listed["items"][0]
    assert (await call(http, "GET", f"{users_url(box, READER)}/{ann['id']}"))[0] == 200
    assert (await call(http, "GET", f"{box.url}/graph/{READER}/v1.0/domains"))[0] == 200
    assert (await call(http, "GET", f"{box.url}/graph/{READER}/v1.0/users/ann@reader.onmicrosoft.com"))[
        0
    ] == 200
    # Nor may a reader delete, restore or update.
    for method, body in (("DELETE", None), ("PATCH", {"State": "active"}), ("PATCH", {"displayName": "X"})):
        status, answer = await call(http, method, f"{users_url(box, READER)}/{ann['id']}", body)
        assert (status, answer) == (403, INSUFFICIENT), method
    assert box.store.users(READER) == before
    assert box.stats.forbidden == 4


async def test_the_403_is_final_for_its_request_id(box: Sandbox, http: aiohttp.ClientSession) -> None:
    """Like any 4xx but 429: a replay of the same MS-RequestId gets the same 403 and creates nothing."""
    headers = {"MS-RequestId": "7b6c1e9a-0000-4000-8000-00000000abcd"}
    body = new_user("again@reader.onmicrosoft.com")
    first = await call(http, "POST", users_url(box, READER), body, headers)
    again = await call(http, "POST", users_url(box, READER), body, headers)
    assert first == again == (403, INSUFFICIENT)
    assert box.stats.replays == 1 and box.stats.creations == 0


async def test_without_a_relationship_every_route_is_403_20002(
    box: Sandbox, http: aiohttp.ClientSession
) -> None:
    ann = box.store.user_by_upn(NO_RELATIONSHIP, "ann@norel.onmicrosoft.com")
    assert ann is not None
    customer_url = f"{box.url}/v1/customers/{NO_RELATIONSHIP}"
    user_url = f"{customer_url}/users/{ann['id']}"
    calls = [
        ("GET", customer_url, None),
        ("GET", f"{customer_url}/users", None),
        ("GET", f"{customer_url}/users?filter={quote(DELETED_FILTER)}", None),
        ("GET", user_url, None),
        ("POST", f"{customer_url}/users", new_user("new@norel.onmicrosoft.com")),
        ("DELETE", user_url, None),
        ("PATCH", user_url, {"State": "active", "Attributes": {"ObjectType": "CustomerUser"}}),
    ]
    expected = {
        "code": 20002,
        "description": f"The partner ID {SANDBOX_PARTNER_ID} has no commerce relationship with the customer ID "
        f"{NO_RELATIONSHIP}.",
        "source": "PartnerFD",
    }
    for method, url, body in calls:
        assert await call(http, method, url, body) == (403, expected), f"{method} {url}"
    for path in ("domains", "users/ann@norel.onmicrosoft.com"):
        status, answer = await call(http, "GET", f"{box.url}/graph/{NO_RELATIONSHIP}/v1.0/{path}")
        assert status == 403 and answer["error"]["code"] == "Authorization_RequestDenied", path
        assert NO_RELATIONSHIP in answer["error"]["message"]
    assert box.store.users(NO_RELATIONSHIP) == [ann] and box.stats.creations == 0


async def test_directory_writers_create_but_cannot_delete_or_restore(
    box: Sandbox, http: aiohttp.ClientSession
) -> None:
    status, created = await call(http, "POST", users_url(box, WRITER), new_user("new@writer.onmicrosoft.com"))
    assert status == 200 and created["userDomainType"] == "none"
    user_url = f"{users_url(box, WRITER)}/{created['id']}"
    assert await call(http, "DELETE", user_url) == (403, INSUFFICIENT)
    assert await call(http, "PATCH", user_url, {"State": "active"}) == (403, INSUFFICIENT)
    status, renamed = await call(http, "PATCH", user_url, {"displayName": "Renamed"})
    assert status == 200 and renamed["displayName"] == "Renamed"  # updating is a writer's


async def test_an_unknown_customer_is_still_404_not_403(box: Sandbox, http: aiohttp.ClientSession) -> None:
    status, answer = await call(http, "GET", users_url(box, "11111111-0000-4000-8000-0000000000ff"))
    assert status == 404 and answer["code"] == TENANT_NOT_FOUND_CODE and "data" not in answer


# ---------------------------------------------------------------------------------------------------------------
# Soft-deleted users


async def test_the_userstate_filter_lists_only_the_deleted(box: Sandbox, http: aiohttp.ClientSession) -> None:
    deleted = await every_page(http, box, f"{users_url(box, FULL)}?size=0&filter={quote(DELETED_FILTER)}")
    assert [u["userPrincipalName"] for u in deleted] == [
        "bob@full.onmicrosoft.com",
        "cy@full.onmicrosoft.com",
    ]
    assert all(u["state"] == "inactive" and u["softDeletionTime"] for u in deleted)
    assert deleted[0]["softDeletionTime"] == DELETED_AT  # as the data file says
    plain = await every_page(http, box, users_url(box, FULL))
    assert [u["userPrincipalName"] for u in plain] == ["ann@full.onmicrosoft.com", "dee@full.onmicrosoft.com"]
    assert all(u["state"] == "active" for u in plain)
    active_filter = DELETED_FILTER.replace("Inactive", "Active")
    assert await every_page(http, box, f"{users_url(box, FULL)}?filter={quote(active_filter)}") == plain


async def test_the_filter_holds_across_pages_and_tokens_do_not_cross(
    box: Sandbox, http: aiohttp.ClientSession
) -> None:
    for name in ("eve", "fay", "gus"):  # 2 + 3 deleted users: the filtered list takes three pages of 2
        status, created = await call(
            http, "POST", users_url(box, FULL), new_user(f"{name}@full.onmicrosoft.com")
        )
        assert status == 200
        assert (await call(http, "DELETE", f"{users_url(box, FULL)}/{created['id']}"))[0] == 204
    filtered_url = f"{users_url(box, FULL)}?filter={quote(DELETED_FILTER)}"
    deleted = await every_page(http, box, filtered_url)
    assert [u["userPrincipalName"].split("@")[0] for u in deleted] == ["bob", "cy", "eve", "fay", "gus"]
    status, first = await call(http, "GET", users_url(box, FULL) + "?size=1")
    token = {h["key"]: h["value"] for h in first["links"]["next"]["headers"]}
    status, crossed = await call(http, "GET", filtered_url, headers=token)
    assert status == 400 and crossed["code"] == INVALID_INPUT_CODE


@pytest.mark.parametrize(
    "text",
    [
        '{"Field":"UserPrincipalName","Value":"ann@full.onmicrosoft.com","Operator":"equals"}',
        '{"Field":"UserState","Value":"Inactive","Operator":"contains"}',
        '{"Field":"UserState","Value":"Gone","Operator":"equals"}',
        "not json",
    ],
)
async def test_a_filter_the_sandbox_cannot_answer_is_refused_not_ignored(
    box: Sandbox, http: aiohttp.ClientSession, text: str
) -> None:
    status, answer = await call(http, "GET", f"{users_url(box, FULL)}?filter={quote(text)}")
    assert status == 400 and answer["code"] == INVALID_INPUT_CODE and answer["data"] == ["filter"]


async def test_a_deleted_user_keeps_its_upn_until_restored(box: Sandbox, http: aiohttp.ClientSession) -> None:
    status, refused = await call(http, "POST", users_url(box, FULL), new_user("BOB@full.onmicrosoft.com"))
    assert status == 400 and refused["code"] == DUPLICATE_UPN_CODE
    assert (
        refused["description"]
        == "Another object with the same value for property userPrincipalName already exists."
    )
    assert refused["data"] == ["userPrincipalName", "ObjectConflict"]
    bob = box.store.user_by_upn(FULL, "bob@full.onmicrosoft.com")
    assert bob is not None and bob["state"] == "inactive"
    restore = {"State": "active", "Attributes": {"ObjectType": "CustomerUser"}}  # as documented
    status, restored = await call(http, "PATCH", f"{users_url(box, FULL)}/{bob['id']}", restore)
    assert status == 200 and restored["state"] == "active" and restored["softDeletionTime"] is None
    assert restored["id"] == bob["id"] and restored["links"]["self"]["uri"].endswith(bob["id"])
    plain = await every_page(http, box, users_url(box, FULL))
    assert "bob@full.onmicrosoft.com" in [u["userPrincipalName"] for u in plain]
    deleted = await every_page(http, box, f"{users_url(box, FULL)}?filter={quote(DELETED_FILTER)}")
    assert [u["userPrincipalName"] for u in deleted] == ["cy@full.onmicrosoft.com"]
    assert (await call(http, "POST", users_url(box, FULL), new_user("bob@full.onmicrosoft.com")))[0] == 400


async def test_deletes_and_restores_survive_a_restart_with_their_time(
    box: Sandbox, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    dee = box.store.user_by_upn(FULL, "dee@full.onmicrosoft.com")
    cy = box.store.user_by_upn(FULL, "cy@full.onmicrosoft.com")
    assert dee is not None and cy is not None
    assert (await call(http, "DELETE", f"{users_url(box, FULL)}/{dee['id']}"))[0] == 204
    assert (await call(http, "PATCH", f"{users_url(box, FULL)}/{cy['id']}", {"State": "active"}))[0] == 200
    deleted_at = box.store.user_by_upn(FULL, "dee@full.onmicrosoft.com")["softDeletionTime"]  # type: ignore[index]
    # The first sandbox still runs: the file holds its snapshot and the logged writes, as a kill -9 leaves it.
    again = Sandbox(parse_data(DATA), SandboxOptions(seed=0), state_path=tmp_path / "state.json")
    await again.start()
    try:
        kept_dee = again.store.user_by_upn(FULL, "dee@full.onmicrosoft.com")
        kept_cy = again.store.user_by_upn(FULL, "cy@full.onmicrosoft.com")
        assert (
            kept_dee is not None
            and kept_dee["state"] == "inactive"
            and kept_dee["softDeletionTime"] == deleted_at
        )
        assert kept_cy is not None and kept_cy["state"] == "active" and kept_cy["softDeletionTime"] is None
        status, refused = await call(
            http, "POST", users_url(again, FULL), new_user("dee@full.onmicrosoft.com")
        )
        assert status == 400 and refused["code"] == DUPLICATE_UPN_CODE  # the index is rebuilt from the state
    finally:
        await again.stop()


# ---------------------------------------------------------------------------------------------------------------
# Answer shapes


async def test_size_zero_is_the_default_page(box: Sandbox, http: aiohttp.ClientSession) -> None:
    for name in ("hal", "ivy"):
        assert (await call(http, "POST", users_url(box, FULL), new_user(f"{name}@full.onmicrosoft.com")))[
            0
        ] == 200
    status, zero = await call(http, "GET", users_url(box, FULL) + "?size=0")
    status_default, default = await call(http, "GET", users_url(box, FULL))
    assert status == status_default == 200
    assert [u["id"] for u in zero["items"]] == [u["id"] for u in default["items"]] and len(zero["items"]) == 2
    assert "size=2" in zero["links"]["next"]["uri"]  # the next page asks for the page it got


async def test_list_items_carry_links_self_and_no_password_profile(
    box: Sandbox, http: aiohttp.ClientSession
) -> None:
    status, created = await call(http, "POST", users_url(box, FULL), new_user("jo@full.onmicrosoft.com"))
    assert status == 200 and created["passwordProfile"]["password"] == PASSWORD  # echoed once, as documented
    items = await every_page(http, box, users_url(box, FULL))
    assert len(items) == 3
    for item in items:
        assert "passwordProfile" not in item and PASSWORD not in json.dumps(item)
        link = item["links"]["self"]
        assert link == {"uri": f"/customers/{FULL}/users/{item['id']}", "method": "GET", "headers": []}
        status, fetched = await call(http, "GET", f"{box.url}/v1{link['uri']}")
        assert status == 200 and fetched["id"] == item["id"] and fetched["links"] == item["links"]
    assert {item["userDomainType"] for item in items} == {"none"}


async def test_data_only_when_there_is_some(box: Sandbox, http: aiohttp.ClientSession) -> None:
    status, missing = await call(http, "GET", f"{users_url(box, FULL)}/11111111-0000-4000-8000-00000000dead")
    assert status == 404 and set(missing) == {"code", "description", "source"}
    status, incomplete = await call(
        http, "POST", users_url(box, FULL), {"userPrincipalName": "x@full.onmicrosoft.com"}
    )
    assert status == 400 and incomplete["data"] and "displayName" in incomplete["data"]


# ---------------------------------------------------------------------------------------------------------------
# The data file


@pytest.mark.parametrize(
    "extra,users,message",
    [
        ('gdapRoles = ["User Admin"]', "", "unknown role 'User Admin'"),
        ('gdapRoles = "User Administrator"', "", "gdapRoles must be a list"),
        ('relationship = "no"', "", "relationship must be true or false"),
        ("", 'state = "gone"', "state must be active or inactive"),
        ("", 'softDeletionTime = "2026-11-20T09:30:00Z"', "softDeletionTime is for a soft-deleted user"),
        ("", 'state = "inactive"\nsoftDeletionTime = "yesterday"', "softDeletionTime must be"),
    ],
)
def test_mistakes_in_the_new_keys_are_one_line(extra: str, users: str, message: str) -> None:
    with pytest.raises(SandboxDataError) as raised:
        parse_data(_customer(FULL, "full", extra, "") + users, origin="data.toml")
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert str(raised.value).startswith("data.toml: customers[0]")


def test_roles_are_named_as_entra_names_them_whatever_the_case() -> None:
    data = parse_data(DATA)
    writer = data.customer(WRITER)
    assert writer is not None and writer.gdap_roles == ("Directory Writers", "Directory Readers")
    full = data.customer(FULL)
    assert full is not None and full.gdap_roles is None and full.relationship
