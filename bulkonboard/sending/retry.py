"""When to try a request again, how long to wait first, and how fast to send at all.

In the spirit of hynek's stamina: retry only on conditions named up front (a hook that looks at the failure),
let the hook hand back the wait the service asked for (`Retry-After`) instead of our own backoff, and never
read the real clock or really sleep where a test can hand in its own (`clock`, `sleep`, `rng`).

Three small parts, each replaceable on its own:
- `RetryPolicy`: the named conditions, the bounded number of attempts, exponential backoff with full jitter.
- `PauseGate`: a 429 is about the whole partner (Partner Center counts per partner, or partner + customer), so
  one throttled answer pauses every sender until the time the service named, not just the row that saw it.
- `RateController`: the users/s the run aims for. `FixedRate` is `--rate N` (eased a little by each 429). Without it, `SlowStartRate`
  finds the rate the service allows: from `DEFAULT_RATE` it grows fast until the first 429 (or the service's
  early warning), then holds just under the rate the service was seen to accept and probes gently (plain
  AIMD, halve on a 429 and creep up, needed about 1.7x the time a 20/s limit allows for 600 users where slow
  start needs about 1.1x: docs/BENCHMARKS.md). The controllers sit behind a small protocol, so the pipeline
  does not care which one runs.
- `WaitLog`: one log line per wait of `LONG_WAIT` seconds or more (429 gate, Retry-After, backoff), with its
  reason, however many rows wait behind it.
- `Pacer`: requests 1/rate apart on one schedule that survives rate changes (see its docstring for why the
  pipeline should prefer it to a fresh aiolimiter per rate); `BucketPacer`: a fixed `--rate`, by aiolimiter.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from aiolimiter import AsyncLimiter

from ..defaults import DEFAULT_ATTEMPTS, DEFAULT_RATE  # re-exported: their old home
from ..service.partnercenter import EndlessPaging, MalformedAnswer, ServerError, Throttled, TransportError

T = TypeVar("T")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
#: Looks at a failure and says: False, not worth retrying; True, retry after our backoff; a number, retry
#: after exactly that many seconds (what the service asked for).
RetryHook = Callable[[BaseException], bool | float]

#: A wait this long or longer gets a log line (its reason and length): a run that sits still for more than a
#: few seconds says why. Shorter waits (pacing, the first backoffs) are the normal rhythm of a run.
LONG_WAIT = 5.0

#: A child of console's "bulkonboard" logger, so its lines take the run's --log-format (text or JSON).
log = logging.getLogger("bulkonboard.waits")



def retry_on_service_trouble(failure: BaseException) -> bool | float:
    """The failures worth another try: throttling, server errors, and no (usable) answer at all.

    A business refusal (4xx) is not: the same request would be refused again. When the service named a wait
    (`Retry-After`, already parsed, floored and capped by the client) that wait is the answer.
    """
    if isinstance(failure, Throttled | ServerError):
        return failure.retry_after if failure.retry_after is not None else True
    if isinstance(failure, EndlessPaging):
        return False  # the same list would run away again (it is bounded, but the bound is large)
    return isinstance(failure, TransportError | MalformedAnswer)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter (AWS's "Exponential Backoff and Jitter"): the wait before retry n
    is uniform in [0, min(maximum, initial * multiplier**(n-1))], so senders that failed together do not come
    back together."""

    initial: float = 1.0
    maximum: float = 30.0
    multiplier: float = 2.0

    def ceiling(self, retry: int) -> float:
        """The longest wait before the `retry`-th retry (1-based)."""
        exponent = max(0, retry - 1)
        # Past ~1000 doublings the float overflows; the cap has long been reached by then anyway.
        if exponent > 1000:
            return self.maximum
        return min(self.maximum, self.initial * self.multiplier**exponent)

    def delay(self, retry: int, rng: random.Random) -> float:
        return rng.uniform(0.0, self.ceiling(retry))


