"""MSAL's token cache and the sign-in status file on disk, both mode 0600.

Why a status file beside the cache: `auth status` shows who signed in and when the refresh token was last used
(Entra ID lets it lapse after 90 days unused) without opening the cache, which holds the tokens themselves.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any

import msal

from ..errors import AuthError
from .config import AuthConfig, require_private, write_private
from .signin_errors import LOGIN_HINT


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
