"""Where a request waits before it leaves: its customer's pace, the partner's, and room in flight.

Partner Center throttles per partner and per partner + customer, Graph per app + tenant. So each customer of a
sheet has its own `Scope` (its rate controller, pacer and 429 gate): a customer that answers 429 slows alone,
and the others go on at their own pace. Over them, one partner-wide pacer holds `--rate R` (all customers
together, as the contract counts it), and one `Room` bounds the requests in flight (concurrency.py).

Which scope a request counts in is the row's customer, set once per row by the flow (`CURRENT_CUSTOMER`, a
context variable: each worker is its own task), so every request of the row's plan (create, lookups, license,
profile, manager) is counted where the service counts it without each step having to say so.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

from .concurrency import InFlightLimit
from .figures import PipelineStats
from .retry import BucketPacer, Clock, Pacer, PauseGate, RateController, Sleep

#: The customer of the row the current worker is on ("" before any).
CURRENT_CUSTOMER: ContextVar[str] = ContextVar("bulkonboard_customer", default="")
#: When the current row may be sent again after a 429 it waits out alone (a fixed rate's short Retry-After).
ROW_NOT_BEFORE: ContextVar[float] = ContextVar("bulkonboard_row_not_before", default=-math.inf)

StopAware = Callable[[Awaitable[None]], Awaitable[None]]


class Scope:
    """One partner + customer scope: its rate controller, its pacer (following the controller's rate), its 429
    gate, and the figures its line in the Summary needs."""

    def __init__(self, customer: str, controller: RateController, *, clock: Clock, sleep: Sleep) -> None:
        self.customer = customer
        self.controller = controller
        self.asked_rate = controller.current_rate
        self.gate = PauseGate(clock)
        self.pacer = Pacer(controller.current_rate, clock=clock, sleep=sleep)
        self.first_send: float | None = None
        self.last_answer: float | None = None
        self.throttled = 0

    def follow_rate(self) -> None:
        self.pacer.set_rate(self.controller.current_rate)

    @property
    def eased_to(self) -> float | None:
        """The rate a fixed pace was eased to after 429s (None: not eased, or not a fixed pace)."""
        rate = self.controller.current_rate
        eases = getattr(self.controller, "eases", 0)
        return rate if eases and rate < self.asked_rate else None


class Room:
    """Room in flight for the requests of every scope (concurrency.py does the arithmetic), and the waits for
    it. A worker reserves its place once it is clear to send; its next request uses it (`ticket`)."""

    def __init__(self, cap: int, *, clock: Clock, sleep: Sleep) -> None:
        self.limit = InFlightLimit(cap, clock=clock)
        self._sleep = sleep
        self._reserved: dict[asyncio.Task[Any], int] = {}
        # Each waiter on its own future, registered before its next await: no wake-up is lost.
        self._waiters: list[asyncio.Future[None]] = []

    async def reserve(self, rate: float, until_stopped: StopAware) -> None:
        """Wait until one more request may be in flight at `rate` (all scopes together) and reserve its place
        for this worker. A place reserved and not used yet (a stop came between) is kept for its next request."""
        task = asyncio.current_task()
        assert task is not None
        if task in self._reserved:
            return
        while not self.limit.has_room(rate):
            await until_stopped(self._woken_or_after(self.limit.until_more_room(rate)))
        self._reserved[task] = self.limit.take()
        self.wake()  # one more in flight ages from now: the limit may grow with it, so look again

    def ticket(self) -> int:
        """The current worker's reserved place, or (a lookup: not paced) a place taken now."""
        task = asyncio.current_task()
        ticket = self._reserved.pop(task, None) if task is not None else None
        return ticket if ticket is not None else self.limit.take()

    def finished(self, ticket: int, *, answered: bool) -> None:
        self.limit.finished(ticket, answered=answered)
        self.wake()

    def rows_wanted(self, rate: float) -> int:
        """How many rows a scope pacing at `rate` may have its workers hold: those in flight, and as many again
        waiting their turn (at the pacer, behind a backoff, for the journal); never more than the cap. So a
        worker takes a row only when the pace can use it soon: the rest of the sheet stays unread (a stop finds
        it not reached), and a customer held up by its 429s holds few rows."""
        return min(self.limit.cap, 2 * self.limit.limit(rate) + 2)

    async def room_for_row(
        self, holding: Callable[[], int], rate: Callable[[], float], stopping: Callable[[], bool]
    ) -> None:
        """Wait until a worker may take a row of a scope whose workers hold `holding()` rows; at once when
        stopping (the rows left are then listed, not sent)."""
        while not stopping() and holding() >= self.rows_wanted(rate()):
            # 2 x limit + 2 > holding from an in-flight limit of holding // 2 on; at the cap only a row's end helps
            held = holding()
            later = None if held >= self.limit.cap else self.limit.until_limit(rate(), held // 2)
            await self._woken_or_after(later)

    def wake(self) -> None:
        """Something changed (a row finished, a request left or got its answer, a stop): every waiter looks
        again."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _woken_or_after(self, seconds: float | None) -> Awaitable[None]:
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(woken)
        return self._first_of(woken, seconds)

    async def _first_of(self, woken: asyncio.Future[None], seconds: float | None) -> None:
        waits: set[asyncio.Future[Any]] = {woken}
        if seconds is not None:
            waits.add(asyncio.ensure_future(self._sleep(seconds)))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()


class Pacing:
    """A run's scopes: one per customer (made when its first request is paced), the partner-wide pacer over
    them (`--rate R` for all customers together; none without a fixed rate) and the room in flight.

    `new_controller()` makes each customer's rate controller; `first` (a test's own) serves the first customer.
    """

    def __init__(
        self,
        *,
        cap: int,
        partner_rate: float | None,
        new_controller: Callable[[], RateController],
        first: RateController | None,
        clock: Clock,
        sleep: Sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._new_controller = new_controller
        self._first = first
        self.scopes: dict[str, Scope] = {}
        self.room = Room(cap, clock=clock, sleep=sleep)
        self.partner_rate = partner_rate
        self.partner: BucketPacer | None = None

    def start(self) -> None:
        """The loop-bound parts, made in the running loop."""
        rate = self.partner_rate
        self.partner = BucketPacer(rate) if rate is not None and math.isfinite(rate) else None

    def scope(self, customer: str | None = None) -> Scope:
        """The scope of `customer` (default: the current row's), made on first use."""
        key = (CURRENT_CUSTOMER.get() if customer is None else customer).lower()
        found = self.scopes.get(key)
        if found is None:
            controller = self._first if self._first is not None and not self.scopes else self._new_controller()
            found = self.scopes[key] = Scope(key, controller, clock=self._clock, sleep=self._sleep)
        return found

    @property
    def first_controller(self) -> RateController:
        """The first customer's controller (the run's only one, for one customer): what the Summary reports."""
        if self.scopes:
            return next(iter(self.scopes.values())).controller
        if self._first is None:  # nothing paced yet: the one the first customer will get
            self._first = self._new_controller()
        return self._first

    def figures_into(self, stats: PipelineStats) -> None:
        """Each customer's pace into its line of the figures."""
        for key, scope in self.scopes.items():
            figures = stats.customer(key)
            if scope.first_send is not None and scope.last_answer is not None:
                figures.seconds = max(0.0, scope.last_answer - scope.first_send)
            figures.throttled = scope.throttled
            figures.eased_to = scope.eased_to

    def total_rate(self) -> float:
        """The pace of every scope together, within the partner's: what the room in flight is sized for."""
        total = sum(scope.controller.current_rate for scope in self.scopes.values())
        if self.partner_rate is not None:
            total = min(total, self.partner_rate)
        return total or math.inf

    async def partner_turn(self, until_stopped: StopAware) -> None:
        """The partner-wide pacer's turn (no wait when it has capacity, or there is none)."""
        partner = self.partner
        if partner is None:
            return
        if partner.ready():
            await partner.acquire()
        else:
            await until_stopped(partner.acquire())
