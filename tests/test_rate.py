"""Rate controllers against a simulated Partner Center, in simulated time.

Two levels:
- the controllers on their own, driven call by call with a fake clock (`SlowStartRate`'s rules);
- the real `Pipeline` (workers, aiolimiter pacing, the 429 gate, retries) on an event loop whose clock is
  virtual: whenever nothing is ready to run, the loop jumps to its next timer instead of waiting for it. So
  aiolimiter, which reads `loop.time()`, paces in simulated seconds, a 30-second run takes well under a second,
  and every run is exactly repeatable (no real I/O, no threads, nothing random).

The simulated service is the sandbox's throttle: at most N creations in any sliding window of W seconds,
each answer after a fixed latency, a 429 with a whole-seconds Retry-After (at least 1) past the limit, and
optionally Graph's early warning (the fraction of the limit used, past 80 %) on the answers.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from aiolimiter import AsyncLimiter

from bulkonboard.model import RowResult, UserRow
from bulkonboard.sending.pipeline import Pipeline, PipelineOptions, PipelineStats
from bulkonboard.sending.retry import FixedRate, Pacer, SlowStartRate
from bulkonboard.service.partnercenter import CreatedUser, Throttled
from bulkonboard.sheets.validation import CheckedRow
from tests.support import checked_row

T = TypeVar("T")
CUSTOMER = "11111111-2222-3333-4444-555555555555"


# ---------------------------------------------------------------------------------------------------------------
# simulated time


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock moves only when the loop would otherwise wait: then it jumps to the next timer.

    Nothing here does real I/O, so the loop never needs to wait for the outside world; a run's timing is then a
    pure function of the code, independent of how loaded the machine is.
    """

    def __init__(self) -> None:
        super().__init__()
        self._now = 0.0

    def time(self) -> float:
        return self._now

    def _run_once(self) -> None:
        # Read-only peeks at BaseEventLoop's queues (CPython 3.11+): when nothing is ready, move the clock
        # to the earliest live timer, so the base loop finds it due and polls without blocking. A real clock
        # always moves a little between two turns; so does this one (1 ns), or a timer that keeps setting
        # itself for "now" (aiolimiter does, on a float rounding) would spin forever.
        if not self._ready:  # type: ignore[attr-defined]
            live = [timer.when() for timer in self._scheduled if not timer.cancelled()]  # type: ignore[attr-defined]
            if live:
                self._now = max(self._now + 1e-9, min(live))
        super()._run_once()  # type: ignore[misc]


def in_virtual_time(make: Callable[[], Awaitable[T]]) -> T:
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(make())
    finally:
        loop.close()


# ---------------------------------------------------------------------------------------------------------------
# the simulated service


@dataclass
class ThrottledService:
    """Partner Center's creation endpoint behind a sliding-window limit, timed by the running loop's clock.

    Like the sandbox: the latency is spent first, then the creation is admitted or refused, then answered. With
    `counted_after` set, like Partner Center instead: the request is counted when it arrives (that many seconds
    after it left), a 429 is answered at once, and a success after the rest of the latency (the work).
    """

    limit: int | None  # creations per window; None: no limit
    window: float = 1.0
    latency: float = 0.1
    warnings: bool = False  # answer with the usage of the limit past 80 %, like Graph
    created: dict[str, int] = field(default_factory=dict)  # upn -> times created
    admitted: deque[float] = field(default_factory=deque)
    admissions: list[float] = field(default_factory=list)
    throttled_at: list[float] = field(default_factory=list)
    retry_afters: list[float] = field(default_factory=list)
    sent_at: list[float] = field(default_factory=list)
    most_in_window: int = 0
    warned: int = 0
    last_usage: float | None = None  # the warning sent with the latest success
    counted_after: float | None = None  # None: counted after the whole latency (the sandbox's way)

    async def preflight(self, customer_id: str) -> dict[str, Any]:
        return {"id": customer_id}

    async def find_user_by_upn(self, customer_id: str, upn: str) -> dict[str, Any] | None:
        return None

    async def create_user(self, customer_id: str, user: UserRow, *, request_id: str) -> CreatedUser:
        loop = asyncio.get_running_loop()
        self.sent_at.append(loop.time())
        latency = self.latency
        await asyncio.sleep(latency if self.counted_after is None else min(latency, self.counted_after))
        now = loop.time()
        admitted = self.admitted
        while admitted and admitted[0] <= now - self.window:
            admitted.popleft()
        if self.limit is not None and len(admitted) >= self.limit:
            retry_after = float(max(1, math.ceil(admitted[0] + self.window - now)))
            self.throttled_at.append(now)
            self.retry_afters.append(retry_after)
            raise Throttled(
                method="POST", url="https://pc.test/v1/users", request_id=request_id, status=429,
                retry_after=retry_after,
            )  # fmt: skip
        admitted.append(now)
        self.admissions.append(now)
        self.most_in_window = max(self.most_in_window, len(admitted))
        upn = user.userPrincipalName
        self.created[upn] = self.created.get(upn, 0) + 1
        if self.warnings and self.limit is not None and len(admitted) / self.limit > 0.8:
            self.warned += 1
            self.last_usage = len(admitted) / self.limit
        else:
            self.last_usage = None
        if self.counted_after is not None:
            await asyncio.sleep(max(0.0, latency - self.counted_after))  # the work, after it was counted
        return CreatedUser(
            id=f"user-{len(self.admissions)}", userPrincipalName=upn, state="active", userDomainType="managed"
        )


