"""MSAL's own code, unpatched, against the sandbox authority over TLS: sign-in, silent renewal, device login,
expiry mid-run, and every failure a person must be able to act on.

Every test builds fresh MSAL applications (MSAL caches 400/429/5xx token answers per application) and counts
the calls the authority saw, so "from the cache" and "refreshed once" are facts, not hopes.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import stat
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import aiohttp
import pytest
from click.testing import CliRunner

from bulkonboard.auth.config import AuthConfig, load_config
from bulkonboard.auth.tokens import DeviceCodePrompt, MsalTokens, device_login
from bulkonboard.cli import auth_commands as auth_cli
from bulkonboard.cli.auth_commands import auth_command, status_lines
from bulkonboard.errors import AuthError, ServiceUnavailable
from bulkonboard.sandbox.authority import DEVICE_CODE_GRANT, AuthorityState, Tls, make_tls
from bulkonboard.service.partnercenter import Audience

from .tlsutil import RunningAuthority, serve_authority

PARTNER = "partner-tenant"
CUSTOMER = "customer-one"
OTHER_CUSTOMER = "customer-two"
CLIENT = "11111111-2222-3333-4444-555555555555"
SECRET = "s3cret-value~NOT-for-logs"
PUBLIC_CLIENT = "99999999-0000-0000-0000-000000000000"
EXPIRES_IN = 3600


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def state() -> AuthorityState:
    return AuthorityState(
        clients={CLIENT: SECRET, PUBLIC_CLIENT: None},
        tenants={PARTNER, CUSTOMER, OTHER_CUSTOMER},
        expires_in=EXPIRES_IN,
        device_interval=1,
    )


@pytest.fixture
async def authority(state: AuthorityState, tls: Tls) -> AsyncIterator[RunningAuthority]:
    async with serve_authority(state, tls) as running:
        yield running


def private_file(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


def make_config(
    authority: RunningAuthority,
    tmp_path: Path,
    *,
    refresh_token: str | None = None,
    secret: str | None = SECRET,
    client_id: str = CLIENT,
    tenant: str = PARTNER,
    trust_ca: bool = True,
    refresh_token_file: Path | None = None,
) -> AuthConfig:
    """Through load_config, as a user would configure it: ids in the environment, secrets in 0600 files."""
    environ = {
        "BULKONBOARD_TENANT_ID": tenant,
        "BULKONBOARD_CLIENT_ID": client_id,
        "BULKONBOARD_AUTHORITY": authority.url,
        "BULKONBOARD_TOKEN_CACHE": str(tmp_path / "state" / "msal_cache.json"),
        "XDG_CONFIG_HOME": str(tmp_path / "no-config"),
    }
    if trust_ca:
        environ["BULKONBOARD_CA_BUNDLE"] = str(authority.ca_path)
    if secret is not None:
        environ["BULKONBOARD_CLIENT_SECRET_FILE"] = str(
            private_file(tmp_path / "secrets" / "client_secret", secret)
        )
    if refresh_token is not None:
        rt_file = refresh_token_file or tmp_path / "secrets" / "refresh_token"
        environ["BULKONBOARD_REFRESH_TOKEN_FILE"] = str(private_file(rt_file, refresh_token))
    elif refresh_token_file is not None:
        environ["BULKONBOARD_REFRESH_TOKEN_FILE"] = str(refresh_token_file)
    return load_config(environ, cwd=tmp_path)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class FakeClock:
    """Wall-clock seconds that only move when the test says so."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def get(tokens: MsalTokens, audience: Audience, tenant: str | None = None, **kwargs: Any) -> str:
    return await tokens.token(audience, tenant, **kwargs)


def assert_no_secret(text: str, *secrets: str) -> None:
    for secret in (SECRET, *secrets):
        assert secret not in text


# ---------------------------------------------------------------------------------------------------------------
# signing in and renewing


