"""Graph's user routes for customer T under `/graph/T/v1.0`: `POST /users`, `GET` and `PATCH /users/{id or UPN}`,
`PUT /users/{id}/manager/$ref` and `GET /users/{id}/manager`, and the list `GET /users`.

The directory is the one Partner Center's routes use: a user created either way is seen both ways. Writes go
through `graph.graph_write` (GDAP, the limiters, the faults; no idempotency key, as in Graph). Errors are Graph's:
a duplicate UPN is 400 `Request_BadRequest` with Graph's text and the detail code `ObjectConflict`; a user or
manager not found is 404 `Request_ResourceNotFound`. The texts of other refusals are the sandbox's own, in
Graph's manner ("Invalid value specified for property 'x' of resource 'User'.").
"""

from __future__ import annotations

import base64
import re
import uuid
from typing import Any

from aiohttp import web

from .codes import DUPLICATE_UPN_CODE, OBJECT_CONFLICT, ApiError
from .context import CONTEXT
from .faults import Fate
from .graph import bad_request, graph_ok, graph_tenant, graph_write, not_found, written
from .graph_directory import (
    CONTEXT_URL,
    CREATE_MEMBERS,
    PATCH_MEMBERS,
    in_graph_names,
    member_problem,
    partner_center_body,
    patched,
    selected,
    with_manager,
)
from .newuser import check_new_user
from .permissions import Action
from .profile import ACCOUNT_ENABLED, PROFILE_FIELDS
from .store import ACTIVE, LICENSES, MANAGER_ID, PROFILE, CustomerState, Record

METADATA = "https://graph.microsoft.com/v1.0/$metadata"
#: What Graph requires of a new user (documented).
REQUIRED_MEMBERS = (ACCOUNT_ENABLED, "displayName", "mailNickname", "passwordProfile", "userPrincipalName")
_REFERENCE = re.compile(r"/(?:users|directoryObjects)/([^/?#]+)/?$", re.IGNORECASE)


def routes(prefix: str) -> list[web.RouteDef]:
    users = prefix + "/{tenant}/v1.0/users"
    return [
        web.post(users, create_user),
        web.get(users, list_users),
        web.get(users + "/{user}", get_user),
        web.patch(users + "/{user}", patch_user),
        web.put(users + "/{user}/manager/$ref", put_manager),
        web.get(users + "/{user}/manager", get_manager),
    ]


def find_user(customer: CustomerState, wanted: str) -> Record | None:
    """An active user by UPN (any case) or id; soft-deleted users are not in Graph's /users."""
    record = customer.active_by_upn(wanted)
    if record is None:
        record = customer.get(wanted)
    return record if record is not None and record["state"] == ACTIVE else None


def _invalid(request: web.Request, name: str, problem: str) -> web.Response:
    return bad_request(
        request, f"Invalid value specified for property '{name}' of resource 'User': {problem}."
    )


def _unknown_members(body: dict[str, Any], allowed: tuple[str, ...]) -> str | None:
    return next((k for k in body if k not in allowed and not str(k).startswith("@odata.")), None)


#: Graph's documented `$top` for users: 1 to 999, 100 when not given.
DEFAULT_TOP, MAX_TOP = 100, 999


