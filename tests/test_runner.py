"""`run_sheet` end to end: the real client against the real in-process sandbox over loopback.

The sandbox is the judge: every created row's userId must be the id the sandbox holds for that UPN, and the
fields must have arrived exactly as typed. Tests about throttling share one fake clock between the sandbox's
rate window and the pipeline's waits, so a Retry-After of a second costs no real second.
"""

from __future__ import annotations

import asyncio
import math
import os
import stat
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import openpyxl
import pytest

from bulkonboard.app.runner import RunOptions, RunOutcome, SheetRun, Timing, run_sheet
from bulkonboard.errors import AuthError, OwnFailure, ServiceUnavailable
from bulkonboard.journal.store import JournalError, RowFilter, open_journal
from bulkonboard.model import UserRow
from bulkonboard.sandbox import SandboxOptions
from bulkonboard.sending.pipeline import RUN_INTERRUPTED, NullJournal
from bulkonboard.sending.retry import Backoff
from bulkonboard.service.partnercenter import (
    CreatedUser,
    PartnerCenterClient,
    StaticTokens,
)
from bulkonboard.sheets.facts import CustomerFacts, Domain, DomainsFile

from .support import (
    CONTOSO,
    HEADER,
    FakeTime,
    SandboxService,
    person,
    results_rows,
    sandbox_service,
    summary_items,
    write_sheet,
)

FAST_BACKOFF = Backoff(initial=0.01, maximum=0.05)

pytestmark = pytest.mark.timeout(60)


async def run(svc: SandboxService, sheet: Path, tmp_path: Path, **kwargs: Any) -> RunOutcome:
    options = kwargs.pop("options", None) or RunOptions(
        customer=CONTOSO, backoff=FAST_BACKOFF, **kwargs.pop("run", {})
    )
    timing = Timing(clock=kwargs.pop("clock", None), sleep=kwargs.pop("sleep", None))
    return await run_sheet(
        sheet,
        results=tmp_path / "results.xlsx",
        connection=svc.connection(facts=kwargs.pop("facts", None), client=kwargs.pop("client", None)),
        correlation_id=svc.correlation_id,
        options=options,
        timing=timing,
        **kwargs,
    )


def every_cell(path: Path) -> str:
    book = openpyxl.load_workbook(path, read_only=True)
    try:
        return "\n".join(
            str(value)
            for sheet in book.worksheets
            for line in sheet.iter_rows(values_only=True)
            for value in line
            if value is not None
        )
    finally:
        book.close()


def assert_agrees_with_sandbox(svc: SandboxService, rows: list[dict[str, str]]) -> None:
    for result in rows:
        if result["status"] == "created":
            held = svc.sandbox.store.user_by_upn(CONTOSO, result["userPrincipalName"])
            assert held is not None and result["userId"] == held["id"]
            assert result["requestId"]


def created_once(svc: SandboxService, upns: list[str]) -> None:
    users = svc.sandbox.store.users(CONTOSO)
    for upn in upns:
        assert sum(u["userPrincipalName"].casefold() == upn.casefold() for u in users) == 1, upn


# ---------------------------------------------------------------------------------------------------------------


