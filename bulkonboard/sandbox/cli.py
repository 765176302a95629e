"""`bulkonboard sandbox`: the emulator as a command. The main CLI attaches it with `main.add_command(sandbox_command)`."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from ..errors import EXIT_AUTH_OR_CONNECTION, EXIT_BAD_INPUT, EXIT_OK
from .data import DEFAULT_DATA_PATH, SandboxDataError
from .options import DEFAULT_PAGE_SIZE, DEFAULT_TOKEN, SandboxOptions, parse_rate_limit
from .server import Sandbox, serve

DEFAULT_PORT = 8765


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


@click.command(
    "sandbox",
    epilog=(
        "Partner Center is served at URL/v1/... and Graph for customer T at URL/graph/T/v1.0/... "
        "(domains, users/{upn}). Point a run at it with --sandbox-url URL --access-token TOKEN. "
        "An MS-RequestId that got a final answer (2xx, or 4xx other than 429) gets the same answer again and creates "
        "nothing; after a 429 or 5xx it is processed afresh."
    ),
)
@click.option(
    "--data",
    "data_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"TOML file of customers, domains and existing users [default: {DEFAULT_DATA_PATH} in the current directory].",
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
    type=click.FloatRange(min=0),
    default=0,
    help="Each call takes about this many milliseconds.",
)
@click.option(
    "--rate-limit",
    type=_RateLimit(),
    metavar="N[/Ws]",
    default=None,
    help="Answer creations past N in any window of W seconds (default 60) with 429 + Retry-After: 30 is 30 a minute, 20/1s is 20 a second.",
)
@click.option(
    "--fail-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    help="Fraction of creations answered 503 without creating.",
)
@click.option(
    "--drop-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    help="Fraction of creations that are created, then the connection closed with no answer.",
)
@click.option(
    "--state",
    "state_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="JSON file that keeps users across restarts (never passwords).",
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
    help="Send Graph's x-ms-throttle-limit-percentage header on creation answers past 80 % of --rate-limit (sandbox's own extension).",
)
def sandbox_command(
    data_path: Path | None,
    host: str,
    port: int,
    token: str,
    seed: int | None,
    latency_ms: float,
    rate_limit: tuple[int, float] | None,
    fail_rate: float,
    drop_rate: float,
    state_path: Path | None,
    page_size: int,
    throttle_warnings: bool,
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
            latency_ms=latency_ms,
            rate_limit=rate_limit,
            fail_rate=fail_rate,
            drop_rate=drop_rate,
            page_size=page_size,
            throttle_warnings=throttle_warnings,
        )
        sandbox = Sandbox(data_path, options, host=host, port=port, state_path=state_path)
    except (SandboxDataError, ValueError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    try:
        asyncio.run(serve(sandbox))
    except KeyboardInterrupt:  # where the loop cannot install signal handlers, Ctrl-C arrives this way
        pass
    except OSError as exc:
        click.echo(f"error: cannot listen on {host}:{port}: {exc.strerror or exc}", err=True)
        sys.exit(EXIT_AUTH_OR_CONNECTION)
    sys.exit(EXIT_OK)
