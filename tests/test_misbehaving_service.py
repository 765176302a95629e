"""A service that misbehaves, over real HTTP on loopback: a small aiohttp proxy (port 0) in front of the sandbox
answers what the sandbox never would. Each case goes through the real CLI too: its exit code, one clear line,
no traceback, and what must survive survives.

- a create's 200 that names another UPN (the issue: five rows got jane.doe's id) is never taken;
- `links.next` paging that does not end stops at a repeated continuation token and at the documented bound;
- a long wait (a 429's Retry-After) is logged once, with its reason, in text and JSON logs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bulkonboard.journal.store import open_journal
from bulkonboard.model import Code, RowResult, Status, UserRow
from bulkonboard.sandbox import Sandbox, SandboxOptions
from bulkonboard.sending.pipeline import Pipeline, PipelineOptions, PriorOutcome
from bulkonboard.sending.retry import LONG_WAIT, WaitLog
from bulkonboard.service import http as service_http
from bulkonboard.service.errors import EndlessPaging, MismatchedAnswer
from bulkonboard.service.graph import GraphClient
from bulkonboard.service.http import StaticTokens
from bulkonboard.service.partnercenter import PartnerCenterClient
from bulkonboard.sheets.validation import CheckedRow

from .support import CONTOSO, ROOT, SANDBOX_DATA, FakeTime, clean_env, person, sheet_rows, write_sheet

#: What a rule does with a request: an answer of its own, or None to let the sandbox answer.
Rule = Callable[[web.Request, bytes], Awaitable[web.StreamResponse | None]]
USERS_PATH = f"/v1/customers/{CONTOSO}/users"


class Misbehaving:
    """A proxy on 127.0.0.1 port 0 that forwards to a sandbox, except where a rule answers instead."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.rules: list[Rule] = []
        self.url = ""
        self.creates = 0
        self._http: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None

    async def forward(self, request: web.Request, body: bytes) -> tuple[int, dict[str, str], bytes]:
        assert self._http is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with self._http.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=body
        ) as answer:
            kept = {k: v for k, v in answer.headers.items() if k.lower() in ("content-type", "retry-after")}
            return answer.status, kept, await answer.read()

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if request.method == "POST" and request.path == USERS_PATH:
            self.creates += 1
        for rule in self.rules:
            answer = await rule(request, body)
            if answer is not None:
                return answer
        status, headers, data = await self.forward(request, body)
        return web.Response(status=status, headers=headers, body=data)

    async def __aenter__(self) -> Misbehaving:
        self._http = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None and self._http is not None
        await self._runner.cleanup()
        await self._http.close()


@asynccontextmanager
async def service() -> AsyncIterator[tuple[Sandbox, Misbehaving]]:
    async with Sandbox(SANDBOX_DATA, SandboxOptions(seed=0, page_size=1000)) as sandbox:
        async with Misbehaving(sandbox.url) as proxy:
            yield sandbox, proxy


