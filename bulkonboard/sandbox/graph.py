"""Graph's routes for customer T under `/graph/T/v1.0`: the customer's domains and a user by id or UPN.

Errors are in Graph's shape (`{"error": {code, message, innerError}}`). GDAP applies as for Partner Center: no
relationship, or no reader role, is 403 `Authorization_RequestDenied` with Graph's documented text. (With the
real service a partner without a relationship gets no token for the customer at all; the sandbox's static token
serves every tenant, so the route says it instead: the sandbox's own wording.)
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from .auth import GRAPH_AUDIENCE, bearer_token
from .codes import GRAPH_FORBIDDEN_CODE, INSUFFICIENT_PRIVILEGES_TEXT, graph_error_body
from .context import CONTEXT, authorized
from .permissions import Action
from .store import ACTIVE, CustomerState, Record, Store


def routes(prefix: str) -> list[web.RouteDef]:
    return [
        web.get(prefix + "/{tenant}/v1.0/domains", graph_domains),
        web.get(prefix + "/{tenant}/v1.0/users/{user}", graph_user),
    ]


def graph_error(
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


async def _graph_tenant(request: web.Request, action: Action) -> CustomerState | web.Response:
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
    customer = await _graph_tenant(request, Action.READ_USERS)
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
    customer = await _graph_tenant(request, Action.READ_USERS)
    if isinstance(customer, web.Response):
        return customer
    wanted = request.match_info["user"]
    record = customer.active_by_upn(wanted)
    if record is None:
        by_id = customer.get(wanted)
        record = by_id if by_id is not None and by_id["state"] == ACTIVE else None
    if record is None:
        return graph_error(
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
