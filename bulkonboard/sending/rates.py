"""How fast to send when the service's limit is known only by its answers: the rate controllers.

`FixedRate` is `--rate N` (eased a little by each 429). Without it, `SlowStartRate` finds the rate the service
allows: from `DEFAULT_RATE` it grows fast until the first 429 (or the service's early warning), then holds just
under the rate that filled the service's window and probes gently (plain AIMD, halve on a 429 and creep up,
needed about 1.7x the time a 20/s limit allows for 600 users where slow start needs about 1.1x:
docs/BENCHMARKS.md). Both follow `retry.RateController`, so the pipeline does not care which one runs. Apart
from retry.py (which re-exports them) to keep each module a size a newcomer can read.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

from ..defaults import DEFAULT_RATE

Clock = Callable[[], float]


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
    - The first 429 ends it. The service's window was full, so what filled it says what it accepts: the rate
      the requests left at over the `window` before the throttled one, or the successes answered in the last
      `window` seconds when they say more. Why both: a service that counts a request when it arrives (Partner
      Center does) answers the 429 at once but a success only after the work (1-2 s), so the successes lag a
      latency behind a growing rate; taking them alone held 1-2 s runs at about half the limit (1.5-1.9x the
      ideal time in tests/test_rate.py's simulation, now about 1.15x). The rate is set to `headroom` of that,
      and never above `headroom` of the rate it had.
    - A long Retry-After (more than `short_wait`: a minute-long window) sizes the look back instead: its whole
      quota came back in that time, so the successes over it are what it accepts.
    - Hold: the rate creeps up by `probe` (a fraction) a second, so that a limit that rises is found again.
      A 429 of a short window eases it by `ease` (5 %) from the rate its request left at, once per round trip.
      Why not cut to the successes of the last second: they lag the rate where a 429 comes at once (above),
      and swing by a quarter from one second to the next where latencies spread.
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
        probe: float = 0.005,
        ease: float = 0.95,
        short_wait: float = 2.0,
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
        if not 0 < ease < 1:
            raise ValueError("ease must be between 0 and 1")
        self._rate = float(initial)
        self.minimum = minimum
        self.maximum = maximum
        self.growth = growth
        self.approach = approach
        self.headroom = headroom
        self.probe = probe
        self.ease = ease
        self.short_wait = short_wait
        self.window = window
        self.warning_threshold = warning_threshold
        self._clock = clock
        self._successes = _RecentSuccesses(horizon)
        self._history = _RateHistory(min(horizon, 60.0))
        self._history.note(self._clock(), self._rate)
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
        # The rate requests left at over the window before the throttled one: what filled the service's window.
        span = self._span()
        sent_rate = self._rate if sent_at is None else self._history.mean(sent_at - span, sent_at, self._rate)
        if self.phase == self.HOLDING and retry_after is not None and 0 < retry_after <= self.short_wait:
            # A window of a second or two, full for a moment: at a rate near the limit, requests whose
            # latencies differ arrive in clumps, and one 429 now and then is the price of holding near it.
            self._cut(self.ease * min(self._rate, sent_rate), now)
            return
        look_back = min(self._successes.horizon, max(retry_after or 0.0, span))
        accepted = self._successes.since(now - look_back) / look_back
        if accepted <= 0:
            # Nothing got through lately (another tool has used up the quota): halve, as AIMD would.
            self._cut(self._rate / 2, now)
        elif self.phase == self.SLOW_START and (retry_after is None or retry_after <= self.short_wait):
            # The first 429 of a short window: what the requests left at over the window before the throttled
            # one is what first overflowed it. The successes answered lately may say less: they left a latency
            # earlier, at a lower rate (a service that counts a request when it arrives answers its 429 at once
            # and its successes after the work), so the higher of the two is the nearer to the limit.
            self._cut(self.headroom * min(self._rate, max(accepted, sent_rate)), now)
        else:
            # A long window (its whole quota came back over the Retry-After), or 429s without a Retry-After while
            # holding: what the service accepted over that time is what it allows.
            self._cut(self.headroom * min(self._rate, accepted), now)

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
        self._history.note(self._clock(), self._rate)


class _RateHistory:
    """The rate a controller had at each moment of the last `horizon` seconds, in bounded memory: changes closer
    together than `resolution` share one entry (the latest rate of them)."""

    def __init__(self, horizon: float, resolution: float = 0.01) -> None:
        self.horizon = horizon
        self.resolution = resolution
        self._entries: deque[list[float]] = deque()  # [time it was set, rate]

    def note(self, now: float, rate: float) -> None:
        entries = self._entries
        if entries and now - entries[-1][0] < self.resolution:
            entries[-1][1] = rate
        else:
            entries.append([now, rate])
        while len(entries) > 1 and entries[1][0] <= now - self.horizon:
            entries.popleft()

    def mean(self, start: float, end: float, default: float) -> float:
        """The mean rate from `start` to `end` (before the oldest entry: the oldest rate)."""
        if not self._entries or end <= start:
            return default
        total = 0.0
        later = end
        for when, rate in reversed(self._entries):
            if when < later:
                total += rate * (later - max(when, start))
                later = max(when, start)
            if when <= start:
                break
        total += self._entries[0][1] * (later - start)  # before the history began
        return total / (end - start)
