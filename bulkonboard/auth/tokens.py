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
import base64
import binascii
import contextlib
import functools
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any

import msal
import requests

from ..errors import AuthError, ServiceUnavailable
from ..protocols import Audience
from .config import AuthConfig, require_private, write_private

PARTNER_CENTER_SCOPE = "https://api.partnercenter.microsoft.com/user_impersonation"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
#: Refresh this long before an access token ends (at most half its life), so no call starts with a token that
#: expires in flight. MSAL's own cache treats the last 5 minutes as expired too.
REFRESH_AHEAD = 300.0
#: Seconds MSAL waits for the authority before giving up: a nightly run must fail, not hang.
HTTP_TIMEOUT = 30
#: Entra ID lets a refresh token lapse after this many days unused; `auth status` warns ahead of it.
REFRESH_TOKEN_LIFETIME_DAYS = 90
LOGIN_HINT = "run `bulkonboard auth login` at a terminal"

_DEVICE_FLOW_WAIT = ("authorization_pending", "slow_down")
_AADSTS = re.compile(r"AADSTS(\d+)")


def scopes_for(audience: Audience | str) -> list[str]:
    return [GRAPH_SCOPE] if Audience(audience) is Audience.GRAPH else [PARTNER_CENTER_SCOPE]


# ---------------------------------------------------------------------------------------------------------------
# what a person reads when sign-in fails


def sign_in_error(
    result: Mapping[str, Any], *, config: AuthConfig, tenant: str, secrets: Iterable[str] = ()
) -> AuthError:
    """MSAL's error dict ("error", "error_description", "error_codes") -> one line that says what to do.

    Entra ID's codes are matched first (they are precise), then the OAuth error name. Only a cleaned first
    sentence of an unrecognised description is quoted, with any known secret cut out."""
    error = str(result.get("error") or "")
    codes = _codes(result)
    app = f"app {config.client_id}"
    secret_where = config.client_secret.describe() if config.client_secret else "BULKONBOARD_CLIENT_SECRET"

    def line(text: str) -> AuthError:
        shown = next((code for code in codes if code in _KNOWN_CODES), codes[0] if codes else None)
        return AuthError(f"{text} (AADSTS{shown})" if shown else text)

    if {700082, 70008} & set(codes):
        return line(
            f"the refresh token has lapsed, unused for {REFRESH_TOKEN_LIFETIME_DAYS} days: {LOGIN_HINT}"
        )
    if 7000222 in codes:
        return line(
            f"the client secret of {app} has expired: create a new one in Entra ID (App registrations > "
            f"Certificates & secrets) and put its value in {secret_where}"
        )
    if 7000215 in codes:
        return line(
            f"the client secret of {app} is wrong: put the secret's Value (not its Secret ID) in {secret_where}"
        )
    if 7000218 in codes:
        return line(f"{app} is a confidential client and needs its secret: set {secret_where}")
    if 700025 in codes:
        return line(
            f"{app} is registered as a public client, so no secret may be sent: remove the client secret from the "
            f"configuration, or {LOGIN_HINT} with the secret configured"
        )
    if 65001 in codes:
        where = (
            "the partner tenant" if tenant.casefold() == config.tenant_id.casefold() else "customer tenant"
        )
        return line(
            f"{app} has no consent in {where} {tenant}: an administrator must grant it consent (for a customer, "
            "through Partner Center's application consent for GDAP), then try again"
        )
    if 90002 in codes:
        return line(
            f"tenant {tenant} was not found at {config.authority}: check BULKONBOARD_TENANT_ID or the customer id"
        )
    if 700016 in codes:
        return line(
            f"{app} was not found in tenant {tenant}: check BULKONBOARD_CLIENT_ID, and that the app is registered "
            "in the partner tenant (and consented in the customer's)"
        )
    if 500011 in codes:
        return line(
            f"{app} has no permission for this API in tenant {tenant}: add the API permission and consent"
        )
    if {50076, 50079, 50158} & set(codes):
        return line(f"the sign-in now needs multi-factor authentication: {LOGIN_HINT}")
    if {50173, 50132, 70043, 700084} & set(codes) or error == "invalid_grant":
        return line(f"the refresh token was refused ({error or 'invalid_grant'}): {LOGIN_HINT}")
    if error == "invalid_client":
        return line(
            f"{app} could not authenticate (invalid_client): check {secret_where} and BULKONBOARD_CLIENT_ID"
        )
    detail = _first_sentence(str(result.get("error_description") or ""), secrets)
    return line(f"sign-in failed for tenant {tenant}: {error or 'error'}{f': {detail}' if detail else ''}")


_KNOWN_CODES = frozenset(
    {
        700082,
        70008,
        7000222,
        7000215,
        7000218,
        700025,
        65001,
        90002,
        700016,
        500011,
        50076,
        50079,
        50158,
        50173,
    }
)


def _codes(result: Mapping[str, Any]) -> list[int]:
    codes: list[int] = []
    for code in result.get("error_codes") or []:
        try:
            codes.append(int(code))
        except (TypeError, ValueError):
            continue
    codes += [int(found) for found in _AADSTS.findall(str(result.get("error_description") or ""))]
    return list(dict.fromkeys(codes))


def _first_sentence(text: str, secrets: Iterable[str]) -> str:
    text = _AADSTS.sub("", text, count=1).lstrip(": ")
    text = re.split(r"\s(?:Trace ID|Correlation ID|Timestamp):", text, maxsplit=1)[0]
    text = text.split("\n", 1)[0].strip()
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<hidden>")
    return text[:200]


