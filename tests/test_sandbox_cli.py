"""The standalone command as users and scripts run it: `python -m bulkonboard.sandbox ...` in a subprocess.

Each test reads the `listening on URL` line (never sleeps to wait for the server), calls the URL, signals the
process and checks that it exits 0.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "sandbox.toml"
CONTOSO = "3c9a8f12-5e6b-4c1d-9a7e-2f4b8d6c1e90"
STARTUP_TIMEOUT = 30.0
LISTENING = re.compile(r"^listening on (http://127\.0\.0\.1:(\d+))\n$")


async def _spawn(
    *args: str, cwd: Path = REPO, env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bulkonboard.sandbox",
        *args,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


@asynccontextmanager
async def running(*args: str, **kwargs: object) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """The command started and listening; killed if a test fails before it stops it."""
    process = await _spawn("--port", "0", *args, **kwargs)  # type: ignore[arg-type]
    try:
        assert process.stdout is not None
        first = (await asyncio.wait_for(process.stdout.readline(), STARTUP_TIMEOUT)).decode()
        match = LISTENING.match(first)
        if match is None:
            stderr = (await asyncio.wait_for(process.communicate(), STARTUP_TIMEOUT))[1].decode()
            pytest.fail(f"first line was {first!r}; stderr: {stderr}")
        yield process, match.group(1)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _stop(process: asyncio.subprocess.Process, signum: int = signal.SIGTERM) -> tuple[int, str, str]:
    process.send_signal(signum)
    stdout, stderr = await asyncio.wait_for(process.communicate(), STARTUP_TIMEOUT)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_the_command_listens_serves_and_stops_cleanly(signum: int) -> None:
    async with running("--data", str(SAMPLE), "--token", "cli-token", "--seed", "1") as (process, url):
        async with aiohttp.ClientSession() as http:
            async with http.get(
                f"{url}/v1/customers/{CONTOSO}", headers={"Authorization": "Bearer cli-token"}
            ) as ok:
                body = await ok.json()
                assert ok.status == 200 and body["companyProfile"]["domain"] == "contoso.onmicrosoft.com"
            async with http.get(
                f"{url}/v1/customers/{CONTOSO}", headers={"Authorization": "Bearer sandbox"}
            ) as refused:
                assert refused.status == 401
            async with http.get(
                f"{url}/graph/{CONTOSO}/v1.0/domains", headers={"Authorization": "Bearer cli-token"}
            ) as domains:
                assert domains.status == 200
        code, rest, stderr = await _stop(process, signum)
    assert code == 0, stderr
    assert rest == "" and "Traceback" not in stderr


async def test_defaults_to_the_sample_in_the_current_directory_and_keeps_state(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    password = "Zq8!unique#Pw"
    user = {
        "userPrincipalName": "cli.user@contoso.com",
        "displayName": "CLI User",
        "usageLocation": "DE",
        "passwordProfile": {"password": password, "forceChangePassword": False},
    }
    async with running("--state", str(state), "--page-size", "1") as (process, url):
        async with aiohttp.ClientSession(headers={"Authorization": "Bearer sandbox"}) as http:
            async with http.post(f"{url}/v1/customers/{CONTOSO}/users", json=user) as created:
                assert created.status == 200
            async with http.get(f"{url}/v1/customers/{CONTOSO}/users") as page:
                assert len((await page.json())["items"]) == 1  # --page-size reached the server
        code, _, stderr = await _stop(process)
    assert code == 0, stderr
    text = state.read_text(encoding="utf-8")
    assert "cli.user@contoso.com" in text and password not in text
    upns = [u["userPrincipalName"] for u in json.loads(text)["customers"][CONTOSO]["users"]]
    assert upns == ["jane.doe@contoso.com", "wei.zhang@contoso.com", "cli.user@contoso.com"]


async def test_rate_limit_option_reaches_the_server() -> None:
    async with running("--rate-limit", "1/60s", "--throttle-warnings") as (process, url):
        async with aiohttp.ClientSession(headers={"Authorization": "Bearer sandbox"}) as http:
            statuses = []
            for upn in ("r1@contoso.com", "r2@contoso.com"):
                user = {
                    "userPrincipalName": upn,
                    "displayName": "R",
                    "usageLocation": "US",
                    "passwordProfile": {"password": "Abcdef12!"},
                }
                async with http.post(f"{url}/v1/customers/{CONTOSO}/users", json=user) as answer:
                    statuses.append(
                        (
                            answer.status,
                            answer.headers.get("Retry-After"),
                            answer.headers.get("x-ms-throttle-limit-percentage"),
                        )
                    )
        code, _, _ = await _stop(process)
    assert statuses[0] == (200, None, "1.00")
    assert statuses[1][0] == 429 and 1 <= int(statuses[1][1] or 0) <= 60
    assert code == 0


async def _run_to_end(*args: str, cwd: Path = REPO) -> tuple[int, str, str]:
    process = await _spawn(*args, cwd=cwd)
    stdout, stderr = await asyncio.wait_for(process.communicate(), STARTUP_TIMEOUT)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_a_bad_data_file_exits_2_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[customers]]\nid = "x"\n', encoding="utf-8")
    code, stdout, stderr = await _run_to_end("--data", str(bad), "--port", "0")
    assert code == 2 and stdout == ""
    assert stderr.count("\n") == 1 and stderr.startswith("error: ") and str(bad) in stderr


async def test_a_data_file_that_is_not_there_exits_2(tmp_path: Path) -> None:
    code, _, stderr = await _run_to_end("--port", "0", "--data", str(tmp_path / "nope.toml"), cwd=tmp_path)
    assert code == 2 and "nope.toml" in stderr and "Traceback" not in stderr


@pytest.mark.parametrize("args", [["--rate-limit", "fast"], ["--fail-rate", "2"], ["--port", "-1"]])
async def test_bad_options_exit_2(args: list[str]) -> None:
    code, _, stderr = await _run_to_end(*args)
    assert code == 2 and "Traceback" not in stderr


async def test_a_busy_port_exits_3_with_one_line() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, stdout, stderr = await _run_to_end("--port", str(port))
    assert code == 3 and stdout == ""
    assert stderr.startswith("error: cannot listen on 127.0.0.1:") and stderr.count("\n") == 1


async def test_help_explains_itself() -> None:
    code, stdout, _ = await _run_to_end("--help")
    assert code == 0
    for words in (
        "listening on URL",
        "--rate-limit",
        "--drop-rate",
        "--state",
        "--page-size",
        "--throttle-warnings",
        "MS-RequestId",
    ):
        assert words in stdout
