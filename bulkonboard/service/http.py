"""How bulkonboard speaks HTTP to Partner Center and Graph: one request, its answer read and judged, pages followed.

Why one layer: this module sends, reads the whole answer and turns every answer that is not a success into the
error it means (errors.py). It never retries and never sleeps: the sending stage decides what to do about a
failure, using what the error carries (its class, the status, `retry_after`, and the `MS-RequestId` to replay
after a transport failure). Nothing secret outlives a call: bodies and headers hide from every repr, an error
answer is dropped before its error is raised, and an error's description never holds a raw body.
The bearer tokens come from a `TokenProvider`: `StaticTokens` here, MSAL behind a lock in auth/tokens.py.
"""

from __future__ import annotations

import email.utils
import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from ..errors import AuthError
from ..protocols import Audience, TokenProvider  # noqa: F401 (re-exported: the service named them first)
from .errors import (
    MAX_DATA_CHARS,
    MAX_DATA_ITEMS,
    ApiError,
    EndlessPaging,
    MalformedAnswer,
    PermissionDenied,
    Refused,
    ServerError,
    Throttled,
    TransportError,
    Unauthorized,
)

#: A Retry-After longer than this is taken as this: the pipeline should come back and try, not park for hours.
MAX_RETRY_AFTER = 300.0
#: Partner Center documents `description` as at most 1024 characters; anything longer is not its error text.
MAX_DESCRIPTION = 1024

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


class SecretBody:
    """A request body or text that must not show up in a repr (a debugger, a traceback printed with locals)."""

    __slots__ = ("value",)

    def __init__(self, value: bytes) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"<hidden, {len(self.value)} bytes>"


class HiddenHeaders(dict[str, str]):
    """Request headers whose repr hides them: they hold the bearer token."""

    def __repr__(self) -> str:
        return f"<{len(self)} headers hidden>"


@dataclass(slots=True)
class Answer:
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


def display_url(url: URL) -> str:
    """The URL as errors show it: no query (continuation tokens, filters), no fragment, no user info."""
    return str(url.with_query(None).with_fragment(None).with_user(None))


def path_part(value: str) -> str:
    """One path segment, quoted so that an id or a UPN (`#`, `/`, `?`) cannot change the URL's shape."""
    return quote(value, safe="@")


async def _exchange(
    session: aiohttp.ClientSession,
    method: str,
    url: URL,
    *,
    headers: dict[str, str],
    request_id: str | None,
    body: SecretBody | None = None,
) -> Answer:
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
            return Answer(
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
            method, display_url(url), request_id, "could not connect", exc, maybe_processed=False
        )
    except aiohttp.ServerDisconnectedError as exc:
        failure = _transport(
            method, display_url(url), request_id, "the server closed the connection without answering", exc
        )
    except TimeoutError as exc:  # asyncio.TimeoutError is TimeoutError since 3.11; aiohttp's timeouts too
        failure = _transport(method, display_url(url), request_id, "timed out waiting for the answer", exc)
    except aiohttp.ClientPayloadError as exc:
        failure = _transport(method, display_url(url), request_id, "the answer was cut short", exc)
    except aiohttp.ClientError as exc:  # ClientOSError (reset), protocol errors, invalid URLs...
        failure = _transport(method, display_url(url), request_id, "the connection failed", exc)
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


def _load_json(answer: Answer) -> Any:
    """The answer's JSON, or `_NOT_JSON`; whatever the Content-Type says, because gateways mislabel."""
    if not answer.body.strip():
        return _NOT_JSON
    try:
        return json.loads(answer.body)
    except ValueError:  # JSONDecodeError keeps the whole text in `.doc`: let it die here
        return _NOT_JSON


#: Tokens shorter than this are no credential Microsoft issues (its tokens are JWTs of hundreds of characters):
#: the sandbox's public `sandbox` is one, and blotting it out turned "does not exist in the sandbox" into
#: "does not exist in the ***".
MIN_SECRET_TOKEN = 16


def token_secrets(token: str) -> tuple[str, ...]:
    """The bearer token as a secret to blot out of messages, unless it is too short to be a real one."""
    return (token,) if len(token) >= MIN_SECRET_TOKEN else ()


def clean_text(text: str, secrets: Iterable[str]) -> str:
    """One line, at most `MAX_DESCRIPTION` characters, with any secret we sent blotted out."""
    for secret in secrets:
        if not secret:
            continue
        # Also as a service would quote it inside JSON: a password with `"` or `\\` or non-ASCII is escaped there.
        for form in {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}:
            text = text.replace(form, "***")
    text = " ".join(text.split())
    return text if len(text) <= MAX_DESCRIPTION else text[: MAX_DESCRIPTION - 1] + "…"


def _error_fields(payload: Any) -> tuple[int | str | None, str, list[str]]:
    """(code, description, detail) from the error shapes this client meets.

    Partner Center: {"code": 800002, "description": ..., "data": [...], "source": "PartnerFD"}; its 429:
    {"statusCode": 429, "message": ...}; Graph: {"error": {"code": "Request_BadRequest", "message": ...,
    "details": [{"code": "ObjectConflict", "target": ..., "message": ...}]}}. Only these named fields are read,
    so an echoed request can never become the description.
    """
    if not isinstance(payload, dict):
        return None, "", []
    inner = payload.get("error")
    if isinstance(inner, dict):
        payload = inner
    code = payload.get("code", payload.get("statusCode"))
    if isinstance(code, bool) or not isinstance(code, int | str):
        code = None
    detail = _detail_items(payload.get("data")) + _detail_items(payload.get("details"))
    for key in ("description", "message"):
        text = payload.get(key)
        if isinstance(text, str) and text.strip():
            return code, text, detail
    return code, "", detail


