"""Partner Center's customer-user endpoints: read a customer, list, look up and create its users.

Why a client of its own: Partner Center asks for its own headers (MS-RequestId, MS-CorrelationId, the contract
version) and pages its lists its own way (`links.next` with an MS-ContinuationToken header); the request itself,
its errors and the tokens are the shared machinery of http.py and errors.py. This module also keeps the names
other stages imported from it before the service stage was split (the errors, the tokens, Graph and the facts).

`preflight` runs before any row is sent, so it turns request errors into the command-stopping errors of
`bulkonboard.errors` (exit 3) with one line that says what to check (`command_error`).
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from yarl import URL

from .. import model
from .errors import (
    CODE_NO_RELATIONSHIP,
    CODE_TENANT_NOT_FOUND,
    DUPLICATE_UPN_CODES,
    DUPLICATE_UPN_TEXT,
    ROLES_TO_CREATE,
    ROLES_TO_RESTORE,
    ApiError,
    EndlessPaging,
    MalformedAnswer,
    MismatchedAnswer,
    PermissionDenied,
    Refused,
    RequestError,
    ServerError,
    Throttled,
    TransportError,
    Unauthorized,
    command_error,
)
from .graph import GRAPH_URL, GraphClient, ServiceFacts
from .http import (
    MAX_DESCRIPTION,
    MAX_LISTED_ITEMS,
    MAX_PAGES,
    MAX_RETRY_AFTER,
    Answer,
    Audience,
    HiddenHeaders,
    SecretBody,
    StaticTokens,
    TokenProvider,
    clean_text,
    continuation_token,
    display_url,
    endless_paging,
    malformed_answer,
    parse_retry_after,
    past_paging_bound,
    path_part,
    same_origin,
    send_request,
    token_secrets,
    without_secrets,
)
from .licenses import LICENSE_GROUPS, ROLES_TO_LICENSE, LicenseCalls

PARTNER_CENTER_URL = "https://api.partnercenter.microsoft.com"
#: The documented filter for soft-deleted users (in the recycle bin for 30 days), and the page size the .NET SDK
#: sends with it (0: the service's default page).
DELETED_USERS_QUERY = {
    "size": "0",
    "filter": '{"Field":"UserState","Value":"Inactive","Operator":"equals"}',
}


@dataclass(frozen=True, slots=True)
class CreatedUser:
    """What is kept of a create answer: the rest (including the echoed password) is dropped at once."""

    id: str
    userPrincipalName: str
    state: str
    userDomainType: str | None
    throttle_usage: float | None = None  # how close the service says we are to its limit, when it says so


#: How many distinct customer URLs `PartnerCenterClient` remembers (a run uses a handful; lookups add one per user).
_URL_CACHE_SIZE = 256


class PartnerCenterClient(LicenseCalls):
    """Partner Center's customer-user endpoints, with the headers its docs ask for.

    The session belongs to the caller (created inside the running loop, closed by the caller); one client
    serves one run, so the correlation id ties all of the run's calls together in Microsoft's logs.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        tokens: TokenProvider,
        *,
        base_url: str = PARTNER_CENTER_URL,
        correlation_id: str,
        application: str = "bulkonboard",
        locale: str = "en-US",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._session = session
        self._tokens = tokens
        self.base_url = base_url.rstrip("/")
        self._v1 = self.base_url + "/v1"
        self.correlation_id = correlation_id
        self.application = application
        self.locale = locale
        self._clock = clock
        # `_customer_url`'s answers: quoting and parsing a URL for every create cost more than the rest of a call
        self._urls: dict[tuple[str, ...], URL] = {}

    def __repr__(self) -> str:
        return f"PartnerCenterClient({self.base_url!r}, correlation_id={self.correlation_id!r})"

    # -- requests

    async def _call(
        self,
        method: str,
        url: URL,
        *,
        request_id: str | None = None,
        extra_headers: dict[str, str] | None = None,
        body: SecretBody | None = None,
        secrets: tuple[str, ...] = (),
        on_answer: Callable[[Answer], None] | None = None,
    ) -> Any:
        """One request; returns the answer's JSON or raises a RequestError. A fresh MS-RequestId unless given."""
        request_id = request_id or str(uuid.uuid4())
        token = await self._tokens.token(Audience.PARTNER_CENTER)
        headers = HiddenHeaders(
            {
                "Authorization": f"Bearer {token}",
                "Accept": "application/json",
                "MS-RequestId": request_id,
                "MS-CorrelationId": self.correlation_id,
                "MS-Contract-Version": "v1",
                "MS-PartnerCenter-Application": self.application,
                "X-Locale": self.locale,
            }
        )
        if body is not None:
            headers["Content-Type"] = "application/json"
        headers.update(extra_headers or {})
        return await send_request(
            self._session,
            method,
            url,
            headers=headers,
            request_id=request_id,
            body=body,
            secrets=(*secrets, *token_secrets(token)),
            clock=self._clock,
            on_answer=on_answer,
        )

    def _customer_url(self, customer_id: str, *rest: str) -> URL:
        key = (customer_id, *rest)
        url = self._urls.get(key)
        if url is None:
            path = "/".join(path_part(part) for part in ("customers", *key))
            url = URL(f"{self._v1}/{path}")
            if len(self._urls) >= _URL_CACHE_SIZE:  # per-user URLs (lookups) must not pile up over a long run
                self._urls.clear()
            self._urls[key] = url
        return url

    # -- the endpoints

    async def get_customer(self, customer_id: str) -> dict[str, Any]:
        url, request_id = self._customer_url(customer_id), str(uuid.uuid4())
        payload = await self._call("GET", url, request_id=request_id)
        if not isinstance(payload, dict):
            raise malformed_answer("GET", url, request_id, 200, "the customer answer is not a JSON object")
        return payload

    async def iter_users(
        self, customer_id: str, *, deleted: bool = False
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Every user of the customer, page after page (`links.next` + its MS-ContinuationToken header); with
        `deleted`, the soft-deleted ones instead (the `UserState` filter), which the plain list leaves out.

        Stops with `EndlessPaging` at a continuation token (or, without one, a next link) seen before, and past
        `MAX_PAGES` pages or `MAX_LISTED_ITEMS` users: a service that never ends its list must not keep a run
        paging, and growing, for ever. Only the tokens are remembered, so memory stays within the bound too.
        """
        url = self._customer_url(customer_id, "users")
        if deleted:
            url = url.with_query(DELETED_USERS_QUERY)
        extra: dict[str, str] = {}
        seen: set[str] = set()
        pages = items_listed = 0
        while True:
            request_id = str(uuid.uuid4())
            page = await self._call("GET", url, request_id=request_id, extra_headers=extra)
            pages += 1
            items = page.get("items") if isinstance(page, dict) else None
            if not isinstance(items, list):
                raise malformed_answer("GET", url, request_id, 200, "the user list has no `items` array")
            items_listed += len(items)
            for item in items:
                if isinstance(item, dict):
                    yield without_secrets(item)
            following = self._next_page(page, url, request_id)
            if following is None:
                return
            url, extra = following
            token = continuation_token(extra) or f"{url} {json.dumps(extra, sort_keys=True)}"
            if token in seen:  # a service that hands out the same page again would loop forever
                raise endless_paging(
                    url, request_id, pages, items_listed, "its next link repeats an earlier page"
                )
            if past_paging_bound(pages, items_listed):
                raise endless_paging(url, request_id, pages, items_listed, "it passed the bound on paging")
            seen.add(token)

    def _next_page(
        self, page: dict[str, Any], url: URL, request_id: str
    ) -> tuple[URL, dict[str, str]] | None:
        links = page.get("links")
        following = links.get("next") if isinstance(links, dict) else None
        if not following:
            return None
        uri = following.get("uri") if isinstance(following, dict) else None
        if not isinstance(uri, str) or not uri:
            raise malformed_answer("GET", url, request_id, 200, "the user list's `links.next` has no uri")
        if uri.startswith(("http://", "https://")):
            target = URL(uri)
        else:  # Partner Center's next links are relative to {base}/v1
            relative = uri if uri.startswith("/") else "/" + uri
            target = URL(self.base_url + relative if relative.startswith("/v1/") else self._v1 + relative)
        if not same_origin(target, URL(self.base_url)):
            raise malformed_answer(
                "GET", url, request_id, 200, "the user list's next link leaves the service"
            )
        headers: dict[str, str] = {}
        raw_headers = following.get("headers")
        if isinstance(raw_headers, dict):
            raw_headers = [{"key": k, "value": v} for k, v in raw_headers.items()]
        for header in raw_headers if isinstance(raw_headers, list) else []:
            if (
                isinstance(header, dict)
                and isinstance(header.get("key"), str)
                and header.get("value") is not None
            ):
                key, value = header["key"], str(header["value"])
                if any(ord(c) < 32 or ord(c) == 127 for c in key + value):
                    # aiohttp would refuse to send it (ValueError): a malformed answer, said as one line.
                    raise malformed_answer(
                        "GET", url, request_id, 200, "the user list's next link has a malformed header"
                    )
                headers[key] = value
        return target, headers

    async def get_user(self, customer_id: str, user_id: str) -> dict[str, Any] | None:
        """The user, or None when there is no such user (a 404 other than "no such customer")."""
        url, request_id = self._customer_url(customer_id, "users", user_id), str(uuid.uuid4())
        try:
            payload = await self._call("GET", url, request_id=request_id)
        except Refused as exc:
            if exc.status == 404 and str(exc.code) != str(CODE_TENANT_NOT_FOUND):
                return None
            raise
        if not isinstance(payload, dict):
            raise malformed_answer("GET", url, request_id, 200, "the user answer is not a JSON object")
        return without_secrets(payload)

    async def find_user_by_upn(self, customer_id: str, upn: str) -> dict[str, Any] | None:
        """Partner Center documents no filter by UPN, so this reads the list until it finds it (case-insensitive)."""
        wanted = upn.casefold()
        async with aclosing(self.iter_users(customer_id)) as users:
            async for user in users:
                found = user.get("userPrincipalName")
                if isinstance(found, str) and found.casefold() == wanted:
                    return user
        return None

    async def create_user(self, customer_id: str, user: model.UserRow, *, request_id: str) -> CreatedUser:
        """POST the row exactly as typed; `request_id` is the caller's, so a replay after a timeout reuses it.

        Empty optional fields are left out rather than sent as "" (the service would store or refuse "").
        """
        if not user.password:
            raise ValueError(f"row {user.row}: create_user needs a password (generate one before sending)")
        url = self._customer_url(customer_id, "users")
        body = SecretBody(_BODY_ENCODER.encode(_create_body(user)).encode("utf-8"))
        usage: list[float | None] = [None]

        def note_usage(answer: Answer) -> None:
            usage[0] = answer.throttle_usage

        payload = await self._call(
            "POST", url, request_id=request_id, body=body, secrets=(user.password,), on_answer=note_usage
        )
        created = _created_user(payload, sent_upn=user.userPrincipalName)
        del payload, body  # the answer echoes the password: keep nothing of it
        if created is None:
            raise malformed_answer("POST", url, request_id, 200, "the create answer has no user id")
        if created.userPrincipalName.casefold() != user.userPrincipalName.casefold():
            raise MismatchedAnswer(
                method="POST",
                url=display_url(url),
                request_id=request_id,
                sent_upn=user.userPrincipalName,
                named_upn=clean_text(created.userPrincipalName, (user.password,))[:200],
            )
        return dataclasses.replace(created, throttle_usage=usage[0]) if usage[0] is not None else created

    async def restore_user(self, customer_id: str, user_id: str, *, request_id: str) -> dict[str, Any]:
        """Bring a soft-deleted user back from the recycle bin (`--restore-deleted`); returns the user as answered.

        `request_id` is the caller's, so that a replay after a timeout is the same request. Documented: PATCH with
        `{"State": "active", ...}`; the docs do not show the answer, so anything but a user object is a
        malformed answer (the outcome is unknown: look the user up). Restoring is the deleting role's business:
        User Administrator (Directory Writers may create users, not restore them), so a 403 says so.
        """
        url = self._customer_url(customer_id, "users", user_id)
        body = SecretBody(_BODY_ENCODER.encode(_RESTORE_BODY).encode("utf-8"))
        try:
            payload = await self._call("PATCH", url, request_id=request_id, body=body)
        except PermissionDenied as exc:
            raise exc.needing(ROLES_TO_RESTORE) from None
        if not isinstance(payload, dict) or not isinstance(payload.get("id"), str):
            raise malformed_answer("PATCH", url, request_id, 200, "the restore answer is not a user")
        return without_secrets(payload)

    async def preflight(self, customer_id: str) -> dict[str, Any]:
        """Prove the token, the customer and a directory role before any row is sent; returns the customer.

        Reading the customer proves the token and the relationship (20002 stops here); reading the first page of
        its users proves a GDAP role that reads users, which is not yet one that creates them (Directory Readers
        lists users too). No cheap probe of write permission exists in the documented API: no Partner Center
        route answers with the partner's GDAP roles (Graph's delegatedAdminRelationships lists a relationship's
        roles, but from the partner's own tenant, with another permission, and says nothing of the signed-in
        user's groups), and there is no harmless write; creating something to probe is out of the question. So
        the first create refused for lack of a role is the proof: it raises `PermissionDenied`.
        """
        try:
            customer = await self.get_customer(customer_id)
            await self._call("GET", self._customer_url(customer_id, "users"))
        except RequestError as exc:
            raise command_error(exc, service="Partner Center", customer_id=customer_id) from None
        return customer


#: `json.dumps(..., ensure_ascii=False)` builds a new encoder on every call (only the default one is shared):
#: about a fifth of the cost of a create's body (measured: 3.0 -> 2.3 us).
_BODY_ENCODER = json.JSONEncoder(ensure_ascii=False)


#: Partner Center's documented restore body.
_RESTORE_BODY = {"State": "active", "Attributes": {"ObjectType": "CustomerUser"}}


def _create_body(user: model.UserRow) -> dict[str, Any]:
    body: dict[str, Any] = {"userPrincipalName": user.userPrincipalName}
    for name in ("firstName", "lastName"):
        if getattr(user, name):
            body[name] = getattr(user, name)
    body["displayName"] = user.displayName
    body["usageLocation"] = user.usageLocation
    if user.immutableId:
        body["immutableId"] = user.immutableId
    body["passwordProfile"] = {"password": user.password, "forceChangePassword": user.forceChangePassword}
    body["attributes"] = {"objectType": "CustomerUser"}
    return body


def _created_user(payload: Any, *, sent_upn: str) -> CreatedUser | None:
    if not isinstance(payload, dict):
        return None
    user_id = payload.get("id")
    if not isinstance(user_id, str) or not user_id:
        return None
    upn = payload.get("userPrincipalName")
    state = payload.get("state")
    domain_type = payload.get("userDomainType")
    return CreatedUser(
        id=user_id,
        userPrincipalName=upn if isinstance(upn, str) and upn else sent_upn,
        state=state if isinstance(state, str) and state else "unknown",
        userDomainType=domain_type if isinstance(domain_type, str) else None,
    )


__all__ = [
    "CODE_NO_RELATIONSHIP",
    "CODE_TENANT_NOT_FOUND",
    "DUPLICATE_UPN_CODES",
    "DUPLICATE_UPN_TEXT",
    "GRAPH_URL",
    "LICENSE_GROUPS",
    "MAX_DESCRIPTION",
    "MAX_LISTED_ITEMS",
    "MAX_PAGES",
    "MAX_RETRY_AFTER",
    "PARTNER_CENTER_URL",
    "ROLES_TO_CREATE",
    "ROLES_TO_LICENSE",
    "ROLES_TO_RESTORE",
    "ApiError",
    "Audience",
    "CreatedUser",
    "EndlessPaging",
    "GraphClient",
    "MalformedAnswer",
    "MismatchedAnswer",
    "PartnerCenterClient",
    "PermissionDenied",
    "Refused",
    "RequestError",
    "ServerError",
    "ServiceFacts",
    "StaticTokens",
    "Throttled",
    "TokenProvider",
    "TransportError",
    "Unauthorized",
    "command_error",
    "parse_retry_after",
]
