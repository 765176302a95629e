"""Signing in with MSAL: App+User tokens for Partner Center, and Graph tokens in each customer's tenant.

Partner Center's create-user call accepts App+User tokens only, so a nightly run cannot use an app-only token:
it redeems a refresh token that a person obtained once (the secure application model). The life of a sign-in:

1. A person runs `bulkonboard auth login` at a terminal: the device code flow, by the same kind of client the
   nightly run will use (a refresh token issued to a public client cannot be redeemed with a secret, AADSTS700025,
   so with a secret configured the confidential app runs the device flow too). MSAL's token cache, holding the
   refresh token, is saved mode 0600 under the state directory.
2. A run asks `MsalTokens.token(...)`: MSAL answers from the cache, refreshing with the cached refresh token
   when the access token is near its end; a refresh token from the configuration (environment or 0600 file) is
   the fallback when the cache has none that works (a fresh machine, a token handed over from a vault).
3. Graph needs a token in each customer's tenant: the same refresh token, redeemed at the customer's authority
   for `https://graph.microsoft.com/.default` (GDAP), cached per tenant.

MSAL is synchronous (it uses `requests`), so every call into it runs in a worker thread, one at a time, under
an asyncio lock: concurrent workers that need a fresh token wait for the one refresh and share its result.
Failures become `AuthError` (exit 3) with one line a person can act on; a refresh token or secret never
reaches a message, a log line or a repr.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msal
import requests

from ..errors import AuthError
from ..protocols import Audience
from .config import AuthConfig, write_private
from .signin_errors import (
    LOGIN_HINT,
    NETWORK_ERRORS,
    REFRESH_TOKEN_LIFETIME_DAYS,
    discovery_error,
    network_error,
    sign_in_error,
)
from .store import SignInStatus, TokenStore

PARTNER_CENTER_SCOPE = "https://api.partnercenter.microsoft.com/user_impersonation"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
#: Refresh this long before an access token ends (at most half its life), so no call starts with a token that
#: expires in flight. MSAL's own cache treats the last 5 minutes as expired too.
REFRESH_AHEAD = 300.0
#: Seconds MSAL waits for the authority before giving up: a nightly run must fail, not hang.
HTTP_TIMEOUT = 30
_DEVICE_FLOW_WAIT = ("authorization_pending", "slow_down")


def scopes_for(audience: Audience | str) -> list[str]:
    return [GRAPH_SCOPE] if Audience(audience) is Audience.GRAPH else [PARTNER_CENTER_SCOPE]


# ---------------------------------------------------------------------------------------------------------------
# building MSAL applications


class _ConfidentialApp(msal.ConfidentialClientApplication):
    """A confidential client that can also run the device code flow.

    MSAL exposes the device flow on PublicClientApplication only, but Entra ID accepts the device-code grant
    from a confidential client that authenticates with its secret, and then the refresh token belongs to the
    confidential client: exactly what the nightly run redeems with the same secret. The methods are MSAL's own,
    unchanged; they use nothing a confidential client lacks (its `client` already sends the secret)."""

    DEVICE_FLOW_CORRELATION_ID = msal.PublicClientApplication.DEVICE_FLOW_CORRELATION_ID
    initiate_device_flow = msal.PublicClientApplication.initiate_device_flow
    acquire_token_by_device_flow = msal.PublicClientApplication.acquire_token_by_device_flow


def _http_session(config: AuthConfig) -> requests.Session:
    """The session MSAL would build (one retry on a broken connection, a timeout), except that the CA bundle is
    passed with every request: requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE in the environment override a
    session's own `verify`, which would silently ignore BULKONBOARD_CA_BUNDLE on many corporate machines."""
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(max_retries=1)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    # MSAL does the same for its timeout: requests has no session-wide per-request defaults.
    session.request = functools.partial(  # type: ignore[method-assign]
        session.request, verify=config.verify, timeout=HTTP_TIMEOUT
    )
    return session


def build_app(config: AuthConfig, tenant: str, cache: msal.SerializableTokenCache) -> Any:
    """An MSAL application for `tenant`'s authority (this fetches the authority's openid-configuration)."""
    options: dict[str, Any] = {
        "authority": config.authority_for(tenant),
        "token_cache": cache,
    }
    if not config.microsoft_authority:
        # Instance discovery asks Microsoft whether the host is an authority; a sandbox or ADFS is not one it knows.
        options["instance_discovery"] = False
    secret = config.client_secret.read() if config.client_secret else None
    session = _http_session(config)
    try:
        if secret is not None:
            return _ConfidentialApp(
                config.client_id, client_credential=secret, http_client=session, **options
            )
        return msal.PublicClientApplication(config.client_id, http_client=session, **options)
    except ValueError as exc:
        session.close()
        raise discovery_error(exc, config=config, tenant=tenant) from None
    except NETWORK_ERRORS as exc:
        session.close()
        raise network_error(exc, config=config) from None


