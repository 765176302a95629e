"""The `bulkonboard` command: wires concrete parts together. Nothing imports this module.

Every failure that stops a command becomes one line on stderr and the contract's exit code, never a traceback
(set BULKONBOARD_DEBUG=1 to see one for a bug).
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import os
import signal
import ssl
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from .. import __version__
from ..app.paths import default_journal, expand
from ..errors import EXIT_INTERRUPTED, EXIT_OWN_FAILURE, AuthError, BulkOnboardError, InputError, OwnFailure
from ..model import Status
from ..sending.pipeline import DEFAULT_CONCURRENCY
from ..sending.retry import DEFAULT_RATE
from ..sheets.facts import DomainsFile, FactsSource
from .console import Output, one_line_errors, unexpected_error_line
from .options import Concurrency, Rate, checked_url, license_option

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_SANDBOX_DATA = Path("samples/sandbox.toml")
PARTNER_CENTER_URL = "https://api.partnercenter.microsoft.com"
GRAPH_URL = "https://graph.microsoft.com"


# ---------------------------------------------------------------------------------------------------------------
# options shared by validate and run, so the same command line can be rehearsed by swapping the verb


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


def sheet_options(func: F) -> F:
    func = click.option("--sheet", metavar="NAME", help="The xlsx sheet to read (default: the first).")(func)
    func = click.option(
        "--usage-location",
        metavar="CODE",
        help="Usage location for rows that have none (the Microsoft 365 template has no such column).",
    )(func)
    func = click.option(
        "--generate-passwords",
        "generate_passwords",
        type=click.Path(dir_okay=False, path_type=Path),
        metavar="PATH.xlsx",
        help="Generate a strong password for each row without one. `run` keeps them in this workbook (mode 0600); "
        "`validate` accepts the option so the same command line can be rehearsed, and writes nothing.",
    )(func)
    func = click.option(
        "--customer",
        metavar="ID",
        default="",
        help="The customer's tenant id. May be left out when the sheet has a customerTenantId column.",
    )(func)
    return func


def source_options(func: F) -> F:
    options = [
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
            help=f"The embedded sandbox's data file (default: {DEFAULT_SANDBOX_DATA}, or the copy shipped with bulkonboard).",
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
    for option in reversed(options):
        func = option(func)
    return func


@dataclass(frozen=True)
class SourceChoice:
    domains: Path | None
    sandbox: bool
    sandbox_data: Path | None
    sandbox_url: str | None
    access_token: str | None
    ca_bundle: Path | None
    base_url: str
    graph_url: str

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> SourceChoice:
        choice = cls(
            domains=kwargs.pop("domains"),
            sandbox=kwargs.pop("sandbox"),
            sandbox_data=kwargs.pop("sandbox_data"),
            sandbox_url=kwargs.pop("sandbox_url"),
            access_token=kwargs.pop("access_token"),
            ca_bundle=kwargs.pop("ca_bundle"),
            base_url=checked_url(kwargs.pop("base_url"), "--base-url", example=PARTNER_CENTER_URL),
            graph_url=checked_url(kwargs.pop("graph_url"), "--graph-url", example=GRAPH_URL),
        )
        if choice.sandbox_url is not None:
            url = checked_url(choice.sandbox_url, "--sandbox-url", example="http://127.0.0.1:8080")
            choice = dataclasses.replace(choice, sandbox_url=url)
        if choice.sandbox and choice.sandbox_url:
            raise InputError("give either --sandbox or --sandbox-url, not both")
        if choice.sandbox_data and not choice.sandbox:
            raise InputError("--sandbox-data goes with --sandbox")
        return choice

    def warn_about_argv_token(self, output: Output) -> None:
        """A token on the command line is readable by every user of the machine (ps): say so, for the real
        service. (The contract keeps --access-token; the environment variable is the safe way to give it.)"""
        if self.access_token and not (self.sandbox or self.sandbox_url) and "--access-token" in " ".join(sys.argv):
            output.warn("a token given as --access-token is visible to other users; set BULKONBOARD_ACCESS_TOKEN instead")

    @property
    def name(self) -> str:
        if self.sandbox:
            return "embedded sandbox"
        if self.sandbox_url:
            return f"sandbox at {self.sandbox_url}"
        if self.domains and not self.access_token:
            return f"domains file {self.domains}"
        return f"Partner Center at {self.base_url}"


@dataclass
class Connection:
    """What a command talks to: a facts source, and (for a run) the Partner Center client."""

    facts: FactsSource
    source_name: str
    partner_center: Any = None
    graph: Any = None
    tokens: Any = None
    service_url: str = ""  # the service a journal belongs to: Partner Center's base URL, or the embedded sandbox
    embedded: bool = False  # an embedded sandbox lives and dies with the command, and so does its journal


@asynccontextmanager
async def connect(choice: SourceChoice, *, correlation_id: str) -> AsyncIterator[Connection]:
    """Open what the choice names; an embedded sandbox lives exactly as long as the command."""
    domains_file = DomainsFile(choice.domains) if choice.domains else None
    if domains_file and not (choice.sandbox or choice.sandbox_url or choice.access_token):
        yield Connection(facts=domains_file, source_name=choice.name)
        return

    import aiohttp

    from ..service.partnercenter import GraphClient, PartnerCenterClient, ServiceFacts, StaticTokens

    async with AsyncExitStack() as stack:
        tokens: Any
        ca_bundle: Path | None = choice.ca_bundle
        graph_url: str | None
        if choice.sandbox:
            from ..sandbox import Sandbox
            from ..sandbox.data import default_data_path

            data = choice.sandbox_data or default_data_path()
            if not data.exists():
                raise InputError(f"{data}: no such sandbox data file (give --sandbox-data FILE)")
            box = await stack.enter_async_context(Sandbox(data=data))
            base_url, graph_url = box.url, f"{box.url}/graph/{{tenant}}"
            tokens = StaticTokens("sandbox")
        elif choice.sandbox_url:
            base_url = choice.sandbox_url.rstrip("/")
            graph_url = f"{base_url}/graph/{{tenant}}"
            tokens = StaticTokens(choice.access_token or "sandbox")  # the sandbox's token serves Graph too
        elif choice.access_token:
            graph_token = os.environ.get("BULKONBOARD_GRAPH_TOKEN") or None
            if not domains_file and not graph_token:
                raise AuthError(
                    "Graph needs its own token for the customer's tenant to list domains: set "
                    "BULKONBOARD_GRAPH_TOKEN, or give --domains FILE"
                )
            base_url, graph_url = choice.base_url, (choice.graph_url if graph_token else None)
            tokens = StaticTokens(choice.access_token, graph_token)
        else:
            # The secure application model: MSAL, from the configuration file or the environment.
            from ..auth.config import load_config
            from ..auth.tokens import MsalTokens

            config = load_config()
            tokens = MsalTokens(config)
            stack.callback(tokens.close)
            ca_bundle = ca_bundle or config.ca_bundle
            base_url, graph_url = choice.base_url, (None if domains_file else choice.graph_url)
        timeout = aiohttp.ClientTimeout(total=60, sock_connect=10)
        connector = aiohttp.TCPConnector(ssl=_ssl_context(ca_bundle)) if ca_bundle else None
        session = await stack.enter_async_context(aiohttp.ClientSession(timeout=timeout, connector=connector))
        pc = PartnerCenterClient(session, tokens, base_url=base_url, correlation_id=correlation_id)
        graph = GraphClient(session, tokens, graph_url=graph_url) if graph_url else None
        facts = ServiceFacts(pc, graph, domains_file=domains_file)
        yield Connection(
            facts=facts,
            source_name=choice.name,
            partner_center=pc,
            graph=graph,
            tokens=tokens,
            # An embedded sandbox's port changes per start; its data file says which tenants it holds.
            service_url=f"sandbox:embedded:{os.path.realpath(data)}" if choice.sandbox else base_url,
            embedded=choice.sandbox,
        )


def _ssl_context(ca_bundle: Path) -> ssl.SSLContext:
    """Trust the system's CAs and this bundle too (a corporate proxy's CA, or the sandbox's test CA)."""
    if not ca_bundle.is_file():
        raise InputError(f"{ca_bundle}: no such CA bundle (--ca-bundle / BULKONBOARD_CA_BUNDLE)")
    context = ssl.create_default_context()
    try:
        context.load_verify_locations(cafile=str(ca_bundle))
    except (ssl.SSLError, ValueError) as exc:
        raise InputError(f"{ca_bundle}: not a PEM bundle of CA certificates ({exc})") from None
    return context


