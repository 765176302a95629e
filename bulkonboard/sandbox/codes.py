"""Error codes and error bodies the sandbox answers with.

Partner Center documents only a handful of codes (800001-800003, 60002, 60003, 20002, 900308). For the
refusals it leaves undocumented the sandbox has to invent a code; those live in the 90000 block, a range no
documented code uses, so nobody can mistake an invented code for Microsoft's. Clients should recognise a refusal
by its HTTP status and text first, and use these codes only against the sandbox.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Every Partner Center error body says where it came from; the front door is "PartnerFD".
SOURCE = "PartnerFD"

# Documented by Partner Center.
TOKEN_MISSING_CODE = 800001  # 401: partner token missing (the sandbox also uses it for a wrong token)
INVALID_INPUT_CODE = 800002  # 400: invalid request input
UNEXPECTED_ERROR_CODE = 800003  # 500: unexpected service error
USER_NOT_FOUND_CODE = 60002  # 404
TENANT_NOT_FOUND_CODE = 60003  # 404
NO_RELATIONSHIP_CODE = 20002  # 403: the partner has no (GDAP/commerce) relationship with the customer
INSUFFICIENT_PRIVILEGES_CODE = 900308  # 403: the partner's GDAP roles do not allow the call
INSUFFICIENT_PRIVILEGES_TEXT = "Insufficient privileges to complete the operation."
NOT_ENOUGH_LICENSES_CODE = 60012  # 400 on licenseupdates: not enough licenses (detail in `data`)

# Sandbox's own: not documented. Partner Center publishes no code for these refusals.
DUPLICATE_UPN_CODE = 90001  # 400, with Graph's duplicate text (Graph answers a duplicate UPN with 400)
#: Graph's detail code for a duplicate UPN (documented by Graph); the sandbox passes it on in `data`, where Partner
#: Center puts the underlying exception's detail. The 409 status is documented but never tied to a duplicate UPN,
#: so the sandbox keeps Graph's 400.
OBJECT_CONFLICT = "ObjectConflict"
UPN_INVALID_CODE = 90002
DOMAIN_UNKNOWN_CODE = 90003
DOMAIN_FEDERATED_CODE = 90004
USAGE_LOCATION_INVALID_CODE = 90005
PASSWORD_WEAK_CODE = 90006
IMMUTABLE_ID_INVALID_CODE = 90007
LICENSE_SKU_UNKNOWN_CODE = 90010  # licenseupdates: a SKU the customer has no subscription to
LICENSE_GROUPS_MIXED_CODE = 90011  # licenseupdates: SKUs of two license groups in one request
LICENSE_USAGE_LOCATION_CODE = 90012  # licenseupdates: the user has no usage location
LICENSE_NOT_ASSIGNABLE_CODE = 90013  # licenseupdates: the SKU's subscription is not Enabled (or Warning)
LICENSE_NOT_ASSIGNED_CODE = (
    90014  # licenseupdates: removing a license the user does not hold, or add + remove
)
SERVICE_UNAVAILABLE_CODE = 90503  # the --fail-rate fault
ROUTE_NOT_FOUND_CODE = 90404  # a path or method the sandbox does not serve
STATE_NOT_SAVED_CODE = 90500  # 500: --state FILE could not be written, so the write is not promised

#: Graph's text for a duplicate UPN; clients recognise a duplicate by it (or by DUPLICATE_UPN_CODE).
DUPLICATE_UPN_TEXT = "Another object with the same value for property userPrincipalName already exists."


@dataclass(frozen=True, slots=True)
class ApiError:
    """A Partner Center refusal as a value: the rules return it, the routes turn it into a response."""

    status: int
    code: int
    description: str
    data: tuple[str, ...] = field(default=())

    def body(self) -> dict[str, Any]:
        # Partner Center caps descriptions at 1024 characters, and sends `data` only for some errors: the
        # sandbox sends it when it has detail to give (the fields at fault, the conflict), never as `[]`.
        body: dict[str, Any] = {"code": self.code, "description": self.description[:1024]}
        if self.data:
            body["data"] = list(self.data)
        body["source"] = SOURCE
        return body


def invalid_input(description: str, *fields: str) -> ApiError:
    """400 with Partner Center's documented 800002, naming the fields at fault in `data`."""
    return ApiError(400, INVALID_INPUT_CODE, description, tuple(fields))


def user_not_found_error(user_id: str) -> ApiError:
    return ApiError(404, USER_NOT_FOUND_CODE, f"User {user_id} was not found.")


def duplicate_upn_error() -> ApiError:
    # Sandbox's own code; status, text and detail code are Graph's documented answer to a duplicate UPN. `data`
    # carries the detail as Graph gives it (target and code), where Partner Center puts an exception's detail.
    return ApiError(400, DUPLICATE_UPN_CODE, DUPLICATE_UPN_TEXT, ("userPrincipalName", OBJECT_CONFLICT))


def rate_limit_body(retry_after: int) -> dict[str, Any]:
    """Partner Center's 429 has its own body shape, unlike every other error."""
    return {"statusCode": 429, "message": f"Rate limit is exceeded. Try again in {retry_after} seconds."}


def graph_error_body(
    code: str, message: str, request_id: str, client_request_id: str, date: str
) -> dict[str, Any]:
    """Graph's error shape, which differs from Partner Center's."""
    return {
        "error": {
            "code": code,
            "message": message,
            "innerError": {"date": date, "request-id": request_id, "client-request-id": client_request_id},
        }
    }


#: Graph's 403 for a call the caller's roles do not allow (documented by Graph with this text).
GRAPH_FORBIDDEN_CODE = "Authorization_RequestDenied"
