"""Creates the valid rows through Partner Center with a pool of workers; results stream out in input order.

Shape of a run:

    rows (validation's iterator) ──► feeder ──► bounded queue ──► N workers ──► reorder buffer ──► sink
                                        └── invalid / skipped rows: straight to the reorder buffer ──┘

- Memory stays flat however long the sheet: the feeder takes a row from the input only when fewer than
  `window` rows are between the input and the sink (queued, in flight, or finished but waiting for an earlier
  row), so a slow row holds up at most `window` results, never the whole run.
- `concurrency` workers bound the requests in flight; a limiter (aiolimiter) holds the rate; a 429 closes a
  gate every worker waits on before sending (`retry.PauseGate`).
- Each row has one MS-RequestId, kept across all of its retries: it is the service's idempotency key. A
  retry, or a replay after an answer that never came, that is refused as a duplicate UPN is most likely our
  own earlier success, so the user is looked up and the row is `created` with the id found.
- With a journal, a row is recorded as sent with its request id, durably, before the request leaves. A row an
  earlier run created is skipped and never sent again; one an earlier run sent without learning the outcome
  (killed, answer lost) is sent again with the SAME request id, and a row found in the tenant that the journal
  knows as ours is said to be ours. Only an outcome known for sure is recorded: a row that may exist and could
  not be confirmed stays "sent" for the next run.
- A create answered 200 for another UPN than the one sent is never taken (its id is someone else's): the UPN is
  looked up, and the row is settled by what the lookup shows, or fails `api.mismatch` and stays in doubt.
- A wait of `retry.LONG_WAIT` seconds or more (the 429 gate, a Retry-After, backoff) is one log line with its
  reason, however many rows wait behind it (`retry.WaitLog`).
- Every row's outcome is a `RowResult` value; only a bug (or the sink, or the journal, failing) stops the run with
  an exception. A token the sign-in service cannot give is a row's outcome too: unreachable, it is retried as a
  connection that could not be made; refused (a revoked refresh token an hour in), the row fails and the run
  takes no new row, since every later one would fail the same way.
- `stop()` (Ctrl-C, SIGTERM) takes no new row and sends nothing new; a request in flight gets its answer,
  but a retry it would need is abandoned. `abort()` (the second signal) also cuts the requests in flight
  short. Every row of the input still gets a result, in order: those left unfinished or never reached a
  `run.interrupted` problem saying whether they may exist, so nobody has to guess. A row stopped after answers
  that prove nothing was created is recorded as such, so the next run sends it afresh under a new request id;
  only a row whose request may have created the user stays "sent" for the next run to reconcile.

Waiting goes through the injected `clock` and `sleep`; the limiter keeps the loop's own time (aiolimiter
takes no clock), so tests that fake time run with `rate=math.inf`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import math
import random
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

from aiolimiter import AsyncLimiter

from ..defaults import DEFAULT_CONCURRENCY  # re-exported: its old home
from ..errors import BulkOnboardError, ServiceUnavailable
from ..model import Code, Problem, RowResult, Status, UserRow, api_code
from ..progress import NullProgress, Progress
from ..protocols import CheckedRowLike, Journal, PriorOutcome, PriorState  # re-exported: their old home
from ..service.partnercenter import (
    ApiError,
    Audience,
    CreatedUser,
    MismatchedAnswer,
    Refused,
    RequestError,
    Throttled,
    TokenProvider,
    TransportError,
    Unauthorized,
)
from .retry import (
    DEFAULT_ATTEMPTS,
    DEFAULT_RATE,
    Backoff,
    Clock,
    FixedRate,
    Pacer,
    PauseGate,
    RateController,
    RetryPolicy,
    Sleep,
    SlowStartRate,
    WaitLog,
    retry_on_service_trouble,
)

#: The feeder hands the loop over at least this often, whatever the input.
_FEED_TURN = 256
#: A row throttled this many times is not going to get through this run (429s do not use up attempts).
DEFAULT_MAX_THROTTLED = 50
#: Lookups repeated when a user an earlier request may have created is not found: Graph is eventually
#: consistent, and a user created a moment ago may not show yet. Waits follow the backoff's ceilings
#: (1, 2, 4 s by default).
DEFAULT_LOOKUP_RETRIES = 3

T = TypeVar("T")

#: The pipeline's own problem codes (docs/CONTRACT-ADDITIONS.md), named here for its callers and tests.
API_UNREACHABLE = Code.API_UNREACHABLE
RUN_INTERRUPTED = Code.RUN_INTERRUPTED


# ---------------------------------------------------------------------------------------------------------------
# what the pipeline depends on: protocols, so tests hand in fakes and the client can change underneath


class UserService(Protocol):
    """Partner Center as the pipeline uses it (`partnercenter.PartnerCenterClient`)."""

    async def preflight(self, customer_id: str) -> dict[str, Any]: ...

    async def create_user(self, customer_id: str, user: UserRow, *, request_id: str) -> CreatedUser: ...

    async def find_user_by_upn(self, customer_id: str, upn: str) -> dict[str, Any] | None: ...


class UserDirectory(Protocol):
    """Graph's user lookup (`partnercenter.GraphClient`): one GET instead of paging through every user."""

    async def get_user(self, tenant: str, upn: str) -> dict[str, Any] | None: ...


class NullJournal:
    """No memory: every run starts from the sheet alone."""

    def prior(self, customer: str, upn_key: str) -> PriorState | None:
        return None

    async def sending(self, customer: str, upn_key: str, row: int, request_id: str) -> None:
        pass

    def finished(self, customer: str, upn_key: str, result: RowResult) -> None:
        pass

    def flush(self) -> None:
        pass


