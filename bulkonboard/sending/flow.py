"""Rows through the worker pool and back out in input order: the feeder, the workers, the reorder buffer.

    rows (validation's iterator) ──► feeder ──► bounded queue ──► N workers ──► reorder buffer ──► sink
                                        └── rows that need no request: straight to the reorder buffer ──┘

Memory stays flat however long the sheet: the feeder takes a row from the input only when fewer than `window`
rows are between the input and the sink (queued, in flight, or finished but waiting for an earlier row), so a slow
row holds up at most `window` results, never the whole run. What happens to one row is `RowHandler`'s business.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Protocol

from ..model import RowResult, Status
from ..progress import Progress
from ..protocols import CheckedRowLike
from .figures import PipelineOptions, PipelineStats

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


class Flow:
    """One run's feeder, workers and reorder buffer."""

    def __init__(
        self, options: PipelineOptions, stats: PipelineStats, progress: Progress, rows: RowHandler
    ) -> None:
        self.options = options
        self.stats = stats
        self._progress = progress
        self._rows = rows
        self.buffer: dict[int, RowResult] = {}  # finished, waiting for an earlier row: by input position
        self._next_out = 0

    async def run(self, rows: Iterable[CheckedRowLike], sink: Callable[[RowResult], None]) -> None:
        self._queue: asyncio.Queue[tuple[int, CheckedRowLike] | None] = asyncio.Queue(
            self.options.effective_queue_size
        )
        self._window = asyncio.Semaphore(self.options.effective_window)
        self._sink = sink
        async with asyncio.TaskGroup() as group:
            workers = [group.create_task(self._work()) for _ in range(self.options.concurrency)]
            group.create_task(self._feed(rows, len(workers)))

    async def _feed(self, rows: Iterable[CheckedRowLike], workers: int) -> None:
        position = 0
        for checked in rows:
            await self._window.acquire()
            pending = position + 1 - self._next_out
            self.stats.max_pending = max(self.stats.max_pending, pending)
            self.stats.rows += 1
            if not self._rows.needs_worker(checked):
                self._complete(position, self._rows.without_request(checked))
            elif self._rows.stopping:
                # After a stop every row is still listed, in order: a row nobody sent says so. Validation's
                # verdict is already in memory and nothing is sent, so the rest of a long sheet costs little.
                self._complete(position, self._rows.not_reached(checked))
            else:
                await self._queue.put((position, checked))
            position += 1
            if position % FEED_TURN == 0:
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
            self._complete(position, await self._rows.process(checked))

    def _complete(self, position: int, result: RowResult) -> None:
        """Count the row, then hand over every result that is next in input order."""
        status = result.status.value
        self.stats.counts[status] = self.stats.counts.get(status, 0) + 1
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
