"""How many requests may be in flight: enough to hold the pace at the latency the service shows, no more.

Why not a fixed number of workers: by Little's law the requests in flight are the rate times the latency, so a
fixed 16 in flight can never pass 16 / latency a second: 10.7/s at Partner Center's 1.5 s, whatever the pacer
allows. A large fixed number instead lets a service that slows down pile up hundreds of requests at once (and a
second Ctrl-C would leave each of their rows "may exist"). So the number in flight follows the pace: the rate
the pacer holds, times a high percentile of the latencies seen lately (their spread needs headroom), times a
margin; never more than `cap` (`--concurrency`).

Two things make it follow a change of latency at once, not after a full round of slow answers:
- the age of the oldest request still in flight counts as a latency seen: when answers slow down from 50 ms to
  3 s, the limit grows with that age (by `rate x headroom` a second, faster than the pacer sends), so the pace
  never waits for the first slow answer to come back;
- nothing known yet (no answer, nothing in flight): the floor; from the first request on, its age counts, so
  the limit grows faster than the pacer sends from the start.

Only a clock, no loop-bound objects (aiolimiter's way with time: tests move a fake clock and read the limit).
The waiting itself is the sender's (`Sender.clear_to_send`), so that a stop cuts it short like any other wait.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

Clock = Callable[[], float]

#: Latencies remembered: enough for a 95th percentile to mean something, few enough to follow a change quickly.
LATENCY_SAMPLES = 64


class InFlightLimit:
    """The number of requests allowed in flight, from the pace and the latencies seen; and who is in flight.

    `take()` when a request leaves (a ticket), `finished(ticket, answered=...)` when it is over: an answer
    (any status) is a latency sample; a request that got none (cut short, connection lost) is not, since its
    time says nothing of the service's.
    """

    def __init__(
        self,
        cap: int,
        *,
        clock: Clock,
        percentile: float = 0.95,
        headroom: float = 1.25,
        floor: int = 2,
        samples: int = LATENCY_SAMPLES,
    ) -> None:
        if cap < 1:
            raise ValueError("the cap must be at least 1")
        if not 0 < percentile <= 1 or headroom < 1:
            raise ValueError("need 0 < percentile <= 1 and headroom >= 1")
        self.cap = cap
        self.percentile = percentile
        self.headroom = headroom
        self.floor = min(floor, cap)
        self._clock = clock
        self._latencies: deque[float] = deque(maxlen=samples)
        self._percentile_seen: float | None = None  # of the samples as they are (None: to work out again)
        self._started: dict[int, float] = {}  # ticket -> when it left; insertion order: the oldest first
        self._tickets = 0
        self.most = 0  # the most requests in flight at once, for the figures

    @property
    def in_flight(self) -> int:
        return len(self._started)

    def take(self) -> int:
        """A request leaves now: its ticket for `finished`."""
        self._tickets += 1
        self._started[self._tickets] = self._clock()
        self.most = max(self.most, len(self._started))
        return self._tickets

    def finished(self, ticket: int, *, answered: bool) -> None:
        started = self._started.pop(ticket, None)
        if started is not None and answered:
            self._latencies.append(max(0.0, self._clock() - started))
            self._percentile_seen = None

    def latency(self) -> float | None:
        """The latency to plan for: a high percentile of the recent answers, or longer when a request still in
        flight has already waited longer. None: nothing known yet."""
        known: list[float] = []
        if self._latencies:
            if self._percentile_seen is None:  # asked far more often than a sample comes: sort once per sample
                ordered = sorted(self._latencies)
                self._percentile_seen = ordered[min(len(ordered) - 1, math.ceil(self.percentile * len(ordered)) - 1)]
            known.append(self._percentile_seen)
        oldest = next(iter(self._started.values()), None)
        if oldest is not None:
            known.append(self._clock() - oldest)
        return max(known) if known else None

    def limit(self, rate: float) -> int:
        """Requests allowed in flight at `rate` requests a second: rate x latency x headroom, plus one (the
        request about to leave), within [floor, cap]. No pace (an infinite rate): the cap; no latency known
        yet: the floor."""
        if not math.isfinite(rate):
            return self.cap
        latency = self.latency()
        if latency is None:
            return self.floor
        wanted = math.ceil(rate * latency * self.headroom) + 1
        return max(self.floor, min(self.cap, wanted))

    def has_room(self, rate: float) -> bool:
        return self.in_flight < self.limit(rate)

    def until_more_room(self, rate: float) -> float | None:
        """Seconds until the oldest request's age alone makes room for one more; None: only an answer can (the cap
        is reached, or nothing is in flight to age)."""
        return self.until_limit(rate, self.in_flight + 1)

    def until_limit(self, rate: float, wanted: int) -> float | None:
        """Seconds until the limit reaches `wanted` by the oldest request's age alone (0 when it has); None: it
        cannot (past the cap, no pace, nothing in flight to age)."""
        if self.limit(rate) >= wanted:
            return 0.0
        if wanted > self.cap or not self._started or not math.isfinite(rate) or rate <= 0:
            return None
        oldest = next(iter(self._started.values()))
        # ceil(rate x age x headroom) + 1 >= wanted  <=  rate x age x headroom > wanted - 2
        needed = (wanted - 2) / (rate * self.headroom)
        return max(0.0, needed - (self._clock() - oldest)) + 1e-3
