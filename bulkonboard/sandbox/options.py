"""The sandbox's knobs, shared by the command line and the in-process form."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

DEFAULT_TOKEN = "sandbox"
DEFAULT_PAGE_SIZE = 100
DEFAULT_RATE_WINDOW = 60.0

_RATE_LIMIT = re.compile(r"(\d+)(?:/(?:(\d+(?:\.\d+)?)s?|s))?")


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
    """How the sandbox behaves. Faults touch creations only (POST .../users); latency touches every call.

    `seed=None` draws faults from an unseeded generator; give a seed to make a fault run repeatable.
    `rate_limit` is (creations, window seconds). `throttle_warnings` adds Graph's
    `x-ms-throttle-limit-percentage` header to creation answers past 80 % of the window (sandbox's own extension:
    Partner Center documents no such header).
    """

    token: str = DEFAULT_TOKEN
    seed: int | None = None
    latency_ms: float = 0.0
    rate_limit: tuple[int, float] | None = None
    fail_rate: float = 0.0
    drop_rate: float = 0.0
    page_size: int = DEFAULT_PAGE_SIZE
    throttle_warnings: bool = False

    def __post_init__(self) -> None:
        for name in ("fail_rate", "drop_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, not {value}")
        if self.latency_ms < 0 or not math.isfinite(self.latency_ms):
            raise ValueError(f"latency_ms must be 0 or more, not {self.latency_ms}")
        if self.page_size < 1:
            raise ValueError(f"page_size must be at least 1, not {self.page_size}")
        if self.rate_limit is not None:
            count, window = self.rate_limit
            if count < 1 or not window > 0:
                raise ValueError(f"rate_limit must be (count >= 1, window > 0), not {self.rate_limit}")
        if not self.token:
            raise ValueError("token must not be empty")

    def __repr__(self) -> str:  # the token is a secret for whoever sets a real-looking one
        return (
            f"SandboxOptions(token=<hidden>, seed={self.seed}, latency_ms={self.latency_ms}, "
            f"rate_limit={self.rate_limit}, fail_rate={self.fail_rate}, drop_rate={self.drop_rate}, "
            f"page_size={self.page_size}, throttle_warnings={self.throttle_warnings})"
        )