async def test_happy_path_results_agree_with_the_sandbox(tmp_path: Path) -> None:
    sheet = write_sheet(
        tmp_path / "hires.csv",
        [
            person(1),
            person(2, firstName="  Zoë ", displayName=" Zoë Müller ", usageLocation="de"),
            person(
                3,
                "contoso.co.uk",
                firstName="愛子",
                lastName="田中",
                displayName="田中 愛子",
                usageLocation="jp",
            ),
            person(4, usageLocation="NA", lastName="000123"),
            # Already in the tenant: skipped with its id, never sent.
            ["jane.doe@contoso.com", "Jane", "Doe", "Jane Doe", "US", "An0ther!Passw0rd"],
        ],
    )
    async with sandbox_service() as svc:
        outcome = await run(svc, sheet, tmp_path)

        assert outcome.exit_code == 0 and not outcome.interrupted
        assert outcome.counts == {"created": 4, "restored": 0, "partial": 0, "skipped": 1, "invalid": 0, "failed": 0, "pending": 0}
        assert svc.sandbox.stats.creations == 4
        rows = results_rows(outcome.results_path)
        assert [r["row"] for r in rows] == ["2", "3", "4", "5", "6"]
        assert_agrees_with_sandbox(svc, rows)
        held = {u["userPrincipalName"]: u for u in svc.sandbox.store.users(CONTOSO)}
        # As typed, trimmed, usage location upper-cased.
        assert held["new.hire2@contoso.com"]["firstName"] == "Zoë"
        assert held["new.hire2@contoso.com"]["displayName"] == "Zoë Müller"
        assert held["new.hire2@contoso.com"]["usageLocation"] == "DE"
        assert held["new.hire3@contoso.co.uk"]["displayName"] == "田中 愛子"
        assert held["new.hire3@contoso.co.uk"]["usageLocation"] == "JP"
        assert held["new.hire4@contoso.com"]["usageLocation"] == "NA"
        assert held["new.hire4@contoso.com"]["lastName"] == "000123"
        # The workbook shows each row's fields as they were sent.
        assert rows[1]["displayName"] == "Zoë Müller" and rows[1]["usageLocation"] == "DE"
        jane = rows[4]
        assert jane["status"] == "skipped" and jane["userId"] == held["jane.doe@contoso.com"]["id"]
        assert jane["requestId"] == ""
        # The workbook says what ran, and never holds a password.
        summary = summary_items(outcome.results_path)
        assert summary["correlation id"] == svc.correlation_id
        assert float(summary["rate settled at (users/s)"]) > 0
        text = every_cell(outcome.results_path)
        for line in sheet.read_text(encoding="utf-8").splitlines()[1:]:
            assert line.split(",")[-1] not in text


async def test_every_refusal_is_a_row_with_a_reason(tmp_path: Path) -> None:
    sheet = write_sheet(
        tmp_path / "hires.csv",
        [
            person(1),
            person(2, "fabrikam.com"),  # federated: invalid, never sent
            person(3, password="welcome2026"),  # weak: invalid, never sent
            person(4, "example.org"),  # validation is told this domain exists; the service refuses it
            person(5),  # someone creates this user between validation and sending
            person(1),  # a duplicate of row 2 in the file
        ],
    )

    class Lying:
        """Facts that claim a domain the tenant lacks, then create a user behind the run's back."""

        def __init__(self, svc: SandboxService) -> None:
            self.svc = svc

        async def customer_facts(self, customer_id: str) -> CustomerFacts:
            facts = await self.svc.facts().customer_facts(customer_id)
            domains = dict(facts.domains) | {"example.org": Domain("example.org", "Managed")}
            user = UserRow(
                row=0,
                userPrincipalName="new.hire5@contoso.com",
                displayName="Someone Else",
                usageLocation="US",
                password="0ther!Passw0rd",
            )
            await self.svc.client.create_user(customer_id, user, request_id=str(uuid.uuid4()))
            return CustomerFacts(customer_id, domains, dict(facts.existing_users or {}))

    async with sandbox_service() as svc:
        outcome = await run(svc, sheet, tmp_path, facts=Lying(svc))
        rows = {r["row"]: r for r in results_rows(outcome.results_path)}
        assert outcome.exit_code == 1
        assert rows["2"]["status"] == "created"
        assert rows["3"]["status"] == "invalid" and "domain.federated" in rows["3"]["problems"]
        assert rows["4"]["status"] == "invalid" and "password.weak" in rows["4"]["problems"]
        assert rows["7"]["status"] == "invalid" and "upn.duplicate" in rows["7"]["problems"]
        for invalid in ("3", "4", "7"):
            assert rows[invalid]["requestId"] == "" and rows[invalid]["userId"] == ""
        # The service's own refusal: its status, code and words.
        assert rows["5"]["status"] == "failed" and rows["5"]["problems"].startswith("api.400:")
        assert "90003" in rows["5"]["problems"] and rows["5"]["requestId"]
        # Appeared since validation: not ours, so skipped, with the id the tenant has.
        someone = svc.sandbox.store.user_by_upn(CONTOSO, "new.hire5@contoso.com")
        assert someone is not None and someone["displayName"] == "Someone Else"
        assert rows["6"]["status"] == "skipped" and rows["6"]["userId"] == someone["id"]
        assert "user.exists" in rows["6"]["problems"]
        # Only the rows validation let through reached the service: 1, example.org, new.hire5 (+ the one made behind our back).
        assert svc.sandbox.stats.creations == 2 and svc.sandbox.stats.refused == 2
        for upn in ("new.hire2@fabrikam.com", "new.hire3@contoso.com", "new.hire4@example.org"):
            assert svc.sandbox.store.user_by_upn(CONTOSO, upn) is None
        assert_agrees_with_sandbox(svc, list(rows.values()))


