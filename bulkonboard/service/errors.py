"""The errors one request to Partner Center or Graph can run into, and what they mean to a command.

Why a tree of its own: the sending stage decides what to do about a failure (retry, look the user up, fail the
row) from the class alone, and each error carries the request it is about (method, url without query or
credentials, MS-RequestId), so that a person can find it in Microsoft's logs or the pipeline can replay it.
These are per-request errors, not the command-stopping errors of `bulkonboard.errors`; `command_error` turns one
into the other for the calls made before any row is sent.

    RequestError                 method, url (no query, no credentials), request_id
    ├── TransportError           no answer: timeout, refused/reset/dropped connection. The outcome is UNKNOWN
    │                            (a create may have happened) unless `maybe_processed` is False (never connected)
    └── ApiError                 the service answered: status, code, description, retry_after
        ├── Throttled            429; `retry_after` from Retry-After (or the 429 body's "Try again in N seconds")
        ├── ServerError          5xx
        ├── Refused              any other 4xx: the service said no (`is_duplicate_upn` tells one refusal apart)
        │   ├── Unauthorized     401: the token was refused; refresh it once and retry
        │   └── PermissionDenied 403 for lack of a GDAP role (900308, Graph's Authorization_RequestDenied) or of
        │                        any relationship with the customer (20002): no row of that customer can succeed
        ├── MalformedAnswer      a success (or a 3xx) whose body is not the JSON expected: a create may have
        │   │                    happened, so treat it like a TransportError and look the user up
        │   └── EndlessPaging    a list whose `links.next` repeats a continuation token or passes `MAX_PAGES` /
        │                        `MAX_LISTED_ITEMS`: not worth retrying (the same list would run away again)
        └── MismatchedAnswer     a create's 200 that names another UPN than the one sent (`api.mismatch`):
                                 neither its id nor its "created" can be taken; look the UPN up instead

`description` is always a short text taken from the service's error fields (or written here), never a raw
body; the service's `data` detail (Partner Center's `data`, Graph's `details`) is kept in `data` and shown in
`description` after the service's text, so a row's message keeps it: Partner Center echoes the password in its create answer. For the same reason a raw answer is never kept
in an exception, its arguments, its chain or a repr.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

from ..errors import AuthError, BulkOnboardError, CustomerNotFound, ServiceUnavailable

#: Graph's wording for a taken UPN; Partner Center documents no code for it, so the text is what we can match.
DUPLICATE_UPN_TEXT = "Another object with the same value for property userPrincipalName already exists"
#: Codes that mean "this UPN is taken", wherever the answer puts them (`code`, `data`, Graph's `details`): Graph's
#: detail code. The sandbox's invented 90001 is not one of them: it comes with the text and `ObjectConflict`, as
#: the documented answers do, and an undocumented code could mean anything on the real service.
DUPLICATE_UPN_CODES = frozenset({"objectconflict"})
#: A taken UPN is refused 400 (Graph's documented answer) or 409 (Partner Center's status for a conflict).
DUPLICATE_UPN_STATUSES = frozenset({400, 409})
_DUPLICATE_UPN_LOOSE = re.compile(
    r"userprincipalname.*already exists|already exists.*userprincipalname", re.I | re.S
)
#: Partner Center's documented codes that this module tells apart.
CODE_NO_RELATIONSHIP = 20002  # 403: the partner has no relationship with the customer
CODE_TENANT_NOT_FOUND = 60003  # 404: no such customer tenant (as opposed to 60002, no such user)
CODE_INSUFFICIENT_PRIVILEGES = 900308  # 403: the partner's GDAP roles do not allow the call
GRAPH_REQUEST_DENIED = "Authorization_RequestDenied"  # Graph's 403 "Insufficient privileges to complete..."
#: The GDAP roles that let a partner create users in a customer's tenant (shared/reference, Permissions).
ROLES_TO_CREATE = "User Administrator or Directory Writers"
#: Restoring a soft-deleted user is the deleting role's: Directory Writers has no users/restore permission.
ROLES_TO_RESTORE = "User Administrator"
#: At most this many `data` items are kept, and this many characters of them: detail, not a dump.
MAX_DATA_ITEMS = 10
MAX_DATA_CHARS = 300


class RequestError(Exception):
    """One call that did not succeed; carries what is needed to find it in the service's logs or to replay it."""

    def __init__(self, message: str, *, method: str, url: str, request_id: str | None) -> None:
        super().__init__(message)
        self.message = message
        self.method = method
        self.url = url
        self.request_id = request_id

    def __str__(self) -> str:
        return self.message