async def bulkonboard(*args: str | Path) -> tuple[int, str]:
    """The real CLI in a subprocess (awaited, so the proxy in this loop keeps answering)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bulkonboard.cli.commands", *map(str, args),
        cwd=ROOT, env=clean_env(BULKONBOARD_ACCESS_TOKEN="sandbox"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 240)
    assert process.returncode is not None
    return process.returncode, stderr.decode()


def rows_of(path: Path) -> dict[str, dict[str, Any]]:
    return {str(row["userPrincipalName"]): row for row in sheet_rows(path)}


def sent_upn(body: bytes) -> str:
    return str(json.loads(body)["userPrincipalName"])


# ---------------------------------------------------------------------------------------------------------------
# a 200 that names another user


async def test_a_create_answer_naming_another_upn_is_never_taken(tmp_path: Path) -> None:
    """b: the service created b but answered with jane.doe's record; c: it answered jane.doe's record and created
    nothing. Neither row gets jane's id: b is settled by a lookup (its own id), c fails api.mismatch and stays
    "sent" in the journal for the next run to reconcile."""
    async with service() as (sandbox, proxy):
        jane = sandbox.store.user_by_upn(CONTOSO, "jane.doe@contoso.com")
        assert jane is not None

        async def answer_as_jane(request: web.Request, body: bytes) -> web.StreamResponse | None:
            if request.method != "POST" or request.path != USERS_PATH:
                return None
            upn = sent_upn(body)
            if upn.startswith("new.hire2@"):
                status, _, _ = await proxy.forward(request, body)  # really created...
                assert status == 200
            elif not upn.startswith("new.hire3@"):
                return None
            return web.json_response({**jane, "passwordProfile": {"password": "x"}})  # ...but answered as jane

        proxy.rules.append(answer_as_jane)
        sheet = write_sheet(tmp_path / "hires.csv", [person(1), person(2), person(3)])
        journal, results = tmp_path / "j.sqlite", tmp_path / "r.xlsx"
        code, stderr = await bulkonboard(
            "run", sheet, "--customer", CONTOSO, "--sandbox-url", proxy.url, "--journal", journal,
            "--results", results, "--rate", "1000",
        )
        b = sandbox.store.user_by_upn(CONTOSO, "new.hire2@contoso.com")
    assert code == 1, stderr
    assert "Traceback" not in stderr
    rows = rows_of(results)
    assert b is not None and sandbox.store.user_by_upn(CONTOSO, "new.hire3@contoso.com") is None
    assert rows["new.hire1@contoso.com"]["status"] == "created"
    assert rows["new.hire2@contoso.com"]["status"] == "created"
    assert rows["new.hire2@contoso.com"]["userId"] == b["id"] != jane["id"]
    assert str(rows["new.hire2@contoso.com"]["problems"]).startswith(f"{Code.API_MISMATCH}: ")
    assert rows["new.hire3@contoso.com"]["status"] == "failed" and rows["new.hire3@contoso.com"]["userId"] is None
    assert str(rows["new.hire3@contoso.com"]["problems"]).startswith(f"{Code.API_MISMATCH}: ")
    assert "jane.doe@contoso.com" in str(rows["new.hire3@contoso.com"]["problems"])
    assert jane["id"] not in json.dumps([list(r.values()) for r in rows.values()], default=str)
    with open_journal(journal, service=proxy.url) as kept:
        settled, in_doubt = kept.prior(CONTOSO, "new.hire2@contoso.com"), kept.prior(CONTOSO, "new.hire3@contoso.com")
    assert settled is not None and settled.outcome is PriorOutcome.CREATED and settled.user_id == b["id"]
    assert in_doubt is not None and in_doubt.outcome is PriorOutcome.IN_DOUBT and in_doubt.user_id is None


async def test_the_client_raises_mismatch_instead_of_returning_the_other_users_id() -> None:
    async with service() as (sandbox, proxy):
        jane = sandbox.store.user_by_upn(CONTOSO, "jane.doe@contoso.com")
        assert jane is not None

        async def jane_in_other_case(request: web.Request, body: bytes) -> web.StreamResponse | None:
            return web.json_response({**jane}) if request.method == "POST" else None

        proxy.rules.append(jane_in_other_case)
        row = UserRow(row=2, userPrincipalName="someone@contoso.com", displayName="S", usageLocation="US",
                      password="Str0ng!Pass")
        same = UserRow(row=3, userPrincipalName="JANE.DOE@contoso.com", displayName="J", usageLocation="US",
                       password="Str0ng!Pass")
        async with aiohttp.ClientSession() as http:
            client = PartnerCenterClient(http, StaticTokens("sandbox"), base_url=proxy.url, correlation_id="c")
            with pytest.raises(MismatchedAnswer) as caught:
                await client.create_user(CONTOSO, row, request_id=str(uuid.uuid4()))
            created = await client.create_user(CONTOSO, same, request_id=str(uuid.uuid4()))  # case differs only
    assert caught.value.named_upn == "jane.doe@contoso.com" and jane["id"] not in str(caught.value)
    assert "Str0ng!Pass" not in str(caught.value)
    assert created.id == jane["id"]


async def test_a_graph_lookup_that_answers_for_another_user_is_no_answer() -> None:
    async with service() as (sandbox, proxy):
        jane = sandbox.store.user_by_upn(CONTOSO, "jane.doe@contoso.com")
        assert jane is not None

        async def always_jane(request: web.Request, body: bytes) -> web.StreamResponse | None:
            if request.method == "GET" and "/v1.0/users/" in request.path:
                return web.json_response({"id": jane["id"], "userPrincipalName": jane["userPrincipalName"]})
            return None

        proxy.rules.append(always_jane)
        async with aiohttp.ClientSession() as http:
            graph = GraphClient(http, StaticTokens("sandbox"), graph_url=proxy.url + "/graph/{tenant}")
            with pytest.raises(MismatchedAnswer, match="the user lookup names jane.doe@contoso.com"):
                await graph.get_user(CONTOSO, "wei.zhang@contoso.com")
            assert (await graph.get_user(CONTOSO, "JANE.doe@contoso.com") or {})["id"] == jane["id"]


async def test_a_mismatch_whose_user_is_found_later_is_created_with_the_looked_up_id() -> None:
    """The pipeline with the real client over HTTP: no Graph, so the lookup pages Partner Center's list."""
    async with service() as (sandbox, proxy):
        jane = sandbox.store.user_by_upn(CONTOSO, "jane.doe@contoso.com")
        assert jane is not None

        async def created_but_answered_as_jane(request: web.Request, body: bytes) -> web.StreamResponse | None:
            if request.method != "POST":
                return None
            await proxy.forward(request, body)
            return web.json_response(jane)

        proxy.rules.append(created_but_answered_as_jane)
        user = UserRow(row=2, userPrincipalName="late@contoso.com", displayName="L", usageLocation="US",
                       password="Str0ng!Pass")
        results: list[RowResult] = []
        async with aiohttp.ClientSession() as http:
            client = PartnerCenterClient(http, StaticTokens("sandbox"), base_url=proxy.url, correlation_id="c")
            pipeline = Pipeline(client, customer=CONTOSO, options=PipelineOptions(rate=math.inf, lookup_retries=0))
            await pipeline.run([CheckedRow(user=user, status=Status.VALID, problems=(), existing_user_id=None)], results.append)
        found = sandbox.store.user_by_upn(CONTOSO, "late@contoso.com")
    (result,) = results
    assert found is not None and result.status is Status.CREATED and result.userId == found["id"] != jane["id"]
    assert [p.code for p in result.problems] == [Code.API_MISMATCH]


