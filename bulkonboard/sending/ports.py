"""What the sending stage depends on, as protocols: tests hand in fakes, and the client or the journal can change
underneath without the pipeline noticing.

The journal's memory is per row AND per step: `prior` tells what an earlier run left of the row's create (the
first step of every plan), `prior_steps` what it left of each later step (license, profile, manager...). Each
record is written before its request leaves (`sending`, `step_sending`: durable) and its outcome after
(`finished`, `step_finished`: lazy), so a run killed anywhere leaves "sent, outcome unknown" at worst, which the
next run settles with the same request id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from ..model import Problem, RowResult, Status, UserRow
from ..service.partnercenter import CreatedUser


class UserService(Protocol):
    """Partner Center as the pipeline uses it (`partnercenter.PartnerCenterClient`)."""

    async def preflight(self, customer_id: str) -> dict[str, Any]: ...

    async def create_user(self, customer_id: str, user: UserRow, *, request_id: str) -> CreatedUser: ...

    async def find_user_by_upn(self, customer_id: str, upn: str) -> dict[str, Any] | None: ...


class UserDirectory(Protocol):
    """Graph's user lookup (`partnercenter.GraphClient`): one GET instead of paging through every user."""

    async def get_user(self, tenant: str, upn: str) -> dict[str, Any] | None: ...


class CheckedRowLike(Protocol):
    """What validation hands over per row (`validation.CheckedRow`)."""

    @property
    def user(self) -> UserRow: ...

    @property
    def status(self) -> Status: ...

    @property
    def problems(self) -> tuple[Problem, ...]: ...

    @property
    def existing_user_id(self) -> str | None: ...


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


class NullJournal:
    """No memory: every run starts from the sheet alone."""

    def prior(self, customer: str, upn_key: str) -> PriorState | None:
        return None

    async def sending(self, customer: str, upn_key: str, row: int, request_id: str) -> None:
        pass

    def finished(self, customer: str, upn_key: str, result: RowResult) -> None:
        pass

    def prior_steps(self, customer: str, upn_key: str) -> Mapping[str, StepPrior]:
        return {}

    async def step_sending(self, customer: str, upn_key: str, step: str, request_id: str) -> None:
        pass

    def step_finished(
        self, customer: str, upn_key: str, step: str, state: StepState, request_id: str, detail: str | None
    ) -> None:
        pass

    def flush(self) -> None:
        pass
