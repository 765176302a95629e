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
from typing import Any, Protocol

from ..model import RowResult, UserRow
from ..protocols import (  # re-exported: the sending stage's names for them
    PriorState,
    StepPrior,
    StepState,
)
from ..service.partnercenter import CreatedUser


class UserService(Protocol):
    """Partner Center as the pipeline uses it (`partnercenter.PartnerCenterClient`)."""

    async def preflight(self, customer_id: str) -> dict[str, Any]: ...

    async def create_user(self, customer_id: str, user: UserRow, *, request_id: str) -> CreatedUser: ...

    async def find_user_by_upn(self, customer_id: str, upn: str) -> dict[str, Any] | None: ...


class UserDirectory(Protocol):
    """Graph's user lookup (`partnercenter.GraphClient`): one GET instead of paging through every user."""

    async def get_user(self, tenant: str, upn: str) -> dict[str, Any] | None: ...


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
