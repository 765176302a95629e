"""Sign-in configuration: which partner tenant and app, and where the secrets live.

Secrets are only ever named here, never held: the client secret and the refresh token are given BY REFERENCE,
as the name of an environment variable or the path of a file only its owner can read (mode 0600). Nothing
secret is accepted on the command line (other users of the machine can read it from the process list), and a
config or secret file that others can read is refused, with the `chmod` that fixes it.

Where settings come from, per setting, the first that has it:

1. the environment:
   ``BULKONBOARD_TENANT_ID``      the partner's tenant (GUID or ``contoso.onmicrosoft.com``)
   ``BULKONBOARD_CLIENT_ID``      the app (client) id registered for the secure application model
   ``BULKONBOARD_CLIENT_SECRET``  the client secret itself (or ``BULKONBOARD_CLIENT_SECRET_FILE``: a 0600 file)
   ``BULKONBOARD_REFRESH_TOKEN``  a refresh token obtained elsewhere (or ``BULKONBOARD_REFRESH_TOKEN_FILE``)
   ``BULKONBOARD_AUTHORITY``      default ``https://login.microsoftonline.com``
   ``BULKONBOARD_CA_BUNDLE``      a PEM file of CAs to trust for the authority (a test or corporate CA)
   ``BULKONBOARD_TOKEN_CACHE``    where MSAL's token cache is kept
   ``BULKONBOARD_APP_ONLY``       ``1``: sign in as the app alone (client credentials), see below
2. one config file, the first that exists of: ``$BULKONBOARD_CONFIG``, ``./bulkonboard.toml``,
   ``$XDG_CONFIG_HOME/bulkonboard/config.toml`` (``~/.config/bulkonboard/config.toml``). It must be mode 0600::

       [auth]
       tenant_id = "contoso-partner.onmicrosoft.com"
       client_id = "00000000-0000-0000-0000-000000000000"
       # the client secret: the NAME of an environment variable, or the PATH of a 0600 file (not the secret)
       client_secret_env = "CONTOSO_PC_SECRET"
       # client_secret_file = "~/.config/bulkonboard/client_secret"
       # a refresh token obtained elsewhere, by reference too (optional once `bulkonboard auth login` has run):
       # refresh_token_file = "~/.config/bulkonboard/refresh_token"   # `auth login` also writes the token here
       # refresh_token_env = "CONTOSO_PC_REFRESH_TOKEN"
       # authority = "https://login.microsoftonline.com"
       # ca_bundle = "/etc/ssl/corp-ca.pem"
       # token_cache = "~/.local/state/bulkonboard/msal_cache.json"
       # app_only = true   # an administrator of their own tenant (no partner): see below

   A literal ``client_secret`` or ``refresh_token`` key is refused: a secret belongs in its own 0600 file or the
   environment, where it can be rotated without editing the config.
3. defaults: the token cache is ``$XDG_STATE_HOME/bulkonboard/msal_cache.json`` (``~/.local/state/...``), and
   beside it ``signin.json`` (mode 0600, no token in it) records who signed in and when the refresh token was
   last used, for ``bulkonboard auth status``.

Without a client secret the app is used as a public client (device-code sign-in, refresh without a secret);
with one, as the confidential client of Partner Center's secure application model.

``app_only`` (an administrator of their own tenant, no partner): the app signs in as itself with its client
secret (client credentials, MSAL ``acquire_token_for_client``) for Microsoft Graph in ``tenant_id``, its own
tenant; no person signs in and no refresh token is kept (auth/apponly.py). It needs the client secret, and the
app Graph's application permissions (User.ReadWrite.All, Domain.Read.All; LicenseAssignment.ReadWrite.All for
licenses) with an administrator's consent. Partner Center takes no app-only token for users, so such a run
creates through Graph (``run --via graph``).
"""

from __future__ import annotations

import os
import stat
import tempfile
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..defaults import state_dir, user_config_dir
from ..errors import AuthError

DEFAULT_AUTHORITY = "https://login.microsoftonline.com"
CONFIG_FILE_NAME = "bulkonboard.toml"
CACHE_FILE_NAME = "msal_cache.json"
STATUS_FILE_NAME = "signin.json"

