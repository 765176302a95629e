"""The sign-in authority's vocabulary: resources and scopes, clients, sign-ins, device codes, the token
requests tests count, and refusals in Entra ID's error shape. Shared by `authority` (the state) and
`authority_routes` (the endpoints)."""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from aiohttp import web

from .auth import GRAPH_AUDIENCE, PARTNER_CENTER_AUDIENCE

#: The same resource URLs the sandbox's routes pass to their TokenVerifier.
PARTNER_CENTER_RESOURCE = PARTNER_CENTER_AUDIENCE
GRAPH_RESOURCE = GRAPH_AUDIENCE
#: Short names a route may use instead of the resource URL (they match the client's Audience values).
AUDIENCE_ALIASES = {"partnercenter": PARTNER_CENTER_RESOURCE, "graph": GRAPH_RESOURCE}
RESOURCES = frozenset({PARTNER_CENTER_RESOURCE, GRAPH_RESOURCE})
#: OpenID Connect's own scopes, which name no resource; MSAL adds all three to every user request.
OIDC_SCOPES = frozenset({"openid", "profile", "offline_access", "email"})
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
TOKEN_PREFIX = "sbx"
DEFAULT_USER = "admin@sandbox-partner.onmicrosoft.com"


@dataclass
class Client:
    client_id: str
    secret: str | None  # None: a public client, which must not send one
    secret_expired: bool = False


@dataclass
class SignIn:
    """One person signing in to one app: every refresh token it yields lives and lapses with it."""

    client_id: str
    username: str
    oid: str
    home_tenant: str
    issued_at: float
    lapsed: bool = False


@dataclass
class DeviceCode:
    device_code: str
    user_code: str
    client_id: str
    tenant: str
    scopes: tuple[str, ...]
    expires_at: float
    polls: int = 0
    approved_by: str | None = None
    declined: bool = False
    redeemed: bool = False


@dataclass(frozen=True)
class TokenRequest:
    """One call to the token endpoint, as the tests count them (never the secrets it carried)."""

    tenant: str
    grant_type: str
    client_id: str
    status: int
    error_code: int | None = None


class Refusal(Exception):
    """An answer in Entra ID's error shape; raised inside a handler, turned into a response at its edge."""

    def __init__(self, status: int, error: str, code: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.code = code
        self.description = description

    def response(self) -> web.Response:
        trace_id, correlation_id = str(uuid.uuid4()), str(uuid.uuid4())
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        body = {
            "error": self.error,
            "error_description": (
                f"AADSTS{self.code}: {self.description} Trace ID: {trace_id} Correlation ID: {correlation_id} "
                f"Timestamp: {stamp}"
            ),
            "error_codes": [self.code],
            "timestamp": stamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": f"https://login.microsoftonline.com/error?code={self.code}",
        }
        return web.json_response(body, status=self.status)


def tenant_not_found(tenant: str) -> Refusal:
    return Refusal(
        400,
        "invalid_tenant",
        90002,
        f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into "
        "the correct cloud.",
    )


def unknown_client(client_id: str, tenant: str) -> Refusal:
    return Refusal(
        400,
        "unauthorized_client",
        700016,
        f"Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen "
        "if the application has not been installed by the administrator of the tenant.",
    )


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
