"""`--restore-deleted`: the step that takes create's place for a row whose UPN belongs to a soft-deleted user of the
customer: Partner Center's documented restore (PATCH the user with `State: active`), exactly once.

Its idempotency story is create's: one MS-RequestId per row, recorded durably before the request leaves (the
row's own record in the journal, plus a `restore` step record that says this request id is a restore, so that a
run resuming it sends a restore again with the same id, never a create). Every retry carries the same id. A
restore that never got a clear answer is settled by reading the user: active with that id means done (a restore
brings back the same object, the same id); still deleted means not done; gone (purged meanwhile) means it can no
longer be. Nothing it does can create a second user: it never sends a create.

What the restored user is: the user as it was deleted (its own names and password); the row's password and names
are not applied (docs/CONTRACT-ADDITIONS.md). The steps after create (license, profile, manager) run after it as
after a create: the restored user is this journal's own.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from ..model import RowResult, Status, api_code
from ..protocols import Journal
from ..service.partnercenter import PermissionDenied, Refused, RequestError
from .gone import RESTORE_STEP
from .messages import SAME_JOURNAL, SignInFailed, describe, fail, failure_code
from .reconcile import Attempt
from .sender import Aborted, Sender, Stopped, may_have_worked


@runtime_checkable
class RestoringService(Protocol):
    """What a restore asks of Partner Center (`partnercenter.PartnerCenterClient`)."""

    async def restore_user(self, customer_id: str, user_id: str, *, request_id: str) -> dict[str, Any]: ...

    async def get_user(self, customer_id: str, user_id: str) -> dict[str, Any] | None: ...


class RestoreStep:
    """Restores one row's soft-deleted user; the outcome is written into the row's `RowResult`."""

    name = RESTORE_STEP

    def __init__(self, sender: Sender, client: RestoringService, journal: Journal) -> None:
        self._sender = sender
        self._client = client
        self._journal = journal

    async def send(self, attempt: Attempt, result: RowResult, user_id: str) -> None:
        """Restore `user_id` until the row has a final outcome, written into `result`. Raises `Stopped` when a
        stop (or a refusal for lack of a role, which stops the run) leaves it unfinished."""
        await self._record_sending(attempt)
        try:
            answer = await self._sender.request(lambda: self._restore(attempt, user_id))
        except Aborted:
            attempt.maybe_created = attempt.cut_short = True  # it may have reached the service
            raise
        except PermissionDenied as refusal:  # the sender has stopped the run: every restore would be refused
            attempt.last_failure = refusal
            attempt.refused = not attempt.maybe_created
            raise Stopped from None
        except Refused as refusal:
            attempt.last_failure = refusal
            if attempt.maybe_created:  # an earlier try may have worked: the refusal may be about that
                await self._settle(attempt, result, user_id, refusal)
            else:
                attempt.refused = True
                fail(result, api_code(refusal.status), _refused_text(refusal, user_id), refusal)
            return
        except (RequestError, SignInFailed) as failure:
            attempt.last_failure = failure
            await self._settle(attempt, result, user_id, failure)
            return
        restored_id = answer.get("id")
        _restored(result, restored_id if isinstance(restored_id, str) and restored_id else user_id)

    async def _record_sending(self, attempt: Attempt) -> None:
        """Both records, durable, before the request may leave; a stop while they were written sends nothing."""
        customer, upn_key = attempt.customer, attempt.user.upn_key
        await self._journal.step_sending(customer, upn_key, RESTORE_STEP, attempt.request_id)
        await self._journal.sending(customer, upn_key, attempt.user.row, attempt.request_id)
        attempt.journaled = True
        if self._sender.stopping:
            raise Stopped

    async def _restore(self, attempt: Attempt, user_id: str) -> dict[str, Any]:
        """One try, counted once it leaves; a failure that may have worked leaves the row in doubt."""
        stats = self._sender.stats
        if attempt.sends == 0:
            stats.sent_rows += 1
        attempt.sends += 1
        try:
            return await self._client.restore_user(attempt.customer, user_id, request_id=attempt.request_id)
        except RequestError as failure:
            if may_have_worked(failure):
                attempt.maybe_created = True
            raise
        except BaseException:  # cut short (abort) or cancelled: it may have reached the service
            attempt.maybe_created = True
            raise

    async def _settle(
        self, attempt: Attempt, result: RowResult, user_id: str, failure: RequestError | SignInFailed
    ) -> None:
        """No clear answer: the user itself says whether it was restored. Unreadable: left in doubt (the journal
        keeps "sent", and the next run settles it with the same request id)."""
        self._sender.stats.lookups += 1
        try:
            found = await self._sender.request(lambda: self._client.get_user(attempt.customer, user_id))
        except (RequestError, SignInFailed) as lookup:
            what = (
                f"may be restored: the restore got no clear answer ({describe(failure)}), and reading the user "
                f"back failed ({describe(lookup)}); {SAME_JOURNAL}"
            )
            fail(result, failure_code(failure), what, None)
            return
        attempt.refused = True  # from here on the outcome is known: nothing is left in doubt
        if found is None:
            fail(result, api_code(404), _purged_text(user_id), None)
        elif str(found.get("state", "")).casefold() == "active":
            _restored(result, user_id)
        else:
            fail(result, failure_code(failure), "not restored: the user is still in the recycle bin", failure)


def _restored(result: RowResult, user_id: str) -> None:
    result.status, result.userId, result.problems = Status.RESTORED, user_id, ()


def _purged_text(user_id: str) -> str:
    return (
        f"not restored: the deleted user (id {user_id}) is no longer in the customer's recycle bin (deleted for "
        "good since it was checked), so its UPN is free: run the same command again to create the user afresh"
    )


def _refused_text(refusal: Refused, user_id: str) -> str:
    if refusal.status == 404:
        return _purged_text(user_id)
    return f"not restored: the service refused to restore the deleted user (id {user_id})"

