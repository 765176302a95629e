"""A sandbox authority over real TLS on 127.0.0.1, port 0, for tests that drive MSAL itself."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from bulkonboard.sandbox.authority import AuthorityState, Tls, add_authority_routes


@dataclass(frozen=True)
class RunningAuthority:
    url: str  # https://127.0.0.1:PORT, the authority's base (MSAL's authority is URL/{tenant})
    state: AuthorityState
    ca_path: Path


@asynccontextmanager
async def serve_authority(state: AuthorityState, tls: Tls) -> AsyncIterator[RunningAuthority]:
    app = web.Application()
    add_authority_routes(app, state)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls.server_context)
    await site.start()
    try:
        port = runner.addresses[0][1]
        yield RunningAuthority(url=f"https://127.0.0.1:{port}", state=state, ca_path=tls.ca_path)
    finally:
        await runner.cleanup()
