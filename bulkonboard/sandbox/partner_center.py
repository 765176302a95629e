"""Partner Center's routes under `/v1`: the customer, and its users (list, read, create, delete, restore/update).

Order inside a creating call is fixed, because replay and faults depend on it:
read body -> auth (401, never cached) -> MS-RequestId replay -> customer (404) -> GDAP (403: 20002, then 900308)
-> limiter (429, not cached) -> fault draw (503, not cached) -> rules (4xx) -> create -> answer, or drop the
connection. From the replay lookup to the answer there is no `await`, so two requests with the same id cannot
both create. Replay covers the changing calls (POST, DELETE, PATCH); reads are answered afresh whatever their
MS-RequestId, so a client that reuses one id across pages still pages.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from aiohttp import web

from .auth import PARTNER_CENTER_AUDIENCE
from .codes import (
    INVALID_INPUT_CODE,
    SERVICE_UNAVAILABLE_CODE,
    TENANT_NOT_FOUND_CODE,
    TOKEN_MISSING_CODE,
    ApiError,
    rate_limit_body,
    user_not_found_error,
)
from .context import CONTEXT, CONTINUATION_TOKEN, REQUEST_ID, THROTTLE_HEADER, authorized
from .faults import Fate
from .paging import encode_position, parse_list_query
from .permissions import Action
from .store import CustomerState, Store, answer, listed, public

ReplayKey = tuple[str, str, str]


def routes(prefix: str) -> list[web.RouteDef]:
    users = prefix + "/customers/{customer_id}/users"
    return [
        web.get(prefix + "/customers/{customer_id}", get_customer),
        web.get(users, list_users),
        web.post(users, create_user),
        web.get(users + "/{user_id}", get_user),
        web.delete(users + "/{user_id}", delete_user),
        web.patch(users + "/{user_id}", patch_user),
    ]


def pc_error(error: ApiError, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(error.body(), status=error.status, headers=headers)


def _unauthorized() -> web.Response:
    error = ApiError(401, TOKEN_MISSING_CODE, "Unauthorized: the partner token is missing or not valid.")
    return pc_error(error, headers={"WWW-Authenticate": "Bearer"})


def _customer_not_found(customer_id: str) -> ApiError:
    return ApiError(
        404, TENANT_NOT_FOUND_CODE, f"Tenant {customer_id} was not found among the partner's customers."
    )


def _refusal(request: web.Request, customer: CustomerState, action: Action | None) -> ApiError | None:
    """GDAP's 403 for this call (no relationship, or no role that allows it), counted; None: go ahead."""
    error = customer.grant.refusal(action)
    if error is not None:
        request.app[CONTEXT].stats.forbidden += 1
    return error


async def readable_customer(request: web.Request, action: Action | None) -> CustomerState | web.Response:
    """Auth, customer lookup and GDAP for the reading routes."""
    if not await authorized(request, None, PARTNER_CENTER_AUDIENCE):
        return _unauthorized()
    customer_id = request.match_info["customer_id"]
    customer = request.app[CONTEXT].store.customer(customer_id)
    if customer is None:
        return pc_error(_customer_not_found(customer_id))
    refused = _refusal(request, customer, action)
    return customer if refused is None else pc_error(refused)


async def get_customer(request: web.Request) -> web.StreamResponse:
    customer = await readable_customer(request, None)
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
    customer = await readable_customer(request, Action.READ_USERS)
    if isinstance(customer, web.Response):
        return customer
    record = customer.get(request.match_info["user_id"])
    if record is None:
        return pc_error(user_not_found_error(request.match_info["user_id"]))
    return web.json_response(public(record, customer.id))


