"""The profile and manager steps: after the user exists, its job title, department, phones... (one Graph `PATCH
/users/{id}`), then its manager (`PUT /users/{id}/manager/$ref`), in the customer's tenant with the Graph token the
domain check already uses. Each is a `Step` (steps.py): run once per row across runs, journaled, a refusal makes
the row `partial` and the next run retries only it.

Reconciling an answer that never came: a PATCH sets values, so the profile is done when Graph holds every value
the row asks for (read back with `$select`); the manager is done when Graph names that manager. Both are safe to
send again when not done: setting a value twice changes nothing.

A manager is named by UPN; Graph's reference needs its id. Managers are looked up once per run each (the
validation's listing of the customer's users first, then Graph by UPN for a manager created by this run: the
run creates manager rows before the rows they manage, ordering.py), and remembered.

Both writes count against the tenant's Graph budget as creates do: Graph's early warning on their answers
(`x-ms-throttle-limit-percentage`) reaches the rate controller with the success (`UsageNote`), so the run eases
off before a 429 whichever write is filling the window.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Protocol

from ..model import PROFILE_FIELDS, Code, Status
from ..service.http import Answer
from ..service.partnercenter import Refused
from .sender import Sender
from .steps import RowState, StepOutcome


class ProfileDirectory(Protocol):
    """Graph as these steps use it (`service.graph.GraphClient`)."""

    async def update_user(
        self, tenant: str, user_id: str, changes: dict[str, Any], *, on_answer: Callable[[Answer], None] | None = None
    ) -> None: ...

    async def user_properties(
        self, tenant: str, user_id: str, names: tuple[str, ...]
    ) -> dict[str, Any] | None: ...

    async def set_manager(
        self, tenant: str, user_id: str, manager_id: str, *, on_answer: Callable[[Answer], None] | None = None
    ) -> None: ...

    async def manager_id(self, tenant: str, user_id: str) -> str | None: ...

    async def get_user(self, tenant: str, upn: str) -> dict[str, Any] | None: ...


class UsageNote:
    """Keeps the throttling warning of a request's latest answer, for `Sender.request(usage=...)`."""

    def __init__(self) -> None:
        self.usage: float | None = None

    def __call__(self, answer: Answer) -> None:
        self.usage = answer.throttle_usage

    def value(self) -> float | None:
        return self.usage


class ProfileStep:
    """`Step`: the row's profile cells, in one PATCH."""

    name = "profile"
    code = Code.PROFILE_FAILED
    fails_row_as = Status.PARTIAL

    def __init__(self, graph: ProfileDirectory, *, profile_in_create: bool = False) -> None:
        """`profile_in_create`: users are created through Graph with the profile in the create body (`--via
        graph`), so a row created by this run has it already: the step is recorded done without a request."""
        self._graph = graph
        self._profile_in_create = profile_in_create

    def needed(self, row: RowState) -> bool:
        return bool(row.user.profile)

    async def run(self, row: RowState, request_id: str, sender: Sender) -> StepOutcome:
        if self._profile_in_create and row.result.status is Status.CREATED:
            return StepOutcome.done()
        changes = row.user.profile_body
        note = UsageNote()
        await sender.request(
            lambda: self._graph.update_user(row.customer, row.user_id, changes, on_answer=note), usage=note.value
        )
        return StepOutcome.done()

    async def reconcile(self, row: RowState, request_id: str, sender: Sender) -> bool | None:
        changes = row.user.profile_body
        names = tuple(name for name in PROFILE_FIELDS if name in changes)
        held = await sender.request(lambda: self._graph.user_properties(row.customer, row.user_id, names))
        if held is None:
            return None  # the user is not there to ask: cannot tell
        return all(same_value(name, held.get(name), wanted) for name, wanted in changes.items())


def same_value(name: str, held: object, wanted: object) -> bool:
    """Whether Graph holds what the row asks for: a hire date compares as a moment (Graph may write it its own
    way), everything else exactly."""
    if name == "employeeHireDate" and isinstance(held, str) and isinstance(wanted, str):
        try:
            return _moment(held) == _moment(wanted)
        except ValueError:
            return False
    return held == wanted


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class ManagerNotFound(Exception):
    """The manager is not a user of the customer: its row (if it is one) was not created."""


class ManagerStep:
    """`Step`: the row's manager, by reference, once the manager exists."""

    name = "manager"
    code = Code.MANAGER_FAILED
    fails_row_as = Status.PARTIAL

    def __init__(self, graph: ProfileDirectory, known: Mapping[str, Mapping[str, str] | None]) -> None:
        """`known`: per customer, the users validation listed (case-folded UPN -> id), or None."""
        self._graph = graph
        self._known = known
        self._ids: dict[tuple[str, str], str] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def needed(self, row: RowState) -> bool:
        return bool(row.user.manager)

    def learn(self, customer: str, upn: str, user_id: str | None) -> None:
        """A manager row this run finished (ordering.py): its id, without asking Graph."""
        if user_id:
            self._ids[(customer.casefold(), upn.casefold())] = user_id

    async def run(self, row: RowState, request_id: str, sender: Sender) -> StepOutcome:
        try:
            manager_id = await self._manager_id(row, sender)
        except ManagerNotFound as missing:
            return StepOutcome.failed(str(missing))
        note = UsageNote()
        await sender.request(
            lambda: self._graph.set_manager(row.customer, row.user_id, manager_id, on_answer=note), usage=note.value
        )
        return StepOutcome.done()

    async def reconcile(self, row: RowState, request_id: str, sender: Sender) -> bool | None:
        try:
            manager_id = await self._manager_id(row, sender)
        except ManagerNotFound:
            return False  # nothing could have been set: send it (it fails with the reason)
        held = await sender.request(lambda: self._graph.manager_id(row.customer, row.user_id))
        return held is not None and held.casefold() == manager_id.casefold()

    async def _manager_id(self, row: RowState, sender: Sender) -> str:
        """The manager's id: learnt this run, listed by validation, or asked of Graph once."""
        key = (row.customer.casefold(), row.user.manager.casefold())
        if key in self._ids:
            return self._ids[key]
        listed = self._known.get(row.customer) or {}
        if key[1] in listed:
            return listed[key[1]]
        async with self._locks.setdefault(key, asyncio.Lock()):
            if key not in self._ids:
                try:
                    found = await sender.request(lambda: self._graph.get_user(row.customer, row.user.manager))
                except Refused as refused:
                    if refused.status != 404:
                        raise
                    found = None
                user_id = found.get("id") if isinstance(found, dict) else None
                if not isinstance(user_id, str) or not user_id:
                    raise ManagerNotFound(
                        f"manager {row.user.manager} is not a user of the customer: if it is a row of this sheet, "
                        "that row was not created; fix it, then run the same command again with the same journal"
                    )
                self._ids[key] = user_id
        return self._ids[key]
