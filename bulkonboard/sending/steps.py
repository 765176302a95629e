"""A row as a plan of steps: create first (create.py), then the steps that need the user to exist (restore,
license, profile, manager...), each a small unit implementing `Step`, each run exactly once across runs.

The contract a step keeps (docs/ARCHITECTURE.md, "The plan of steps"):
- `name`: its key in the journal (`steps` table): stable across releases, never reused for another meaning.
- `needed(row)`: whether this row asks for it (a license step only when the row names licenses). A step that
  depends on an earlier one of the same row says so here (`row.done` names the steps done).
- `run(row, request_id, sender)`: ONE logical request, sent through `sender.request` (paced, throttled, retried
  with the SAME request id, cut short by a stop). The journal has recorded "sent with request_id" durably before
  `run` is called. It returns `StepOutcome.done()` or `.failed(message)`; a request error it lets out is judged
  here: a final refusal (`Refused`) is `failed`; any other (no answer, a 5xx) leaves it in doubt.
- `reconcile(row, request_id, sender)`: an earlier run sent it and never learnt the outcome (killed, answer
  lost). True: the effect is there (the license is assigned, the field holds the value): recorded done, never
  sent again. False: certainly not there: sent again, same request id. None: cannot tell: left in doubt.
- `code` / `fails_row_as`: what its failure means: every step after create fails the row as `partial` (the user
  exists, `userId` is filled); its problem carries `code` (`license.failed`, ...).
- Optionally (`ShowsItsEffect`), a step whose effect belongs in the results (the licenses assigned): `effect(row)`
  words what it did, kept as its journal record's detail, and `show(row, detail)` writes it into the row's result,
  whether this run did it or an earlier one (then from the journal's detail, never from today's sheet).

The runner below asks the journal once per row what earlier runs left, skips the steps done, settles the ones in
doubt, and sends the rest; the next run of the same journal retries only the steps that have not succeeded.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from ..model import Problem, RowResult, Status, UserRow
from ..protocols import Journal, StepPrior, StepState
from ..service.partnercenter import Refused, RequestError
from .messages import RUN_INTERRUPTED, SAME_JOURNAL, SignInFailed, describe
from .sender import Sender, Stopped


@dataclass(slots=True)
class RowState:
    """What a step sees of its row: the user as sent, its result so far (`userId` from create), the steps done."""

    customer: str
    user: UserRow
    result: RowResult
    done: set[str] = field(default_factory=set)

    @property
    def user_id(self) -> str:
        return self.result.userId or ""


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """A step's answer for its row. `message` says why, in words for the problems cell."""

    state: StepState
    message: str = ""

    @classmethod
    def done(cls, detail: str = "") -> StepOutcome:
        """Done; `detail` (optional) words what it did, for the journal's record (`ShowsItsEffect`)."""
        return cls(StepState.DONE, detail)

    @classmethod
    def failed(cls, message: str) -> StepOutcome:
        return cls(StepState.FAILED, message)

    @classmethod
    def in_doubt(cls, message: str) -> StepOutcome:
        return cls(StepState.SENT, message)


class Step(Protocol):
    """One step of a row's plan after create. See the module's docstring for the contract it keeps."""

    name: str
    code: str  # the problem code its failure carries
    fails_row_as: Status  # Status.PARTIAL for every step after create

    def needed(self, row: RowState) -> bool: ...

    async def run(self, row: RowState, request_id: str, sender: Sender) -> StepOutcome: ...

    async def reconcile(self, row: RowState, request_id: str, sender: Sender) -> bool | None: ...


@runtime_checkable
class ShowsItsEffect(Protocol):
    """A step whose effect the results show (the license step: the SKUs assigned). See the module's docstring."""

    def effect(self, row: RowState) -> str: ...

    def show(self, row: RowState, detail: str) -> None: ...


