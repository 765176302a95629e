"""Creates the valid rows through Partner Center with a pool of workers; results stream out in input order.

The sending stage, by concern (each its own module):
- flow.py: feeder, bounded queue, workers, reorder buffer: memory stays flat however long the sheet.
- rows.py: one row's way through its plan (what the journal remembers decides where it starts), one handler per
  outcome; create.py: the create step; steps.py: the `Step` protocol and the runner of the steps after create.
- reconcile.py: the lookups that settle a create whose answer says nothing for sure.
- sender.py: what every request shares (the stop reason, pace, the 429 gate, the token); retry.py: when to try
  again and how fast to send; messages.py: the words of the problems cell.

This module puts them together. The rules a run keeps:
- a limiter holds the rate; the requests in flight follow it (concurrency.py: rate x latency with headroom,
  `concurrency` at most); a 429 closes a gate every worker
  waits on before sending (`retry.PauseGate`). A wait of `retry.LONG_WAIT` seconds or more is one log line.
- Each row has one MS-RequestId, kept across all of its retries and runs: the service's idempotency key. With a
  journal, a row is recorded as sent with its request id, durably, before the request leaves; each later step
  likewise (docs/ARCHITECTURE.md, "The plan of steps").
- Every row's outcome is a `RowResult` value; only a bug (or the sink, or the journal, failing) stops the run with
  an exception. A token the sign-in service cannot give is a row's outcome too: unreachable, it is retried as a
  connection that could not be made; refused (a revoked refresh token an hour in), the row fails and the run
  takes no new row, since every later one would fail the same way.
- `stop()` (Ctrl-C, SIGTERM) takes no new row and sends nothing new; a request in flight gets its answer,
  but a retry it would need is abandoned. `abort()` (the second signal) also cuts the requests in flight
  short. Every row of the input still gets a result, in order.

Waiting goes through the injected `clock` and `sleep`; the limiter keeps the loop's own time (aiolimiter
takes no clock), so tests that fake time run with `rate=math.inf`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable, Sequence

from ..model import RowResult
from ..progress import NullProgress, Progress, Slowdowns
from ..protocols import CheckedRowLike, Journal, PriorOutcome, PriorState, StepPrior, StepState, TokenProvider
from .create import CreateStep
from .figures import (
    DEFAULT_CONCURRENCY,
    DEFAULT_LOOKUP_RETRIES,
    DEFAULT_MAX_THROTTLED,
    PipelineOptions,
    PipelineStats,
)
from .flow import Flow
from .messages import API_UNREACHABLE, RUN_INTERRUPTED
from .ordering import ManagerDone, ManagersFirst
from .ports import NullJournal, UserDirectory, UserService
from .reconcile import Reconciler
from .restore import RestoreStep, RestoringService
from .retry import (
    DEFAULT_RATE,
    BucketPacer,
    Clock,
    FixedRate,
    RateController,
    RetryPolicy,
    Sleep,
    SlowStartRate,
)
from .rows import RowRunner
from .sender import Sender, StopReason, retry_on_trouble
from .steps import PlanRunner, RowState, Step, StepOutcome

#: The fixed-rate pacer, under the name the tests knew it by.
_Pacer = BucketPacer


class Pipeline:
    """One run's worker pool. Build it anywhere; the loop-bound parts are made inside `run()`.

    `steps`: the row's plan after create (the license steps; restore, profile, manager are next), each run at
    most once per row across runs of one journal (steps.py)."""

    def __init__(
        self,
        client: UserService,
        *,
        options: PipelineOptions | None = None,
        customer: str = "",
        graph: UserDirectory | None = None,
        tokens: TokenProvider | None = None,
        journal: Journal | None = None,
        progress: Progress | None = None,
        to_result: Callable[[CheckedRowLike], RowResult] | None = None,
        rate_controller: RateController | None = None,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
        rng: random.Random | None = None,
        steps: Sequence[Step] = (),
    ) -> None:
        self.options = options or PipelineOptions()
        self._client = client
        self._journal: Journal = journal or NullJournal()
        self._progress: Progress = progress or NullProgress()
        clock = clock or _loop_time
        self._sender = Sender(
            options=self.options,
            tokens=tokens,
            new_controller=_controllers(self.options.rate, clock),
            controller=rate_controller,
            policy=_retry_policy(self.options, rng),
            clock=clock,
            sleep=sleep or asyncio.sleep,
        )
        reconciler = Reconciler(self._sender, client, graph)
        self._plan = PlanRunner(steps, self._sender, self._journal)
        self._rows = RowRunner(
            sender=self._sender,
            journal=self._journal,
            create=CreateStep(self._sender, client, self._journal, reconciler),
            restore=_restore_step(client, self._sender, self._journal),
            reconciler=reconciler,
            plan=self._plan,
            customer=customer,
            to_result=to_result or _plain_result,
            journal_path=_path_of(journal),
        )
        self._first = ManagersFirst(self._rows, concurrency=self.options.concurrency, default_customer=customer)
        self._flow = Flow(
            self.options,
            self._sender.stats,
            self._progress,
            self._first,
            self._sender,
            customer_of=lambda checked: checked.user.customerTenantId or customer,
        )
        self._first_rows: Sequence[Sequence[CheckedRowLike]] = ()
        self._on_first: ManagerDone | None = None
        self._started = False

    def plan_steps(
        self,
        steps: Sequence[Step],
        *,
        first: Sequence[Sequence[CheckedRowLike]] = (),
        on_first: ManagerDone | None = None,
    ) -> None:
        """The plan after create, known once the sheet is read (its columns); before run(). `first`: rows to
        finish before all others, level by level (managers before the rows they manage: ordering.py); `on_first`
        hears of each."""
        self._plan.steps = tuple(steps)
        self._first_rows, self._on_first = first, on_first

    @property
    def stats(self) -> PipelineStats:
        return self._sender.stats

    # -- control

    def stop(self) -> None:
        """Take no new row and send nothing new; requests in flight get their answers. Safe from a signal
        handler (in the loop's thread) and before `run()`."""
        self._sender.stop_taking_rows(StopReason.STOPPED)

    def abort(self) -> None:
        """stop(), and cut the requests in flight short (the second Ctrl-C / SIGTERM): their rows are `pending`
        (`run.interrupted`), "may exist" since a request cut short may have reached the service. `run()` still
        returns normally, every row with a result, so the results are written for what finished."""
        self._sender.abort()

    @property
    def stop_reason(self) -> StopReason:
        return self._sender.stop_reason

    @property
    def stopping(self) -> bool:
        return self._sender.stopping

    @property
    def rate_controller(self) -> RateController:
        """The first customer's rate controller (the run's only one when the sheet has one customer)."""
        return self._sender.pacing.first_controller

    async def preflight(self, customers: Iterable[str]) -> None:
        """Ask the service once per customer before any row is sent; its errors (errors.AuthError,
        CustomerNotFound, ServiceUnavailable: exit 3) stop the run right here."""
        for customer in dict.fromkeys(c for c in customers if c):
            await self._client.preflight(customer)

    # -- the run

    async def run(
        self,
        rows: Iterable[CheckedRowLike],
        sink: Callable[[RowResult], None],
        *,
        total: int | None = None,
    ) -> PipelineStats:
        """Send the valid rows; hand every row's result to `sink` in input order. Runs once."""
        if self._started:
            raise RuntimeError("a pipeline runs once")
        self._started = True
        self._sender.start()
        stats = self.stats
        self._progress.follow(lambda: Slowdowns(retries=stats.retries, throttled=stats.throttled))
        self._progress.start(total, "creating users")
        try:
            await self._first.run_first(self._first_rows, self._on_first)
            await self._flow.run(rows, sink)
        except BaseExceptionGroup as failures:  # a bug or a failing sink: show it as itself
            raise _first_leaf(failures) from None
        finally:
            self._progress.stop()
            self._journal.flush()
            stats.rate_settled = self._sender.pacing.first_controller.current_rate
            stats.most_in_flight = self._sender.in_flight.most
            self._sender.pacing.figures_into(stats)
            stats.interrupted = self._sender.stop_reason >= StopReason.STOPPED
            stats.halted = self._sender.halt_text
            denied = self._sender.denied
            stats.denied = denied.message if denied is not None else None
        return stats

    def held_first(self) -> dict[int, RowResult]:
        """Results of rows run before the others (managers first: ordering.py) not yet handed to the sink, by sheet
        row number. After `run()` failed, the caller writes them rather than call those rows unsent."""
        return self._first.held()

    def held_back(self) -> dict[int, RowResult]:
        """Results that are finished but wait for an earlier row before they may go to the sink, by position
        in the input. After `run()` failed, the caller writes them rather than lose what finished."""
        return dict(self._flow.buffer)


def _controllers(rate: float | None, clock: Clock) -> Callable[[], RateController]:
    """Each customer's own rate controller: the rate asked for, or slow start to find what the service allows."""
    return lambda: FixedRate(rate, clock=clock) if rate is not None else SlowStartRate(DEFAULT_RATE, clock=clock)


def _restore_step(client: UserService, sender: Sender, journal: Journal) -> RestoreStep | None:
    """Who restores a soft-deleted user (`--restore-deleted`): Partner Center, which found it in the recycle bin,
    also when Graph creates the users (`--via graph` for a partner: the client names it as its `restorer`)."""
    restorer = client if isinstance(client, RestoringService) else getattr(client, "restorer", None)
    return RestoreStep(sender, restorer, journal) if isinstance(restorer, RestoringService) else None


def _retry_policy(options: PipelineOptions, rng: random.Random | None) -> RetryPolicy:
    """Retry only on trouble worth retrying (sender.retry_on_trouble), with seeded jitter unless told otherwise."""
    return RetryPolicy(
        on=retry_on_trouble, attempts=options.attempts, backoff=options.backoff, rng=rng or random.Random(0)
    )


def _plain_result(checked: CheckedRowLike) -> RowResult:
    """A result without the row's other fields (`display`): the runner hands in the workbook's own builder."""
    user = checked.user
    return RowResult(
        row=user.row,
        userPrincipalName=user.userPrincipalName,
        status=checked.status,
        userId=checked.existing_user_id,
        problems=checked.problems,
        customerTenantId=user.customerTenantId,
    )


def _path_of(journal: Journal | None) -> str | None:
    """The journal's file, for advice that names it (`journal forget --journal PATH`); None for a journal that has
    none (a test's, or none at all)."""
    path = getattr(journal, "path", None)
    return str(path) if path is not None else None


def _loop_time() -> float:
    """The running loop's clock: the one asyncio.sleep and the limiter count in."""
    return asyncio.get_running_loop().time()


def _first_leaf(group: BaseExceptionGroup) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


__all__ = (
    "API_UNREACHABLE",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_LOOKUP_RETRIES",
    "DEFAULT_MAX_THROTTLED",
    "RUN_INTERRUPTED",
    "CheckedRowLike",
    "Journal",
    "NullJournal",
    "Pipeline",
    "PipelineOptions",
    "PipelineStats",
    "PriorOutcome",
    "PriorState",
    "RowState",
    "Step",
    "StepOutcome",
    "StepPrior",
    "StepState",
    "StopReason",
    "UserDirectory",
    "UserService",
    "_Pacer",
)
