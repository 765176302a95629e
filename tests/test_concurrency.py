"""Requests in flight follow the pace (sending/concurrency.py).

Two levels, as in test_rate.py:
- `InFlightLimit` on its own, with a fake clock moved by hand: what limit it gives for what it has seen;
- the real `Pipeline` against the simulated service on the virtual-time loop (test_rate.py): `--rate 20` held at
  50 ms, 1.5 s and 1-3 s answers, and when the latency changes mid-run. Simulated seconds, no timed assertion:
  every figure is a pure function of the code.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from bulkonboard.model import UserRow
from bulkonboard.sending.concurrency import InFlightLimit
from bulkonboard.service.partnercenter import CreatedUser
from tests.test_rate import Outcome, ThrottledService, simulate


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def answered(limit: InFlightLimit, clock: FakeClock, latencies: list[float]) -> None:
    """Requests that left one after another, each answered after its latency."""
    for latency in latencies:
        ticket = limit.take()
        clock.now += latency
        limit.finished(ticket, answered=True)


# ---------------------------------------------------------------------------------------------------------------
# the limit on its own


def test_nothing_known_yet_starts_at_the_floor_and_grows_faster_than_the_pace_sends() -> None:
    clock = FakeClock()
    limit = InFlightLimit(50, clock=clock, headroom=1.25)
    assert limit.latency() is None
    assert limit.limit(20.0) == 2
    limit.take()
    clock.now += 0.05  # the pacer's next slot at 20/s
    assert limit.has_room(20.0)
    limit.take()
    clock.now += 0.05
    assert limit.has_room(20.0)  # the first request's age (0.1 s) counts as latency seen: room for a third


def test_rate_times_latency_with_headroom_within_floor_and_cap() -> None:
    clock = FakeClock()
    limit = InFlightLimit(256, clock=clock, headroom=1.25)
    answered(limit, clock, [1.5] * 10)
    assert limit.latency() == pytest.approx(1.5)
    assert limit.limit(20.0) == 39  # ceil(20 x 1.5 x 1.25) + 1
    assert limit.limit(0.1) == 2  # the floor: one request in flight and the next leaving
    assert InFlightLimit(16, clock=clock).limit(float("inf")) == 16  # no pace: the cap alone
    small = InFlightLimit(16, clock=clock)
    answered(small, clock, [1.5] * 3)
    assert small.limit(20.0) == 16  # never past --concurrency


def test_a_high_percentile_leaves_room_for_the_spread_but_not_for_a_few_outliers() -> None:
    clock = FakeClock()
    limit = InFlightLimit(1000, clock=clock, percentile=0.95)
    spread = random.Random(7)
    answered(limit, clock, [spread.uniform(1.0, 3.0) for _ in range(64)])
    assert 2.7 <= (limit.latency() or 0) <= 3.0
    clock2 = FakeClock()
    outliers = InFlightLimit(1000, clock=clock2, percentile=0.95)
    answered(outliers, clock2, [0.2] * 61 + [30.0] * 3)
    assert outliers.latency() == pytest.approx(0.2)


def test_a_request_without_an_answer_is_no_latency_sample() -> None:
    clock = FakeClock()
    limit = InFlightLimit(64, clock=clock)
    answered(limit, clock, [0.1] * 5)
    ticket = limit.take()
    clock.now += 60.0  # a connection lost after a minute
    limit.finished(ticket, answered=False)
    assert limit.latency() == pytest.approx(0.1)
    assert limit.in_flight == 0


def test_slower_answers_show_in_the_age_of_requests_in_flight_before_any_comes_back() -> None:
    """Latency jumps from 50 ms to 3 s: the requests in flight age, and the limit grows with them, faster than
    the pace sends (rate x headroom a second), so the pace never waits for the first slow answer."""
    clock = FakeClock()
    limit = InFlightLimit(256, clock=clock, headroom=1.25)
    answered(limit, clock, [0.05] * 64)
    assert limit.limit(20.0) == 3
    tickets = [limit.take() for _ in range(3)]
    assert not limit.has_room(20.0)
    wait = limit.until_more_room(20.0)
    assert wait is not None and wait > 0
    clock.now += wait
    assert limit.has_room(20.0)  # the oldest's age alone made room, no answer needed
    clock.now += 2.0
    assert limit.limit(20.0) >= 20.0 * 2.0  # more than the pace sent meanwhile
    for ticket in tickets:
        limit.finished(ticket, answered=True)
    assert limit.in_flight == 0 and limit.most == 3


def test_at_the_cap_only_an_answer_makes_room() -> None:
    clock = FakeClock()
    limit = InFlightLimit(2, clock=clock)
    first, _ = limit.take(), limit.take()
    clock.now += 10.0
    assert not limit.has_room(20.0) and limit.until_more_room(20.0) is None
    limit.finished(first, answered=True)
    assert limit.has_room(20.0)


# ---------------------------------------------------------------------------------------------------------------
# the pipeline holds the pace at any latency (simulated time)


@dataclass
class LatencyService(ThrottledService):
    """The simulated service with a latency drawn per request (`latency_of(n)` for the n-th request), counting the
    requests in flight at once."""

    latency_of: Callable[[int], float] = lambda n: 0.1
    in_flight: int = 0
    most_in_flight: int = 0

    async def create_user(self, customer_id: str, user: UserRow, *, request_id: str) -> CreatedUser:
        self.latency = self.latency_of(len(self.sent_at))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            return await super().create_user(customer_id, user, request_id=request_id)
        finally:
            self.in_flight -= 1


def pace_of(service: ThrottledService) -> float:
    """Requests a second between the first and the last send: the pace the run held."""
    sends = service.sent_at
    return (len(sends) - 1) / (sends[-1] - sends[0])


def uniform(low: float, high: float, seed: int = 18) -> Callable[[int], float]:
    draw = random.Random(seed)
    return lambda n: draw.uniform(low, high)


@pytest.mark.parametrize(
    ("slowest", "latency_of", "limit"),
    [
        (0.05, lambda n: 0.05, 25),
        (1.5, lambda n: 1.5, 25),
        (3.0, uniform(1.0, 3.0), 30),  # arrivals clump with the spread: a service allowing half as much again
    ],
    ids=["50 ms", "1.5 s", "1-3 s"],
)
def test_rate_20_is_held_at_any_latency_with_no_429(
    slowest: float, latency_of: Callable[[int], float], limit: int
) -> None:
    service = LatencyService(limit=limit, window=1.0, latency_of=latency_of)
    outcome: Outcome = simulate(service, 300, rate=20.0, concurrency=256)

    assert outcome.stats.counts["created"] == 300
    assert not service.throttled_at
    assert pace_of(service) >= 0.95 * 20.0
    # Bounded: about the pace times the slowest latency, with headroom; far from the cap of 256.
    assert service.most_in_flight <= 20.0 * slowest * 1.25 + 3


def test_the_pace_holds_when_answers_slow_down_mid_run() -> None:
    service = LatencyService(limit=25, window=1.0, latency_of=lambda n: 0.05 if n < 150 else 3.0)
    outcome = simulate(service, 400, rate=20.0, concurrency=256)

    assert outcome.stats.counts["created"] == 400 and not service.throttled_at
    assert pace_of(service) >= 0.95 * 20.0
    assert service.most_in_flight >= 55  # it followed: 3 s at 20/s is 60 in flight
    assert service.most_in_flight <= 20.0 * 3.0 * 1.25 + 3


def test_concurrency_is_a_cap_the_pace_cannot_pass() -> None:
    service = LatencyService(limit=None, latency_of=lambda n: 1.0)
    simulate(service, 120, rate=20.0, concurrency=8)
    assert service.most_in_flight == 8
    # 120 requests, 8 at a time, 1 s each: the 15th round cannot leave before 14 s, whatever --rate says.
    assert service.sent_at[-1] - service.sent_at[0] >= 14.0


def test_no_pace_means_the_cap_bounds_alone() -> None:
    service = LatencyService(limit=None, latency_of=lambda n: 0.5)
    simulate(service, 200, rate=float("inf"), concurrency=32)
    assert service.most_in_flight == 32


def test_waiting_for_room_ends_at_a_stop() -> None:
    """A worker waiting for room (the cap reached) is let go by a stop: the run ends, the rows are pending."""
    from bulkonboard.sending.pipeline import Pipeline, PipelineOptions
    from tests.test_rate import in_virtual_time, rows

    service = LatencyService(limit=None, latency_of=lambda n: 30.0)

    async def run() -> dict[str, int]:
        pipeline = Pipeline(service, options=PipelineOptions(concurrency=2, rate=20.0), customer="c")
        results: list[object] = []
        task = asyncio.ensure_future(pipeline.run(rows(10), results.append, total=10))
        while service.in_flight < 2:
            await asyncio.sleep(0.01)
        pipeline.stop()
        stats = await task
        return stats.counts

    counts = in_virtual_time(run)
    assert counts["created"] == 2 and counts["pending"] == 8
