"""The HTTP client against tiny fake servers (group 1) and against the sandbox emulator (group 2, at the end).

Each fake server is an aiohttp app on 127.0.0.1 port 0 that records what it received, so the tests assert what
went over the wire (headers, exact body texts) as well as what the client made of the answer.
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDictProxy

from bulkonboard.errors import AuthError, CustomerNotFound, ServiceUnavailable
from bulkonboard.model import UserRow
from bulkonboard.sandbox import Sandbox, SandboxOptions, parse_data
from bulkonboard.service.errors import (
    ApiError,
    MalformedAnswer,
    Refused,
    ServerError,
    Throttled,
    TransportError,
    Unauthorized,
)
from bulkonboard.service.graph import GraphClient, ServiceFacts
from bulkonboard.service.http import MAX_RETRY_AFTER, Audience, StaticTokens, parse_retry_after
from bulkonboard.service.partnercenter import CreatedUser, PartnerCenterClient
from bulkonboard.sheets import facts

CUSTOMER = "3c9a1f0e-0000-4000-8000-00000000c0de"
CORRELATION = "0f0f0f0f-1111-4222-8333-444444444444"
PASSWORD = "Pa55word!Zeta#91"  # distinctive, so a leak is unmistakable
TOKEN = "pc-token-xyz"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Seen:
    method: str
    path: str
    raw_path: str
    query: dict[str, str]
    headers: CIMultiDictProxy[str]
    body: bytes


class FakeServer:
    """One aiohttp app that answers every path with `handler` and records each request it receives."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.seen: list[Seen] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(
            Seen(request.method, request.path, request.raw_path, dict(request.query), request.headers, body)
        )
        return await self.handler(request)

    async def __aenter__(self) -> FakeServer:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