async def test_refresh_token_sign_in_then_silent_renewal_from_the_persisted_cache(
    authority: RunningAuthority, tmp_path: Path
) -> None:
    state = authority.state
    refresh_token = state.issue_refresh_token(CLIENT, PARTNER, "ops@partner.example")
    config = make_config(authority, tmp_path, refresh_token=refresh_token)

    first = MsalTokens(config)
    try:
        token = await first.token(Audience.PARTNER_CENTER)
        assert state.token_verifier(token, PARTNER, "partnercenter")
        assert not state.token_verifier(token, PARTNER, "graph")
        assert state.count("refresh_token") == 1
        assert await first.token(Audience.PARTNER_CENTER) == token  # held in memory
        assert state.count("refresh_token") == 1
    finally:
        first.close()

    # A new process: fresh MSAL apps over the same cache file answer from the cache, no token call.
    second = MsalTokens(config)
    try:
        assert await second.token(Audience.PARTNER_CENTER) == token
        assert state.count() == 1
    finally:
        second.close()

    cache_text = config.token_cache.read_text()
    status = json.loads(config.status_file.read_text())
    assert mode(config.token_cache) == 0o600 and mode(config.status_file) == 0o600
    assert mode(config.token_cache.parent) == 0o700
    assert status["username"] == "ops@partner.example" and status["tenant_id"] == PARTNER
    assert status["refresh_token_last_used_at"]
    status_text = config.status_file.read_text()
    assert token not in status_text and refresh_token not in status_text
    assert "sbxrt." not in status_text  # no refresh token of any generation
    assert_no_secret(cache_text)  # the cache holds tokens, never the client secret
    assert repr(first) == f"MsalTokens(tenant={PARTNER}, client={CLIENT})"


async def test_graph_tokens_come_from_the_same_sign_in_one_per_customer_tenant(
    authority: RunningAuthority, tmp_path: Path
) -> None:
    state = authority.state
    config = make_config(authority, tmp_path, refresh_token=state.issue_refresh_token(CLIENT, PARTNER))
    tokens = MsalTokens(config)
    try:
        partner_center = await tokens.token(Audience.PARTNER_CENTER)
        one = await tokens.token(Audience.GRAPH, CUSTOMER)
        two = await tokens.token(Audience.GRAPH, OTHER_CUSTOMER)
        assert state.token_verifier(one, CUSTOMER, "graph")
        assert not state.token_verifier(one, OTHER_CUSTOMER, "graph")
        assert not state.token_verifier(one, None, "partnercenter")
        assert state.token_verifier(two, OTHER_CUSTOMER, "graph")
        assert len({partner_center, one, two}) == 3
        assert await tokens.token(Audience.GRAPH, CUSTOMER) == one
        assert state.count(tenant=CUSTOMER) == 1 and state.count(tenant=OTHER_CUSTOMER) == 1
        # The customer's token came from the cached (rotated) refresh token, at the customer's authority.
        assert state.claims(one) is not None and state.claims(one)["scp"] == ".default"  # type: ignore[index]
    finally:
        tokens.close()


async def test_tokens_are_refreshed_ahead_of_expiry_once_for_concurrent_callers(
    authority: RunningAuthority, tmp_path: Path
) -> None:
    state = authority.state
    config = make_config(authority, tmp_path, refresh_token=state.issue_refresh_token(CLIENT, PARTNER))
    clock = FakeClock()
    tokens = MsalTokens(config, clock=clock)
    try:
        old = await tokens.token(Audience.PARTNER_CENTER)
        clock.advance(EXPIRES_IN - 301)  # 5 minutes and a second left: still good
        assert await tokens.token(Audience.PARTNER_CENTER) == old
        assert state.count() == 1

        clock.advance(2)  # inside the last 5 minutes: every caller now wants a new one
        results = await asyncio.gather(*(tokens.token(Audience.PARTNER_CENTER) for _ in range(20)))
        assert state.count("refresh_token") == 2  # one refresh for all twenty
        assert len(set(results)) == 1 and results[0] != old
        assert state.token_verifier(results[0], PARTNER, "partnercenter")
    finally:
        tokens.close()


