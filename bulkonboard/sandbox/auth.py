"""Who may call the sandbox: a pluggable check of the bearer token.

Today a static token serves every tenant. The check is a plain callable so a later verifier can accept tokens an
(emulated) MSAL authority issued, checking audience and tenant, without touching the routes.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

PARTNER_CENTER_AUDIENCE = "https://api.partnercenter.microsoft.com"
GRAPH_AUDIENCE = "https://graph.microsoft.com"


#: `(token, tenant, audience) -> bool` (or an awaitable bool): may this bearer token call? `tenant` is None for
#: Partner Center (the partner's own token) and the customer's tenant for Graph; `audience` is the resource URL,
#: PARTNER_CENTER_AUDIENCE or GRAPH_AUDIENCE.
TokenVerifier = Callable[[str, "str | None", str], "bool | Awaitable[bool]"]


def static_token_verifier(expected: str) -> TokenVerifier:
    """Accept exactly one token for every audience and tenant (compared in constant time)."""
    expected_bytes = expected.encode("utf-8")

    def verify(token: str, tenant: str | None, audience: str) -> bool:
        return hmac.compare_digest(token.encode("utf-8"), expected_bytes)

    return verify


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer TOKEN` header (scheme case-insensitive), or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.casefold() != "bearer" or not token:
        return None
    return token