def answer(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        return web.json_response(payload, status=status, headers=headers)

    return handle


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as client_session:
        yield client_session


def pc(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> PartnerCenterClient:
    return PartnerCenterClient(
        session, StaticTokens(TOKEN), base_url=url, correlation_id=CORRELATION, **kwargs
    )


def jane(**changes: Any) -> UserRow:
    fields: dict[str, Any] = dict(
        row=2,
        userPrincipalName="Jane.Doe@Contoso.com",
        firstName="Zoë",
        lastName="O'Brien-Ünal",
        displayName="Zoë O'Brien-Ünal",
        usageLocation="NA",
        immutableId="000123",
        password=PASSWORD,
        forceChangePassword=False,
    )
    fields.update(changes)
    return UserRow(**fields)


def assert_no_secret(exc: BaseException, secret: str) -> None:
    """The secret is nowhere in the exception, its arguments, attributes or chain."""
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None:
            continue
        texts = [str(current), repr(current), *map(repr, current.args), repr(vars(current))]
        for text in texts:
            assert secret not in text, f"{type(current).__name__} leaks the secret: {text}"
        pending += [current.__cause__, current.__context__]


# ---------------------------------------------------------------------------------------------------------------
# headers and the create body


async def test_every_call_sends_partner_center_headers(session: aiohttp.ClientSession) -> None:
    async with FakeServer(
        answer({"id": CUSTOMER, "companyProfile": {"domain": "contoso.onmicrosoft.com"}})
    ) as srv:
        client = pc(session, srv.url, application="bulkonboard-tests", locale="de-DE")
        customer = await client.get_customer(CUSTOMER)
        await client.get_customer(CUSTOMER)
    assert customer["companyProfile"]["domain"] == "contoso.onmicrosoft.com"
    first, second = srv.seen
    assert (first.method, first.path) == ("GET", f"/v1/customers/{CUSTOMER}")
    headers = first.headers
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["Accept"] == "application/json"
    assert headers["MS-CorrelationId"] == CORRELATION
    assert headers["MS-Contract-Version"] == "v1"
    assert headers["MS-PartnerCenter-Application"] == "bulkonboard-tests"
    assert headers["X-Locale"] == "de-DE"
    uuid.UUID(headers["MS-RequestId"])
    assert second.headers["MS-RequestId"] != headers["MS-RequestId"], "each call gets its own request id"
    assert second.headers["MS-CorrelationId"] == CORRELATION


async def test_create_sends_the_text_as_typed_and_keeps_four_fields(session: aiohttp.ClientSession) -> None:
    echoed = {
        "id": "4b0c2a8e-1d8c-4f55-9a38-5b1c3f1e0001",
        "userPrincipalName": "Jane.Doe@Contoso.com",
        "state": "active",
        "userDomainType": "managed",
        "passwordProfile": {"password": PASSWORD, "forceChangePassword": False},
        "softDeletionTime": None,
    }
    async with FakeServer(answer(echoed)) as srv:
        created = await pc(session, srv.url).create_user(CUSTOMER, jane(), request_id="req-fixed-1")
    assert created == CreatedUser(
        id="4b0c2a8e-1d8c-4f55-9a38-5b1c3f1e0001",
        userPrincipalName="Jane.Doe@Contoso.com",
        state="active",
        userDomainType="managed",
    )
    (sent,) = srv.seen
    assert (sent.method, sent.path) == ("POST", f"/v1/customers/{CUSTOMER}/users")
    assert sent.headers["MS-RequestId"] == "req-fixed-1"
    assert sent.headers["Content-Type"].startswith("application/json")
    assert json.loads(sent.body) == {
        "userPrincipalName": "Jane.Doe@Contoso.com",
        "firstName": "Zoë",
        "lastName": "O'Brien-Ünal",
        "displayName": "Zoë O'Brien-Ünal",
        "usageLocation": "NA",
        "immutableId": "000123",
        "passwordProfile": {"password": PASSWORD, "forceChangePassword": False},
        "attributes": {"objectType": "CustomerUser"},
    }


async def test_create_leaves_out_empty_optional_fields(session: aiohttp.ClientSession) -> None:
    async with FakeServer(answer({"id": "u-1", "userPrincipalName": "jane.doe@contoso.com"})) as srv:
        row = jane(firstName="", lastName="", immutableId="", forceChangePassword=True)
        created = await pc(session, srv.url).create_user(CUSTOMER, row, request_id="r")
    body = json.loads(srv.seen[0].body)
    assert set(body) == {"userPrincipalName", "displayName", "usageLocation", "passwordProfile", "attributes"}
    assert body["passwordProfile"] == {"password": PASSWORD, "forceChangePassword": True}
    assert created.state == "unknown" and created.userDomainType is None


async def test_create_without_a_password_is_a_caller_bug(session: aiohttp.ClientSession) -> None:
    async with FakeServer(answer({"id": "u-1"})) as srv:
        with pytest.raises(ValueError, match="password"):
            await pc(session, srv.url).create_user(CUSTOMER, jane(password=""), request_id="r")
    assert srv.seen == []


# ---------------------------------------------------------------------------------------------------------------
# paging


def paged_users(pages: list[list[dict[str, Any]]], *, next_query: str = "?seekOperation=Next") -> Handler:
    """Partner Center-style pages: page k+1 is served only to a request carrying page k's continuation token."""

    async def handle(request: web.Request) -> web.StreamResponse:
        token = request.headers.get("MS-ContinuationToken")
        index = 0 if token is None else int(token.removeprefix("tok-")) - 1
        if token is not None and request.query.get("seekOperation") != "Next":
            return web.json_response({"code": 800002, "description": "bad seek"}, status=400)
        body: dict[str, Any] = {
            "totalCount": len(pages[index]),
            "items": pages[index],
            "attributes": {"objectType": "Collection"},
        }
        if index + 1 < len(pages):
            body["links"] = {
                "next": {
                    "uri": f"/customers/{CUSTOMER}/users{next_query}",
                    "method": "GET",
                    "headers": [{"key": "MS-ContinuationToken", "value": f"tok-{index + 2}"}],
                }
            }
        return web.json_response(body)

    return handle


def user(n: int, state: str | None = "active") -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": f"id-{n}",
        "userPrincipalName": f"User{n}@Contoso.com",
        "displayName": f"U {n}",
    }
    if state is not None:
        item["state"] = state
    return item


THREE_PAGES = [[user(1), user(2), user(3)], [user(4), user(5)], [user(6), user(7)]]


async def test_iter_users_follows_three_pages_with_continuation_tokens(
    session: aiohttp.ClientSession,
) -> None:
    async with FakeServer(paged_users(THREE_PAGES)) as srv:
        users = [u async for u in pc(session, srv.url).iter_users(CUSTOMER)]
    assert [u["id"] for u in users] == [f"id-{n}" for n in range(1, 8)]
    assert [s.headers.get("MS-ContinuationToken") for s in srv.seen] == [None, "tok-2", "tok-3"]
    assert {s.path for s in srv.seen} == {f"/v1/customers/{CUSTOMER}/users"}
    assert [s.query.get("seekOperation") for s in srv.seen] == [None, "Next", "Next"]
    assert len({s.headers["MS-RequestId"] for s in srv.seen}) == 3


async def test_find_user_by_upn_is_case_insensitive_and_stops_at_the_match(
    session: aiohttp.ClientSession,
) -> None:
    async with FakeServer(paged_users(THREE_PAGES)) as srv:
        client = pc(session, srv.url)
        found = await client.find_user_by_upn(CUSTOMER, "user4@CONTOSO.COM")
        assert found is not None and found["id"] == "id-4"
        assert len(srv.seen) == 2, "the third page is not needed"
        assert await client.find_user_by_upn(CUSTOMER, "nobody@contoso.com") is None
        assert len(srv.seen) == 5


async def test_a_next_link_that_repeats_a_page_stops_instead_of_looping(
    session: aiohttp.ClientSession,
) -> None:
    async def same_page_forever(request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {
                "items": [user(1)],
                "links": {"next": {"uri": f"/customers/{CUSTOMER}/users?seekOperation=Next", "headers": []}},
            }
        )

    async with FakeServer(same_page_forever) as srv:
        with pytest.raises(MalformedAnswer, match="repeats"):
            [u async for u in pc(session, srv.url).iter_users(CUSTOMER)]
    assert len(srv.seen) == 2


async def test_a_next_link_with_a_control_character_in_a_header_is_a_malformed_answer(
    session: aiohttp.ClientSession,
) -> None:
    page = {
        "items": [user(1)],
        "links": {
            "next": {
                "uri": f"/customers/{CUSTOMER}/users",
                "headers": [{"key": "MS-ContinuationToken", "value": "a\r\nX-Evil: 1"}],
            }
        },
    }
    async with FakeServer(answer(page)) as srv:
        with pytest.raises(MalformedAnswer, match="malformed header"):
            [u async for u in pc(session, srv.url).iter_users(CUSTOMER)]
    assert len(srv.seen) == 1


async def test_a_next_link_to_another_host_is_not_followed(session: aiohttp.ClientSession) -> None:
    async with FakeServer(answer({"items": []})) as elsewhere:
        page = {"items": [user(1)], "links": {"next": {"uri": f"{elsewhere.url}/v1/steal"}}}
        async with FakeServer(answer(page)) as srv:
            with pytest.raises(MalformedAnswer, match="leaves the service"):
                [u async for u in pc(session, srv.url).iter_users(CUSTOMER)]
    assert elsewhere.seen == [], "the token must not travel to another host"


async def test_a_redirect_is_not_followed(session: aiohttp.ClientSession) -> None:
    async with FakeServer(answer({"id": "x"})) as elsewhere:

        async def redirect(request: web.Request) -> web.StreamResponse:
            raise web.HTTPFound(f"{elsewhere.url}/v1/customers/{CUSTOMER}")

        async with FakeServer(redirect) as srv:
            with pytest.raises(MalformedAnswer) as caught:
                await pc(session, srv.url).get_customer(CUSTOMER)
    assert caught.value.status == 302
    assert elsewhere.seen == []


# ---------------------------------------------------------------------------------------------------------------
# error mapping


async def test_429_with_retry_after_seconds_and_the_429_body_shape(session: aiohttp.ClientSession) -> None:
    body = {"statusCode": 429, "message": "Rate limit is exceeded. Try again in 57 seconds."}
    async with FakeServer(answer(body, 429, {"Retry-After": "7"})) as srv:
        with pytest.raises(Throttled) as caught:
            await pc(session, srv.url).create_user(CUSTOMER, jane(), request_id="req-429")
    error = caught.value
    assert (error.status, error.code, error.retry_after) == (429, 429, 7.0)
    assert error.description == "Rate limit is exceeded. Try again in 57 seconds."
    assert (error.method, error.request_id) == ("POST", "req-429")
    assert error.url == f"{srv.url}/v1/customers/{CUSTOMER}/users"


async def test_429_with_an_http_date_counts_from_the_answers_date(session: aiohttp.ClientSession) -> None:
    server_now = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)
    headers = {
        "Date": format_datetime(server_now, usegmt=True),
        "Retry-After": format_datetime(server_now + timedelta(seconds=42), usegmt=True),
    }
    body = {"statusCode": 429, "message": "Rate limit is exceeded."}
    async with FakeServer(answer(body, 429, headers)) as srv:
        with pytest.raises(Throttled) as caught:
            await pc(session, srv.url).get_customer(CUSTOMER)
    assert caught.value.retry_after == 42.0


