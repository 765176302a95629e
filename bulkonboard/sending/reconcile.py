"""Settling a create whose answer says nothing for sure: the lookups after a duplicate UPN, a lost answer, a
refusal that followed a request that may have worked, and an answer about another user (`api.mismatch`).

Why lookups and not trust: a request that got no answer may have created the user, and the row's next request
(same MS-RequestId) may then be refused as a duplicate of our own success. Only the directory can say whose user
holds the UPN; what it cannot confirm stays "sent" in the journal, in doubt, for the next run to settle, and is
never called someone else's user nor a ghost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..model import Code, Problem, RowResult, Status, UserRow, api_code
from ..service.partnercenter import MismatchedAnswer, Refused, RequestError
from .messages import (
    SAME_JOURNAL,
    Failure,
    SignInFailed,
    SignInUnreachable,
    describe,
    fail,
    failure_code,
    may_exist_note,
)
from .ports import UserDirectory, UserService
from .sender import Sender


@dataclass(slots=True)
class Attempt:
    """One row's create on its way: what is needed to retry it and to say honestly what happened."""

    customer: str
    user: UserRow
    request_id: str
    maybe_created: bool = False  # an earlier request of this row may have created the user
    refused: bool = False  # finally refused (not as a duplicate): the service created nothing
    sends: int = 0
    failures: int = 0  # counted against the attempts
    throttles: int = 0
    refreshed: bool = False
    last_failure: Failure | None = None
    journaled: bool = False  # the journal holds "sent" for this row from this run
    cut_short: bool = False  # abort() cancelled its request in flight