class WarningsPassedOn:
    """Hands the service's usage warning to the controller with each success, as the pipeline will once the
    client surfaces `x-ms-throttle-limit-percentage` (see docs/BENCHMARKS.md, "Hooks")."""

    def __init__(self, inner: SlowStartRate, service: ThrottledService) -> None:
        self.inner = inner
        self.service = service

    @property
    def current_rate(self) -> float:
        return self.inner.current_rate

    def on_success(self, *, usage: float | None = None) -> None:
        self.inner.on_success(usage=self.service.last_usage)

    def on_throttle(self, retry_after: float | None, *, sent_at: float | None = None) -> None:
        self.inner.on_throttle(retry_after, sent_at=sent_at)


def rows(count: int) -> list[CheckedRow]:
    return [checked_row(n + 2, f"user{n}@contoso.com", customer=CUSTOMER) for n in range(count)]


@dataclass
class Outcome:
    seconds: float  # first send to last answer, simulated
    stats: PipelineStats
    results: list[RowResult]
    controller: Any


def simulate(
    service: ThrottledService,
    count: int,
    *,
    controller: Callable[[Callable[[], float]], Any] | None = None,
    rate: float | None = None,
    concurrency: int = 16,
) -> Outcome:
    async def run() -> Outcome:
        loop = asyncio.get_running_loop()
        made = controller(loop.time) if controller is not None else None
        pipeline = Pipeline(
            service,
            options=PipelineOptions(concurrency=concurrency, rate=rate),
            customer=CUSTOMER,
            rate_controller=made,
        )
        results: list[RowResult] = []
        stats = await pipeline.run(rows(count), results.append, total=count)
        return Outcome(stats.sending_seconds, stats, results, made)

    return in_virtual_time(run)


# ---------------------------------------------------------------------------------------------------------------
# the virtual loop itself, and aiolimiter's pacing on it


def test_the_virtual_loop_jumps_to_timers_and_keeps_their_order() -> None:
    async def run() -> list[tuple[str, float]]:
        loop = asyncio.get_running_loop()
        seen: list[tuple[str, float]] = []

        async def after(name: str, delay: float) -> None:
            await asyncio.sleep(delay)
            seen.append((name, loop.time()))

        await asyncio.gather(after("c", 30.0), after("a", 0.5), after("b", 2.25))
        return seen

    assert in_virtual_time(run) == [("a", 0.5), ("b", 2.25), ("c", 30.0)]


