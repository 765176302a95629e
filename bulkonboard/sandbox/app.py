"""The sandbox's HTTP face: Partner Center under `/v1` (`partner_center`, `licenses`), Graph for tenant T under
`/graph/T/v1.0` (`graph`, `graph_users`, `graph_licenses`), all on one directory per customer, and the frame
around every call: latency (`--latency-ms N` or `N-M`), counting, header echo, durable state, and unknown routes
and crashes answered in the service's shape.

Each route answers in the shapes its service documents: Partner Center's `{code, description, data, source}`
errors (and its odd 429 body), Graph's `{"error": {code, message, innerError}}`. The routes stay thin; the rules
live in the store, the faults in `faults`, GDAP in `permissions`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web

from . import graph, graph_licenses, graph_users, licenses, partner_center
from .auth import TokenVerifier, static_token_verifier
from .codes import ROUTE_NOT_FOUND_CODE, STATE_NOT_SAVED_CODE, UNEXPECTED_ERROR_CODE, ApiError
from .context import (
    CONTEXT,
    CORRELATION_ID,
    GRAPH_PREFIX,
    PC_PREFIX,
    REQUEST_ID,
    SandboxContext,
    SandboxStats,
)
from .faults import Clock, Faults
from .options import SandboxOptions
from .partner_center import pc_error
from .state import StateNotSaved
from .store import Store

log = logging.getLogger("bulkonboard.sandbox")

__all__ = ["CONTEXT", "SandboxContext", "SandboxStats", "build_app"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build_app(
    store: Store,
    options: SandboxOptions,
    *,
    verifier: TokenVerifier | None = None,
    stats: SandboxStats | None = None,
    faults: Faults | None = None,
    extra_routes: Iterable[web.AbstractRouteDef] = (),
    setup: Callable[[web.Application], None] | None = None,
    clock: Clock = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> web.Application:
    """The aiohttp application. `extra_routes` are mounted beside the API, and `setup(app)` may add more (an OIDC
    authority, say); those get the latency and header echo but no auth or faults."""
    context = SandboxContext(
        store=store,
        options=options,
        faults=faults or Faults(options, clock=clock),
        stats=stats or SandboxStats(),
        verifier=verifier or static_token_verifier(options.token),
        sleep=sleep,
    )
    app = web.Application(middlewares=[_frame])
    app[CONTEXT] = context
    app.add_routes(partner_center.routes(PC_PREFIX))
    app.add_routes(licenses.routes(PC_PREFIX))
    app.add_routes(graph.routes(GRAPH_PREFIX))
    app.add_routes(graph_users.routes(GRAPH_PREFIX))
    app.add_routes(graph_licenses.routes(GRAPH_PREFIX))
    app.add_routes(list(extra_routes))
    if setup is not None:
        setup(app)
    return app


# -- the frame around every call ----------------------------------------------------------------------------


@web.middleware
async def _frame(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Latency, request counting, header echo; unknown routes and crashes answered in the service's shape.

    Sandbox's own (the docs are silent on where the time goes): `--latency-ms` is the service's work, spent after
    the request arrived and was counted against the rate limits, before its answer leaves; a 429 does no work
    and is answered at once. So a client that sends evenly arrives evenly, as over a real network whose one-way
    delay is small beside a create's second or two; a per-request delay before counting would instead reorder
    requests by up to the spread and make a sliding window refuse some at any rate near the limit."""
    context = request.app[CONTEXT]
    context.stats.requests += 1
    latency = context.faults.latency_seconds()
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if not _is_api_path(request.path) or exc.status not in (404, 405):
            raise
        response = _no_such_route(request, exc.status)
    except ConnectionResetError:
        raise  # the client hung up (a run aborted, a dropped answer): nothing to answer, nothing to report
    except Exception:
        log.exception("sandbox: unexpected error on %s %s", request.method, request.path)
        response = pc_error(
            ApiError(500, UNEXPECTED_ERROR_CODE, "An unexpected error occurred in the sandbox.")
        )
    if latency > 0 and response.status != 429:
        await context.sleep(latency)
    if context.durable is not None:
        try:
            # No answer leaves before the writes it may tell of are on disk (reads too: a list may show them).
            await context.durable()
        except StateNotSaved as exc:
            # Sandbox's own: a 500 says "outcome unknown", so a client looks the user up or replays the request
            # (the replay waits for the disk again) instead of believing a write that a restart would lose.
            response = pc_error(
                ApiError(500, STATE_NOT_SAVED_CODE, f"The sandbox could not save its state ({exc}).")
            )
    _echo_headers(request, response)
    return response


def _is_api_path(path: str) -> bool:
    return path == PC_PREFIX or path.startswith(PC_PREFIX + "/") or path.startswith(GRAPH_PREFIX + "/")


def _no_such_route(request: web.Request, status: int) -> web.StreamResponse:
    # Sandbox's own: what the real services answer for an unknown path is not documented.
    what = "No such resource" if status == 404 else "Method not allowed"
    description = f"{what}: {request.method} {request.path}"
    if request.path.startswith(GRAPH_PREFIX + "/"):
        return graph.graph_error(
            request, status, "BadRequest" if status == 404 else "MethodNotAllowed", description
        )
    return pc_error(ApiError(status, ROUTE_NOT_FOUND_CODE, description))


def _echo_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Partner Center answers with the request's MS-RequestId and MS-CorrelationId (made up when not sent)."""
    for name in (REQUEST_ID, CORRELATION_ID):
        if name not in response.headers:
            response.headers[name] = request.headers.get(name) or str(uuid.uuid4())
