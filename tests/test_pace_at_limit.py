"""`--rate R` at the service's own limit: a 429 eases the rate a little, instead of pausing every request and
resuming at full rate into the next 429 (test_rate.py's simulated service and virtual-time loop)."""

from __future__ import annotations

import math

import pytest

from bulkonboard.sending.figures import pace_lines
from bulkonboard.sending.retry import FixedRate
from tests.test_concurrency import FakeClock, LatencyService
from tests.test_rate import simulate


def test_each_429_eases_a_fixed_rate_once_per_round_trip() -> None:
    clock = FakeClock()
    rate = FixedRate(20.0, clock=clock)
    rate.on_throttle(1.0, sent_at=clock.now - 1.5)
    assert rate.current_rate == pytest.approx(19.2) and rate.eases == 1
    # Answers to requests sent before that ease say nothing new.
    rate.on_throttle(1.0, sent_at=clock.now - 0.5)
    rate.on_throttle(1.0, sent_at=clock.now)
    assert rate.current_rate == pytest.approx(19.2) and rate.eases == 1
    clock.now += 2.0
    rate.on_throttle(1.0, sent_at=clock.now - 0.1)
    assert rate.current_rate == pytest.approx(19.2 * 0.96) and rate.eases == 2
    rate.on_success()
    assert rate.current_rate == pytest.approx(19.2 * 0.96)  # a fixed rate never climbs back on its own


def test_no_pace_is_never_eased_and_a_rate_never_falls_below_its_minimum() -> None:
    unpaced = FixedRate(math.inf)
    unpaced.on_throttle(1.0)
    assert unpaced.current_rate == math.inf and unpaced.eases == 0
    clock = FakeClock()
    slow = FixedRate(0.2, clock=clock, minimum=0.1)
    for _ in range(40):
        clock.now += 10
        slow.on_throttle(1.0)
    assert slow.current_rate == pytest.approx(0.1)


@pytest.mark.parametrize("latency", [0.05, 1.5])
def test_rate_20_against_a_limit_of_20_is_within_a_tenth_of_the_ideal_time(latency: float) -> None:
    rows = 400
    service = LatencyService(limit=20, window=1.0, latency_of=lambda n: latency)
    outcome = simulate(service, rows, rate=20.0, concurrency=256)

    assert outcome.stats.counts["created"] == rows
    assert sorted(service.created.values()) == [1] * rows  # every user exactly once
    ideal = (rows - 1) / 20.0 + latency
    assert outcome.seconds <= 1.1 * ideal
    assert outcome.stats.throttled <= 10  # a few, then none: not a 429 every second
    lines = pace_lines(outcome.stats)
    assert lines["pace"].startswith("rate eased to ") and lines["pace"].endswith("/s after 429s")
    assert 0.9 * 20 <= outcome.stats.rate_settled < 20.0


def test_a_rate_the_service_allows_is_never_eased() -> None:
    service = LatencyService(limit=25, window=1.0, latency_of=lambda n: 0.25)
    outcome = simulate(service, 200, rate=20.0, concurrency=256)
    assert not service.throttled_at and outcome.stats.rate_settled == 20.0
    assert pace_lines(outcome.stats) == {}
