"""The words a row's `problems` cell carries when sending did not go to plan.

Kept apart from the machinery that decides (create.py, reconcile.py, steps.py) so that the texts an admin reads
stay consistent: one place says "may exist ... run the same command again with the same journal", and every
outcome that leaves a user in doubt uses it.
"""

from __future__ import annotations

from datetime import datetime

from ..model import Code, Problem, RowResult, Status, api_code
from ..service.partnercenter import ApiError, PermissionDenied, RequestError, TransportError

#: The pipeline's own problem codes (docs/CONTRACT-ADDITIONS.md), named here for its callers and tests.
API_UNREACHABLE = Code.API_UNREACHABLE
RUN_INTERRUPTED = Code.RUN_INTERRUPTED

#: Said of a row whose user may exist and could not be confirmed: the journal keeps it "sent" for the next run.
SAME_JOURNAL = "run the same command again with the same journal, or check the tenant"


class SignInFailed(Exception):
    """No token, so no request left. Not a `RequestError`: nothing reached the service, and the row's send is
    not counted. `reason` is the sign-in service's own words (they say what to do)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SignInUnreachable(SignInFailed):
    """The sign-in service could not be reached (a network blip): tried again after our backoff, and counted
    against the row's attempts like a connection that could not be made."""


class SignInRefused(SignInFailed):
    """The sign-in service refused (a revoked refresh token, an expired secret). Retrying will not help, and
    every later row would meet the same refusal: the run halts."""


#: What the last try of a request ran into: the service's failure, or no token to send it with.
Failure = RequestError | SignInFailed


def on(moment: datetime | None) -> str:
    return f" on {moment.date().isoformat()}" if moment is not None else ""


def may_exist_note(maybe_created: bool) -> str:
    """Said of a failed row whose earlier request may have created the user: it stays in doubt (the journal
    keeps "sent"), and the same journal settles it."""
    if not maybe_created:
        return ""
    return f"; it may exist: a request of this row may have created the user, so {SAME_JOURNAL}"


def asked(failure: Failure) -> str:
    """Says so when a wait is the service's own Retry-After rather than our backoff."""
    retry_after = getattr(failure, "retry_after", None)
    return f" (the service asked for {retry_after:.0f} s)" if retry_after else ""


def failure_code(failure: Failure) -> str:
    """`api.<status>` for an error status; `api.unreachable` for no answer, an unreadable 2xx/3xx one, or no
    token to send with."""
    if isinstance(failure, ApiError) and failure.status >= 400:
        return api_code(failure.status)
    return API_UNREACHABLE


def describe(failure: Failure) -> str:
    """The service's words for a problem cell: status, code and description; never a raw answer (the
    client keeps none) and never the URL (the requestId column finds the call in the service's logs)."""
    if isinstance(failure, SignInFailed):
        return failure.reason
    if isinstance(failure, TransportError):
        return failure.reason
    if isinstance(failure, ApiError):
        code = f" {failure.code}" if failure.code not in (None, "") else ""
        text = failure.description or "no description"
        return f"HTTP {failure.status}{code}: {text}"
    return failure.message


def fail(result: RowResult, code: str, what: str, failure: Failure | None) -> None:
    """The row failed: one problem, the service's words after ours."""
    message = what if failure is None else f"{what}: {describe(failure)}"
    result.status, result.userId, result.problems = Status.FAILED, None, (Problem(code, message),)


def stop_note(halt_text: str | None, denied: PermissionDenied | None = None) -> str:
    """Why a row was not sent after the run stopped taking rows."""
    if denied is not None:
        return (
            f"the run stopped taking rows when the service refused a write for lack of permission: "
            f"{denied.advice}; then run the same command again"
        )
    if halt_text is not None:
        return (
            f"the run stopped taking rows when {halt_text}; sign in again (or fix the credentials), "
            "then run the same command again"
        )
    return "the run was stopped before this row; run the same command again"


def not_finished_text(
    *,
    cut_short: bool,
    maybe_created: bool,
    sends: int,
    last: Failure | None,
    halt: str | None,
    denied: PermissionDenied | None = None,
    made: str = "created",
) -> str:
    """A row taken, then left unfinished by a stop: whether its user may exist, in the admin's words. `made`:
    what its request does to the user ("restored" for a `--restore-deleted` row, whose user exists anyway)."""
    maybe = "may exist" if made == "created" else f"may be {made}"
    if isinstance(last, PermissionDenied) and not maybe_created:
        return (
            f"not {made}: the service refused it for lack of permission ({describe(last)}), so nothing was "
            f"{made} for it and the run stopped taking rows: {last.advice}; then run the same command again"
        )
    if cut_short:
        return (
            f"{maybe}: the run was stopped at once while its request was in flight; run the same command "
            "again with the same journal, or check the tenant"
        )
    if maybe_created:
        said = describe(last) if last else "an earlier run got no answer"
        return (
            f"{maybe}: the run was stopped before this row was finished, after an answer that leaves its "
            f"outcome open ({said}); {SAME_JOURNAL}"
        )
    if sends == 0:
        return f"not sent: {stop_note(halt, denied)}"
    said = f" (last answer: {describe(last)})" if last else ""
    return f"not {made}: the run was stopped before it could be retried{said}; run the same command again"


def signed_out_text(maybe_created: bool) -> str:
    if maybe_created:
        return (
            "may exist: the sign-in failed mid-run after an earlier request of this row that may have created "
            "the user; the run stopped taking rows: sign in again (or fix the credentials), then run the same "
            "command again with the same journal"
        )
    return (
        "not sent: the sign-in failed mid-run, so the run stopped taking rows; sign in again (or fix the "
        "credentials), then run the same command again"
    )
