"""The sandbox's knobs, shared by the command line and the in-process form."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

DEFAULT_TOKEN = "sandbox"
DEFAULT_PAGE_SIZE = 100
DEFAULT_RATE_WINDOW = 60.0

_RATE_LIMIT = re.compile(r"(\d+)(?:/(?:(\d+(?:\.\d+)?)s?|s))?")
_LATENCY = re.compile(r"(\d+(?:\.\d+)?)(?:\s*-\s*(\d+(?:\.\d+)?))?")


def parse_latency(text: str) -> tuple[float, float]:
    """`N` -> (N, N); `N-M` -> (N, M): each call takes between N and M ms (uniform)."""
    match = _LATENCY.fullmatch(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a latency: write N or N-M milliseconds, e.g. 1500 or 1000-3000")
    low = float(match.group(1))
    high = float(match.group(2)) if match.group(2) is not None else low
    if high < low:
        raise ValueError(f"{text!r}: the latency range must go from low to high (N-M with N <= M)")
    return low, high


def parse_rate_limit(text: str) -> tuple[int, float]:
    """`N[/Ws]` -> (N, W): `"30"` is 30 a minute, `"20/1s"` is 20 a second, `"20/s"` too."""
    match = _RATE_LIMIT.fullmatch(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a rate limit: write N or N/Ws, e.g. 30 (a minute) or 20/1s")
    count = int(match.group(1))
    if match.group(2):
        window = float(match.group(2))
    else:
        window = 1.0 if "/" in text else DEFAULT_RATE_WINDOW
    if count < 1:
        raise ValueError(f"{text!r}: the rate limit must allow at least 1 creation")
    if not (window > 0 and math.isfinite(window)):
        raise ValueError(f"{text!r}: the window must be a positive number of seconds")
    return count, window


@dataclass(frozen=True, slots=True)
class SandboxOptions:
    """How the sandbox behaves. Faults and limits touch the writes that `faults.WRITES` names (creations, license
    updates, Graph's writes); latency touches every call.

    `seed=None` draws faults (and latencies) from an unseeded generator; give a seed to make a run repeatable.
    `latency_ms` is the low end of each call's delay and `latency_max_ms` the high end (None: exactly
    `latency_ms`). `rate_limit` is (writes, window seconds) for the partner as a whole, `customer_rate_limit` the
    same per partner + customer, on top. `throttle_warnings` adds Graph's `x-ms-throttle-limit-percentage` header
    to write answers past 80 % of a window (sandbox's own extension for Partner Center, which documents no such
    header).
    """

    token: str = DEFAULT_TOKEN
    seed: int | None = None
    latency_ms: float = 0.0
    latency_max_ms: float | None = None
    rate_limit: tuple[int, float] | None = None
    fail_rate: float = 0.0
    drop_rate: float = 0.0
    page_size: int = DEFAULT_PAGE_SIZE
    throttle_warnings: bool = False
    customer_rate_limit: tuple[int, float] | None = None

    def __post_init__(self) -> None:
        for name in ("fail_rate", "drop_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, not {value}")
        if self.latency_ms < 0 or not math.isfinite(self.latency_ms):
            raise ValueError(f"latency_ms must be 0 or more, not {self.latency_ms}")
        if self.latency_max_ms is not None and not (
            math.isfinite(self.latency_max_ms) and self.latency_max_ms >= self.latency_ms
        ):
            raise ValueError(f"latency_max_ms must be at least latency_ms, not {self.latency_max_ms}")
        if self.page_size < 1:
            raise ValueError(f"page_size must be at least 1, not {self.page_size}")
        for name in ("rate_limit", "customer_rate_limit"):
            limit = getattr(self, name)
            if limit is not None and (limit[0] < 1 or not limit[1] > 0):
                raise ValueError(f"{name} must be (count >= 1, window > 0), not {limit}")
        if not self.token:
            raise ValueError("token must not be empty")

    def __repr__(self) -> str:  # the token is a secret for whoever sets a real-looking one
        return (
            f"SandboxOptions(token=<hidden>, seed={self.seed}, latency_ms={self.latency_ms}, "
            f"latency_max_ms={self.latency_max_ms}, rate_limit={self.rate_limit}, "
            f"customer_rate_limit={self.customer_rate_limit}, fail_rate={self.fail_rate}, "
            f"drop_rate={self.drop_rate}, page_size={self.page_size}, throttle_warnings={self.throttle_warnings})"
        )
