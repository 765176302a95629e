"""The service's refusals that change what a run does (issue 15), over real HTTP on 127.0.0.1 port 0: a taken UPN
in every documented shape, a refusal for lack of permission (its own error, one line naming the roles), the
service's `data` kept in the error's text; then the same against the sandbox, and its soft-deleted users
(listed with the `UserState` filter, paged and bounded; restored by PATCH).
"""

from __future__ import annotations

import uuid
from typing import Any

import aiohttp
import pytest

from bulkonboard.errors import CustomerNotFound
from bulkonboard.sandbox import Sandbox, SandboxOptions, parse_data
from bulkonboard.service import http as service_http
from bulkonboard.service.partnercenter import (
    EndlessPaging,
    PartnerCenterClient,
    PermissionDenied,
    Refused,
    StaticTokens,
)
from tests.test_partnercenter import CUSTOMER, FakeServer, answer, jane, pc, session

__all__ = ["session"]  # the fixture, shared with test_partnercenter

DUPLICATE_TEXT = "Another object with the same value for property userPrincipalName already exists."


@pytest.mark.parametrize(
    ("status", "body"),
    [
        # Partner Center's shape, the text in `description`
        (400, {"code": 0, "description": DUPLICATE_TEXT, "source": "PartnerFD"}),
        # Partner Center's shape, the detail code in `data` and a description that says nothing of it
        (
            400,
            {
                "code": 800002,
                "description": "Invalid input.",
                "data": ["userPrincipalName", "ObjectConflict"],
            },
        ),
        # the text only in `data`, on a 409
        (409, {"code": 409, "description": "Conflict.", "data": [DUPLICATE_TEXT], "source": "PartnerFD"}),
        # 409 with the detail code as the code
        (409, {"code": "ObjectConflict", "description": "Conflict."}),
        # Graph's shape: the detail code in `details`
        (
            400,
            {
                "error": {
                    "code": "Request_BadRequest",
                    "message": "One or more properties are invalid.",
                    "details": [{"code": "ObjectConflict", "target": "userPrincipalName"}],
                }
            },
        ),
        # Graph's shape, its text in `message`
        (400, {"error": {"code": "Request_BadRequest", "message": DUPLICATE_TEXT}}),
    ],
)
async def test_a_taken_upn_is_recognised_in_every_documented_shape(
    session: aiohttp.ClientSession, status: int, body: dict[str, Any]
) -> None:
    async with FakeServer(answer(body, status)) as srv:
        with pytest.raises(Refused) as caught:
            await pc(session, srv.url).create_user(CUSTOMER, jane(), request_id="r-dup")
    assert caught.value.is_duplicate_upn
    assert caught.value.status == status


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, {"code": 800002, "description": "The usage location is not valid.", "data": ["usageLocation"]}),
        (400, {"code": 90001, "description": "Conflict."}),  # an undocumented code alone says nothing
        (403, {"code": "ObjectConflict", "description": DUPLICATE_TEXT}),  # not a status a taken UPN gets
        (409, {"code": 409, "description": "The resource was modified by someone else."}),
    ],
)
async def test_other_refusals_are_not_a_taken_upn(
    session: aiohttp.ClientSession, status: int, body: dict[str, Any]
) -> None:
    async with FakeServer(answer(body, status)) as srv:
        with pytest.raises(Refused) as caught:
            await pc(session, srv.url).create_user(CUSTOMER, jane(), request_id="r-other")
    assert not caught.value.is_duplicate_upn


async def test_the_services_data_is_kept_in_the_errors_text_once(session: aiohttp.ClientSession) -> None:
    body = {
        "code": 60012,
        "description": "Not enough licenses.",
        "data": ["Office 365 E3: 0 available", "Not enough licenses."],  # repeats the description: shown once
        "source": "PartnerFD",
    }
    async with FakeServer(answer(body, 400)) as srv:
        with pytest.raises(Refused) as caught:
            await pc(session, srv.url).create_user(CUSTOMER, jane(), request_id="r-data")
    error = caught.value
    assert error.data == ("Office 365 E3: 0 available", "Not enough licenses.")
    assert error.description == "Not enough licenses. (data: Office 365 E3: 0 available)"
    assert "(data: Office 365 E3: 0 available)" in str(error) and "\n" not in str(error)