class Reconciler:
    """The lookups of one run (Graph's GET by UPN when there is a Graph client, else Partner Center's list)."""

    def __init__(self, sender: Sender, client: UserService, graph: UserDirectory | None) -> None:
        self._sender = sender
        self._client = client
        self._graph = graph

    async def after_duplicate(self, attempt: Attempt, result: RowResult, refusal: Refused) -> None:
        """The UPN is taken. After an attempt that may have created the user, that is most likely our own
        success; on a clean first attempt, someone created the user since validation."""
        code = api_code(refusal.status)
        try:
            user_id = await (self.find_ours(attempt) if attempt.maybe_created else self.lookup(attempt))
        except (RequestError, SignInFailed) as failure:
            if attempt.maybe_created:
                what = (
                    "may exist: the service says the UPN is taken after an earlier request of this row that may "
                    f"have created the user, and looking the user up failed ({describe(failure)}); {SAME_JOURNAL}"
                )
            else:
                what = (
                    "the service says the UPN is taken, and looking the user up failed "
                    f"({describe(failure)}); check the tenant"
                )
            fail(result, code, what, refusal)
            return
        if user_id is not None and attempt.maybe_created:
            result.status, result.userId, result.problems = Status.CREATED, user_id, ()
        elif user_id is not None:
            result.status, result.userId = Status.SKIPPED, user_id
            result.problems = (
                Problem(
                    Code.USER_EXISTS,
                    "the user was created by someone else after validation; left as it is",
                    "userPrincipalName",
                ),
            )
        elif attempt.maybe_created:
            # Most likely our own user that the directory does not show yet: left in doubt (the journal keeps
            # "sent"), never called someone else's nor a ghost.
            what = (
                "may exist: the service says the UPN is taken after an earlier request of this row that may have "
                f"created the user, but the directory does not show it yet; {SAME_JOURNAL}"
            )
            fail(result, code, what, refusal)
        else:
            what = (
                "the service says the UPN is taken, but no user has it (a deleted user keeps its UPN for "
                "30 days; restore or purge it)"
            )
            fail(result, code, what, refusal)

    async def after_mismatch(self, attempt: Attempt, result: RowResult, mismatch: MismatchedAnswer) -> None:
        """The service said 200 about another user. Its id is someone else's and its "created" may not be about
        this row: only a lookup by UPN can say. Found: the row is settled by the lookup, as after a duplicate
        refusal. Not found: `api.mismatch`, and the row stays "sent" in the journal (the 200 may still be ours, not
        yet visible), so the next run reconciles it with the same request id."""
        attempt.maybe_created = True
        named = f"the service answered 200 naming {mismatch.named_upn} instead of {attempt.user.userPrincipalName}"
        try:
            user_id = await self.find_ours(attempt)
        except (RequestError, SignInFailed) as failure:
            what = (
                f"{named}, and looking the user up failed ({describe(failure)}); it may exist: run the same "
                "command again with the same journal, or check the tenant"
            )
            fail(result, Code.API_MISMATCH, what, None)
            return
        if user_id is not None:
            result.status, result.userId = Status.CREATED, user_id
            result.problems = (
                Problem(
                    Code.API_MISMATCH, f"{named}; a lookup by UPN found the user (id {user_id}), kept that id"
                ),
            )
            return
        what = f"{named}, and no user with this UPN was found; it may exist: {SAME_JOURNAL}"
        fail(result, Code.API_MISMATCH, what, None)

    async def after_refusal(self, attempt: Attempt, result: RowResult, refusal: Refused) -> None:
        """A refusal now says nothing of an earlier request of this row that may have created the user (its
        answer never came, or an earlier run was stopped before it did): ask before calling the row failed."""
        try:
            user_id = await self.find_ours(attempt)
        except (RequestError, SignInFailed) as failure:
            what = (
                "may exist: the service refused it, an earlier request of this row may have created the user, and "
                f"looking it up failed ({describe(failure)}); {SAME_JOURNAL}"
            )
            fail(result, api_code(refusal.status), what, refusal)
            return
        if user_id is not None:
            result.status, result.userId, result.problems = Status.CREATED, user_id, ()
            return
        attempt.refused = True
        fail(result, api_code(refusal.status), "the service refused it", refusal)

    async def give_up(self, attempt: Attempt, result: RowResult, failure: Failure) -> None:
        """Out of attempts (or not retryable). When an attempt may have created the user, ask before saying so."""
        if attempt.maybe_created:
            try:
                user_id = await self.find_ours(attempt)
            except (RequestError, SignInFailed):
                user_id = None
            if user_id is not None:
                result.status, result.userId, result.problems = Status.CREATED, user_id, ()
                return
        code = failure_code(failure)
        if isinstance(failure, SignInUnreachable) and not attempt.maybe_created:
            tries = f"{attempt.failures} tr{'ies' if attempt.failures != 1 else 'y'}"
            fail(result, code, f"not sent: no token after {tries}; run the same command again", failure)
            return
        tries = f"{attempt.sends} attempt{'s' if attempt.sends != 1 else ''}"
        what = (
            f"gave up after {tries}"
            if self._sender.policy.on(failure) is not False
            else "the service failed it"
        )
        fail(result, code, what + may_exist_note(attempt.maybe_created), failure)

    async def find_ours(self, attempt: Attempt) -> str | None:
        """The user an earlier request of this row may have created. Graph is eventually consistent: a user
        created a moment ago may not show yet, so nothing found is asked again a few times before the row is
        left in doubt."""
        sender = self._sender
        user_id = await self.lookup(attempt)
        retry = 0
        while user_id is None and retry < sender.options.lookup_retries:
            retry += 1
            wait = sender.policy.backoff.ceiling(retry)
            sender.waits.waiting(
                wait,
                "lookup",
                "before looking a user up again (a user created a moment ago may not show yet)",
            )
            await sender.wait(wait)
            user_id = await self.lookup(attempt)
        return user_id

    async def lookup(self, attempt: Attempt) -> str | None:
        """The id of the user with this UPN (Graph when we have it: one GET instead of paging the whole list)."""
        sender = self._sender
        sender.stats.lookups += 1
        customer, upn = attempt.customer, attempt.user.userPrincipalName

        async def ask() -> dict[str, Any] | None:
            if self._graph is not None:
                return await self._graph.get_user(customer, upn)
            return await self._client.find_user_by_upn(customer, upn)

        async def ask_with_token() -> dict[str, Any] | None:
            return await sender.cancellable(lambda: sender.with_token(ask()))

        async def wait_to_ask_again(seconds: float) -> None:
            sender.waits.waiting(seconds, "retry", "before trying a lookup again")
            await sender.wait(seconds)

        found = await sender.policy.call(ask_with_token, sleep=wait_to_ask_again)
        user_id = found.get("id") if found else None
        return user_id if isinstance(user_id, str) and user_id else None
