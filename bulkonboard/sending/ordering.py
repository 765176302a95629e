"""Managers first: the rows that manage another row of the sheet are created before every other row, top managers
first, so that a report's manager step always finds its manager, whatever the order of the sheet.

Why a phase of its own, not a sort of the whole input and not a report waiting for its manager:
- sorting would hold the whole sheet in memory and write the results out of input order;
- a report that waited for a manager further down the sheet would hold a worker and the reorder window
  (flow.py) while the feeder may never reach that manager: with few workers or a long sheet, a deadlock.
Managers are a small part of a sheet (one per team), and validation knows which rows they are and how deep
(sheets/managers.py), so they are run first, a level at a time with the run's concurrency, and their results are
held until the stream of all rows reaches them: memory grows with the managers only, the results keep input
order, and no worker ever waits on another row. A manager row that failed is simply not there for its reports:
their manager step fails (`partial`, `manager.failed`) and the next run, which creates the manager, finishes them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from ..model import RowResult
from ..protocols import CheckedRowLike
from .flow import RowHandler
from .pace import CURRENT_CUSTOMER

#: Told of each manager row finished in the first phase: (customer, UPN, user id or None).
ManagerDone = Callable[[str, str, str | None], None]


class ManagersFirst:
    """A `RowHandler` around the run's own: rows finished in the first phase are handed back as they are, the
    others go through the inner handler as always."""

    def __init__(self, inner: RowHandler, *, concurrency: int, default_customer: str = "") -> None:
        self._inner = inner
        self._concurrency = max(1, concurrency)
        self._default_customer = default_customer
        self._held: dict[int, RowResult] = {}  # by sheet row number: unique in a sheet

    @property
    def stopping(self) -> bool:
        return self._inner.stopping

    async def run_first(
        self, levels: Sequence[Sequence[CheckedRowLike]], done: ManagerDone | None = None
    ) -> None:
        """Each level's rows with the run's concurrency, a level after the other; a stop leaves the rest to the
        stream (which lists them as not reached)."""
        gate = asyncio.Semaphore(self._concurrency)

        async def one(checked: CheckedRowLike) -> None:
            customer = checked.user.customerTenantId or self._default_customer
            CURRENT_CUSTOMER.set(customer)  # this task's requests count in its customer's pace (pace.py)
            async with gate:
                if self.stopping:
                    return
                result = await self._inner.process(checked)
            self._held[checked.user.row] = result
            if done is not None:
                done(customer, checked.user.userPrincipalName, result.userId)

        for level in levels:
            if self.stopping:
                return
            async with asyncio.TaskGroup() as group:
                for checked in level:
                    if self._inner.needs_worker(checked):
                        group.create_task(one(checked))

    def held(self) -> dict[int, RowResult]:
        return dict(self._held)

    def needs_worker(self, checked: CheckedRowLike) -> bool:
        return checked.user.row not in self._held and self._inner.needs_worker(checked)

    def without_request(self, checked: CheckedRowLike) -> RowResult:
        held = self._held.pop(checked.user.row, None)
        return held if held is not None else self._inner.without_request(checked)

    def not_reached(self, checked: CheckedRowLike) -> RowResult:
        return self._inner.not_reached(checked)

    async def process(self, checked: CheckedRowLike) -> RowResult:
        return await self._inner.process(checked)