class TransportError(RequestError):
    """No answer came back. After a create, the user may exist: replay with the same MS-RequestId or look it up.

    `maybe_processed` is False only when the connection was never made (refused, DNS, connect timeout), which
    is the one case where the request certainly did not reach the service.
    """

    def __init__(
        self, reason: str, *, method: str, url: str, request_id: str | None, maybe_processed: bool = True
    ) -> None:
        message = f"{method} {url}: {reason}" + (f" (MS-RequestId {request_id})" if request_id else "")
        super().__init__(message, method=method, url=url, request_id=request_id)
        self.reason = reason
        self.maybe_processed = maybe_processed


class ApiError(RequestError):
    """The service answered with something other than the success this call needs."""

    def __init__(
        self,
        *,
        method: str,
        url: str,
        request_id: str | None,
        status: int,
        code: int | str | None = None,
        description: str = "",
        retry_after: float | None = None,
        data: tuple[str, ...] = (),
    ) -> None:
        shown_code = f" {code}" if code is not None and code != "" else ""
        text = description or f"HTTP {status}"
        message = f"{method} {url} -> {status}{shown_code}: {text}"
        if request_id:
            message += f" (MS-RequestId {request_id})"
        super().__init__(message, method=method, url=url, request_id=request_id)
        self.status = status
        self.code = code
        self.description = description
        self.retry_after = retry_after
        self.data = data  # the service's detail, already in `description`; cleaned and bounded like it


class Throttled(ApiError):
    """429: wait `retry_after` (when the service gave one), then back off if it repeats."""


class ServerError(ApiError):
    """5xx: nothing is known to have been created (a 503 from the sandbox creates nothing); worth a retry."""


class Refused(ApiError):
    """A 4xx other than 429: the service understood and said no; retrying the same request will not help."""

    @property
    def is_duplicate_upn(self) -> bool:
        """The UPN is taken: after a replayed create this may be our own earlier success, so look the user up.

        400 or 409, with `ObjectConflict` as the code or a `data` item, or the words in the description or the
        data. A false match costs only a lookup: the pipeline then finds the user by UPN, or not.
        """
        if self.status not in DUPLICATE_UPN_STATUSES:
            return False
        codes = (str(self.code) if self.code is not None else "", *self.data)
        if any(code.strip().casefold() in DUPLICATE_UPN_CODES for code in codes):
            return True
        for text in (self.description, *self.data):
            folded = text.casefold()
            if DUPLICATE_UPN_TEXT.casefold() in folded or _DUPLICATE_UPN_LOOSE.search(folded):
                return True
        return False


class Unauthorized(Refused):
    """401: the token was refused (expired, wrong audience). The pipeline may refresh it once and retry."""


class PermissionDenied(Refused):
    """403 for lack of permission: no GDAP role that allows the call (900308; Graph: Authorization_RequestDenied),
    or no relationship with the customer at all (20002).

    Its own class because every later call for that customer will be refused the same way: the sending stage
    can stop instead of failing row after row. `str()` is one line for a person: the request, the service's
    words, and `advice` (which GDAP roles are needed, or that there is no relationship). `customer_id` is read
    from the URL when it names one (Partner Center's do), else None.
    """

    def __init__(self, *, roles_needed: str = ROLES_TO_CREATE, **fields: Any) -> None:
        super().__init__(**fields)
        self.fields = fields
        self.roles_needed = roles_needed
        self.no_relationship = str(self.code) == str(CODE_NO_RELATIONSHIP)
        found = _CUSTOMER_IN_URL.search(self.url)
        self.customer_id: str | None = unquote(found.group(1)) if found else None
        whose = f"customer {self.customer_id}" if self.customer_id else "the customer"
        if self.no_relationship:
            self.advice = (
                f"the partner has no relationship with {whose}: check --customer or the customerTenantId "
                "column, or ask the customer to accept a GDAP relationship"
            )
        else:
            self.advice = f"the signed-in user needs the GDAP role {roles_needed} in {whose}'s tenant"
        said = f"403 {self.code}: {self.description}" if self.code not in (None, "") else self.description
        request = f"; MS-RequestId {self.request_id}" if self.request_id else ""
        self.message = f"permission denied: {self.method} {self.url} ({said}{request}); {self.advice}"

    def needing(self, roles: str) -> PermissionDenied:
        """The same refusal, for a call that needs other roles than creating does (restoring a user)."""
        return PermissionDenied(roles_needed=roles, **self.fields)

    @classmethod
    def applies(cls, status: int, code: int | str | None) -> bool:
        """Whether a refusal is one of these: a 403 with a documented code for a missing role or relationship."""
        return status == 403 and code is not None and str(code).casefold() in _PERMISSION_CODES


