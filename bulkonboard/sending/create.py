"""The first step of every row's plan: create the user, exactly once, whatever the network does.

Its idempotency story: each row has one MS-RequestId, kept across all of its retries and across runs (the
journal records it, durably, before the request leaves). A retry, or a replay after an answer that never came,
that is refused as a duplicate UPN is most likely our own earlier success, so the user is looked up
(reconcile.py) and the row is `created` with the id found. Its record is the journal's row itself (`rows`), not a
`steps` record: see journal/store.py.

`send` is the loop; each outcome of one request has its own handler (`_after_*`), so the loop only says which.
"""

from __future__ import annotations

from ..model import RowResult, Status, api_code
from ..protocols import Journal
from ..service.partnercenter import (
    CreatedUser,
    MismatchedAnswer,
    PermissionDenied,
    Refused,
    RequestError,
    Throttled,
    Unauthorized,
)
from .messages import (
    SignInFailed,
    SignInRefused,
    SignInUnreachable,
    fail,
    may_exist_note,
    signed_out_text,
)
from .ports import UserService
from .reconcile import Attempt, Reconciler
from .sender import Aborted, Sender, Stopped, may_have_worked


class CreateStep:
    """Creates one row's user through Partner Center; the outcome is written into the row's `RowResult`."""

    name = "create"

    def __init__(self, sender: Sender, client: UserService, journal: Journal, reconciler: Reconciler) -> None:
        self._sender = sender
        self._client = client
        self._journal = journal
        self._reconcile = reconciler

    async def send(self, attempt: Attempt, result: RowResult) -> None:
        """Send until the row has a final outcome, written into `result`. Raises `Stopped` when a stop leaves it
        unfinished (`attempt` says how far it got)."""
        while True:
            sent_at = await self._ready_to_send(attempt)
            generation = self._sender.token_generation
            try:
                created = await self._create(attempt)
            except Aborted:
                attempt.maybe_created = attempt.cut_short = True  # it may have reached the service
                raise
            except SignInFailed as failure:
                if not await self._after_sign_in_failure(attempt, result, failure):
                    return
                continue
            except RequestError as failure:
                self._sender.answered()
                if not await self._after_failure(attempt, result, failure, sent_at, generation):
                    return
                continue
            self._after_created(result, created)
            return

    def _after_created(self, result: RowResult, created: CreatedUser) -> None:
        sender = self._sender
        sender.answered()
        sender.controller.on_success(usage=created.throttle_usage)
        sender.follow_rate()
        result.status, result.userId, result.problems = Status.CREATED, created.id, ()

    async def _after_sign_in_failure(
        self, attempt: Attempt, result: RowResult, failure: SignInFailed
    ) -> bool:
        """No token: unreachable is retried like a connection that could not be made; refused fails the row
        (and the run has halted)."""
        if isinstance(failure, SignInRefused):
            attempt.last_failure = failure
            fail(result, api_code(401), signed_out_text(attempt.maybe_created), failure)
            return False
        return await self._retry_after_failure(attempt, result, failure)

    async def _after_failure(
        self, attempt: Attempt, result: RowResult, failure: RequestError, sent_at: float, generation: int
    ) -> bool:
        """One answer that is not a success: say True (send again) or False (the row has its outcome)."""
        if isinstance(failure, Throttled):
            return self._after_throttle(attempt, result, failure, sent_at)
        if isinstance(failure, Unauthorized):
            return await self._after_unauthorized(attempt, result, failure, generation)
        attempt.last_failure = failure
        if isinstance(failure, PermissionDenied):
            # Every later create would be refused the same way: the run takes no new row, and this one is left
            # unfinished (`pending`): nothing was created by this request; an earlier one's doubt stays open.
            self._sender.deny(failure)
            attempt.refused = not attempt.maybe_created
            raise Stopped
        if isinstance(failure, MismatchedAnswer):
            await self._reconcile.after_mismatch(attempt, result, failure)
            return False
        if isinstance(failure, Refused):
            await self._after_refused(attempt, result, failure)
            return False
        if may_have_worked(failure):
            attempt.maybe_created = True
        return await self._retry_after_failure(attempt, result, failure)

    async def _ready_to_send(self, attempt: Attempt) -> float:
        """Wait until the row's request may leave, and say when that is; `Stopped` if the run stops first. The
        row's first request is recorded only once it really goes out (a stop before this sent nothing), and
        durably before it leaves: a run killed from here on leaves "sent" behind."""
        sender = self._sender
        if sender.stopping and attempt.sends:
            raise Stopped  # a retry after stop() is abandoned
        await sender.clear_to_send()
        if attempt.sends == 0:
            await self._journal.sending(
                attempt.customer, attempt.user.upn_key, attempt.user.row, attempt.request_id
            )
            attempt.journaled = True
            if sender.stopping:  # stop() came while the record was being committed: nothing leaves now
                raise Stopped
        return sender.note_first_send()

    async def _after_unauthorized(
        self, attempt: Attempt, result: RowResult, failure: Unauthorized, generation: int
    ) -> bool:
        """A 401: refresh the token once (one refresh for every worker that saw the same token refused) and say
        True (send again), or fail the row and say False."""
        attempt.last_failure = failure
        if attempt.refreshed or self._sender.tokens is None:
            what = (
                "the token was refused, also after a refresh"
                if attempt.refreshed
                else ("the token was refused, and this run has no way to refresh it")
            )
            fail(result, api_code(401), what + may_exist_note(attempt.maybe_created), failure)
            return False
        attempt.refreshed = True
        try:
            await self._sender.refresh_token(generation)
        except SignInRefused as refusal:
            fail(
                result,
                api_code(401),
                f"the token was refused and could not be refreshed ({refusal.reason}); the run "
                f"stopped taking rows{may_exist_note(attempt.maybe_created)}",
                None,
            )
            return False
        except SignInUnreachable as unreachable:
            attempt.refreshed = False  # the refresh never happened: the next 401 may try again
            return await self._retry_after_failure(attempt, result, unreachable)
        return True

    async def _after_refused(self, attempt: Attempt, result: RowResult, failure: Refused) -> None:
        """A final 4xx: a taken UPN is looked up, a refusal after a request that may have created the user is
        checked, any other fails the row (the service created nothing)."""
        if failure.is_duplicate_upn:
            await self._reconcile.after_duplicate(attempt, result, failure)
        elif attempt.maybe_created:
            await self._reconcile.after_refusal(attempt, result, failure)
        else:
            attempt.refused = True
            fail(result, api_code(failure.status), "the service refused it", failure)

    def _after_throttle(
        self, attempt: Attempt, result: RowResult, failure: Throttled, sent_at: float
    ) -> bool:
        """A 429: slow the rate, close the gate for every sender, and say True (try again) or False (given up: the
        row is throttled without end)."""
        attempt.throttles += 1
        attempt.last_failure = failure
        if attempt.throttles >= self._sender.options.max_throttled:
            self._sender.stats.throttled += 1
            self._sender.controller.on_throttle(failure.retry_after, sent_at=sent_at)
            self._sender.follow_rate()
            fail(
                result,
                api_code(429),
                f"still throttled after {attempt.throttles} tries{may_exist_note(attempt.maybe_created)}",
                failure,
            )
            return False
        self._sender.throttled(failure, sent_at, attempt.throttles)
        return True

    async def _retry_after_failure(
        self, attempt: Attempt, result: RowResult, failure: RequestError | SignInFailed
    ) -> bool:
        """A failure that uses up one of the row's attempts: wait out the backoff and say True (try again), or
        give the row up and say False."""
        attempt.last_failure = failure
        attempt.failures += 1
        if await self._sender.backoff(failure, attempt.failures):
            return True
        await self._reconcile.give_up(attempt, result, failure)
        return False

    async def _create(self, attempt: Attempt) -> CreatedUser:
        """The row's create request, counted once it has left: when the service answered, the request failed on
        the way, or abort() cut it short (it may have reached the service). A token failure comes before any
        request, so it is not counted."""
        sender = self._sender
        try:
            created = await sender.cancellable(
                lambda: sender.with_token(
                    self._client.create_user(attempt.customer, attempt.user, request_id=attempt.request_id)
                )
            )
        except SignInFailed:
            raise
        except BaseException:
            self._count_send(attempt)
            raise
        self._count_send(attempt)
        return created

    def _count_send(self, attempt: Attempt) -> None:
        stats = self._sender.stats
        if attempt.sends == 0:
            stats.sent_rows += 1
        else:
            stats.retries += 1
        attempt.sends += 1
        stats.requests += 1
