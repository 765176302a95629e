"""What every request of a run shares, whichever step sends it: the stop reason, the pace, the 429 gate, the
token, and waits a stop cuts short.

One `Sender` per run. The create step (create.py) and every later step (steps.py) send through it, so that a
license or profile call is paced and throttled with the creates (Partner Center and Graph count every write of
the partner against one budget), a stop reaches every wait, and a token refused once is refreshed once for all.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ..errors import BulkOnboardError, ServiceUnavailable
from ..service.partnercenter import (
    Audience,
    PermissionDenied,
    Refused,
    RequestError,
    Throttled,
    TokenProvider,
    TransportError,
    Unauthorized,
)
from .concurrency import InFlightLimit
from .figures import PipelineOptions, PipelineStats
from .messages import SignInFailed, SignInRefused, SignInUnreachable, asked, describe
from .pace import ROW_NOT_BEFORE, Pacing
from .retry import (
    Clock,
    RateController,
    RetryPolicy,
    Sleep,
    WaitLog,
    retry_on_service_trouble,
)

T = TypeVar("T")

#: A 429 whose Retry-After is this short (a window of a second or two, full for a moment) is waited out by its
#: row alone while the rate slows; a longer one pauses every request of the customer.
ROW_ALONE_UP_TO = 2.0


class Stopped(Exception):
    """A wait was cut short by stop(): the row is left unfinished."""


class Aborted(Stopped):
    """abort() cut a request short: it may have reached the service before it was."""


class StopReason(enum.IntEnum):
    """Why the run takes no new row, from none to the most urgent; a later reason only ever raises it (a person's
    stop after a halt is a stop: exit 130)."""

    NONE = 0
    HALTED = 1  # the run stopped itself: every later row would fail the same way (the halt text says why)
    DENIED = 2  # the service refused a write for lack of permission: every later one would be refused (exit 3)
    STOPPED = 3  # stop(): a person or a scheduler asked; requests in flight get their answers
    ABORTED = 4  # abort(): asked again; requests in flight are cut short


def retry_on_trouble(failure: BaseException) -> bool | float:
    """`retry_on_service_trouble`, and a sign-in service out of reach: no request left, try again after our
    backoff."""
    if isinstance(failure, SignInUnreachable):
        return True
    return retry_on_service_trouble(failure)


def may_have_worked(failure: RequestError) -> bool:
    """No answer, an unreadable one, or a server error: the service may have done the work before failing."""
    if isinstance(failure, TransportError):
        return failure.maybe_processed
    return not isinstance(failure, Refused | Throttled)


class Sender:
    """A run's shared sending state. Build it anywhere; `start()` makes the loop-bound parts inside the loop."""

    def __init__(
        self,
        *,
        options: PipelineOptions,
        tokens: TokenProvider | None,
        new_controller: Callable[[], RateController],
        policy: RetryPolicy,
        clock: Clock,
        sleep: Sleep,
        controller: RateController | None = None,
    ) -> None:
        """`new_controller()` makes each customer's rate controller; `controller` (a test's own) serves the
        first customer."""
        self.options = options
        self.tokens = tokens
        self.policy = policy
        self.clock = clock
        self.sleep = sleep
        self.stats = PipelineStats()
        self.waits = WaitLog(clock)
        self.stop_reason = StopReason.NONE
        self.halt_text: str | None = None  # why the run stopped itself, for the rows it did not send
        self.denied: PermissionDenied | None = None  # the first refusal for lack of permission, if any
        self.token_generation = 0
        self._stop_event: asyncio.Event | None = None
        # abort() cancels the workers awaiting a request (`_in_flight`); `_cut` marks the cancellations it asked
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._cut: set[asyncio.Task[Any]] = set()
        self._token_lock: asyncio.Lock | None = None
        rate = options.rate
        self.pacing = Pacing(
            cap=options.concurrency,
            partner_rate=rate,
            new_controller=new_controller,
            first=controller,
            clock=clock,
            sleep=sleep,
        )

    def start(self) -> None:
        """The loop-bound parts, made in the running loop."""
        self.pacing.start()
        self._stop_event = asyncio.Event()
        if self.stopping:
            self._stop_event.set()
        self._token_lock = asyncio.Lock()

    @property
    def controller(self) -> RateController:
        """The rate controller of the scope the current row counts in (its customer's)."""
        return self.pacing.scope().controller

    @property
    def in_flight(self) -> InFlightLimit:
        return self.pacing.room.limit

    # -- the stop reason

    @property
    def stopping(self) -> bool:
        return self.stop_reason is not StopReason.NONE

    def stop_taking_rows(self, reason: StopReason) -> None:
        self.stop_reason = max(self.stop_reason, reason)
        if self._stop_event is not None:
            self._stop_event.set()
            self.pacing.room.wake()  # workers waiting for a row to take: take the rest as not reached

    def halt(self, reason: str) -> None:
        """The run stops taking rows on its own (every later row would fail the same way); in flight finish."""
        if self.halt_text is None:
            self.halt_text = reason
        self.stop_taking_rows(StopReason.HALTED)

    def deny(self, refusal: PermissionDenied) -> None:
        """A write refused for lack of a GDAP role (or of any relationship): every later row of the run would be
        refused the same way, so it takes no new row; requests in flight get their answers. The first refusal is
        kept: its message names the roles needed (the run's one line, exit 3)."""
        if self.denied is None:
            self.denied = refusal
        self.stop_taking_rows(StopReason.DENIED)

    def abort(self) -> None:
        self.stop_taking_rows(StopReason.ABORTED)
        for task in self._in_flight - self._cut:
            self._cut.add(task)
            task.cancel()

    # -- waits a stop cuts short

    async def wait(self, seconds: float) -> None:
        if self.stopping:
            raise Stopped
        if seconds > 0:
            await self.until_stopped(self.sleep(seconds))

    async def until_stopped(self, waiting: Awaitable[None]) -> None:
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
        raise Stopped

    async def clear_to_send(self) -> None:
        """Wait for the row's own Retry-After, its customer's 429 gate and pacer, the partner's pacer, and room in
        flight; `Stopped` if stop() comes first."""
        scope = self.pacing.scope()
        while True:
            if self.stopping:
                raise Stopped
            paused = max(scope.gate.remaining(), ROW_NOT_BEFORE.get() - self.clock())
            if paused > 0:
                await self.wait(paused)
                continue
            if scope.pacer.ready():
                await scope.pacer.acquire()  # capacity is there: no wait
            else:
                await self.until_stopped(scope.pacer.acquire())
            if scope.gate.remaining() > 0:
                continue
            await self.pacing.partner_turn(self.until_stopped)
            if self.stopping:
                raise Stopped
            await self.pacing.room.reserve(self.pacing.total_rate(), self.until_stopped)
            return

    async def room_for_row(self, holding: Callable[[], int]) -> None:
        """The flow's gate: wait until a worker may take a row of the current customer (`holding()`: the rows
        its workers hold now)."""
        scope = self.pacing.scope()
        await self.pacing.room.room_for_row(
            holding, lambda: scope.controller.current_rate, lambda: self.stopping
        )

    def row_released(self) -> None:
        self.pacing.room.wake()

    # -- the request itself

    async def cancellable(self, call: Callable[[], Awaitable[T]]) -> T:
        """`await call()`, which abort() may cut short: then `Aborted`. The worker's own task is cancelled
        (no task per request: a request leaves as soon as its worker decides to send it), and only the
        cancellation abort() asked for becomes `Aborted`; any other goes on as a cancellation."""
        if self.stop_reason is StopReason.ABORTED:
            raise Aborted
        task = asyncio.current_task()
        assert task is not None
        self._in_flight.add(task)
        ticket = self.pacing.room.ticket()
        answered = False
        try:
            value = await call()
            answered = True
            return value
        except RequestError as failure:
            answered = not isinstance(failure, TransportError)  # a status came back: a latency seen
            raise
        except asyncio.CancelledError:
            if task not in self._cut:
                raise
            self._cut.discard(task)
            if task.uncancel() > 0:
                raise  # cancelled by someone else too (the run is failing): not ours to swallow
            raise Aborted from None
        finally:
            self._in_flight.discard(task)
            self.pacing.room.finished(ticket, answered=answered)
            if task in self._cut:  # the call finished before the cancellation reached it
                self._cut.discard(task)
                task.uncancel()

    async def with_token(self, call: Awaitable[T]) -> T:
        """The client asks the sign-in service for its token inside each call, so the sign-in's failures come
        out of the call as command errors; here they become this row's failures, never the run's."""
        try:
            return await call
        except ServiceUnavailable as exc:
            raise SignInUnreachable(f"no token from the sign-in service: {exc.message}") from None
        except BulkOnboardError as exc:  # AuthError: refused, and every later row would be refused too
            self.halt(f"the sign-in failed mid-run ({exc.message})")
            raise SignInRefused(exc.message) from None

    async def refresh_token(self, generation: int) -> None:
        """One refresh for all the workers that saw the same token refused. Raises `SignInRefused` (the run
        then takes no new row) or `SignInUnreachable` when no fresh token came."""
        assert self._token_lock is not None and self.tokens is not None
        async with self._token_lock:
            if self.token_generation != generation:
                return  # another worker refreshed it since this request went out
            await self.with_token(self.tokens.token(Audience.PARTNER_CENTER, force_refresh=True))
            self.token_generation += 1

    def answered(self) -> None:
        now = self.clock()
        self.stats.last_answer = now
        self.pacing.scope().last_answer = now

    def note_first_send(self) -> float:
        sent_at = self.clock()
        if self.stats.first_send is None:
            self.stats.first_send = sent_at
        scope = self.pacing.scope()
        if scope.first_send is None:
            scope.first_send = sent_at
        return sent_at

    def follow_rate(self) -> None:
        """Hand the controller's rate to its scope's pacer."""
        self.pacing.scope().follow_rate()

    def throttled(self, failure: Throttled, sent_at: float, throttles: int) -> None:
        """A 429, counted in the customer's scope: its controller slows (the others' go on). A short Retry-After
        (the service's window is a second or two, full for a moment) is waited out by this row alone while the
        others go on at the slower rate: closing the gate for it cost a second of sending each time (1.16-1.45x
        the ideal time at a limit of exactly R). A longer one closes the customer's gate until the service's
        time (one log line per long wait): sending into a window full for that long is pointless."""
        self.stats.throttled += 1
        scope = self.pacing.scope()
        scope.throttled += 1
        scope.controller.on_throttle(failure.retry_after, sent_at=sent_at)
        scope.follow_rate()
        retry_after = failure.retry_after
        said = f"Retry-After {retry_after:.0f} s" if retry_after else "no Retry-After, backing off"
        if retry_after is None or retry_after <= 0:
            retry_after = self.policy.backoff.delay(throttles, self.policy.rng)
        if retry_after <= ROW_ALONE_UP_TO:
            ROW_NOT_BEFORE.set(self.clock() + retry_after)
            return
        scope.gate.pause_for(retry_after)
        self.waits.waiting(
            max(retry_after, scope.gate.remaining()),
            "throttled",
            f"Partner Center answered 429 ({said}); no request is sent until then",
        )

    async def backoff(self, failure: RequestError | SignInFailed, failures: int) -> bool:
        """Wait out the backoff before another try and say True, or say False: this failure is not retried, or
        the attempts are spent."""
        wait = self.policy.wait_before_retry(failure, failures)
        if wait is None:
            return False
        self.waits.waiting(wait, "retry", f"before trying again after {describe(failure)}{asked(failure)}")
        await self.wait(wait)
        return True

    async def request(
        self, call: Callable[[], Awaitable[T]], *, usage: Callable[[], float | None] | None = None
    ) -> T:
        """One request of a step after create, sent as the creates are: paced, behind the 429 gate, with a token
        (refreshed once on a 401), cut short by abort(), retried on trouble. Raises the last failure
        (`RequestError`, `SignInFailed`) once retrying is over, `Stopped` / `Aborted` when the run stops first.
        `usage`: the service's early throttling warning on the answer (Graph's `x-ms-throttle-limit-percentage`),
        handed to the rate controller with the success as a create's is."""
        failures = throttles = 0
        refreshed = False
        while True:
            await self.clear_to_send()
            sent_at = self.note_first_send()
            generation = self.token_generation
            try:
                value = await self.cancellable(lambda: self.with_token(call()))
            except SignInUnreachable as failure:
                failures += 1
                if not await self.backoff(failure, failures):
                    raise
                continue
            except RequestError as failure:
                self.answered()
                self.stats.step_requests += 1
                if isinstance(failure, PermissionDenied):
                    self.deny(failure)
                    raise
                if isinstance(failure, Throttled) and throttles + 1 < self.options.max_throttled:
                    throttles += 1
                    self.throttled(failure, sent_at, throttles)
                    continue
                if isinstance(failure, Unauthorized) and not refreshed and self.tokens is not None:
                    refreshed = True
                    await self.refresh_token(generation)
                    continue
                failures += 1
                if isinstance(failure, Throttled | Unauthorized) or not await self.backoff(failure, failures):
                    raise
                continue
            self.answered()
            self.stats.step_requests += 1
            self.controller.on_success(usage=usage() if usage is not None else None)
            self.follow_rate()
            return value
