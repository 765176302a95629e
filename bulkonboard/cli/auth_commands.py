"""`bulkonboard auth login` and `bulkonboard auth status`: sign in once at a terminal; check it from anywhere.

`login` is the only command that waits for a person, so it refuses to start without one (stdin not a terminal:
a scheduler, a pipe): a nightly job that falls back to a prompt would hang until someone notices. It exits 3
with the line that says what to do instead. `status` reads the configuration, the token cache and the status
file and never prompts; `--check` also gets a token, to prove that the refresh token still works.

The group is attached to the main command by cli.py (`main.add_command(auth_command)`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import click

from ..auth.config import AuthConfig, load_config
from ..auth.tokens import (
    REFRESH_TOKEN_LIFETIME_DAYS,
    DeviceCodePrompt,
    TokenStore,
    check_sign_in,
    device_login,
)
from ..errors import AuthError
from .console import Output
from .group import CommandGroup

F = TypeVar("F", bound=Callable[..., Any])

#: `auth status` warns when the refresh token has been idle this long: a nightly run that has been failing
#: for a while leaves it to lapse at 90 days.
WARN_AFTER_DAYS = 75




@click.group("auth", cls=CommandGroup)
def auth_command() -> None:
    """Sign in to Partner Center for App+User tokens (the secure application model), and check the sign-in.

    \b
    Configure the partner tenant and the app first (environment or a 0600 config file):
      BULKONBOARD_TENANT_ID, BULKONBOARD_CLIENT_ID, and the client secret by reference
      (BULKONBOARD_CLIENT_SECRET, or client_secret_file / client_secret_env in bulkonboard.toml).
    Then run `bulkonboard auth login` once at a terminal; nightly runs use the stored refresh token.
    """


@auth_command.command("login")
def login() -> None:
    """Sign in with a device code: open the URL shown, enter the code, sign in as a partner admin.

    Stores the token cache (mode 0600, with the refresh token nightly runs use) and a status file.
    Refuses to run without a terminal: a scheduled job must never wait for a person.
    """
    if not _stdin_is_terminal():
        raise AuthError(
            "`bulkonboard auth login` needs a person at a terminal (stdin is not a terminal); scheduled runs use "
            "the refresh token it stores: run it once interactively, or set BULKONBOARD_REFRESH_TOKEN"
        )
    config = load_config()
    output = Output()

    def show(prompt: DeviceCodePrompt) -> None:
        click.echo(prompt.text(), err=True)

    status = device_login(config, show=show)
    who = status.username or "an unnamed account"
    output.info(
        f"signed in as {who} for tenant {config.tenant_id}; tokens kept in {config.token_cache} (mode 0600)"
    )
    if config.refresh_token is not None and config.refresh_token.file is not None:
        output.info(f"the refresh token was also written to {config.refresh_token.file} (mode 0600)")


def _stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


@auth_command.command("status")
@click.option(
    "--check", is_flag=True, help="Also get a Partner Center token now, to prove the sign-in works."
)
def status(check: bool) -> None:
    """Who is signed in, for which tenant and app, and when the refresh token was last used.

    Exit 0 when a refresh token is available (and, with --check, works); 3 otherwise.
    """
    config = load_config()
    for line in status_lines(config, now=datetime.now(UTC)):
        click.echo(line)
    if not _has_refresh_token(config):
        raise AuthError(
            "not signed in: run `bulkonboard auth login` at a terminal (or set BULKONBOARD_REFRESH_TOKEN)"
        )
    if check:
        remaining = check_sign_in(config)
        click.echo(
            "check: ok, the refresh token was redeemed for a Partner Center token "
            f"(valid for {max(0, round(remaining / 60))} minutes)"
        )


def _has_refresh_token(config: AuthConfig) -> bool:
    return config.refresh_token is not None or TokenStore(config).has_refresh_token()


def status_lines(config: AuthConfig, *, now: datetime) -> list[str]:
    """The status as `key: value` lines (stable for scripts to grep); no token or secret in any of them."""
    store = TokenStore(config)
    recorded = store.read_status()
    if recorded is not None and not recorded.matches(config):
        recorded = None  # the status file speaks of another tenant, app or authority
    cached = store.has_refresh_token()
    lines = [
        f"tenant: {config.tenant_id}",
        f"app: {config.client_id} ({'confidential client' if config.confidential else 'public client'})",
        f"authority: {config.authority}",
        f"configuration: {config.source()}",
        f"signed in as: {recorded.username if recorded and recorded.username else '-'}",
        f"signed in at: {recorded.signed_in_at if recorded and recorded.signed_in_at else '-'}",
    ]
    sources = []
    if cached:
        sources.append(f"token cache {config.token_cache}")
    if config.refresh_token is not None:
        sources.append(config.refresh_token.describe())
    lines.append(f"refresh token: {', '.join(sources) if sources else 'none'}")
    days = recorded.days_since_refresh_token_used(now) if recorded else None
    if recorded and recorded.refresh_token_last_used_at and days is not None:
        left = REFRESH_TOKEN_LIFETIME_DAYS - days
        lines.append(
            f"refresh token last used: {recorded.refresh_token_last_used_at} ({days:.0f} days ago; it lapses after "
            f"{REFRESH_TOKEN_LIFETIME_DAYS} days unused)"
        )
        if days >= WARN_AFTER_DAYS:
            lines.append(
                f"warning: the refresh token lapses in about {max(0, left):.0f} days unless used: "
                "run `bulkonboard auth status --check`, or `bulkonboard auth login` again"
            )
    else:
        lines.append("refresh token last used: -")
    return lines
