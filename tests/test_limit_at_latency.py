"""No `--rate`, a service limit of 20/s, answers in 1-2 s: how close to the limit's own time (issue 18).

The real `Pipeline` and `SlowStartRate` against test_rate.py's simulated service on the virtual-time loop (no
timed assertion: every figure is a pure function of the code and the seed). Two ways to count a request:

- Partner Center's: when it arrives (a few ms after it left); the work, and so the success, takes the latency
  after that, but a 429 is answered at once. The successes then lag a latency behind the rate, and slow start
  cut to them (about half the limit, 1.5-1.9x the ideal time); it now cuts to the rate that filled the window.
- The sandbox's (`--latency-ms N-M`): after the whole latency, drawn per request. That is a network that
  delays each request by 1-2 s at random, so requests sent evenly arrive in clumps and a 20/s window refuses
  some at any rate above about 15/s. The fastest any pace can go there is about 1.2x (measured in this
  simulation: a constant 22/s from the first request, 1.18-1.21x with a fifth of the requests answered 429); a
  run that starts at 5/s and keeps 429s rare takes about 1.35x. Held here so that it gets no worse.
"""

from __future__ import annotations

import pytest

from bulkonboard.sending.retry import SlowStartRate
from tests.test_concurrency import LatencyService, uniform
from tests.test_rate import simulate

ROWS = 400
IDEAL = (ROWS - 1) / 20 + 1.5  # the limit's time, first request to last answer (the bench's yardstick)


@pytest.mark.parametrize("seed", [18, 1, 2])
def test_a_service_counting_at_arrival_is_used_within_a_fifth_of_its_time(seed: int) -> None:
    service = LatencyService(limit=20, window=1.0, latency_of=uniform(1.0, 2.0, seed), counted_after=0.02)
    outcome = simulate(service, ROWS, controller=lambda clock: SlowStartRate(clock=clock), concurrency=256)

    assert outcome.stats.counts["created"] == ROWS
    assert sorted(service.created.values()) == [1] * ROWS  # every user exactly once
    assert outcome.seconds <= 1.2 * IDEAL
    assert outcome.stats.throttled <= 10  # a 429 now and then, where the rate touches the limit
    controller: SlowStartRate = outcome.controller
    assert controller.discovered_rate is not None and 17.0 <= controller.discovered_rate <= 21.0


def test_the_sandboxs_clumped_arrivals_cost_no_more_than_they_did() -> None:
    service = LatencyService(limit=20, window=1.0, latency_of=uniform(1.0, 2.0, 18))
    outcome = simulate(service, ROWS, controller=lambda clock: SlowStartRate(clock=clock), concurrency=256)

    assert outcome.stats.counts["created"] == ROWS
    assert sorted(service.created.values()) == [1] * ROWS
    assert outcome.seconds <= 1.4 * IDEAL
    assert outcome.stats.throttled <= 0.12 * outcome.stats.requests