async def test_the_password_never_reaches_data(session: aiohttp.ClientSession) -> None:
    password = jane().password
    body = {
        "code": 800002,
        "description": "Invalid.",
        "data": [f"password {password} is weak", {"x": password}],
    }
    async with FakeServer(answer(body, 400)) as srv:
        with pytest.raises(Refused) as caught:
            await pc(session, srv.url).create_user(CUSTOMER, jane(), request_id="r-pw")
    assert password not in str(caught.value) and password not in repr(caught.value.data)
    assert caught.value.data == ("password *** is weak",)


# --- permission ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "relationship"),
    [
        ({"code": 900308, "description": "Insufficient privileges to complete the operation."}, False),
        ({"code": 20002, "description": "The partner has no relationship with the customer."}, True),
        ({"error": {"code": "Authorization_RequestDenied", "message": "Insufficient privileges."}}, False),
    ],
)
async def test_a_refusal_for_lack_of_permission_is_its_own_error(
    session: aiohttp.ClientSession, body: dict[str, Any], relationship: bool
) -> None:
    async with FakeServer(answer(body, 403)) as srv:
        with pytest.raises(PermissionDenied) as caught:
            await pc(session, srv.url).create_user(CUSTOMER, jane(), request_id="r-403")
    error = caught.value
    assert isinstance(error, Refused)  # what handled a refusal before still does
    assert (error.method, error.status, error.request_id) == ("POST", 403, "r-403")
    assert error.customer_id == CUSTOMER and error.no_relationship is relationship
    line = str(error)
    assert "\n" not in line and "permission denied" in line and f"/v1/customers/{CUSTOMER}/users" in line
    if relationship:
        assert "no relationship with customer" in line and "20002" in line
    else:
        assert "User Administrator or Directory Writers" in line


async def test_another_403_is_a_plain_refusal(session: aiohttp.ClientSession) -> None:
    body = {"code": 900309, "description": "Blocked by Conditional Access."}
    async with FakeServer(answer(body, 403)) as srv:
        with pytest.raises(Refused) as caught:
            await pc(session, srv.url).create_user(CUSTOMER, jane(), request_id="r-ca")
    assert not isinstance(caught.value, PermissionDenied)


# --- the sandbox -------------------------------------------------------------------------------------------------

FULL = "22222222-0000-4000-8000-000000000001"
READER = "22222222-0000-4000-8000-000000000002"
NO_RELATIONSHIP = "22222222-0000-4000-8000-000000000003"
WRITER = "22222222-0000-4000-8000-000000000004"
DELETED_AT = "2026-11-20T09:30:00Z"


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


def _deleted(name: str, upn: str, when: str | None) -> str:
    stamp = f'softDeletionTime = "{when}"' if when else ""
    return f"""
[[customers.users]]
userPrincipalName = "{upn}@{name}.onmicrosoft.com"
displayName = "{upn}"
state = "inactive"
{stamp}
"""


DATA = parse_data(
    _customer(FULL, "full", users=_deleted("full", "bob", DELETED_AT) + _deleted("full", "cy", None))
    + _customer(READER, "reader", 'gdapRoles = ["Directory Readers"]', _deleted("reader", "dot", None))
    + _customer(NO_RELATIONSHIP, "norel", "relationship = false")
    + _customer(WRITER, "writer", 'gdapRoles = ["Directory Writers"]', _deleted("writer", "eve", None))
)


def _client(session: aiohttp.ClientSession, box: Sandbox) -> PartnerCenterClient:
    return PartnerCenterClient(
        session, StaticTokens("sandbox"), base_url=box.url, correlation_id=str(uuid.uuid4())
    )


