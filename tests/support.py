"""Shared by the tests that run bulkonboard and its sandbox as separate processes, as a scheduler would."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SANDBOX_DATA = ROOT / "samples" / "sandbox.toml"
CONTOSO = "3c9a8f12-5e6b-4c1d-9a7e-2f4b8d6c1e90"


def clean_env(**extra: str) -> dict[str, str]:
    """The machine's environment without any BULKONBOARD_ setting a developer may have exported."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULKONBOARD_")}
    env.update(extra)
    return env


@dataclass
class StandaloneSandbox:
    process: subprocess.Popen[str]
    url: str
    token: str = "sandbox"

    def users(self, customer: str = CONTOSO) -> list[dict[str, Any]]:
        """Every user of the customer, as the service lists them (one page: start it with a big --page-size)."""
        request = urllib.request.Request(
            f"{self.url}/v1/customers/{customer}/users", headers={"Authorization": f"Bearer {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            page = json.load(answer)
        assert "next" not in page["links"], "the users did not fit on one page"
        return list(page["items"])


@contextmanager
def standalone_sandbox(*args: str, token: str = "sandbox") -> Iterator[StandaloneSandbox]:
    """`python -m bulkonboard.sandbox --port 0 ...`, ready when it has printed its first line; SIGTERM at the end."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bulkonboard.sandbox", "--port", "0", "--data", str(SANDBOX_DATA),
         "--page-size", "1000", "--token", token, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=clean_env(),
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()  # printed and flushed before it serves
        match = re.fullmatch(r"listening on (\S+)\n", first)
        assert match, f"the sandbox said {first!r}; stderr: {process.stderr.read() if process.stderr else ''}"
        yield StandaloneSandbox(process, match.group(1), token)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def cli(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "bulkonboard.cli", *map(str, args)]


class FakeTime:
    """A clock that moves only when the code under test sleeps: waits cost nothing and repeat exactly. Shared by
    the pipeline under test and, where given, the sandbox's rate window."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


#: The columns of the sheets the run tests write (a plain sheet, the API's own names).
HEADER = ["userPrincipalName", "firstName", "lastName", "displayName", "usageLocation", "password"]


def person(n: int, domain: str = "contoso.com", **overrides: str) -> list[str]:
    """Row n of a sheet of new hires: valid unless `overrides` say otherwise."""
    values = {
        "userPrincipalName": f"new.hire{n}@{domain}",
        "firstName": f"New{n}",
        "lastName": "Hire",
        "displayName": f"New{n} Hire",
        "usageLocation": "US",
        "password": f"Str0ng!Pass{n:03d}",
    }
    values.update(overrides)
    return [values[name] for name in HEADER]


def write_sheet(path: Path, rows: list[list[str]], header: list[str] = HEADER) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path