ENV_CONFIG = "BULKONBOARD_CONFIG"
ENV_TENANT = "BULKONBOARD_TENANT_ID"
ENV_CLIENT = "BULKONBOARD_CLIENT_ID"
ENV_SECRET = "BULKONBOARD_CLIENT_SECRET"
ENV_SECRET_FILE = "BULKONBOARD_CLIENT_SECRET_FILE"
ENV_REFRESH_TOKEN = "BULKONBOARD_REFRESH_TOKEN"
ENV_REFRESH_TOKEN_FILE = "BULKONBOARD_REFRESH_TOKEN_FILE"
ENV_AUTHORITY = "BULKONBOARD_AUTHORITY"
ENV_CA_BUNDLE = "BULKONBOARD_CA_BUNDLE"
ENV_TOKEN_CACHE = "BULKONBOARD_TOKEN_CACHE"
ENV_APP_ONLY = "BULKONBOARD_APP_ONLY"

_KNOWN_KEYS = frozenset(
    {
        "tenant_id",
        "client_id",
        "client_secret_env",
        "client_secret_file",
        "refresh_token_env",
        "refresh_token_file",
        "authority",
        "ca_bundle",
        "token_cache",
        "app_only",
    }
)
_INLINE_SECRETS = {"client_secret": "client_secret", "refresh_token": "refresh_token"}

#: Permission bits that let anyone but the owner read or write a file.
_NOT_OWNER_ONLY = stat.S_IRWXG | stat.S_IRWXO


@dataclass(frozen=True)
class SecretRef:
    """Where a secret lives: an environment variable (by name) or a 0600 file (by path); never the value."""

    env: str | None = None
    file: Path | None = None

    def describe(self) -> str:
        """For messages: says where to look or what to fix, never what the secret is."""
        if self.env:
            return f"environment variable {self.env}"
        return f"file {self.file}"

    def read(self, environ: Mapping[str, str] | None = None) -> str:
        environ = os.environ if environ is None else environ
        if self.env:
            value = environ.get(self.env, "").strip()
            if not value:
                raise AuthError(
                    f"environment variable {self.env} is not set or empty (it should hold a secret)"
                )
            return value
        assert self.file is not None
        require_private(self.file, what="secret file")
        try:
            value = self.file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise AuthError(f"{self.file}: cannot read the secret file ({exc.strerror or exc})") from None
        if not value:
            raise AuthError(f"{self.file}: the secret file is empty")
        return value

    def __repr__(self) -> str:
        return f"SecretRef({self.describe()})"


@dataclass(frozen=True)
class AuthConfig:
    """Everything sign-in needs except the secrets' values, which are read when needed and not kept here."""

    tenant_id: str
    client_id: str
    client_secret: SecretRef | None = None
    refresh_token: SecretRef | None = None
    authority: str = DEFAULT_AUTHORITY
    ca_bundle: Path | None = None
    token_cache: Path = Path(CACHE_FILE_NAME)
    config_file: Path | None = None
    app_only: bool = False  # the app signs in as itself (client credentials), for Graph in its own tenant

    @property
    def status_file(self) -> Path:
        """Beside the cache, so that a cache moved elsewhere (a test, a second profile) takes its status along."""
        return self.token_cache.with_name(STATUS_FILE_NAME)

    @property
    def confidential(self) -> bool:
        return self.client_secret is not None

    @property
    def verify(self) -> str | bool:
        """What MSAL's `verify=` takes: the CA bundle to trust, or the system's trust store."""
        return str(self.ca_bundle) if self.ca_bundle else True

    @property
    def microsoft_authority(self) -> bool:
        """Microsoft's own login hosts: only these may be checked against Microsoft's instance discovery."""
        host = (urlsplit(self.authority).hostname or "").lower()
        return host in _MICROSOFT_LOGIN_HOSTS

    def authority_for(self, tenant: str) -> str:
        return f"{self.authority}/{tenant}"

    def source(self) -> str:
        return f"config file {self.config_file}" if self.config_file else "the environment"