async def list_users(request: web.Request) -> web.StreamResponse:
    """A page of active users, or of soft-deleted ones with the `UserState` filter, paged as Partner Center
    pages: `links.next` with an MS-ContinuationToken."""
    customer = await readable_customer(request, Action.READ_USERS)
    if isinstance(customer, web.Response):
        return customer
    page_size = request.app[CONTEXT].options.page_size
    query = parse_list_query(request.query, request.headers.get(CONTINUATION_TOKEN), customer, page_size)
    if isinstance(query, ApiError):
        return pc_error(query)
    items, next_position = customer.page(query.position, query.size, query.state)
    links: dict[str, Any] = {"self": {"uri": query.base_uri(customer.id), "method": "GET", "headers": []}}
    if next_position is not None:
        token = encode_position(customer, next_position, query.state)
        links["next"] = {
            "uri": query.next_uri(customer.id),
            "method": "GET",
            "headers": [{"key": CONTINUATION_TOKEN, "value": token}],
        }
    return web.json_response(
        {
            # As in Partner Center's examples, totalCount is the number of items in this page.
            "totalCount": len(items),
            "items": [listed(record, customer.id) for record in items],
            "links": links,
            "attributes": {"objectType": "Collection"},
        }
    )


# -- the changing calls: replayed by MS-RequestId -----------------------------------------------------------


async def _read_json(request: web.Request) -> Any | ApiError:
    raw = await request.read()
    try:
        return json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError):
        return ApiError(400, INVALID_INPUT_CODE, "The request body is not valid JSON.")


def _replay_key(request: web.Request) -> ReplayKey | None:
    request_id = request.headers.get(REQUEST_ID, "").strip()
    return (request.method, request.path.lower(), request_id.lower()) if request_id else None


def final(request: web.Request, key: ReplayKey | None, status: int, body: Any) -> web.Response:
    """A final answer (2xx, or 4xx other than 429): remembered for a replay of the same MS-RequestId."""
    if key is not None:
        request.app[CONTEXT].store.replays.put(key, status, body)
    if body is None:
        return web.Response(status=status)
    return web.json_response(body, status=status)


def final_error(request: web.Request, key: ReplayKey | None, error: ApiError) -> web.Response:
    return final(request, key, error.status, error.body())


def _replay(request: web.Request, key: ReplayKey | None) -> web.Response | None:
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


async def writable_customer(
    request: web.Request, action: Action
) -> tuple[CustomerState, ReplayKey | None, Any] | web.Response:
    """Body, auth, replay, customer and GDAP for a changing call: the customer, the replay key and the body, or
    the answer already due. No `await` after the auth check, so the caller's critical section starts here."""
    body = await _read_json(request)
    if not await authorized(request, None, PARTNER_CENTER_AUDIENCE):
        return _unauthorized()
    key = _replay_key(request)
    replayed = _replay(request, key)
    if replayed is not None:
        return replayed
    customer_id = request.match_info["customer_id"]
    customer = request.app[CONTEXT].store.customer(customer_id)
    if customer is None:
        return final_error(request, key, _customer_not_found(customer_id))
    refused = _refusal(request, customer, action)
    if refused is not None:
        return final_error(request, key, refused)
    return customer, key, body


async def create_user(request: web.Request) -> web.StreamResponse:
    return with_throttle_warning(request, await _create_user(request))