async def test_429_without_retry_after_reads_the_message(session: aiohttp.ClientSession) -> None:
    body = {"statusCode": 429, "message": "Rate limit is exceeded. Try again in 57 seconds."}
    async with FakeServer(answer(body, 429)) as srv:
        with pytest.raises(Throttled) as caught:
            await pc(session, srv.url).get_customer(CUSTOMER)
    assert caught.value.retry_after == 57.0


async def test_a_huge_retry_after_is_capped(session: aiohttp.ClientSession) -> None:
    async with FakeServer(
        answer({"statusCode": 429, "message": "slow down"}, 429, {"Retry-After": "86400"})
    ) as srv:
        with pytest.raises(Throttled) as caught:
            await pc(session, srv.url).get_customer(CUSTOMER)
    assert caught.value.retry_after == MAX_RETRY_AFTER


NOW = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("120", 120.0),
        (" 3 ", 3.0),
        ("1.9", 1.0),
        ("0", 0.0),
        ("100000", MAX_RETRY_AFTER),
        ("-5", None),
        ("soon", None),
        ("Fri, 01 Mar 2024 12:00:30 GMT", 30.0),
        ("Fri, 01 Mar 2024 12:00:30 +0000", 30.0),
        ("Fri, 01 Mar 2024 11:59:00 GMT", 0.0),  # already past
        ("Sat, 02 Mar 2024 12:00:00 GMT", MAX_RETRY_AFTER),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


def test_parse_retry_after_floors_a_date_against_a_naive_now() -> None:
    naive_now = datetime(2024, 3, 1, 12, 0, 0, 600000)  # taken as UTC
    assert parse_retry_after("Fri, 01 Mar 2024 12:00:30 GMT", naive_now) == 29.0


async def test_5xx_is_a_server_error_with_partnerfd_fields(session: aiohttp.ClientSession) -> None:
    body = {"code": 800003, "description": "Unexpected service error.", "source": "PartnerFD"}
    async with FakeServer(answer(body, 503, {"Retry-After": "5"})) as srv:
        with pytest.raises(ServerError) as caught:
            await pc(session, srv.url).get_customer(CUSTOMER)
    error = caught.value
    assert (error.status, error.code, error.description, error.retry_after) == (
        503,
        800003,
        "Unexpected service error.",
        5.0,
    )


async def test_a_gateway_page_is_described_not_quoted(session: aiohttp.ClientSession) -> None:
    async def gateway(request: web.Request) -> web.StreamResponse:
        return web.Response(
            status=502, text="<html><body>Bad gateway secret-page</body></html>", content_type="text/html"
        )

    async with FakeServer(gateway) as srv:
        with pytest.raises(ServerError) as caught:
            await pc(session, srv.url).get_customer(CUSTOMER)
    assert caught.value.status == 502
    assert "not JSON" in caught.value.description and "text/html" in caught.value.description
    assert "secret-page" not in str(caught.value)


async def test_a_4xx_business_refusal(session: aiohttp.ClientSession) -> None:
    body = {
        "code": 800002,
        "description": "The usage location is not valid.",
        "data": ["usageLocation"],
        "source": "PartnerFD",
    }
    async with FakeServer(answer(body, 400)) as srv:
        with pytest.raises(Refused) as caught:
            await pc(session, srv.url).create_user(CUSTOMER, jane(), request_id="req-400")
    error = caught.value
    assert type(error) is Refused
    assert (error.status, error.code, error.data) == (400, 800002, ("usageLocation",))
    assert error.description == "The usage location is not valid. (data: usageLocation)"  # `data` is kept
    assert not error.is_duplicate_upn
    assert "400 800002: The usage location is not valid. (data: usageLocation)" in str(error)
    assert "req-400" in str(error)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (
            400,
            {
                "code": 0,
                "description": "Another object with the same value for property userPrincipalName already exists.",
                "source": "PartnerFD",
            },
        ),
        (400, {"error": {"code": "ObjectConflict", "message": "Conflict."}}),
        (409, {"code": 409, "description": "A user with this userPrincipalName already exists."}),
    ],
)
async def test_duplicate_upn_is_recognised(
    session: aiohttp.ClientSession, status: int, body: dict[str, Any]
) -> None:
    async with FakeServer(answer(body, status)) as srv:
        with pytest.raises(Refused) as caught:
            await pc(session, srv.url).create_user(CUSTOMER, jane(), request_id="r")
    assert caught.value.is_duplicate_upn