# The hosts MSAL itself knows as Microsoft's (msal.authority.WELL_KNOWN_AUTHORITY_HOSTS, the public ones).
_MICROSOFT_LOGIN_HOSTS = frozenset(
    {
        "login.microsoftonline.com",
        "login.microsoft.com",
        "login.windows.net",
        "sts.windows.net",
        "login.partner.microsoftonline.cn",
        "login.chinacloudapi.cn",
        "login.microsoftonline.de",
        "login-us.microsoftonline.com",
        "login.microsoftonline.us",
        "login.usgovcloudapi.net",
    }
)


def find_config_file(
    environ: Mapping[str, str] | None = None, cwd: Path | None = None, home: Path | None = None
) -> Path | None:
    """The one config file in use, or None. An explicit BULKONBOARD_CONFIG that does not exist is an error: a
    scheduler that names a file and silently gets none would sign in with whatever else is lying around."""
    environ = os.environ if environ is None else environ
    explicit = environ.get(ENV_CONFIG)
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise AuthError(f"{ENV_CONFIG}={path}: no such config file")
        return path
    local = (cwd or Path.cwd()) / CONFIG_FILE_NAME
    if local.is_file():
        return local
    user = user_config_dir(environ, home) / "config.toml"
    return user if user.is_file() else None


def load_config(
    environ: Mapping[str, str] | None = None, *, cwd: Path | None = None, home: Path | None = None
) -> AuthConfig:
    """The sign-in configuration from the environment over the config file; AuthError (exit 3) with what to set
    when something needed is missing, or when a file others can read would hold or name a secret."""
    environ = os.environ if environ is None else environ
    config_file = find_config_file(environ, cwd, home)
    settings = _read_config_file(config_file) if config_file else {}
    base = config_file.parent if config_file else (cwd or Path.cwd())
    sources = _Sources(environ, settings, base)
    tenant_id, client_id = _app_identity(sources, config_file)

    client_secret = _secret_ref(
        environ, settings, base, env_value=ENV_SECRET, env_file=ENV_SECRET_FILE, key="client_secret"
    )
    refresh_token = _secret_ref(
        environ,
        settings,
        base,
        env_value=ENV_REFRESH_TOKEN,
        env_file=ENV_REFRESH_TOKEN_FILE,
        key="refresh_token",
    )

    authority = sources.text(ENV_AUTHORITY, "authority") or DEFAULT_AUTHORITY
    authority = authority.rstrip("/")
    if not authority.lower().startswith("https://"):
        raise AuthError(f"the authority must be an https URL (MSAL refuses anything else), got {authority}")

    ca_bundle = sources.path(ENV_CA_BUNDLE, "ca_bundle")
    if ca_bundle is not None and not ca_bundle.is_file():
        raise AuthError(f"{ca_bundle}: no such CA bundle (BULKONBOARD_CA_BUNDLE / ca_bundle)")
    token_cache = sources.path(ENV_TOKEN_CACHE, "token_cache") or state_dir() / CACHE_FILE_NAME
    app_only = _app_only(environ, settings, config_file)
    if app_only and client_secret is None:
        raise AuthError(
            "app-only sign-in (app_only / BULKONBOARD_APP_ONLY) needs the app's client secret: set "
            f"{ENV_SECRET_FILE} (a 0600 file) or {ENV_SECRET}, or client_secret_file / client_secret_env"
        )

    return AuthConfig(
        tenant_id=tenant_id,
        client_id=client_id,
        client_secret=client_secret,
        refresh_token=refresh_token,
        authority=authority,
        ca_bundle=ca_bundle,
        token_cache=token_cache,
        config_file=config_file,
        app_only=app_only,
    )


def _app_only(environ: Mapping[str, str], settings: Mapping[str, Any], config_file: Path | None) -> bool:
    """BULKONBOARD_APP_ONLY (1/true/yes or 0/false/no) over the file's `app_only` (a TOML boolean): anything else
    is refused, since a misspelt switch must not sign in the other way."""
    raw = environ.get(ENV_APP_ONLY, "").strip().casefold()
    if raw:
        if raw in ("1", "true", "yes"):
            return True
        if raw in ("0", "false", "no"):
            return False
        raise AuthError(f"{ENV_APP_ONLY}={raw!r}: give 1 (app-only sign-in) or 0")
    value = settings.get("app_only", False)
    if not isinstance(value, bool):
        raise AuthError(f"{config_file}: app_only must be true or false (a TOML boolean, unquoted)")
    return value