_PERMISSION_CODES = frozenset(
    {str(CODE_INSUFFICIENT_PRIVILEGES), str(CODE_NO_RELATIONSHIP), GRAPH_REQUEST_DENIED.casefold()}
)
_CUSTOMER_IN_URL = re.compile(r"/customers/([^/?#]+)")


class MalformedAnswer(ApiError):
    """The answer could not be read (not JSON, a field missing, an unexpected redirect).

    When this follows a create, the service may have created the user: treat it as an unknown outcome.
    """


class EndlessPaging(MalformedAnswer):
    """A paged list that does not end: a repeated continuation token, or past `MAX_PAGES` / `MAX_LISTED_ITEMS`.
    Asking again would run away again, so this is never retried; before any row is sent it stops the run (exit 3)."""


class MismatchedAnswer(ApiError):
    """A create answered 200 for another user (`named_upn`) than the one sent: a service that mixes answers up.

    Its id belongs to someone else and its "created" may not be about our user at all, so neither is taken: the
    pipeline looks the UPN up and settles the row by what the lookup shows (`api.mismatch` when it shows nothing).
    Not retried: a replay of the same MS-RequestId gets the same answer.
    """

    def __init__(
        self,
        *,
        method: str,
        url: str,
        request_id: str | None,
        sent_upn: str,
        named_upn: str,
        answer: str = "create answer",
    ) -> None:
        super().__init__(
            method=method,
            url=url,
            request_id=request_id,
            status=200,
            description=f"the {answer} names {named_upn}, not {sent_upn}",
        )
        self.sent_upn = sent_upn
        self.named_upn = named_upn


# ------------------------------------------------------------------- request errors -> command errors


def command_error(exc: RequestError, *, service: str, customer_id: str) -> BulkOnboardError:
    """The command-stopping error (exit 3) for a request that failed before any row was sent: one line, saying
    what was asked, what came back and what to check."""
    where = f"{exc.method} {exc.url}"
    graph = service == "Graph"
    if isinstance(exc, TransportError):
        check = "the network, proxy and firewall" + (", and --sandbox-url" if not graph else "")
        return ServiceUnavailable(f"cannot reach {service}: {where}: {exc.reason}; check {check}")
    assert isinstance(exc, ApiError)
    if isinstance(exc, EndlessPaging):
        return ServiceUnavailable(
            f"{service} is not answering normally for customer {customer_id}: {exc.description} (at {where}); "
            "stopped before any row was sent: try again later, or report it to the service"
        )
    said = f"{exc.status}{f' {exc.code}' if exc.code not in (None, '') else ''}: {exc.description}"
    if isinstance(exc, Unauthorized):
        if graph:
            return AuthError(
                f"Graph refused the token for tenant {customer_id} ({said}, at {where}); check the sign-in: a Graph "
                "token for the customer's tenant (BULKONBOARD_GRAPH_TOKEN), or give --domains FILE"
            )
        return AuthError(
            f"Partner Center token refused ({said}, at {where}); check the sign-in: --access-token / "
            "BULKONBOARD_ACCESS_TOKEN (it may have expired) or the MSAL app, its consent and refresh token"
        )
    if exc.status == 404 or (exc.status == 403 and str(exc.code) == str(CODE_NO_RELATIONSHIP)):
        return CustomerNotFound(
            f"customer {customer_id} is not one of the partner's customers ({said}, at {where}); "
            "check --customer or the customerTenantId column"
        )
    if exc.status == 403:
        if graph:
            return AuthError(
                f"Graph denied reading the domains of tenant {customer_id} ({said}, at {where}): the signed-in "
                f"user needs a GDAP role there such as {ROLES_TO_CREATE} (or give --domains FILE)"
            )
        return AuthError(
            f"Partner Center denied access to customer {customer_id} ({said}, at {where}): the signed-in user "
            f"needs the GDAP role {ROLES_TO_CREATE} in that customer's tenant"
        )
    if isinstance(exc, Throttled | ServerError):
        return ServiceUnavailable(
            f"{service} is not answering normally ({said}, at {where}); try again later"
        )
    return ServiceUnavailable(f"{service} refused the request ({said}, at {where})")
