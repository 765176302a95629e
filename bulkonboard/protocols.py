"""The shapes two stages share, in one place below both, so that neither imports the other to name them.

Each protocol is written by the stage that calls it and kept by the stage that implements it:

- `Audience`, `TokenProvider`: where bearer tokens come from. The service's clients ask; `auth` (MSAL) and the
  service's `StaticTokens` answer. Here, not in the service, so that auth never imports the HTTP client.
- `PriorOutcome`, `PriorState`, `StepState`, `StepPrior`, `Journal`: the sending stage's memory across runs. The pipeline asks; the
  journal stage (SQLite) answers. Here, so that the journal never imports the pipeline.
- `CheckedRowLike`: what the sheets stage hands the sending stage per row (`sheets.validation.CheckedRow`).

Other shared shapes live with their stage's data: `model.py` (rows, results, problem codes), `progress.py`,
`sheets.facts.FactsSource`. Only the stdlib and `model` are imported here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from .model import Problem, RowResult, Status, UserRow


class Audience(StrEnum):
    """Which service a token is for: they are different tokens (Graph's is for the customer's tenant)."""

    PARTNER_CENTER = "partnercenter"
    GRAPH = "graph"


class TokenProvider(Protocol):
    """Where bearer tokens come from: a static token, or MSAL behind a lock (in `auth.tokens`)."""

    async def token(
        self, audience: Audience, tenant: str | None = None, *, force_refresh: bool = False
    ) -> str: ...


class DeletedUserLike(Protocol):
    """A soft-deleted user holding a row's UPN, as validation found it (`sheets.facts.DeletedUser`)."""

    @property
    def id(self) -> str: ...

    @property
    def deleted_at(self) -> str | None: ...


class CheckedRowLike(Protocol):
    """What validation hands over per row (`validation.CheckedRow`). `deleted_user`: the soft-deleted user its UPN
    belongs to (a `user.deleted` row; with `--restore-deleted` a valid row to restore instead of create)."""

    @property
    def user(self) -> UserRow: ...

    @property
    def status(self) -> Status: ...

    @property
    def problems(self) -> tuple[Problem, ...]: ...

    @property
    def existing_user_id(self) -> str | None: ...

    @property
    def deleted_user(self) -> DeletedUserLike | None: ...


class PriorOutcome(StrEnum):
    CREATED = "created"  # an earlier run saw this user created
    IN_DOUBT = "in_doubt"  # an earlier run sent it and never learnt the outcome (killed, no answer)


@dataclass(frozen=True, slots=True)
class PriorState:
    """What the journal remembers of a user from an earlier run. A row refused outright earlier has no prior
    state: it is sent afresh, with a new request id (the service's answer to the old one was final).
    `recorded_at`: when the earlier run saw it created (CREATED) or sent it (IN_DOUBT), for the results."""

    outcome: PriorOutcome
    request_id: str
    user_id: str | None = None
    recorded_at: datetime | None = None


class StepState(StrEnum):
    """A later step's record in the journal (the create step's is the row's own state)."""

    SENT = "sent"  # its request left (or was about to): the outcome is unknown until recorded
    DONE = "done"  # the service did it (or a reconcile found it done): never sent again
    FAILED = (
        "failed"  # refused for good, or certainly not done: the next run sends it afresh (new request id)
    )


@dataclass(frozen=True, slots=True)
class StepPrior:
    """What an earlier run left of one later step of a row."""

    state: StepState
    request_id: str
    detail: str | None = None
    recorded_at: datetime | None = None


class Journal(Protocol):
    """The pipeline's memory across runs (resume after kill -9, nightly runs over a growing sheet).

    Called from the event loop, so each call must be quick. `sending` / `step_sending` return once the record is
    durable: the request goes out right after, and a run killed while it is in flight must leave "sent" behind.
    `finished` / `step_finished` may be batched until `flush`, and are called only for an outcome the pipeline is
    sure of: a user (or a step) that may have been done but could not be confirmed is left as sent, for the next
    run to reconcile with the same request id. No password is ever passed.
    """

    def prior(self, customer: str, upn_key: str) -> PriorState | None: ...

    async def sending(self, customer: str, upn_key: str, row: int, request_id: str) -> None: ...

    def finished(self, customer: str, upn_key: str, result: RowResult) -> None: ...

    def prior_steps(self, customer: str, upn_key: str) -> Mapping[str, StepPrior]: ...

    async def step_sending(self, customer: str, upn_key: str, step: str, request_id: str) -> None: ...

    def step_finished(
        self, customer: str, upn_key: str, step: str, state: StepState, request_id: str, detail: str | None
    ) -> None: ...

    def flush(self) -> None: ...