# ---------------------------------------------------------------------------------------------------------------
# tokens for a run


@dataclass(frozen=True)
class _Held:
    token: str
    obtained_at: float
    expires_at: float
    generation: int


class MsalTokens:
    """The client's TokenProvider, backed by MSAL: Partner Center tokens for the partner tenant, Graph tokens
    per customer tenant, each refreshed once, ahead of its end, whoever asks.

    `clock` is seconds since the epoch (time.time), injectable so that tests move time instead of waiting.
    """

    def __init__(self, config: AuthConfig, *, clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._clock = clock
        self._store: TokenStore | None = None
        self._apps: dict[str, Any] = {}
        self._held: dict[tuple[Audience, str], _Held] = {}
        self._generation = 0
        self._lock: asyncio.Lock | None = None

    def __repr__(self) -> str:
        return f"MsalTokens(tenant={self._config.tenant_id}, client={self._config.client_id})"

    async def token(
        self, audience: Audience, tenant: str | None = None, *, force_refresh: bool = False
    ) -> str:
        """A bearer token for `audience` (Graph: in `tenant`, the customer's). `force_refresh` after a 401:
        refresh even if the token looks valid, unless another caller already refreshed it meanwhile."""
        audience = Audience(audience)
        where = self._tenant_for(audience, tenant)
        key = (audience, where.casefold())
        held = self._held.get(key)
        if held is not None and not force_refresh and self._fresh(held):
            return held.token
        seen = held.generation if held is not None else 0
        if self._lock is None:  # made inside the running loop, on first use
            self._lock = asyncio.Lock()
        async with self._lock:
            held = self._held.get(key)
            if held is not None and self._fresh(held) and (not force_refresh or held.generation != seen):
                return held.token  # fresh, or refreshed by another caller while this one waited
            must_skip_cache = force_refresh or held is not None
            result = await asyncio.to_thread(self._acquire, audience, where, must_skip_cache)
            now = self._clock()
            self._generation += 1
            lifetime = _lifetime(result)
            self._held[key] = _Held(result["access_token"], now, now + lifetime, self._generation)
            return str(result["access_token"])

    def remaining(self, audience: Audience, tenant: str | None = None) -> float | None:
        """Seconds left on the token held for `audience`, or None when none is held (never the token)."""
        audience = Audience(audience)
        held = self._held.get((audience, self._tenant_for(audience, tenant).casefold()))
        return None if held is None else held.expires_at - self._clock()

    def close(self) -> None:
        """Close MSAL's HTTP sessions (each app keeps one)."""
        for app in self._apps.values():
            app.http_client.close()
        self._apps.clear()

    def _tenant_for(self, audience: Audience, tenant: str | None) -> str:
        # Partner Center tokens always come from the partner's tenant; Graph's from the customer's.
        if audience is Audience.GRAPH and tenant:
            return tenant
        return self._config.tenant_id

    def _fresh(self, held: _Held) -> bool:
        ahead = min(REFRESH_AHEAD, (held.expires_at - held.obtained_at) / 2)
        return self._clock() < held.expires_at - ahead

    def _acquire(self, audience: Audience, tenant: str, skip_cached_access_token: bool) -> dict[str, Any]:
        """In a worker thread: the cache first (silently refreshing with its refresh token), then the configured
        refresh token. Raises AuthError / ServiceUnavailable with a line for a person."""
        config = self._config
        known_secrets: list[str] = []  # cut out of any text quoted from the service, should it ever echo one
        try:
            if self._store is None:
                self._store = TokenStore(config)
            store = self._store
            app = self._apps.get(tenant.casefold())
            if app is None:
                app = self._apps[tenant.casefold()] = build_app(config, tenant, store.cache)
            scopes = scopes_for(audience)
            result: dict[str, Any] | None = None
            account = _pick_account(app.get_accounts(), store.read_status())
            if account is not None:
                result = app.acquire_token_silent_with_error(
                    scopes, account, force_refresh=skip_cached_access_token
                )
            if (result is None or "error" in result) and config.refresh_token is not None:
                configured = config.refresh_token.read()
                known_secrets.append(configured)
                result = app.acquire_token_by_refresh_token(configured, scopes=scopes)
            store.save()
        except NETWORK_ERRORS as exc:
            raise network_error(exc, config=config) from None
        if result is None:
            raise AuthError(
                f"not signed in to tenant {config.tenant_id} with app {config.client_id}: {LOGIN_HINT}, "
                "or set BULKONBOARD_REFRESH_TOKEN (or refresh_token_file)"
            )
        if "error" in result:
            if config.client_secret is not None:
                with contextlib.suppress(AuthError):
                    known_secrets.append(config.client_secret.read())
            raise sign_in_error(result, config=config, tenant=tenant, secrets=known_secrets)
        if "access_token" not in result:
            raise AuthError(f"the sign-in service answered tenant {tenant} without an access token")
        if result.get("token_source") == "identity_provider":
            store.record_use(result, now=self._clock())
        return dict(result)


def _lifetime(result: Mapping[str, Any]) -> float:
    try:
        return max(0.0, float(result.get("expires_in", 0)))
    except (TypeError, ValueError):
        return 0.0


def _pick_account(accounts: list[dict[str, Any]], status: SignInStatus | None) -> dict[str, Any] | None:
    """The account that `auth login` (or the first refresh) recorded, else the only/first one in the cache."""
    if not accounts:
        return None
    if status is not None and status.home_account_id:
        for account in accounts:
            if account.get("home_account_id") == status.home_account_id:
                return account
    return accounts[0]


# ---------------------------------------------------------------------------------------------------------------
# `auth login`: the device code flow


@dataclass(frozen=True)
class DeviceCodePrompt:
    """What the person at the terminal must do; the user code is single-use and short-lived, made to be shown."""

    verification_uri: str
    user_code: str
    expires_in: int

    def text(self) -> str:
        minutes = max(1, round(self.expires_in / 60))
        return (
            f"To sign in, open {self.verification_uri} in a browser and enter the code {self.user_code} "
            f"(it expires in {minutes} minutes). Waiting..."
        )


def device_login(
    config: AuthConfig,
    *,
    show: Callable[[DeviceCodePrompt], None],
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
) -> SignInStatus:
    """Sign a person in with the device code flow and keep what a nightly run needs: the token cache (with the
    refresh token), the status file, and the refresh token in `refresh_token_file` when the config names one.

    Synchronous: it waits for the person. `sleep` is injectable so tests wait on the approval, not on time."""
    if config.app_only:  # nobody signs in: the app does, with its secret, at each run (auth/apponly.py)
        raise AuthError("app-only sign-in (app_only / BULKONBOARD_APP_ONLY) needs no login: each run signs the app in")
    store = TokenStore(config)
    app = build_app(config, config.tenant_id, store.cache)
    try:
        flow = app.initiate_device_flow(scopes=[PARTNER_CENTER_SCOPE])
        if "user_code" not in flow:
            raise sign_in_error(flow, config=config, tenant=config.tenant_id)
        expires_in = int(flow.get("expires_in", 900))
        show(DeviceCodePrompt(str(flow.get("verification_uri", "")), str(flow["user_code"]), expires_in))
        deadline = clock() + expires_in
        while True:
            # One poll per call: the loop, its pace and its deadline are ours, not MSAL's blocking loop.
            result = app.acquire_token_by_device_flow(flow, exit_condition=lambda _flow: True)
            if result.get("error") not in _DEVICE_FLOW_WAIT:
                break
            if clock() >= deadline:
                raise AuthError(
                    "the code expired before the sign-in was completed: run `bulkonboard auth login` again"
                )
            sleep(max(1, int(flow.get("interval", 5))))
    except NETWORK_ERRORS as exc:
        raise network_error(exc, config=config) from None
    finally:
        app.http_client.close()
    error = result.get("error")
    if error == "authorization_declined":
        raise AuthError("the sign-in was declined in the browser: run `bulkonboard auth login` again")
    if error == "expired_token":
        raise AuthError(
            "the code expired before the sign-in was completed: run `bulkonboard auth login` again"
        )
    if error:
        raise sign_in_error(result, config=config, tenant=config.tenant_id)
    store.save()
    status = store.record_use(result, now=clock(), signed_in=True)
    reference = config.refresh_token
    if reference is not None and reference.file is not None and result.get("refresh_token"):
        write_private(reference.file, str(result["refresh_token"]) + "\n")
    return status


def check_sign_in(config: AuthConfig) -> float:
    """For `auth status --check`: redeem the refresh token for a Partner Center token now (not a cached access
    token: the point is to prove the refresh token works, which also restarts its 90-day clock); returns the new
    token's lifetime in seconds."""
    tokens = MsalTokens(config)

    async def check() -> float:
        await tokens.token(Audience.PARTNER_CENTER, force_refresh=True)
        return tokens.remaining(Audience.PARTNER_CENTER) or 0.0

    try:
        return asyncio.run(check())
    finally:
        tokens.close()


#: Names other modules imported from here before the error wording and the store moved out.
__all__ = [
    "GRAPH_SCOPE",
    "HTTP_TIMEOUT",
    "LOGIN_HINT",
    "PARTNER_CENTER_SCOPE",
    "REFRESH_AHEAD",
    "REFRESH_TOKEN_LIFETIME_DAYS",
    "DeviceCodePrompt",
    "MsalTokens",
    "SignInStatus",
    "TokenStore",
    "build_app",
    "check_sign_in",
    "device_login",
    "scopes_for",
    "sign_in_error",
]
