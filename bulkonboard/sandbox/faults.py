"""Faults on demand: throttling over sliding windows, 503s, dropped connections, and each call's latency.

Which calls count (the sandbox's decision for issues 16-18; the reference says only that Partner Center counts per
partner and per partner + customer, and Graph counts writes per app + tenant):
- The **writes** a bulk run makes count, whichever API they come through: Partner Center's user create and
  `licenseupdates`, and Graph's `POST /users`, `PATCH /users/{id}`, `PUT .../manager/$ref` and `assignLicense`.
  Each counts once against `--rate-limit` (the partner as a whole, every customer together; Graph's per-app limit
  across tenants is its counterpart) and once against `--customer-rate-limit` (the partner + that customer;
  Graph's per app + tenant). Both APIs share the windows: the sandbox serves one partner app through both doors,
  and a tenant's directory counts a write whichever door it came through.
- Reads, replays of an MS-RequestId, and Partner Center's DELETE and PATCH (delete, restore, rename: rare, and
  never counted before) are not counted. Neither is a call refused before the limiter (401, 403, unknown customer).
- The same writes, once admitted, meet `--fail-rate` (503, nothing written) and `--drop-rate` (written, then the
  connection closed with no answer); so does a restore (PATCH with `State`), though no limiter counts it.

Repeatability is the point: one `random.Random(seed)` is drawn in a fixed order, exactly twice per write that gets
past the limiters (first "fail?", then "drop?"), whatever the outcome, so the k-th admitted write of a run meets
the same fate in every run with the same seed, however the requests interleave. Latencies come from a second
generator seeded from the same seed, so adding reads to a run never shifts the faults.
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
        wait = self.retry_after()
        if wait is None:
            self.admit()
        return wait

    def retry_after(self) -> int | None:
        """None when a slot is free now (nothing admitted); else the whole seconds (at least 1) until one is."""
        now = self.clock()
        self._expire(now)
        if len(self._admitted) < self.limit:
            return None
        return max(1, math.ceil(self._admitted[0] + self.window - now))

    def admit(self) -> None:
        self._admitted.append(self.clock())

    def usage(self) -> float:
        """The fraction of the limit used in the window ending now."""
        self._expire(self.clock())
        return len(self._admitted) / self.limit

    def _expire(self, now: float) -> None:
        while self._admitted and self._admitted[0] <= now - self.window:
            self._admitted.popleft()


@dataclass(frozen=True, slots=True)
class Fate:
    """What happens to one admitted write: answered 503 without writing, or written and then dropped."""

    fail: bool
    drop: bool


class Faults:
    def __init__(self, options: SandboxOptions, clock: Clock = time.monotonic) -> None:
        self.options = options
        self.clock = clock
        self._random = random.Random(options.seed)
        # A second stream for latencies: str seeds are hashed the same in every process.
        self._latency_random = random.Random(None if options.seed is None else f"latency:{options.seed}")
        self._window = SlidingWindow(*options.rate_limit, clock=clock) if options.rate_limit else None
        self._customer_windows: dict[str, SlidingWindow] = {}

    def admit_write(self, customer_id: str) -> int | None:
        """None when the write may go ahead (it is counted in every window); otherwise the Retry-After of a 429,
        the longest wait of the windows that are full. A refused write counts in none of them."""
        windows = [w for w in (self._window, self._customer_window(customer_id)) if w is not None]
        waits = [wait for wait in (w.retry_after() for w in windows) if wait is not None]
        if waits:
            return max(waits)
        for window in windows:
            window.admit()
        return None

    def _customer_window(self, customer_id: str) -> SlidingWindow | None:
        if self.options.customer_rate_limit is None:
            return None
        key = customer_id.lower()
        window = self._customer_windows.get(key)
        if window is None:
            window = SlidingWindow(*self.options.customer_rate_limit, clock=self.clock)
            self._customer_windows[key] = window
        return window

    def draw(self) -> Fate:
        fail_draw = self._random.random()
        drop_draw = self._random.random()
        return Fate(fail=fail_draw < self.options.fail_rate, drop=drop_draw < self.options.drop_rate)

    def latency_seconds(self) -> float:
        """How long this call waits before it is handled: `--latency-ms N`, or uniform in `N-M` (seeded)."""
        low = self.options.latency_ms
        high = self.options.latency_max_ms
        if high is None or high == low:
            return low / 1000
        return self._latency_random.uniform(low, high) / 1000

    def throttle_warning(self, customer_id: str = "") -> str | None:
        """The x-ms-throttle-limit-percentage value to send, when warnings are on and the fullest window that
        counts this customer's writes is past 80 %.

        Graph's header (Partner Center documents none: there it is the sandbox's own extension). Like Graph it is a
        fraction of the limit (0.8 and up), not a percentage, despite its name.
        """
        if not self.options.throttle_warnings:
            return None
        windows = [w for w in (self._window, self._customer_window(customer_id)) if w is not None]
        if not windows:
            return None
        usage = max(window.usage() for window in windows)
        return f"{usage:.2f}" if usage > THROTTLE_WARNING_THRESHOLD else None