async def test_a_429_storm_pauses_and_every_user_is_created_once(tmp_path: Path) -> None:
    time = FakeTime(1000.0)
    upns = [f"new.hire{n}@contoso.com" for n in range(1, 13)]
    sheet = write_sheet(tmp_path / "hires.csv", [person(n) for n in range(1, 13)])
    async with sandbox_service(SandboxOptions(rate_limit=(5, 1.0)), clock=time.clock) as svc:
        outcome = await run(
            svc, sheet, tmp_path, run={"rate": math.inf, "concurrency": 4}, clock=time.clock, sleep=time.sleep
        )
        assert outcome.exit_code == 0 and outcome.counts["created"] == 12
        assert svc.sandbox.stats.throttled > 0
        assert outcome.stats.throttled == svc.sandbox.stats.throttled
        assert 1.0 in time.slept  # the sandbox's Retry-After, honoured
        assert time.now - 1000.0 >= 2.0  # 12 creations at 5 a second need at least two full pauses
        created_once(svc, upns)
        assert_agrees_with_sandbox(svc, results_rows(outcome.results_path))


async def test_server_errors_are_retried_until_every_user_exists_once(tmp_path: Path) -> None:
    upns = [f"new.hire{n}@contoso.com" for n in range(1, 11)]
    sheet = write_sheet(tmp_path / "hires.csv", [person(n) for n in range(1, 11)])
    async with sandbox_service(SandboxOptions(fail_rate=0.3, seed=7)) as svc:
        outcome = await run(svc, sheet, tmp_path, run={"rate": math.inf})
        assert svc.sandbox.stats.failed > 0
        assert outcome.counts["created"] == 10 and outcome.exit_code == 0
        assert outcome.stats.retries >= svc.sandbox.stats.failed
        created_once(svc, upns)
        assert_agrees_with_sandbox(svc, results_rows(outcome.results_path))


async def test_dropped_answers_are_replayed_and_each_user_is_created_once(tmp_path: Path) -> None:
    upns = [f"new.hire{n}@contoso.com" for n in range(1, 11)]
    sheet = write_sheet(tmp_path / "hires.csv", [person(n) for n in range(1, 11)])
    async with sandbox_service(SandboxOptions(drop_rate=0.4, seed=3)) as svc:
        outcome = await run(svc, sheet, tmp_path, run={"rate": math.inf})
        assert svc.sandbox.stats.dropped > 0
        assert svc.sandbox.stats.creations == 10  # a replay with the same MS-RequestId created nothing new
        # Each lost answer was asked for again under the same MS-RequestId, and the sandbox replayed it.
        assert svc.sandbox.stats.replays == svc.sandbox.stats.dropped and outcome.stats.lookups == 0
        assert outcome.counts["created"] == 10 and outcome.exit_code == 0
        created_once(svc, upns)
        assert_agrees_with_sandbox(svc, results_rows(outcome.results_path))


async def test_a_refused_token_stops_the_run_before_any_creation(tmp_path: Path, domains_file: Path) -> None:
    sheet = write_sheet(tmp_path / "hires.csv", [person(1), person(2)])
    async with sandbox_service(token="sandbox") as svc:
        async with aiohttp.ClientSession() as session:
            wrong = PartnerCenterClient(
                session,
                StaticTokens("not-the-token"),
                base_url=svc.sandbox.url,
                correlation_id=svc.correlation_id,
            )
            with pytest.raises(AuthError) as raised:
                await run(svc, sheet, tmp_path, facts=DomainsFile(domains_file), client=wrong)
        assert raised.value.exit_code == 3
        assert "not-the-token" not in raised.value.message
        assert svc.sandbox.stats.creations == 0
        assert not (tmp_path / "results.xlsx").exists()