async def test_401_is_unauthorized_so_the_token_can_be_refreshed(session: aiohttp.ClientSession) -> None:
    body = {"code": 800001, "description": "Partner token missing.", "source": "PartnerFD"}
    async with FakeServer(answer(body, 401)) as srv:
        with pytest.raises(Unauthorized) as caught:
            await pc(session, srv.url).get_customer(CUSTOMER)
    assert isinstance(caught.value, Refused) and isinstance(caught.value, ApiError)
    assert (caught.value.status, caught.value.code) == (401, 800001)
    assert TOKEN not in str(caught.value)


async def test_a_2xx_that_is_not_json_is_malformed(session: aiohttp.ClientSession) -> None:
    async def not_json(request: web.Request) -> web.StreamResponse:
        return web.Response(text=f"created {PASSWORD}", content_type="text/plain")

    async with FakeServer(not_json) as srv:
        with pytest.raises(MalformedAnswer) as caught:
            await pc(session, srv.url).create_user(CUSTOMER, jane(), request_id="req-mal")
    assert caught.value.status == 200 and caught.value.request_id == "req-mal"
    assert "not JSON" in caught.value.description
    assert_no_secret(caught.value, PASSWORD)


async def test_error_urls_carry_no_query(session: aiohttp.ClientSession) -> None:
    pages = [[user(1)], [user(2)]]
    serve_pages = paged_users(pages, next_query="?seekOperation=Next&continuation=opaque-secret")

    async def second_page_fails(request: web.Request) -> web.StreamResponse:
        if "MS-ContinuationToken" in request.headers:
            return web.json_response({"code": 800003, "description": "boom"}, status=500)
        return await serve_pages(request)

    async with FakeServer(second_page_fails) as srv:
        with pytest.raises(ServerError) as caught:
            [u async for u in pc(session, srv.url).iter_users(CUSTOMER)]
    assert caught.value.url == f"{srv.url}/v1/customers/{CUSTOMER}/users"
    assert "opaque-secret" not in str(caught.value)


# ---------------------------------------------------------------------------------------------------------------
# no answer at all


@asynccontextmanager
async def hang_up_server() -> AsyncIterator[tuple[str, asyncio.Event]]:
    """A raw TCP server that reads a whole request and closes the connection without a byte of answer."""
    received = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await reader.readexactly(length)
        received.set()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", received
    finally:
        server.close()
        await server.wait_closed()


async def test_a_dropped_connection_is_a_transport_error_with_unknown_outcome(
    session: aiohttp.ClientSession,
) -> None:
    async with hang_up_server() as (url, received):
        with pytest.raises(TransportError) as caught:
            await pc(session, url).create_user(CUSTOMER, jane(), request_id="req-dropped")
        assert received.is_set()
    error = caught.value
    assert error.maybe_processed, "the server had the whole request: it may have created the user"
    assert (error.method, error.request_id) == ("POST", "req-dropped")
    assert "without answering" in error.reason
    assert_no_secret(error, PASSWORD)
    assert_no_secret(error, TOKEN)


async def test_a_timeout_is_a_transport_error() -> None:
    never = asyncio.Event()

    async def wait_forever(request: web.Request) -> web.StreamResponse:
        await never.wait()
        return web.json_response({})

    timeout = aiohttp.ClientTimeout(total=10, sock_read=0.3)  # only the wait for the answer counts
    async with FakeServer(wait_forever) as srv, aiohttp.ClientSession(timeout=timeout) as short_session:
        try:
            with pytest.raises(TransportError) as caught:
                await pc(short_session, srv.url).create_user(CUSTOMER, jane(), request_id="req-slow")
        finally:
            never.set()  # let the handler finish so the server shuts down at once
    assert caught.value.maybe_processed
    assert "timed out" in caught.value.reason and caught.value.request_id == "req-slow"
    assert len(srv.seen) == 1


def closed_port() -> int:
    """A port on which nothing listens: bound, noted, released."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_refused_connection_certainly_created_nothing(session: aiohttp.ClientSession) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(TransportError) as caught:
        await pc(session, url).create_user(CUSTOMER, jane(), request_id="req-refused")
    assert not caught.value.maybe_processed
    assert caught.value.url == f"{url}/v1/customers/{CUSTOMER}/users"


# ---------------------------------------------------------------------------------------------------------------
# no password in any error


def echo_password(status: int) -> Handler:
    """A service that echoes the whole request into its answer, as Partner Center's create answer does."""

    async def handle(request: web.Request) -> web.StreamResponse:
        sent = await request.json()
        if status == 200:
            return web.json_response({"passwordProfile": sent["passwordProfile"], "state": "active"})
        return web.json_response(
            {"code": 1, "description": f"refused {json.dumps(sent)}", "data": [sent], "source": "PartnerFD"},
            status=status,
        )

    return handle


@pytest.mark.parametrize("status", [200, 400, 401, 429, 500])
async def test_no_error_ever_carries_the_password(session: aiohttp.ClientSession, status: int) -> None:
    async with FakeServer(echo_password(status)) as srv:
        with pytest.raises(ApiError) as caught:
            await pc(session, srv.url).create_user(CUSTOMER, jane(), request_id="req-echo")
    assert_no_secret(caught.value, PASSWORD)
    assert_no_secret(caught.value, TOKEN)
    assert caught.value.request_id == "req-echo"


@pytest.mark.parametrize("password", ['Quote"And\\Slash1', 'Tab\tAnd-Quote"9'])
async def test_a_password_quoted_inside_json_is_blotted_out_too(
    session: aiohttp.ClientSession, password: str
) -> None:
    async with FakeServer(echo_password(400)) as srv:
        with pytest.raises(ApiError) as caught:
            await pc(session, srv.url).create_user(CUSTOMER, jane(password=password), request_id="req-esc")
    escaped = json.dumps(password)[1:-1]
    assert escaped != password  # the service's JSON escapes it
    assert_no_secret(caught.value, password)
    assert_no_secret(caught.value, escaped)
    assert "***" in caught.value.description


