"""How long work reports how far it got, without knowing who watches.

The core never asks "am I silent?": it is handed a `Progress`, and `NullProgress` is the silent one (the
sqlite-utils habit). The rich bar that a person sees lives in `cli.console`; the stages below the CLI know only
this protocol, so the arrows point one way (sending and app never import the CLI).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol, runtime_checkable


class Slowdowns(NamedTuple):
    """What held a run back so far: a person watching a slow bar wants to know it is the service, not a hang."""

    retries: int = 0  # requests that repeated an earlier one of the same row (5xx, lost answers)
    throttled: int = 0  # 429 answers: the whole run paused for their Retry-After


class Progress(Protocol):
    """Failures are counted as they happen so that a person sees trouble early, not at the closing table.

    `total` None: a count with no end known yet (listing the customer's users). `unsent` of the rows advanced
    needed no request (done by an earlier run, already in the tenant, invalid): they fill the bar but must not
    count in the rate, or a resumed run would start at a rate, and an ETA, it will never hold."""

    def start(self, total: int | None, description: str) -> None: ...

    def advance(self, count: int = 1, *, failed: int = 0, unsent: int = 0) -> None: ...

    def follow(self, slowdowns: Callable[[], Slowdowns]) -> None:
        """Read the run's retries and 429s whenever it redraws (a 30 s pause shows while nothing completes)."""
        ...

    def stop(self) -> None: ...


@runtime_checkable
class ShowsProgress(Protocol):
    """A source whose slow part (listing thousands of users) can show a sign of life on a progress."""

    def show_progress(self, progress: Progress) -> None: ...


class NullProgress:
    """The silent progress: for --quiet, JSON logs, a scheduler, stderr that is not a terminal, or a library call."""

    def start(self, total: int | None, description: str) -> None:
        pass

    def advance(self, count: int = 1, *, failed: int = 0, unsent: int = 0) -> None:
        pass

    def follow(self, slowdowns: Callable[[], Slowdowns]) -> None:
        pass

    def stop(self) -> None:
        pass