async def test_the_sandboxs_taken_upn_is_recognised_with_its_data(session: aiohttp.ClientSession) -> None:
    async with Sandbox(DATA) as box:
        with pytest.raises(Refused) as caught:
            await _client(session, box).create_user(
                FULL, jane(userPrincipalName="BOB@full.onmicrosoft.com"), request_id=str(uuid.uuid4())
            )
    assert caught.value.is_duplicate_upn  # a soft-deleted user still holds its UPN
    assert "ObjectConflict" in caught.value.data and "ObjectConflict" in str(caught.value)


@pytest.mark.parametrize(("customer", "code"), [(READER, 900308), (NO_RELATIONSHIP, 20002)])
async def test_the_sandboxs_refusals_for_permission(
    session: aiohttp.ClientSession, customer: str, code: int
) -> None:
    async with Sandbox(DATA) as box:
        with pytest.raises(PermissionDenied) as caught:
            await _client(session, box).create_user(
                customer, jane(userPrincipalName="new@reader.onmicrosoft.com"), request_id="r-sb"
            )
        assert box.stats.creations == 0
    assert caught.value.code == code and caught.value.customer_id == customer
    assert caught.value.no_relationship is (code == 20002)


async def test_preflight_against_a_customer_without_relationship_stops(
    session: aiohttp.ClientSession,
) -> None:
    async with Sandbox(DATA) as box:
        with pytest.raises(CustomerNotFound) as caught:
            await _client(session, box).preflight(NO_RELATIONSHIP)
    assert caught.value.exit_code == 3 and "20002" in caught.value.message


async def test_deleted_users_are_listed_apart_across_pages(session: aiohttp.ClientSession) -> None:
    async with Sandbox(DATA, SandboxOptions(page_size=1)) as box:
        client = _client(session, box)
        deleted = [u async for u in client.iter_users(FULL, deleted=True)]
        active = [u async for u in client.iter_users(FULL)]
    assert sorted(u["userPrincipalName"] for u in deleted) == [
        "bob@full.onmicrosoft.com",
        "cy@full.onmicrosoft.com",
    ]
    assert {u["state"] for u in deleted} == {"inactive"}
    assert next(u for u in deleted if u["userPrincipalName"].startswith("bob"))[
        "softDeletionTime"
    ].startswith("2026-11-20T09:30:00")
    assert [u["userPrincipalName"] for u in active] == ["ann@full.onmicrosoft.com"]


async def test_the_deleted_list_is_bounded_like_the_plain_one(
    session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_http, "MAX_PAGES", 1)
    async with Sandbox(DATA, SandboxOptions(page_size=1)) as box:
        with pytest.raises(EndlessPaging):
            [u async for u in _client(session, box).iter_users(FULL, deleted=True)]


async def test_restore_brings_a_deleted_user_back(session: aiohttp.ClientSession) -> None:
    async with Sandbox(DATA) as box:
        client = _client(session, box)
        deleted = [u async for u in client.iter_users(FULL, deleted=True)]
        bob = next(u for u in deleted if u["userPrincipalName"].startswith("bob"))
        restored = await client.restore_user(FULL, bob["id"], request_id=str(uuid.uuid4()))
        active = [u["userPrincipalName"] async for u in client.iter_users(FULL)]
        still_deleted = [u["userPrincipalName"] async for u in client.iter_users(FULL, deleted=True)]
    assert restored["id"] == bob["id"] and restored["state"] == "active"
    assert "bob@full.onmicrosoft.com" in active and "bob@full.onmicrosoft.com" not in still_deleted


async def test_restore_without_the_role_names_user_administrator(session: aiohttp.ClientSession) -> None:
    async with Sandbox(DATA) as box:
        client = _client(session, box)
        eve = [u async for u in client.iter_users(WRITER, deleted=True)][0]
        with pytest.raises(PermissionDenied) as caught:
            await client.restore_user(WRITER, eve["id"], request_id=str(uuid.uuid4()))
    line = str(caught.value)
    assert "needs the GDAP role User Administrator in" in line and "Directory Writers" not in line
    assert caught.value.method == "PATCH" and caught.value.code == 900308