@pytest.mark.parametrize("status", [200, 400, 503])
async def test_no_frame_of_the_traceback_keeps_the_answer(
    session: aiohttp.ClientSession, status: int
) -> None:
    """A traceback printed with its locals (a debugger, rich's show_locals) must not show the raw answer."""
    marker = "ANSWER-ONLY-" + uuid.UUID(int=status).hex
    # `data` is the service's detail and is kept (the reference says so); an echo of the request never is.
    body: dict[str, Any] = {
        "code": 1,
        "description": "no.",
        "data": [{"echo": marker}],
        "echo": {"password": marker},
    }
    async with FakeServer(answer(body, status)) as srv:
        with pytest.raises(ApiError) as caught:
            await pc(session, srv.url).create_user(CUSTOMER, jane(), request_id="req-tb")
    frame_count = 0
    assert caught.value.__traceback__ is not None
    traceback = caught.value.__traceback__.tb_next  # the first frame is this test's, which holds the marker
    while traceback is not None:
        frame_count += 1
        for name, value in traceback.tb_frame.f_locals.items():
            assert marker not in repr(value), (
                f"{traceback.tb_frame.f_code.co_name} keeps the answer in {name}"
            )
        traceback = traceback.tb_next
    assert frame_count >= 1, "the traceback reaches into the client"
    assert_no_secret(caught.value, marker)


def test_tokens_never_show_in_a_repr() -> None:
    assert TOKEN not in repr(StaticTokens(TOKEN, "graph-secret"))
    assert "graph-secret" not in repr(StaticTokens(TOKEN, "graph-secret"))


async def test_static_tokens_serve_graph_with_the_same_token_unless_given_one() -> None:
    assert await StaticTokens("a").token(Audience.GRAPH, "tenant") == "a"
    assert await StaticTokens("a", "g").token(Audience.GRAPH, "tenant") == "g"
    assert await StaticTokens("a", "g").token(Audience.PARTNER_CENTER, force_refresh=True) == "a"
    with pytest.raises(AuthError):
        StaticTokens("")


# ---------------------------------------------------------------------------------------------------------------
# get_user


async def test_get_user_404_is_none_but_a_missing_customer_is_an_error(
    session: aiohttp.ClientSession,
) -> None:
    async with FakeServer(answer({"code": 60002, "description": "User not found."}, 404)) as srv:
        assert await pc(session, srv.url).get_user(CUSTOMER, "u-1") is None
        assert srv.seen[0].path == f"/v1/customers/{CUSTOMER}/users/u-1"
    async with FakeServer(answer({"code": 60003, "description": "Tenant not found."}, 404)) as srv:
        with pytest.raises(Refused):
            await pc(session, srv.url).get_user(CUSTOMER, "u-1")


# ---------------------------------------------------------------------------------------------------------------
# preflight


def preflight_server(customer: Handler, users: Handler) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        return await (users if request.path.endswith("/users") else customer)(request)

    return handle


OK_CUSTOMER = answer({"id": CUSTOMER, "companyProfile": {"tenantId": CUSTOMER}})
OK_USERS = answer({"totalCount": 0, "items": []})


async def test_preflight_reads_the_customer_and_its_users(session: aiohttp.ClientSession) -> None:
    async with FakeServer(preflight_server(OK_CUSTOMER, OK_USERS)) as srv:
        customer = await pc(session, srv.url).preflight(CUSTOMER)
    assert customer["companyProfile"]["tenantId"] == CUSTOMER
    assert [s.path for s in srv.seen] == [f"/v1/customers/{CUSTOMER}", f"/v1/customers/{CUSTOMER}/users"]


async def test_preflight_401_is_an_auth_error(session: aiohttp.ClientSession) -> None:
    async with FakeServer(answer({"code": 800001, "description": "Partner token missing."}, 401)) as srv:
        with pytest.raises(AuthError) as caught:
            await pc(session, srv.url).preflight(CUSTOMER)
    message = caught.value.message
    assert "token refused" in message and "check the sign-in" in message and "\n" not in message
    assert TOKEN not in message


async def test_preflight_403_names_the_gdap_roles(session: aiohttp.ClientSession) -> None:
    forbidden = answer({"code": 900001, "description": "Insufficient privileges."}, 403)
    async with FakeServer(preflight_server(OK_CUSTOMER, forbidden)) as srv:
        with pytest.raises(AuthError) as caught:
            await pc(session, srv.url).preflight(CUSTOMER)
    assert "User Administrator" in caught.value.message and "Directory Writers" in caught.value.message
    assert caught.value.exit_code == 3


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (404, {"code": 60003, "description": "Tenant not found."}),
        (403, {"code": 20002, "description": "No relationship with the customer."}),
    ],
)
async def test_preflight_unknown_customer(
    session: aiohttp.ClientSession, status: int, body: dict[str, Any]
) -> None:
    async with FakeServer(answer(body, status)) as srv:
        with pytest.raises(CustomerNotFound) as caught:
            await pc(session, srv.url).preflight(CUSTOMER)
    assert CUSTOMER in caught.value.message and "--customer" in caught.value.message


async def test_preflight_unreachable_service(session: aiohttp.ClientSession) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(ServiceUnavailable) as caught:
        await pc(session, url).preflight(CUSTOMER)
    message = caught.value.message
    assert f"{url}/v1/customers/{CUSTOMER}" in message and "check" in message and "\n" not in message


async def test_preflight_server_error_is_service_unavailable(session: aiohttp.ClientSession) -> None:
    async with FakeServer(answer({"code": 800003, "description": "Unexpected."}, 500)) as srv:
        with pytest.raises(ServiceUnavailable, match="500 800003"):
            await pc(session, srv.url).preflight(CUSTOMER)


# ---------------------------------------------------------------------------------------------------------------
# Graph


class RecordingTokens:
    def __init__(self) -> None:
        self.asked: list[tuple[Audience, str | None]] = []

    async def token(
        self, audience: Audience, tenant: str | None = None, *, force_refresh: bool = False
    ) -> str:
        self.asked.append((audience, tenant))
        return f"{audience}-token-for-{tenant}"


