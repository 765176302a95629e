"""Graph's routes for customer T under `/graph/T/v1.0`: the customer's domains here; users in `graph_users`,
licenses in `graph_licenses`; and what they share: the tenant and GDAP check, Graph's answers and errors, and the
frame of a write (the limiters, the faults).

Errors are in Graph's shape (`{"error": {code, message, innerError}}`). GDAP applies as for Partner Center: no
relationship, or no reader role, is 403 `Authorization_RequestDenied` with Graph's documented text. (With the
real service a partner without a relationship gets no token for the customer at all; the sandbox's static token
serves every tenant, so the route says it instead: the sandbox's own wording.)
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from .auth import GRAPH_AUDIENCE, bearer_token
from .codes import GRAPH_FORBIDDEN_CODE, INSUFFICIENT_PRIVILEGES_TEXT, graph_error_body
from .context import CONTEXT, THROTTLE_HEADER, authorized
from .faults import Fate
from .permissions import Action
from .store import CustomerState, Store

#: The application the sandbox's static token stands for, in Graph's x-ms-throttle-scope (sandbox's own).
SANDBOX_APP_ID = "00000000-5a4d-4b0c-8000-0000000000a1"


def routes(prefix: str) -> list[web.RouteDef]:
    return [
        web.get(prefix + "/{tenant}/v1.0/domains", graph_domains),
    ]


def graph_error(
    request: web.Request,
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    details: list[dict[str, str]] | None = None,
) -> web.Response:
    request_id = str(uuid.uuid4())
    client_request_id = request.headers.get("client-request-id") or request_id
    date = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    body = graph_error_body(code, message, request_id, client_request_id, date)
    if details:
        body["error"]["details"] = details
    all_headers = {"request-id": request_id, "client-request-id": client_request_id, **(headers or {})}
    return web.json_response(body, status=status, headers=all_headers)


def graph_ok(request: web.Request, body: dict[str, Any] | None, status: int = 200) -> web.Response:
    """A successful answer with Graph's request-id headers; `body=None` for 204."""
    request_id = str(uuid.uuid4())
    headers = {
        "request-id": request_id,
        "client-request-id": request.headers.get("client-request-id") or request_id,
    }
    if body is None:
        return web.Response(status=status, headers=headers)
    return web.json_response(body, status=status, headers=headers)


async def graph_tenant(request: web.Request, action: Action) -> CustomerState | web.Response:
    """The path's tenant stands for the tenant of the token (the real Graph tells tenants apart by the token);
    then GDAP: the relationship, and a role that allows `action`."""
    tenant = request.match_info["tenant"]
    token = bearer_token(request.headers.get("Authorization"))
    if token is None:
        return graph_error(
            request,
            401,
            "InvalidAuthenticationToken",
            "Access token is empty.",
            {"WWW-Authenticate": "Bearer"},
        )
    customer = _customer_by_tenant(request.app[CONTEXT].store, tenant)
    # The verifier hears the tenant's id even when the path names it by a domain (a token carries the id).
    if not await authorized(request, customer.id if customer is not None else tenant, GRAPH_AUDIENCE):
        return graph_error(
            request,
            401,
            "InvalidAuthenticationToken",
            "Access token validation failure.",
            {"WWW-Authenticate": "Bearer"},
        )
    if customer is None:
        # Sandbox's own: with a real token this cannot happen; the sandbox says plainly what is wrong.
        return graph_error(
            request, 404, "Request_ResourceNotFound", f"Tenant '{tenant}' does not exist in the sandbox."
        )
    if not customer.grant.relationship:
        request.app[CONTEXT].stats.forbidden += 1
        return graph_error(
            request,
            403,
            GRAPH_FORBIDDEN_CODE,
            f"{INSUFFICIENT_PRIVILEGES_TEXT} The partner has no relationship with tenant {customer.id}.",
        )
    if not customer.grant.allows(action):
        request.app[CONTEXT].stats.forbidden += 1
        return graph_error(request, 403, GRAPH_FORBIDDEN_CODE, INSUFFICIENT_PRIVILEGES_TEXT)
    return customer


def _customer_by_tenant(store: Store, tenant: str) -> CustomerState | None:
    """A tenant is named by its id or by any of its domains, as Graph's tenant-specific URLs allow."""
    customer = store.customer(tenant)
    if customer is not None:
        return customer
    key = tenant.casefold()
    return next((c for c in store.customers() if key in c.domains), None)


async def graph_domains(request: web.Request) -> web.StreamResponse:
    # The reference: User Administrator suffices; the sandbox lets any reader role list domains.
    customer = await graph_tenant(request, Action.READ_USERS)
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
    return graph_ok(
        request, {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#domains", "value": value}
    )


# -- the frame of a write ------------------------------------------------------------------------------------
# Graph has no idempotency key: nothing here looks at MS-RequestId or client-request-id, so a retried POST /users
# is a second create (refused as a duplicate UPN), exactly as with the real Graph.


async def read_graph_body(request: web.Request) -> Any | web.Response:
    raw = await request.read()
    try:
        return json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError):
        return graph_error(request, 400, "BadRequest", "Unable to read JSON request payload.")


async def graph_write(request: web.Request, action: Action) -> tuple[CustomerState, Any, Fate] | web.Response:
    """Body, tenant, GDAP, the limiters (Graph's 429 with Retry-After) and the fault draw (503) for a write: the
    customer, the body (or the 400 due for it) and the write's fate, or the answer due. No `await` after this,
    so the caller's check-then-write cannot interleave with another request."""
    body = await read_graph_body(request)
    customer = await graph_tenant(request, action)
    if isinstance(customer, web.Response):
        return customer
    context = request.app[CONTEXT]
    retry_after = context.faults.admit_write(customer.id)
    if retry_after is not None:
        context.stats.throttled += 1
        # Graph's documented 429: Retry-After, and x-ms-throttle-scope (its format: scope/limit/app/tenant; the
        # application part is the sandbox's own, it has no app id).
        headers = {
            "Retry-After": str(retry_after),
            "x-ms-throttle-scope": f"Tenant_Application/ReadWrite/{SANDBOX_APP_ID}/{customer.id}",
            "x-ms-throttle-information": "ResourceUnitLimitExceeded",
        }
        return graph_error(
            request, 429, "TooManyRequests", "Too many requests. Please try again later.", headers
        )
    fate = context.faults.draw()
    if fate.fail:
        context.stats.failed += 1
        return graph_error(request, 503, "serviceNotAvailable", "The service is temporarily unavailable.")
    return customer, body, fate


def written(
    request: web.Request, customer: CustomerState, response: web.Response, fate: Fate
) -> web.Response:
    """The write is done: answer it (with x-ms-throttle-limit-percentage past 80 % of a window, when
    `--throttle-warnings` is on), or, when its fate is to be dropped, close the connection without answering."""
    context = request.app[CONTEXT]
    if fate.drop:
        context.stats.dropped += 1
        request.protocol.force_close()
        return response
    warning = context.faults.throttle_warning(customer.id)
    if warning is not None:
        response.headers[THROTTLE_HEADER] = warning
    return response


def not_found(request: web.Request, wanted: str) -> web.Response:
    return graph_error(
        request,
        404,
        "Request_ResourceNotFound",
        f"Resource '{wanted}' does not exist or one of its queried reference-property objects are not present.",
    )


def bad_request(
    request: web.Request, message: str, details: list[dict[str, str]] | None = None
) -> web.Response:
    return graph_error(request, 400, "Request_BadRequest", message, details=details)