# ---------------------------------------------------------------------------------------------------------------
# running a command


def run_command(output: Output, work: Callable[[], Coroutine[Any, Any, int]]) -> None:
    """Run `work` in a fresh loop; turn every stopping failure into one line and its exit code."""
    try:
        code = asyncio.run(work())
    except BulkOnboardError as exc:
        output.error(exc.message)
        code = exc.exit_code
    except KeyboardInterrupt:
        output.error("interrupted")
        code = EXIT_INTERRUPTED
    except Exception as exc:  # a bug: still one line and exit 4 (never 1, "rows to fix"), unless asked for more
        if os.environ.get("BULKONBOARD_DEBUG"):
            raise
        output.error(unexpected_error_line(exc))
        code = EXIT_OWN_FAILURE
    sys.exit(code)


def default_output_path(input_path: Path, suffix: str) -> Path:
    """Beside the input, never over it."""
    candidate = input_path.with_name(f"{input_path.stem}.{suffix}.xlsx")
    if candidate.resolve() == input_path.resolve():
        candidate = input_path.with_name(f"{input_path.stem}.{suffix}-1.xlsx")
    return candidate


def guard_output_path(path: Path, input_path: Path) -> Path:
    if path.suffix.lower() != ".xlsx":
        raise InputError(f"{path}: the output workbook must be an .xlsx file")
    if path.exists() and path.resolve() == input_path.resolve():
        raise InputError(f"{path}: refusing to write the output over the input sheet")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{path}: cannot create its folder ({exc.strerror or exc})") from None
    return path