@dataclass(frozen=True)
class _Sources:
    """Where a setting is looked up: the environment first, then the config file (so a nightly job can override
    one value without editing the file)."""

    environ: Mapping[str, str]
    settings: Mapping[str, Any]
    base: Path  # the config file's folder (or the working directory when there is no file)

    def text(self, env_name: str, key: str) -> str:
        return (self.environ.get(env_name) or "").strip() or str(self.settings.get(key) or "").strip()

    def path(self, env_name: str, key: str) -> Path | None:
        if self.environ.get(env_name, "").strip():
            return Path(self.environ[env_name].strip()).expanduser()
        if self.settings.get(key):
            # Relative paths in the file are relative to the file, so the file can move with its secrets.
            return _resolve(self.base, str(self.settings[key]))
        return None


def _app_identity(sources: _Sources, config_file: Path | None) -> tuple[str, str]:
    """(tenant id, client id): without both nothing can sign in, so one line names every one that is missing."""
    tenant_id = sources.text(ENV_TENANT, "tenant_id")
    client_id = sources.text(ENV_CLIENT, "client_id")
    missing = [
        name
        for name, value in (
            (f"{ENV_TENANT} (tenant_id)", tenant_id),
            (f"{ENV_CLIENT} (client_id)", client_id),
        )
        if not value
    ]
    if missing:
        where = f" or in {config_file}" if config_file else f" or in ./{CONFIG_FILE_NAME}"
        raise AuthError(f"sign-in is not configured: set {' and '.join(missing)} in the environment{where}")
    return tenant_id, client_id


def _secret_ref(
    environ: Mapping[str, str],
    settings: Mapping[str, Any],
    base: Path,
    *,
    env_value: str,
    env_file: str,
    key: str,
) -> SecretRef | None:
    if environ.get(env_value, "").strip():
        return SecretRef(env=env_value)
    if environ.get(env_file, "").strip():
        return SecretRef(file=Path(environ[env_file].strip()).expanduser())
    if settings.get(f"{key}_env"):
        return SecretRef(env=str(settings[f"{key}_env"]).strip())
    if settings.get(f"{key}_file"):
        return SecretRef(file=_resolve(base, str(settings[f"{key}_file"])))
    return None


def _resolve(base: Path, value: str) -> Path:
    path = Path(value.strip()).expanduser()
    return path if path.is_absolute() else base / path


def _read_config_file(path: Path) -> dict[str, Any]:
    require_private(path, what="config file")
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise AuthError(f"{path}: cannot read the config file ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise AuthError(f"{path}: not a valid TOML config file ({exc})") from None
    section = document.get("auth", {})
    if not isinstance(section, dict):
        raise AuthError(f"{path}: [auth] must be a table")
    for key in section:
        if key in _INLINE_SECRETS:
            raise AuthError(
                f"{path}: a literal {key} is not accepted; put it in a 0600 file and name it with {key}_file, "
                f"or name an environment variable with {key}_env"
            )
    unknown = sorted(set(section) - _KNOWN_KEYS)
    if unknown:
        raise AuthError(
            f"{path}: unknown key(s) in [auth]: {', '.join(unknown)} (known: {', '.join(sorted(_KNOWN_KEYS))})"
        )
    return dict(section)


# ---------------------------------------------------------------------------------------------------------------
# files only their owner can read


def require_private(path: Path, *, what: str) -> None:
    """Refuse a file that others can read or write: it holds or names a secret, and whoever can change it can
    point the tool at their own app or tenant. (No check on Windows, whose permissions are not mode bits.)"""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise AuthError(f"{path}: no such {what}") from None
    except OSError as exc:
        raise AuthError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    if os.name != "nt" and mode & _NOT_OWNER_ONLY:
        raise AuthError(
            f"{path}: the {what} is readable by others (mode {stat.S_IMODE(mode):04o}); "
            f"run `chmod 600 {path}` and try again"
        )


def write_private(path: Path, text: str) -> None:
    """Write a file that is mode 0600 from the moment it exists, and replace the old one atomically (a crash
    mid-write leaves the previous content, never half a token cache)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # mkstemp creates the file 0600; the content is written before the file takes the real name.
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
