"""`bulkonboard run` as a library call: validate as the dry run does, then create, then write the results.

The caller hands in a few cohesive parts: the `Connection` it talks to (`app.sources`), the `RunOptions` the
command line asked for, the journal, `Reporting` (who hears of the run) and `Timing` (tests hand in fakes);
`app.launch.prepared_run` builds them as the command does, and the CLI wires Ctrl-C to `SheetRun.stop()` (then
`abort()`). The steps live here so that a test, a script or a scheduler runs exactly what
the command runs. The dry run's own helpers do the reading and the checking, so a rehearsal (`validate`) and the
real thing (`run`) can never disagree about a row.

Once sending has begun, the results workbook is written whatever happens: finished, stopped, aborted, or failed
(a bug, a journal that cannot be written); then it lists what finished and says the run failed, and the error
goes on up.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..defaults import DEFAULT_ATTEMPTS, DEFAULT_CONCURRENCY
from ..errors import (
    EXIT_AUTH_OR_CONNECTION,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_ROWS_FAILED,
    BulkOnboardError,
    InputError,
    OwnFailure,
)
from ..model import RowResult, Status
from ..progress import NullProgress, Progress
from ..protocols import Journal
from ..sending.licensing import LicenseBook
from ..sending.pipeline import Pipeline, PipelineOptions, PipelineStats
from ..sending.retry import Backoff, Clock, RateController, Sleep
from ..sheets.facts import CustomerFacts
from ..sheets.reader import Sheet, read_sheet
from ..sheets.validation import CheckedRow, Validation
from ..workbook.writers import ReportWriter, Summary, WorkbookNotWritten
from .details import run_details
from .dryrun import DryRunOptions, check_sheet, gather_facts, run_validation
from .launch import license_steps_of
from .passwords import with_generated_passwords
from .plan import VIA_GRAPH, VIA_PARTNER_CENTER, plan_for, user_service
from .salvage import Tally, failure_text, to_result, unfinished
from .sources import Connection

#: The statuses a results workbook counts (`valid` is what a dry run says; a run turns it into one of these).
#: `pending` (the run stopped before the row's outcome was known) is counted apart from `failed`, always.
#: `partial`: the user exists, a step after create (a license) did not succeed; `restored`: brought back from the
#: recycle bin (--restore-deleted) instead of created.
RESULT_STATUSES = (
    Status.CREATED, Status.RESTORED, Status.PARTIAL, Status.SKIPPED, Status.INVALID, Status.FAILED, Status.PENDING,
)  # fmt: skip


@runtime_checkable
class RunRecorder(Protocol):
    """A journal that also keeps a record of each run (`journal.Journal`), for `journal show`."""

    def begin_run(
        self,
        *,
        input_path: Path | str,
        input_sha256: str,
        customer: str,
        correlation_id: str,
        command: str = "",
    ) -> int: ...

    def end_run(self, *, counts: Mapping[str, int] | None, exit_code: int | None) -> None: ...


@dataclass(frozen=True, slots=True)
class RunOptions:
    customer: str = ""  # --customer; may be empty when the sheet has a customerTenantId column
    sheet: str | None = None  # --sheet NAME (xlsx)
    default_usage_location: str | None = None  # --usage-location
    licenses: tuple[str, ...] = ()  # --license: for rows whose licenses cell is empty
    generated_passwords: Path | None = None  # --generate-passwords PATH.xlsx
    rate: float | None = None  # --rate (users/s); None: adaptive from retry.DEFAULT_RATE
    concurrency: int = DEFAULT_CONCURRENCY  # --concurrency
    attempts: int = DEFAULT_ATTEMPTS
    backoff: Backoff = Backoff()
    restore_deleted: bool = False  # --restore-deleted: restore a deleted user holding a row's UPN, not create
    # False: the journal is thrown away when the command ends (an embedded sandbox's), so a failure line must
    # not send anyone to it.
    journal_kept: bool = True
    via: str = VIA_PARTNER_CENTER  # --via: who creates the users (Partner Center, or Graph: app/plan.py)

    def dry_run(self) -> DryRunOptions:
        return DryRunOptions(
            customer=self.customer,
            generate_passwords=self.generated_passwords is not None,
            default_usage_location=self.default_usage_location,
            default_licenses=self.licenses,
            restore_deleted=self.restore_deleted,
        )


@dataclass(frozen=True, slots=True)
class Reporting:
    """Who hears of the run while it goes: a progress bar (or none), and each row's outcome as it is written
    (e.g. one JSON log line per row, for a log collector)."""

    progress: Progress = field(default_factory=NullProgress)
    on_result: Callable[[RowResult], None] | None = None


@dataclass(frozen=True, slots=True)
class Timing:
    """Time as the run sees it: the clock, the sleep, the randomness of backoff and the rate controller. A test
    hands in fakes to move time instead of waiting; None: the real ones."""

    clock: Clock | None = None
    sleep: Sleep | None = None
    rng: random.Random | None = None
    rate_controller: RateController | None = None


@dataclass(slots=True)
class RunOutcome:
    exit_code: int  # per the contract: 0, 1, 3 (denied) or 130 (errors that stop the run earlier are raised instead)
    counts: dict[str, int]  # per status value, the statuses of a results workbook
    results_path: Path
    interrupted: bool
    correlation_id: str
    not_reached: int  # rows to create never sent because the run stopped first (each listed, pending)
    stats: PipelineStats
    summary: Summary
    passwords_written: Path | None = None  # the --generate-passwords workbook, if this run wrote it
    denied: str | None = None  # the service refused a write for lack of permission: its line (roles needed)


class SheetRun:
    """One run of one sheet. Build it, hand `stop` to the signal handlers, then `await run()`.

    Errors that make going on pointless are raised before any row is sent (errors.py: unreadable input,
    exit 2; refused token, unknown customer, unreachable service, exit 3); after that, every row's outcome is
    in the results workbook and the outcome's exit code.
    """

    def __init__(
        self,
        input_path: Path,
        *,
        results: Path,
        connection: Connection,
        correlation_id: str,
        options: RunOptions | None = None,
        journal: Journal | None = None,
        reporting: Reporting | None = None,
        timing: Timing | None = None,
    ) -> None:
        self.input_path = Path(input_path)
        self.results = Path(results)
        self.options = options or RunOptions()
        self.correlation_id = correlation_id
        self.source_name = connection.source_name
        self.passwords_written: Path | None = None  # named in the Summary only once it exists
        reporting = reporting or Reporting()
        timing = timing or Timing()
        self._on_result = reporting.on_result
        self._progress = reporting.progress
        self._facts = connection.facts
        self._graph = connection.graph
        self._recorder = journal if isinstance(journal, RunRecorder) else None
        self._journal_run: int | None = None
        # the customers' SKUs once the facts are read; the units the run used (through Graph: one request a row)
        self.licenses = LicenseBook(one_request=self.options.via == VIA_GRAPH)
        self.pipeline = Pipeline(
            user_service(connection, self.options.via),
            options=PipelineOptions(
                concurrency=self.options.concurrency,
                rate=self.options.rate,
                attempts=self.options.attempts,
                backoff=self.options.backoff,
            ),
            customer=self.options.customer,
            graph=connection.graph,
            tokens=connection.tokens,
            journal=journal,
            progress=reporting.progress,
            to_result=to_result,
            rate_controller=timing.rate_controller,
            clock=timing.clock,
            sleep=timing.sleep,
            rng=timing.rng,
        )
        self._license_steps = license_steps_of(connection, self.licenses)

    def stop(self) -> None:
        """Ctrl-C / SIGTERM: no new row is sent; what finished is written and the run exits 130."""
        self.pipeline.stop()

    def abort(self) -> None:
        """The second Ctrl-C / SIGTERM: also cut the requests in flight short; the results are still written
        (those rows say they may exist) and the run exits 130."""
        self.pipeline.abort()

    async def run(self) -> RunOutcome:
        started = datetime.now(UTC)
        phase_start = time.monotonic()
        dry = self.options.dry_run()
        sheet = read_sheet(self.input_path, sheet=self.options.sheet)
        check_sheet(sheet, dry)
        facts = await gather_facts(sheet, self._facts, dry.customer, self._progress)
        if self._recorder is None:
            return await self._run(sheet, facts, started, phase_start)
        try:
            self._journal_run = self._recorder.begin_run(
                input_path=sheet.path.resolve(),
                input_sha256=_sha256(sheet.path),
                customer=self.options.customer or ", ".join(facts),
                correlation_id=self.correlation_id,
                command="run",
            )
        except (InputError, OwnFailure, sqlite3.Error) as exc:  # the journal opened, then took no write (disk full)
            raise OwnFailure(f"cannot record the run in the journal ({failure_text(exc)}); nothing was sent") from exc
        try:
            outcome = await self._run(sheet, facts, started, phase_start)
        except BaseException as exc:
            if isinstance(exc, BulkOnboardError):
                code: int | None = exc.exit_code
            elif isinstance(exc, KeyboardInterrupt | asyncio.CancelledError):
                code = EXIT_INTERRUPTED
            else:
                code = None  # a bug: `journal show` says the run ended without an exit code
            # Recording the end of a failed run must never hide why it failed (the journal may be the cause).
            with contextlib.suppress(Exception):
                self._recorder.end_run(counts=None, exit_code=code)
            raise
        try:
            self._recorder.end_run(counts=outcome.counts, exit_code=outcome.exit_code)
        except (BulkOnboardError, sqlite3.Error, OSError) as exc:
            raise OwnFailure(
                f"the results are in {self.results}, but the journal could not record the run's end "
                f"({failure_text(exc)}); what it recorded before each request is kept, so the next run with it still "
                "creates nobody twice"
            ) from exc
        return outcome

    async def _run(
        self, sheet: Sheet, facts: dict[str, CustomerFacts], started: datetime, phase_start: float
    ) -> RunOutcome:
        validation, rows = await self._ready(sheet, facts)
        validation_seconds = time.monotonic() - phase_start
        sending_start = time.monotonic()
        with ReportWriter(self.results, kind="results", extra_columns=tuple(sheet.present)) as writer:
            written = Tally()
            observe = self._on_result

            def sink(result: RowResult) -> None:
                writer.add(result)
                written.add(result)
                if observe is not None:
                    observe(result)

            try:
                stats = await self.pipeline.run(rows, sink, total=len(validation))
            except BaseException as failure:
                # Never lose what finished: the rows already written, the ones finished but held back for an
                # earlier row, and a line for every other, then a Summary that says the run failed.
                saved = self._close_after_failure(writer, validation, written, failure, sheet, facts, started)
                own = self._own_failure(failure, results_saved=saved)
                if own is None:
                    raise
                raise own from failure
            sending_seconds = time.monotonic() - sending_start
            counts = _result_counts(stats)
            extra = run_details(
                self.options,
                stats,
                source=self.source_name,
                discovered=getattr(self.pipeline.rate_controller, "discovered_rate", None),
                journal_run=self._journal_run,
                passwords=self.passwords_written,
                seconds=(validation_seconds, sending_seconds),
            )
            summary = self._summary(sheet, facts, started, counts, dict(stats.problem_counts), extra)
            try:
                writer.close(summary)
            except WorkbookNotWritten as exc:
                raise OwnFailure(self._results_lost(exc.reason)) from exc
            except OSError as exc:  # the workbook turns its own write failures into the above; this is a stray
                raise OwnFailure(self._results_lost(exc.strerror or str(exc))) from exc

        return self._outcome(stats, counts, summary)

    async def _ready(
        self, sheet: Sheet, facts: dict[str, CustomerFacts]
    ) -> tuple[Validation, Iterable[CheckedRow]]:
        """Validation's verdicts, the service asked once, passwords made, and the plan of steps the sheet's
        columns call for: license, then profile, then manager (a plan it cannot keep: exit 2, nothing sent)."""
        validation = run_validation(sheet, facts, self.options.dry_run())
        self.licenses.learn(facts)  # the SKUs the license steps resolve rows against: read once, with the facts
        plan = plan_for(sheet.present, self._graph, facts, via=self.options.via)
        to_send = validation.counts.get(Status.VALID, 0)
        if to_send and not self.pipeline.stopping:
            await self.pipeline.preflight(facts)
        rows: Iterable[CheckedRow] = validation
        if to_send and self.options.generated_passwords is not None and not self.pipeline.stopping:
            rows, self.passwords_written = with_generated_passwords(validation, self.options.generated_passwords)
        self.pipeline.plan_steps(**plan.for_pipeline(validation, self.passwords_written, before=self._license_steps))
        return validation, rows

    def _summary(
        self,
        sheet: Sheet,
        facts: Mapping[str, CustomerFacts],
        started: datetime,
        counts: dict[str, int],
        problem_counts: dict[str, int],
        extra: Mapping[str, str | int | float],
    ) -> Summary:
        return Summary(
            kind="results",
            input_path=sheet.path,
            customer=self.options.customer or ", ".join(facts),
            started=started,
            finished=datetime.now(UTC),
            counts=counts,
            correlation_id=self.correlation_id,
            problem_counts=problem_counts,
            extra=dict(extra),
            units_used=self.licenses.usage(),
        )

    def _outcome(self, stats: PipelineStats, counts: dict[str, int], summary: Summary) -> RunOutcome:
        return RunOutcome(
            exit_code=_exit_code(stats, counts),
            counts=counts,
            results_path=self.results,
            interrupted=stats.interrupted,
            correlation_id=self.correlation_id,
            not_reached=stats.not_reached,
            stats=stats,
            summary=summary,
            passwords_written=self.passwords_written,
            denied=stats.denied,
        )

    def _close_after_failure(
        self,
        writer: ReportWriter,
        validation: Validation,
        written: Tally,
        failure: BaseException,
        sheet: Sheet,
        facts: Mapping[str, CustomerFacts],
        started: datetime,
    ) -> bool:
        """The results of a run that failed: what finished, and for every other row what is known of it.

        Rows the pipeline had taken may have been sent (their outcome is unknown: they may exist); rows it never
        took were not sent. Invalid and skipped rows keep validation's words. If even this fails (the workbook
        itself may be the cause), the workbook is discarded and False comes back: the caller's line then says how
        to rebuild them from the journal."""
        why = failure_text(failure)
        held_back, first = self.pipeline.held_back(), self.pipeline.held_first()  # managers first: by sheet row
        taken = self.pipeline.stats.rows
        try:
            for position, checked in enumerate(validation):
                if position >= written.rows:
                    result = held_back.get(position) or first.get(checked.user.row)
                    result = result or unfinished(checked, why, taken=position < taken)
                    writer.add(result)
                    written.add(result)
            counts = {status.value: written.counts.get(status.value, 0) for status in RESULT_STATUSES}
            extra: dict[str, str | int | float] = {
                "source": self.source_name,
                "run failed": why,
                "rows sent": self.pipeline.stats.sent_rows,
                **({"generated passwords": str(self.passwords_written)} if self.passwords_written else {}),
            }
            writer.close(self._summary(sheet, facts, started, counts, written.problem_counts, extra))
        except Exception:
            writer.discard()
            return False
        return True

    def _own_failure(self, failure: BaseException, *, results_saved: bool) -> OwnFailure | None:
        """What a failure once sending has begun means to the caller: bulkonboard's own failure (exit 4: the journal
        or the results could not be written), with one line saying where what finished is. None for a failure that
        keeps its own meaning: an interruption; a refused sign-in or an unreachable service (exit 3); a bug, which
        goes up as itself (the CLI gives it exit 4 too, and BULKONBOARD_DEBUG=1 its traceback)."""
        if not isinstance(failure, BulkOnboardError | sqlite3.Error | OSError):
            return None
        if isinstance(failure, BulkOnboardError) and failure.exit_code == EXIT_AUTH_OR_CONNECTION:
            return None
        if results_saved:
            return OwnFailure(
                f"the run stopped: {failure_text(failure)}; no further row was sent, and the results of what "
                f"finished are in {self.results}"
            )
        if isinstance(failure, OSError):  # most likely the workbook's own writes: the system's words say enough
            return OwnFailure(self._results_lost(failure.strerror or type(failure).__name__))
        return OwnFailure(self._results_lost(failure_text(failure)))

    def _results_lost(self, why: str) -> str:
        """The one line for results that could not be written: what failed, and how to get them back."""
        line = f"{self.results}: cannot write the results workbook ({why}); "
        journal_path = getattr(self._recorder, "path", None)
        if self._recorder is None or journal_path is None or self._journal_run is None:
            return line + "the tenant holds what was created: list its users to see the outcome"
        if not self.options.journal_kept:
            return line + f"the throwaway journal of this run (run {self._journal_run}) goes with it: run again"
        return line + (
            f"nothing is lost: the journal holds what the service did; rebuild them with "
            f"`bulkonboard journal results --journal {journal_path} --run {self._journal_run} OUT.xlsx`"
        )


def _result_counts(stats: PipelineStats) -> dict[str, int]:
    """Per status, as the Summary counts them; `partial` (a step after create fell short) only when a row is."""
    counts = {status.value: stats.counts.get(status.value, 0) for status in RESULT_STATUSES}
    if stats.counts.get(Status.PARTIAL.value):
        counts[Status.PARTIAL.value] = stats.counts[Status.PARTIAL.value]
    return counts


def _exit_code(stats: PipelineStats, counts: Mapping[str, int]) -> int:
    """The contract's exit code for a run that wrote its results. Pending rows never make exit 1 on their own: they
    come with a stop (130) or a permission refusal (3)."""
    if stats.denied:
        return EXIT_AUTH_OR_CONNECTION  # the run stopped itself: no role to write with (whoever stopped it too)
    if stats.interrupted:
        return EXIT_INTERRUPTED  # a person or a scheduler stopped it (a failed sign-in mid-run: exit 1)
    if counts[Status.INVALID.value] or counts[Status.FAILED.value] or stats.counts.get(Status.PARTIAL.value):
        return EXIT_ROWS_FAILED  # partial: a step after create failed (the contract's additions: exit 1)
    return EXIT_OK


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


async def run_sheet(input_path: Path, **kwargs: Any) -> RunOutcome:
    """`SheetRun(input_path, **kwargs).run()`, for callers that need no stop switch."""
    return await SheetRun(input_path, **kwargs).run()