async def test_force_refresh_after_a_401_refreshes_once_even_if_not_expired(
    authority: RunningAuthority, tmp_path: Path
) -> None:
    state = authority.state
    config = make_config(authority, tmp_path, refresh_token=state.issue_refresh_token(CLIENT, PARTNER))
    tokens = MsalTokens(config)
    try:
        refused = await tokens.token(Audience.PARTNER_CENTER)
        state.revoke_access_token(refused)  # the service would now answer 401
        assert not state.token_verifier(refused, PARTNER, "partnercenter")

        results = await asyncio.gather(
            *(tokens.token(Audience.PARTNER_CENTER, force_refresh=True) for _ in range(8))
        )
        assert len(set(results)) == 1 and results[0] != refused
        assert state.token_verifier(results[0], PARTNER, "partnercenter")
        assert state.count("refresh_token") == 2  # the sign-in, then one refresh for the eight

        again = await tokens.token(Audience.PARTNER_CENTER, force_refresh=True)  # a later 401: refresh again
        assert again != results[0] and state.count("refresh_token") == 3
    finally:
        tokens.close()


@pytest.mark.parametrize("confidential", [True, False], ids=["confidential", "public"])
async def test_device_code_login_then_a_nightly_run_uses_what_it_stored(
    authority: RunningAuthority, tmp_path: Path, confidential: bool
) -> None:
    state = authority.state
    rt_file = tmp_path / "secrets" / "refresh_token"
    config = make_config(
        authority,
        tmp_path,
        secret=SECRET if confidential else None,
        client_id=CLIENT if confidential else PUBLIC_CLIENT,
        refresh_token_file=rt_file,
    )
    assert config.confidential is confidential
    prompts: list[DeviceCodePrompt] = []
    approved = threading.Event()

    def wait_for_approval(_seconds: float) -> None:  # the login's pause between polls, bounded
        assert approved.wait(10), "the test never approved the code"

    login = asyncio.create_task(
        asyncio.to_thread(device_login, config, show=prompts.append, sleep=wait_for_approval)
    )
    user_code = await asyncio.wait_for(state.wait_for_device_poll(times=1), 10)
    assert prompts and prompts[0].user_code == user_code
    assert prompts[0].verification_uri.startswith(authority.url) and user_code in prompts[0].text()
    state.approve_device_code(user_code, "admin@partner.example")
    approved.set()
    status = await asyncio.wait_for(login, 10)

    assert state.count(DEVICE_CODE_GRANT) == 2  # pending once, then the tokens
    assert status.username == "admin@partner.example" and status.signed_in_at
    for written in (config.token_cache, config.status_file, rt_file):
        assert mode(written) == 0o600
    assert "sbxrt." not in config.status_file.read_text()

    # The nightly run: no person, no configured token beyond what login stored.
    tokens = MsalTokens(config)
    try:
        partner_center = await tokens.token(Audience.PARTNER_CENTER)
        assert state.count("refresh_token") == 0  # the login's access token, from the cache
        assert state.token_verifier(partner_center, PARTNER, "partnercenter")
        graph = await tokens.token(Audience.GRAPH, CUSTOMER)
        assert state.count("refresh_token", tenant=CUSTOMER) == 1
        assert state.token_verifier(graph, CUSTOMER, "graph")
    finally:
        tokens.close()

    # The refresh token written to the file works on its own (a fresh machine, an empty cache).
    elsewhere = make_config(
        authority,
        tmp_path / "elsewhere",
        secret=SECRET if confidential else None,
        client_id=CLIENT if confidential else PUBLIC_CLIENT,
        refresh_token=rt_file.read_text().strip(),
    )
    fresh = MsalTokens(elsewhere)
    try:
        assert state.token_verifier(await fresh.token(Audience.PARTNER_CENTER), PARTNER, "partnercenter")
    finally:
        fresh.close()