# ---------------------------------------------------------------------------------------------------------------
# options and figures


@dataclass(frozen=True, slots=True)
class PipelineOptions:
    concurrency: int = DEFAULT_CONCURRENCY  # requests in flight at most
    # users/s; None: start at retry.DEFAULT_RATE and follow the 429s; math.inf: no pacing at all
    rate: float | None = None
    attempts: int = DEFAULT_ATTEMPTS  # per row, for failures that count (5xx, no answer)
    max_throttled: int = DEFAULT_MAX_THROTTLED  # 429s per row before giving up on it
    lookup_retries: int = DEFAULT_LOOKUP_RETRIES  # lookups again when a user that may exist is not found
    backoff: Backoff = Backoff()
    queue_size: int | None = None  # rows waiting for a worker; default 2 x concurrency
    window: int | None = None  # rows between input and sink; default max(256, 4 x concurrency)

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.rate is not None and not self.rate > 0:
            raise ValueError("the rate must be a positive number of users per second")

    @property
    def effective_queue_size(self) -> int:
        return self.queue_size or 2 * self.concurrency

    @property
    def effective_window(self) -> int:
        # At least one row per worker plus a full queue, or the workers would starve behind the window.
        floor = self.concurrency + self.effective_queue_size + 1
        return max(self.window or max(256, 4 * self.concurrency), floor)


@dataclass(slots=True)
class PipelineStats:
    """Figures for the summary; times are the pipeline's clock."""

    counts: dict[str, int] = field(default_factory=lambda: {s.value: 0 for s in Status})
    problem_counts: dict[str, int] = field(default_factory=dict)
    rows: int = 0  # taken from the input: each got a result, including those listed as not reached
    sent_rows: int = 0  # rows with at least one create request
    requests: int = 0  # create requests sent
    throttled: int = 0  # 429 answers
    retries: int = 0  # create requests that repeated an earlier one of the same row
    lookups: int = 0  # users looked up after a duplicate refusal or an unknown outcome
    not_finished: int = 0  # rows taken but left unfinished by stop() / abort()
    not_reached: int = 0  # rows to create that were never sent because the run stopped first (listed failed)
    max_pending: int = 0  # most rows between input and sink at once (bounded by the window)
    first_send: float | None = None
    last_answer: float | None = None
    rate_settled: float = 0.0  # users/s the rate controller ended at
    interrupted: bool = False  # stopped by a person or a scheduler (stop() / abort()): exit 130
    halted: str | None = None  # why the run stopped taking rows on its own (the sign-in failed mid-run)

    @property
    def sending_seconds(self) -> float:
        if self.first_send is None or self.last_answer is None:
            return 0.0
        return max(0.0, self.last_answer - self.first_send)

    @property
    def achieved_rate(self) -> float | None:
        """Created users per second over the sending phase (first request to last answer)."""
        seconds = self.sending_seconds
        created = self.counts.get(Status.CREATED.value, 0)
        return created / seconds if seconds > 0 and created else None


# ---------------------------------------------------------------------------------------------------------------
# the pipeline


class _Stopped(Exception):
    """A wait was cut short by stop(): the row is left unfinished."""


class _Aborted(_Stopped):
    """abort() cut a request short: it may have reached the service before it was."""


class _SignInFailed(Exception):
    """No token, so no request left. Not a `RequestError`: nothing reached the service, and the row's send is
    not counted. `reason` is the sign-in service's own words (they say what to do)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _SignInUnreachable(_SignInFailed):
    """The sign-in service could not be reached (a network blip): tried again after our backoff, and counted
    against the row's attempts like a connection that could not be made."""


class _SignInRefused(_SignInFailed):
    """The sign-in service refused (a revoked refresh token, an expired secret). Retrying will not help, and
    every later row would meet the same refusal: the run halts."""


#: What the last try of a row ran into: the service's failure, or no token to send it with.
_Failure = RequestError | _SignInFailed


class StopReason(enum.IntEnum):
    """Why the run takes no new row, from none to the most urgent; a later reason only ever raises it (a person's
    stop after a halt is a stop: exit 130)."""

    NONE = 0
    HALTED = 1  # the run stopped itself: every later row would fail the same way (the halt text says why)
    STOPPED = 2  # stop(): a person or a scheduler asked; requests in flight get their answers
    ABORTED = 3  # abort(): asked again; requests in flight are cut short


def _retry_on_trouble(failure: BaseException) -> bool | float:
    """`retry_on_service_trouble`, and a sign-in service out of reach: no request left, try again after our
    backoff."""
    if isinstance(failure, _SignInUnreachable):
        return True
    return retry_on_service_trouble(failure)


@dataclass(slots=True)
class _Attempt:
    """One row on its way: what is needed to retry it and to say honestly what happened."""

    customer: str
    user: UserRow
    request_id: str
    maybe_created: bool = False  # an earlier request of this row may have created the user
    refused: bool = False  # finally refused (not as a duplicate): the service created nothing
    sends: int = 0
    failures: int = 0  # counted against the attempts
    throttles: int = 0
    refreshed: bool = False
    last_failure: _Failure | None = None
    journaled: bool = False  # the journal holds "sent" for this row from this run
    cut_short: bool = False  # abort() cancelled its request in flight


