"""How long work reports how far it got, without knowing who watches.

The core never asks "am I silent?": it is handed a `Progress`, and `NullProgress` is the silent one (the
sqlite-utils habit). The rich bar that a person sees lives in `cli.console`; the stages below the CLI know only
this protocol, so the arrows point one way (sending and app never import the CLI).
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """Failures are counted as they happen so that a person sees trouble early, not at the closing table."""

    def start(self, total: int | None, description: str) -> None: ...

    def advance(self, count: int = 1, *, failed: int = 0) -> None: ...

    def stop(self) -> None: ...


class NullProgress:
    """The silent progress: for --quiet, JSON logs, a scheduler, stderr that is not a terminal, or a library call."""

    def start(self, total: int | None, description: str) -> None:
        pass

    def advance(self, count: int = 1, *, failed: int = 0) -> None:
        pass

    def stop(self) -> None:
        pass