async def test_stop_writes_what_finished_and_exits_130(tmp_path: Path) -> None:
    sheet = write_sheet(tmp_path / "hires.csv", [person(n) for n in range(1, 41)])
    async with sandbox_service() as svc:

        class StopAfterThree:
            """The client, but the run is stopped (as Ctrl-C would) once three users exist."""

            def __init__(self) -> None:
                self.job: SheetRun | None = None

            async def preflight(self, customer_id: str) -> dict[str, Any]:
                return await svc.client.preflight(customer_id)

            async def find_user_by_upn(self, customer_id: str, upn: str) -> dict[str, Any] | None:
                return await svc.client.find_user_by_upn(customer_id, upn)

            async def create_user(self, customer_id: str, user: UserRow, *, request_id: str) -> CreatedUser:
                created = await svc.client.create_user(customer_id, user, request_id=request_id)
                if svc.sandbox.stats.creations >= 3 and self.job is not None:
                    self.job.stop()
                return created

        client = StopAfterThree()
        job = SheetRun(
            sheet,
            results=tmp_path / "results.xlsx",
            connection=svc.connection(client=client),
            correlation_id=svc.correlation_id,
            options=RunOptions(customer=CONTOSO, rate=math.inf, concurrency=2),
        )
        client.job = job
        outcome = await job.run()

        assert outcome.exit_code == 130 and outcome.interrupted
        rows = results_rows(outcome.results_path)
        created = [r for r in rows if r["status"] == "created"]
        assert len(created) == svc.sandbox.stats.creations >= 3
        assert svc.sandbox.stats.creations <= 4  # the stopping request and at most one other in flight
        # One row per input row, those never reached too: listed as not sent.
        assert [int(r["row"]) for r in rows] == list(range(2, 42))
        interrupted = [r for r in rows if r["status"] != "created"]
        for result in interrupted:
            assert result["status"] == "pending" and result["problems"].startswith(
                f"{RUN_INTERRUPTED}: not sent"
            )
        assert 0 < outcome.not_reached <= len(interrupted) == 40 - len(created)
        summary = summary_items(outcome.results_path)
        assert summary["interrupted"] == "yes" and int(summary["rows not reached"]) == outcome.not_reached
        assert_agrees_with_sandbox(svc, rows)


async def test_generated_passwords_are_saved_privately_before_sending(tmp_path: Path) -> None:
    header = [name for name in HEADER if name != "password"]
    sheet = write_sheet(tmp_path / "hires.csv", [person(n)[:-1] for n in (1, 2)], header=header)
    passwords = tmp_path / "passwords.xlsx"
    async with sandbox_service() as svc:
        outcome = await run(
            svc,
            sheet,
            tmp_path,
            options=RunOptions(customer=CONTOSO, rate=math.inf, generated_passwords=passwords),
        )
        assert outcome.counts["created"] == 2
        assert stat.S_IMODE(os.stat(passwords).st_mode) == 0o600
        book = openpyxl.load_workbook(passwords, read_only=True)
        saved = {str(upn): str(pw) for _, upn, pw in list(book["Passwords"].iter_rows(values_only=True))[1:]}
        book.close()
        assert set(saved) == {"new.hire1@contoso.com", "new.hire2@contoso.com"}
        text = every_cell(outcome.results_path)
        assert all(pw not in text for pw in saved.values())
        assert_agrees_with_sandbox(svc, results_rows(outcome.results_path))


# ---------------------------------------------------------------------------------------------------------------
# whatever goes wrong once sending has begun, the results workbook is written


class TokensThatFail:
    """A token provider (as MSAL's) that fails from its `fail_from`-th call on, `times` times, then recovers."""

    def __init__(self, error: Exception, *, fail_from: int, times: int = 1_000_000) -> None:
        self.error, self.fail_from, self.times = error, fail_from, times
        self.calls = 0

    async def token(self, audience: Any, tenant: str | None = None, *, force_refresh: bool = False) -> str:
        self.calls += 1
        if self.calls >= self.fail_from and self.times > 0:
            self.times -= 1
            raise self.error
        return "sandbox"


