"""When to try a request again, how long to wait first, and how fast to send at all.

In the spirit of hynek's stamina: retry only on conditions named up front (a hook that looks at the failure),
let the hook hand back the wait the service asked for (`Retry-After`) instead of our own backoff, and never
read the real clock or really sleep where a test can hand in its own (`clock`, `sleep`, `rng`).

Three small parts, each replaceable on its own:
- `RetryPolicy`: the named conditions, the bounded number of attempts, exponential backoff with full jitter.
- `PauseGate`: a 429 is about the whole partner (Partner Center counts per partner, or partner + customer), so
  one throttled answer pauses every sender until the time the service named, not just the row that saw it.
- `RateController`: the users/s the run aims for. `FixedRate` is `--rate N`; `AdaptiveRate` starts from
  `DEFAULT_RATE` and follows the service's 429s (cut on a 429, creep up after a run of successes). It is kept
  behind a three-member protocol so that a smarter controller (slow start) can replace it without touching
  the pipeline.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from .partnercenter import MalformedAnswer, ServerError, Throttled, TransportError

T = TypeVar("T")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
#: Looks at a failure and says: False, not worth retrying; True, retry after our backoff; a number, retry
#: after exactly that many seconds (what the service asked for).
RetryHook = Callable[[BaseException], bool | float]

#: Users per second a run starts from when no --rate is given. Partner Center publishes no figure for
#: creating users; Graph allows about 20 identity writes a second per app and tenant, so a quarter of that
#: leaves room for other tools working on the same tenant, and the controller climbs from there.
DEFAULT_RATE = 5.0
#: Attempts per row for failures that count (5xx, no answer); a 429 does not count (see `PauseGate`).
DEFAULT_ATTEMPTS = 5


def retry_on_service_trouble(failure: BaseException) -> bool | float:
    """The failures worth another try: throttling, server errors, and no (usable) answer at all.

    A business refusal (4xx) is not: the same request would be refused again. When the service named a wait
    (`Retry-After`, already parsed, floored and capped by the client) that wait is the answer.
    """
    if isinstance(failure, Throttled | ServerError):
        return failure.retry_after if failure.retry_after is not None else True
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
    """The users/s a run aims for; the pipeline tells it about every create's answer."""

    @property
    def current_rate(self) -> float: ...

    def on_success(self) -> None: ...

    def on_throttle(self, retry_after: float | None, *, sent_at: float | None = None) -> None: ...


class FixedRate:
    """`--rate N`: the person chose the rate; 429s still pause the run (see `PauseGate`) but do not change it.

    `math.inf` means no pacing at all (concurrency alone bounds the run): for tests and local sandboxes.
    """

    def __init__(self, rate: float) -> None:
        if not rate > 0:
            raise ValueError("the rate must be a positive number of users per second")
        self._rate = float(rate)

    @property
    def current_rate(self) -> float:
        return self._rate

    def on_success(self) -> None:
        pass

    def on_throttle(self, retry_after: float | None, *, sent_at: float | None = None) -> None:
        pass


class AdaptiveRate:
    """Additive increase, multiplicative decrease, as TCP does: halve on a 429, add `step` users/s after
    `successes_per_step` successes in a row, within [`minimum`, `maximum`].

    The requests in flight when the service starts throttling all come back 429 together; they say one thing
    (the old rate was too fast), so a 429 for a request sent before the last cut does not cut again.
    """

    def __init__(
        self,
        initial: float = DEFAULT_RATE,
        *,
        minimum: float = 0.2,
        maximum: float = 50.0,
        decrease: float = 0.5,
        step: float = 1.0,
        successes_per_step: int = 20,
        clock: Clock = time.monotonic,
    ) -> None:
        if not 0 < minimum <= initial <= maximum:
            raise ValueError("need 0 < minimum <= initial <= maximum")
        if not 0 < decrease < 1:
            raise ValueError("decrease must be between 0 and 1")
        self._rate = float(initial)
        self.minimum = minimum
        self.maximum = maximum
        self.decrease = decrease
        self.step = step
        self.successes_per_step = successes_per_step
        self._clock = clock
        self._last_cut = -math.inf
        self._streak = 0
        self.cuts = 0

    @property
    def current_rate(self) -> float:
        return self._rate

    def on_success(self) -> None:
        self._streak += 1
        if self._streak >= self.successes_per_step:
            self._streak = 0
            self._rate = min(self.maximum, self._rate + self.step)

    def on_throttle(self, retry_after: float | None, *, sent_at: float | None = None) -> None:
        self._streak = 0
        if sent_at is not None and sent_at <= self._last_cut:
            return  # sent at the old rate: the cut already answered it
        self._rate = max(self.minimum, self._rate * self.decrease)
        self._last_cut = self._clock()
        self.cuts += 1