async def list_users(request: web.Request) -> web.StreamResponse:
    """`GET /users`: active users in the directory's order, `$select` as for one user, pages of `$top` (Graph's
    bounds) or the sandbox's `--page-size` when smaller, linked by an absolute `@odata.nextLink` whose
    `$skiptoken` is the sandbox's own (opaque in Graph: here base64 of the tenant and the position)."""
    customer = await graph_tenant(request, Action.READ_USERS)
    if isinstance(customer, web.Response):
        return customer
    top_text = request.query.get("$top", str(DEFAULT_TOP))
    if not top_text.isdigit() or not 1 <= int(top_text) <= MAX_TOP:
        return bad_request(
            request, f"Invalid page size specified: '{top_text}'. Must be between 1 and {MAX_TOP} inclusive."
        )
    size = min(int(top_text), request.app[CONTEXT].options.page_size)
    position = _skip_position(customer, request.query.get("$skiptoken"))
    if position is None:
        return bad_request(request, "Invalid $skiptoken.")
    users, following = customer.page(position, size, ACTIVE)
    value = []
    for record in users:
        answer = selected(record, request.query.get("$select"))
        if isinstance(answer, str):
            return bad_request(
                request, f"Could not find a property named '{answer}' on type 'microsoft.graph.user'."
            )
        answer.pop("@odata.context", None)
        value.append(answer)
    body: dict[str, Any] = {"@odata.context": f"{METADATA}#users", "value": value}
    if following is not None:
        token = base64.urlsafe_b64encode(f"{customer.id}:{following}".encode()).decode()
        body["@odata.nextLink"] = str(request.url.update_query({"$skiptoken": token}))
    return graph_ok(request, body)


def _skip_position(customer: CustomerState, token: str | None) -> int | None:
    if token is None:
        return 0
    try:
        tenant, _, position = base64.urlsafe_b64decode(token.encode()).decode().rpartition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return int(position) if tenant == customer.id and position.isdigit() else None


async def get_user(request: web.Request) -> web.StreamResponse:
    customer = await graph_tenant(request, Action.READ_USERS)
    if isinstance(customer, web.Response):
        return customer
    record = find_user(customer, request.match_info["user"])
    if record is None:
        return not_found(request, request.match_info["user"])
    answer = selected(record, request.query.get("$select"))
    if isinstance(answer, str):
        return bad_request(
            request, f"Could not find a property named '{answer}' on type 'microsoft.graph.user'."
        )
    return graph_ok(request, answer)


async def create_user(request: web.Request) -> web.StreamResponse:
    opened = await graph_write(request, Action.CREATE_USERS)
    if isinstance(opened, web.Response):
        return opened
    customer, body, fate = opened  # from here to the answer: no await
    if isinstance(body, web.Response):
        return body
    refused = _check_create(request, body)
    if refused is not None:
        return refused
    checked = check_new_user(
        customer,
        partner_center_body(body),
        required=("userPrincipalName", "displayName"),
        federated_ok=True,
    )
    if isinstance(checked, ApiError):
        request.app[CONTEXT].stats.refused += 1
        return _refusal(request, checked)
    if checked.domain.federated and not checked.fields.get("immutableId"):
        return _invalid(request, "onPremisesImmutableId", "a user of a federated domain needs one")
    profile = {name: body[name] for name in (ACCOUNT_ENABLED, *PROFILE_FIELDS) if body.get(name) is not None}
    context = request.app[CONTEXT]
    record = context.store.create(customer, checked, _new_id(customer), {PROFILE: profile})
    context.stats.creations += 1
    answer = selected(record, None)
    assert isinstance(answer, dict)
    return written(request, customer, graph_ok(request, answer, 201), fate)


def _check_create(request: web.Request, body: Any) -> web.Response | None:
    if not isinstance(body, dict):
        return bad_request(request, "The request body must be a JSON object describing the user.")
    unknown = _unknown_members(body, CREATE_MEMBERS)
    if unknown is not None:
        return bad_request(request, f"Property '{unknown}' does not exist on type 'microsoft.graph.user'.")
    for name in REQUIRED_MEMBERS:
        if body.get(name) in (None, ""):
            return _invalid(request, name, "it is required")
    profile = body["passwordProfile"]
    if not isinstance(profile, dict) or not isinstance(profile.get("password"), str):
        return _invalid(request, "passwordProfile", "it needs a password")
    for name, value in body.items():
        problem = member_problem(name, value)
        if problem is not None:
            return _invalid(request, name, problem)
    return None