@asynccontextmanager
async def client_with(svc: SandboxService, tokens: TokensThatFail) -> AsyncIterator[PartnerCenterClient]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield PartnerCenterClient(
            session, tokens, base_url=svc.sandbox.url, correlation_id=svc.correlation_id
        )


async def test_a_sign_in_blip_mid_run_is_retried_and_the_run_finishes(tmp_path: Path) -> None:
    sheet = write_sheet(tmp_path / "hires.csv", [person(n) for n in range(1, 21)])
    tokens = TokensThatFail(
        ServiceUnavailable("cannot reach the sign-in service: timed out"), fail_from=8, times=2
    )
    async with sandbox_service() as svc, client_with(svc, tokens) as client:
        outcome = await run(svc, sheet, tmp_path, client=client, run={"rate": math.inf, "concurrency": 4})
        assert tokens.times == 0  # the blip happened mid-run
        assert outcome.exit_code == 0 and outcome.counts["created"] == 20
        created_once(svc, [f"new.hire{n}@contoso.com" for n in range(1, 21)])
        assert_agrees_with_sandbox(svc, results_rows(outcome.results_path))


async def test_a_sign_in_refused_mid_run_fails_its_rows_stops_the_run_and_writes_the_results(
    tmp_path: Path,
) -> None:
    sheet = write_sheet(tmp_path / "hires.csv", [person(n) for n in range(1, 21)])
    tokens = TokensThatFail(
        AuthError("the refresh token was revoked: run `bulkonboard auth login`"), fail_from=8
    )
    async with sandbox_service() as svc, client_with(svc, tokens) as client:
        outcome = await run(svc, sheet, tmp_path, client=client, run={"rate": math.inf, "concurrency": 2})

        assert outcome.exit_code == 1 and not outcome.interrupted  # rows failed; nobody interrupted it
        rows = results_rows(outcome.results_path)
        assert [int(r["row"]) for r in rows] == list(range(2, 22))
        assert_agrees_with_sandbox(svc, rows)
        created = [r for r in rows if r["status"] == "created"]
        assert len(created) == svc.sandbox.stats.creations >= 5
        failed = [r for r in rows if r["status"] == "failed"]
        pending = [r for r in rows if r["status"] == "pending"]
        assert len(failed) + len(pending) == 20 - len(created) and failed and pending
        assert all("sign-in failed mid-run" in r["problems"] and "not sent" in r["problems"] for r in failed + pending)
        assert all(r["problems"].startswith("api.401:") for r in failed)  # refused: failed; never sent: pending
        assert all(r["problems"].startswith("run.interrupted:") for r in pending)
        assert outcome.not_reached > 0
        summary = summary_items(outcome.results_path)
        assert "revoked" in summary["stopped early"] and summary["interrupted"] == "no"


class BrokenJournal(NullJournal):
    """A journal whose disk fills up after a few records."""

    def __init__(self, good: int) -> None:
        self.good = good

    async def sending(self, customer: str, upn_key: str, row: int, request_id: str) -> None:
        await asyncio.sleep(0)
        if self.good <= 0:
            raise JournalError("journal.sqlite: cannot write the journal (database or disk is full)")
        self.good -= 1


