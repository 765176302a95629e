"""When to try a request again, how long to wait first, and how fast to send at all.

In the spirit of hynek's stamina: retry only on conditions named up front (a hook that looks at the failure),
let the hook hand back the wait the service asked for (`Retry-After`) instead of our own backoff, and never
read the real clock or really sleep where a test can hand in its own (`clock`, `sleep`, `rng`).

Three small parts, each replaceable on its own:
- `RetryPolicy`: the named conditions, the bounded number of attempts, exponential backoff with full jitter.
- `PauseGate`: a 429 is about the whole partner (Partner Center counts per partner, or partner + customer), so
  one throttled answer pauses every sender until the time the service named, not just the row that saw it.
- `RateController`: the users/s the run aims for; its two kinds, `FixedRate` (`--rate N`) and `SlowStartRate`
  (no `--rate`: finds the rate the service allows), live in rates.py and are re-exported here.
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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from aiolimiter import AsyncLimiter

from ..defaults import DEFAULT_ATTEMPTS
from ..defaults import DEFAULT_RATE as DEFAULT_RATE  # re-exported: its old home
from ..service.partnercenter import EndlessPaging, MalformedAnswer, ServerError, Throttled, TransportError
from .rates import FixedRate as FixedRate  # re-exported: their old home
from .rates import SlowStartRate as SlowStartRate

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