class _Pacer:
    """`--rate R` held by aiolimiter: a bucket of two requests refilled at R a second.

    Why two: a bucket of one forgets every late wake-up, and the run drifts below R (measured 0.97 R at 50/s,
    0.967 R at 100/s with 250 ms answers); a bucket of two makes up the lateness (1.002 R) while any one-second
    window sees at most R + 1 requests, so a service whose limit is above R never answers 429. Only for a fixed
    rate: an adaptive one, which changes many times a second, is paced by `retry.Pacer` (a new aiolimiter per
    change would let its fresh bucket through at once).
    """

    BUCKET = 2

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._limiter = None if math.isinf(rate) else AsyncLimiter(self.BUCKET, self.BUCKET / rate)

    def ready(self) -> bool:
        return self._limiter is None or self._limiter.has_capacity()

    async def acquire(self) -> None:
        if self._limiter is not None:
            await self._limiter.acquire()


class Pipeline:
    """One run's worker pool. Build it anywhere; the loop-bound parts are made inside `run()`."""

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
    ) -> None:
        self.options = options or PipelineOptions()
        self._client = client
        self._customer = customer
        self._graph = graph
        self._tokens = tokens
        self._journal: Journal = journal or NullJournal()
        self._progress: Progress = progress or NullProgress()
        self._to_result = to_result or _plain_result
        self._clock: Clock = clock or _loop_time
        self._controller: RateController = rate_controller or (
            FixedRate(self.options.rate)
            if self.options.rate is not None
            else SlowStartRate(DEFAULT_RATE, clock=self._clock)
        )
        self._sleep: Sleep = sleep or asyncio.sleep
        self._policy = RetryPolicy(
            on=_retry_on_trouble,
            attempts=self.options.attempts,
            backoff=self.options.backoff,
            rng=rng or random.Random(0),
        )
        self.stats = PipelineStats()
        self._waits = WaitLog(self._clock)
        self._stop = StopReason.NONE
        self._halt_text: str | None = None  # why the run stopped itself, for the rows it did not send
        self._started = False
        # made inside run(), in the running loop: set with the first stop reason, wakes every wait
        self._stop_event: asyncio.Event | None = None
        # abort() cancels the workers awaiting a request (`_in_flight`); `_cut` marks the cancellations it asked
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._cut: set[asyncio.Task[Any]] = set()
        self._buffer: dict[int, RowResult] = {}  # finished, waiting for an earlier row: by input position
        self._token_lock: asyncio.Lock | None = None
        self._token_generation = 0

    # -- control

    def stop(self) -> None:
        """Take no new row and send nothing new; requests in flight get their answers. Safe from a signal
        handler (in the loop's thread) and before `run()`."""
        self._stop_taking_rows(StopReason.STOPPED)

    def abort(self) -> None:
        """stop(), and cut the requests in flight short (the second Ctrl-C / SIGTERM): their rows are failed
        `run.interrupted`, "may exist" since a request cut short may have reached the service. `run()` still
        returns normally, every row with a result, so the results are written for what finished."""
        self._stop_taking_rows(StopReason.ABORTED)
        for task in self._in_flight - self._cut:
            self._cut.add(task)
            task.cancel()

    def _halt(self, reason: str) -> None:
        """The run stops taking rows on its own (every later row would fail the same way); in flight finish."""
        if self._halt_text is None:
            self._halt_text = reason
        self._stop_taking_rows(StopReason.HALTED)

    def _stop_taking_rows(self, reason: StopReason) -> None:
        self._stop = max(self._stop, reason)
        if self._stop_event is not None:
            self._stop_event.set()

    @property
    def stop_reason(self) -> StopReason:
        return self._stop

    @property
    def stopping(self) -> bool:
        return self._stop is not StopReason.NONE

    @property
    def rate_controller(self) -> RateController:
        return self._controller

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
        self._gate = PauseGate(self._clock)
        self._pacer: _Pacer | Pacer = (
            _Pacer(self._controller.current_rate)
            if isinstance(self._controller, FixedRate)
            else Pacer(self._controller.current_rate, clock=self._clock, sleep=self._sleep)
        )
        self._stop_event = asyncio.Event()
        if self.stopping:
            self._stop_event.set()
        self._token_lock = asyncio.Lock()
        self._queue: asyncio.Queue[tuple[int, CheckedRowLike] | None] = asyncio.Queue(
            self.options.effective_queue_size
        )
        self._window = asyncio.Semaphore(self.options.effective_window)
        self._buffer = {}
        self._next_out = 0
        self._sink = sink

        self._progress.start(total, "creating users")
        try:
            async with asyncio.TaskGroup() as group:
                workers = [group.create_task(self._work()) for _ in range(self.options.concurrency)]
                group.create_task(self._feed(rows, len(workers)))
        except BaseExceptionGroup as failures:  # a bug or a failing sink: show it as itself
            raise _first_leaf(failures) from None
        finally:
            self._progress.stop()
            self._journal.flush()
            self.stats.rate_settled = self._controller.current_rate
            self.stats.interrupted = self._stop >= StopReason.STOPPED
            self.stats.halted = self._halt_text
        return self.stats

    def held_back(self) -> dict[int, RowResult]:
        """Results that are finished but wait for an earlier row before they may go to the sink, by position
        in the input. After `run()` failed, the caller writes them rather than lose what finished."""
        return dict(self._buffer)

    async def _feed(self, rows: Iterable[CheckedRowLike], workers: int) -> None:
        position = 0
        for checked in rows:
            await self._window.acquire()
            pending = position + 1 - self._next_out
            self.stats.max_pending = max(self.stats.max_pending, pending)
            self.stats.rows += 1
            if checked.status is not Status.VALID:
                self._complete(position, self._passed_through(checked))
            elif self.stopping:
                # After a stop every row is still listed, in order: a row nobody sent says so. Validation's
                # verdict is already in memory and nothing is sent, so the rest of a long sheet costs little.
                self._complete(position, self._not_reached(checked))
            else:
                await self._queue.put((position, checked))
            position += 1
            if position % _FEED_TURN == 0:
                # A long stretch of invalid rows never blocks: let signal handlers and workers have the loop.
                await asyncio.sleep(0)
        # Not in a `finally`: when the run is failing, the workers are cancelled and would never take these.
        for _ in range(workers):
            await self._queue.put(None)

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            if job is None:
                return
            position, checked = job
            self._complete(position, await self._process(checked))

    def _complete(self, position: int, result: RowResult) -> None:
        """Count the row, then hand over every result that is next in input order."""
        status = result.status.value
        self.stats.counts[status] = self.stats.counts.get(status, 0) + 1
        for problem in result.problems:
            self.stats.problem_counts[problem.code] = self.stats.problem_counts.get(problem.code, 0) + 1
        self._progress.advance(1, failed=int(result.status in (Status.FAILED, Status.INVALID)))
        self._buffer[position] = result
        while self._next_out in self._buffer:
            self._sink(self._buffer.pop(self._next_out))
            self._next_out += 1
            self._window.release()

    # -- one row

    def _base(self, checked: CheckedRowLike) -> RowResult:
        """The row as validation left it; sending fills in the rest."""
        return self._to_result(checked)

    def _passed_through(self, checked: CheckedRowLike) -> RowResult:
        result = self._base(checked)
        if checked.status is Status.SKIPPED and checked.existing_user_id:
            self._explain_existing(checked, result)
        return result

    def _explain_existing(self, checked: CheckedRowLike, result: RowResult) -> None:
        """Validation found the user in the tenant; the journal may know that it is ours. Then the results say so
        (nightly runs over a growing sheet), and a row an earlier run sent without learning the outcome (killed,
        answer lost) is settled here as created, without sending anything."""
        user = checked.user
        customer = user.customerTenantId or self._customer
        prior = self._journal.prior(customer, user.upn_key)
        if prior is None or (prior.user_id and prior.user_id != checked.existing_user_id):
            return  # not ours, or ours was replaced since: validation's words stand
        if prior.outcome is PriorOutcome.CREATED:
            what = f"created by an earlier run{_on(prior.recorded_at)}"
        else:
            what = (
                f"created by an earlier run{_on(prior.recorded_at)} that was stopped before its answer came"
            )
            settled = dataclasses.replace(
                result,
                status=Status.CREATED,
                userId=checked.existing_user_id,
                problems=(),
                requestId=prior.request_id,
            )
            self._journal.finished(customer, user.upn_key, settled)
        result.requestId = prior.request_id or None
        message = (
            f"{user.userPrincipalName} already exists in the tenant (id {checked.existing_user_id}): {what}"
        )
        result.problems = tuple(
            Problem(p.code, message, p.field) if p.code == Code.USER_EXISTS else p for p in result.problems
        )

    def _not_reached(self, checked: CheckedRowLike) -> RowResult:
        """A row to create that the feeder reached only after a stop: listed, never sent."""
        user = checked.user
        result = self._base(checked)
        customer = user.customerTenantId or self._customer
        prior = self._journal.prior(customer, user.upn_key)
        if prior is not None and prior.outcome is PriorOutcome.CREATED:
            return self._created_earlier(result, prior)
        self.stats.not_reached += 1
        if prior is not None:  # in doubt: an earlier run sent it and never learnt the outcome
            result.requestId = prior.request_id
            message = (
                f"may exist: an earlier run{_on(prior.recorded_at)} sent it without learning the outcome, and "
                "this run was stopped before this row; run the same command again with the same journal"
            )
        else:
            message = f"not sent: {self._stop_note()}"
        result.status, result.userId, result.problems = (
            Status.FAILED,
            None,
            (Problem(RUN_INTERRUPTED, message),),
        )
        return result

    def _stop_note(self) -> str:
        if self._halt_text is not None:
            return (
                f"the run stopped taking rows when {self._halt_text}; sign in again (or fix the credentials), "
                "then run the same command again"
            )
        return "the run was stopped before this row; run the same command again"

    @staticmethod
    def _created_earlier(result: RowResult, prior: PriorState) -> RowResult:
        result.status = Status.SKIPPED
        result.userId = prior.user_id
        result.requestId = prior.request_id
        result.problems = (
            Problem(
                Code.USER_EXISTS,
                f"created by an earlier run{_on(prior.recorded_at)} (its journal says so); not sent again",
                "userPrincipalName",
            ),
        )
        return result

    async def _process(self, checked: CheckedRowLike) -> RowResult:
        user = checked.user
        result = self._base(checked)
        customer = user.customerTenantId or self._customer
        prior = self._journal.prior(customer, user.upn_key)
        if prior is not None and prior.outcome is PriorOutcome.CREATED:
            return self._created_earlier(result, prior)
        in_doubt = prior is not None and prior.outcome is PriorOutcome.IN_DOUBT
        attempt = _Attempt(
            customer=customer,
            user=user,
            request_id=prior.request_id if prior is not None and in_doubt else str(uuid.uuid4()),
            maybe_created=in_doubt,
        )
        result.requestId = attempt.request_id
        if self.stopping:
            return self._not_finished(result, attempt)
        # No `pending` record first: a row the journal does not hold (or holds as refused) is "never sent" already,
        # and the write cost as much as the durable `sent` one.
        try:
            await self._send(attempt, result)
        except _Stopped:
            return self._not_finished(result, attempt)
        finally:
            result.attempts = attempt.sends
        if result.status is Status.FAILED and attempt.maybe_created and not attempt.refused:
            # The user may exist and nobody could confirm it: the journal keeps the row as sent (in doubt), so the
            # next run reconciles it with the same request id instead of creating a second account.
            return result
        self._journal.finished(customer, user.upn_key, result)
        return result

    async def _send(self, attempt: _Attempt, result: RowResult) -> None:
        """Send until the row has a final outcome, written into `result`."""
        while True:
            sent_at = await self._ready_to_send(attempt)
            generation = self._token_generation
            try:
                created = await self._create(attempt)
            except _Aborted:
                attempt.maybe_created = attempt.cut_short = True  # it may have reached the service
                raise
            except _SignInRefused as failure:
                attempt.last_failure = failure
                self._fail_signed_out(attempt, result, failure)
                return
            except _SignInUnreachable as failure:
                if not await self._retry_after_failure(attempt, result, failure):
                    return
                continue
            except Throttled as failure:
                self._answered()
                if not self._after_throttle(attempt, result, failure, sent_at):
                    return
                continue
            except Unauthorized as failure:
                self._answered()
                if not await self._after_unauthorized(attempt, result, failure, generation):
                    return
                continue
            except MismatchedAnswer as failure:
                self._answered()
                attempt.last_failure = failure
                await self._after_mismatch(attempt, result, failure)
                return
            except Refused as failure:
                self._answered()
                await self._after_refused(attempt, result, failure)
                return
            except RequestError as failure:
                self._answered()
                attempt.last_failure = failure
                if _may_have_created(failure):
                    attempt.maybe_created = True
                if not await self._retry_after_failure(attempt, result, failure):
                    return
                continue
            self._answered()
            self._controller.on_success(usage=created.throttle_usage)
            self._follow_rate()
            result.status, result.userId, result.problems = Status.CREATED, created.id, ()
            return

    async def _ready_to_send(self, attempt: _Attempt) -> float:
        """Wait until the row's request may leave, and say when that is; `_Stopped` if the run stops first. The
        row's first request is recorded only once it really goes out (a stop before this sent nothing), and
        durably before it leaves: a run killed from here on leaves "sent" behind."""
        if self.stopping and attempt.sends:
            raise _Stopped  # a retry after stop() is abandoned
        await self._clear_to_send()
        if attempt.sends == 0:
            await self._journal.sending(attempt.customer, attempt.user.upn_key, attempt.user.row, attempt.request_id)
            attempt.journaled = True
            if self.stopping:  # stop() came while the record was being committed: nothing leaves now
                raise _Stopped
        sent_at = self._clock()
        if self.stats.first_send is None:
            self.stats.first_send = sent_at
        return sent_at

    async def _after_unauthorized(
        self, attempt: _Attempt, result: RowResult, failure: Unauthorized, generation: int
    ) -> bool:
        """A 401: refresh the token once (one refresh for every worker that saw the same token refused) and say
        True (send again), or fail the row and say False."""
        attempt.last_failure = failure
        if attempt.refreshed or self._tokens is None:
            what = (
                "the token was refused, also after a refresh"
                if attempt.refreshed
                else ("the token was refused, and this run has no way to refresh it")
            )
            self._fail(result, api_code(401), what + _may_exist_note(attempt), failure)
            return False
        attempt.refreshed = True
        try:
            await self._refresh_token(generation)
        except _SignInRefused as refusal:
            self._fail(
                result,
                api_code(401),
                f"the token was refused and could not be refreshed ({refusal.reason}); the run "
                f"stopped taking rows{_may_exist_note(attempt)}",
                None,
            )
            return False
        except _SignInUnreachable as unreachable:
            attempt.refreshed = False  # the refresh never happened: the next 401 may try again
            return await self._retry_after_failure(attempt, result, unreachable)
        return True

    async def _after_refused(self, attempt: _Attempt, result: RowResult, failure: Refused) -> None:
        """A final 4xx: a taken UPN is looked up, a refusal after a request that may have created the user is
        checked, any other fails the row (the service created nothing)."""
        attempt.last_failure = failure
        if failure.is_duplicate_upn:
            await self._after_duplicate(attempt, result, failure)
        elif attempt.maybe_created:
            await self._after_refusal(attempt, result, failure)
        else:
            attempt.refused = True
            self._fail(result, api_code(failure.status), "the service refused it", failure)

    def _follow_rate(self) -> None:
        """Hand the controller's rate to an adaptive pacer (a fixed rate's pacer has nothing to follow)."""
        if isinstance(self._pacer, Pacer):
            self._pacer.set_rate(self._controller.current_rate)

    def _after_throttle(self, attempt: _Attempt, result: RowResult, failure: Throttled, sent_at: float) -> bool:
        """A 429: slow the rate, close the gate for every sender (one log line per long wait), and say True (try
        again) or False (given up: the row is throttled without end)."""
        attempt.throttles += 1
        attempt.last_failure = failure
        self.stats.throttled += 1
        self._controller.on_throttle(failure.retry_after, sent_at=sent_at)
        self._follow_rate()
        if attempt.throttles >= self.options.max_throttled:
            self._fail(
                result,
                api_code(429),
                f"still throttled after {attempt.throttles} tries{_may_exist_note(attempt)}",
                failure,
            )
            return False
        retry_after = failure.retry_after
        said = f"Retry-After {retry_after:.0f} s" if retry_after else "no Retry-After, backing off"
        if retry_after is None or retry_after <= 0:
            retry_after = self._policy.backoff.delay(attempt.throttles, self._policy.rng)
        self._gate.pause_for(retry_after)
        self._waits.waiting(
            max(retry_after, self._gate.remaining()),
            "throttled",
            f"Partner Center answered 429 ({said}); no request is sent until then",
        )
        return True

    async def _retry_after_failure(self, attempt: _Attempt, result: RowResult, failure: _Failure) -> bool:
        """A failure that uses up one of the row's attempts: wait out the backoff and say True (try again), or
        give the row up and say False."""
        attempt.last_failure = failure
        attempt.failures += 1
        wait = self._policy.wait_before_retry(failure, attempt.failures)
        if wait is None:
            await self._give_up(attempt, result, failure)
            return False
        self._waits.waiting(wait, "retry", f"before trying again after {_describe(failure)}{_asked(failure)}")
        await self._wait(wait)
        return True

    async def _create(self, attempt: _Attempt) -> CreatedUser:
        """The row's create request, counted once it has left: when the service answered, the request failed on
        the way, or abort() cut it short (it may have reached the service). A token failure comes before any
        request, so it is not counted."""
        try:
            created = await self._cancellable(
                lambda: self._with_token(
                    self._client.create_user(attempt.customer, attempt.user, request_id=attempt.request_id)
                )
            )
        except _SignInFailed:
            raise
        except BaseException:
            self._count_send(attempt)
            raise
        self._count_send(attempt)
        return created

    def _count_send(self, attempt: _Attempt) -> None:
        if attempt.sends == 0:
            self.stats.sent_rows += 1
        else:
            self.stats.retries += 1
        attempt.sends += 1
        self.stats.requests += 1

    async def _with_token(self, call: Awaitable[T]) -> T:
        """The client asks the sign-in service for its token inside each call, so the sign-in's failures come
        out of the call as command errors; here they become this row's failures, never the run's."""
        try:
            return await call
        except ServiceUnavailable as exc:
            raise _SignInUnreachable(f"no token from the sign-in service: {exc.message}") from None
        except BulkOnboardError as exc:  # AuthError: refused, and every later row would be refused too
            self._halt(f"the sign-in failed mid-run ({exc.message})")
            raise _SignInRefused(exc.message) from None

    def _fail_signed_out(self, attempt: _Attempt, result: RowResult, failure: _SignInRefused) -> None:
        if attempt.maybe_created:
            what = (
                "may exist: the sign-in failed mid-run after an earlier request of this row that may have created "
                "the user; the run stopped taking rows: sign in again (or fix the credentials), then run the same "
                "command again with the same journal"
            )
        else:
            what = (
                "not sent: the sign-in failed mid-run, so the run stopped taking rows; sign in again (or fix the "
                "credentials), then run the same command again"
            )
        self._fail(result, api_code(401), what, failure)

    async def _cancellable(self, call: Callable[[], Awaitable[T]]) -> T:
        """`await call()`, which abort() may cut short: then `_Aborted`. The worker's own task is cancelled
        (no task per request: a request leaves as soon as its worker decides to send it), and only the
        cancellation abort() asked for becomes `_Aborted`; any other goes on as a cancellation."""
        if self._stop is StopReason.ABORTED:
            raise _Aborted
        task = asyncio.current_task()
        assert task is not None
        self._in_flight.add(task)
        try:
            return await call()
        except asyncio.CancelledError:
            if task not in self._cut:
                raise
            self._cut.discard(task)
            if task.uncancel() > 0:
                raise  # cancelled by someone else too (the run is failing): not ours to swallow
            raise _Aborted from None
        finally:
            self._in_flight.discard(task)
            if task in self._cut:  # the call finished before the cancellation reached it
                self._cut.discard(task)
                task.uncancel()

    def _answered(self) -> None:
        self.stats.last_answer = self._clock()

    async def _clear_to_send(self) -> None:
        """Wait for the 429 gate to open and for the limiter; `_Stopped` if stop() comes first."""
        while True:
            if self.stopping:
                raise _Stopped
            paused = self._gate.remaining()
            if paused > 0:
                await self._wait(paused)
                continue
            if self._pacer.ready():
                await self._pacer.acquire()  # capacity is there: no wait
            else:
                await self._until_stopped(self._pacer.acquire())
            if self._gate.remaining() <= 0:
                if self.stopping:
                    raise _Stopped
                return

    async def _wait(self, seconds: float) -> None:
        if self.stopping:
            raise _Stopped
        if seconds > 0:
            await self._until_stopped(self._sleep(seconds))

    async def _until_stopped(self, waiting: Awaitable[None]) -> None:
        assert self._stop_event is not None
        task = asyncio.ensure_future(waiting)
        stopper = asyncio.ensure_future(self._stop_event.wait())
        try:
            await asyncio.wait((task, stopper), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pending in (task, stopper):
                if not pending.done():
                    pending.cancel()
        if task.done() and not task.cancelled():
            task.result()  # an exception in the wait itself is a bug: let it show
            return
        raise _Stopped

    async def _refresh_token(self, generation: int) -> None:
        """One refresh for all the workers that saw the same token refused. Raises `_SignInRefused` (the run
        then takes no new row) or `_SignInUnreachable` when no fresh token came."""
        assert self._token_lock is not None and self._tokens is not None
        async with self._token_lock:
            if self._token_generation != generation:
                return  # another worker refreshed it since this request went out
            await self._with_token(self._tokens.token(Audience.PARTNER_CENTER, force_refresh=True))
            self._token_generation += 1

    async def _after_duplicate(self, attempt: _Attempt, result: RowResult, refusal: Refused) -> None:
        """The UPN is taken. After an attempt that may have created the user, that is most likely our own
        success; on a clean first attempt, someone created the user since validation."""
        try:
            user_id = await (self._find_ours(attempt) if attempt.maybe_created else self._lookup(attempt))
        except (RequestError, _SignInFailed) as failure:
            if attempt.maybe_created:
                what = (
                    "may exist: the service says the UPN is taken after an earlier request of this row that may "
                    f"have created the user, and looking the user up failed ({_describe(failure)}); run the same "
                    "command again with the same journal, or check the tenant"
                )
            else:
                what = (
                    "the service says the UPN is taken, and looking the user up failed "
                    f"({_describe(failure)}); check the tenant"
                )
            self._fail(result, api_code(refusal.status), what, refusal)
            return
        if user_id is not None and attempt.maybe_created:
            result.status, result.userId, result.problems = Status.CREATED, user_id, ()
        elif user_id is not None:
            result.status, result.userId = Status.SKIPPED, user_id
            result.problems = (
                Problem(
                    Code.USER_EXISTS,
                    "the user was created by someone else after validation; left as it is",
                    "userPrincipalName",
                ),
            )
        elif attempt.maybe_created:
            # Most likely our own user that the directory does not show yet: left in doubt (the journal keeps
            # "sent"), never called someone else's nor a ghost.
            self._fail(
                result,
                api_code(refusal.status),
                "may exist: the service says the UPN is taken after an earlier request of this row that may have "
                "created the user, but the directory does not show it yet; run the same command again with the "
                "same journal, or check the tenant",
                refusal,
            )
        else:
            self._fail(
                result,
                api_code(refusal.status),
                "the service says the UPN is taken, but no user has it (a deleted user keeps its UPN for "
                "30 days; restore or purge it)",
                refusal,
            )

    async def _after_mismatch(self, attempt: _Attempt, result: RowResult, mismatch: MismatchedAnswer) -> None:
        """The service said 200 about another user. Its id is someone else's and its "created" may not be about
        this row: only a lookup by UPN can say. Found: the row is settled by the lookup, as after a duplicate
        refusal. Not found: `api.mismatch`, and the row stays "sent" in the journal (the 200 may still be ours, not
        yet visible), so the next run reconciles it with the same request id."""
        attempt.maybe_created = True
        named = f"the service answered 200 naming {mismatch.named_upn} instead of {attempt.user.userPrincipalName}"
        try:
            user_id = await self._find_ours(attempt)
        except (RequestError, _SignInFailed) as failure:
            self._fail(
                result,
                Code.API_MISMATCH,
                f"{named}, and looking the user up failed ({_describe(failure)}); it may exist: run the same "
                "command again with the same journal, or check the tenant",
                None,
            )
            return
        if user_id is not None:
            result.status, result.userId = Status.CREATED, user_id
            result.problems = (
                Problem(Code.API_MISMATCH, f"{named}; a lookup by UPN found the user (id {user_id}), kept that id"),
            )
            return
        self._fail(
            result,
            Code.API_MISMATCH,
            f"{named}, and no user with this UPN was found; it may exist: run the same command again with the same "
            "journal, or check the tenant",
            None,
        )

    async def _after_refusal(self, attempt: _Attempt, result: RowResult, refusal: Refused) -> None:
        """A refusal now says nothing of an earlier request of this row that may have created the user (its
        answer never came, or an earlier run was stopped before it did): ask before calling the row failed."""
        try:
            user_id = await self._find_ours(attempt)
        except (RequestError, _SignInFailed) as failure:
            self._fail(
                result,
                api_code(refusal.status),
                "may exist: the service refused it, an earlier request of this row may have created the user, and "
                f"looking it up failed ({_describe(failure)}); run the same command again with the same journal, "
                "or check the tenant",
                refusal,
            )
            return
        if user_id is not None:
            result.status, result.userId, result.problems = Status.CREATED, user_id, ()
            return
        attempt.refused = True
        self._fail(result, api_code(refusal.status), "the service refused it", refusal)

    async def _give_up(self, attempt: _Attempt, result: RowResult, failure: _Failure) -> None:
        """Out of attempts (or not retryable). When an attempt may have created the user, ask before saying so."""
        if attempt.maybe_created:
            try:
                user_id = await self._find_ours(attempt)
            except (RequestError, _SignInFailed):
                user_id = None
            if user_id is not None:
                result.status, result.userId, result.problems = Status.CREATED, user_id, ()
                return
        code = _failure_code(failure)
        if isinstance(failure, _SignInUnreachable) and not attempt.maybe_created:
            tries = f"{attempt.failures} tr{'ies' if attempt.failures != 1 else 'y'}"
            self._fail(result, code, f"not sent: no token after {tries}; run the same command again", failure)
            return
        tries = f"{attempt.sends} attempt{'s' if attempt.sends != 1 else ''}"
        what = f"gave up after {tries}" if self._policy.on(failure) is not False else "the service failed it"
        self._fail(result, code, what + _may_exist_note(attempt), failure)

    async def _find_ours(self, attempt: _Attempt) -> str | None:
        """The user an earlier request of this row may have created. Graph is eventually consistent: a user
        created a moment ago may not show yet, so nothing found is asked again a few times before the row is
        left in doubt."""
        user_id = await self._lookup(attempt)
        retry = 0
        while user_id is None and retry < self.options.lookup_retries:
            retry += 1
            wait = self._policy.backoff.ceiling(retry)
            self._waits.waiting(
                wait, "lookup", "before looking a user up again (a user created a moment ago may not show yet)"
            )
            await self._wait(wait)
            user_id = await self._lookup(attempt)
        return user_id

    async def _lookup(self, attempt: _Attempt) -> str | None:
        """The id of the user with this UPN (Graph when we have it: one GET instead of paging the whole list)."""
        self.stats.lookups += 1
        customer, upn = attempt.customer, attempt.user.userPrincipalName

        async def ask() -> dict[str, Any] | None:
            if self._graph is not None:
                return await self._graph.get_user(customer, upn)
            return await self._client.find_user_by_upn(customer, upn)

        async def ask_with_token() -> dict[str, Any] | None:
            return await self._cancellable(lambda: self._with_token(ask()))

        async def wait_to_ask_again(seconds: float) -> None:
            self._waits.waiting(seconds, "retry", "before trying a lookup again")
            await self._wait(seconds)

        found = await self._policy.call(ask_with_token, sleep=wait_to_ask_again)
        user_id = found.get("id") if found else None
        return user_id if isinstance(user_id, str) and user_id else None

    def _fail(self, result: RowResult, code: str, what: str, failure: _Failure | None) -> None:
        message = what if failure is None else f"{what}: {_describe(failure)}"
        result.status, result.userId, result.problems = Status.FAILED, None, (Problem(code, message),)

    def _not_finished(self, result: RowResult, attempt: _Attempt) -> RowResult:
        """A row taken, then left unfinished by a stop. Only a row whose request may have created the user
        stays "sent" in the journal; any other is recorded as not created, so that the next run sends it afresh
        under a new request id instead of taking whoever holds the UPN by then for its own."""
        self.stats.not_finished += 1
        if attempt.cut_short:
            message = (
                "may exist: the run was stopped at once while its request was in flight; run the same command "
                "again with the same journal, or check the tenant"
            )
        elif attempt.maybe_created:
            last = _describe(attempt.last_failure) if attempt.last_failure else "an earlier run got no answer"
            message = (
                f"may exist: the run was stopped before this row was finished, after an answer that leaves its "
                f"outcome open ({last}); run the same command again with the same journal, or check the tenant"
            )
        elif attempt.sends == 0:
            message = f"not sent: {self._stop_note()}"
        else:
            last = f" (last answer: {_describe(attempt.last_failure)})" if attempt.last_failure else ""
            message = (
                f"not created: the run was stopped before it could be retried{last}; "
                "run the same command again"
            )
        result.status, result.userId, result.problems = (
            Status.FAILED,
            None,
            (Problem(RUN_INTERRUPTED, message),),
        )
        if not attempt.maybe_created and attempt.journaled:
            self._journal.finished(attempt.customer, attempt.user.upn_key, result)
        if attempt.sends == 0 and not attempt.maybe_created:
            result.requestId = None  # never sent: no request to look for in the service's logs
        return result


def _on(moment: datetime | None) -> str:
    return f" on {moment.date().isoformat()}" if moment is not None else ""


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


def _loop_time() -> float:
    """The running loop's clock: the one asyncio.sleep and the limiter count in."""
    return asyncio.get_running_loop().time()


def _may_exist_note(attempt: _Attempt) -> str:
    """Said of a failed row whose earlier request may have created the user: it stays in doubt (the journal
    keeps "sent"), and the same journal settles it."""
    if not attempt.maybe_created:
        return ""
    return (
        "; it may exist: a request of this row may have created the user, so run the same command again "
        "with the same journal, or check the tenant"
    )


def _asked(failure: _Failure) -> str:
    """Says so when a wait is the service's own Retry-After rather than our backoff."""
    asked = getattr(failure, "retry_after", None)
    return f" (the service asked for {asked:.0f} s)" if asked else ""


def _may_have_created(failure: RequestError) -> bool:
    """No answer, an unreadable one, or a server error: the service may have done the work before failing."""
    if isinstance(failure, TransportError):
        return failure.maybe_processed
    return not isinstance(failure, Refused | Throttled)


def _failure_code(failure: _Failure) -> str:
    """`api.<status>` for an error status; `api.unreachable` for no answer, an unreadable 2xx/3xx one, or no
    token to send with."""
    if isinstance(failure, ApiError) and failure.status >= 400:
        return api_code(failure.status)
    return API_UNREACHABLE


def _describe(failure: _Failure) -> str:
    """The service's words for a problem cell: status, code and description; never a raw answer (the
    client keeps none) and never the URL (the requestId column finds the call in the service's logs)."""
    if isinstance(failure, _SignInFailed):
        return failure.reason
    if isinstance(failure, TransportError):
        return failure.reason
    if isinstance(failure, ApiError):
        code = f" {failure.code}" if failure.code not in (None, "") else ""
        text = failure.description or "no description"
        return f"HTTP {failure.status}{code}: {text}"
    return failure.message


def _first_leaf(group: BaseExceptionGroup) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first
