"""The options `validate` and `run` share, so the same command line can be rehearsed by swapping the verb; and
option values checked before anything is opened: a typo gets exit 2 and one line that shows the fix, instead of
reaching the run (a `ht!tp://x` once became a journal's service, then an "unexpected ValueError")."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ..app.sources import EmulatorStarter, SourceChoice
from ..defaults import DEFAULT_CONCURRENCY, GRAPH_URL, PARTNER_CENTER_URL
from ..model import plain_tenant_id
from .console import Output
from .group import session_output

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_SANDBOX_DATA = Path("samples/sandbox.toml")


def output_options(func: F) -> F:
    func = click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary table; errors only.")(func)
    func = click.option(
        "--log-format",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        help="json: one JSON object per log line on stderr, for schedulers and log collectors.",
    )(func)
    return func


def output_from(options: dict[str, Any]) -> Output:
    """The command's output, from (and popped off) its options; the error path prints through it too, so a
    failure comes out in the command's log format."""
    return session_output(Output(quiet=options.pop("quiet"), log_format=options.pop("log_format")))


def sheet_options(func: F) -> F:
    options = [
        click.option(
            "--customer",
            metavar="ID",
            default="",
            callback=lambda _ctx, _param, value: plain_tenant_id(value or ""),
            help="The customer's tenant id (a GUID, braces or not). May be left out when the sheet has a "
            "customerTenantId column.",
        ),
        click.option(
            "--generate-passwords",
            "generate_passwords",
            type=click.Path(dir_okay=False, path_type=Path),
            metavar="PATH.xlsx",
            help="Generate a strong password for each row without one. `run` keeps them in this workbook (mode "
            "0600); `validate` accepts the option so the same command line can be rehearsed, and writes nothing.",
        ),
        click.option(
            "--usage-location",
            metavar="CODE",
            help="Usage location for rows that have none (the Microsoft 365 template has no such column).",
        ),
        click.option("--sheet", metavar="NAME", help="The xlsx sheet to read, hidden ones too (default: the first visible sheet)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def source_options(func: F) -> F:
    for option in reversed(_source_option_list()):
        func = option(func)
    return func


def source_from(options: dict[str, Any], output: Output, start_emulator: EmulatorStarter) -> SourceChoice:
    """The source the options name, checked (exit 2 with the fix), popped off the options; `start_emulator` is
    how `--sandbox` starts the embedded sandbox (the CLI is the one place that knows it)."""
    source = SourceChoice.pick(
        **{name: options.pop(name) for name in _SOURCE_OPTIONS}, start_emulator=start_emulator, via=options.get("via")
    )
    if source.token_on_command_line_matters and "--access-token" in " ".join(sys.argv):
        # Readable by every user of the machine (ps). The contract keeps --access-token; the environment variable
        # is the safe way to give it.
        output.warn("a token given as --access-token is visible to other users; set BULKONBOARD_ACCESS_TOKEN instead")
    return source


_SOURCE_OPTIONS = (
    "domains", "sandbox", "sandbox_data", "sandbox_url", "access_token", "ca_bundle", "base_url", "graph_url"
)  # fmt: skip


def _source_option_list() -> list[Callable[[Any], Any]]:
    return [
        click.option(
            "--domains",
            type=click.Path(exists=False, dir_okay=False, path_type=Path),
            metavar="FILE",
            help="Domain facts offline, from a CSV with columns domain,authenticationType (Managed or Federated).",
        ),
        click.option("--sandbox", is_flag=True, help="Use an embedded sandbox (a local Partner Center emulator)."),
        click.option(
            "--sandbox-data",
            type=click.Path(dir_okay=False, path_type=Path),
            metavar="FILE",
            help=f"The embedded sandbox's data file (default: {DEFAULT_SANDBOX_DATA}, or the copy shipped with "
            "bulkonboard).",
        ),
        click.option("--sandbox-url", metavar="URL", help="A standalone sandbox started with `bulkonboard sandbox`."),
        click.option(
            "--access-token",
            metavar="TOKEN",
            envvar="BULKONBOARD_ACCESS_TOKEN",
            show_envvar=True,
            help="A Partner Center token acquired elsewhere. Prefer the environment variable: a command-line "
            "argument is visible to other users of the machine.",
        ),
        click.option(
            "--ca-bundle",
            type=click.Path(dir_okay=False, path_type=Path),
            envvar="BULKONBOARD_CA_BUNDLE",
            show_envvar=True,
            metavar="PEM",
            help="Extra CA certificates to trust (a corporate proxy's, or `bulkonboard sandbox --tls`'s test CA).",
        ),
        click.option(
            "--base-url", default=PARTNER_CENTER_URL, show_default=True, metavar="URL", help="Partner Center's URL."
        ),
        click.option(
            "--graph-url",
            default=GRAPH_URL,
            show_default=True,
            metavar="URL",
            help="Microsoft Graph's URL (may contain {tenant}).",
        ),
    ]


class Rate(click.ParamType):
    """Users per second, above 0. `nan` parses as a float and would stall the pacer: refused. `inf` stays: no pacing
    at all, bounded by --concurrency and the service's 429s (the benchmarks run so against the sandbox)."""

    name = "rate"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            rate = float(value)
        except (TypeError, ValueError):
            rate = math.nan
        if math.isnan(rate) or rate <= 0:
            self.fail(
                f"{value!r} is not a rate: give users per second above 0, e.g. --rate 20 (or leave --rate out and "
                "the run adapts to the service)",
                param,
                ctx,
            )
        return rate


class Concurrency(click.ParamType):
    """Requests in flight: a whole number in range, refused with the range and an example (one line, exit 2)."""

    name = "concurrency"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        try:
            count = int(value)
        except (TypeError, ValueError):
            count = 0
        if not MIN_CONCURRENCY <= count <= MAX_CONCURRENCY:
            self.fail(
                f"{value!r}: give how many requests may be in flight, {MIN_CONCURRENCY} to {MAX_CONCURRENCY}, "
                f"e.g. --concurrency {DEFAULT_CONCURRENCY}",
                param,
                ctx,
            )
        return count


MIN_CONCURRENCY, MAX_CONCURRENCY = 1, 256


#: `validate|run --restore-deleted`: rows whose UPN belongs to a soft-deleted user restore it instead of failing.
restore_deleted_option = click.option(
    "--restore-deleted",
    is_flag=True,
    help="A row whose UPN belongs to a deleted user in the customer's recycle bin restores that user (status "
    "restored: its own names and password) instead of failing with user.deleted.",
)


#: `validate --license SKU` (repeatable): the licenses of rows whose `licenses` cell is empty.
license_option = click.option(
    "--license",
    "licenses",
    multiple=True,
    metavar="SKU",
    help="A license for rows whose licenses cell is empty: a part number (ENTERPRISEPACK), a product name or a "
    "SKU id. Repeatable.",
)


#: `validate|run --via partnercenter|graph`: who creates the users (the dry run is the same either way, so a run's
#: command line can be rehearsed by swapping the verb).
via_option = click.option(
    "--via",
    type=click.Choice(["partnercenter", "graph"], case_sensitive=False),
    default="partnercenter",
    show_default=True,
    help="Create users through Partner Center, or through Microsoft Graph in the customer's tenant (POST /users, "
    "the whole profile in one request).",
)
