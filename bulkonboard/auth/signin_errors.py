"""What a person reads when signing in fails: MSAL's and Entra ID's errors turned into one line that says what to do.

Why apart from the token machinery: Entra ID answers with numbered codes (AADSTS700082 and friends) whose advice
changes with Microsoft's documentation, not with how tokens are fetched; and the wording is where a secret could
leak, so it is kept in one place that cuts known secrets out of anything it quotes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import msal
import requests

from ..errors import AuthError, ServiceUnavailable
from .config import AuthConfig

#: Entra ID lets a refresh token lapse after this many days unused; `auth status` warns ahead of it.
REFRESH_TOKEN_LIFETIME_DAYS = 90
LOGIN_HINT = "run `bulkonboard auth login` at a terminal"

_AADSTS = re.compile(r"AADSTS(\d+)")


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
    text = (
        _credential_advice(codes, app, secret_where)
        or _tenant_advice(codes, app, config, tenant)
        or _grant_advice(codes, error, app, secret_where)
    )
    if text is None:
        detail = _first_sentence(str(result.get("error_description") or ""), secrets)
        text = f"sign-in failed for tenant {tenant}: {error or 'error'}{f': {detail}' if detail else ''}"
    shown = next((code for code in codes if code in _KNOWN_CODES), codes[0] if codes else None)
    return AuthError(f"{text} (AADSTS{shown})" if shown else text)


def _credential_advice(codes: list[int], app: str, secret_where: str) -> str | None:
    """What to do when the refresh token or the app's secret is what the authority refused."""
    if {700082, 70008} & set(codes):
        return f"the refresh token has lapsed, unused for {REFRESH_TOKEN_LIFETIME_DAYS} days: {LOGIN_HINT}"
    if 7000222 in codes:
        return (
            f"the client secret of {app} has expired: create a new one in Entra ID (App registrations > "
            f"Certificates & secrets) and put its value in {secret_where}"
        )
    if 7000215 in codes:
        return f"the client secret of {app} is wrong: put the secret's Value (not its Secret ID) in {secret_where}"
    if 7000218 in codes:
        return f"{app} is a confidential client and needs its secret: set {secret_where}"
    if 700025 in codes:
        return (
            f"{app} is registered as a public client, so no secret may be sent: remove the client secret from the "
            f"configuration, or {LOGIN_HINT} with the secret configured"
        )
    return None


def _tenant_advice(codes: list[int], app: str, config: AuthConfig, tenant: str) -> str | None:
    """What to do when the tenant, or the app's place in it (consent, permissions), is what is wrong."""
    if 65001 in codes:
        where = (
            "the partner tenant" if tenant.casefold() == config.tenant_id.casefold() else "customer tenant"
        )
        return (
            f"{app} has no consent in {where} {tenant}: an administrator must grant it consent (for a customer, "
            "through Partner Center's application consent for GDAP), then try again"
        )
    if 90002 in codes:
        return f"tenant {tenant} was not found at {config.authority}: check BULKONBOARD_TENANT_ID or the customer id"
    if 700016 in codes:
        return (
            f"{app} was not found in tenant {tenant}: check BULKONBOARD_CLIENT_ID, and that the app is registered "
            "in the partner tenant (and consented in the customer's)"
        )
    if 500011 in codes:
        return f"{app} has no permission for this API in tenant {tenant}: add the API permission and consent"
    return None


def _grant_advice(codes: list[int], error: str, app: str, secret_where: str) -> str | None:
    """What to do when the grant itself was refused: multi-factor needed, a revoked token, a bad client."""
    if {50076, 50079, 50158} & set(codes):
        return f"the sign-in now needs multi-factor authentication: {LOGIN_HINT}"
    if {50173, 50132, 70043, 700084} & set(codes) or error == "invalid_grant":
        return f"the refresh token was refused ({error or 'invalid_grant'}): {LOGIN_HINT}"
    if error == "invalid_client":
        return (
            f"{app} could not authenticate (invalid_client): check {secret_where} and BULKONBOARD_CLIENT_ID"
        )
    return None


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


def discovery_error(exc: ValueError, *, config: AuthConfig, tenant: str) -> AuthError:
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


def network_error(exc: Exception, *, config: AuthConfig) -> ServiceUnavailable:
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


NETWORK_ERRORS = (requests.exceptions.RequestException, msal.exceptions.MsalServiceError)