async def test_device_code_login_declined(authority: RunningAuthority, tmp_path: Path) -> None:
    state = authority.state
    config = make_config(authority, tmp_path)
    declined = threading.Event()

    def wait_for_the_decline(_seconds: float) -> None:
        assert declined.wait(10), "the test never declined the code"

    login = asyncio.create_task(
        asyncio.to_thread(device_login, config, show=lambda _p: None, sleep=wait_for_the_decline)
    )
    user_code = await asyncio.wait_for(state.wait_for_device_poll(times=1), 10)
    state.decline_device_code(user_code)
    declined.set()
    with pytest.raises(AuthError, match="declined"):
        await asyncio.wait_for(login, 10)
    assert not config.token_cache.exists()


# ---------------------------------------------------------------------------------------------------------------
# failures a person can act on


async def failure(
    config: AuthConfig, audience: Audience = Audience.PARTNER_CENTER, tenant: str | None = None
) -> str:
    tokens = MsalTokens(config)
    try:
        with pytest.raises(AuthError) as caught:
            await tokens.token(audience, tenant)
    finally:
        tokens.close()
    assert caught.value.exit_code == 3
    return caught.value.message


async def test_a_lapsed_refresh_token_says_90_days_and_what_to_run(
    authority: RunningAuthority, tmp_path: Path
) -> None:
    state = authority.state
    refresh_token = state.issue_refresh_token(CLIENT, PARTNER)
    state.lapse(refresh_token)
    message = await failure(make_config(authority, tmp_path, refresh_token=refresh_token))
    assert (
        "unused for 90 days" in message and "bulkonboard auth login" in message and "AADSTS700082" in message
    )
    assert_no_secret(message, refresh_token)


async def test_a_sign_in_that_lapses_mid_life_fails_from_the_cache_too(
    authority: RunningAuthority, tmp_path: Path
) -> None:
    state = authority.state
    refresh_token = state.issue_refresh_token(CLIENT, PARTNER)
    config = make_config(authority, tmp_path, refresh_token=refresh_token)
    tokens = MsalTokens(config)
    try:
        await tokens.token(Audience.PARTNER_CENTER)
        state.lapse(refresh_token)  # the whole sign-in, including the rotated token in the cache
        with pytest.raises(AuthError, match="unused for 90 days"):
            await tokens.token(Audience.PARTNER_CENTER, force_refresh=True)
    finally:
        tokens.close()
    # Both the cached refresh token and the configured one were tried.
    assert state.count("refresh_token") == 3


async def test_wrong_secret(authority: RunningAuthority, tmp_path: Path) -> None:
    state = authority.state
    refresh_token = state.issue_refresh_token(CLIENT, PARTNER)
    message = await failure(
        make_config(authority, tmp_path, refresh_token=refresh_token, secret="not-the-secret")
    )
    assert "client secret" in message and "is wrong" in message and "AADSTS7000215" in message
    assert "not-the-secret" not in message
    assert_no_secret(message, refresh_token)


async def test_expired_secret(authority: RunningAuthority, tmp_path: Path) -> None:
    state = authority.state
    state.expire_secret(CLIENT)
    message = await failure(
        make_config(authority, tmp_path, refresh_token=state.issue_refresh_token(CLIENT, PARTNER))
    )
    assert "has expired" in message and "AADSTS7000222" in message and "client_secret" in message
    assert_no_secret(message)


async def test_a_secret_sent_for_a_public_client(authority: RunningAuthority, tmp_path: Path) -> None:
    state = authority.state
    refresh_token = state.issue_refresh_token(PUBLIC_CLIENT, PARTNER)
    message = await failure(
        make_config(authority, tmp_path, refresh_token=refresh_token, client_id=PUBLIC_CLIENT)
    )
    assert "public client" in message and "AADSTS700025" in message


async def test_wrong_tenant_and_unknown_app(authority: RunningAuthority, tmp_path: Path) -> None:
    state = authority.state
    refresh_token = state.issue_refresh_token(CLIENT, PARTNER)
    message = await failure(
        make_config(authority, tmp_path / "t", refresh_token=refresh_token, tenant="no-such-tenant")
    )
    assert "tenant no-such-tenant was not found" in message and "AADSTS90002" in message

    config = make_config(
        authority, tmp_path / "c", refresh_token=refresh_token, client_id="00000000-dead-beef"
    )
    message = await failure(config)
    assert "app 00000000-dead-beef was not found in tenant" in message and "AADSTS700016" in message

    # A customer the authority does not know: Graph's sign-in fails the same way, naming that tenant.
    message = await failure(
        make_config(authority, tmp_path / "g", refresh_token=refresh_token), Audience.GRAPH, "gone"
    )
    assert "tenant gone was not found" in message


