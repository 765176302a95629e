"""The `bulkonboard` command: wires options to the app layer's calls and outcomes to lines. Nothing imports this
module but `program` (and `python -m bulkonboard.cli.commands`, as the tests run it).

Each command is wiring only: its output, its source (`app.sources`), its request with the paths decided
(`app.launch`), one call, one summary. A failure is raised, never caught here: `group.one_line` turns it into one
line on stderr and the contract's exit code.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .. import __version__
from ..app.launch import DryRunRequest, RunRequest, prepared_run, validate_sheet
from ..app.sources import Emulator, SourceChoice
from ..defaults import DEFAULT_CONCURRENCY, DEFAULT_RATE
from ..errors import EXIT_INTERRUPTED, AuthError, InputError
from .console import Output
from .group import CommandGroup
from .options import (
    Concurrency,
    Rate,
    license_option,
    output_from,
    output_options,
    restore_deleted_option,
    sheet_options,
    source_from,
    source_options,
    via_option,
)

if TYPE_CHECKING:
    from ..app.runner import RunOutcome


class Program(CommandGroup):
    #: The CLI is the one place that wires the sandbox in.
    lazy_commands = {
        "auth": ("bulkonboard.cli.auth_commands", "auth_command"),
        "journal": ("bulkonboard.cli.journal_commands", "journal_command"),
        "sandbox": ("bulkonboard.sandbox.cli", "sandbox_command"),
    }


@asynccontextmanager
async def embedded_sandbox(data: Path | None) -> AsyncIterator[Emulator]:
    """`--sandbox`: the emulator on 127.0.0.1, for as long as the command. The only path from a command into
    the sandbox package: no stage below the CLI imports it."""
    from ..sandbox import Sandbox
    from ..sandbox.data import default_data_path

    data = data or default_data_path()
    if not data.exists():
        raise InputError(f"{data}: no such sandbox data file (give --sandbox-data FILE)")
    async with Sandbox(data=data) as box:
        yield Emulator(url=box.url, data=data)


@click.group(
    cls=Program,
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
    Exit codes: 0 every row valid/created/skipped/restored; 1 some row invalid, failed or partial; 2 unusable input or
    arguments; 3 auth, connection or permission problem, or another run holds the journal; 4 bulkonboard could not
    finish its own work (disk full, results or journal not writable, a bug: `journal results` rebuilds a run's
    results from its journal); 130 interrupted.
    """


@main.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite PATH if it exists.")
def template(path: Path, force: bool) -> None:
    """Write an input template HR can fill in: the columns, a note on each header, an example row, and drop-downs
    for the usage location and forceChangePassword."""
    from ..workbook.writers import write_template

    if path.suffix.lower() != ".xlsx":
        raise InputError(f"{path}: the template must be an .xlsx file")
    if path.exists() and not force:
        raise InputError(f"{path} exists; pass --force to overwrite it")
    write_template(path)
    Output().info(f"template written to {path}")


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
@via_option
@restore_deleted_option
@source_options
@output_options
def validate(input_path: Path, **options: Any) -> int:
    """Dry run: read INPUT (xlsx, csv, tsv, txt), check every row, write a report; nothing is created.

    Customer facts (domains, whether they are federated, users that already exist) come from the service, the
    sandbox (--sandbox, --sandbox-url) or, offline, a domains file (--domains).
    """
    output = output_from(options)
    source = source_from(options, output, embedded_sandbox)
    request = DryRunRequest.plan(
        input_path, report=options["report"], customer=options["customer"], sheet=options["sheet"],
        generate_passwords=options["generate_passwords"] is not None, usage_location=options["usage_location"],
        licenses=tuple(options["licenses"]), restore_deleted=options["restore_deleted"],
    )  # fmt: skip
    checked = asyncio.run(validate_sheet(request, source, correlation_id=str(uuid.uuid4()), progress=output.progress()))
    details = {"report": str(request.report), "source": checked.source_name}
    not_checked = ("skipped",) if source.offline else ()  # a domains file cannot know who exists
    output.summary(f"Validation of {input_path.name}", checked.counts, details, not_checked=not_checked)
    return checked.exit_code


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
    help="Requests in flight at most: a cap. The run keeps as many in flight as its pace needs at the latency "
    "it sees (rate x latency, with headroom: 5 at 20 users/s and 250 ms answers, about 75 at 3 s), up to this.",
)
@license_option
@via_option
@restore_deleted_option
@source_options
@output_options
def run(input_path: Path, **options: Any) -> int:
    """Create the users of INPUT through Partner Center and write a results workbook.

    Every row is validated first, as `validate` does; only valid rows are sent. A created user then gets the
    licenses its row names (its licenses cell, else --license), once; a refused one makes the row partial, and
    the same command with the same journal assigns only what is missing. Each row gets one MS-RequestId
    kept across its retries, so a retried request never creates a second user. 429 answers pause the whole run
    for their Retry-After. Ctrl-C (or SIGTERM) stops taking rows, lets requests in flight finish, writes the
    results and exits 130; a second Ctrl-C abandons the requests in flight and still writes the results.
    """
    output = output_from(options)
    source = source_from(options, output, embedded_sandbox)
    request = RunRequest.plan(
        input_path, source=source, results=options["results"], journal=options["journal"],
        generate_passwords=options["generate_passwords"], customer=options["customer"], sheet=options["sheet"],
        default_usage_location=options["usage_location"], rate=options["rate"], concurrency=options["concurrency"],
        licenses=tuple(options["licenses"]), via=options["via"].casefold(),
        restore_deleted=options["restore_deleted"],
    )  # fmt: skip
    correlation_id = str(uuid.uuid4())
    outcome = asyncio.run(run_with_signals(request, source, output, correlation_id))
    output.pending_line(correlation_id=correlation_id)
    if outcome.denied:  # exit 3, one line (the one error path): the roles needed, and where the results are
        raise AuthError(
            f"{outcome.denied}; no further row was sent, and the rows not finished are pending in "
            f"{outcome.results_path}; run the same command again once the role is granted"
        )
    if outcome.stats.halted:
        output.warn(f"the run stopped early: {outcome.stats.halted}; run the same command again once it is fixed")
    output.summary(f"Run of {input_path.name}", outcome.counts, run_details(outcome, output))
    return outcome.exit_code


async def run_with_signals(request: RunRequest, source: SourceChoice, output: Output, correlation_id: str) -> RunOutcome:
    """The run, with Ctrl-C and SIGTERM wired to its stop and abort switches."""
    from ..app.runner import Reporting

    on_result = (lambda result: output.row(result, correlation_id=correlation_id)) if output.json else None
    reporting = Reporting(progress=output.progress(), on_result=on_result)
    async with prepared_run(request, source, correlation_id=correlation_id, reporting=reporting) as job:
        with stop_on_signals(job.stop, output, abort=job.abort):
            return await job.run()


def run_details(outcome: RunOutcome, output: Output) -> dict[str, Any]:
    """The lines under the run's closing table (or the fields of its JSON summary)."""
    details: dict[str, Any] = {"results": str(outcome.results_path), "correlation id": outcome.correlation_id}
    if output.json:
        details["exit code"] = outcome.exit_code
        details["not reached"] = outcome.not_reached
    if outcome.passwords_written is not None:  # named only when written: nothing generated, no file
        details["generated passwords"] = str(outcome.passwords_written)
    if outcome.interrupted:
        details["interrupted"] = "run the same command again to finish the rest"
    from ..sending.figures import pace_lines

    details.update(pace_lines(outcome.stats))  # a fixed rate eased after 429s; a line per customer
    return details


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