# ---------------------------------------------------------------------------------------------------------------
# paging that does not end


def endless_pages(*, same_token: bool) -> Rule:
    """The user list, for ever: each page names a new uri; the token is always the same, or always new."""
    turn = 0

    async def rule(request: web.Request, body: bytes) -> web.StreamResponse | None:
        nonlocal turn
        if request.method != "GET" or request.path != USERS_PATH:
            return None
        turn += 1
        token = "same-token" if same_token else f"token-{turn}"
        return web.json_response({
            "totalCount": 0,
            "items": [],
            "links": {"next": {"uri": f"/customers/{CONTOSO}/users?page={turn}", "method": "GET",
                               "headers": [{"key": "MS-ContinuationToken", "value": token}]}},
        })

    return rule


async def test_a_repeated_continuation_token_stops_the_run_with_exit_3_before_any_row(tmp_path: Path) -> None:
    async with service() as (sandbox, proxy):
        proxy.rules.append(endless_pages(same_token=True))
        sheet = write_sheet(tmp_path / "hires.csv", [person(1)])
        code, stderr = await bulkonboard(
            "run", sheet, "--customer", CONTOSO, "--sandbox-url", proxy.url, "--journal", tmp_path / "j.sqlite",
            "--results", tmp_path / "r.xlsx",
        )
    assert code == 3
    assert stderr.count("\n") == 1 and stderr.startswith("error: Partner Center is not answering normally")
    assert "repeats an earlier page" in stderr and "Traceback" not in stderr
    assert proxy.creates == 0 and sandbox.stats.creations == 0


