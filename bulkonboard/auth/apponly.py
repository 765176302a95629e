"""App-only sign-in for an administrator of their own tenant (no partner): the app signs in as itself with its
client secret (OAuth client credentials, MSAL's `acquire_token_for_client`) for Microsoft Graph.

Why apart from tokens.py: the secure application model there redeems a person's refresh token for Partner Center
and GDAP; here no person signs in, nothing is redeemed, nothing is written to disk (MSAL keeps the app's tokens in
memory; a run asks for a new one when it starts, which costs one request). The secret is read by reference
(config.py: environment or a 0600 file) when the app is built, and cut out of any text quoted from the authority.

Only Graph: Partner Center does not take app-only tokens for users. The sending stage still asks for the Partner
Center audience when it refreshes after a 401 (it predates Graph writes): here any forced refresh renews the Graph
token of the tenant asked (the own tenant when none is named), which is what that 401 was about.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msal

from ..errors import AuthError
from ..protocols import Audience
from .config import AuthConfig
from .signin_errors import NETWORK_ERRORS, network_error, sign_in_error
from .tokens import GRAPH_SCOPE, REFRESH_AHEAD, build_app


@dataclass(frozen=True)
class _Held:
    token: str
    obtained_at: float
    expires_at: float


class AppOnlyTokens:
    """`TokenProvider` for Graph as the app itself: one token per tenant, renewed ahead of its end, once for every
    caller (an asyncio lock; MSAL runs in a worker thread, being synchronous)."""

    def __init__(self, config: AuthConfig, *, clock: Callable[[], float] = time.time) -> None:
        if not config.app_only or config.client_secret is None:
            raise ValueError("AppOnlyTokens needs an app-only configuration with a client secret")
        self._config = config
        self._clock = clock
        self._apps: dict[str, Any] = {}
        self._held: dict[str, _Held] = {}
        self._lock: asyncio.Lock | None = None

    def __repr__(self) -> str:
        return f"AppOnlyTokens(tenant={self._config.tenant_id}, client={self._config.client_id})"

    async def token(
        self, audience: Audience, tenant: str | None = None, *, force_refresh: bool = False
    ) -> str:
        """A Graph token for `tenant` (the configured tenant when None or for the Partner Center audience, which
        only the sending stage's refresh after a 401 asks for: see the module's docstring)."""
        where = tenant if Audience(audience) is Audience.GRAPH and tenant else self._config.tenant_id
        key = where.casefold()
        held = self._held.get(key)
        if held is not None and not force_refresh and self._fresh(held):
            return held.token
        if self._lock is None:  # made inside the running loop, on first use
            self._lock = asyncio.Lock()
        async with self._lock:
            again = self._held.get(key)
            if again is not None and again is not held and self._fresh(again):
                return again.token  # renewed by another caller while this one waited
            result = await asyncio.to_thread(self._acquire, where, force_refresh or held is not None)
            now = self._clock()
            lifetime = _lifetime(result)
            self._held[key] = _Held(str(result["access_token"]), now, now + lifetime)
            return str(result["access_token"])

    def close(self) -> None:
        for app in self._apps.values():
            app.http_client.close()
        self._apps.clear()

    def _fresh(self, held: _Held) -> bool:
        ahead = min(REFRESH_AHEAD, (held.expires_at - held.obtained_at) / 2)
        return self._clock() < held.expires_at - ahead

    def _acquire(self, tenant: str, renew: bool) -> dict[str, Any]:
        """In a worker thread: a token from the authority (MSAL's in-memory cache dropped first when renewing,
        since it would hand back the token just refused). AuthError / ServiceUnavailable with a line for a person."""
        config = self._config
        try:
            app = self._apps.get(tenant.casefold())
            if app is None:
                app = self._apps[tenant.casefold()] = build_app(config, tenant, msal.SerializableTokenCache())
            elif renew:
                app.remove_tokens_for_client()
            result = app.acquire_token_for_client(scopes=[GRAPH_SCOPE])
        except NETWORK_ERRORS as exc:
            raise network_error(exc, config=config) from None
        if not isinstance(result, dict):
            raise AuthError(f"the sign-in service gave no answer for tenant {tenant}")
        if "error" in result:
            secrets: list[str] = []
            if config.client_secret is not None:
                with contextlib.suppress(AuthError):
                    secrets.append(config.client_secret.read())
            raise sign_in_error(result, config=config, tenant=tenant, secrets=secrets)
        if "access_token" not in result:
            raise AuthError(f"the sign-in service answered tenant {tenant} without an access token")
        return dict(result)


def _lifetime(result: dict[str, Any]) -> float:
    try:
        return max(0.0, float(result.get("expires_in", 0)))
    except (TypeError, ValueError):
        return 0.0
