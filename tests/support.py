"""The helpers the tests share, one copy each: running the real CLI and reading what it wrote, the standalone and
embedded sandbox, a fake clock, sheets and rows to feed it. Fixtures built on them are in conftest.py."""

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
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import openpyxl

from bulkonboard.app.sources import Connection
from bulkonboard.model import Problem, Status, UserRow
from bulkonboard.sandbox import Sandbox, SandboxOptions
from bulkonboard.service.partnercenter import GraphClient, PartnerCenterClient, ServiceFacts, StaticTokens
from bulkonboard.sheets.validation import CheckedRow

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
    return [sys.executable, "-m", "bulkonboard.cli.commands", *map(str, args)]


def run_cli(
    *args: str | Path, cwd: Path = ROOT, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """The real command in a process of its own, no standard input, no BULKONBOARD_ setting but `env`'s."""
    return subprocess.run(
        cli(*args), cwd=cwd, capture_output=True, text=True, timeout=timeout, env=clean_env(**(env or {})),
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def assert_one_clear_line(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> str:
    """The house rule for a fault: its exit code, ONE line on stderr naming it, never a traceback."""
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def sheet_rows(path: Path, sheet: str = "Rows") -> list[dict[str, object]]:
    """A sheet of a workbook bulkonboard wrote, a dict per row under its header's names, cells as stored."""
    book = openpyxl.load_workbook(path, read_only=True)
    try:
        header, *values = book[sheet].iter_rows(values_only=True)
    finally:
        book.close()
    names = [str(name) for name in header]
    return [dict(zip(names, row, strict=False)) for row in values]


def results_rows(path: Path) -> list[dict[str, str]]:
    """The results' rows as text, an empty cell as "" (what a person reads)."""
    return [{k: "" if v is None else str(v) for k, v in row.items()} for row in sheet_rows(path, "Rows")]


def summary_of(path: Path) -> dict[str, object]:
    """The Summary sheet's label -> value pairs, cells as stored (a count is a number)."""
    book = openpyxl.load_workbook(path, read_only=True)
    try:
        return {str(k): v for k, v, *_ in book["Summary"].iter_rows(values_only=True) if k is not None}
    finally:
        book.close()


def summary_items(path: Path) -> dict[str, str]:
    """The Summary sheet's label -> value pairs, as text."""
    return {label: str(value) for label, value in summary_of(path).items()}


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


def checked_row(
    n: int,
    upn: str | None = None,
    *,
    status: Status = Status.VALID,
    problems: tuple[Problem, ...] = (),
    existing: str | None = None,
    customer: str = CONTOSO,
    password: str = "Tr0ub4dor&3-horse",
) -> CheckedRow:
    """Row n as validation hands it to the pipeline (valid unless told otherwise)."""
    user = UserRow(
        row=n,
        userPrincipalName=upn or f"user{n}@contoso.com",
        firstName="First",
        lastName=f"Last{n}",
        displayName=f"First Last{n}",
        usageLocation="US",
        password=password,
        customerTenantId=customer,
    )
    return CheckedRow(user=user, status=status, problems=problems, existing_user_id=existing)


@dataclass
class SandboxService:
    """The embedded sandbox and the real clients talking to it over HTTP on 127.0.0.1."""

    sandbox: Sandbox
    session: aiohttp.ClientSession
    client: PartnerCenterClient
    graph: GraphClient
    tokens: StaticTokens
    correlation_id: str

    def facts(self) -> ServiceFacts:
        """Fresh facts per run, as each run of the command asks the service anew."""
        return ServiceFacts(self.client, self.graph)

    def connection(self, *, facts: Any = None, client: Any = None) -> Connection:
        """What a run talks to, as `app.sources.connect` opens it for a sandbox; `facts` or `client` replaced by a
        test's own (a lying facts source, a client that fails on cue)."""
        return Connection(
            facts=facts or self.facts(),
            source_name="sandbox",
            partner_center=client or self.client,
            graph=self.graph,
            tokens=self.tokens,
            service_url=self.sandbox.url,
        )

    def held(self, customer: str = CONTOSO) -> dict[str, str]:
        """The users the sandbox holds for the customer: case-folded UPN -> id (UPNs are unique there)."""
        return {u["userPrincipalName"].casefold(): u["id"] for u in self.sandbox.store.users(customer)}


@asynccontextmanager
async def sandbox_service(
    options: SandboxOptions | None = None, *, token: str = "sandbox", clock: Any = None
) -> AsyncIterator[SandboxService]:
    extra = {"clock": clock} if clock is not None else {}
    async with Sandbox(data=SANDBOX_DATA, options=options or SandboxOptions(), **extra) as sandbox:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            tokens = StaticTokens(token)
            correlation_id = str(uuid.uuid4())
            client = PartnerCenterClient(session, tokens, base_url=sandbox.url, correlation_id=correlation_id)
            graph = GraphClient(session, tokens, graph_url=f"{sandbox.url}/graph/{{tenant}}")
            yield SandboxService(sandbox, session, client, graph, tokens, correlation_id)


#: The journal's tables as the format-1 release wrote them (before application ids and step records; commit
#: 007ff60), verbatim: the guard and the migration tests open such journals.
FORMAT_1_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY, started TEXT NOT NULL, finished TEXT, input_path TEXT NOT NULL,
    input_sha256 TEXT NOT NULL, customer TEXT NOT NULL, correlation_id TEXT NOT NULL, pid INTEGER NOT NULL,
    host TEXT NOT NULL, command TEXT NOT NULL DEFAULT '', counts TEXT, exit_code INTEGER
);
CREATE TABLE IF NOT EXISTS rows (
    customer TEXT NOT NULL, upn_key TEXT NOT NULL, upn TEXT NOT NULL, row INTEGER,
    state TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'created', 'failed', 'skipped')),
    request_id TEXT, user_id TEXT, reason TEXT, run_id INTEGER, sent_at TEXT, created_at TEXT,
    updated_at TEXT NOT NULL, PRIMARY KEY (customer, upn_key)
) WITHOUT ROWID;
"""
