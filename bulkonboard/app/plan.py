"""The plan of steps after create that a sheet's columns ask for: the profile (any profile column), then the
manager (a `manager` column). Decided once the sheet is read, before anything is sent.

Both steps talk to Graph in the customer's tenant with the token the domain check uses; a run that has no Graph
(the domains from a file, with no Graph token) cannot set them, and says so before sending anything rather than
create users it cannot finish.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..model import MANAGER_FIELD, PROFILE_FIELDS
from ..sending.profile import ManagerStep, ProfileStep
from ..sending.steps import Step
from ..sheets.facts import CustomerFacts
from ..sheets.validation import CheckedRow, Validation
from .passwords import with_passwords_from
from .sources import Connection


@dataclass(frozen=True, slots=True)
class StepPlan:
    steps: tuple[Step, ...] = ()
    managers: ManagerStep | None = None  # told of each manager row the run finishes first

    def first_rows(self, validation: Validation, passwords: Path | None) -> list[list[CheckedRow]]:
        """The rows that manage other rows, by level, to create before all others (with their generated
        passwords, when the run made them)."""
        if self.managers is None:
            return []
        return with_passwords_from(passwords, validation.manager_levels())

    def for_pipeline(
        self, validation: Validation, passwords: Path | None, *, before: Sequence[Step] = ()
    ) -> dict[str, Any]:
        """`Pipeline.plan_steps`'s arguments: the steps (`before` ones first: the license steps), the rows to
        create first, who hears of them."""
        steps = (*before, *self.steps)
        return {"steps": steps, "first": self.first_rows(validation, passwords), "on_first": self.learn}

    @property
    def learn(self) -> Callable[[str, str, str | None], None] | None:
        return self.managers.learn if self.managers is not None else None


VIA_PARTNER_CENTER, VIA_GRAPH = "partnercenter", "graph"


def user_service(connection: Connection, via: str) -> Any:
    """Who creates the users: Partner Center (the default), or Graph in the customer's tenant (`--via graph`),
    which needs Graph: refused before anything is sent when the run has none."""
    if via != VIA_GRAPH:
        if connection.partner_center is None:
            raise InputError(
                "app-only sign-in (an administrator of their own tenant) creates users through Microsoft Graph "
                "only: add --via graph"
            )
        return connection.partner_center
    if connection.graph is None:
        raise InputError(
            "--via graph creates users through Microsoft Graph in the customer's tenant, which this run has no "
            "access to: drop --domains, or give BULKONBOARD_GRAPH_TOKEN with --access-token"
        )
    from ..service.graph_users import GraphUserService

    return GraphUserService(connection.graph, connection.partner_center)


def plan_for(
    present: Collection[str], graph: Any, facts: Mapping[str, CustomerFacts], *, via: str = VIA_PARTNER_CENTER
) -> StepPlan:
    """The steps the sheet's columns call for, in the contract's order (profile, then manager). Through Graph the
    profile goes in the create itself: the profile step then only finishes rows created by an earlier run."""
    profile = [name for name in PROFILE_FIELDS if name in present]
    wants_manager = MANAGER_FIELD in present
    if not profile and not wants_manager:
        return StepPlan()
    if graph is None:
        columns = [*profile, *([MANAGER_FIELD] if wants_manager else [])]
        named = ", ".join(columns[:3]) + (f" and {len(columns) - 3} more" if len(columns) > 3 else "")
        raise InputError(
            f"the sheet's profile and manager columns ({named}) are set through Microsoft Graph in the customer's tenant, which this run "
            "has no access to: drop --domains (Graph then lists the domains too), or give BULKONBOARD_GRAPH_TOKEN "
            "with --access-token"
        )
    steps: list[Step] = []
    if profile:
        steps.append(ProfileStep(graph, profile_in_create=via == VIA_GRAPH))
    managers = None
    if wants_manager:
        managers = ManagerStep(graph, {customer: f.existing_users for customer, f in facts.items()})
        steps.append(managers)
    return StepPlan(tuple(steps), managers)