def with_throttle_warning(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """Adds x-ms-throttle-limit-percentage to a write's answer when `--throttle-warnings` asks for it."""
    if response.status == 401:
        return response
    customer = request.match_info.get("customer_id", "")
    context = request.app[CONTEXT]
    warning = context.faults.throttle_warning(_customer_key(context.store, customer))
    if warning is not None:
        response.headers[THROTTLE_HEADER] = warning
    return response


def _customer_key(store: Store, name: str) -> str:
    customer = store.customer(name)
    return customer.id if customer is not None else name


def admit(request: web.Request, customer: CustomerState) -> Fate | web.Response:
    """The limiters (429 in Partner Center's shape) and the fault draw (503) for a write: its fate, or the answer
    due. Neither answer is final: a replay of the same MS-RequestId is processed afresh."""
    context = request.app[CONTEXT]
    retry_after = context.faults.admit_write(customer.id)
    if retry_after is not None:
        context.stats.throttled += 1
        return web.json_response(
            rate_limit_body(retry_after), status=429, headers={"Retry-After": str(retry_after)}
        )
    fate = context.faults.draw()
    if fate.fail:
        context.stats.failed += 1
        # Sandbox's own code; 503 itself is one of Partner Center's documented statuses.
        return pc_error(
            ApiError(
                503, SERVICE_UNAVAILABLE_CODE, "The service is temporarily unavailable. Try again later."
            )
        )
    return fate


def final_or_drop(
    request: web.Request, key: ReplayKey | None, status: int, body: Any, fate: Fate
) -> web.Response:
    """The write is done: answer it (remembered for a replay), or, when its fate is to be dropped, remember the
    answer for a replay of this MS-RequestId and close the connection without answering."""
    if not fate.drop:
        return final(request, key, status, body)
    context = request.app[CONTEXT]
    if key is not None:
        context.store.replays.put(key, status, body)
    context.stats.dropped += 1
    request.protocol.force_close()  # closes the transport; aiohttp then finds nothing to write the answer to
    return web.Response(status=status)


async def _create_user(request: web.Request) -> web.StreamResponse:
    context = request.app[CONTEXT]
    opened = await writable_customer(request, Action.CREATE_USERS)
    if isinstance(opened, web.StreamResponse):
        return opened
    # From here to the answer: no await (see the module docstring).
    customer, key, body = opened
    fate = admit(request, customer)
    if isinstance(fate, web.Response):
        return fate
    checked = body if isinstance(body, ApiError) else context.store.check_new_user(customer, body)
    if isinstance(checked, ApiError):
        context.stats.refused += 1
        return final_error(request, key, checked)
    record = context.store.create(customer, checked, _new_user_id(customer))
    context.stats.creations += 1
    return final_or_drop(request, key, 200, answer(record, checked), fate)


def _new_user_id(customer: CustomerState) -> str:
    while True:
        user_id = str(uuid.uuid4())
        if customer.get(user_id) is None:
            return user_id


async def delete_user(request: web.Request) -> web.StreamResponse:
    """Documented: 204, and the user goes to the recycle bin (`state` inactive, `softDeletionTime` set)."""
    opened = await writable_customer(request, Action.DELETE_USERS)
    if isinstance(opened, web.StreamResponse):
        return opened
    customer, key, _ = opened
    error = request.app[CONTEXT].store.soft_delete(customer, request.match_info["user_id"])
    if error is not None:
        return final_error(request, key, error)
    return final(request, key, 204, None)


async def patch_user(request: web.Request) -> web.StreamResponse:
    """Restore a soft-deleted user (documented: `{"State": "active", "Attributes": {"ObjectType":
    "CustomerUser"}}`), or update its names and usage location. Restoring needs the role that deletes."""
    body = await _peek_json(request)
    restoring = isinstance(body, dict) and any(str(k).casefold() == "state" for k in body)
    opened = await writable_customer(request, Action.DELETE_USERS if restoring else Action.UPDATE_USERS)
    if isinstance(opened, web.StreamResponse):
        return opened
    customer, key, body = opened
    if isinstance(body, ApiError):
        return final_error(request, key, body)
    fate = _restore_fate(request) if restoring else Fate(fail=False, drop=False)
    if isinstance(fate, web.Response):
        return fate
    result = request.app[CONTEXT].store.patch(customer, request.match_info["user_id"], body)
    if isinstance(result, ApiError):
        return final_error(request, key, result)
    # The docs are silent on the restore answer's shape; the sandbox answers the user as `GET` does.
    return final_or_drop(request, key, 200, public(result, customer.id), fate)


def _restore_fate(request: web.Request) -> Fate | web.Response:
    """A restore meets `--fail-rate` (503, nothing done) and `--drop-rate` (done, then no answer) like a create,
    so that a client's exactly-once restore can be tried; it is not counted by the limiters (faults.py)."""
    context = request.app[CONTEXT]
    fate = context.faults.draw()
    if fate.fail:
        context.stats.failed += 1
        return pc_error(
            ApiError(503, SERVICE_UNAVAILABLE_CODE, "The service is temporarily unavailable. Try again later.")
        )
    return fate


async def _peek_json(request: web.Request) -> Any:
    """The body, read ahead (aiohttp keeps it, so `_read_json` reads it again) to tell a restore from an update."""
    result = await _read_json(request)
    return None if isinstance(result, ApiError) else result
