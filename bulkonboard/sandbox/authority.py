"""The sandbox as a sign-in authority: enough of Microsoft Entra ID's v2.0 endpoints for MSAL, unpatched.

MSAL insists on an https authority with a tenant path segment, fetches
`/{tenant}/v2.0/.well-known/openid-configuration` when an app is built, and needs `client_info` (or an id_token)
in every user token answer to find the account later. This module serves that, so `bulkonboard auth login`,
nightly refresh-token runs and their failures can be rehearsed end to end:

    GET  /{tenant}/v2.0/.well-known/openid-configuration
    POST /{tenant}/oauth2/v2.0/devicecode        device code flow, step 1
    POST /{tenant}/oauth2/v2.0/token             grant types refresh_token, device_code, client_credentials
    GET  /devicelogin, POST /devicelogin         a person approves a device code (tests call approve_device_code)

Access tokens are `sbx.<base64url JSON {tid, aud, scp, oid, exp, ...}>.<base64url HMAC-SHA256>`: the sandbox's
Partner Center and Graph routes check them with `AuthorityState.token_verifier`, which knows the key. Refresh
tokens are opaque; each use returns a new one (the old one keeps working, as in Entra ID), and every refresh
token descended from one sign-in shares its fate: `lapse()` one and the whole sign-in is gone, which is what 90
days without use does.

Error answers have Entra ID's shape (`error`, `error_description` starting `AADSTSnnnn:`, `error_codes`) and
its statuses: 400 for grant and request errors, 401 for client authentication. The codes are Entra ID's
published ones (700082, 7000215, 7000222, 700025, 7000218, 700016, 90002, 65001, 70016, 70020, 500011,
9002313); the wording is the sandbox's paraphrase.

MSAL only speaks https to an authority, so the sandbox serves this over TLS: `make_tls` makes a throwaway CA and
a certificate for 127.0.0.1/localhost with `trustme`, and writes the CA where the client is told to trust it.

The sandbox never imports the core: the resource names come from the sandbox's own `auth` module.
`AuthorityState.token_verifier` has the shape of its `TokenVerifier`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import html
import json
import secrets
import ssl
import string
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import unquote_plus

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
class _Client:
    client_id: str
    secret: str | None  # None: a public client, which must not send one
    secret_expired: bool = False


@dataclass
class _SignIn:
    """One person signing in to one app: every refresh token it yields lives and lapses with it."""

    client_id: str
    username: str
    oid: str
    home_tenant: str
    issued_at: float
    lapsed: bool = False


@dataclass
class _DeviceCode:
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


class _Refusal(Exception):
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


class AuthorityState:
    """What the authority knows and has issued; tests and the sandbox steer failures through its methods.

    `tenants=None` makes every tenant exist (handy for a sandbox whose customers are read from a file later);
    a set makes the others answer AADSTS90002. Tenants compare case-insensitively. `clients` maps client ids to
    their secret (None for a public client). `clock` is what `exp` and `token_verifier` measure against.
    """

    def __init__(
        self,
        *,
        clients: Mapping[str, str | None] | None = None,
        tenants: Iterable[str] | None = None,
        expires_in: int = 3600,
        device_interval: int = 5,
        device_expires_in: int = 900,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._clients = {cid: _Client(cid, secret) for cid, secret in (clients or {}).items()}
        self._tenants: set[str] | None = {t.casefold() for t in tenants} if tenants is not None else None
        self.expires_in = expires_in
        self.device_interval = device_interval
        self.device_expires_in = device_expires_in
        self.clock = clock
        self._key = secrets.token_bytes(32)
        self._refresh_tokens: dict[str, _SignIn] = {}
        self._device_codes: dict[str, _DeviceCode] = {}  # by device_code
        self._no_consent: set[tuple[str, str | None]] = set()  # (tenant, client or None for every client)
        self._revoked: set[str] = set()  # access token ids (jti)
        self.requests: list[TokenRequest] = []
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []

    # ---- set-up and steering -----------------------------------------------------------------------------------

    def add_client(self, client_id: str, secret: str | None = None) -> None:
        self._clients[client_id] = _Client(client_id, secret)

    def add_tenant(self, tenant: str) -> None:
        if self._tenants is not None:
            self._tenants.add(tenant.casefold())

    def knows_tenant(self, tenant: str) -> bool:
        return self._tenants is None or tenant.casefold() in self._tenants

    def expire_secret(self, client_id: str) -> None:
        """The app's secret passed its end date: AADSTS7000222 from now on."""
        self._clients[client_id].secret_expired = True

    def withhold_consent(self, tenant: str, client_id: str | None = None) -> None:
        """Nobody consented to the app in `tenant` (for a customer: no consent through Partner Center): 65001."""
        self._no_consent.add((tenant.casefold(), client_id))

    def issue_refresh_token(self, client_id: str, tenant: str, username: str = DEFAULT_USER) -> str:
        """A refresh token as if the partner's admin had signed in elsewhere (the secure application model's
        starting point: the token handed to the nightly job)."""
        return self._new_refresh_token(self._new_sign_in(client_id, tenant, username))

    def lapse(self, refresh_token: str) -> None:
        """The sign-in this refresh token came from went unused for 90 days: it and every refresh token
        descended from it now answer AADSTS700082."""
        sign_in = self._refresh_tokens.get(refresh_token)
        if sign_in is None:
            raise KeyError("no such refresh token")
        sign_in.lapsed = True

    def approve_device_code(self, user_code: str, username: str = DEFAULT_USER) -> None:
        """What the person does in the browser: the next poll of that device code gets tokens."""
        code = self._device_code_by_user_code(user_code)
        code.approved_by = username
        self._notify()

    def decline_device_code(self, user_code: str) -> None:
        self._device_code_by_user_code(user_code).declined = True
        self._notify()

    def revoke_access_token(self, token: str) -> None:
        claims = self._claims(token)
        if claims is not None:
            self._revoked.add(str(claims.get("jti")))

    def user_codes(self) -> list[str]:
        """The user codes handed out so far, oldest first (what a person would read off the terminal)."""
        return [code.user_code for code in self._device_codes.values()]

    def count(self, grant_type: str | None = None, *, tenant: str | None = None) -> int:
        """Calls to the token endpoint, optionally of one grant type and for one tenant."""
        return sum(
            1
            for request in self.requests
            if (grant_type is None or request.grant_type == grant_type)
            and (tenant is None or request.tenant.casefold() == tenant.casefold())
        )

    def grant_counts(self) -> Counter[str]:
        return Counter(request.grant_type for request in self.requests)

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Until `predicate()` holds; it is checked after every token request and approval. Tests wait on this
        instead of sleeping."""
        if predicate():
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((predicate, future))
        await future

    async def wait_for_device_poll(self, user_code: str | None = None, *, times: int = 1) -> str:
        """Until a device code (this one, or any) has been polled `times` times; returns its user code. A test
        approves after this, so the client is known to be waiting."""

        def polled() -> _DeviceCode | None:
            for code in self._device_codes.values():
                if (user_code is None or code.user_code == user_code) and code.polls >= times:
                    return code
            return None

        await self.wait_until(lambda: polled() is not None)
        found = polled()
        assert found is not None
        return found.user_code

    # ---- the check the sandbox's other routes use --------------------------------------------------------------

    def token_verifier(self, token: str, tenant: str | None, audience: str) -> bool:
        """True for an unexpired, unrevoked access token this authority issued for `audience` (a resource URL
        or "partnercenter"/"graph") and, when given, `tenant` (a Graph call names the customer's tenant)."""
        claims = self._claims(token)
        if claims is None:
            return False
        wanted = AUDIENCE_ALIASES.get(audience, audience).rstrip("/")
        if str(claims.get("aud", "")).rstrip("/") != wanted:
            return False
        if tenant is not None and str(claims.get("tid", "")).casefold() != tenant.casefold():
            return False
        if str(claims.get("jti")) in self._revoked:
            return False
        try:
            return float(claims["exp"]) > self.clock()
        except (KeyError, TypeError, ValueError):
            return False

    def claims(self, token: str) -> dict[str, Any] | None:
        """The claims of an access token this authority issued (signature checked, expiry not), for tests and
        for routes that want to know who is calling."""
        return self._claims(token)

    # ---- internals -----------------------------------------------------------------------------------------

    def _notify(self) -> None:
        # Everything runs on the server's loop thread, so waking the waiters needs no lock and no task.
        for waiter in list(self._waiters):
            predicate, future = waiter
            if future.done():
                self._waiters.remove(waiter)
            elif predicate():
                future.set_result(None)
                self._waiters.remove(waiter)

    def _device_code_by_user_code(self, user_code: str) -> _DeviceCode:
        wanted = user_code.strip().upper()
        for code in self._device_codes.values():
            if code.user_code == wanted:
                return code
        raise KeyError(f"no such user code: {user_code}")

    def _new_sign_in(self, client_id: str, tenant: str, username: str) -> _SignIn:
        oid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"sandbox-user:{username.casefold()}"))
        return _SignIn(
            client_id=client_id, username=username, oid=oid, home_tenant=tenant, issued_at=self.clock()
        )

    def _new_refresh_token(self, sign_in: _SignIn) -> str:
        token = "sbxrt." + secrets.token_urlsafe(32)
        self._refresh_tokens[token] = sign_in
        return token

    def _sign(self, payload: bytes) -> str:
        return _b64(hmac.new(self._key, payload, hashlib.sha256).digest())

    def _claims(self, token: str) -> dict[str, Any] | None:
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
            return None
        if not hmac.compare_digest(self._sign(f"{parts[0]}.{parts[1]}".encode()), parts[2]):
            return None
        try:
            claims = json.loads(_unb64(parts[1]))
        except (ValueError, binascii.Error):
            return None
        return claims if isinstance(claims, dict) else None

    def _access_token(self, claims: dict[str, Any]) -> str:
        head = f"{TOKEN_PREFIX}.{_b64(json.dumps(claims, separators=(',', ':')).encode())}"
        return f"{head}.{self._sign(head.encode())}"

    def _id_token(self, claims: dict[str, Any]) -> str:
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        body = _b64(json.dumps(claims, separators=(",", ":")).encode())
        return f"{header}.{body}.{self._sign(f'{header}.{body}'.encode())}"


