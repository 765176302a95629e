"""Rows whose user an earlier run of this journal created (or restored, or sent without learning the outcome) and
that the tenant no longer holds as an active user: the tenant is the truth, not the journal's memory.

Why a verdict of its own: reporting such a row `skipped` ("created by an earlier run") hands the admin an id that
no longer exists, and creating it again silently would hide that somebody deleted a person's account. So the row
is `failed` with `user.deleted`, and its message says when the earlier run created it, whether the user is in the
customer's recycle bin (restorable for 30 days: `--restore-deleted`) or gone for good, and the command that makes
the journal forget it (to create it afresh). Nothing is written to the journal: the next run says the same until
the admin chooses.
"""

from __future__ import annotations

from ..model import Code, Problem, RowResult, Status
from ..protocols import DeletedUserLike, PriorOutcome, PriorState
from ..sheets.deletedusers import RECYCLE_BIN_DAYS, as_read
from .messages import on

#: The journal's name for a restore (`--restore-deleted`): a `steps` record beside the row's own record.
RESTORE_STEP = "restore"


def earlier_run(prior: PriorState, *, restored: bool) -> str:
    """What the journal remembers of the user, in the admin's words."""
    if prior.outcome is PriorOutcome.CREATED:
        what = "restored" if restored else "created"
        known = f" (id {prior.user_id})" if prior.user_id else ""
        return f"{what} by an earlier run of this journal{on(prior.recorded_at)}{known}"
    what = "restore" if restored else "create"
    return f"sent (its {what}) by an earlier run of this journal{on(prior.recorded_at)}, which never learnt the outcome"


def forget_command(journal_path: str | None, upn: str) -> str:
    where = f" --journal {journal_path}" if journal_path else ""
    return f"bulkonboard journal forget{where} --upn {upn}"


def gone_for_good(
    result: RowResult, prior: PriorState, *, restored: bool, journal_path: str | None
) -> RowResult:
    """The tenant holds no user with the UPN, active or deleted: purged, or this is not the tenant it was."""
    upn = result.userPrincipalName
    message = (
        f"{upn} was {earlier_run(prior, restored=restored)}, and the tenant no longer holds it: it is not in the "
        f"customer's recycle bin either, so it was deleted for good (or the tenant is not the one it was created "
        f"in); it was not created again. To create it afresh, make the journal forget it "
        f"(`{forget_command(journal_path, upn)}`), then run again"
    )
    return _failed(result, prior, message)


def in_recycle_bin(
    result: RowResult,
    prior: PriorState,
    deleted: DeletedUserLike,
    *,
    restored: bool,
    journal_path: str | None,
) -> RowResult:
    """The UPN belongs to a soft-deleted user; the row (invalid only for that) is `failed`: its user was ours."""
    upn = result.userPrincipalName
    since = f", deleted since {as_read(deleted.deleted_at)}" if deleted.deleted_at else ""
    other = (
        f" (not the id the journal recorded, {prior.user_id})" if prior.user_id and prior.user_id != deleted.id else ""
    )
    message = (
        f"{upn} was {earlier_run(prior, restored=restored)}, and has been deleted since: it is in the customer's "
        f"recycle bin (id {deleted.id}{since}){other}, which keeps it and its UPN for {RECYCLE_BIN_DAYS} days; "
        f"nothing was sent. Give --restore-deleted to restore it, or, to create a new user instead, delete it "
        f"permanently in the admin center, make the journal forget it (`{forget_command(journal_path, upn)}`) "
        "and run again"
    )
    others = tuple(p for p in result.problems if p.code != Code.USER_DELETED)
    _failed(result, prior, message)
    if others:  # invalid for more than the deletion: the sheet must be fixed too, so it stays invalid
        result.status = Status.INVALID
        result.problems = (*result.problems, *others)
    return result


def _failed(result: RowResult, prior: PriorState, message: str) -> RowResult:
    result.status, result.userId = Status.FAILED, None
    result.requestId = prior.request_id or None
    result.problems = (Problem(Code.USER_DELETED, message, "userPrincipalName"),)
    return result