def _detail_items(value: Any) -> list[str]:
    """The texts of Partner Center's `data` (strings, numbers) or Graph's `details` (their code, target and
    message), in order: nothing else of a detail object is read."""
    if not isinstance(value, list):
        return []
    items: list[str] = []
    for item in value[: MAX_DATA_ITEMS * 3]:
        if isinstance(item, dict):
            items += [item[k] for k in ("code", "target", "message") if isinstance(item.get(k), str)]
        elif isinstance(item, str | int | float) and not isinstance(item, bool):
            items.append(str(item))
    return [text for text in items if text.strip()]


def _with_detail(description: str, detail: tuple[str, ...]) -> str:
    """The service's text followed by its detail, once: `data` often repeats what `description` says."""
    extra = [item for item in detail if item.casefold() not in description.casefold()]
    if not extra:
        return description
    shown = "; ".join(extra)
    if len(shown) > MAX_DATA_CHARS:
        shown = shown[: MAX_DATA_CHARS - 1] + "…"
    return f"{description} (data: {shown})"


def _error_for(
    answer: Answer,
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
    if (200 <= status < 300 and payload is not _NOT_JSON) or status == 204:  # 204: Graph's PATCH, PUT $ref
        return None
    shown = display_url(url)
    if 200 <= status < 300:
        kind = answer.content_type or "no content type"
        return MalformedAnswer(
            method=method,
            url=shown,
            request_id=request_id,
            status=status,
            description=f"the answer is not JSON ({kind}, {len(answer.body)} bytes)",
        )
    code, text, raw_detail = _error_fields(payload)
    description = clean_text(text, secrets)
    if not description:
        description = f"HTTP {status} {answer.reason}".strip()
        if payload is _NOT_JSON and answer.body.strip():
            description += f"; the answer is not JSON ({answer.content_type or 'no content type'})"
    detail = tuple(clean_text(item, secrets)[:MAX_DATA_CHARS] for item in raw_detail[:MAX_DATA_ITEMS])
    description = _with_detail(description, detail)
    now = _parse_http_date(answer.date) if answer.date else None
    retry_after = parse_retry_after(answer.retry_after, now or clock())
    common: dict[str, Any] = dict(
        method=method, url=shown, request_id=request_id, status=status, code=code, description=description,
        data=detail,
    )  # fmt: skip
    if status == 429:
        if retry_after is None:
            match = _TRY_AGAIN_IN.search(text)
            retry_after = min(MAX_RETRY_AFTER, float(match.group(1))) if match else None
        return Throttled(**common, retry_after=retry_after)
    if status >= 500:
        return ServerError(**common, retry_after=retry_after)
    if status == 401:
        return Unauthorized(**common, retry_after=retry_after)
    if PermissionDenied.applies(status, code):
        return PermissionDenied(**common, retry_after=retry_after)
    if status >= 400:
        return Refused(**common, retry_after=retry_after)
    common["description"] = f"unexpected HTTP {status} {answer.reason} (redirects are not followed)".strip()
    return MalformedAnswer(**common)


async def send_request(
    session: aiohttp.ClientSession,
    method: str,
    url: URL,
    *,
    headers: HiddenHeaders,
    request_id: str,
    secrets: tuple[str, ...],
    clock: Callable[[], datetime],
    body: SecretBody | None = None,
    on_answer: Callable[[Answer], None] | None = None,
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
    return None if payload is _NOT_JSON else payload  # 204 No Content


def same_origin(link: URL, base: URL) -> bool:
    return link.origin() == base.origin()


def malformed_answer(
    method: str, url: URL, request_id: str | None, status: int, what: str
) -> MalformedAnswer:
    return MalformedAnswer(
        method=method, url=display_url(url), request_id=request_id, status=status, description=what
    )


def continuation_token(headers: dict[str, str]) -> str | None:
    """The MS-ContinuationToken a next link carries (header names compare case-insensitively)."""
    for key, value in headers.items():
        if key.casefold() == "ms-continuationtoken" and value:
            return value
    return None


def endless_paging(url: URL, request_id: str | None, pages: int, items: int, why: str) -> EndlessPaging:
    return EndlessPaging(
        method="GET",
        url=display_url(url),
        request_id=request_id,
        status=200,
        description=(
            f"the list does not end: {why} after {pages:,} pages and {items:,} items (bounds: {MAX_PAGES:,} pages, "
            f"{MAX_LISTED_ITEMS:,} items)"
        ),
    )


def without_secrets(item: dict[str, Any]) -> dict[str, Any]:
    """A user as the list shows it, minus a password profile should a service ever echo one."""
    return {key: value for key, value in item.items() if key != "passwordProfile"}


def past_paging_bound(pages: int, items: int = 0) -> bool:
    """Whether a list has run past `MAX_PAGES` pages or `MAX_LISTED_ITEMS` items, and must stop as endless.

    Read at each call, so that a test can make the bound small.
    """
    return pages >= MAX_PAGES or items >= MAX_LISTED_ITEMS
