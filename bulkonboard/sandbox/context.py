"""What every route shares: the store, the options, the faults, the counters, and the token check.

It lives apart from `app` so the route modules (`partner_center`, `graph`) and the app that mounts them can all
import it without importing each other.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from .auth import TokenVerifier, bearer_token
from .faults import Faults
from .options import SandboxOptions
from .store import Store

REQUEST_ID = "MS-RequestId"
CORRELATION_ID = "MS-CorrelationId"
CONTINUATION_TOKEN = "MS-ContinuationToken"
THROTTLE_HEADER = "x-ms-throttle-limit-percentage"
PC_PREFIX = "/v1"
GRAPH_PREFIX = "/graph"


@dataclass(slots=True)
class SandboxStats:
    """Counters for assertions. `creations` counts users created, dropped ones included (they were created)."""

    requests: int = 0
    creations: int = 0
    replays: int = 0
    throttled: int = 0  # 429s
    failed: int = 0  # 503s from --fail-rate
    dropped: int = 0  # created, then the connection closed without an answer
    refused: int = 0  # creations the rules refused (4xx)
    forbidden: int = 0  # 403s: no GDAP relationship, or no role for the call
    license_updates: int = 0  # license changes made (either API), dropped ones included
    graph_writes: int = 0  # Graph creates, profile and manager changes made, dropped ones included


@dataclass(slots=True)
class SandboxContext:
    store: Store
    options: SandboxOptions
    faults: Faults
    stats: SandboxStats
    verifier: TokenVerifier
    #: With `--state`: returns once every write so far is on disk (raises `StateNotSaved` if it cannot be).
    durable: Callable[[], Awaitable[None]] | None = None
    #: How the frame waits out a call's latency: a test puts a recorder here instead of waiting.
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep


CONTEXT = web.AppKey("bulkonboard_sandbox_context", SandboxContext)


async def authorized(request: web.Request, tenant: str | None, audience: str) -> bool:
    token = bearer_token(request.headers.get("Authorization"))
    if token is None:
        return False
    verdict = request.app[CONTEXT].verifier(token, tenant, audience)
    if inspect.isawaitable(verdict):
        verdict = await verdict
    return bool(verdict)
