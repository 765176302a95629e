"""Paging and filtering `GET .../users` as Partner Center does: `size`, `filter`, and continuation tokens.

Documented: `size` (the .NET SDK sends `size=0` for "the default page"), the `UserState` filter
`{"Field":"UserState","Value":"Inactive","Operator":"equals"}` for soft-deleted users, and `links.next` carrying
an `MS-ContinuationToken` header. Undocumented, so the sandbox's own: what a token looks like (base64 JSON of
customer, position and state), that a negative or non-numeric size is refused (400, 800002), and that any other
filter (another field or operator) is refused the same way rather than ignored, since ignoring a filter would
answer a question nobody asked.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from .codes import INVALID_INPUT_CODE, ApiError
from .context import CONTINUATION_TOKEN
from .store import ACTIVE, INACTIVE, CustomerState

USER_STATE_FIELD = "userstate"
_STATES = {ACTIVE: ACTIVE, INACTIVE: INACTIVE}


@dataclass(frozen=True, slots=True)
class ListQuery:
    """What one `GET .../users` asks for: a page of users in one state, from a position."""

    size: int
    state: str
    position: int
    filter_text: str | None  # as sent, so the next link asks the same question

    def next_uri(self, customer_id: str) -> str:
        return self.base_uri(customer_id) + "&seekOperation=Next"

    def base_uri(self, customer_id: str) -> str:
        uri = f"/customers/{customer_id}/users?size={self.size}"
        if self.filter_text is not None:
            uri += "&filter=" + quote(self.filter_text, safe="")
        return uri


def parse_list_query(
    query: Any, continuation: str | None, customer: CustomerState, page_size: int
) -> ListQuery | ApiError:
    size = _size(query.get("size"), page_size)
    if isinstance(size, ApiError):
        return size
    filter_text = query.get("filter")
    state = ACTIVE if filter_text is None else _state_filter(filter_text)
    if isinstance(state, ApiError):
        return state
    position = 0
    if continuation:
        decoded = decode_position(continuation, customer, state)
        if decoded is None:
            return ApiError(
                400, INVALID_INPUT_CODE, "The continuation token is not valid.", (CONTINUATION_TOKEN,)
            )
        position = decoded
    return ListQuery(size=size, state=state, position=position, filter_text=filter_text)


def _size(raw: str | None, page_size: int) -> int | ApiError:
    if raw is None:
        return page_size
    try:
        size = int(raw)
    except ValueError:
        size = -1
    if size < 0:
        return ApiError(
            400, INVALID_INPUT_CODE, "The size parameter must be a whole number, 0 or more.", ("size",)
        )
    # 0 asks for the default page, as the SDK sends it; the server's page size caps what a client asks for.
    return page_size if size == 0 else min(size, page_size)


def _state_filter(text: str) -> str | ApiError:
    """The state a `UserState` filter asks for. Members bind case-insensitively, as in a .NET service."""
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    members = {str(k).casefold(): v for k, v in parsed.items()} if isinstance(parsed, dict) else {}
    field = members.get("field")
    value = members.get("value")
    operator = members.get("operator")
    if (
        isinstance(field, str)
        and field.casefold() == USER_STATE_FIELD
        and isinstance(operator, str)
        and operator.casefold() == "equals"
        and isinstance(value, str)
        and value.casefold() in _STATES
    ):
        return _STATES[value.casefold()]
    return ApiError(
        400,
        INVALID_INPUT_CODE,
        'The filter is not supported: the sandbox knows {"Field":"UserState","Value":"Inactive"|"Active",'
        '"Operator":"equals"}.',
        ("filter",),
    )


def encode_position(customer: CustomerState, position: int, state: str) -> str:
    raw = json.dumps(
        {"customer": customer.id.lower(), "position": position, "state": state}, separators=(",", ":")
    )
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_position(token: str, customer: CustomerState, state: str) -> int | None:
    """The position a token points at, if it was made for this customer and this question; else None."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        decoded = json.loads(raw)
    except (ValueError, binascii.Error):
        return None
    if not isinstance(decoded, dict) or decoded.get("customer") != customer.id.lower():
        return None
    if decoded.get("state", ACTIVE) != state:  # a token of the plain list does not page the deleted users
        return None
    position = decoded.get("position")
    if not isinstance(position, int) or isinstance(position, bool) or position < 0:
        return None
    return position
