"""The sandbox's HTTP face: Partner Center under `/v1`, Graph for tenant T under `/graph/T/v1.0`.

Each route answers in the shapes its service documents: Partner Center's `{code, description, data, source}`
errors (and its odd 429 body), Graph's `{"error": {code, message, innerError}}`. The routes stay thin; the rules
live in the store, the faults in `faults`.

Order inside a creating call is fixed, because replay and faults depend on it:
read body -> auth (401, never cached) -> MS-RequestId replay -> customer (404) -> limiter (429, not cached)
-> fault draw (503, not cached) -> rules (4xx) -> create -> answer, or drop the connection.
From the replay lookup to the answer there is no `await`, so two requests with the same id cannot both create.
Replay covers the changing calls (POST, DELETE, PATCH); reads are answered afresh whatever their MS-RequestId,
so a client that reuses one id across pages still pages.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import inspect
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from .auth import GRAPH_AUDIENCE, PARTNER_CENTER_AUDIENCE, TokenVerifier, bearer_token, static_token_verifier
from .codes import (
    INVALID_INPUT_CODE,
    ROUTE_NOT_FOUND_CODE,
    SERVICE_UNAVAILABLE_CODE,
    STATE_NOT_SAVED_CODE,
    TENANT_NOT_FOUND_CODE,
    TOKEN_MISSING_CODE,
    UNEXPECTED_ERROR_CODE,
    ApiError,
    graph_error_body,
    rate_limit_body,
)
from .faults import Clock, Faults
from .options import SandboxOptions
from .state import StateNotSaved
from .store import ACTIVE, CustomerState, Record, Store, answer, public, user_not_found_error

log = logging.getLogger("bulkonboard.sandbox")

REQUEST_ID = "MS-RequestId"
CORRELATION_ID = "MS-CorrelationId"
CONTINUATION_TOKEN = "MS-ContinuationToken"
THROTTLE_HEADER = "x-ms-throttle-limit-percentage"
PC_PREFIX = "/v1"
GRAPH_PREFIX = "/graph"


@dataclass(slots=True)
class SandboxStats:
    """Counters for assertions. `creations` counts users created, dropped ones included (they were created)."""

    requests: int = 0
    creations: int = 0
    replays: int = 0
    throttled: int = 0  # 429s
    failed: int = 0  # 503s from --fail-rate
    dropped: int = 0  # created, then the connection closed without an answer
    refused: int = 0  # creations the rules refused (4xx)


@dataclass(slots=True)
class SandboxContext:
    store: Store
    options: SandboxOptions
    faults: Faults
    stats: SandboxStats
    verifier: TokenVerifier
    #: With `--state`: returns once every write so far is on disk (raises `StateNotSaved` if it cannot be).
    durable: Callable[[], Awaitable[None]] | None = None


CONTEXT = web.AppKey("bulkonboard_sandbox_context", SandboxContext)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build_app(
    store: Store,
    options: SandboxOptions,
    *,
    verifier: TokenVerifier | None = None,
    stats: SandboxStats | None = None,
    faults: Faults | None = None,
    extra_routes: Iterable[web.AbstractRouteDef] = (),
    setup: Callable[[web.Application], None] | None = None,
    clock: Clock = time.monotonic,
) -> web.Application:
    """The aiohttp application. `extra_routes` are mounted beside the API, and `setup(app)` may add more (an OIDC
    authority, say); those get the latency and header echo but no auth or faults."""
    context = SandboxContext(
        store=store,
        options=options,
        faults=faults or Faults(options, clock=clock),
        stats=stats or SandboxStats(),
        verifier=verifier or static_token_verifier(options.token),
    )
    app = web.Application(middlewares=[_frame])
    app[CONTEXT] = context
    app.add_routes(
        [
            web.get(PC_PREFIX + "/customers/{customer_id}", get_customer),
            web.get(PC_PREFIX + "/customers/{customer_id}/users", list_users),
            web.post(PC_PREFIX + "/customers/{customer_id}/users", create_user),
            web.get(PC_PREFIX + "/customers/{customer_id}/users/{user_id}", get_user),
            web.delete(PC_PREFIX + "/customers/{customer_id}/users/{user_id}", delete_user),
            web.patch(PC_PREFIX + "/customers/{customer_id}/users/{user_id}", patch_user),
            web.get(GRAPH_PREFIX + "/{tenant}/v1.0/domains", graph_domains),
            web.get(GRAPH_PREFIX + "/{tenant}/v1.0/users/{user}", graph_user),
        ]
    )
    app.add_routes(list(extra_routes))
    if setup is not None:
        setup(app)
    return app


# -- the frame around every call ----------------------------------------------------------------------------


@web.middleware
async def _frame(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Latency, request counting, header echo; unknown routes and crashes answered in the service's shape."""
    context = request.app[CONTEXT]
    context.stats.requests += 1
    if context.options.latency_ms:
        await asyncio.sleep(context.options.latency_ms / 1000)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if not _is_api_path(request.path) or exc.status not in (404, 405):
            raise
        response = _no_such_route(request, exc.status)
    except ConnectionResetError:
        raise  # the client hung up (a run aborted, a dropped answer): nothing to answer, nothing to report
    except Exception:
        log.exception("sandbox: unexpected error on %s %s", request.method, request.path)
        response = _pc_error(
            ApiError(500, UNEXPECTED_ERROR_CODE, "An unexpected error occurred in the sandbox.")
        )
    if context.durable is not None:
        try:
            # No answer leaves before the writes it may tell of are on disk (reads too: a list may show them).
            await context.durable()
        except StateNotSaved as exc:
            # Sandbox's own: a 500 says "outcome unknown", so a client looks the user up or replays the request
            # (the replay waits for the disk again) instead of believing a write that a restart would lose.
            response = _pc_error(
                ApiError(500, STATE_NOT_SAVED_CODE, f"The sandbox could not save its state ({exc}).")
            )
    _echo_headers(request, response)
    return response