def _discovery_error(exc: ValueError, *, config: AuthConfig, tenant: str) -> AuthError:
    """MSAL raises ValueError when the authority will not describe the tenant (Entra ID answers an unknown
    tenant's openid-configuration with 400 AADSTS90002); its text quotes that answer, which holds no secret."""
    # MSAL re-raises with a generic text; the authority's answer is in the exception it was raised from.
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 5:
        chain.append(current)
        current = current.__cause__ or current.__context__
    codes = [int(code) for link in chain for code in _AADSTS.findall(str(link))]
    if codes:
        return sign_in_error({"error_codes": codes}, config=config, tenant=tenant)
    return AuthError(
        f"the authority {config.authority} does not describe tenant {tenant}: check BULKONBOARD_TENANT_ID "
        "and BULKONBOARD_AUTHORITY"
    )


def _network_error(exc: Exception, *, config: AuthConfig) -> ServiceUnavailable:
    if isinstance(exc, requests.exceptions.SSLError):
        return ServiceUnavailable(
            f"cannot verify the TLS certificate of {config.authority}: set BULKONBOARD_CA_BUNDLE to the CA that "
            "signed it (a corporate proxy's or a sandbox's)"
        )
    if isinstance(exc, msal.exceptions.MsalServiceError):
        return ServiceUnavailable(
            f"the sign-in service {config.authority} is failing ({exc}); try again later"
        )
    reason = re.search(r"\[Errno -?\d+\][^'\")]*", str(exc))
    said = reason.group(0).strip() if reason else type(exc).__name__
    return ServiceUnavailable(
        f"cannot reach the sign-in service {config.authority}: {said}; check the network and proxy"
    )


_NETWORK_ERRORS = (requests.exceptions.RequestException, msal.exceptions.MsalServiceError)


# ---------------------------------------------------------------------------------------------------------------
# the cache and the status file on disk


@dataclass(frozen=True)
class SignInStatus:
    """What `auth status` shows: who, for which tenant and app, and when the refresh token was last used.
    Never a token: this file exists so that a person can see the 90-day clock without touching the cache."""

    tenant_id: str
    client_id: str
    authority: str
    username: str = ""
    home_account_id: str = ""
    signed_in_at: str = ""
    refresh_token_last_used_at: str = ""

    def matches(self, config: AuthConfig) -> bool:
        return (
            self.tenant_id.casefold() == config.tenant_id.casefold()
            and self.client_id == config.client_id
            and self.authority.rstrip("/").casefold() == config.authority.casefold()
        )

    def days_since_refresh_token_used(self, now: datetime) -> float | None:
        if not self.refresh_token_last_used_at:
            return None
        try:
            used = datetime.fromisoformat(self.refresh_token_last_used_at)
        except ValueError:
            return None
        return (now - used).total_seconds() / 86400


class TokenStore:
    """MSAL's SerializableTokenCache, saved 0600 only when it changed, plus the token-free status file."""

    def __init__(self, config: AuthConfig) -> None:
        self.config = config
        self.cache = msal.SerializableTokenCache()
        path = config.token_cache
        if path.exists():
            require_private(path, what="token cache")
            try:
                self.cache.deserialize(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                raise AuthError(
                    f"{path}: the token cache is unreadable: delete it and {LOGIN_HINT}"
                ) from None

    def save(self) -> None:
        if self.cache.has_state_changed:
            write_private(self.config.token_cache, self.cache.serialize())

    def has_refresh_token(self) -> bool:
        kind = msal.TokenCache.CredentialType.REFRESH_TOKEN
        return any(True for _ in self.cache.search(kind, query={"client_id": self.config.client_id}))

    def read_status(self) -> SignInStatus | None:
        path = self.config.status_file
        if not path.exists():
            return None
        require_private(path, what="sign-in status file")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            known = {name: str(raw.get(name) or "") for name in SignInStatus.__dataclass_fields__}
            return SignInStatus(**known)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError, TypeError):
            return None  # only informative: a damaged status file is rewritten at the next sign-in

    def record_use(self, result: Mapping[str, Any], *, now: float, signed_in: bool = False) -> SignInStatus:
        """After the identity provider redeemed a refresh token or a device code: who and when."""
        stamp = datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds")
        previous = self.read_status()
        status = (
            previous
            if previous is not None and previous.matches(self.config)
            else SignInStatus(self.config.tenant_id, self.config.client_id, self.config.authority)
        )
        claims = result.get("id_token_claims") or {}
        username = str(claims.get("preferred_username") or claims.get("upn") or "") or status.username
        status = replace(
            status,
            username=username,
            home_account_id=_home_account_id(result) or status.home_account_id,
            signed_in_at=stamp if signed_in else status.signed_in_at,
            refresh_token_last_used_at=stamp,
        )
        write_private(self.config.status_file, json.dumps(asdict(status), indent=2) + "\n")
        return status


def _home_account_id(result: Mapping[str, Any]) -> str:
    """MSAL's account key, `uid.utid`, from the answer's client_info (base64url JSON)."""
    raw = result.get("client_info")
    if not isinstance(raw, str):
        return ""
    try:
        info = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        return f"{info['uid']}.{info['utid']}"
    except (ValueError, KeyError, TypeError, binascii.Error):
        return ""


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
        raise _discovery_error(exc, config=config, tenant=tenant) from None
    except _NETWORK_ERRORS as exc:
        session.close()
        raise _network_error(exc, config=config) from None


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
        except _NETWORK_ERRORS as exc:
            raise _network_error(exc, config=config) from None
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
    except _NETWORK_ERRORS as exc:
        raise _network_error(exc, config=config) from None
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