def graph_domains(pages: list[list[dict[str, Any]]]) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        index = int(request.query.get("page", "0"))
        body: dict[str, Any] = {"value": pages[index]}
        if index + 1 < len(pages):
            body["@odata.nextLink"] = f"{request.url.origin()}{request.path}?page={index + 1}"
        return web.json_response(body)

    return handle


DOMAIN_PAGES = [
    [
        {
            "id": "contoso.onmicrosoft.com",
            "authenticationType": "Managed",
            "isInitial": True,
            "isVerified": True,
        },
        {"id": "Contoso.com", "authenticationType": "managed", "isDefault": True, "isVerified": True},
    ],
    [
        {"id": "fabrikam.com", "authenticationType": "Federated", "isVerified": True},
        {"id": "pending.example", "authenticationType": "Managed", "isVerified": False},
    ],
]


async def test_graph_lists_domains_across_pages_for_the_tenant(session: aiohttp.ClientSession) -> None:
    tokens = RecordingTokens()
    async with FakeServer(graph_domains(DOMAIN_PAGES)) as srv:
        graph = GraphClient(session, tokens, graph_url=f"{srv.url}/graph/{{tenant}}")
        domains = await graph.list_domains(CUSTOMER)
    assert domains == [
        facts.Domain("contoso.onmicrosoft.com", "Managed"),
        facts.Domain("Contoso.com", "Managed"),
        facts.Domain("fabrikam.com", "Federated"),
    ]
    assert [s.path for s in srv.seen] == [f"/graph/{CUSTOMER}/v1.0/domains"] * 2
    assert srv.seen[0].headers["Authorization"] == f"Bearer graph-token-for-{CUSTOMER}"
    assert tokens.asked == [(Audience.GRAPH, CUSTOMER)] * 2


async def test_graph_get_user_quotes_the_upn_and_404_is_none(session: aiohttp.ClientSession) -> None:
    async def users(request: web.Request) -> web.StreamResponse:
        if request.match_info["tail"].endswith("o'neil#1@contoso.com"):
            return web.json_response({"id": "g-1", "userPrincipalName": "o'neil#1@contoso.com"})
        return web.json_response(
            {"error": {"code": "Request_ResourceNotFound", "message": "nope"}}, status=404
        )

    async with FakeServer(users) as srv:
        graph = GraphClient(session, StaticTokens(TOKEN), graph_url=srv.url)
        found = await graph.get_user(CUSTOMER, "o'neil#1@contoso.com")
        missing = await graph.get_user(CUSTOMER, "ghost@contoso.com")
    assert found is not None and found["id"] == "g-1"
    assert missing is None
    assert "%23" in srv.seen[0].raw_path, "a # must not end the path"
    assert srv.seen[1].path == "/v1.0/users/ghost@contoso.com"


async def test_graph_errors_read_graphs_error_shape(session: aiohttp.ClientSession) -> None:
    body = {"error": {"code": "Authorization_RequestDenied", "message": "Insufficient privileges."}}
    async with FakeServer(answer(body, 403)) as srv:
        with pytest.raises(Refused) as caught:
            await GraphClient(session, StaticTokens(TOKEN), graph_url=srv.url).list_domains(CUSTOMER)
    assert (caught.value.code, caught.value.description) == (
        "Authorization_RequestDenied",
        "Insufficient privileges.",
    )


# ---------------------------------------------------------------------------------------------------------------
# ServiceFacts


def tenant_server(
    users_pages: list[list[dict[str, Any]]], deleted: list[dict[str, Any]] | None = None
) -> Handler:
    """Graph's domains, Partner Center's users, and (for the `UserState` filter) one page of deleted users."""
    domains, users = graph_domains(DOMAIN_PAGES), paged_users(users_pages)

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/graph/"):
            return await domains(request)
        if "filter" in request.query:
            return web.json_response({"totalCount": len(deleted or []), "items": deleted or []})
        return await users(request)

    return handle


DELETED_FILTER = {"size": "0", "filter": '{"Field":"UserState","Value":"Inactive","Operator":"equals"}'}


async def test_service_facts_reads_domains_and_active_users_once(session: aiohttp.ClientSession) -> None:
    pages = [[user(1), user(2, state="inactive")], [user(3, state=None), {"id": "x"}]]
    binned = {**user(4, state="Inactive"), "softDeletionTime": "2026-11-20T09:30:00Z"}
    async with FakeServer(tenant_server(pages, [binned, user(5, state="inactive")])) as srv:
        tokens = StaticTokens(TOKEN)
        client = PartnerCenterClient(session, tokens, base_url=srv.url, correlation_id=CORRELATION)
        source = ServiceFacts(client, GraphClient(session, tokens, graph_url=f"{srv.url}/graph/{{tenant}}"))
        first, second = await asyncio.gather(source.customer_facts(CUSTOMER), source.customer_facts(CUSTOMER))
        again = await source.customer_facts(CUSTOMER)
    assert first is second is again
    assert len(srv.seen) == 6, "two domain pages, two user pages, one of deleted users and the SKUs, once"
    assert [s.query for s in srv.seen if s.query.get("filter")] == [DELETED_FILTER]
    assert first.customer_id == CUSTOMER
    assert set(first.domains) == {"contoso.onmicrosoft.com", "contoso.com", "fabrikam.com"}
    fabrikam = first.domain("FABRIKAM.com")
    assert fabrikam is not None and fabrikam.federated
    assert first.existing_users == {"user1@contoso.com": "id-1", "user3@contoso.com": "id-3"}
    assert first.deleted_users == {
        # listed as inactive by a plain list that does not leave deleted users out: still deleted
        "user2@contoso.com": facts.DeletedUser("id-2", "User2@Contoso.com", None),
        "user4@contoso.com": facts.DeletedUser("id-4", "User4@Contoso.com", "2026-11-20T09:30:00Z"),
        "user5@contoso.com": facts.DeletedUser("id-5", "User5@Contoso.com", None),
    }


