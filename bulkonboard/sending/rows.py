"""One row's way through its plan: what the journal remembers decides where it starts, create runs (or is
skipped as done by an earlier run), then the steps after it; each outcome has its own handler.

- A row an earlier run created is never sent again: its later steps not yet done are run, nothing else. If the
  tenant no longer holds its user (deleted, purged, or another tenant), the row is `failed` with `user.deleted`
  (gone.py): the tenant is the truth, not the journal's memory.
- A row an earlier run sent without learning the outcome (killed, answer lost) is sent again with the SAME
  request id, and a row found in the tenant that the journal knows as ours is said to be ours.
- Only an outcome known for sure is recorded: a row that may exist and could not be confirmed stays "sent" for
  the next run.
- A stop leaves every row with a result: those left unfinished or never reached are `pending` (never `failed`:
  nothing about the user is claimed), with a `run.interrupted` problem saying whether a request may have reached
  the service. A row stopped after answers that prove nothing was created is recorded as such,
  so the next run sends it afresh under a new request id.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable

from ..model import Code, Problem, RowResult, Status
from ..protocols import CheckedRowLike, Journal, PriorOutcome, PriorState, StepState
from ..service.partnercenter import PermissionDenied, RequestError
from .create import CreateStep
from .gone import RESTORE_STEP, earlier_run, gone_for_good, in_recycle_bin
from .messages import RUN_INTERRUPTED, SignInFailed, fail, failure_code, not_finished_text, on, stop_note
from .reconcile import Attempt, Reconciler
from .restore import RestoreStep
from .sender import Sender, Stopped
from .steps import PlanRunner, RowState


class RowRunner:
    """The per-row handlers of one run (`flow.RowHandler`)."""

    def __init__(
        self,
        *,
        sender: Sender,
        journal: Journal,
        create: CreateStep,
        restore: RestoreStep | None,
        reconciler: Reconciler,
        plan: PlanRunner,
        customer: str,
        to_result: Callable[[CheckedRowLike], RowResult],
        journal_path: str | None = None,
    ) -> None:
        self._sender = sender
        self._journal_path = journal_path  # named in the advice to forget a row
        self._journal = journal
        self._create = create
        self._restore = restore  # None: the client cannot restore (a test's fake)
        self._reconciler = reconciler
        self._plan = plan
        self._customer = customer
        self._to_result = to_result

    @property
    def stopping(self) -> bool:
        return self._sender.stopping

    def _customer_of(self, checked: CheckedRowLike) -> str:
        return checked.user.customerTenantId or self._customer

    def needs_worker(self, checked: CheckedRowLike) -> bool:
        """A row to create, or one validation found in the tenant whose later steps may still be owed (only when
        the plan has any: a create-only run never sends a request for an existing user)."""
        if checked.status is Status.VALID:
            return True
        return (
            bool(self._plan.steps)
            and not self.stopping
            and checked.status is Status.SKIPPED
            and bool(checked.existing_user_id)
        )

    # -- rows that need no request

    def without_request(self, checked: CheckedRowLike) -> RowResult:
        result = self._to_result(checked)
        if checked.status is Status.SKIPPED and checked.existing_user_id:
            self._explain_existing(
                checked, result, self._journal.prior(self._customer_of(checked), checked.user.upn_key)
            )
        elif checked.status is Status.INVALID and checked.deleted_user is not None:
            customer = self._customer_of(checked)
            prior = self._journal.prior(customer, checked.user.upn_key)
            if prior is not None:  # ours, deleted since: said so, with the ways out
                restored = self._restored_earlier(customer, checked.user.upn_key, prior)
                in_recycle_bin(
                    result, prior, checked.deleted_user, restored=restored, journal_path=self._journal_path
                )
        return result

    def _restored_earlier(self, customer: str, upn_key: str, prior: PriorState) -> bool:
        """Whether the journal's record of the row is a restore rather than a create (its `restore` step record
        carries the same request id), for the words only."""
        record = self._journal.prior_steps(customer, upn_key).get(RESTORE_STEP)
        return record is not None and record.request_id == prior.request_id

    def _gone(self, checked: CheckedRowLike, result: RowResult, prior: PriorState) -> RowResult:
        customer, upn_key = self._customer_of(checked), checked.user.upn_key
        restored = self._restored_earlier(customer, upn_key, prior)
        return gone_for_good(result, prior, restored=restored, journal_path=self._journal_path)

    def _explain_existing(self, checked: CheckedRowLike, result: RowResult, prior: PriorState | None) -> bool:
        """Validation found the user in the tenant; the journal may know that it is ours. Then the results say so
        (nightly runs over a growing sheet), and a row an earlier run sent without learning the outcome (killed,
        answer lost) is settled here as created, without sending anything. Says whether the user is ours."""
        user = checked.user
        if prior is None or (prior.user_id and prior.user_id != checked.existing_user_id):
            return False  # not ours, or ours was replaced since: validation's words stand
        customer = self._customer_of(checked)
        restored = self._restored_earlier(customer, user.upn_key, prior)
        made = "restored" if restored else "created"
        if prior.outcome is PriorOutcome.CREATED:
            what = f"{made} by an earlier run{on(prior.recorded_at)}"
        else:
            what = f"{made} by an earlier run{on(prior.recorded_at)} that was stopped before its answer came"
            settled = dataclasses.replace(
                result,
                status=Status.CREATED,
                userId=checked.existing_user_id,
                problems=(),
                requestId=prior.request_id,
            )
            self._journal.finished(customer, user.upn_key, settled)
            if restored:
                self._journal.step_finished(
                    customer, user.upn_key, RESTORE_STEP, StepState.DONE, prior.request_id, None
                )
        result.requestId = prior.request_id or None
        message = (
            f"{user.userPrincipalName} already exists in the tenant (id {checked.existing_user_id}): {what}"
        )
        result.problems = tuple(
            Problem(p.code, message, p.field) if p.code == Code.USER_EXISTS else p for p in result.problems
        )
        return True

    def not_reached(self, checked: CheckedRowLike) -> RowResult:
        """A row to create that the feeder reached only after a stop: listed, never sent."""
        result = self._to_result(checked)
        prior = self._journal.prior(self._customer_of(checked), checked.user.upn_key)
        if prior is not None and prior.outcome is PriorOutcome.CREATED:
            return self._not_checked(result, prior)
        self._sender.stats.not_reached += 1
        if prior is not None:  # in doubt: an earlier run sent it and never learnt the outcome
            result.requestId = prior.request_id
            message = (
                f"may exist: an earlier run{on(prior.recorded_at)} sent it without learning the outcome, and "
                "this run was stopped before this row; run the same command again with the same journal"
            )
        else:
            message = f"not sent: {stop_note(self._sender.halt_text, self._sender.denied)}"
        result.status, result.userId, result.problems = (
            Status.PENDING,
            None,
            (Problem(RUN_INTERRUPTED, message),),
        )
        return result

    # -- rows sent

    async def process(self, checked: CheckedRowLike) -> RowResult:
        """The row's plan: create (unless an earlier run did), then the steps after it."""
        customer = self._customer_of(checked)
        prior = self._journal.prior(customer, checked.user.upn_key)
        if checked.status is not Status.VALID:  # in the tenant already: ours, with steps owed?
            result = self._to_result(checked)
            if self._explain_existing(checked, result, prior):
                result.userId = checked.existing_user_id
                await self._plan.run(RowState(customer, checked.user, result))
            return result
        if checked.deleted_user is not None:  # --restore-deleted: restore takes create's place
            result = await self._restored_now(checked, customer, prior)
        elif prior is not None and prior.outcome is PriorOutcome.CREATED:
            return await self._created_earlier(checked, customer, prior)
        else:
            result = await self._created_now(checked, customer, prior)
        if result.status in (Status.CREATED, Status.RESTORED):  # never someone else's (a duplicate UPN: `skipped`)
            await self._plan.run(RowState(customer, checked.user, result))
        return result

    async def _created_earlier(self, checked: CheckedRowLike, customer: str, prior: PriorState) -> RowResult:
        """An earlier run created it, and validation found no user with its UPN (or could not list users): the
        tenant is asked before anything is said. Still there: `skipped`, ours, its steps owed are run. Gone:
        `failed` with `user.deleted` (gone.py), never created again unasked."""
        result = self._to_result(checked)
        try:
            found = await self._reconciler.lookup(Attempt(customer, checked.user, prior.request_id))
        except Stopped:
            self._sender.stats.not_finished += 1
            return self._not_checked(result, prior)
        except (RequestError, SignInFailed) as failure:
            restored = self._restored_earlier(customer, checked.user.upn_key, prior)
            what = (
                f"{checked.user.userPrincipalName} was {earlier_run(prior, restored=restored)}, and looking it up in "
                "the tenant failed, so whether it still exists is not known; run the same command again"
            )
            fail(result, failure_code(failure), what, failure)
            result.requestId = prior.request_id or None
            return result
        if found is None:
            return self._gone(checked, result, prior)
        if prior.user_id and found != prior.user_id:  # ours is gone, and someone else's holds the UPN now
            result.status, result.userId, result.requestId = Status.SKIPPED, found, prior.request_id or None
            message = (
                f"{checked.user.userPrincipalName} already exists in the tenant (id {found}), but not as the user an "
                f"earlier run of this journal created (id {prior.user_id}); left as it is"
            )
            result.problems = (Problem(Code.USER_EXISTS, message, "userPrincipalName"),)
            return result
        _skipped_as_ours(result, prior, found)
        await self._plan.run(RowState(customer, checked.user, result))
        return result

    def _not_checked(self, result: RowResult, prior: PriorState) -> RowResult:
        """A row the journal says an earlier run created, reached after a stop: whether the tenant still holds it
        was not checked, so nothing is claimed (`pending`)."""
        message = (
            f"not checked: an earlier run{on(prior.recorded_at)} created it, and this run was stopped before "
            "checking that the tenant still holds it; run the same command again"
        )
        result.status, result.userId, result.requestId = Status.PENDING, None, prior.request_id or None
        result.problems = (Problem(RUN_INTERRUPTED, message),)
        return result

    async def _created_now(
        self, checked: CheckedRowLike, customer: str, prior: PriorState | None
    ) -> RowResult:
        """The create step, and its record in the journal once its outcome is known for sure."""
        user = checked.user
        result = self._to_result(checked)
        in_doubt = prior is not None and prior.outcome is PriorOutcome.IN_DOUBT
        attempt = Attempt(
            customer=customer,
            user=user,
            request_id=prior.request_id if prior is not None and in_doubt else str(uuid.uuid4()),
            maybe_created=in_doubt,
        )
        result.requestId = attempt.request_id
        if self.stopping:
            return self._not_finished(result, attempt)
        # No `pending` record first: a row the journal does not hold (or holds as refused) is "never sent" already,
        # and the write cost as much as the durable `sent` one.
        try:
            await self._create.send(attempt, result)
        except Stopped:
            return self._not_finished(result, attempt)
        finally:
            result.attempts = attempt.sends
        if result.status is Status.FAILED and attempt.maybe_created and not attempt.refused:
            # The user may exist and nobody could confirm it: the journal keeps the row as sent (in doubt), so the
            # next run reconciles it with the same request id instead of creating a second account.
            return result
        self._journal.finished(customer, user.upn_key, result)
        return result

    async def _restored_now(
        self, checked: CheckedRowLike, customer: str, prior: PriorState | None
    ) -> RowResult:
        """The restore step in create's place, recorded like a create: a restore an earlier run left in doubt is
        sent again with its same request id; anything else under a new one."""
        user, deleted = checked.user, checked.deleted_user
        assert deleted is not None
        result = self._to_result(checked)
        in_doubt = (
            prior is not None
            and prior.outcome is PriorOutcome.IN_DOUBT
            and self._restored_earlier(customer, user.upn_key, prior)
        )
        request_id = prior.request_id if prior is not None and in_doubt else str(uuid.uuid4())
        attempt = Attempt(customer=customer, user=user, request_id=request_id, maybe_created=in_doubt)
        result.requestId = attempt.request_id
        if self._restore is None:
            fail(result, Code.USER_DELETED, "not restored: this run has no way to restore users", None)
            return result
        if self.stopping:
            return self._not_finished(result, attempt, "restored")
        try:
            await self._restore.send(attempt, result, deleted.id)
        except Stopped:
            return self._not_finished(result, attempt, "restored")
        finally:
            result.attempts = attempt.sends
        if result.status is Status.FAILED and attempt.maybe_created and not attempt.refused:
            return result  # may be restored, unconfirmed: the journal keeps "sent" for the next run
        self._journal.finished(customer, user.upn_key, result)
        done = StepState.DONE if result.status is Status.RESTORED else StepState.FAILED
        self._journal.step_finished(customer, user.upn_key, RESTORE_STEP, done, attempt.request_id, None)
        return result

    def _not_finished(self, result: RowResult, attempt: Attempt, made: str = "created") -> RowResult:
        """A row taken, then left unfinished by a stop. Only a row whose request may have created the user
        stays "sent" in the journal; any other is recorded as not created, so that the next run sends it afresh
        under a new request id instead of taking whoever holds the UPN by then for its own."""
        self._sender.stats.not_finished += 1
        message = not_finished_text(
            cut_short=attempt.cut_short,
            maybe_created=attempt.maybe_created,
            sends=attempt.sends,
            last=attempt.last_failure,
            halt=self._sender.halt_text,
            denied=self._sender.denied,
            made=made,
        )
        refused = isinstance(attempt.last_failure, PermissionDenied) and not attempt.maybe_created
        result.status, result.userId, result.problems = (
            Status.PENDING,
            None,
            (Problem(Code.PERMISSION_DENIED if refused else RUN_INTERRUPTED, message),),
        )
        if not attempt.maybe_created and attempt.journaled:
            # The journal knows "failed" as "certainly not created: send afresh", which is what it must learn here;
            # the results say `pending` (journal results reads a `run.interrupted` failure back as pending).
            not_created = dataclasses.replace(result, status=Status.FAILED)
            self._journal.finished(attempt.customer, attempt.user.upn_key, not_created)
        if attempt.sends == 0 and not attempt.maybe_created:
            result.requestId = None  # never sent: no request to look for in the service's logs
        return result


def _skipped_as_ours(result: RowResult, prior: PriorState, user_id: str) -> None:
    result.status, result.userId, result.requestId = Status.SKIPPED, user_id, prior.request_id or None
    result.problems = (
        Problem(
            Code.USER_EXISTS,
            f"created by an earlier run{on(prior.recorded_at)} (its journal says so); not sent again",
            "userPrincipalName",
        ),
    )
