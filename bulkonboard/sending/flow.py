"""Rows through the worker pool and back out in input order: the feeder, the workers, the reorder buffer.

    rows (validation's iterator) ──► feeder ──► a lane per customer ──► its workers ──► reorder buffer ──► sink
                                        └── rows that need no request: straight to the reorder buffer ──────┘

Memory stays flat however long the sheet: the feeder takes a row from the input only when fewer than `window`
rows are between the input and the sink (queued, in flight, or finished but waiting for an earlier row), so a slow
row holds up at most `window` results, never the whole run. What happens to one row is `RowHandler`'s business.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from ..model import RowResult, Status
from ..progress import Progress
from ..protocols import CheckedRowLike
from .figures import PipelineOptions, PipelineStats
from .pace import CURRENT_CUSTOMER

#: The feeder hands the loop over at least this often, whatever the input.
FEED_TURN = 256


class RowHandler(Protocol):
    """What the flow asks of the per-row runner (rows.py)."""

    @property
    def stopping(self) -> bool: ...

    def needs_worker(self, checked: CheckedRowLike) -> bool: ...

    def without_request(self, checked: CheckedRowLike) -> RowResult: ...

    def not_reached(self, checked: CheckedRowLike) -> RowResult: ...

    async def process(self, checked: CheckedRowLike) -> RowResult: ...


class WorkerGate(Protocol):
    """When a worker may take a row (sender.py): the pace of the row's customer decides how many rows are worth
    holding. A worker's customer is `pace.CURRENT_CUSTOMER` when it asks."""

    async def room_for_row(self, holding: Callable[[], int]) -> None: ...

    def row_released(self) -> None: ...


@dataclass(slots=True)
class Lane:
    """One customer's rows waiting for a worker, and how many its workers hold: a customer held up by its 429s
    holds up only its own lane."""

    customer: str
    rows: deque[tuple[int, CheckedRowLike]] = field(default_factory=deque)
    dispatching: bool = False  # its dispatcher is alive
    holding: int = 0  # rows taken by a worker and not finished


class Flow:
    """One run's feeder, lanes of workers and reorder buffer.

    A lane per customer, and in each one dispatcher: it hands the lane's next row to a worker of its own (a task
    per row, at most `concurrency` at once) only when the gate says the customer's pace can use it soon (about
    twice the requests it keeps in flight), so one task per lane waits at the gate however long the sheet. So
    customers run side by side, rows are not held far ahead of the pace, and a stop finds the rest of the sheet
    not reached rather than taken and left unsent. The window (rows between input and sink) bounds it all: the
    feeder reads ahead at most that far."""

    def __init__(
        self,
        options: PipelineOptions,
        stats: PipelineStats,
        progress: Progress,
        rows: RowHandler,
        gate: WorkerGate,
        customer_of: Callable[[CheckedRowLike], str],
    ) -> None:
        self.options = options
        self.stats = stats
        self._progress = progress
        self._rows = rows
        self._gate = gate
        self._customer_of = customer_of
        self._lanes: dict[str, Lane] = {}
        self.buffer: dict[int, RowResult] = {}  # finished, waiting for an earlier row: by input position
        self._next_out = 0

    async def run(self, rows: Iterable[CheckedRowLike], sink: Callable[[RowResult], None]) -> None:
        self._window = asyncio.Semaphore(self.options.effective_window)
        self._sink = sink
        async with asyncio.TaskGroup() as group:
            self._group = group
            group.create_task(self._feed(rows))

    async def _feed(self, rows: Iterable[CheckedRowLike]) -> None:
        position = 0
        for checked in rows:
            await self._window.acquire()
            pending = position + 1 - self._next_out
            self.stats.max_pending = max(self.stats.max_pending, pending)
            self.stats.rows += 1
            customer = self._customer_of(checked)
            if not self._rows.needs_worker(checked) or self._rows.stopping:
                self._complete(position, self._not_started(checked), customer)
            else:
                self._queue(position, checked, customer)
            position += 1
            if position % FEED_TURN == 0:
                # A long stretch of invalid rows never blocks: let signal handlers and workers have the loop.
                await asyncio.sleep(0)

    def _queue(self, position: int, checked: CheckedRowLike, customer: str) -> None:
        lane = self._lanes.get(customer.lower())
        if lane is None:
            lane = self._lanes[customer.lower()] = Lane(customer)
        lane.rows.append((position, checked))
        if not lane.dispatching:
            lane.dispatching = True
            self._group.create_task(self._dispatch(lane))

    def _not_started(self, checked: CheckedRowLike) -> RowResult:
        """A row no worker started: one that needs no request, or (after a stop) one never reached. After a stop
        every row is still listed, in order: a row nobody sent says so. Validation's verdict is already in memory
        and nothing is sent, so the rest of a long sheet costs little."""
        if not self._rows.needs_worker(checked):
            return self._rows.without_request(checked)
        return self._rows.not_reached(checked)

    async def _dispatch(self, lane: Lane) -> None:
        CURRENT_CUSTOMER.set(lane.customer)  # copied into each worker it starts: their requests count there
        try:
            while lane.rows:
                await self._gate.room_for_row(lambda: lane.holding)
                position, checked = lane.rows.popleft()
                if self._rows.stopping:  # queued, never started: not reached, like the rows still unread
                    self._complete(position, self._not_started(checked), lane.customer)
                    continue
                lane.holding += 1  # before any await: the gate's next look counts this one
                self._group.create_task(self._work(lane, position, checked))
        finally:
            lane.dispatching = False

    async def _work(self, lane: Lane, position: int, checked: CheckedRowLike) -> None:
        try:
            self._complete(position, await self._rows.process(checked), lane.customer)
        finally:
            lane.holding -= 1
            self._gate.row_released()

    def _complete(self, position: int, result: RowResult, customer: str) -> None:
        """Count the row, then hand over every result that is next in input order."""
        status = result.status.value
        self.stats.counts[status] = self.stats.counts.get(status, 0) + 1
        self.stats.customer(customer).counts[status] = self.stats.customer(customer).counts.get(status, 0) + 1
        for problem in result.problems:
            self.stats.problem_counts[problem.code] = self.stats.problem_counts.get(problem.code, 0) + 1
        self._progress.advance(
            1,
            failed=int(result.status in (Status.FAILED, Status.INVALID, Status.PARTIAL)),
            unsent=int(result.attempts == 0),  # done by an earlier run, in the tenant, or invalid
        )
        self.buffer[position] = result
        while self._next_out in self.buffer:
            self._sink(self.buffer.pop(self._next_out))
            self._next_out += 1
            self._window.release()
