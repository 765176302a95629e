"""App-only sign-in for an administrator of their own tenant (no partner): MSAL's own client-credentials code
(`acquire_token_for_client`, unpatched) against the sandbox's authority over real TLS, then `run --via graph`
through the real CLI with Graph alone (domains, the users listed page by page, licenses, creates); Partner
Center's URL is left at the real service's and never reached."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from bulkonboard.auth.apponly import AppOnlyTokens
from bulkonboard.auth.config import AuthConfig, load_config
from bulkonboard.auth.tokens import device_login
from bulkonboard.errors import AuthError
from bulkonboard.protocols import Audience
from bulkonboard.sandbox.authority import AuthorityState, Tls, make_tls

from .license_support import PASSWORD, licensed_data
from .sandbox_http import CONTOSO, SAM
from .support import (
    StandaloneSandbox,
    assert_one_clear_line,
    results_rows,
    run_cli,
    standalone_sandbox,
    summary_items,
)
from .tlsutil import RunningAuthority, serve_authority

pytestmark = pytest.mark.timeout(240)

CLIENT = "bulkonboard-sandbox-app"  # the sandbox's --client-id default
SECRET = "sandbox-client-secret"  # the sandbox's default secret under --tls
OTHER_TENANT = "other.onmicrosoft.com"


def private_file(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


def app_only_environ(tmp_path: Path, url: str, ca: Path, *, secret: str | None = SECRET) -> dict[str, str]:
    """As an administrator would configure it: ids in the environment, the secret in a 0600 file."""
    environ = {
        "BULKONBOARD_TENANT_ID": CONTOSO,
        "BULKONBOARD_CLIENT_ID": CLIENT,
        "BULKONBOARD_AUTHORITY": url,
        "BULKONBOARD_CA_BUNDLE": str(ca),
        "BULKONBOARD_APP_ONLY": "1",
        "XDG_CONFIG_HOME": str(tmp_path / "no-config"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
    }
    if secret is not None:
        environ["BULKONBOARD_CLIENT_SECRET_FILE"] = str(
            private_file(tmp_path / "secrets" / "client_secret", secret)
        )
    return environ


# ---------------------------------------------------------------------------------------------------------------
# the token provider, in process


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture
async def authority(tls: Tls) -> AsyncIterator[RunningAuthority]:
    state = AuthorityState(clients={CLIENT: SECRET}, tenants={CONTOSO, OTHER_TENANT})
    async with serve_authority(state, tls) as running:
        yield running


def config_for(authority: RunningAuthority, tmp_path: Path, **kwargs: Any) -> AuthConfig:
    return load_config(app_only_environ(tmp_path, authority.url, authority.ca_path, **kwargs), cwd=tmp_path)


async def test_the_app_signs_in_as_itself_for_graph_in_its_tenant_once_until_a_refresh_is_forced(
    authority: RunningAuthority, tmp_path: Path
) -> None:
    tokens = AppOnlyTokens(config_for(authority, tmp_path))
    try:
        first = await tokens.token(Audience.GRAPH, CONTOSO)
        again = await tokens.token(Audience.GRAPH, CONTOSO)
        after_401 = await tokens.token(Audience.PARTNER_CENTER, force_refresh=True)  # the sender's refresh
    finally:
        tokens.close()
    state = authority.state
    assert again == first and after_401 != first
    assert state.count("client_credentials", tenant=CONTOSO) == 2 and state.count("refresh_token") == 0
    assert state.token_verifier(first, CONTOSO, "https://graph.microsoft.com")
    assert state.token_verifier(after_401, CONTOSO, "https://graph.microsoft.com")
    assert not state.token_verifier(first, None, "https://api.partnercenter.microsoft.com")
    assert not (tmp_path / "state").exists()  # nothing kept on disk: no person, no refresh token


async def test_an_app_without_consent_or_with_a_wrong_secret_gets_one_line_and_no_secret(
    authority: RunningAuthority, tmp_path: Path
) -> None:
    authority.state.withhold_consent(OTHER_TENANT)
    tokens = AppOnlyTokens(config_for(authority, tmp_path))
    try:
        with pytest.raises(AuthError) as no_consent:
            await tokens.token(Audience.GRAPH, OTHER_TENANT)
    finally:
        tokens.close()
    assert f"was not found in tenant {OTHER_TENANT}" in no_consent.value.message
    assert "AADSTS700016" in no_consent.value.message

    wrong = AppOnlyTokens(config_for(authority, tmp_path / "wrong", secret="not-the-secret-0xdead"))
    try:
        with pytest.raises(AuthError) as refused:
            await wrong.token(Audience.GRAPH, CONTOSO)
    finally:
        wrong.close()
    assert "client secret" in refused.value.message and "AADSTS7000215" in refused.value.message
    assert "not-the-secret-0xdead" not in refused.value.message and "\n" not in refused.value.message


def test_app_only_needs_a_secret_and_a_clear_switch(tmp_path: Path) -> None:
    environ = app_only_environ(tmp_path, "https://login.example", tmp_path / "ca.pem", secret=None)
    (tmp_path / "ca.pem").write_text("")
    with pytest.raises(AuthError, match="app-only sign-in .* needs the app's client secret"):
        load_config(environ, cwd=tmp_path)
    with pytest.raises(AuthError, match="BULKONBOARD_APP_ONLY='maybe'"):
        load_config({**environ, "BULKONBOARD_APP_ONLY": "maybe"}, cwd=tmp_path)
    assert not load_config({**environ, "BULKONBOARD_APP_ONLY": "0"}, cwd=tmp_path).app_only


# ---------------------------------------------------------------------------------------------------------------
# the command, against `bulkonboard sandbox --tls`


@pytest.fixture
def tls_sandbox(tmp_path: Path) -> Iterator[tuple[StandaloneSandbox, Path]]:
    """The sandbox over HTTPS with its authority; one user per Graph page, so the users list must be followed."""
    data = licensed_data(tmp_path / "data.toml", e3_units=10)
    with standalone_sandbox(
        "--data", str(data), "--tls", str(tmp_path / "tls"), "--page-size", "1"
    ) as sandbox:
        yield sandbox, tmp_path / "tls" / "ca.pem"


def graph_get(sandbox: StandaloneSandbox, ca: Path, path: str) -> Any:
    request = urllib.request.Request(
        f"{sandbox.url}/graph/{CONTOSO}/v1.0/{path}", headers={"Authorization": f"Bearer {sandbox.token}"}
    )
    with urllib.request.urlopen(
        request, timeout=10, context=ssl.create_default_context(cafile=str(ca))
    ) as answer:
        return json.load(answer)


def test_run_via_graph_app_only_creates_and_licenses_through_graph_alone(
    tls_sandbox: tuple[StandaloneSandbox, Path], tmp_path: Path
) -> None:
    sandbox, ca = tls_sandbox
    sheet = tmp_path / "hires.csv"
    sheet.write_text(
        "userPrincipalName,displayName,usageLocation,password,licenses,jobTitle\n"
        f"ann@contoso.com,Ann,US,{PASSWORD},ENTERPRISEPACK,Engineer\n"
        f"bob@contoso.com,Bob,US,{PASSWORD},FLOW_FREE; MINECRAFT,\n"
        f"{SAM},Sam Lee,GB,{PASSWORD},,\n",  # in the tenant, on the users list's second page
        encoding="utf-8",
    )
    env = app_only_environ(tmp_path, sandbox.url, ca)

    def run(*extra: str) -> Any:
        return run_cli(
            "run", sheet, "--customer", CONTOSO, "--graph-url", f"{sandbox.url}/graph/{{tenant}}", "--rate", "inf",
            "--journal", tmp_path / "j.sqlite", *extra, env=env,
        )  # fmt: skip

    refused = run("--results", str(tmp_path / "never.xlsx"))
    assert_one_clear_line(refused, 2, "app-only sign-in", "add --via graph")
    assert not (tmp_path / "never.xlsx").exists()

    first = run("--via", "graph", "--results", str(tmp_path / "first.xlsx"))
    assert first.returncode == 0, first.stderr
    assert "Traceback" not in first.stderr
    rows = {row["userPrincipalName"]: row for row in results_rows(tmp_path / "first.xlsx")}
    assert {upn: (row["status"], row["licenses"]) for upn, row in rows.items()} == {
        "ann@contoso.com": ("created", "ENTERPRISEPACK"),
        "bob@contoso.com": ("created", "FLOW_FREE; MINECRAFT"),
        SAM: ("skipped", ""),
    }
    # sam was found in Graph's list before anything was sent (never sent, so never created twice)
    assert summary_items(tmp_path / "first.xlsx")["rows sent"] == "2"
    ann = graph_get(sandbox, ca, "users/ann@contoso.com?$select=id,jobTitle")
    assert ann["jobTitle"] == "Engineer" and ann["id"] == rows["ann@contoso.com"]["userId"]
    held = {
        upn: sorted(
            d["skuPartNumber"] for d in graph_get(sandbox, ca, f"users/{upn}/licenseDetails")["value"]
        )
        for upn in ("ann@contoso.com", "bob@contoso.com")
    }
    assert held == {"ann@contoso.com": ["ENTERPRISEPACK"], "bob@contoso.com": ["FLOW_FREE", "MINECRAFT"]}
    listed = [u["userPrincipalName"] for u in sandbox_users(sandbox, ca)]
    assert sorted(listed).count("ann@contoso.com") == 1 and listed.count("bob@contoso.com") == 1
    for shown in (first.stdout, first.stderr):
        assert SECRET not in shown and PASSWORD not in shown

    again = run("--via", "graph", "--results", str(tmp_path / "again.xlsx"))
    assert again.returncode == 0, again.stderr
    assert [row["status"] for row in results_rows(tmp_path / "again.xlsx")] == ["skipped"] * 3
    assert sorted(u["userPrincipalName"] for u in sandbox_users(sandbox, ca)) == sorted(listed)


def sandbox_users(sandbox: StandaloneSandbox, ca: Path) -> list[dict[str, Any]]:
    """Every user, following Graph's next links (the sandbox pages one user at a time here)."""
    page = graph_get(sandbox, ca, "users?$select=id,userPrincipalName")
    users = list(page["value"])
    while "@odata.nextLink" in page:
        request = urllib.request.Request(
            page["@odata.nextLink"], headers={"Authorization": f"Bearer {sandbox.token}"}
        )
        context = ssl.create_default_context(cafile=str(ca))
        with urllib.request.urlopen(request, timeout=10, context=context) as answer:
            page = json.load(answer)
        users += page["value"]
    return users


