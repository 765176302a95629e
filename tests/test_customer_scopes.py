"""Each customer of a sheet is paced in its own scope (partner + customer), in simulated time (test_rate.py's
virtual-time loop): customers limited apart reach their sum together, and every request of a row's plan (the
steps after create too) counts in the row's customer's scope."""

from __future__ import annotations

import asyncio
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from bulkonboard.model import RowResult, Status, UserRow
from bulkonboard.sending.figures import pace_lines
from bulkonboard.sending.pipeline import Pipeline, PipelineOptions, PipelineStats, RowState, StepOutcome
from bulkonboard.sending.sender import Sender
from bulkonboard.service.partnercenter import CreatedUser, Throttled
from tests.support import checked_row
from tests.test_rate import in_virtual_time

CUSTOMERS = ("customer-a", "customer-b", "customer-c")


@dataclass
class PerCustomerService:
    """Creations limited per customer (a sliding window each), like the sandbox's --customer-rate-limit."""

    limit: int
    window: float = 1.0
    latency: float = 0.25
    admitted: dict[str, deque[float]] = field(default_factory=dict)
    created: dict[str, int] = field(default_factory=dict)
    throttled: dict[str, int] = field(default_factory=dict)

    async def preflight(self, customer_id: str) -> dict[str, str]:
        return {"id": customer_id}

    async def find_user_by_upn(self, customer_id: str, upn: str) -> dict[str, Any] | None:
        return None  # never asked: no answer is lost here

    async def create_user(self, customer_id: str, user: UserRow, *, request_id: str) -> CreatedUser:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(self.latency)
        now = loop.time()
        window = self.admitted.setdefault(customer_id, deque())
        while window and window[0] <= now - self.window:
            window.popleft()
        if len(window) >= self.limit:
            self.throttled[customer_id] = self.throttled.get(customer_id, 0) + 1
            retry_after = float(max(1, math.ceil(window[0] + self.window - now)))
            raise Throttled(method="POST", url="pc", request_id=request_id, status=429, retry_after=retry_after)
        window.append(now)
        self.created[customer_id] = self.created.get(customer_id, 0) + 1
        return CreatedUser(id=f"id-{user.userPrincipalName}", userPrincipalName=user.userPrincipalName,
                           state="active", userDomainType="managed")  # fmt: skip


class ScopeStep:
    """A step after create whose one request notes which customer's scope it was paced in."""

    name = "scope-check"
    code = "scope.failed"
    fails_row_as = Status.PARTIAL

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []  # (the row's customer, the scope its request counted in)

    def needed(self, row: RowState) -> bool:
        return True

    async def run(self, row: RowState, request_id: str, sender: Sender) -> StepOutcome:
        async def call() -> None:
            self.seen.append((row.customer, sender.pacing.scope().customer))

        await sender.request(call)
        return StepOutcome.done()

    async def reconcile(self, row: RowState, request_id: str, sender: Sender) -> bool | None:
        return False  # never in doubt here: every run of this test starts afresh


def run_customers(service: PerCustomerService, count: int, *, steps: tuple[ScopeStep, ...] = ()) -> PipelineStats:
    rows = [checked_row(n + 2, f"user{n}@contoso.com", customer=CUSTOMERS[n % 3]) for n in range(count)]

    async def run() -> PipelineStats:
        pipeline = Pipeline(service, options=PipelineOptions(rate=None), steps=steps)
        results: list[RowResult] = []
        return await pipeline.run(rows, results.append, total=count)

    return in_virtual_time(run)


def test_three_customers_limited_apart_reach_their_sum_together() -> None:
    service = PerCustomerService(limit=10)
    stats = run_customers(service, 450)

    assert stats.counts["created"] == 450
    assert sorted(service.created.values()) == [150, 150, 150]
    combined = 450 / stats.sending_seconds
    assert combined >= 0.9 * 30
    lines = pace_lines(stats)
    assert sorted(lines) == [f"customer {c}" for c in CUSTOMERS]
    for customer in CUSTOMERS:
        assert lines[f"customer {customer}"].startswith("150 created, 0 failed, ")
        achieved = stats.customers[customer].achieved_rate
        assert achieved is not None and achieved >= 0.85 * 10


def test_every_request_of_a_row_counts_in_its_customers_scope() -> None:
    step = ScopeStep()
    stats = run_customers(PerCustomerService(limit=50, latency=0.05), 30, steps=(step,))

    assert stats.counts["created"] == 30 and stats.step_requests == 30
    assert len(step.seen) == 30
    assert all(row_customer == scope for row_customer, scope in step.seen)
    assert {scope for _, scope in step.seen} == set(CUSTOMERS)