async def test_service_facts_with_a_domains_file_asks_no_graph(
    session: aiohttp.ClientSession, domains_file: Path
) -> None:
    async with FakeServer(paged_users([[user(1)]])) as srv:
        client = pc(session, srv.url)
        source = ServiceFacts(client, None, domains_file=facts.DomainsFile(domains_file))
        found = await source.customer_facts(CUSTOMER)
    assert set(found.domains) == {"contoso.com"}
    assert found.existing_users == {"user1@contoso.com": "id-1"}
    assert [(s.path, s.query) for s in srv.seen][:2] == [
        (f"/v1/customers/{CUSTOMER}/users", {}),
        (f"/v1/customers/{CUSTOMER}/users", DELETED_FILTER),
    ]
    assert [s.path for s in srv.seen][2:] == [
        f"/v1/customers/{CUSTOMER}/subscribedskus",
    ]


async def test_service_facts_turns_refusals_into_command_errors(session: aiohttp.ClientSession) -> None:
    graph_401 = answer({"error": {"code": "InvalidAuthenticationToken", "message": "expired"}}, 401)

    async def users_then_graph_401(request: web.Request) -> web.StreamResponse:
        return await (OK_USERS if request.path.startswith("/v1/") else graph_401)(request)

    async with FakeServer(users_then_graph_401) as srv:
        source = ServiceFacts(
            pc(session, srv.url), GraphClient(session, StaticTokens(TOKEN), graph_url=srv.url)
        )
        with pytest.raises(AuthError, match="Graph refused the token"):
            await source.customer_facts(CUSTOMER)
    async with FakeServer(answer({"code": 60003, "description": "Tenant not found."}, 404)) as srv:
        source = ServiceFacts(
            pc(session, srv.url),
            None,
            domains_file=facts.DomainsFile(Path(__file__).parent.parent / "samples" / "domains.csv"),
        )
        with pytest.raises(CustomerNotFound):
            await source.customer_facts(CUSTOMER)
        # a failure is not remembered: the next ask goes out again
        with pytest.raises(CustomerNotFound):
            await source.customer_facts(CUSTOMER)
        assert len(srv.seen) == 2
    url = f"http://127.0.0.1:{closed_port()}"
    source = ServiceFacts(pc(session, url), GraphClient(session, StaticTokens(TOKEN), graph_url=url))
    with pytest.raises(ServiceUnavailable, match="cannot reach Partner Center"):  # asked first
        await source.customer_facts(CUSTOMER)


# ---------------------------------------------------------------------------------------------------------------
# group 2: against the sandbox emulator (a separate implementation of the service's rules)

SB_CUSTOMER = "5e1f3a2b-7c4d-4e8f-9a0b-1c2d3e4f5a6b"
SB_DATA = parse_data(
    f"""
[[customers]]
id = "{SB_CUSTOMER}"
name = "Contoso"
domains = [
  {{ name = "contoso.onmicrosoft.com", authenticationType = "Managed", isInitial = true }},
  {{ name = "contoso.com", authenticationType = "Managed", isDefault = true }},
  {{ name = "fabrikam.com", authenticationType = "Federated" }},
]

[[customers.users]]
userPrincipalName = "jane.doe@contoso.com"
displayName = "Jane Doe"
usageLocation = "US"

[[customers.users]]
userPrincipalName = "wei.zhang@contoso.com"
displayName = "Wei Zhang"
usageLocation = "CN"

[[customers.users]]
userPrincipalName = "ana.silva@contoso.com"
displayName = "Ana Silva"
usageLocation = "BR"
"""
)


def newcomer(**changes: Any) -> UserRow:
    return jane(**{"userPrincipalName": "Zoe.OBrien@Contoso.com", **changes})


def sandbox_client(
    session: aiohttp.ClientSession, box: Sandbox, token: str = "sandbox"
) -> PartnerCenterClient:
    return PartnerCenterClient(session, StaticTokens(token), base_url=box.url, correlation_id=CORRELATION)


async def test_sandbox_create_then_find_across_pages(session: aiohttp.ClientSession) -> None:
    async with Sandbox(SB_DATA, SandboxOptions(page_size=2)) as box:
        client = sandbox_client(session, box)
        created = await client.create_user(SB_CUSTOMER, newcomer(), request_id=str(uuid.uuid4()))
        users = [u async for u in client.iter_users(SB_CUSTOMER)]
        found = await client.find_user_by_upn(SB_CUSTOMER, "zoe.obrien@contoso.com")
        by_id = await client.get_user(SB_CUSTOMER, created.id)
        missing = await client.get_user(SB_CUSTOMER, str(uuid.UUID(int=1)))
    assert created.userPrincipalName == "Zoe.OBrien@Contoso.com" and created.state == "active"
    assert len(users) == 4, "three seeded users and the new one, over two pages"
    assert found is not None and found["id"] == created.id
    assert by_id is not None
    for shown in (found, by_id):
        assert (shown["firstName"], shown["lastName"], shown["immutableId"]) == (
            "Zoë",
            "O'Brien-Ünal",
            "000123",
        )
        assert shown["usageLocation"] == "NA"
        assert PASSWORD not in json.dumps(shown)
    assert missing is None


async def test_sandbox_duplicate_upn_and_replay(session: aiohttp.ClientSession) -> None:
    async with Sandbox(SB_DATA) as box:
        client = sandbox_client(session, box)
        with pytest.raises(Refused) as caught:
            await client.create_user(
                SB_CUSTOMER, jane(userPrincipalName="JANE.DOE@contoso.com"), request_id=str(uuid.uuid4())
            )
        request_id = str(uuid.uuid4())
        first = await client.create_user(SB_CUSTOMER, newcomer(), request_id=request_id)
        again = await client.create_user(SB_CUSTOMER, newcomer(), request_id=request_id)
        with pytest.raises(Refused) as fresh_id:
            await client.create_user(SB_CUSTOMER, newcomer(), request_id=str(uuid.uuid4()))
    assert caught.value.is_duplicate_upn and caught.value.status == 400
    assert again == first
    assert box.stats.creations == 1
    assert fresh_id.value.is_duplicate_upn


