"""Faults on demand: throttling over a sliding window, 503s, dropped connections.

Repeatability is the point: one `random.Random(seed)` is drawn in a fixed order, exactly twice per creation that
gets past the limiter (first "fail?", then "drop?"), whatever the outcome. So the k-th admitted creation of a run
meets the same fate in every run with the same seed, however the requests interleave.
"""

from __future__ import annotations

import math
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from .options import SandboxOptions

Clock = Callable[[], float]

#: Graph starts sending x-ms-throttle-limit-percentage once usage passes this fraction of the limit.
THROTTLE_WARNING_THRESHOLD = 0.8


class SlidingWindow:
    """At most `limit` admissions in any `window` seconds; a refused attempt does not count."""

    def __init__(self, limit: int, window: float, clock: Clock = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._admitted: deque[float] = deque()

    def try_admit(self) -> int | None:
        """None when admitted; otherwise the whole seconds (at least 1) until a slot frees up."""
        now = self.clock()
        self._expire(now)
        if len(self._admitted) < self.limit:
            self._admitted.append(now)
            return None
        wait = self._admitted[0] + self.window - now
        return max(1, math.ceil(wait))

    def usage(self) -> float:
        """The fraction of the limit used in the window ending now."""
        self._expire(self.clock())
        return len(self._admitted) / self.limit

    def _expire(self, now: float) -> None:
        while self._admitted and self._admitted[0] <= now - self.window:
            self._admitted.popleft()


@dataclass(frozen=True, slots=True)
class Fate:
    """What happens to one admitted creation: answered 503 without creating, or created and then dropped."""

    fail: bool
    drop: bool


class Faults:
    def __init__(self, options: SandboxOptions, clock: Clock = time.monotonic) -> None:
        self.options = options
        self._random = random.Random(options.seed)
        self._window = SlidingWindow(*options.rate_limit, clock=clock) if options.rate_limit else None

    def admit_creation(self) -> int | None:
        """None when the creation may go ahead; otherwise the Retry-After of a 429."""
        return self._window.try_admit() if self._window is not None else None

    def draw(self) -> Fate:
        fail_draw = self._random.random()
        drop_draw = self._random.random()
        return Fate(fail=fail_draw < self.options.fail_rate, drop=drop_draw < self.options.drop_rate)

    def throttle_warning(self) -> str | None:
        """The x-ms-throttle-limit-percentage value to send, when warnings are on and usage is past 80 %.

        Sandbox's own extension of Partner Center (the header is Graph's). Like Graph it is a fraction of the
        limit (0.8 and up), not a percentage, despite its name.
        """
        if not self.options.throttle_warnings or self._window is None:
            return None
        usage = self._window.usage()
        return f"{usage:.2f}" if usage > THROTTLE_WARNING_THRESHOLD else None
