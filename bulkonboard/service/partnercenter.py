"""The HTTP client for Partner Center (create and list users) and Graph (a customer's domains).

One concern per layer: this module speaks HTTP, adds the headers Partner Center expects, follows pages and
turns every answer that is not a success into an exception that says what happened. It never retries and never
sleeps: the pipeline decides what to do about a failure, using what the exception carries (its class, the
status, `retry_after`, and the `MS-RequestId` to replay after a transport failure).

Per-request errors (what one call can run into; not the command-stopping errors of `errors.py`):

    RequestError                 method, url (no query, no credentials), request_id
    ├── TransportError           no answer: timeout, refused/reset/dropped connection. The outcome is UNKNOWN
    │                            (a create may have happened) unless `maybe_processed` is False (never connected)
    └── ApiError                 the service answered: status, code, description, retry_after
        ├── Throttled            429; `retry_after` from Retry-After (or the 429 body's "Try again in N seconds")
        ├── ServerError          5xx
        ├── Refused              any other 4xx: the service said no (`is_duplicate_upn` tells one refusal apart)
        │   └── Unauthorized     401: the token was refused; refresh it once and retry
        ├── MalformedAnswer      a success (or a 3xx) whose body is not the JSON expected: a create may have
        │   │                    happened, so treat it like a TransportError and look the user up
        │   └── EndlessPaging    a list whose `links.next` repeats a continuation token or passes `MAX_PAGES` /
        │                        `MAX_LISTED_ITEMS`: not worth retrying (the same list would run away again)
        └── MismatchedAnswer     a create's 200 that names another UPN than the one sent (`api.mismatch`):
                                 neither its id nor its "created" can be taken; look the UPN up instead

`description` is always a short text taken from the service's error fields (or written here), never a raw
body: Partner Center echoes the password in its create answer. For the same reason a raw answer is never kept
in an exception, its arguments, its chain or a repr.

`preflight` and `ServiceFacts` run before any row is sent, so they translate request errors into the
command-stopping errors of `errors.py` (exit 3) with one line that says what to check.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import json
import math
import re
import uuid
from collections.abc import AsyncGenerator, Callable, Iterable
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from .. import model
from ..errors import AuthError, BulkOnboardError, CustomerNotFound, ServiceUnavailable
from ..protocols import Audience, TokenProvider  # re-exported: their old home
from ..sheets import facts

PARTNER_CENTER_URL = "https://api.partnercenter.microsoft.com"
GRAPH_URL = "https://graph.microsoft.com"

#: A Retry-After longer than this is taken as this: the pipeline should come back and try, not park for hours.
MAX_RETRY_AFTER = 300.0
#: Partner Center documents `description` as at most 1024 characters; anything longer is not its error text.
MAX_DESCRIPTION = 1024

#: Graph's wording for a taken UPN; Partner Center documents no code for it, so the text is what we can match.
DUPLICATE_UPN_TEXT = "Another object with the same value for property userPrincipalName already exists"
#: Codes that mean "this UPN is taken": Graph's detail code, and the sandbox's invented 90001 (Partner Center
#: publishes none). A false match costs only a lookup: the pipeline then finds the user by UPN, or not.
DUPLICATE_UPN_CODES = frozenset({"objectconflict", "90001"})
_DUPLICATE_UPN_LOOSE = re.compile(
    r"userprincipalname.*already exists|already exists.*userprincipalname", re.I | re.S
)
#: Partner Center's documented codes that this module tells apart.
CODE_NO_RELATIONSHIP = 20002  # 403: the partner has no relationship with the customer
CODE_TENANT_NOT_FOUND = 60003  # 404: no such customer tenant (as opposed to 60002, no such user)

#: Bounds on following `links.next` (Partner Center's user list, Graph's domain list), documented in
#: docs/CONTRACT-ADDITIONS.md. A tenant holds at most 300,000 directory objects unless Microsoft raises its quota,
#: and a page holds at least one item unless the service misbehaves, so a list past either bound is not ending:
#: the run stops with one line instead of paging (and growing) for ever.
MAX_PAGES = 10_000
MAX_LISTED_ITEMS = 1_000_000

_TRY_AGAIN_IN = re.compile(r"try again in (\d+) seconds?", re.I)


class StaticTokens:
    """Tokens acquired elsewhere (`--access-token`, `BULKONBOARD_ACCESS_TOKEN`, the sandbox's static token).

    A static token cannot be refreshed: `force_refresh` returns the same token, so a pipeline that retries a 401
    once gets a second 401 and fails the row instead of looping. Graph falls back to the Partner Center token,
    which is what the sandbox accepts for both.
    """

    def __init__(self, partner_center: str, graph: str | None = None) -> None:
        if not partner_center:
            raise AuthError("the access token is empty: set BULKONBOARD_ACCESS_TOKEN or give --access-token")
        self._tokens = {Audience.PARTNER_CENTER: partner_center, Audience.GRAPH: graph or partner_center}

    async def token(
        self, audience: Audience, tenant: str | None = None, *, force_refresh: bool = False
    ) -> str:
        return self._tokens[Audience(audience)]

    def __repr__(self) -> str:  # the tokens themselves never reach a repr, a log or a traceback
        return "StaticTokens(<hidden>)"


# ---------------------------------------------------------------------------------------------------------------
# per-request errors


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


class Throttled(ApiError):
    """429: wait `retry_after` (when the service gave one), then back off if it repeats."""


class ServerError(ApiError):
    """5xx: nothing is known to have been created (a 503 from the sandbox creates nothing); worth a retry."""


class Refused(ApiError):
    """A 4xx other than 429: the service understood and said no; retrying the same request will not help."""

    @property
    def is_duplicate_upn(self) -> bool:
        """The UPN is taken: after a replayed create this may be our own earlier success, so look the user up."""
        if self.code is not None and str(self.code).casefold() in DUPLICATE_UPN_CODES:
            return True
        text = self.description.casefold()
        return DUPLICATE_UPN_TEXT.casefold() in text or bool(_DUPLICATE_UPN_LOOSE.search(text))


class Unauthorized(Refused):
    """401: the token was refused (expired, wrong audience). The pipeline may refresh it once and retry."""


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


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP-date), or None when absent/unreadable.

    Floored to whole seconds (the service counts in seconds), never negative, capped at `MAX_RETRY_AFTER`: a
    wrong clock or a silly header must not park the run for a day. `now` should be the answer's own Date when
    there is one, so that a skewed local clock does not matter.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if re.fullmatch(r"\d+(\.\d+)?", text):
        seconds = float(text)
    else:
        when = _parse_http_date(text)
        if when is None:
            return None
        seconds = (when - _aware(now)).total_seconds()
    return float(min(MAX_RETRY_AFTER, max(0, math.floor(seconds))))


def _parse_http_date(text: str) -> datetime | None:
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    return _aware(when) if when is not None else None


def _aware(moment: datetime) -> datetime:
    """HTTP dates are GMT; a naive datetime here means UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# ---------------------------------------------------------------------------------------------------------------
# the shared request machinery


@dataclass(frozen=True, slots=True)
class CreatedUser:
    """What is kept of a create answer: the rest (including the echoed password) is dropped at once."""

    id: str
    userPrincipalName: str
    state: str
    userDomainType: str | None
    throttle_usage: float | None = None  # how close the service says we are to its limit, when it says so


class _Secret:
    """A request body or text that must not show up in a repr (a debugger, a traceback printed with locals)."""

    __slots__ = ("value",)

    def __init__(self, value: bytes) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"<hidden, {len(self.value)} bytes>"


class _Headers(dict[str, str]):
    """Request headers whose repr hides them: they hold the bearer token."""

    def __repr__(self) -> str:
        return f"<{len(self)} headers hidden>"


@dataclass(slots=True)
class _Answer:
    """An HTTP answer, read in full; its body never reaches a repr."""

    status: int
    reason: str
    content_type: str
    retry_after: str | None
    date: str | None
    body: bytes = field(repr=False)
    throttle_usage: float | None = None  # Graph-style early warning, see `_throttle_usage`


_NOT_JSON: Any = object()


def _throttle_usage(value: str | None) -> float | None:
    """Graph's early warning, sent once usage passes 80 % of the limit: a fraction of the limit (0.8 to 1.8).
    A value written as a percentage (`90`) is read as one; anything unreadable is no warning at all."""
    if not value:
        return None
    try:
        usage = float(value.strip().rstrip("%"))
    except ValueError:
        return None
    if not math.isfinite(usage) or usage < 0:
        return None
    return usage / 100 if usage > 5 else usage


def _display_url(url: URL) -> str:
    """The URL as errors show it: no query (continuation tokens, filters), no fragment, no user info."""
    return str(url.with_query(None).with_fragment(None).with_user(None))


def _path_part(value: str) -> str:
    """One path segment, quoted so that an id or a UPN (`#`, `/`, `?`) cannot change the URL's shape."""
    return quote(value, safe="@")


async def _exchange(
    session: aiohttp.ClientSession,
    method: str,
    url: URL,
    *,
    headers: dict[str, str],
    request_id: str | None,
    body: _Secret | None = None,
) -> _Answer:
    """Send one request and read the whole answer; every way of getting no answer becomes a TransportError."""
    failure: TransportError | None = None
    try:
        async with session.request(
            method,
            url,
            headers=headers,
            data=body.value if body is not None else None,
            allow_redirects=False,  # a redirect must not carry the bearer token to another host
        ) as response:
            return _Answer(
                status=response.status,
                reason=response.reason or "",
                content_type=response.content_type,
                retry_after=response.headers.get("Retry-After"),
                date=response.headers.get("Date"),
                body=await response.read(),
                throttle_usage=_throttle_usage(response.headers.get("x-ms-throttle-limit-percentage")),
            )
    # The failure is built here and raised below, outside the except block, so that the aiohttp exception
    # (whose frames hold the request body) is neither the cause nor the context of what callers see.
    except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
        failure = _transport(
            method, _display_url(url), request_id, "could not connect", exc, maybe_processed=False
        )
    except aiohttp.ServerDisconnectedError as exc:
        failure = _transport(
            method, _display_url(url), request_id, "the server closed the connection without answering", exc
        )
    except TimeoutError as exc:  # asyncio.TimeoutError is TimeoutError since 3.11; aiohttp's timeouts too
        failure = _transport(method, _display_url(url), request_id, "timed out waiting for the answer", exc)
    except aiohttp.ClientPayloadError as exc:
        failure = _transport(method, _display_url(url), request_id, "the answer was cut short", exc)
    except aiohttp.ClientError as exc:  # ClientOSError (reset), protocol errors, invalid URLs...
        failure = _transport(method, _display_url(url), request_id, "the connection failed", exc)
    assert failure is not None
    raise failure


def _transport(
    method: str,
    url: str,
    request_id: str | None,
    what: str,
    exc: BaseException,
    *,
    maybe_processed: bool = True,
) -> TransportError:
    detail = " ".join(str(exc).split())
    reason = f"{what} ({type(exc).__name__}{': ' + detail if detail else ''})"
    return TransportError(
        reason, method=method, url=url, request_id=request_id, maybe_processed=maybe_processed
    )


def _load_json(answer: _Answer) -> Any:
    """The answer's JSON, or `_NOT_JSON`; whatever the Content-Type says, because gateways mislabel."""
    if not answer.body.strip():
        return _NOT_JSON
    try:
        return json.loads(answer.body)
    except ValueError:  # JSONDecodeError keeps the whole text in `.doc`: let it die here
        return _NOT_JSON


def _clean(text: str, secrets: Iterable[str]) -> str:
    """One line, at most `MAX_DESCRIPTION` characters, with any secret we sent blotted out."""
    for secret in secrets:
        if not secret:
            continue
        # Also as a service would quote it inside JSON: a password with `"` or `\\` or non-ASCII is escaped there.
        for form in {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}:
            text = text.replace(form, "***")
    text = " ".join(text.split())
    return text if len(text) <= MAX_DESCRIPTION else text[: MAX_DESCRIPTION - 1] + "…"


def _error_fields(payload: Any) -> tuple[int | str | None, str]:
    """(code, description) from the error shapes this client meets.

    Partner Center: {"code": 800002, "description": ..., "source": "PartnerFD"}; its 429:
    {"statusCode": 429, "message": ...}; Graph: {"error": {"code": "Request_BadRequest", "message": ...}}.
    Only these named text fields are read, so an echoed request can never become the description.
    """
    if not isinstance(payload, dict):
        return None, ""
    inner = payload.get("error")
    if isinstance(inner, dict):
        payload = inner
    code = payload.get("code", payload.get("statusCode"))
    if isinstance(code, bool) or not isinstance(code, int | str):
        code = None
    for key in ("description", "message"):
        text = payload.get(key)
        if isinstance(text, str) and text.strip():
            return code, text
    return code, ""


def _error_for(
    answer: _Answer,
    payload: Any,
    *,
    method: str,
    url: URL,
    request_id: str | None,
    secrets: Iterable[str],
    clock: Callable[[], datetime],
) -> ApiError | None:
    """The ApiError that a non-2xx answer (or a 2xx that is not JSON) means; None for a usable success.

    Returned, not raised, so that the caller can drop the answer before raising: an error answer may echo
    the request, and a traceback keeps its frames' locals alive.
    """
    status = answer.status
    if 200 <= status < 300 and payload is not _NOT_JSON:
        return None
    shown = _display_url(url)
    if 200 <= status < 300:
        kind = answer.content_type or "no content type"
        return MalformedAnswer(
            method=method,
            url=shown,
            request_id=request_id,
            status=status,
            description=f"the answer is not JSON ({kind}, {len(answer.body)} bytes)",
        )
    code, text = _error_fields(payload)
    description = _clean(text, secrets)
    if not description:
        description = f"HTTP {status} {answer.reason}".strip()
        if payload is _NOT_JSON and answer.body.strip():
            description += f"; the answer is not JSON ({answer.content_type or 'no content type'})"
    now = _parse_http_date(answer.date) if answer.date else None
    retry_after = parse_retry_after(answer.retry_after, now or clock())
    common: dict[str, Any] = dict(
        method=method, url=shown, request_id=request_id, status=status, code=code, description=description
    )
    if status == 429:
        if retry_after is None:
            match = _TRY_AGAIN_IN.search(text)
            retry_after = min(MAX_RETRY_AFTER, float(match.group(1))) if match else None
        return Throttled(**common, retry_after=retry_after)
    if status >= 500:
        return ServerError(**common, retry_after=retry_after)
    if status == 401:
        return Unauthorized(**common, retry_after=retry_after)
    if status >= 400:
        return Refused(**common, retry_after=retry_after)
    common["description"] = f"unexpected HTTP {status} {answer.reason} (redirects are not followed)".strip()
    return MalformedAnswer(**common)


async def _request(
    session: aiohttp.ClientSession,
    method: str,
    url: URL,
    *,
    headers: _Headers,
    request_id: str,
    secrets: tuple[str, ...],
    clock: Callable[[], datetime],
    body: _Secret | None = None,
    on_answer: Callable[[_Answer], None] | None = None,
) -> Any:
    """One call, answer read and judged: the answer's JSON, or the RequestError it means."""
    answer = await _exchange(session, method, url, headers=headers, request_id=request_id, body=body)
    if on_answer is not None:
        on_answer(answer)
    payload = _load_json(answer)
    error = _error_for(
        answer, payload, method=method, url=url, request_id=request_id, secrets=secrets, clock=clock
    )
    if error is not None:
        del answer, payload  # an error answer may echo the request, password included: keep none of it
        raise error
    return payload


def _same_origin(link: URL, base: URL) -> bool:
    return link.origin() == base.origin()


def _malformed(method: str, url: URL, request_id: str | None, status: int, what: str) -> MalformedAnswer:
    return MalformedAnswer(
        method=method, url=_display_url(url), request_id=request_id, status=status, description=what
    )


def _continuation(headers: dict[str, str]) -> str | None:
    """The MS-ContinuationToken a next link carries (header names compare case-insensitively)."""
    for key, value in headers.items():
        if key.casefold() == "ms-continuationtoken" and value:
            return value
    return None


def _endless(url: URL, request_id: str | None, pages: int, items: int, why: str) -> EndlessPaging:
    return EndlessPaging(
        method="GET",
        url=_display_url(url),
        request_id=request_id,
        status=200,
        description=(
            f"the list does not end: {why} after {pages:,} pages and {items:,} items (bounds: {MAX_PAGES:,} pages, "
            f"{MAX_LISTED_ITEMS:,} items)"
        ),
    )


def _without_secrets(item: dict[str, Any]) -> dict[str, Any]:
    """A user as the list shows it, minus a password profile should a service ever echo one."""
    return {key: value for key, value in item.items() if key != "passwordProfile"}


# ---------------------------------------------------------------------------------------------------------------
# Partner Center


#: How many distinct customer URLs `PartnerCenterClient` remembers (a run uses a handful; lookups add one per user).
_URL_CACHE_SIZE = 256


class PartnerCenterClient:
    """Partner Center's customer-user endpoints, with the headers its docs ask for.

    The session belongs to the caller (created inside the running loop, closed by the caller); one client
    serves one run, so the correlation id ties all of the run's calls together in Microsoft's logs.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        tokens: TokenProvider,
        *,
        base_url: str = PARTNER_CENTER_URL,
        correlation_id: str,
        application: str = "bulkonboard",
        locale: str = "en-US",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._session = session
        self._tokens = tokens
        self.base_url = base_url.rstrip("/")
        self._v1 = self.base_url + "/v1"
        self.correlation_id = correlation_id
        self.application = application
        self.locale = locale
        self._clock = clock
        # `_customer_url`'s answers: quoting and parsing a URL for every create cost more than the rest of a call
        self._urls: dict[tuple[str, ...], URL] = {}

    def __repr__(self) -> str:
        return f"PartnerCenterClient({self.base_url!r}, correlation_id={self.correlation_id!r})"

    # -- requests

    async def _call(
        self,
        method: str,
        url: URL,
        *,
        request_id: str | None = None,
        extra_headers: dict[str, str] | None = None,
        body: _Secret | None = None,
        secrets: tuple[str, ...] = (),
        on_answer: Callable[[_Answer], None] | None = None,
    ) -> Any:
        """One request; returns the answer's JSON or raises a RequestError. A fresh MS-RequestId unless given."""
        request_id = request_id or str(uuid.uuid4())
        token = await self._tokens.token(Audience.PARTNER_CENTER)
        headers = _Headers(
            {
                "Authorization": f"Bearer {token}",
                "Accept": "application/json",
                "MS-RequestId": request_id,
                "MS-CorrelationId": self.correlation_id,
                "MS-Contract-Version": "v1",
                "MS-PartnerCenter-Application": self.application,
                "X-Locale": self.locale,
            }
        )
        if body is not None:
            headers["Content-Type"] = "application/json"
        headers.update(extra_headers or {})
        return await _request(
            self._session,
            method,
            url,
            headers=headers,
            request_id=request_id,
            body=body,
            secrets=(*secrets, token),
            clock=self._clock,
            on_answer=on_answer,
        )

    def _customer_url(self, customer_id: str, *rest: str) -> URL:
        key = (customer_id, *rest)
        url = self._urls.get(key)
        if url is None:
            path = "/".join(_path_part(part) for part in ("customers", *key))
            url = URL(f"{self._v1}/{path}")
            if len(self._urls) >= _URL_CACHE_SIZE:  # per-user URLs (lookups) must not pile up over a long run
                self._urls.clear()
            self._urls[key] = url
        return url

    # -- the endpoints

    async def get_customer(self, customer_id: str) -> dict[str, Any]:
        url, request_id = self._customer_url(customer_id), str(uuid.uuid4())
        payload = await self._call("GET", url, request_id=request_id)
        if not isinstance(payload, dict):
            raise _malformed("GET", url, request_id, 200, "the customer answer is not a JSON object")
        return payload

    async def iter_users(self, customer_id: str) -> AsyncGenerator[dict[str, Any], None]:
        """Every user of the customer, page after page (`links.next` + its MS-ContinuationToken header).

        Stops with `EndlessPaging` at a continuation token (or, without one, a next link) seen before, and past
        `MAX_PAGES` pages or `MAX_LISTED_ITEMS` users: a service that never ends its list must not keep a run
        paging, and growing, for ever. Only the tokens are remembered, so memory stays within the bound too.
        """
        url = self._customer_url(customer_id, "users")
        extra: dict[str, str] = {}
        seen: set[str] = set()
        pages = items_listed = 0
        while True:
            request_id = str(uuid.uuid4())
            page = await self._call("GET", url, request_id=request_id, extra_headers=extra)
            pages += 1
            items = page.get("items") if isinstance(page, dict) else None
            if not isinstance(items, list):
                raise _malformed("GET", url, request_id, 200, "the user list has no `items` array")
            items_listed += len(items)
            for item in items:
                if isinstance(item, dict):
                    yield _without_secrets(item)
            following = self._next_page(page, url, request_id)
            if following is None:
                return
            url, extra = following
            token = _continuation(extra) or f"{url} {json.dumps(extra, sort_keys=True)}"
            if token in seen:  # a service that hands out the same page again would loop forever
                raise _endless(url, request_id, pages, items_listed, "its next link repeats an earlier page")
            if pages >= MAX_PAGES or items_listed >= MAX_LISTED_ITEMS:
                raise _endless(url, request_id, pages, items_listed, "it passed the bound on paging")
            seen.add(token)

    def _next_page(
        self, page: dict[str, Any], url: URL, request_id: str
    ) -> tuple[URL, dict[str, str]] | None:
        links = page.get("links")
        following = links.get("next") if isinstance(links, dict) else None
        if not following:
            return None
        uri = following.get("uri") if isinstance(following, dict) else None
        if not isinstance(uri, str) or not uri:
            raise _malformed("GET", url, request_id, 200, "the user list's `links.next` has no uri")
        if uri.startswith(("http://", "https://")):
            target = URL(uri)
        else:  # Partner Center's next links are relative to {base}/v1
            relative = uri if uri.startswith("/") else "/" + uri
            target = URL(self.base_url + relative if relative.startswith("/v1/") else self._v1 + relative)
        if not _same_origin(target, URL(self.base_url)):
            raise _malformed("GET", url, request_id, 200, "the user list's next link leaves the service")
        headers: dict[str, str] = {}
        raw_headers = following.get("headers")
        if isinstance(raw_headers, dict):
            raw_headers = [{"key": k, "value": v} for k, v in raw_headers.items()]
        for header in raw_headers if isinstance(raw_headers, list) else []:
            if (
                isinstance(header, dict)
                and isinstance(header.get("key"), str)
                and header.get("value") is not None
            ):
                key, value = header["key"], str(header["value"])
                if any(ord(c) < 32 or ord(c) == 127 for c in key + value):
                    # aiohttp would refuse to send it (ValueError): a malformed answer, said as one line.
                    raise _malformed("GET", url, request_id, 200, "the user list's next link has a malformed header")
                headers[key] = value
        return target, headers

    async def get_user(self, customer_id: str, user_id: str) -> dict[str, Any] | None:
        """The user, or None when there is no such user (a 404 other than "no such customer")."""
        url, request_id = self._customer_url(customer_id, "users", user_id), str(uuid.uuid4())
        try:
            payload = await self._call("GET", url, request_id=request_id)
        except Refused as exc:
            if exc.status == 404 and str(exc.code) != str(CODE_TENANT_NOT_FOUND):
                return None
            raise
        if not isinstance(payload, dict):
            raise _malformed("GET", url, request_id, 200, "the user answer is not a JSON object")
        return _without_secrets(payload)

    async def find_user_by_upn(self, customer_id: str, upn: str) -> dict[str, Any] | None:
        """Partner Center documents no filter by UPN, so this reads the list until it finds it (case-insensitive)."""
        wanted = upn.casefold()
        async with aclosing(self.iter_users(customer_id)) as users:
            async for user in users:
                found = user.get("userPrincipalName")
                if isinstance(found, str) and found.casefold() == wanted:
                    return user
        return None

    async def create_user(self, customer_id: str, user: model.UserRow, *, request_id: str) -> CreatedUser:
        """POST the row exactly as typed; `request_id` is the caller's, so a replay after a timeout reuses it.

        Empty optional fields are left out rather than sent as "" (the service would store or refuse "").
        """
        if not user.password:
            raise ValueError(f"row {user.row}: create_user needs a password (generate one before sending)")
        url = self._customer_url(customer_id, "users")
        body = _Secret(_BODY_ENCODER.encode(_create_body(user)).encode("utf-8"))
        usage: list[float | None] = [None]

        def note_usage(answer: _Answer) -> None:
            usage[0] = answer.throttle_usage

        payload = await self._call(
            "POST", url, request_id=request_id, body=body, secrets=(user.password,), on_answer=note_usage
        )
        created = _created_user(payload, sent_upn=user.userPrincipalName)
        del payload, body  # the answer echoes the password: keep nothing of it
        if created is None:
            raise _malformed("POST", url, request_id, 200, "the create answer has no user id")
        if created.userPrincipalName.casefold() != user.userPrincipalName.casefold():
            raise MismatchedAnswer(
                method="POST",
                url=_display_url(url),
                request_id=request_id,
                sent_upn=user.userPrincipalName,
                named_upn=_clean(created.userPrincipalName, (user.password,))[:200],
            )
        return dataclasses.replace(created, throttle_usage=usage[0]) if usage[0] is not None else created

    async def preflight(self, customer_id: str) -> dict[str, Any]:
        """Prove the token, the customer and a directory role before any row is sent; returns the customer.

        Reading the customer proves the token and the relationship; reading the first page of its users proves
        a GDAP role in the customer's tenant (creating users needs User Administrator or Directory Writers).
        """
        try:
            customer = await self.get_customer(customer_id)
            await self._call("GET", self._customer_url(customer_id, "users"))
        except RequestError as exc:
            raise command_error(exc, service="Partner Center", customer_id=customer_id) from None
        return customer


#: `json.dumps(..., ensure_ascii=False)` builds a new encoder on every call (only the default one is shared):
#: about a fifth of the cost of a create's body (measured: 3.0 -> 2.3 us).
_BODY_ENCODER = json.JSONEncoder(ensure_ascii=False)


def _create_body(user: model.UserRow) -> dict[str, Any]:
    body: dict[str, Any] = {"userPrincipalName": user.userPrincipalName}
    for name in ("firstName", "lastName"):
        if getattr(user, name):
            body[name] = getattr(user, name)
    body["displayName"] = user.displayName
    body["usageLocation"] = user.usageLocation
    if user.immutableId:
        body["immutableId"] = user.immutableId
    body["passwordProfile"] = {"password": user.password, "forceChangePassword": user.forceChangePassword}
    body["attributes"] = {"objectType": "CustomerUser"}
    return body


def _created_user(payload: Any, *, sent_upn: str) -> CreatedUser | None:
    if not isinstance(payload, dict):
        return None
    user_id = payload.get("id")
    if not isinstance(user_id, str) or not user_id:
        return None
    upn = payload.get("userPrincipalName")
    state = payload.get("state")
    domain_type = payload.get("userDomainType")
    return CreatedUser(
        id=user_id,
        userPrincipalName=upn if isinstance(upn, str) and upn else sent_upn,
        state=state if isinstance(state, str) and state else "unknown",
        userDomainType=domain_type if isinstance(domain_type, str) else None,
    )


# ---------------------------------------------------------------------------------------------------------------
# Graph


class GraphClient:
    """The two Graph reads this tool needs, in the customer's tenant: its domains, and a user by UPN.

    `graph_url` may hold `{tenant}`: the sandbox serves tenant T's Graph under URL/graph/T, while the real
    Graph tells tenants apart by the token (audience GRAPH, for tenant T).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        tokens: TokenProvider,
        *,
        graph_url: str = GRAPH_URL,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._session = session
        self._tokens = tokens
        self.graph_url = graph_url.rstrip("/")
        self._clock = clock

    def __repr__(self) -> str:
        return f"GraphClient({self.graph_url!r})"

    def _root(self, tenant: str) -> URL:
        return URL(self.graph_url.replace("{tenant}", quote(tenant, safe="")) + "/v1.0")

    async def _call(self, method: str, url: URL, tenant: str) -> Any:
        request_id = str(uuid.uuid4())
        token = await self._tokens.token(Audience.GRAPH, tenant)
        headers = _Headers(
            {
                "Authorization": f"Bearer {token}",
                "Accept": "application/json",
                "client-request-id": request_id,  # Graph's name for the caller's request id
            }
        )
        return await _request(
            self._session,
            method,
            url,
            headers=headers,
            request_id=request_id,
            secrets=(token,),
            clock=self._clock,
        )

    async def list_domains(self, tenant: str) -> list[facts.Domain]:
        """The tenant's domains; a domain Graph marks unverified is left out, since no user can be created in it."""
        root = self._root(tenant)
        url = root / "domains"
        domains: list[facts.Domain] = []
        seen: set[str] = set()
        while True:
            page = await self._call("GET", url, tenant)
            values = page.get("value") if isinstance(page, dict) else None
            if not isinstance(values, list):
                raise _malformed("GET", url, None, 200, "the domain list has no `value` array")
            for entry in values:
                if not isinstance(entry, dict) or entry.get("isVerified") is False:
                    continue
                name, kind = entry.get("id"), entry.get("authenticationType")
                if isinstance(name, str) and name and isinstance(kind, str):
                    domains.append(facts.Domain(name=name, authentication_type=_domain_kind(kind)))
            following = page.get("@odata.nextLink")
            if not isinstance(following, str) or not following:
                return domains
            next_url = URL(following)
            if not _same_origin(next_url, root):
                raise _malformed("GET", url, None, 200, "the domain list's next link is not usable")
            if following in seen:
                raise _endless(url, None, len(seen) + 1, len(domains), "its next link repeats an earlier page")
            if len(seen) + 1 >= MAX_PAGES:
                raise _endless(url, None, len(seen) + 1, len(domains), "it passed the bound on paging")
            seen.add(following)
            url = next_url

    async def get_user(self, tenant: str, upn: str) -> dict[str, Any] | None:
        url = URL(f"{self._root(tenant)}/users/{_path_part(upn)}")
        try:
            payload = await self._call("GET", url, tenant)
        except Refused as exc:
            if exc.status == 404:
                return None
            raise
        if not isinstance(payload, dict):
            raise _malformed("GET", url, None, 200, "the user answer is not a JSON object")
        named = payload.get("userPrincipalName")
        if isinstance(named, str) and named and named.casefold() != upn.casefold():
            # Someone else's id must never settle a row: a lookup that answers for another user is no answer.
            raise MismatchedAnswer(
                method="GET",
                url=_display_url(url),
                request_id=None,
                sent_upn=upn,
                named_upn=_clean(named, ())[:200],
                answer="user lookup",
            )
        return payload


def _domain_kind(kind: str) -> str:
    """Graph spells them Managed/Federated; the facts compare case-insensitively, but show Graph's spelling."""
    for known in (facts.MANAGED, facts.FEDERATED):
        if kind.casefold() == known.casefold():
            return known
    return kind


# ---------------------------------------------------------------------------------------------------------------
# facts for validation, from the service


class ServiceFacts:
    """`facts.FactsSource` backed by the service: domains from Graph (or a `--domains` file), users from Partner Center.

    Each customer is asked once per run (the list of users is paged and may be long); concurrent askers for the
    same customer wait for the first. A failure is not remembered, so a later call asks again.

    Only active users count as existing: Partner Center's list shows soft-deleted users (state `inactive`,
    kept 30 days) only when filtered for them, and Entra lets a new user take a deleted user's UPN, so a
    deleted namesake must not turn a row into `user.exists`. A user without a `state` is taken as active.
    """

    def __init__(
        self,
        partner_center: PartnerCenterClient,
        graph: GraphClient | None,
        *,
        domains_file: facts.DomainsFile | None = None,
    ) -> None:
        if graph is None and domains_file is None:
            raise ValueError(
                "ServiceFacts needs a GraphClient or a domains file to know the customer's domains"
            )
        self._partner_center = partner_center
        self._graph = graph
        self._domains_file = domains_file
        self._known: dict[str, facts.CustomerFacts] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def customer_facts(self, customer_id: str) -> facts.CustomerFacts:
        key = customer_id.casefold()
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if key not in self._known:
                self._known[key] = await self._ask(customer_id)
            return self._known[key]

    async def _ask(self, customer_id: str) -> facts.CustomerFacts:
        if self._domains_file is not None:
            domains = (await self._domains_file.customer_facts(customer_id)).domains
        else:
            assert self._graph is not None
            try:
                listed = await self._graph.list_domains(customer_id)
            except RequestError as exc:
                raise command_error(exc, service="Graph", customer_id=customer_id) from None
            domains = {domain.name.casefold(): domain for domain in listed}
        existing: dict[str, str] = {}
        try:
            async with aclosing(self._partner_center.iter_users(customer_id)) as users:
                async for user in users:
                    upn, user_id, state = user.get("userPrincipalName"), user.get("id"), user.get("state")
                    if not isinstance(upn, str) or not upn or not isinstance(user_id, str):
                        continue
                    if isinstance(state, str) and state and state.casefold() != "active":
                        continue
                    existing.setdefault(upn.casefold(), user_id)
        except RequestError as exc:
            raise command_error(exc, service="Partner Center", customer_id=customer_id) from None
        return facts.CustomerFacts(customer_id=customer_id, domains=domains, existing_users=existing)


# ---------------------------------------------------------------------------------------------------------------
# request errors -> command errors (before any row is sent)

_ROLES_TO_CREATE = "User Administrator or Directory Writers"


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
                f"user needs a GDAP role there such as {_ROLES_TO_CREATE} (or give --domains FILE)"
            )
        return AuthError(
            f"Partner Center denied access to customer {customer_id} ({said}, at {where}): the signed-in user "
            f"needs the GDAP role {_ROLES_TO_CREATE} in that customer's tenant"
        )
    if isinstance(exc, Throttled | ServerError):
        return ServiceUnavailable(
            f"{service} is not answering normally ({said}, at {where}); try again later"
        )
    return ServiceUnavailable(f"{service} refused the request ({said}, at {where})")