async def test_paging_that_never_repeats_stops_at_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bound itself, over HTTP, made small for the test (the CLI test below meets the real one)."""
    monkeypatch.setattr(service_http, "MAX_PAGES", 25)
    async with service() as (_, proxy):
        proxy.rules.append(endless_pages(same_token=False))
        async with aiohttp.ClientSession() as http:
            client = PartnerCenterClient(http, StaticTokens("sandbox"), base_url=proxy.url, correlation_id="c")
            with pytest.raises(EndlessPaging, match="passed the bound on paging after 25 pages"):
                await client.find_user_by_upn(CONTOSO, "nobody@contoso.com")


async def test_paging_that_never_ends_stops_at_the_documented_bound_through_the_cli(tmp_path: Path) -> None:
    async with service() as (sandbox, proxy):
        proxy.rules.append(endless_pages(same_token=False))
        code, stderr = await bulkonboard(
            "validate", write_sheet(tmp_path / "hires.csv", [person(1)]), "--customer", CONTOSO,
            "--sandbox-url", proxy.url,
        )
    assert code == 3
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert f"passed the bound on paging after {service_http.MAX_PAGES:,} pages" in stderr
    assert sandbox.stats.creations == 0


# ---------------------------------------------------------------------------------------------------------------
# long waits are logged, once per wait


def throttle_each_first_create(seconds: int, together: int = 1) -> Rule:
    """429 + Retry-After for each UPN's first create; the 429s are held until `together` creates of one domain have
    arrived, so that those rows are throttled at once (one wait, however many rows wait behind it)."""
    throttled: set[str] = set()
    arrived: dict[str, asyncio.Event] = {}

    async def rule(request: web.Request, body: bytes) -> web.StreamResponse | None:
        upn = sent_upn(body) if request.method == "POST" and request.path == USERS_PATH else None
        if upn is None or upn in throttled:
            return None
        throttled.add(upn)
        domain = upn.partition("@")[2]
        everyone = arrived.setdefault(domain, asyncio.Event())
        if sum(t.endswith("@" + domain) for t in throttled) >= together:
            everyone.set()
        await asyncio.wait_for(everyone.wait(), 60)
        return web.json_response(
            {"statusCode": 429, "message": f"Rate limit is exceeded. Try again in {seconds} seconds."},
            status=429, headers={"Retry-After": str(seconds)},
        )

    return rule


async def test_a_long_retry_after_is_logged_once_in_text_and_json(tmp_path: Path) -> None:
    seconds = math.ceil(LONG_WAIT)
    async with service() as (sandbox, proxy):
        proxy.rules.append(throttle_each_first_create(seconds, together=4))
        runs = []
        for log_format, domain in (("json", "contoso.com"), ("text", "contoso.onmicrosoft.com")):
            sheet = write_sheet(tmp_path / f"{log_format}.csv", [person(n, domain) for n in range(1, 5)])
            runs.append(bulkonboard(
                "run", sheet, "--customer", CONTOSO, "--sandbox-url", proxy.url, "--rate", "1000",
                "--journal", tmp_path / f"{log_format}.sqlite", "--results", tmp_path / f"{log_format}.xlsx",
                "--log-format", log_format,
            ))
        (json_code, json_err), (text_code, text_err) = await asyncio.gather(*runs)
    assert (json_code, text_code) == (0, 0), json_err + text_err
    assert sandbox.stats.creations == 8
    waits = [entry for entry in map(json.loads, json_err.splitlines()) if entry.get("event") == "wait"]
    assert len(waits) == 1, "one line per wait, not one per row waiting"
    assert waits[0]["reason"] == "throttled" and waits[0]["level"] == "warning"
    assert seconds - 1 < waits[0]["seconds"] <= seconds
    assert f"Retry-After {seconds} s" in waits[0]["message"]
    lines = [line for line in text_err.splitlines() if " waiting " in line]
    assert len(lines) == 1 and "warning" in lines[0] and f"Retry-After {seconds} s" in lines[0], text_err
    assert "Traceback" not in json_err + text_err


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_only_waits_of_a_few_seconds_or_more_are_logged_and_overlapping_ones_once() -> None:
    time = FakeTime()
    handler = Lines()
    logger = logging.getLogger("bulkonboard.waits")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        waits = WaitLog(time.clock)
        waits.waiting(LONG_WAIT / 2, "retry", "short")  # the normal rhythm of a run: no line
        waits.waiting(30, "throttled", "429 (Retry-After 30 s)")  # a line
        time.now += 1
        waits.waiting(29, "throttled", "another worker's 429")  # the same wait: no line
        waits.waiting(29, "retry", "a 503's Retry-After")  # another reason: a line
        waits.waiting(60, "throttled", "the service asked for longer")  # reaches well past the first: a line
        time.now += 61
        waits.waiting(30, "throttled", "a new 429 after the last wait ended")  # a line
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    said = [(record.getMessage(), record.fields) for record in handler.records]  # type: ignore[attr-defined]
    assert [message for message, _ in said] == [
        "waiting 30 s: 429 (Retry-After 30 s)",
        "waiting 29 s: a 503's Retry-After",
        "waiting 60 s: the service asked for longer",
        "waiting 30 s: a new 429 after the last wait ended",
    ]
    assert said[0][1] == {"event": "wait", "seconds": 30, "reason": "throttled"}