# ---------------------------------------------------------------------------------------------------------------
# routes


def add_authority_routes(app: web.Application, state: AuthorityState) -> None:
    """Mount the authority at the root of `app` (MSAL takes the first path segment as the tenant, so it cannot
    live under a prefix). The paths cannot collide with `/v1/...` or `/graph/{tenant}/...`."""
    authority = _Authority(state)
    app.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", authority.openid_configuration)
    app.router.add_post("/{tenant}/oauth2/v2.0/devicecode", authority.device_code)
    app.router.add_post("/{tenant}/oauth2/v2.0/token", authority.token)
    app.router.add_get("/devicelogin", authority.device_login_page)
    app.router.add_post("/devicelogin", authority.device_login_approve)


def _base_url(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


class _Authority:
    def __init__(self, state: AuthorityState) -> None:
        self.state = state

    async def openid_configuration(self, request: web.Request) -> web.Response:
        tenant = request.match_info["tenant"]
        if not self.state.knows_tenant(tenant):
            return _tenant_not_found(tenant).response()
        base = f"{_base_url(request)}/{tenant}"
        return web.json_response(
            {
                "issuer": f"{base}/v2.0",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "jwks_uri": f"{base}/discovery/v2.0/keys",
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["HS256"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
                "grant_types_supported": ["refresh_token", DEVICE_CODE_GRANT, "client_credentials"],
                "tenant_region_scope": "EU",
            }
        )

    async def device_code(self, request: web.Request) -> web.Response:
        tenant = request.match_info["tenant"]
        form = await request.post()
        try:
            if not self.state.knows_tenant(tenant):
                raise _tenant_not_found(tenant)
            client_id = str(form.get("client_id", ""))
            if client_id not in self.state._clients:
                raise _unknown_client(client_id, tenant)
            scopes = _split_scopes(str(form.get("scope", "")))
            _resource_of(scopes, tenant)
        except _Refusal as refusal:
            return refusal.response()
        user_code = "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(9))
        code = _DeviceCode(
            device_code=secrets.token_urlsafe(32),
            user_code=user_code,
            client_id=client_id,
            tenant=tenant,
            scopes=tuple(scopes),
            expires_at=self.state.clock() + self.state.device_expires_in,
        )
        self.state._device_codes[code.device_code] = code
        self.state._notify()
        verification_uri = f"{_base_url(request)}/devicelogin"
        return web.json_response(
            {
                "user_code": user_code,
                "device_code": code.device_code,
                "verification_uri": verification_uri,
                "expires_in": self.state.device_expires_in,
                "interval": self.state.device_interval,
                "message": (
                    f"To sign in, use a web browser to open the page {verification_uri} and enter the code "
                    f"{user_code} to authenticate."
                ),
            }
        )

    async def token(self, request: web.Request) -> web.Response:
        tenant = request.match_info["tenant"]
        form = await request.post()
        fields = {key: str(value) for key, value in form.items()}
        basic_id, basic_secret = _basic_credentials(request)
        client_id = fields.get("client_id") or basic_id or ""
        grant_type = fields.get("grant_type", "")
        try:
            response = self._token(tenant, grant_type, client_id, basic_secret, fields)
        except _Refusal as refusal:
            self._record(TokenRequest(tenant, grant_type, client_id, refusal.status, refusal.code))
            return refusal.response()
        self._record(TokenRequest(tenant, grant_type, client_id, 200))
        return web.json_response(response, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _record(self, request: TokenRequest) -> None:
        self.state.requests.append(request)
        self.state._notify()

    def _token(
        self, tenant: str, grant_type: str, client_id: str, basic_secret: str | None, fields: dict[str, str]
    ) -> dict[str, Any]:
        state = self.state
        if not state.knows_tenant(tenant):
            raise _tenant_not_found(tenant)
        client = state._clients.get(client_id)
        if client is None:
            raise _unknown_client(client_id, tenant)
        _authenticate(client, fields.get("client_secret") or basic_secret)
        scopes = _split_scopes(fields.get("scope", ""))
        if grant_type == "refresh_token":
            return self._refresh(tenant, client, scopes, fields)
        if grant_type == DEVICE_CODE_GRANT:
            return self._device(tenant, client, fields)
        if grant_type == "client_credentials":
            return self._client_credentials(tenant, client, scopes, fields)
        raise _Refusal(
            400,
            "unsupported_grant_type",
            70003,
            f"The app requested an unsupported grant type '{grant_type}'.",
        )

    def _refresh(
        self, tenant: str, client: _Client, scopes: list[str], fields: dict[str, str]
    ) -> dict[str, Any]:
        sign_in = self.state._refresh_tokens.get(fields.get("refresh_token", ""))
        if sign_in is None or sign_in.client_id != client.client_id:
            raise _Refusal(400, "invalid_grant", 9002313, "Invalid request. Request is malformed or invalid.")
        if sign_in.lapsed:
            issued = datetime.fromtimestamp(sign_in.issued_at, UTC).strftime("%m/%d/%Y %H:%M:%S")
            raise _Refusal(
                400,
                "invalid_grant",
                700082,
                f"The refresh token has expired due to inactivity. The token was issued on {issued} and was "
                "inactive for 90.00:00:00.",
            )
        self._check_consent(tenant, client)
        return self._user_tokens(tenant, client, sign_in, scopes, fields)

    def _device(self, tenant: str, client: _Client, fields: dict[str, str]) -> dict[str, Any]:
        code = self.state._device_codes.get(fields.get("device_code", ""))
        if code is None or code.client_id != client.client_id or code.redeemed:
            raise _Refusal(
                400, "invalid_grant", 70000, "The provided value for the device code is not valid."
            )
        code.polls += 1
        if code.declined:
            raise _Refusal(400, "authorization_declined", 70000, "The user declined to sign in.")
        if self.state.clock() >= code.expires_at:
            raise _Refusal(400, "expired_token", 70020, "The provided device code has expired.")
        if code.approved_by is None:
            raise _Refusal(
                400,
                "authorization_pending",
                70016,
                "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
            )
        self._check_consent(tenant, client)
        code.redeemed = True
        sign_in = self.state._new_sign_in(client.client_id, code.tenant, code.approved_by)
        return self._user_tokens(tenant, client, sign_in, list(code.scopes), fields)

    def _client_credentials(
        self, tenant: str, client: _Client, scopes: list[str], fields: dict[str, str]
    ) -> dict[str, Any]:
        if client.secret is None:
            raise _Refusal(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: "
                "'client_assertion' or 'client_secret'.",
            )
        resource = _resource_of(scopes, tenant)
        now = int(self.state.clock())
        claims = {
            "tid": tenant,
            "aud": resource,
            "roles": [],
            "appid": client.client_id,
            "iat": now,
            "exp": now + self.state.expires_in,
            "jti": str(uuid.uuid4()),
        }
        return {
            "token_type": "Bearer",
            "expires_in": self.state.expires_in,
            "ext_expires_in": self.state.expires_in,
            "access_token": self.state._access_token(claims),
        }

    def _check_consent(self, tenant: str, client: _Client) -> None:
        key = tenant.casefold()
        if (key, None) in self.state._no_consent or (key, client.client_id) in self.state._no_consent:
            raise _Refusal(
                400,
                "invalid_grant",
                65001,
                f"The user or administrator has not consented to use the application with ID "
                f"'{client.client_id}'. Send an interactive authorization request for this user and resource.",
            )

    def _user_tokens(
        self, tenant: str, client: _Client, sign_in: _SignIn, scopes: list[str], fields: dict[str, str]
    ) -> dict[str, Any]:
        resource = _resource_of(scopes, tenant)
        state = self.state
        now = int(state.clock())
        resource_scopes = [scope for scope in scopes if scope not in OIDC_SCOPES]
        access = {
            "tid": tenant,
            "aud": resource,
            "scp": " ".join(scope.rsplit("/", 1)[-1] for scope in resource_scopes),
            "oid": sign_in.oid,
            "upn": sign_in.username,
            "appid": client.client_id,
            "iat": now,
            "exp": now + state.expires_in,
            "jti": str(uuid.uuid4()),
        }
        answer: dict[str, Any] = {
            "token_type": "Bearer",
            "scope": " ".join(scopes),
            "expires_in": state.expires_in,
            "ext_expires_in": state.expires_in,
            "access_token": state._access_token(access),
        }
        if "offline_access" in scopes:
            answer["refresh_token"] = state._new_refresh_token(sign_in)
        if "openid" in scopes:
            answer["id_token"] = state._id_token(
                {
                    "aud": client.client_id,
                    "iss": f"sandbox/{tenant}/v2.0",
                    "iat": now,
                    "nbf": now,
                    "exp": now + 3600,
                    "oid": sign_in.oid,
                    "sub": sign_in.oid,
                    "tid": tenant,
                    "preferred_username": sign_in.username,
                    "name": sign_in.username.split("@", 1)[0],
                    "ver": "2.0",
                }
            )
        if fields.get("client_info") == "1":
            info = {"uid": sign_in.oid, "utid": sign_in.home_tenant}
            answer["client_info"] = _b64(json.dumps(info).encode())
        return answer

    # A page for a person approving a code in a browser, so a sandbox started by hand can be signed in to.

    async def device_login_page(self, request: web.Request) -> web.Response:
        return web.Response(
            content_type="text/html",
            text=(
                "<!doctype html><title>Sandbox sign-in</title><h1>Sandbox sign-in</h1>"
                '<form method="post"><label>Code <input name="user_code" autofocus></label> '
                f'<label>User <input name="username" value="{html.escape(DEFAULT_USER)}"></label> '
                "<button>Sign in</button></form>"
            ),
        )

    async def device_login_approve(self, request: web.Request) -> web.Response:
        form = await request.post()
        user_code = str(form.get("user_code", ""))
        username = str(form.get("username", "")).strip() or DEFAULT_USER
        try:
            self.state.approve_device_code(user_code, username)
        except KeyError:
            return web.Response(status=400, content_type="text/html", text="<p>Unknown or expired code.</p>")
        return web.Response(content_type="text/html", text="<p>Signed in. You can close this window.</p>")


def _authenticate(client: _Client, presented: str | None) -> None:
    if client.secret is None:
        if presented:
            raise _Refusal(
                401,
                "invalid_client",
                700025,
                "Client is public so neither 'client_assertion' nor 'client_secret' should be presented.",
            )
        return
    if not presented:
        raise _Refusal(
            401,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        )
    if not hmac.compare_digest(presented.encode(), client.secret.encode()):
        raise _Refusal(
            401,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret "
            f"value, not the client secret ID, for a secret added to app '{client.client_id}'.",
        )
    if client.secret_expired:
        raise _Refusal(
            401,
            "invalid_client",
            7000222,
            f"The provided client secret keys for app '{client.client_id}' are expired.",
        )


def _basic_credentials(request: web.Request) -> tuple[str | None, str | None]:
    header = request.headers.get("Authorization", "")
    if not header.lower().startswith("basic "):
        return None, None
    try:
        decoded = base64.b64decode(header[6:].strip()).decode()
    except (ValueError, binascii.Error):
        return None, None
    client_id, _, secret = decoded.partition(":")
    return unquote_plus(client_id), unquote_plus(secret)


def _split_scopes(scope: str) -> list[str]:
    return [part for part in scope.split() if part]


def _resource_of(scopes: list[str], tenant: str) -> str:
    """The one resource a request's scopes name: `https://graph.microsoft.com/.default` -> Graph."""
    resources = {scope.rsplit("/", 1)[0].rstrip("/") for scope in scopes if scope not in OIDC_SCOPES}
    if len(resources) != 1:
        raise _Refusal(
            400,
            "invalid_scope",
            70011,
            "The provided value for the input parameter 'scope' is not valid: name exactly one resource.",
        )
    resource = resources.pop()
    if resource not in RESOURCES:
        raise _Refusal(
            400,
            "invalid_resource",
            500011,
            f"The resource principal named {resource} was not found in the tenant named {tenant}.",
        )
    return resource


def _tenant_not_found(tenant: str) -> _Refusal:
    return _Refusal(
        400,
        "invalid_tenant",
        90002,
        f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into "
        "the correct cloud.",
    )


def _unknown_client(client_id: str, tenant: str) -> _Refusal:
    return _Refusal(
        400,
        "unauthorized_client",
        700016,
        f"Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen "
        "if the application has not been installed by the administrator of the tenant.",
    )


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# ---------------------------------------------------------------------------------------------------------------
# TLS for a local authority


class Tls(NamedTuple):
    """The server side (an SSLContext for aiohttp's TCPSite) and the CA file the client is told to trust."""

    server_context: ssl.SSLContext
    ca_path: Path


def make_tls(directory: Path, hosts: Iterable[str] = ("127.0.0.1", "localhost", "::1")) -> Tls:
    """A throwaway CA and a server certificate for the local hosts; the CA is written to `directory/ca.pem`.

    Needs `trustme` (a test extra today: `bulkonboard sandbox --tls` needs it at run time too).
    """
    import trustme

    authority = trustme.CA(organization_name="bulkonboard sandbox")
    leaf = authority.issue_cert(*hosts)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(context)
    directory.mkdir(parents=True, exist_ok=True)
    ca_path = directory / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_path))
    return Tls(server_context=context, ca_path=ca_path)
