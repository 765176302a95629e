"""Running the sandbox: in-process for tests and `--sandbox` (`Sandbox`), or standalone until a signal (`serve`).

Everything loop-bound (the app, the runner, the state writer) is created in `start()`, inside the running loop,
so a `Sandbox` can be built anywhere and used from any test's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import TextIO

from aiohttp import web

from .app import CONTEXT, SandboxStats, build_app
from .auth import TokenVerifier
from .data import SandboxData, SandboxDataError, load_data
from .faults import Clock, Faults
from .options import SandboxOptions
from .state import StateLog, read_state
from .store import Store


class Sandbox:
    """The sandbox on a real socket (port 0 picks a free one); `async with Sandbox(...) as sb: sb.url ...`.

    `data`: a TOML path, parsed data, or None for `samples/sandbox.toml` in the current directory.
    `state_path`: a file that keeps users across restarts (read now; every write on disk before its answer).
    `verifier`, `extra_routes`, `setup_app(app)` and `ssl_context` (then the URL is https) let a test or a later
    feature put its own token check and routes, e.g. a sign-in authority, on the same server.
    `clock` drives the rate limiters' windows, so a test can move time instead of waiting; `sleep` waits out each
    call's latency, so a test can record the latencies drawn instead of waiting them out.
    """

    def __init__(
        self,
        data: Path | str | SandboxData | None = None,
        options: SandboxOptions | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        state_path: Path | str | None = None,
        verifier: TokenVerifier | None = None,
        extra_routes: Iterable[web.AbstractRouteDef] = (),
        setup_app: Callable[[web.Application], None] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        clock: Clock = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.data = load_data(data)
        self.options = options or SandboxOptions()
        self.host = host
        self.port = port
        self.state_path = Path(state_path) if state_path is not None else None
        self.stats = SandboxStats()
        self.store = Store(self.data)
        if self.state_path is not None:
            if not self.state_path.parent.is_dir():
                raise SandboxDataError(f"{self.state_path}: the state file's directory does not exist")
            saved = read_state(self.state_path)
            if saved is not None:
                self.store.load_snapshot(saved)
        self.app: web.Application | None = None
        self._verifier = verifier
        self._extra_routes = list(extra_routes)
        self._setup_app = setup_app
        self._ssl_context = ssl_context
        self._clock = clock
        self._sleep = sleep
        self._runner: web.AppRunner | None = None
        self._writer: StateLog | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        """The base URL without a trailing slash: Partner Center at `url/v1`, Graph at `url/graph/T/v1.0`."""
        if self._url is None:
            raise RuntimeError("the sandbox is not started")
        return self._url

    async def start(self) -> str:
        if self._runner is not None:
            raise RuntimeError("the sandbox is already started")
        self.app = build_app(
            self.store,
            self.options,
            verifier=self._verifier,
            stats=self.stats,
            faults=Faults(self.options, clock=self._clock),
            extra_routes=self._extra_routes,
            setup=self._setup_app,
            sleep=self._sleep,
        )
        if self.state_path is not None:
            self._writer = StateLog(self.state_path, self.store)
            self._writer.start()  # compacts: the file exists (with the seeded users) from the start
            self.store.on_change = self._writer.record
            self.app[CONTEXT].durable = self._writer.durable
        runner = web.AppRunner(self.app, handle_signals=False, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port, ssl_context=self._ssl_context)
            await site.start()
        except BaseException:
            await runner.cleanup()
            await self._close_writer()
            raise
        self._runner = runner
        bound_port = runner.addresses[0][1]
        scheme = "https" if self._ssl_context is not None else "http"
        self._url = f"{scheme}://{_url_host(self.host)}:{bound_port}"
        return self._url

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        await self._close_writer()
        self._url = None

    async def _close_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            await writer.close()
            self.store.on_change = None

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


def _url_host(host: str) -> str:
    """A host a local client can connect to: the wildcard addresses are reached through loopback."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


async def serve(
    sandbox: Sandbox, out: TextIO | None = None, notes: Callable[[str], Iterable[str]] | None = None
) -> None:
    """Start, print `listening on URL` as the first line (flushed at once), serve until SIGINT/SIGTERM, stop.

    `notes(url)` gives further lines for a person (e.g. where the TLS test CA is), printed after the first."""
    out = out if out is not None else sys.stdout
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    installed: list[signal.Signals] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        # Installed before the line is printed, so a caller that signals as soon as it reads the line is heard.
        with contextlib.suppress(NotImplementedError, RuntimeError):  # platforms without loop signal handlers
            loop.add_signal_handler(signum, stop.set)
            installed.append(signum)
    try:
        async with sandbox:
            print(f"listening on {sandbox.url}", file=out, flush=True)
            for line in notes(sandbox.url) if notes else ():
                print(line, file=out, flush=True)
            await stop.wait()
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
