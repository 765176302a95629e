"""`bulkonboard sandbox`: the emulator as a command. The main CLI attaches it with `main.add_command(sandbox_command)`."""

from __future__ import annotations

import asyncio
import hmac
import os
import sys
from collections.abc import Callable
from pathlib import Path

import click

from ..errors import EXIT_AUTH_OR_CONNECTION, EXIT_BAD_INPUT, EXIT_OK
from .data import DEFAULT_DATA_PATH, SandboxDataError, load_data
from .options import DEFAULT_PAGE_SIZE, DEFAULT_TOKEN, SandboxOptions, parse_latency, parse_rate_limit
from .server import Sandbox, serve

DEFAULT_PORT = 8765
#: The sign-in authority's app and partner tenant under --tls (sandbox's own: nothing here is a real secret).
DEFAULT_CLIENT_ID = "bulkonboard-sandbox-app"
DEFAULT_CLIENT_SECRET = "sandbox-client-secret"
PARTNER_TENANT = "partner.onmicrosoft.com"


class _RateLimit(click.ParamType):
    name = "N[/Ws]"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[int, float]:
        if isinstance(value, tuple):
            return value
        try:
            return parse_rate_limit(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class _Latency(click.ParamType):
    name = "N[-M]"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[float, float]:
        if isinstance(value, tuple):
            return value
        try:
            return parse_latency(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


@click.command(
    "sandbox",
    epilog=(
        "Partner Center is served at URL/v1/... and Graph for customer T at URL/graph/T/v1.0/... "
        "(domains, users, subscribedSkus). Point a run at it with --sandbox-url URL --access-token TOKEN. "
        "An MS-RequestId that got a final answer (2xx, or 4xx other than 429) gets the same answer again and creates "
        "nothing; after a 429 or 5xx it is processed afresh."
    ),
)
@click.option(
    "--data",
    "data_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"TOML file of customers, domains and existing users [default: {DEFAULT_DATA_PATH} in the current directory, "
    "else the copy shipped with bulkonboard].",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind; keep loopback unless you must share it.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="Port to bind; 0 picks a free one.",
)
@click.option(
    "--token",
    default=DEFAULT_TOKEN,
    show_default=True,
    envvar="BULKONBOARD_SANDBOX_TOKEN",
    help="The bearer token callers must send (or set BULKONBOARD_SANDBOX_TOKEN).",
)
@click.option("--seed", type=int, default=None, help="Seed for the faults, so a fault run repeats exactly.")
@click.option(
    "--latency-ms",
    type=_Latency(),
    metavar="N[-M]",
    default="0",
    help="Each call takes N milliseconds, or between N and M (uniform, repeatable with --seed).",
)
@click.option(
    "--rate-limit",
    type=_RateLimit(),
    metavar="N[/Ws]",
    default=None,
    help="Answer writes (creations, license updates, Graph's writes) of the partner past N in any window of W "
    "seconds (default 60) with 429 + Retry-After: 30 is 30 a minute, 20/1s is 20 a second.",
)
@click.option(
    "--customer-rate-limit",
    type=_RateLimit(),
    metavar="N[/Ws]",
    default=None,
    help="The same per customer (partner + customer), on top of --rate-limit, which counts every customer's "
    "writes together.",
)
@click.option(
    "--fail-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    help="Fraction of writes (creations, license updates, Graph's writes) answered 503 without writing.",
)
@click.option(
    "--drop-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    help="Fraction of writes that are made, then the connection closed with no answer.",
)
@click.option(
    "--state",
    "state_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File that keeps users across restarts (never passwords); every write is on disk before its answer.",
)
@click.option(
    "--page-size",
    type=click.IntRange(min=1),
    default=DEFAULT_PAGE_SIZE,
    show_default=True,
    help="Users per page of GET .../users.",
)
@click.option(
    "--throttle-warnings",
    is_flag=True,
    help="Send Graph's x-ms-throttle-limit-percentage header on write answers past 80 % of --rate-limit or "
    "--customer-rate-limit (Graph's own header; for Partner Center the sandbox's extension).",
)
@click.option(
    "--tls",
    "tls_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    metavar="DIR",
    help="Serve HTTPS with a generated test CA (DIR/ca.pem: give it to clients with --ca-bundle) and an "
    "MSAL-compatible sign-in authority at URL/{tenant}, for rehearsing the real sign-in. A refresh token for "
    "--client-id is written to DIR/refresh_token (mode 0600).",
)
@click.option(
    "--client-id",
    default=DEFAULT_CLIENT_ID,
    show_default=True,
    help="With --tls: the app the authority knows (its secret: BULKONBOARD_SANDBOX_CLIENT_SECRET, default "
    f"{DEFAULT_CLIENT_SECRET!r}).",
)
def sandbox_command(
    data_path: Path | None,
    host: str,
    port: int,
    token: str,
    seed: int | None,
    latency_ms: tuple[float, float],
    rate_limit: tuple[int, float] | None,
    customer_rate_limit: tuple[int, float] | None,
    fail_rate: float,
    drop_rate: float,
    state_path: Path | None,
    page_size: int,
    throttle_warnings: bool,
    tls_dir: Path | None,
    client_id: str,
) -> None:
    """Serve a local emulator of Partner Center and Graph until SIGINT or SIGTERM.

    The first line on standard output is `listening on URL`. Customers, their domains and existing users come
    from the data file; users created are kept in memory (and in --state FILE when given). Calls need
    `Authorization: Bearer TOKEN`. The fault options make throttling, outages and lost answers happen on demand.
    """
    try:
        options = SandboxOptions(
            token=token,
            seed=seed,
            latency_ms=latency_ms[0],
            latency_max_ms=latency_ms[1],
            rate_limit=rate_limit,
            customer_rate_limit=customer_rate_limit,
            fail_rate=fail_rate,
            drop_rate=drop_rate,
            page_size=page_size,
            throttle_warnings=throttle_warnings,
        )
        notes = None
        if tls_dir is None:
            sandbox = Sandbox(data_path, options, host=host, port=port, state_path=state_path)
        else:
            sandbox, notes = _with_authority(data_path, options, host, port, state_path, tls_dir, client_id)
    except (SandboxDataError, ValueError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    try:
        asyncio.run(serve(sandbox, notes=notes))
    except KeyboardInterrupt:  # where the loop cannot install signal handlers, Ctrl-C arrives this way
        pass
    except OSError as exc:
        click.echo(f"error: cannot listen on {host}:{port}: {exc.strerror or exc}", err=True)
        sys.exit(EXIT_AUTH_OR_CONNECTION)
    sys.exit(EXIT_OK)


def _with_authority(
    data_path: Path | None,
    options: SandboxOptions,
    host: str,
    port: int,
    state_path: Path | None,
    tls_dir: Path,
    client_id: str,
) -> tuple[Sandbox, Callable[[str], list[str]]]:
    """The sandbox over HTTPS, with a sign-in authority whose tokens its routes accept (and the static token)."""
    from .authority import AuthorityState, add_authority_routes, make_tls

    secret = os.environ.get("BULKONBOARD_SANDBOX_CLIENT_SECRET") or DEFAULT_CLIENT_SECRET
    data = load_data(data_path)
    authority = AuthorityState(clients={client_id: secret})
    tls_dir.mkdir(parents=True, exist_ok=True)
    tls = make_tls(tls_dir)
    refresh_token = authority.issue_refresh_token(client_id, PARTNER_TENANT)
    token_file = tls_dir / "refresh_token"
    token_file.unlink(missing_ok=True)
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(refresh_token + "\n")
    expected = options.token.encode("utf-8")

    def verify(token: str, tenant: str | None, audience: str) -> bool:
        static = hmac.compare_digest(token.encode("utf-8"), expected)
        return static or authority.token_verifier(token, tenant, audience)

    sandbox = Sandbox(
        data,
        options,
        host=host,
        port=port,
        state_path=state_path,
        verifier=verify,
        setup_app=lambda app: add_authority_routes(app, authority),
        ssl_context=tls.server_context,
    )

    def notes(url: str) -> list[str]:
        return [
            f"test CA: {tls.ca_path} (clients: --ca-bundle {tls.ca_path})",
            f"sign-in authority: {url} (tenant {PARTNER_TENANT}, client id {client_id})",
            f"refresh token for the rehearsal: {token_file}",
        ]

    return sandbox, notes