async def test_consent_missing_in_a_customer_tenant(authority: RunningAuthority, tmp_path: Path) -> None:
    state = authority.state
    state.withhold_consent(CUSTOMER)
    config = make_config(authority, tmp_path, refresh_token=state.issue_refresh_token(CLIENT, PARTNER))
    tokens = MsalTokens(config)
    try:
        await tokens.token(Audience.PARTNER_CENTER)  # the partner's own tenant is fine
        with pytest.raises(AuthError) as caught:
            await tokens.token(Audience.GRAPH, CUSTOMER)
    finally:
        tokens.close()
    assert "no consent in customer tenant customer-one" in caught.value.message
    assert "AADSTS65001" in caught.value.message


async def test_not_signed_in(authority: RunningAuthority, tmp_path: Path) -> None:
    message = await failure(make_config(authority, tmp_path))
    assert message.startswith("not signed in") and "bulkonboard auth login" in message
    assert authority.state.count() == 0


async def test_an_untrusted_certificate_says_which_setting_to_use(
    authority: RunningAuthority, tmp_path: Path
) -> None:
    config = make_config(authority, tmp_path, refresh_token="whatever", trust_ca=False)
    tokens = MsalTokens(config)
    try:
        with pytest.raises(ServiceUnavailable, match="BULKONBOARD_CA_BUNDLE") as caught:
            await tokens.token(Audience.PARTNER_CENTER)
    finally:
        tokens.close()
    assert caught.value.exit_code == 3


async def test_files_others_can_read_are_refused(authority: RunningAuthority, tmp_path: Path) -> None:
    state = authority.state
    config = make_config(authority, tmp_path, refresh_token=state.issue_refresh_token(CLIENT, PARTNER))
    tokens = MsalTokens(config)
    try:
        await tokens.token(Audience.PARTNER_CENTER)
    finally:
        tokens.close()

    config.token_cache.chmod(0o644)
    message = await failure(config)
    assert f"chmod 600 {config.token_cache}" in message
    config.token_cache.chmod(0o600)

    assert config.refresh_token is not None and config.refresh_token.file is not None
    config.token_cache.unlink()  # so the configured refresh token is needed
    config.refresh_token.file.chmod(0o640)
    message = await failure(config)
    assert f"chmod 600 {config.refresh_token.file}" in message


# ---------------------------------------------------------------------------------------------------------------
# the commands


def invoke(args: list[str], config_env: dict[str, str]) -> Any:
    return CliRunner().invoke(auth_command, args, env=config_env, catch_exceptions=False)


def cli_env(authority: RunningAuthority, tmp_path: Path, refresh_token: str | None) -> dict[str, str]:
    env = {
        "BULKONBOARD_TENANT_ID": PARTNER,
        "BULKONBOARD_CLIENT_ID": CLIENT,
        "BULKONBOARD_AUTHORITY": authority.url,
        "BULKONBOARD_CA_BUNDLE": str(authority.ca_path),
        "BULKONBOARD_TOKEN_CACHE": str(tmp_path / "state" / "msal_cache.json"),
        "BULKONBOARD_CLIENT_SECRET_FILE": str(private_file(tmp_path / "secret", SECRET)),
        "BULKONBOARD_CONFIG": "",
        "XDG_CONFIG_HOME": str(tmp_path / "no-config"),
        "BULKONBOARD_REFRESH_TOKEN": refresh_token or "",
        "BULKONBOARD_REFRESH_TOKEN_FILE": "",
    }
    return env


async def test_login_refuses_to_wait_for_a_person_without_a_terminal(
    authority: RunningAuthority, tmp_path: Path
) -> None:
    result = await asyncio.to_thread(invoke, ["login"], cli_env(authority, tmp_path, None))
    assert result.exit_code == 3
    assert "needs a person at a terminal" in result.output and "stdin is not a terminal" in result.output
    assert authority.state.count() == 0