async def test_sandbox_throttles_with_retry_after(session: aiohttp.ClientSession) -> None:
    frozen_clock = lambda: 1000.0  # noqa: E731 - the window never moves, so the second creation is refused
    async with Sandbox(SB_DATA, SandboxOptions(rate_limit=(1, 60.0)), clock=frozen_clock) as box:
        client = sandbox_client(session, box)
        await client.create_user(SB_CUSTOMER, newcomer(), request_id=str(uuid.uuid4()))
        with pytest.raises(Throttled) as caught:
            await client.create_user(
                SB_CUSTOMER, newcomer(userPrincipalName="second@contoso.com"), request_id=str(uuid.uuid4())
            )
    assert caught.value.retry_after == 60.0
    assert caught.value.code == 429 and "Try again in 60 seconds" in caught.value.description


async def test_sandbox_early_throttle_warnings_reach_the_caller(session: aiohttp.ClientSession) -> None:
    frozen_clock = lambda: 1000.0  # noqa: E731 - every creation stays in the window
    options = SandboxOptions(rate_limit=(10, 60.0), throttle_warnings=True)
    async with Sandbox(SB_DATA, options, clock=frozen_clock) as box:
        client = sandbox_client(session, box)
        usages = [
            (
                await client.create_user(
                    SB_CUSTOMER, newcomer(userPrincipalName=f"w{n}@contoso.com"), request_id=str(uuid.uuid4())
                )
            ).throttle_usage
            for n in range(10)
        ]
    assert usages[:8] == [None] * 8  # quiet below 80 % of the limit
    assert usages[8] is not None and usages[9] is not None and 0.8 < usages[8] < usages[9] <= 1.0


async def test_sandbox_failures_and_drops(session: aiohttp.ClientSession) -> None:
    async with Sandbox(SB_DATA, SandboxOptions(fail_rate=1.0, seed=7)) as box:
        with pytest.raises(ServerError) as failed:
            await sandbox_client(session, box).create_user(SB_CUSTOMER, newcomer(), request_id="req-503")
        assert box.stats.creations == 0
    assert failed.value.status == 503 and failed.value.request_id == "req-503"

    async with Sandbox(SB_DATA, SandboxOptions(drop_rate=1.0, seed=7)) as box:
        client = sandbox_client(session, box)
        with pytest.raises(TransportError) as dropped:
            await client.create_user(SB_CUSTOMER, newcomer(), request_id="req-drop")
        # the outcome was unknown; the user was in fact created, and a replay of the same id tells so
        found = await client.find_user_by_upn(SB_CUSTOMER, "zoe.obrien@contoso.com")
        replayed = await client.create_user(SB_CUSTOMER, newcomer(), request_id="req-drop")
    assert dropped.value.maybe_processed and dropped.value.request_id == "req-drop"
    assert_no_secret(dropped.value, PASSWORD)
    assert found is not None and replayed.id == found["id"]


async def test_sandbox_preflight(session: aiohttp.ClientSession) -> None:
    async with Sandbox(SB_DATA) as box:
        customer = await sandbox_client(session, box).preflight(SB_CUSTOMER)
        with pytest.raises(AuthError, match="token refused"):
            await sandbox_client(session, box, token="wrong").preflight(SB_CUSTOMER)
        with pytest.raises(Unauthorized):
            await sandbox_client(session, box, token="wrong").create_user(
                SB_CUSTOMER, newcomer(), request_id="r"
            )
        with pytest.raises(CustomerNotFound):
            await sandbox_client(session, box).preflight(str(uuid.UUID(int=2)))
    assert customer["companyProfile"]["domain"] == "contoso.onmicrosoft.com"


async def test_sandbox_service_facts_and_graph(session: aiohttp.ClientSession) -> None:
    async with Sandbox(SB_DATA) as box:
        tokens = StaticTokens("sandbox")
        client = PartnerCenterClient(session, tokens, base_url=box.url, correlation_id=CORRELATION)
        graph = GraphClient(session, tokens, graph_url=f"{box.url}/graph/{{tenant}}")
        found = await ServiceFacts(client, graph).customer_facts(SB_CUSTOMER)
        graph_user = await graph.get_user(SB_CUSTOMER, "Wei.Zhang@contoso.com")
        nobody = await graph.get_user(SB_CUSTOMER, "nobody@contoso.com")
        with pytest.raises(CustomerNotFound):
            await ServiceFacts(client, graph).customer_facts(str(uuid.UUID(int=3)))
    assert set(found.domains) == {"contoso.onmicrosoft.com", "contoso.com", "fabrikam.com"}
    fabrikam = found.domain("fabrikam.com")
    assert fabrikam is not None and fabrikam.federated
    assert found.existing_users is not None
    assert set(found.existing_users) == {
        "jane.doe@contoso.com",
        "wei.zhang@contoso.com",
        "ana.silva@contoso.com",
    }
    assert graph_user is not None and found.existing_users["wei.zhang@contoso.com"] == graph_user["id"]
    assert nobody is None


@pytest.mark.parametrize(
    ("token", "masked"), [("sandbox", False), ("eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.payload.signature", True)]
)
async def test_a_real_token_is_blotted_out_but_the_sandbox_word_stays(
    session: aiohttp.ClientSession, token: str, masked: bool
) -> None:
    """`sandbox` is the sandbox's public token and an ordinary word: "does not exist in the ***" helped nobody."""

    async def handle(request: web.Request) -> web.StreamResponse:
        return web.json_response({"code": 1, "description": f"{token} does not exist in the sandbox"}, status=400)

    async with FakeServer(handle) as srv:
        client = PartnerCenterClient(session, StaticTokens(token), base_url=srv.url, correlation_id=CORRELATION)
        with pytest.raises(ApiError) as caught:
            await client.get_customer(CUSTOMER)
    if masked:
        assert_no_secret(caught.value, token)
        assert "*** does not exist in the sandbox" in caught.value.description
    else:
        assert "sandbox does not exist in the sandbox" in caught.value.description