class PlanRunner:
    """Runs the steps after create for one row whose user exists (created now, or by an earlier run of the
    journal), each at most once across runs."""

    def __init__(self, steps: Sequence[Step], sender: Sender, journal: Journal) -> None:
        self.steps = tuple(steps)
        self._sender = sender
        self._journal = journal

    async def run(self, row: RowState) -> None:
        """Every needed step, in order; a failed one does not stop the next (each has its own outcome), a stop
        does (the rest is left for the next run). The row's result says what is not done."""
        if not self.steps or not row.user_id:
            return
        needed = [step for step in self.steps if step.needed(row)]
        if not needed:
            return
        priors = self._journal.prior_steps(row.customer, row.user.upn_key)
        for step in needed:
            try:
                outcome = await self._one(step, row, priors.get(step.name))
            except Stopped:
                self._sender.stats.not_finished += 1
                what = f"{step.name} not finished: the run was stopped before it was; {SAME_JOURNAL}"
                _fall_short(row, step.fails_row_as, Problem(RUN_INTERRUPTED, what))
                return
            if outcome.state is StepState.DONE:
                row.done.add(step.name)
                if isinstance(step, ShowsItsEffect):
                    step.show(row, outcome.message)
            else:
                _fall_short(row, step.fails_row_as, Problem(step.code, f"{step.name}: {outcome.message}"))

    async def _one(self, step: Step, row: RowState, prior: StepPrior | None) -> StepOutcome:
        """One step: skipped if done, settled if in doubt, else sent (recorded durably first)."""
        if prior is not None and prior.state is StepState.DONE:
            return StepOutcome.done(prior.detail or "")  # what it did then, as the journal kept it
        if prior is not None and prior.state is StepState.SENT:
            request_id = prior.request_id
            settled = await self._settle(step, row, request_id)
            if settled is not None:
                return settled
        else:
            request_id = str(uuid.uuid4())  # never sent, or refused for good: a new request
        if self._sender.stopping:
            raise Stopped
        await self._journal.step_sending(row.customer, row.user.upn_key, step.name, request_id)
        if self._sender.stopping:  # stop() came while the record was being committed: nothing leaves now
            raise Stopped
        outcome = await self._run(step, row, request_id)
        self._record(step, row, request_id, outcome)
        return outcome

    async def _settle(self, step: Step, row: RowState, request_id: str) -> StepOutcome | None:
        """An earlier run sent this step and never learnt the outcome: ask before sending it again."""
        try:
            found = await step.reconcile(row, request_id, self._sender)
        except (RequestError, SignInFailed) as failure:
            return StepOutcome.in_doubt(
                f"may be done: an earlier run sent it without learning the outcome, and checking failed "
                f"({describe(failure)}); {SAME_JOURNAL}"
            )
        if found is True:
            outcome = StepOutcome.done(step.effect(row) if isinstance(step, ShowsItsEffect) else "")
            self._record(step, row, request_id, outcome)
            return outcome
        if found is None:
            return StepOutcome.in_doubt(
                f"may be done: an earlier run sent it without learning the outcome, and it cannot be told from "
                f"the tenant; {SAME_JOURNAL}"
            )
        return None  # certainly not done: sent again, with the same request id

    async def _run(self, step: Step, row: RowState, request_id: str) -> StepOutcome:
        try:
            outcome = await step.run(row, request_id, self._sender)
        except Refused as failure:  # a final answer: the service did not do it
            return StepOutcome.failed(describe(failure))
        except (RequestError, SignInFailed) as failure:
            # Any other end (no answer, a server error, throttled or signed out after an earlier try that may have
            # worked) leaves it in doubt: the next run reconciles before sending it again.
            return StepOutcome.in_doubt(f"may be done: {describe(failure)}; {SAME_JOURNAL}")
        if outcome.state is StepState.DONE and not outcome.message and isinstance(step, ShowsItsEffect):
            return StepOutcome.done(step.effect(row))  # what it did, for the journal's record
        return outcome

    def _record(self, step: Step, row: RowState, request_id: str, outcome: StepOutcome) -> None:
        """A known outcome goes to the journal (lazily); one in doubt stays "sent" for the next run to settle."""
        if outcome.state is StepState.SENT:
            return
        detail = outcome.message or None
        self._journal.step_finished(
            row.customer, row.user.upn_key, step.name, outcome.state, request_id, detail
        )


def _fall_short(row: RowState, status: Status, problem: Problem) -> None:
    """A step after create did not succeed: the user exists, so the row takes the step's failure status
    (`partial`: its `userId` stays), with one problem per step not done after what the row already said."""
    row.result.status = status
    row.result.problems = (*row.result.problems, problem)