class RetryPolicy:
    """Which failures to retry, how many attempts in all, and how long to wait before each retry."""

    def __init__(
        self,
        *,
        on: RetryHook = retry_on_service_trouble,
        attempts: int = DEFAULT_ATTEMPTS,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.on = on
        self.attempts = attempts
        self.backoff = backoff or Backoff()
        # Seeded by default too: a run's waits can then be replayed when someone asks why it took so long.
        self.rng = rng or random.Random(0)

    def wait_before_retry(self, failure: BaseException, failures: int) -> float | None:
        """Seconds to wait before the next attempt after the `failures`-th counted failure; None: give up."""
        verdict = self.on(failure)
        if verdict is False or failures >= self.attempts:
            return None
        if verdict is True:
            return self.backoff.delay(failures, self.rng)
        return max(0.0, float(verdict))

    async def call(self, attempt: Callable[[], Awaitable[T]], *, sleep: Sleep) -> T:
        """`await attempt()` until it succeeds, a failure is not retryable, or the attempts are used up (then
        the last failure is raised as it came)."""
        failures = 0
        while True:
            try:
                return await attempt()
            except Exception as failure:
                failures += 1
                wait = self.wait_before_retry(failure, failures)
                if wait is None:
                    raise
            await sleep(wait)


class WaitLog:
    """One warning line per wait of `LONG_WAIT` or more, never one per row waiting.

    Waits of one reason that overlap are one wait: every worker behind the 429 gate, or rows backing off together
    after the same burst of 503s. A wait is logged when none of its reason is under way, or when it reaches more
    than `LONG_WAIT` past the end of the one logged (the service asked for longer)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._until: dict[str, float] = {}
        self.lines = 0

    def waiting(self, seconds: float, reason: str, why: str) -> None:
        if not seconds >= LONG_WAIT:
            return
        now = self._clock()
        end = now + seconds
        until = self._until.get(reason)
        if until is not None and now < until and end <= until + LONG_WAIT:
            return
        self._until[reason] = end
        self.lines += 1
        shown = f"{seconds:.0f}" if seconds >= 10 else f"{seconds:.1f}"
        log.warning(
            f"waiting {shown} s: {why}",
            extra={"fields": {"event": "wait", "seconds": round(seconds, 1), "reason": reason}},
        )


class PauseGate:
    """A 429 pauses every sender of the run until the time the service named.

    Only a clock, no loop-bound objects: senders ask `remaining()` before each request and wait that long
    (their own wait can then be cut short by a stop).
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.resume_at = -math.inf
        self.pauses = 0

    def pause_for(self, seconds: float) -> None:
        """Nobody sends for `seconds` from now; a later resume time already set is kept."""
        self.pauses += 1
        self.resume_at = max(self.resume_at, self._clock() + max(0.0, seconds))

    def remaining(self) -> float:
        return max(0.0, self.resume_at - self._clock())


class RateController(Protocol):
    """The users/s a run aims for; the pipeline tells it about every create's answer.

    `usage` is the service's early warning, when it sends one: the fraction of its limit already used
    (Graph's `x-ms-throttle-limit-percentage`, which despite its name is a fraction, sent past 0.8).
    `sent_at` is when the throttled request left (the controller's clock), so that the 429s of requests
    sent before a cut are not taken as news.
    """

    @property
    def current_rate(self) -> float: ...

    def on_success(self, *, usage: float | None = None) -> None: ...

    def on_throttle(self, retry_after: float | None, *, sent_at: float | None = None) -> None: ...


class FixedRate:
    """`--rate N`: the person chose the rate, and a 429 says the service allows a little less.

    Why ease rather than pause at full rate: pausing every request for the Retry-After and resuming at the same
    rate refills the service's window at once, and the next 429 comes a second later (measured: 1.92x the ideal
    time against a limit of exactly R). So each 429 eases the rate by `ease` (4 %, e.g. 20 to 19.2/s), once per
    round trip: a 429 for a request sent before the last ease says nothing new. `eases` counts them (the Summary
    says "rate eased to 19.2/s after 429s"). The sender decides who waits (see `Sender.throttled`).

    `math.inf` means no pacing at all (concurrency alone bounds the run): for tests and local sandboxes.
    """

    def __init__(
        self, rate: float, *, ease: float = 0.96, minimum: float = 0.1, clock: Clock = time.monotonic
    ) -> None:
        if not rate > 0:
            raise ValueError("the rate must be a positive number of users per second")
        if not 0 < ease < 1:
            raise ValueError("ease must be between 0 and 1")
        self._rate = float(rate)
        self.ease = ease
        self.minimum = min(minimum, self._rate)
        self._clock = clock
        self._last_ease = -math.inf
        self.eases = 0

    @property
    def current_rate(self) -> float:
        return self._rate

    def on_success(self, *, usage: float | None = None) -> None:
        pass

    def on_throttle(self, retry_after: float | None, *, sent_at: float | None = None) -> None:
        if math.isinf(self._rate) or (sent_at is not None and sent_at <= self._last_ease):
            return
        self._rate = max(self.minimum, self._rate * self.ease)
        self._last_ease = self._clock()
        self.eases += 1


class Pacer:
    """Lets requests go 1/rate seconds apart, on one schedule that survives a change of rate.

    Why not aiolimiter here: its rate is fixed, so a new rate needs a new limiter, whose empty bucket lets the
    next request go at once; a controller that adjusts often (slow start does, many times a second) then
    paces nothing. And its bucket of one forgets lateness: each wake-up a little late makes the whole run
    a little slower (a drift the pace goal, 0.97 R, cannot afford at high rates). This pacer keeps the time
    of the last slot: the next is one interval after it, whatever the rate is by then; lateness under one
    interval is made up, a longer gap (a pause, no work) starts afresh instead of turning into a burst.

    Waiters queue on a lock (asyncio's is first come, first served), so one timer runs at a time, not one per
    worker. Made inside the running loop (the lock is loop-bound); `clock` and `sleep` default to the loop's.
    """

    def __init__(self, rate: float, *, clock: Clock | None = None, sleep: Sleep | None = None) -> None:
        loop = asyncio.get_running_loop()
        self._clock: Clock = clock or loop.time
        self._sleep: Sleep = sleep or asyncio.sleep
        self._lock = asyncio.Lock()
        self._last = -math.inf  # the slot of the latest request let through
        self.rate = math.nan
        self._interval = 0.0
        self.granted = 0
        self.set_rate(rate)

    def set_rate(self, rate: float) -> None:
        if not rate > 0:
            raise ValueError("the rate must be a positive number of users per second")
        self.rate = rate
        self._interval = 0.0 if math.isinf(rate) else 1.0 / rate

    def ready(self) -> bool:
        """True when `acquire` would not wait."""
        return not self._lock.locked() and self._last + self._interval <= self._clock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                due = self._last + self._interval
                now = self._clock()
                if due <= now:
                    break
                await self._sleep(due - now)  # the rate may change meanwhile: look again
            self._last = due if now - due < self._interval else now
            self.granted += 1


class BucketPacer:
    """`--rate R` held by aiolimiter: a bucket of two requests refilled at R a second.

    Why two: a bucket of one forgets every late wake-up, and the run drifts below R (measured 0.97 R at 50/s,
    0.967 R at 100/s with 250 ms answers); a bucket of two makes up the lateness (1.002 R) while any one-second
    window sees at most R + 1 requests, so a service whose limit is above R never answers 429. Only for a fixed
    rate: an adaptive one, which changes many times a second, is paced by `Pacer` (a new aiolimiter per
    change would let its fresh bucket through at once).
    """

    BUCKET = 2

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._limiter = None if math.isinf(rate) else AsyncLimiter(self.BUCKET, self.BUCKET / rate)

    def ready(self) -> bool:
        return self._limiter is None or self._limiter.has_capacity()

    async def acquire(self) -> None:
        if self._limiter is not None:
            await self._limiter.acquire()


class _RecentSuccesses:
    """How many successes came back in the last few seconds, in bounded memory however fast they come.

    Successes closer together than `resolution` share one entry, so a run at thousands a second keeps at most
    `horizon / resolution` entries; counts over a second are then exact to about 1 %.
    """

    def __init__(self, horizon: float, resolution: float = 0.01) -> None:
        self.horizon = horizon
        self.resolution = resolution
        self._entries: deque[list[float]] = deque()  # [time of the entry's first success, count]
        self.first: float | None = None

    def add(self, now: float) -> None:
        if self.first is None:
            self.first = now
        entries = self._entries
        if entries and now - entries[-1][0] < self.resolution:
            entries[-1][1] += 1
        else:
            entries.append([now, 1])
        oldest = now - self.horizon
        while entries and entries[0][0] < oldest:
            entries.popleft()

    def since(self, moment: float) -> int:
        """Successes after `moment` (newest first, so a short look back stays cheap)."""
        total = 0
        for when, count in reversed(self._entries):
            if when <= moment:
                break
            total += int(count)
        return total


class SlowStartRate:
    """Finds the rate the service allows when nobody knows it: TCP's slow start, then a careful hold.

    Why not plain AIMD: from a safe start, additive increase takes a long time to reach the limit and every
    429 then halves the rate, so a run spends much of its time at a fraction of what the service allows
    (about 1.7x the ideal time against a 20/s limit). Instead:

    - Slow start: each success adds `growth` users/s, so the rate multiplies by e**growth a second (about
      doubling), from a start that is safe for any tenant (`DEFAULT_RATE`).
    - The first 429 ends it. The service's window was full, so the successes just before it say what it
      accepts: those in the last `window` seconds, or in the last Retry-After seconds when that is longer (a
      minute-long window asks for a long wait, and its whole quota came back in that time). The rate is
      set to `headroom` of that, and never above `headroom` of the rate it had.
    - Hold: the rate creeps up by `probe` (a fraction) a second, so that a limit that rises is found again;
      a 429 cuts it as above, at least by 1 - `headroom` each time, so repeated 429s always slow it down.
    - Early warnings: a success answered with a usage past `warning_threshold` of the limit ends slow start
      before any 429. The limit is then about the recent successes divided by that usage, which puts a
      ceiling at `headroom` of it: above it the rate is trimmed, below it the rate closes in on it.

    Retry-After itself is the pipeline's to honour (every sender waits it out, see `PauseGate`); here it
    only sizes the look back. A 429 for a request sent before the last cut says nothing new and is ignored.
    """

    SLOW_START = "slow start"
    HOLDING = "holding"

    def __init__(
        self,
        initial: float = DEFAULT_RATE,
        *,
        minimum: float = 0.1,
        maximum: float = 1000.0,
        growth: float = 0.7,
        headroom: float = 0.95,
        probe: float = 0.003,
        window: float = 1.0,
        horizon: float = 300.0,
        warning_threshold: float = 0.8,
        approach: float = 0.5,
        clock: Clock = time.monotonic,
    ) -> None:
        if not 0 < minimum <= initial <= maximum:
            raise ValueError("need 0 < minimum <= initial <= maximum")
        if not 0 < headroom < 1:
            raise ValueError("headroom must be between 0 and 1")
        if growth <= 0 or probe < 0 or window <= 0 or horizon < window:
            raise ValueError("need growth > 0, probe >= 0 and 0 < window <= horizon")
        self._rate = float(initial)
        self.minimum = minimum
        self.maximum = maximum
        self.growth = growth
        self.approach = approach
        self.headroom = headroom
        self.probe = probe
        self.window = window
        self.warning_threshold = warning_threshold
        self._clock = clock
        self._successes = _RecentSuccesses(horizon)
        self.phase = self.SLOW_START
        self._last_cut = -math.inf
        #: The rate slow start ended at (None while it runs): what a person wants to know about the service.
        self.discovered_rate: float | None = None
        self.cuts = 0
        self.warnings = 0

    @property
    def current_rate(self) -> float:
        return self._rate

    def on_success(self, *, usage: float | None = None) -> None:
        now = self._clock()
        self._successes.add(now)
        if usage is not None and usage >= self.warning_threshold:
            self._warned(usage, now)
        elif self.phase == self.SLOW_START:
            self._set(self._rate + self.growth)
        else:
            # `probe` a second spread over the successes of a second (one per 1/rate seconds).
            self._set(self._rate * (1.0 + self.probe / max(self._rate, 1.0)))

    def on_throttle(self, retry_after: float | None, *, sent_at: float | None = None) -> None:
        if sent_at is not None and sent_at <= self._last_cut:
            return  # sent at the old rate: the cut already answered it
        now = self._clock()
        look_back = min(self._successes.horizon, max(retry_after or 0.0, self._span()))
        accepted = self._successes.since(now - look_back) / look_back
        # Nothing got through lately (another tool has used up the quota): halve, as AIMD would.
        target = self.headroom * min(self._rate, accepted) if accepted > 0 else self._rate / 2
        self._cut(target, now)

    def _span(self) -> float:
        """Seconds that hold enough successes to measure a rate: `window`, or ten successes at a slow rate."""
        return max(self.window, 10.0 / self._rate)

    def _warned(self, usage: float, now: float) -> None:
        """The service says `usage` of its limit is used: its limit is about our recent rate / `usage`.

        That puts a ceiling (`headroom` of the limit): slow start ends where it is, a rate above the ceiling
        is trimmed to it, a rate below closes in on it (`approach` of the gap a second) instead of probing.
        """
        self.warnings += 1
        first = self._successes.first if self._successes.first is not None else now
        span = min(self._span(), max(now - first, self.window / 10))
        ceiling = self.headroom * self._successes.since(now - span) / span / usage
        if self.phase == self.SLOW_START:
            self._cut(min(ceiling, self._rate), now)
        elif ceiling < self._rate:
            if now - self._last_cut >= span:  # the last trim has had time to show in the usage
                self._cut(ceiling, now)
        else:
            self._set(self._rate + (ceiling - self._rate) * min(1.0, self.approach / max(self._rate, 1.0)))

    def _cut(self, target: float, now: float) -> None:
        self._set(target)
        self._last_cut = now
        self.cuts += 1
        if self.phase == self.SLOW_START:
            self.phase = self.HOLDING
            self.discovered_rate = self._rate

    def _set(self, rate: float) -> None:
        self._rate = min(self.maximum, max(self.minimum, rate))