# ---------------------------------------------------------------------------------------------------------------
# commands


class OneLineErrors(click.Group):
    """Bad arguments get one line on stderr and exit 2, like every other unusable input (the contract), instead of
    click's usage block; `--help` still shows the whole usage.

    The `sandbox`, `auth` and `journal` command groups are imported only when named (or listed by `--help`): they
    bring the emulator's server, MSAL and its HTTP stack, which a nightly `run` with a token never needs (a tenth
    of a second of every start)."""

    #: name -> (module, attribute); the CLI is the one place that wires the sandbox in.
    lazy_commands = {
        "auth": ("bulkonboard.cli.auth_commands", "auth_command"),
        "journal": ("bulkonboard.cli.journal_commands", "journal_command"),
        "sandbox": ("bulkonboard.sandbox.cli", "sandbox_command"),
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy_commands and cmd_name not in self.commands:
            module, attribute = self.lazy_commands[cmd_name]
            command: click.Command = getattr(importlib.import_module(module), attribute)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except click.exceptions.UsageError as exc:
            command = exc.ctx.command_path if exc.ctx else "bulkonboard"
            click.echo(f"error: {exc.format_message()} (see `{command} --help`)", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("error: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(
    cls=OneLineErrors,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
)
@click.version_option(__version__, prog_name="bulkonboard")
def main() -> None:
    """Onboard new hires into a CSP customer's tenant in bulk, through Partner Center.

    \b
    Typical session:
      bulkonboard template new_hires.xlsx                 # a sheet HR can fill in
      bulkonboard validate new_hires.xlsx --customer ID   # dry run: a report of what is wrong, nothing created
      bulkonboard run new_hires.xlsx --customer ID        # create the users, write a results workbook

    Rehearse anything against the built-in sandbox with --sandbox (see `bulkonboard sandbox --help`).

    \b
    Exit codes: 0 every row valid/created/skipped; 1 some row invalid or failed; 2 unusable input or
    arguments; 3 auth, connection or permission problem, or another run holds the journal; 4 bulkonboard could not
    finish its own work (disk full, results or journal not writable, a bug: `journal results` rebuilds a run's
    results from its journal); 130 interrupted.
    """


@main.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite PATH if it exists.")
@one_line_errors
def template(path: Path, force: bool) -> None:
    """Write an input template HR can fill in: the columns, a note on each header, an example row, and drop-downs
    for the usage location and forceChangePassword."""
    from ..workbook.writers import write_template

    output = Output()
    if path.suffix.lower() != ".xlsx":
        output.error(f"{path}: the template must be an .xlsx file")
        sys.exit(2)
    if path.exists() and not force:
        output.error(f"{path} exists; pass --force to overwrite it")
        sys.exit(2)
    write_template(path)
    output.info(f"template written to {path}")


@main.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@sheet_options
@click.option(
    "--report",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PATH.xlsx",
    help="Where the validation report goes (default: beside INPUT, as NAME.report.xlsx).",
)
@license_option
@source_options
@output_options
@one_line_errors
def validate(input_path: Path, **kwargs: Any) -> None:
    """Dry run: read INPUT (xlsx, csv, tsv, txt), check every row, write a report; nothing is created.

    Customer facts (domains, whether they are federated, users that already exist) come from the service, the
    sandbox (--sandbox, --sandbox-url) or, offline, a domains file (--domains).
    """
    from ..app.dryrun import (
        ANY_CUSTOMER,
        DryRunOptions,
        check_sheet,
        gather_facts,
        run_validation,
        write_report,
    )
    from ..sheets.reader import read_sheet

    output = Output(quiet=kwargs.pop("quiet"), log_format=kwargs.pop("log_format"))
    choice = SourceChoice.from_kwargs(kwargs)
    choice.warn_about_argv_token(output)
    customer = kwargs["customer"].strip()
    offline = choice.domains is not None and not (choice.sandbox or choice.sandbox_url or choice.access_token)
    options = DryRunOptions(
        customer=customer or (ANY_CUSTOMER if offline else ""),
        generate_passwords=kwargs["generate_passwords"] is not None,
        default_usage_location=kwargs["usage_location"],
        default_licenses=tuple(kwargs["licenses"]),
    )
    report = kwargs["report"] or default_output_path(input_path, "report")
    report = guard_output_path(expand(report, now=datetime.now().astimezone(), customer=customer), input_path)

    async def work() -> int:
        started = datetime.now(UTC)
        sheet = read_sheet(input_path, sheet=kwargs["sheet"])
        check_sheet(sheet, options)
        async with connect(choice, correlation_id=str(uuid.uuid4())) as connection:
            facts = await gather_facts(sheet, connection.facts, options.customer)
        validation = run_validation(sheet, facts, options)
        summary = write_report(
            validation,
            sheet,
            report,
            customer=customer or ", ".join(c for c in facts if c != ANY_CUSTOMER),
            started=started,
            source_name=connection.source_name,
            progress=output.progress(),
        )
        output.summary(
            f"Validation of {input_path.name}",
            summary.counts,
            {"report": str(report), "source": connection.source_name},
        )
        return 1 if summary.counts.get(Status.INVALID.value, 0) else 0

    run_command(output, work)


@main.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@sheet_options
@click.option(
    "--results",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PATH.xlsx",
    help="Where the results workbook goes (default: beside INPUT, as NAME.results.xlsx). May contain {date}, "
    "{time}, {datetime} and {customer}, so nightly runs never overwrite each other.",
)
@click.option(
    "--journal",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PATH",
    help="The run's memory (SQLite): rows created by an earlier run are skipped, a crashed run is finished "
    "without duplicates. Default: one per customer and service under ~/.local/state/bulkonboard; a throwaway "
    "one for an embedded --sandbox.",
)
@click.option(
    "--rate",
    type=Rate(),
    metavar="N",
    help=f"User creations per second. Without it the run starts at {DEFAULT_RATE:g}/s and adapts to the "
    "service's 429 answers. inf: no pacing (only --concurrency and 429s bound it; for the sandbox).",
)
@click.option(
    "--concurrency",
    type=Concurrency(),
    default=DEFAULT_CONCURRENCY,
    show_default=True,
    metavar="N",
    help="Requests in flight at most. At 20 users/s and 250 ms answers, five are in flight.",
)
@source_options
@output_options
@one_line_errors
def run(input_path: Path, **kwargs: Any) -> None:
    """Create the users of INPUT through Partner Center and write a results workbook.

    Every row is validated first, as `validate` does; only valid rows are sent. Each row gets one MS-RequestId
    kept across its retries, so a retried request never creates a second user. 429 answers pause the whole run
    for their Retry-After. Ctrl-C (or SIGTERM) stops taking rows, lets requests in flight finish, writes the
    results and exits 130; a second Ctrl-C abandons the requests in flight and still writes the results.
    """
    from ..app.runner import RunOptions, SheetRun
    from ..journal.lock import RunLock
    from ..journal.store import open_journal

    quiet, log_format = kwargs.pop("quiet"), kwargs.pop("log_format")
    output = Output(quiet=quiet, log_format=log_format)
    choice = SourceChoice.from_kwargs(kwargs)
    choice.warn_about_argv_token(output)
    customer = kwargs["customer"].strip()
    now = datetime.now().astimezone()
    results = expand(kwargs["results"] or default_output_path(input_path, "results"), now=now, customer=customer)
    results = guard_output_path(results, input_path)
    passwords = kwargs["generate_passwords"]
    if passwords is not None:
        passwords = guard_output_path(expand(passwords, now=now, customer=customer), input_path)
        if passwords.resolve() == results.resolve():
            raise InputError(f"{passwords}: the passwords workbook and the results workbook must be two files")
    if kwargs["journal"] is not None and kwargs["journal"].resolve() in {results.resolve(), input_path.resolve()}:
        raise InputError(f"{kwargs['journal']}: the journal must be a file of its own")
    if choice.domains and not (choice.sandbox or choice.sandbox_url or choice.access_token):
        raise InputError("--domains alone cannot create users: add a source (--sandbox, --sandbox-url, or credentials)")
    options = RunOptions(
        customer=customer,
        sheet=kwargs["sheet"],
        default_usage_location=kwargs["usage_location"],
        generated_passwords=passwords,
        rate=kwargs["rate"],
        concurrency=kwargs["concurrency"],
    )
    correlation_id = str(uuid.uuid4())

    async def work() -> int:
        async with connect(choice, correlation_id=correlation_id) as connection, AsyncExitStack() as stack:
            journal_path = kwargs["journal"]
            throwaway = journal_path is None and connection.embedded
            if throwaway:
                # A fresh embedded sandbox knows none of an earlier demo's users: a throwaway journal, so a second
                # `make demo` creates them again instead of skipping them.
                journal_path = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bulkonboard-"))) / "j.sqlite"
            elif journal_path is None:
                journal_path = default_journal(connection.service_url, customer)
            stack.enter_context(RunLock(journal_path, what=f"run {input_path}"))
            journal = open_journal(
                journal_path, service=connection.service_url, service_starts_empty=connection.embedded
            )
            stack.push(closing_journal(journal))
            job = SheetRun(
                input_path,
                results=results,
                facts=connection.facts,
                client=connection.partner_center,
                graph=connection.graph,
                tokens=connection.tokens,
                correlation_id=correlation_id,
                options=options,
                journal=journal,
                progress=output.progress(),
                source_name=connection.source_name,
                on_result=(lambda result: output.row(result, correlation_id=correlation_id)) if output.json else None,
                journal_kept=not throwaway,
            )
            with stop_on_signals(job.stop, output, abort=job.abort):
                outcome = await job.run()
        details: dict[str, Any] = {"results": str(results), "correlation id": correlation_id}
        if output.json:
            details["exit code"] = outcome.exit_code
            details["not reached"] = outcome.not_reached
        if outcome.passwords_written is not None:  # named only when written: nothing generated, no file
            details["generated passwords"] = str(outcome.passwords_written)
        if outcome.interrupted:
            details["interrupted"] = "run the same command again to finish the rest"
        if outcome.stats.halted:
            output.warn(f"the run stopped early: {outcome.stats.halted}; run the same command again once it is fixed")
        output.summary(f"Run of {input_path.name}", outcome.counts, details)
        return outcome.exit_code

    run_command(output, work)


def closing_journal(journal: Any) -> Callable[..., bool]:
    """The journal's close as an exit callback: a close that fails after the run failed must not hide why it
    failed (the journal is often the cause); after a run that went well it is bulkonboard's own failure (exit 4)."""

    def close(exc_type: type[BaseException] | None, exc: BaseException | None, traceback: Any) -> bool:
        import sqlite3  # loaded by the journal already; not at the CLI's start, which `validate` pays for

        try:
            journal.close()
        except (BulkOnboardError, sqlite3.Error, OSError) as failure:
            if exc is None:
                message = failure.message if isinstance(failure, BulkOnboardError) else str(failure)
                raise OwnFailure(f"the results are written, but closing the journal failed: {message}") from failure
        return False

    return close


@contextmanager
def stop_on_signals(stop: Callable[[], None], output: Output, *, abort: Callable[[], None]) -> Iterator[None]:
    """First Ctrl-C / SIGTERM: stop taking rows and finish what is in flight. Second: `abort`, which cuts the
    requests in flight short; the results are still written for what finished, and the run exits 130. Third:
    exit 130 at once, without results (the journal, committed before every request, keeps the next run right)."""
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    count = 0

    def handle() -> None:
        nonlocal count
        count += 1
        if count == 1:
            output.warn("stopping: letting the requests in flight finish (signal again to stop at once)")
            stop()
        elif count == 2:
            output.warn("stopping at once: abandoning the requests in flight and writing the results")
            abort()
        else:
            output.error("interrupted: quitting without writing the results")
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(EXIT_INTERRUPTED)

    for sig in signals:
        loop.add_signal_handler(sig, handle)
    try:
        yield
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


if __name__ == "__main__":  # `python -m bulkonboard.cli.commands`, for tests that run the command as a process
    from .program import entry

    entry(main)