async def test_a_run_that_fails_still_writes_what_finished_then_raises(tmp_path: Path) -> None:
    sheet = write_sheet(
        tmp_path / "hires.csv",
        [person(n) for n in range(1, 13)] + [person(13, "fabrikam.com")],  # the last one is invalid
    )
    async with sandbox_service() as svc:
        with pytest.raises(OwnFailure, match="disk is full") as caught:
            await run(
                svc, sheet, tmp_path, journal=BrokenJournal(good=5), run={"rate": math.inf, "concurrency": 2}
            )

        assert isinstance(caught.value.__cause__, JournalError)  # exit 4, never the journal's own exit 2
        assert "no further row was sent" in caught.value.message and "results.xlsx" in caught.value.message
        rows = results_rows(tmp_path / "results.xlsx")
        assert [int(r["row"]) for r in rows] == list(range(2, 15))  # every row, in order
        assert_agrees_with_sandbox(svc, rows)
        created = {r["userPrincipalName"] for r in rows if r["status"] == "created"}
        assert svc.sandbox.stats.creations == 5 and created
        by_upn = {r["userPrincipalName"]: r for r in rows}
        for user in svc.sandbox.store.users(
            CONTOSO
        ):  # a request cut short by the failure may have been served
            upn = user["userPrincipalName"]
            if upn.startswith("new.hire") and upn not in created:
                assert "may exist" in by_upn[upn]["problems"]
        assert rows[-1]["status"] == "invalid" and "domain.federated" in rows[-1]["problems"]
        for result in rows[:-1]:
            if result["status"] != "created":
                assert result["status"] == "pending" and result["problems"].startswith(RUN_INTERRUPTED)
                assert "the run failed" in result["problems"] and "disk is full" in result["problems"]
        summary = summary_items(tmp_path / "results.xlsx")
        assert "disk is full" in summary["run failed"]
        assert int(summary["created"]) == len(created) and int(summary["invalid"]) == 1


async def test_after_an_abort_the_same_run_again_settles_the_abandoned_requests(tmp_path: Path) -> None:
    people = 10
    sheet = write_sheet(tmp_path / "hires.csv", [person(n) for n in range(1, people + 1)])
    upns = [f"new.hire{n}@contoso.com" for n in range(1, people + 1)]
    async with sandbox_service(SandboxOptions(latency_ms=50)) as svc:

        class AbortOnTheThird:
            """The client, but the second Ctrl-C comes as the third create leaves."""

            def __init__(self) -> None:
                self.job: SheetRun | None = None
                self.creates = 0
                self.third = ""

            async def preflight(self, customer_id: str) -> dict[str, Any]:
                return await svc.client.preflight(customer_id)

            async def find_user_by_upn(self, customer_id: str, upn: str) -> dict[str, Any] | None:
                return await svc.client.find_user_by_upn(customer_id, upn)

            async def create_user(self, customer_id: str, user: UserRow, *, request_id: str) -> CreatedUser:
                self.creates += 1
                if self.creates == 3 and self.job is not None:
                    self.third = user.userPrincipalName
                    loop = asyncio.get_running_loop()
                    loop.call_soon(self.job.stop)  # as the signal handler runs them: from the loop
                    loop.call_soon(self.job.abort)
                return await svc.client.create_user(customer_id, user, request_id=request_id)

        with open_journal(tmp_path / "j.sqlite", service=svc.sandbox.url) as journal:
            client = AbortOnTheThird()
            job = SheetRun(
                sheet,
                results=tmp_path / "aborted.xlsx",
                connection=svc.connection(client=client),
                correlation_id=svc.correlation_id,
                options=RunOptions(customer=CONTOSO, rate=math.inf, concurrency=2, backoff=FAST_BACKOFF),
                journal=journal,
            )
            client.job = job
            aborted = await job.run()
            # The third, and at most one more that its worker had already sent off (concurrency 2).
            assert aborted.exit_code == 130 and client.creates in (3, 4)
            first = results_rows(aborted.results_path)
            assert [int(r["row"]) for r in first] == list(range(2, 2 + people))
            assert_agrees_with_sandbox(svc, first)
            in_doubt = {r["userPrincipalName"]: r["requestId"] for r in first if "may exist" in r["problems"]}
            assert client.third in in_doubt  # cut short on its way out
            assert {r.upn_key: r.request_id for r in journal.rows(RowFilter(states=("sent",)))} == in_doubt

            again = await run(svc, sheet, tmp_path, journal=journal, run={"rate": math.inf})
        assert again.exit_code == 0
        created_once(svc, upns)
        final = {r["userPrincipalName"]: r for r in results_rows(again.results_path)}
        assert {upn: final[upn]["requestId"] for upn in in_doubt} == in_doubt  # settled under their own ids
        assert_agrees_with_sandbox(svc, list(final.values()))