async def test_status_before_and_after_signing_in(authority: RunningAuthority, tmp_path: Path) -> None:
    state = authority.state
    env = cli_env(authority, tmp_path, None)
    before = await asyncio.to_thread(invoke, ["status"], env)
    assert before.exit_code == 3 and "not signed in" in before.output
    assert f"tenant: {PARTNER}" in before.output and "refresh token: none" in before.output

    refresh_token = state.issue_refresh_token(CLIENT, PARTNER, "ops@partner.example")
    env["BULKONBOARD_REFRESH_TOKEN"] = refresh_token
    checked = await asyncio.to_thread(invoke, ["status", "--check"], env)
    assert checked.exit_code == 0, checked.output
    assert "check: ok" in checked.output and state.count("refresh_token") == 1

    env["BULKONBOARD_REFRESH_TOKEN"] = ""  # from now on only the cache holds the sign-in
    # --check redeems the refresh token even when the cache holds a good access token: it proves the token works.
    rechecked = await asyncio.to_thread(invoke, ["status", "--check"], env)
    assert rechecked.exit_code == 0 and state.count("refresh_token") == 2
    after = await asyncio.to_thread(invoke, ["status"], env)
    assert after.exit_code == 0, after.output
    assert "signed in as: ops@partner.example" in after.output
    assert f"refresh token: token cache {tmp_path / 'state' / 'msal_cache.json'}" in after.output
    assert "refresh token last used: 20" in after.output and "lapses after 90 days" in after.output
    for output in (before.output, checked.output, rechecked.output, after.output):
        assert_no_secret(output, refresh_token)
        assert "sbx." not in output and "sbxrt." not in output


