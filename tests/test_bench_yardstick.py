"""The overhead benchmark divides `bulkonboard run` by `bench/bare_loop.py`: the ratio means something only if the
floor sends what the product sends. Both go through a recording proxy in front of a real sandbox, and their
create requests are compared header by header and body by body."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from .support import CONTOSO, ROOT, clean_env, cli, standalone_sandbox

sys.path.insert(0, str(ROOT / "bench"))
import gen  # noqa: E402

pytestmark = pytest.mark.timeout(120)

#: Differ by nature from request to request or between two processes.
_VARYING = {"ms-requestid", "ms-correlationid", "content-length", "host", "authorization"}


class RecordingProxy:
    """Forwards everything to `upstream` and keeps each create request's headers and JSON body."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.creates: list[tuple[dict[str, str], dict[str, Any]]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if request.method == "POST" and request.path.endswith("/users"):
            self.creates.append(({k.lower(): v for k, v in request.headers.items()}, json.loads(body)))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in {"host", "content-length"}}
        async with aiohttp.ClientSession() as session, session.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=body, allow_redirects=False
        ) as answer:
            hop = {"content-length", "transfer-encoding", "content-encoding"}
            passed = {k: v for k, v in answer.headers.items() if k.lower() not in hop}
            return web.Response(status=answer.status, body=await answer.read(), headers=passed)


async def through_proxy(argv_for: Any, upstream: str) -> tuple[int, RecordingProxy]:
    proxy = RecordingProxy(upstream)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        process = await asyncio.create_subprocess_exec(
            *argv_for(f"http://127.0.0.1:{port}"), cwd=ROOT, env=clean_env(),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, stderr = await process.communicate()
        assert process.returncode == 0, stderr.decode()
    finally:
        await runner.cleanup()
    return len(proxy.creates), proxy


async def test_the_bare_loop_sends_the_same_requests_as_a_run(tmp_path: Path) -> None:
    sheet = gen.write_csv(tmp_path / "hires.csv", 12, bad_every=0)
    with standalone_sandbox() as sandbox:
        _, run = await through_proxy(
            lambda url: cli(
                "run", sheet, "--customer", CONTOSO, "--sandbox-url", url, "--results", tmp_path / "r.xlsx",
                "--journal", tmp_path / "j.sqlite", "--quiet", "--rate", "inf",
            ),
            sandbox.url,
        )  # fmt: skip
    with standalone_sandbox() as sandbox:  # a fresh one: the first now holds these users
        _, bare = await through_proxy(
            lambda url: [sys.executable, str(ROOT / "bench" / "bare_loop.py"), str(sheet), "--url", url,
                         "--customer", CONTOSO],
            sandbox.url,
        )  # fmt: skip

    assert len(run.creates) == len(bare.creates) == 12

    def fixed(headers: dict[str, str]) -> dict[str, str]:
        return {k: v for k, v in headers.items() if k not in _VARYING}

    run_headers = {json.dumps(fixed(h), sort_keys=True) for h, _ in run.creates}
    bare_headers = {json.dumps(fixed(h), sort_keys=True) for h, _ in bare.creates}
    assert run_headers == bare_headers and len(run_headers) == 1
    for headers, _ in run.creates + bare.creates:
        assert headers.keys() >= _VARYING - {"host"} and headers["authorization"].startswith("Bearer ")

    def by_upn(creates: list[tuple[dict[str, str], dict[str, Any]]]) -> dict[str, Any]:
        return {body["userPrincipalName"]: body for _, body in creates}

    assert by_upn(run.creates) == by_upn(bare.creates)