@pytest.mark.parametrize("rate", [2.0, 20.0, 37.5])
def test_aiolimiter_with_a_bucket_of_one_spaces_acquisitions_by_exactly_one_over_the_rate(
    rate: float,
) -> None:
    """The pipeline's pacer (a limiter of 1 per 1/rate s) against the loop clock: no burst, no drift."""

    async def run() -> list[float]:
        loop = asyncio.get_running_loop()
        limiter = AsyncLimiter(1, 1.0 / rate)
        times: list[float] = []

        async def worker() -> None:
            for _ in range(25):
                await limiter.acquire()
                times.append(loop.time())

        await asyncio.gather(*(worker() for _ in range(8)))
        return times

    times = in_virtual_time(run)
    gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    assert len(times) == 200
    assert min(gaps) == pytest.approx(1.0 / rate, rel=1e-6)
    assert max(gaps) == pytest.approx(1.0 / rate, rel=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# pace: a rate the person chose


def test_a_fixed_rate_is_held_with_slow_answers_and_no_429_under_a_higher_limit() -> None:
    service = ThrottledService(limit=25, window=1.0, latency=0.25)
    outcome = simulate(service, 400, rate=20.0)

    assert outcome.stats.counts["created"] == 400 and not service.throttled_at
    sends = service.sent_at
    achieved = (len(sends) - 1) / (sends[-1] - sends[0])
    assert achieved >= 0.97 * 20.0
    # never faster than asked, but for the one request aiolimiter's bucket of two lets through at the start
    assert (len(sends) - 2) / (sends[-1] - sends[0]) <= 20.0 * (1 + 1e-9)
    assert service.most_in_window <= 21  # no burst: a 1 s window holds what 1 s at 20/s sends (ends included)


# ---------------------------------------------------------------------------------------------------------------
# unknown limit: slow start against the pipeline


IDEAL_SECONDS = 600 / 20  # 600 rows at the hidden 20/s


def test_slow_start_finds_a_hidden_limit_within_a_quarter_of_the_ideal_time() -> None:
    service = ThrottledService(limit=20, window=1.0, latency=0.1)
    outcome = simulate(service, 600, controller=lambda clock: SlowStartRate(clock=clock))

    assert outcome.seconds <= 1.25 * IDEAL_SECONDS
    assert outcome.stats.counts["created"] == 600
    assert sorted(service.created.values()) == [1] * 600  # every user exactly once
    controller: SlowStartRate = outcome.controller
    assert controller.phase == SlowStartRate.HOLDING
    # It settled just under the limit, and the pipeline reports where it ended.
    assert controller.discovered_rate is not None and 17.0 <= controller.discovered_rate <= 20.0
    assert outcome.stats.rate_settled == controller.current_rate
    assert 17.0 <= outcome.stats.rate_settled <= 20.5
    # A handful of 429 episodes, not a saw-tooth: the throttled answers are a small share of the requests.
    assert outcome.stats.throttled <= 0.1 * outcome.stats.requests


def test_early_warnings_settle_it_before_the_429s() -> None:
    service = ThrottledService(limit=20, window=1.0, latency=0.1, warnings=True)

    def controller(clock: Callable[[], float]) -> WarningsPassedOn:
        return WarningsPassedOn(SlowStartRate(clock=clock), service)

    outcome = simulate(service, 600, controller=controller)

    assert outcome.stats.counts["created"] == 600
    assert service.warned > 0
    slow_start: SlowStartRate = outcome.controller.inner
    assert slow_start.phase == SlowStartRate.HOLDING and slow_start.warnings > 0
    # At most the one 429 a fresh limiter's first request can cause (see `retry.Pacer`), where slow start
    # without warnings overshoots into several.
    assert outcome.stats.throttled <= 1
    assert outcome.stats.rate_settled >= 0.9 * 20
    assert outcome.seconds <= 1.2 * IDEAL_SECONDS


def test_a_minute_long_window_is_measured_over_the_retry_after() -> None:
    """30 a minute: the quota is used in seconds, then Retry-After says how long the window is.

    The fastest any client can be: 30 at once, then (the window slides) 30 more a minute later, and so on:
    90 rows in ~121 s by bursts. An even pace has to wait out the first burst, then goes at 0.5/s: ~180 s.
    The controller paces evenly (bursts are what a shared service dislikes), so 180 s is its yardstick.
    """
    service = ThrottledService(limit=30, window=60.0, latency=0.1)
    outcome = simulate(service, 90, controller=lambda clock: SlowStartRate(clock=clock))

    assert outcome.stats.counts["created"] == 90
    assert sorted(service.created.values()) == [1] * 90
    controller: SlowStartRate = outcome.controller
    # After the first 429 it knew the limit was about half a user a second, not the burst it had seen.
    assert controller.discovered_rate is not None and controller.discovered_rate <= 0.6
    assert outcome.seconds <= 180 * 1.1
    assert outcome.stats.throttled <= 16  # the burst's requests in flight, then one or two now and then


# ---------------------------------------------------------------------------------------------------------------
# SlowStartRate's rules, call by call


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def successes(controller: SlowStartRate, clock: Clock, count: int, per_second: float, **kwargs: Any) -> None:
    for _ in range(count):
        clock.now += 1.0 / per_second
        controller.on_success(**kwargs)


def test_slow_start_grows_exponentially_in_time() -> None:
    clock = Clock()
    controller = SlowStartRate(5.0, growth=0.7, clock=clock)
    # Every success adds 0.7/s: the rate grows by 70 % of itself a second, whatever it is.
    successes(controller, clock, 5, per_second=5.0)
    assert controller.current_rate == pytest.approx(5.0 + 5 * 0.7)
    assert controller.phase == SlowStartRate.SLOW_START and controller.discovered_rate is None


def test_the_first_429_holds_just_under_what_was_accepted() -> None:
    clock = Clock()
    controller = SlowStartRate(20.0, maximum=20.0, headroom=0.95, clock=clock)
    successes(controller, clock, 40, per_second=20.0)  # sent at 20/s, and 20 got through in each second
    controller.on_throttle(1.0, sent_at=clock.now - 0.1)
    assert controller.phase == SlowStartRate.HOLDING
    assert controller.current_rate == pytest.approx(0.95 * 20.0, rel=0.06)
    assert controller.discovered_rate == controller.current_rate


def test_a_429_answered_at_once_cuts_to_the_rate_that_filled_the_window_not_to_lagging_successes() -> None:
    """A service that counts a request when it arrives answers its 429 at once, and its successes after the work:
    in slow start the successes of the last second left when the rate was lower."""
    clock = Clock()
    controller = SlowStartRate(10.0, growth=0.5, maximum=100.0, headroom=0.95, clock=clock)
    successes(controller, clock, 20, per_second=10.0)  # answers at 10/s while the rate grew from 10 to 20/s
    assert controller.current_rate == pytest.approx(20.0)
    controller.on_throttle(1.0, sent_at=clock.now - 0.03)
    # The requests of the last second before the throttled one left at 15-20/s (17.5 on average), while only
    # 10 successes came back in it.
    assert controller.current_rate == pytest.approx(0.95 * 17.5, rel=0.03)


def test_a_short_429_while_holding_eases_from_the_rate_its_request_left_at() -> None:
    clock = Clock()
    controller = SlowStartRate(20.0, maximum=20.0, probe=0.0, ease=0.95, clock=clock)
    successes(controller, clock, 40, per_second=20.0)
    controller.on_throttle(1.0, sent_at=clock.now)
    held = controller.current_rate
    successes(controller, clock, 10, per_second=10.0)  # a thin second: arrivals clumped, only 10 came back
    controller.on_throttle(1.0, sent_at=clock.now - 0.5)
    # 5 % off the rate the request left at, not down to the 10 successes of that second.
    assert controller.current_rate == pytest.approx(0.95 * held) and controller.cuts == 2


def test_a_429_sent_before_the_cut_is_no_news() -> None:
    clock = Clock()
    controller = SlowStartRate(30.0, maximum=30.0, clock=clock)
    successes(controller, clock, 40, per_second=20.0)
    cut_at = clock.now
    controller.on_throttle(1.0, sent_at=cut_at - 0.2)
    held = controller.current_rate
    for late in (0.15, 0.1, 0.05):
        clock.now += 0.01
        controller.on_throttle(1.0, sent_at=cut_at - late)
    assert controller.current_rate == held and controller.cuts == 1
    clock.now += 0.5
    controller.on_throttle(1.0, sent_at=cut_at + 0.1)  # sent after the cut: the held rate is still too fast
    assert controller.cuts == 2 and controller.current_rate <= 0.95 * held + 1e-9


def test_repeated_429s_always_slow_it_down() -> None:
    """Even when the measured acceptance says otherwise, each new 429 takes off at least the headroom."""
    clock = Clock()
    controller = SlowStartRate(10.0, clock=clock)
    rates = []
    for _ in range(5):
        successes(controller, clock, 10, per_second=100.0)  # a burst that "was accepted" at 100/s
        before = controller.current_rate
        controller.on_throttle(1.0, sent_at=clock.now)
        assert controller.current_rate <= 0.95 * before + 1e-9
        rates.append(controller.current_rate)
        clock.now += 0.001
    # The probes between the 429s (a few thousandths) never make up for a cut.
    assert all(later < 0.96 * earlier for earlier, later in zip(rates, rates[1:], strict=False))


def test_a_long_retry_after_widens_the_look_back() -> None:
    clock = Clock()
    controller = SlowStartRate(8.0, clock=clock)
    successes(controller, clock, 30, per_second=8.0)  # a burst of 30 in ~4 s, then 429, retry in 56 s
    controller.on_throttle(56.0, sent_at=clock.now)
    assert controller.current_rate == pytest.approx(0.95 * 30 / 56, rel=0.05)


def test_nothing_accepted_lately_halves() -> None:
    clock = Clock()
    controller = SlowStartRate(8.0, clock=clock)
    controller.on_throttle(1.0, sent_at=0.0)
    assert controller.current_rate == pytest.approx(4.0)


def test_holding_probes_up_gently() -> None:
    clock = Clock()
    controller = SlowStartRate(30.0, maximum=30.0, probe=0.01, clock=clock)
    successes(controller, clock, 40, per_second=20.0)
    controller.on_throttle(1.0, sent_at=clock.now)
    held = controller.current_rate
    for _ in range(10):  # ten seconds at the held rate: about 1 % a second
        successes(controller, clock, int(held), per_second=held)
    assert held * 1.05 <= controller.current_rate <= held * 1.11


def test_a_warning_in_slow_start_ends_it_and_the_rate_closes_in_on_the_estimated_limit() -> None:
    clock = Clock()
    controller = SlowStartRate(16.0, growth=0.0001, clock=clock)
    successes(controller, clock, 32, per_second=16.0)  # 16 a second, no warning yet
    controller.on_success(usage=0.8)  # 16 a second is 80 % of the limit: the limit is 20
    assert controller.phase == SlowStartRate.HOLDING and controller.warnings == 1
    assert controller.discovered_rate == pytest.approx(16.0, rel=0.01)  # growth stops where it is
    rate = controller.current_rate
    for _ in range(8):  # the service keeps saying the same: 80 % used at 16/s (so more fits)
        successes(controller, clock, int(rate), per_second=rate, usage=0.8 * rate / 16.0)
        rate = controller.current_rate
    # Closer to the ceiling (95 % of the 20/s limit) without passing it.
    assert 18.0 <= controller.current_rate <= 19.0 + 1e-9


def test_warnings_while_holding_stop_the_probe_and_trim_only_downwards() -> None:
    clock = Clock()
    controller = SlowStartRate(30.0, maximum=30.0, probe=0.05, clock=clock)
    successes(controller, clock, 40, per_second=20.0)
    controller.on_throttle(1.0, sent_at=clock.now)
    held = controller.current_rate
    successes(controller, clock, 40, per_second=held, usage=0.9)  # near the limit, under the headroom
    # No probe past the limit the warnings put at held / 0.9: the rate only closes in on its headroom.
    assert held <= controller.current_rate <= 0.95 * held / 0.9
    held = controller.current_rate
    successes(controller, clock, 40, per_second=held, usage=1.0)  # at the limit: trim under it
    assert controller.current_rate < held


def test_bounds_are_kept() -> None:
    clock = Clock()
    controller = SlowStartRate(1.0, minimum=0.5, maximum=3.0, clock=clock)
    successes(controller, clock, 50, per_second=1.0)
    assert controller.current_rate == 3.0
    for _ in range(10):
        clock.now += 1
        controller.on_throttle(None, sent_at=clock.now)
    assert controller.current_rate == 0.5
    with pytest.raises(ValueError):
        SlowStartRate(0.1, minimum=0.5)
    with pytest.raises(ValueError):
        SlowStartRate(headroom=1.0)


def test_memory_for_successes_stays_bounded_at_high_rates() -> None:
    clock = Clock()
    controller = SlowStartRate(clock=clock, horizon=10.0)
    successes(controller, clock, 200_000, per_second=5_000.0)  # 40 s at 5,000/s
    assert len(controller._successes._entries) <= 10.0 / 0.01 + 1
    assert len(controller._history._entries) <= 10.0 / 0.01 + 1  # the rates it had: as bounded
    assert controller._successes.since(clock.now - 1.0) == pytest.approx(5_000, rel=0.02)


def test_fixed_rate_ignores_warnings_but_a_429_eases_it() -> None:
    rate = FixedRate(3.5)
    rate.on_success(usage=0.99)
    assert rate.current_rate == 3.5
    rate.on_throttle(1.0, sent_at=0.0)
    assert rate.current_rate == pytest.approx(3.5 * 0.96)  # test_pace_at_limit.py: why, and how often


# ---------------------------------------------------------------------------------------------------------------
# retry.Pacer: the pacer slow start wants (one schedule across rate changes, no drift)


def pacer_times(rate: float, plan: Callable[[Pacer, Callable[[], float]], Awaitable[None]] | None = None,
                count: int = 40, workers: int = 8) -> list[float]:  # fmt: skip
    async def run() -> list[float]:
        loop = asyncio.get_running_loop()
        pacer = Pacer(rate)
        times: list[float] = []
        queue = list(range(count))

        async def worker() -> None:
            while queue:
                queue.pop()
                await pacer.acquire()
                times.append(loop.time())

        tasks = [asyncio.ensure_future(worker()) for _ in range(workers)]
        if plan is not None:
            await plan(pacer, loop.time)
        await asyncio.gather(*tasks)
        return times

    return in_virtual_time(run)


def gaps(times: list[float]) -> list[float]:
    return [later - earlier for earlier, later in zip(times, times[1:], strict=False)]


def test_pacer_spaces_requests_by_one_over_the_rate_from_the_first() -> None:
    times = pacer_times(10.0)
    assert times[0] == 0.0
    assert all(gap == pytest.approx(0.1, abs=1e-6) for gap in gaps(times))


def test_pacer_keeps_its_schedule_when_the_rate_changes() -> None:
    """A new rate applies from the next slot on: no request goes early (aiolimiter's fresh bucket would let
    one go at once), none waits on the old spacing."""

    async def plan(pacer: Pacer, now: Callable[[], float]) -> None:
        await asyncio.sleep(1.05)
        pacer.set_rate(20.0)
        await asyncio.sleep(1.0)
        pacer.set_rate(5.0)

    times = pacer_times(10.0, plan, count=45)
    spacing = gaps(times)
    assert min(spacing) >= 0.05 - 1e-6  # never closer than the fastest rate allows
    slow = [gap for time, gap in zip(times[1:], spacing, strict=False) if time < 1.05]
    fast = [gap for time, gap in zip(times[1:], spacing, strict=False) if 1.2 < time < 2.05]
    cut = [gap for time, gap in zip(times[1:], spacing, strict=False) if time > 2.3]
    assert slow and all(gap == pytest.approx(0.1, abs=1e-6) for gap in slow)
    assert fast and all(gap == pytest.approx(0.05, abs=1e-6) for gap in fast)
    assert cut and all(gap == pytest.approx(0.2, abs=1e-6) for gap in cut)


def test_pacer_makes_up_lateness_but_turns_no_pause_into_a_burst() -> None:
    async def run() -> tuple[list[float], list[float]]:
        loop = asyncio.get_running_loop()
        late: list[float] = []
        lag = iter([0.03] * 10)

        async def late_sleep(seconds: float) -> None:
            await asyncio.sleep(seconds + next(lag, 0.0))  # every wake-up 30 ms late (of 100)

        pacer = Pacer(10.0, sleep=late_sleep)
        for _ in range(11):
            await pacer.acquire()
            late.append(loop.time())

        after_pause: list[float] = []
        await asyncio.sleep(5.0)  # nobody asks for 5 s
        for _ in range(3):
            await pacer.acquire()
            after_pause.append(loop.time())
        return late, after_pause

    late, after_pause = in_virtual_time(run)
    # The slots stay on the 0.1 s grid however late each wake-up is: 10 intervals take 1 s, plus one lag.
    assert late[-1] - late[0] == pytest.approx(1.0 + 0.03, abs=1e-6)
    # After the pause: one at once, then the rate again (no catching up on the 5 s nobody used).
    assert gaps(after_pause) == pytest.approx([0.1, 0.1], abs=1e-6)


def test_pacer_without_a_limit_never_waits() -> None:
    async def run() -> tuple[float, bool]:
        loop = asyncio.get_running_loop()
        pacer = Pacer(math.inf)
        for _ in range(1000):
            await pacer.acquire()
        return loop.time(), pacer.ready()

    assert in_virtual_time(run) == (0.0, True)


def test_pacer_refuses_a_rate_that_is_not_positive() -> None:
    async def run() -> None:
        with pytest.raises(ValueError):
            Pacer(0.0)

    in_virtual_time(run)