def test_the_sandbox_lists_graph_users_page_by_page_and_refuses_a_bad_page(tmp_path: Path) -> None:
    data = licensed_data(tmp_path / "data.toml")
    with standalone_sandbox("--data", str(data), "--page-size", "2") as sandbox:
        base = f"{sandbox.url}/graph/{CONTOSO}/v1.0/users"
        pages = [get_json(f"{base}?$select=userPrincipalName&$top=999")]
        while "@odata.nextLink" in pages[-1]:
            pages.append(get_json(pages[-1]["@odata.nextLink"]))
        refusals = [get_json(f"{base}?$top=0"), get_json(f"{base}?$skiptoken=bm90LWEtdG9rZW4")]
    assert [len(page["value"]) for page in pages] == [2, 1]  # capped by --page-size
    listed = [user for page in pages for user in page["value"]]
    assert sorted(user["userPrincipalName"] for user in listed) == [
        "jane.doe@contoso.com",
        "nolocation@contoso.com",
        SAM,
    ]
    assert all(set(user) == {"userPrincipalName"} for user in listed)
    assert [refusal["error"]["code"] for refusal in refusals] == ["Request_BadRequest"] * 2


def get_json(url: str) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": "Bearer sandbox"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.load(answer)
    except urllib.error.HTTPError as error:
        assert error.code == 400
        return json.load(error)


def test_auth_login_with_app_only_says_none_is_needed(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("")
    config = load_config(app_only_environ(tmp_path, "https://127.0.0.1:9", tmp_path / "ca.pem"), cwd=tmp_path)
    shown: list[object] = []
    with pytest.raises(AuthError, match="app-only sign-in .* needs no login"):
        device_login(config, show=shown.append)
    assert shown == [] and not (tmp_path / "state").exists()  # no prompt, nothing written
