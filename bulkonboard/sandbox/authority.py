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
import binascii
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .authority_routes import add_authority_routes
from .signin import (
    AUDIENCE_ALIASES,
    DEFAULT_USER,
    DEVICE_CODE_GRANT,
    GRAPH_RESOURCE,
    OIDC_SCOPES,
    PARTNER_CENTER_RESOURCE,
    RESOURCES,
    TOKEN_PREFIX,
    Client,
    DeviceCode,
    SignIn,
    TokenRequest,
    b64,
    unb64,
)
from .tls import Tls, make_tls

__all__ = [
    "AUDIENCE_ALIASES",
    "DEFAULT_USER",
    "DEVICE_CODE_GRANT",
    "GRAPH_RESOURCE",
    "OIDC_SCOPES",
    "PARTNER_CENTER_RESOURCE",
    "RESOURCES",
    "AuthorityState",
    "Tls",
    "TokenRequest",
    "add_authority_routes",
    "make_tls",
]


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
        self._clients = {cid: Client(cid, secret) for cid, secret in (clients or {}).items()}
        self._tenants: set[str] | None = {t.casefold() for t in tenants} if tenants is not None else None
        self.expires_in = expires_in
        self.device_interval = device_interval
        self.device_expires_in = device_expires_in
        self.clock = clock
        self._key = secrets.token_bytes(32)
        self._refresh_tokens: dict[str, SignIn] = {}
        self._device_codes: dict[str, DeviceCode] = {}  # by device_code
        self._no_consent: set[tuple[str, str | None]] = set()  # (tenant, client or None for every client)
        self._revoked: set[str] = set()  # access token ids (jti)
        self.requests: list[TokenRequest] = []
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []

    # ---- set-up and steering -----------------------------------------------------------------------------------

    def add_client(self, client_id: str, secret: str | None = None) -> None:
        self._clients[client_id] = Client(client_id, secret)

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

        def polled() -> DeviceCode | None:
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

    def _device_code_by_user_code(self, user_code: str) -> DeviceCode:
        wanted = user_code.strip().upper()
        for code in self._device_codes.values():
            if code.user_code == wanted:
                return code
        raise KeyError(f"no such user code: {user_code}")

    def _new_sign_in(self, client_id: str, tenant: str, username: str) -> SignIn:
        oid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"sandbox-user:{username.casefold()}"))
        return SignIn(
            client_id=client_id, username=username, oid=oid, home_tenant=tenant, issued_at=self.clock()
        )

    def _new_refresh_token(self, sign_in: SignIn) -> str:
        token = "sbxrt." + secrets.token_urlsafe(32)
        self._refresh_tokens[token] = sign_in
        return token

    def _sign(self, payload: bytes) -> str:
        return b64(hmac.new(self._key, payload, hashlib.sha256).digest())

    def _claims(self, token: str) -> dict[str, Any] | None:
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
            return None
        if not hmac.compare_digest(self._sign(f"{parts[0]}.{parts[1]}".encode()), parts[2]):
            return None
        try:
            claims = json.loads(unb64(parts[1]))
        except (ValueError, binascii.Error):
            return None
        return claims if isinstance(claims, dict) else None

    def _access_token(self, claims: dict[str, Any]) -> str:
        head = f"{TOKEN_PREFIX}.{b64(json.dumps(claims, separators=(',', ':')).encode())}"
        return f"{head}.{self._sign(head.encode())}"

    def _id_token(self, claims: dict[str, Any]) -> str:
        header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        body = b64(json.dumps(claims, separators=(",", ":")).encode())
        return f"{header}.{body}.{self._sign(f'{header}.{body}'.encode())}"