async def test_login_command_shows_the_code_on_stderr_and_stores_the_sign_in(
    authority: RunningAuthority, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = authority.state
    monkeypatch.setattr(auth_cli, "_stdin_is_terminal", lambda: True)
    env = cli_env(authority, tmp_path, None)
    login = asyncio.create_task(asyncio.to_thread(invoke, ["login"], env))
    await asyncio.wait_for(state.wait_until(lambda: bool(state.user_codes())), 10)
    state.approve_device_code(state.user_codes()[0], "admin@partner.example")
    result = await asyncio.wait_for(login, 10)
    assert result.exit_code == 0, result.output
    assert f"open {authority.url}/devicelogin" in result.output and state.user_codes()[0] in result.output
    assert "signed in as admin@partner.example for tenant partner-tenant" in result.output
    cache = tmp_path / "state" / "msal_cache.json"
    assert mode(cache) == 0o600 and mode(cache.with_name("signin.json")) == 0o600
    assert_no_secret(result.output)
    assert "sbx." not in result.output and "sbxrt." not in result.output


# ---------------------------------------------------------------------------------------------------------------
# the authority itself, as the sandbox's other routes rely on it


async def test_the_authority_describes_itself_over_https_and_refuses_unknown_tenants(
    authority: RunningAuthority,
) -> None:
    context = ssl.create_default_context(cafile=str(authority.ca_path))
    async with aiohttp.ClientSession() as session:
        url = f"{authority.url}/{PARTNER}/v2.0/.well-known/openid-configuration"
        async with session.get(url, ssl=context) as response:
            assert response.status == 200
            document = await response.json()
        for endpoint in ("authorization_endpoint", "token_endpoint", "device_authorization_endpoint"):
            assert document[endpoint].startswith(f"{authority.url}/{PARTNER}/oauth2/v2.0/")
        assert document["issuer"] == f"{authority.url}/{PARTNER}/v2.0"

        url = f"{authority.url}/nobody/v2.0/.well-known/openid-configuration"
        async with session.get(url, ssl=context) as response:
            assert response.status == 400
            error = await response.json()
        assert error["error"] == "invalid_tenant" and error["error_codes"] == [90002]
        assert error["error_description"].startswith("AADSTS90002: Tenant 'nobody' not found.")

        # A person approving a code through the page, for a sandbox started by hand.
        async with session.post(
            f"{authority.url}/{PARTNER}/oauth2/v2.0/devicecode",
            data={"client_id": CLIENT, "scope": "https://api.partnercenter.microsoft.com/user_impersonation"},
            ssl=context,
        ) as response:
            flow = await response.json()
        async with session.post(
            f"{authority.url}/devicelogin", data={"user_code": flow["user_code"].lower()}, ssl=context
        ) as response:
            assert response.status == 200
        async with session.post(
            f"{authority.url}/{PARTNER}/oauth2/v2.0/token",
            data={"grant_type": DEVICE_CODE_GRANT, "client_id": CLIENT, "device_code": flow["device_code"]},
            headers={"Authorization": basic_auth(CLIENT, SECRET)},  # client_secret_basic, as well as the body
            ssl=context,
        ) as response:
            assert response.status == 200
            answer = await response.json()
    assert authority.state.token_verifier(answer["access_token"], PARTNER, "partnercenter")
    assert "refresh_token" not in answer and "id_token" not in answer  # no offline_access / openid asked


def basic_auth(client_id: str, secret: str) -> str:
    pair = f"{quote_plus(client_id)}:{quote_plus(secret)}"  # RFC 6749 2.3.1: form-encoded, then base64
    return "Basic " + base64.b64encode(pair.encode()).decode()


def test_the_verifier_accepts_only_its_own_unexpired_tokens_for_the_right_tenant_and_audience() -> None:
    clock = FakeClock()
    state = AuthorityState(clients={CLIENT: SECRET}, expires_in=600, clock=clock)
    other = AuthorityState(clients={CLIENT: SECRET})
    token = state._access_token(
        {"tid": CUSTOMER, "aud": "https://graph.microsoft.com", "exp": clock() + 600, "jti": "j1"}
    )
    assert state.token_verifier(token, CUSTOMER, "graph")
    assert state.token_verifier(token, CUSTOMER.upper(), "https://graph.microsoft.com")
    assert not state.token_verifier(token, OTHER_CUSTOMER, "graph")
    assert not state.token_verifier(token, CUSTOMER, "partnercenter")
    assert not other.token_verifier(token, CUSTOMER, "graph")  # another key signed nothing of this
    head, body, signature = token.split(".")
    forged_body = body[:-2] + ("AA" if body[-2:] != "AA" else "BB")
    assert not state.token_verifier(f"{head}.{forged_body}.{signature}", CUSTOMER, "graph")
    assert not state.token_verifier("sandbox", CUSTOMER, "graph")
    clock.advance(600)
    assert not state.token_verifier(token, CUSTOMER, "graph")


def test_status_warns_before_the_refresh_token_lapses(tmp_path: Path) -> None:
    config = AuthConfig(tenant_id=PARTNER, client_id=CLIENT, token_cache=tmp_path / "msal_cache.json")
    now = datetime(2026, 11, 24, 23, 0, tzinfo=UTC)
    last_used = (now - timedelta(days=80)).isoformat(timespec="seconds")
    status = {
        "tenant_id": PARTNER,
        "client_id": CLIENT,
        "authority": config.authority,
        "username": "ops@p.example",
    }
    private_file(config.status_file, json.dumps(status | {"refresh_token_last_used_at": last_used}))
    lines = status_lines(config, now=now)
    assert "signed in as: ops@p.example" in lines
    assert f"refresh token last used: {last_used} (80 days ago; it lapses after 90 days unused)" in lines
    assert any(line.startswith("warning: the refresh token lapses in about 10 days") for line in lines)

    recent = (now - timedelta(days=3)).isoformat(timespec="seconds")
    private_file(config.status_file, json.dumps(status | {"refresh_token_last_used_at": recent}))
    assert not any(line.startswith("warning") for line in status_lines(config, now=now))

    # A status file about another app is not shown as this one's sign-in.
    private_file(config.status_file, json.dumps(status | {"client_id": "another-app"}))
    assert "signed in as: -" in status_lines(config, now=now)