def _refusal(request: web.Request, error: ApiError) -> web.Response:
    """A create the directory's rules refused (`newuser`), in Graph's shape."""
    if error.code == DUPLICATE_UPN_CODE:
        detail = {"code": OBJECT_CONFLICT, "message": error.description, "target": "userPrincipalName"}
        return bad_request(request, error.description, [detail])
    return bad_request(request, in_graph_names(error.description))


def _new_id(customer: CustomerState) -> str:
    while True:
        user_id = str(uuid.uuid4())
        if customer.get(user_id) is None:
            return user_id


async def user_write(
    request: web.Request, action: Action
) -> tuple[CustomerState, Any, Fate, Record] | web.Response:
    """`graph_write` for a write to the user the path names (PATCH, manager, assignLicense): also that user, or
    the answer due (the body's 400 first, then Graph's 404 for the user). No `await` after it, as for graph_write."""
    opened = await graph_write(request, action)
    if isinstance(opened, web.Response):
        return opened
    customer, body, fate = opened
    if isinstance(body, web.Response):
        return body
    record = find_user(customer, request.match_info["user"])
    if record is None:
        return not_found(request, request.match_info["user"])
    return customer, body, fate, record


async def patch_user(request: web.Request) -> web.StreamResponse:
    opened = await user_write(request, Action.UPDATE_USERS)
    if isinstance(opened, web.Response):
        return opened
    customer, body, fate, record = opened
    if not isinstance(body, dict):
        return bad_request(request, "The request body must be a JSON object of the properties to change.")
    unknown = _unknown_members(body, PATCH_MEMBERS)
    if unknown is not None:
        return bad_request(request, f"Property '{unknown}' cannot be changed through this sandbox's PATCH.")
    changes = {k: v for k, v in body.items() if not str(k).startswith("@odata.")}
    for name, value in changes.items():
        problem = member_problem(name, value)
        if problem is not None:
            return _invalid(request, name, problem)
    updated = patched(record, changes)
    if updated.get(LICENSES) and not updated.get("usageLocation"):
        return bad_request(request, "A user with licenses needs a usage location.")  # sandbox's own wording
    context = request.app[CONTEXT]
    if updated != record:
        context.store.replace(customer, updated)
    context.stats.graph_writes += 1
    return written(request, customer, graph_ok(request, None, 204), fate)


async def put_manager(request: web.Request) -> web.StreamResponse:
    opened = await user_write(request, Action.UPDATE_USERS)
    if isinstance(opened, web.Response):
        return opened
    customer, body, fate, record = opened
    reference = body.get("@odata.id") if isinstance(body, dict) else None
    match = _REFERENCE.search(reference) if isinstance(reference, str) else None
    if match is None:
        return bad_request(request, 'The body needs "@odata.id": ".../users/{id}" naming the manager.')
    manager = customer.get(match.group(1))
    if manager is None or manager["state"] != ACTIVE:
        return not_found(request, match.group(1))
    if manager["id"] == record["id"]:  # sandbox's own wording: a user cannot manage themself
        return bad_request(request, "A user cannot be their own manager.")
    context = request.app[CONTEXT]
    if record.get(MANAGER_ID) != manager["id"]:
        context.store.replace(customer, with_manager(record, manager["id"]))
    context.stats.graph_writes += 1
    return written(request, customer, graph_ok(request, None, 204), fate)


async def get_manager(request: web.Request) -> web.StreamResponse:
    customer = await graph_tenant(request, Action.READ_USERS)
    if isinstance(customer, web.Response):
        return customer
    record = find_user(customer, request.match_info["user"])
    if record is None:
        return not_found(request, request.match_info["user"])
    manager_id = record.get(MANAGER_ID)
    manager = customer.get(manager_id) if manager_id else None
    if manager is None or manager["state"] != ACTIVE:
        return not_found(request, "manager")
    answer = selected(manager, None)
    assert isinstance(answer, dict)
    answer["@odata.context"] = CONTEXT_URL.replace("users/$entity", "directoryObjects/$entity")
    return graph_ok(request, {**answer, "@odata.type": "#microsoft.graph.user"})