def _is_api_path(path: str) -> bool:
    return path == PC_PREFIX or path.startswith(PC_PREFIX + "/") or path.startswith(GRAPH_PREFIX + "/")


def _no_such_route(request: web.Request, status: int) -> web.StreamResponse:
    # Sandbox's own: what the real services answer for an unknown path is not documented.
    what = "No such resource" if status == 404 else "Method not allowed"
    description = f"{what}: {request.method} {request.path}"
    if request.path.startswith(GRAPH_PREFIX + "/"):
        return _graph_error(
            request, status, "BadRequest" if status == 404 else "MethodNotAllowed", description
        )
    return _pc_error(ApiError(status, ROUTE_NOT_FOUND_CODE, description))


def _echo_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Partner Center answers with the request's MS-RequestId and MS-CorrelationId (made up when not sent)."""
    for name in (REQUEST_ID, CORRELATION_ID):
        if name not in response.headers:
            response.headers[name] = request.headers.get(name) or str(uuid.uuid4())


async def _authorized(request: web.Request, tenant: str | None, audience: str) -> bool:
    token = bearer_token(request.headers.get("Authorization"))
    if token is None:
        return False
    verdict = request.app[CONTEXT].verifier(token, tenant, audience)
    if inspect.isawaitable(verdict):
        verdict = await verdict
    return bool(verdict)


# -- Partner Center -----------------------------------------------------------------------------------------


