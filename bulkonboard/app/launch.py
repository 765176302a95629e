"""`validate` and `run` as the commands run them: the paths they write, the journal a run keeps, the source they
talk to. These are policies an admin relies on, so they live here, once, below the CLI (which only turns options
into these calls and outcomes into lines):

- every output path is decided, its `{date}`/`{customer}` placeholders filled and checked before anything is
  read or sent: never over the input, never two outputs in one file, a folder that can be made (else exit 2);
- a run keeps one journal per customer and service under the state directory unless told where; an embedded
  sandbox's run gets a throwaway one (a fresh sandbox knows none of an earlier demo's users);
- a journal is held (one run at a time) for the whole run and closed after it: a close that fails after the run
  failed must not hide why it failed; after a run that went well it is bulkonboard's own failure (exit 4).
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import EXIT_OK, EXIT_ROWS_FAILED, BulkOnboardError, InputError, OwnFailure
from ..model import Status
from ..progress import Progress
from .paths import default_journal, output_path
from .sources import Connection, SourceChoice, connect

if TYPE_CHECKING:
    from ..journal.store import Journal
    from ..sending.licensing import LicenseBook
    from ..sending.steps import Step
    from .runner import Reporting, RunOptions, SheetRun


@dataclass(frozen=True)
class DryRunRequest:
    """A dry run as the command line asks for it, its report path decided and checked."""

    input_path: Path
    report: Path
    customer: str  # as given: may be empty when the sheet has a customerTenantId column
    sheet: str | None = None
    generate_passwords: bool = False
    usage_location: str | None = None
    licenses: tuple[str, ...] = ()  # --license: for rows whose licenses cell is empty
    restore_deleted: bool = False  # --restore-deleted: a deleted user's UPN is a row to restore, not invalid

    @classmethod
    def plan(cls, input_path: Path, *, report: Path | None, customer: str, **options: Any) -> DryRunRequest:
        customer = customer.strip()
        now = datetime.now().astimezone()
        report = output_path(report, input_path, suffix="report", now=now, customer=customer)
        return cls(input_path, report, customer, **options)


@dataclass(frozen=True)
class DryRunOutcome:
    exit_code: int  # 1 when a row is invalid ("rows to fix"), else 0
    counts: dict[str, int]
    source_name: str


async def validate_sheet(
    request: DryRunRequest, source: SourceChoice, *, correlation_id: str, progress: Progress
) -> DryRunOutcome:
    """Read, check, ask the source for each customer's facts, validate, write the report."""
    from ..sheets.facts import ANY_CUSTOMER
    from ..sheets.reader import read_sheet
    from .dryrun import DryRunOptions, check_sheet, gather_facts, run_validation, write_report

    options = DryRunOptions(
        customer=request.customer or (ANY_CUSTOMER if source.offline else ""),
        generate_passwords=request.generate_passwords,
        default_usage_location=request.usage_location,
        default_licenses=request.licenses,
        restore_deleted=request.restore_deleted,
    )
    started = datetime.now(UTC)
    sheet = read_sheet(request.input_path, sheet=request.sheet)
    check_sheet(sheet, options)
    async with connect(source, correlation_id=correlation_id) as connection:
        facts = await gather_facts(sheet, connection.facts, options.customer, progress)
    validation = run_validation(sheet, facts, options)
    summary = write_report(
        validation,
        sheet,
        request.report,
        customer=request.customer or ", ".join(c for c in facts if c != ANY_CUSTOMER),
        started=started,
        source_name=connection.source_name,
        progress=progress,
    )
    code = EXIT_ROWS_FAILED if summary.counts.get(Status.INVALID.value, 0) else EXIT_OK
    return DryRunOutcome(code, dict(summary.counts), connection.source_name)


@dataclass(frozen=True)
class RunRequest:
    """A run as the command line asks for it, its paths decided and checked before anything is opened."""

    input_path: Path
    results: Path
    journal: Path | None  # None: the customer's and service's own, or a throwaway one for an embedded sandbox
    options: RunOptions

    @classmethod
    def plan(
        cls,
        input_path: Path,
        *,
        source: SourceChoice,
        results: Path | None,
        journal: Path | None,
        generate_passwords: Path | None,
        customer: str,
        **options: Any,
    ) -> RunRequest:
        from .runner import RunOptions

        customer = customer.strip()
        now = datetime.now().astimezone()
        results = output_path(results, input_path, suffix="results", now=now, customer=customer)
        passwords = None
        if generate_passwords is not None:
            passwords = output_path(generate_passwords, input_path, suffix="passwords", now=now, customer=customer)
            if passwords.resolve() == results.resolve():
                raise InputError(f"{passwords}: the passwords workbook and the results workbook must be two files")
        if journal is not None and journal.resolve() in {results.resolve(), input_path.resolve()}:
            raise InputError(f"{journal}: the journal must be a file of its own")
        if source.offline:
            raise InputError(
                "--domains alone cannot create users: add a source (--sandbox, --sandbox-url, or credentials)"
            )
        return cls(input_path, results, journal, RunOptions(customer=customer, generated_passwords=passwords, **options))


@asynccontextmanager
async def prepared_run(
    request: RunRequest, source: SourceChoice, *, correlation_id: str, reporting: Reporting
) -> AsyncIterator[SheetRun]:
    """The run wired as the command runs it: the source open, the journal held and open, for the `async with`."""
    from .runner import SheetRun

    async with connect(source, correlation_id=correlation_id) as connection, AsyncExitStack() as stack:
        journal, kept = _open_journal(stack, request, connection)
        yield SheetRun(
            request.input_path,
            results=request.results,
            connection=connection,
            correlation_id=correlation_id,
            options=dataclasses.replace(request.options, journal_kept=kept),
            journal=journal,
            reporting=reporting,
        )


def license_steps_of(connection: Connection, licenses: LicenseBook) -> list[Step]:
    """The license steps of a row's plan, first after create (then profile and manager: app/plan.py;
    docs/ARCHITECTURE.md, "The plan of steps"). Each step decides per row whether it is needed. A book for
    `--via graph` (`one_request`) assigns through Graph, the way the users were created."""
    from ..sending.licensing import license_steps

    return [*license_steps(connection.graph if licenses.one_request else connection.partner_center, licenses)]


def _open_journal(stack: AsyncExitStack, request: RunRequest, connection: Connection) -> tuple[Journal, bool]:
    """The run's journal, held and open until `stack` closes; and whether it outlives the command."""
    from ..journal.lock import RunLock
    from ..journal.store import open_journal

    path = request.journal
    throwaway = path is None and connection.embedded
    if throwaway:
        # A fresh embedded sandbox knows none of an earlier demo's users: a throwaway journal, so a second
        # `make demo` creates them again instead of skipping them.
        path = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bulkonboard-"))) / "j.sqlite"
    elif path is None:
        path = default_journal(connection.service_url, request.options.customer)
    stack.enter_context(RunLock(path, what=f"run {request.input_path}"))
    journal = open_journal(path, service=connection.service_url, service_starts_empty=connection.embedded)
    stack.push(_closing(journal))
    return journal, not throwaway


def _closing(journal: Journal) -> Callable[..., bool]:
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