def _pc_error(error: ApiError, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(error.body(), status=error.status, headers=headers)


def _pc_unauthorized() -> web.Response:
    error = ApiError(401, TOKEN_MISSING_CODE, "Unauthorized: the partner token is missing or not valid.")
    return _pc_error(error, headers={"WWW-Authenticate": "Bearer"})


def _customer_not_found(customer_id: str) -> ApiError:
    return ApiError(
        404, TENANT_NOT_FOUND_CODE, f"Tenant {customer_id} was not found among the partner's customers."
    )


async def _pc_customer(request: web.Request) -> CustomerState | web.Response:
    """Auth and customer lookup for the reading routes."""
    if not await _authorized(request, None, PARTNER_CENTER_AUDIENCE):
        return _pc_unauthorized()
    customer_id = request.match_info["customer_id"]
    customer = request.app[CONTEXT].store.customer(customer_id)
    return customer if customer is not None else _pc_error(_customer_not_found(customer_id))


async def get_customer(request: web.Request) -> web.StreamResponse:
    customer = await _pc_customer(request)
    if isinstance(customer, web.Response):
        return customer
    return web.json_response(
        {
            "id": customer.id,
            "commerceId": customer.id,
            "companyProfile": {
                "tenantId": customer.id,
                "domain": customer.initial_domain.name,
                "companyName": customer.name,
                "attributes": {"objectType": "CustomerCompanyProfile"},
            },
            "relationshipToPartner": "reseller",
            "allowDelegatedAccess": True,
            "attributes": {"objectType": "Customer"},
        }
    )


async def get_user(request: web.Request) -> web.StreamResponse:
    customer = await _pc_customer(request)
    if isinstance(customer, web.Response):
        return customer
    record = customer.get(request.match_info["user_id"])
    if record is None:
        return _pc_error(user_not_found_error(request.match_info["user_id"]))
    return web.json_response(public(record))


async def list_users(request: web.Request) -> web.StreamResponse:
    """Active users, a page at a time, paged as Partner Center pages: `links.next` with an MS-ContinuationToken."""
    customer = await _pc_customer(request)
    if isinstance(customer, web.Response):
        return customer
    page_size = request.app[CONTEXT].options.page_size
    size = page_size
    if "size" in request.query:
        try:
            size = int(request.query["size"])
        except ValueError:
            size = 0
        if size < 1:
            return _pc_error(
                ApiError(
                    400, INVALID_INPUT_CODE, "The size parameter must be a positive whole number.", ("size",)
                )
            )
        size = min(size, page_size)  # the server's page size caps what a client asks for
    position = 0
    token = request.headers.get(CONTINUATION_TOKEN)
    if token:
        decoded = _decode_position(token, customer)
        if decoded is None:
            return _pc_error(
                ApiError(
                    400, INVALID_INPUT_CODE, "The continuation token is not valid.", (CONTINUATION_TOKEN,)
                )
            )
        position = decoded
    items, next_position = customer.page(position, size)
    base_uri = f"/customers/{customer.id}/users?size={size}"
    links: dict[str, Any] = {"self": {"uri": base_uri, "method": "GET", "headers": []}}
    if next_position is not None:
        links["next"] = {
            "uri": base_uri + "&seekOperation=Next",
            "method": "GET",
            "headers": [{"key": CONTINUATION_TOKEN, "value": _encode_position(customer, next_position)}],
        }
    return web.json_response(
        {
            # As in Partner Center's examples, totalCount is the number of items in this page.
            "totalCount": len(items),
            "items": [public(record) for record in items],
            "links": links,
            "attributes": {"objectType": "Collection"},
        }
    )


def _encode_position(customer: CustomerState, position: int) -> str:
    raw = json.dumps({"customer": customer.id.lower(), "position": position}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_position(token: str, customer: CustomerState) -> int | None:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        decoded = json.loads(raw)
    except (ValueError, binascii.Error):
        return None
    if not isinstance(decoded, dict) or decoded.get("customer") != customer.id.lower():
        return None
    position = decoded.get("position")
    if not isinstance(position, int) or isinstance(position, bool) or position < 0:
        return None
    return position


async def _read_json(request: web.Request) -> Any | ApiError:
    raw = await request.read()
    try:
        return json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError):
        return ApiError(400, INVALID_INPUT_CODE, "The request body is not valid JSON.")


def _replay_key(request: web.Request) -> tuple[str, str, str] | None:
    request_id = request.headers.get(REQUEST_ID, "").strip()
    return (request.method, request.path.lower(), request_id.lower()) if request_id else None


def _final(request: web.Request, key: tuple[str, str, str] | None, status: int, body: Any) -> web.Response:
    """A final answer (2xx, or 4xx other than 429): remembered for a replay of the same MS-RequestId."""
    if key is not None:
        request.app[CONTEXT].store.replays.put(key, status, body)
    if body is None:
        return web.Response(status=status)
    return web.json_response(body, status=status)


def _final_error(request: web.Request, key: tuple[str, str, str] | None, error: ApiError) -> web.Response:
    return _final(request, key, error.status, error.body())


def _replay(request: web.Request, key: tuple[str, str, str] | None) -> web.Response | None:
    if key is None:
        return None
    context = request.app[CONTEXT]
    cached = context.store.replays.get(key)
    if cached is None:
        return None
    context.stats.replays += 1
    if cached.body is None:
        return web.Response(status=cached.status)
    return web.json_response(cached.body, status=cached.status)


async def create_user(request: web.Request) -> web.StreamResponse:
    response = await _create_user(request)
    warning = request.app[CONTEXT].faults.throttle_warning() if response.status != 401 else None
    if warning is not None:
        response.headers[THROTTLE_HEADER] = warning
    return response


async def _create_user(request: web.Request) -> web.StreamResponse:
    context = request.app[CONTEXT]
    body = await _read_json(request)
    if not await _authorized(request, None, PARTNER_CENTER_AUDIENCE):
        return _pc_unauthorized()
    # From here to the answer: no await (see the module docstring).
    key = _replay_key(request)
    replayed = _replay(request, key)
    if replayed is not None:
        return replayed
    customer_id = request.match_info["customer_id"]
    customer = context.store.customer(customer_id)
    if customer is None:
        return _final_error(request, key, _customer_not_found(customer_id))
    retry_after = context.faults.admit_creation()
    if retry_after is not None:
        context.stats.throttled += 1
        return web.json_response(
            rate_limit_body(retry_after), status=429, headers={"Retry-After": str(retry_after)}
        )
    fate = context.faults.draw()
    if fate.fail:
        context.stats.failed += 1
        # Sandbox's own code; 503 itself is one of Partner Center's documented statuses.
        return _pc_error(
            ApiError(
                503, SERVICE_UNAVAILABLE_CODE, "The service is temporarily unavailable. Try again later."
            )
        )
    if isinstance(body, ApiError):
        context.stats.refused += 1
        return _final_error(request, key, body)
    checked = context.store.check_new_user(customer, body)
    if isinstance(checked, ApiError):
        context.stats.refused += 1
        return _final_error(request, key, checked)
    record = context.store.create(customer, checked, _new_user_id(customer))
    context.stats.creations += 1
    created = answer(record, checked)
    if not fate.drop:
        return _final(request, key, 200, created)
    # Created, and the answer is what a replay of this MS-RequestId will get; but this caller gets no answer.
    if key is not None:
        context.store.replays.put(key, 200, created)
    context.stats.dropped += 1
    request.protocol.force_close()  # closes the transport; aiohttp then finds nothing to write the answer to
    return web.Response(status=200)


def _new_user_id(customer: CustomerState) -> str:
    while True:
        user_id = str(uuid.uuid4())
        if customer.get(user_id) is None:
            return user_id


async def delete_user(request: web.Request) -> web.StreamResponse:
    context = request.app[CONTEXT]
    await request.read()
    if not await _authorized(request, None, PARTNER_CENTER_AUDIENCE):
        return _pc_unauthorized()
    key = _replay_key(request)
    replayed = _replay(request, key)
    if replayed is not None:
        return replayed
    customer = context.store.customer(request.match_info["customer_id"])
    if customer is None:
        return _final_error(request, key, _customer_not_found(request.match_info["customer_id"]))
    error = context.store.soft_delete(customer, request.match_info["user_id"])
    if error is not None:
        return _final_error(request, key, error)
    return _final(request, key, 204, None)


async def patch_user(request: web.Request) -> web.StreamResponse:
    """Restore a soft-deleted user (`{"State": "active", ...}`), or update its names and usage location."""
    context = request.app[CONTEXT]
    body = await _read_json(request)
    if not await _authorized(request, None, PARTNER_CENTER_AUDIENCE):
        return _pc_unauthorized()
    key = _replay_key(request)
    replayed = _replay(request, key)
    if replayed is not None:
        return replayed
    customer = context.store.customer(request.match_info["customer_id"])
    if customer is None:
        return _final_error(request, key, _customer_not_found(request.match_info["customer_id"]))
    if isinstance(body, ApiError):
        return _final_error(request, key, body)
    result = context.store.patch(customer, request.match_info["user_id"], body)
    if isinstance(result, ApiError):
        return _final_error(request, key, result)
    return _final(request, key, 200, public(result))


# -- Graph --------------------------------------------------------------------------------------------------


def _graph_error(
    request: web.Request, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    request_id = str(uuid.uuid4())
    client_request_id = request.headers.get("client-request-id") or request_id
    date = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    body = graph_error_body(code, message, request_id, client_request_id, date)
    all_headers = {"request-id": request_id, "client-request-id": client_request_id, **(headers or {})}
    return web.json_response(body, status=status, headers=all_headers)


def _graph_ok(request: web.Request, body: dict[str, Any]) -> web.Response:
    request_id = str(uuid.uuid4())
    headers = {
        "request-id": request_id,
        "client-request-id": request.headers.get("client-request-id") or request_id,
    }
    return web.json_response(body, headers=headers)


async def _graph_tenant(request: web.Request) -> CustomerState | web.Response:
    """The path's tenant stands for the tenant of the token (the real Graph tells tenants apart by the token)."""
    tenant = request.match_info["tenant"]
    token = bearer_token(request.headers.get("Authorization"))
    if token is None:
        return _graph_error(
            request,
            401,
            "InvalidAuthenticationToken",
            "Access token is empty.",
            {"WWW-Authenticate": "Bearer"},
        )
    customer = _customer_by_tenant(request.app[CONTEXT].store, tenant)
    # The verifier hears the tenant's id even when the path names it by a domain (a token carries the id).
    if not await _authorized(request, customer.id if customer is not None else tenant, GRAPH_AUDIENCE):
        return _graph_error(
            request,
            401,
            "InvalidAuthenticationToken",
            "Access token validation failure.",
            {"WWW-Authenticate": "Bearer"},
        )
    if customer is None:
        # Sandbox's own: with a real token this cannot happen; the sandbox says plainly what is wrong.
        return _graph_error(
            request, 404, "Request_ResourceNotFound", f"Tenant '{tenant}' does not exist in the sandbox."
        )
    return customer


def _customer_by_tenant(store: Store, tenant: str) -> CustomerState | None:
    """A tenant is named by its id or by any of its domains, as Graph's tenant-specific URLs allow."""
    customer = store.customer(tenant)
    if customer is not None:
        return customer
    key = tenant.casefold()
    return next((c for c in store.customers() if key in c.domains), None)


async def graph_domains(request: web.Request) -> web.StreamResponse:
    customer = await _graph_tenant(request)
    if isinstance(customer, web.Response):
        return customer
    value = [
        {
            "authenticationType": domain.authentication_type,
            "availabilityStatus": None,
            "id": domain.name,
            "isAdminManaged": True,
            "isDefault": domain.is_default,
            "isInitial": domain.is_initial,
            "isRoot": True,
            "isVerified": domain.is_verified,
            "passwordNotificationWindowInDays": None,
            "passwordValidityPeriodInDays": None,
            "supportedServices": (
                ["Email", "OfficeCommunicationsOnline"]
                if domain.is_initial
                else (["Email"] if domain.is_verified else [])
            ),
            "state": None,
        }
        for domain in customer.domains.values()
    ]
    return _graph_ok(
        request, {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#domains", "value": value}
    )


async def graph_user(request: web.Request) -> web.StreamResponse:
    """A user by UPN (case-insensitive) or id; soft-deleted users are not in Graph's /users, so they are 404."""
    customer = await _graph_tenant(request)
    if isinstance(customer, web.Response):
        return customer
    wanted = request.match_info["user"]
    record = customer.active_by_upn(wanted)
    if record is None:
        by_id = customer.get(wanted)
        record = by_id if by_id is not None and by_id["state"] == ACTIVE else None
    if record is None:
        return _graph_error(
            request,
            404,
            "Request_ResourceNotFound",
            f"Resource '{wanted}' does not exist or one of its queried reference-property objects are not present.",
        )
    return _graph_ok(request, _graph_user(record))


def _graph_user(record: Record) -> dict[str, Any]:
    """Graph's user shape: givenName/surname for firstName/lastName, null for what is not set."""

    def text(name: str) -> str | None:
        value = record.get(name)
        return value if value else None

    return {
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users/$entity",
        "businessPhones": [],
        "displayName": text("displayName"),
        "givenName": text("firstName"),
        "jobTitle": None,
        "mail": None,
        "mobilePhone": None,
        "officeLocation": None,
        "preferredLanguage": None,
        "surname": text("lastName"),
        "userPrincipalName": record["userPrincipalName"],
        "id": record["id"],
        "usageLocation": text("usageLocation"),
    }
