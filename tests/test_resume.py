"""Exactly once, whatever happens: runs with a journal against the sandbox, with faults, crashes and reruns.

The sandbox is the judge: what it holds is what exists. In-process tests use the real client, SheetRun and the
real journal (a fake clock shared with the sandbox's rate window, so a Retry-After costs no real second). The
kill -9 tests run the sandbox and the CLI as separate processes and kill the CLI with SIGKILL at moments detected
by polling the sandbox's users, then run the same command again.
"""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bulkonboard.app.runner import RunOptions, RunOutcome, SheetRun, Timing
from bulkonboard.journal.store import Journal, RowFilter, open_existing, open_journal
from bulkonboard.model import UserRow
from bulkonboard.sandbox import SandboxOptions
from bulkonboard.sandbox.data import DomainData
from bulkonboard.sending.retry import Backoff
from bulkonboard.service.partnercenter import (
    CreatedUser,
)
from bulkonboard.sheets.facts import CustomerFacts, Domain, DomainsFile, FactsSource
from bulkonboard.workbook.writers import read_passwords

from .support import (
    CONTOSO,
    HEADER,
    ROOT,
    FakeTime,
    SandboxService,
    StandaloneSandbox,
    person,
    results_rows,
    sandbox_service,
    write_sheet,
)
from .support import standalone_sandbox as start_standalone_sandbox

FAST_BACKOFF = Backoff(initial=0.05, maximum=0.2)

pytestmark = pytest.mark.timeout(120)


async def run_with_journal(
    svc: SandboxService,
    sheet: Path,
    journal: Journal,
    results: Path,
    *,
    facts: FactsSource | None = None,
    client: Any = None,
    clock: FakeTime | None = None,
    **options: Any,
) -> RunOutcome:
    run_options = RunOptions(customer=CONTOSO, rate=math.inf, backoff=FAST_BACKOFF, **options)
    timing = Timing(clock=clock.clock, sleep=clock.sleep) if clock is not None else None
    return await SheetRun(
        sheet,
        results=results,
        connection=svc.connection(facts=facts, client=client),
        correlation_id=str(uuid.uuid4()),
        options=run_options,
        journal=journal,
        timing=timing,
    ).run()


def assert_results_agree_with_the_service(rows: list[dict[str, str]], held: dict[str, str]) -> None:
    """created / skipped rows carry the id the service holds; a failed row's user does not exist."""
    for row in rows:
        key = row["userPrincipalName"].casefold()
        if row["status"] in ("created", "skipped"):
            assert row["userId"] == held.get(key), row
        elif row["status"] == "failed":
            assert key not in held, row


def assert_journal_agrees_with_the_service(journal_path: Path, held: dict[str, str]) -> None:
    with open_existing(journal_path) as journal:
        for record in journal.rows():
            if record.state == "created":
                assert held.get(record.upn_key) == record.user_id, record
            elif record.state in ("failed", "pending"):
                assert record.upn_key not in held, record
            assert record.state != "skipped", record  # only this test creates users


# ---------------------------------------------------------------------------------------------------------------
# (a) faults together


async def test_throttling_outages_and_lost_answers_together_end_with_each_user_once(tmp_path: Path) -> None:
    fake = FakeTime(1000.0)
    people = list(range(1, 301))
    sheet = write_sheet(
        tmp_path / "hires.csv",
        [person(n) for n in people]
        + [
            person(900, "fabrikam.com"),
            ["jane.doe@contoso.com", "Jane", "Doe", "Jane Doe", "US", "An0ther!Pass"],
        ],
    )
    upns = {f"new.hire{n}@contoso.com" for n in people}
    options = SandboxOptions(seed=11, fail_rate=0.3, drop_rate=0.2, rate_limit=(25, 1.0))
    journal_path = tmp_path / "journal.sqlite"
    async with sandbox_service(options, clock=fake.clock) as svc:
        outcomes = []
        for attempt in range(1, 9):
            with open_journal(journal_path, service=svc.sandbox.url) as journal:
                results = tmp_path / f"results-{attempt}.xlsx"
                outcome = await run_with_journal(
                    svc, sheet, journal, results, clock=fake, attempts=2, concurrency=16
                )
            outcomes.append(outcome)
            rows = results_rows(results)
            held = svc.held()
            assert [r["row"] for r in rows] == [str(n) for n in range(2, 2 + len(people) + 2)]  # none lost
            assert_results_agree_with_the_service(rows, held)
            assert_journal_agrees_with_the_service(journal_path, held)
            if outcome.counts["failed"] == 0:
                break
        stats = svc.sandbox.stats
        first = outcomes[0]
        # The faults really happened, and the first run already finished most rows.
        assert stats.throttled > 0 and stats.failed > 0 and stats.dropped > 0
        assert first.counts["failed"] > 0 and first.counts["created"] > 250
        final = rows
        assert outcome.exit_code == 1  # the federated row stays invalid
        statuses = {r["userPrincipalName"].casefold(): r["status"] for r in final}
        assert statuses.pop("new.hire900@fabrikam.com") == "invalid"
        assert statuses.pop("jane.doe@contoso.com") == "skipped"
        assert set(statuses) == upns and set(statuses.values()) <= {"created", "skipped"}
        if len(outcomes) > 1:
            earlier = [r for r in final if r["status"] == "skipped" and r["userPrincipalName"] in upns]
            assert earlier and all("created by an earlier run" in r["problems"] for r in earlier)
        # Every person once; nothing sent for a user that already existed (no duplicate refusal at all).
        assert upns <= set(svc.held()) and stats.creations == len(upns)
        assert stats.refused == 0
        assert_journal_agrees_with_the_service(journal_path, svc.held())
        with open_existing(journal_path) as journal:
            assert journal.count_rows(RowFilter(states=("created",))) == {"created": len(upns)}
            runs = journal.runs()
        assert [run.exit_code for run in runs] == [o.exit_code for o in outcomes]
        assert all(run.finished and run.counts for run in runs)


# ---------------------------------------------------------------------------------------------------------------
# nightly runs over a growing sheet


@pytest.mark.parametrize("facts_from", ["service", "domains file"])
async def test_a_later_sheet_creates_only_the_new_people(
    tmp_path: Path, facts_from: str, domains_file: Path
) -> None:
    """With the service's facts, validation finds the earlier users in the tenant and the journal names them as
    ours; with a domains file (no user list), the journal alone keeps them from being sent again."""
    today = write_sheet(tmp_path / "monday.csv", [person(n) for n in range(1, 5)])
    tomorrow = write_sheet(tmp_path / "tuesday.csv", [person(n) for n in (3, 1, 5, 2, 4, 6)])
    journal_path = tmp_path / "journal.sqlite"
    async with sandbox_service() as svc:
        facts = (lambda: DomainsFile(domains_file)) if facts_from == "domains file" else svc.facts
        with open_journal(journal_path, service=svc.sandbox.url) as journal:
            first = await run_with_journal(svc, today, journal, tmp_path / "monday.xlsx", facts=facts())
        with open_journal(journal_path, service=svc.sandbox.url) as journal:
            second = await run_with_journal(svc, tomorrow, journal, tmp_path / "tuesday.xlsx", facts=facts())
        held = svc.held()
        assert first.counts["created"] == 4 and second.counts == {
            "created": 2,
            "restored": 0,
            "partial": 0,
            "skipped": 4,
            "invalid": 0,
            "failed": 0,
            "pending": 0,
        }
        assert svc.sandbox.stats.creations == 6 and svc.sandbox.stats.refused == 0  # nobody sent twice
        monday = {r["userPrincipalName"]: r for r in results_rows(tmp_path / "monday.xlsx")}
        tuesday = results_rows(tmp_path / "tuesday.xlsx")
        assert [r["userPrincipalName"] for r in tuesday] == [
            f"new.hire{n}@contoso.com" for n in (3, 1, 5, 2, 4, 6)
        ]
        today_text = datetime.now(UTC).date().isoformat()
        for row in tuesday:
            assert row["userId"] == held[row["userPrincipalName"]]
            if row["userPrincipalName"] in monday:
                assert row["status"] == "skipped"
                assert row["problems"].startswith("user.exists:")
                assert f"created by an earlier run on {today_text}" in row["problems"]
                assert (
                    row["requestId"] == monday[row["userPrincipalName"]]["requestId"]
                )  # the request that made it
            else:
                assert row["status"] == "created"
        assert_journal_agrees_with_the_service(journal_path, held)


async def test_a_refused_row_is_tried_again_and_a_created_one_never(tmp_path: Path) -> None:
    """The first night the tenant lacks a domain validation was told about; by the next night it has it."""

    class ClaimsExampleOrg:
        def __init__(self, svc: SandboxService) -> None:
            self.svc = svc

        async def customer_facts(self, customer_id: str) -> CustomerFacts:
            facts = await self.svc.facts().customer_facts(customer_id)
            domains = dict(facts.domains) | {"example.org": Domain("example.org", "Managed")}
            return CustomerFacts(customer_id, domains, dict(facts.existing_users or {}))

    sheet = write_sheet(tmp_path / "hires.csv", [person(1), person(2, "example.org"), person(3)])
    journal_path = tmp_path / "journal.sqlite"
    async with sandbox_service() as svc:
        with open_journal(journal_path, service=svc.sandbox.url) as journal:
            first = await run_with_journal(
                svc, sheet, journal, tmp_path / "first.xlsx", facts=ClaimsExampleOrg(svc)
            )
        refused = results_rows(tmp_path / "first.xlsx")[1]
        assert first.counts["failed"] == 1 and refused["status"] == "failed"
        assert refused["problems"].startswith("api.400:")

        customer = svc.sandbox.store.customer(CONTOSO)
        assert customer is not None
        customer.domains["example.org"] = DomainData("example.org", "Managed")  # the admin verified it

        with open_journal(journal_path, service=svc.sandbox.url) as journal:
            second = await run_with_journal(svc, sheet, journal, tmp_path / "second.xlsx")
        rows = results_rows(tmp_path / "second.xlsx")
        held = svc.held()
        assert second.counts == {"created": 1, "restored": 0, "partial": 0, "skipped": 2, "invalid": 0, "failed": 0, "pending": 0}
        assert [r["status"] for r in rows] == ["skipped", "created", "skipped"]
        assert rows[1]["userId"] == held["new.hire2@example.org"]
        assert rows[1]["requestId"] != refused["requestId"]  # the old request's answer was final: a new one
        assert svc.sandbox.stats.creations == 3 and svc.sandbox.stats.refused == 1  # just the first night's
        assert_journal_agrees_with_the_service(journal_path, held)


# ---------------------------------------------------------------------------------------------------------------
# a crash in-process: the journal left as kill -9 leaves it


class Killed(Exception):
    pass


class DiesAfterCreations:
    """The client, but the process dies once the sandbox holds `creations` new users: right after the sandbox
    created the last of them and before its answer is read (the worst moment)."""

    def __init__(self, svc: SandboxService, journal: Journal, creations: int) -> None:
        self.svc, self.journal, self.creations = svc, journal, creations

    async def preflight(self, customer_id: str) -> dict[str, Any]:
        return await self.svc.client.preflight(customer_id)

    async def find_user_by_upn(self, customer_id: str, upn: str) -> dict[str, Any] | None:
        return await self.svc.client.find_user_by_upn(customer_id, upn)

    async def create_user(self, customer_id: str, user: UserRow, *, request_id: str) -> CreatedUser:
        created = await self.svc.client.create_user(customer_id, user, request_id=request_id)
        if self.svc.sandbox.stats.creations >= self.creations:
            self.journal.abandon()
            raise Killed()
        return created


@pytest.mark.parametrize("creations", [1, 7, 30])
async def test_a_run_killed_in_process_is_finished_by_the_next_without_duplicates(
    tmp_path: Path, creations: int
) -> None:
    header = [name for name in HEADER if name != "password"]
    sheet = write_sheet(tmp_path / "hires.csv", [person(n)[:-1] for n in range(1, 41)], header=header)
    passwords = tmp_path / "passwords.xlsx"
    journal_path = tmp_path / "journal.sqlite"
    async with sandbox_service(SandboxOptions(latency_ms=2)) as svc:
        journal = open_journal(journal_path, service=svc.sandbox.url)
        with pytest.raises(Killed):
            await run_with_journal(
                svc,
                sheet,
                journal,
                tmp_path / "killed.xlsx",
                client=DiesAfterCreations(svc, journal, creations),
                generated_passwords=passwords,
                concurrency=8,
            )
        journal.close()
        # Requests in flight when the process died may still be served: at most one per worker.
        assert creations <= svc.sandbox.stats.creations <= creations + 8
        saved = read_passwords(passwords)  # written, all of them, before the first user was sent
        assert len(saved) == 40
        with open_existing(journal_path) as left:
            in_doubt = {r.upn_key: r.request_id for r in left.rows(RowFilter(states=("sent",)))}
        assert in_doubt  # at least the one whose answer the crash swallowed

        with open_journal(journal_path, service=svc.sandbox.url) as journal:
            outcome = await run_with_journal(
                svc, sheet, journal, tmp_path / "results.xlsx", generated_passwords=passwords, concurrency=8
            )
        assert outcome.exit_code == 0
        rows = results_rows(tmp_path / "results.xlsx")
        held = svc.held()
        assert len(rows) == 40 and {r["status"] for r in rows} <= {"created", "skipped"}
        assert_results_agree_with_the_service(rows, held)
        assert svc.sandbox.stats.creations == 40 and svc.sandbox.stats.refused == 0
        skipped = [r for r in rows if r["status"] == "skipped"]
        assert len(skipped) >= creations and all("earlier run" in r["problems"] for r in skipped)
        assert read_passwords(passwords) == saved  # never regenerated
        # Each row left in flight was settled under its own request id: found in the tenant, or replayed.
        assert {
            r["userPrincipalName"]: r["requestId"] for r in rows if r["userPrincipalName"] in in_doubt
        } == in_doubt
        assert_journal_agrees_with_the_service(journal_path, held)
        with open_existing(journal_path) as left:
            assert left.count_rows() == {"created": 40}


# ---------------------------------------------------------------------------------------------------------------
# (b) kill -9: the CLI as a process, the sandbox as another


@pytest.fixture
def standalone_sandbox(request: pytest.FixtureRequest) -> Iterator[StandaloneSandbox]:
    seed = getattr(request, "param", 0)
    faults = ("--latency-ms", "20", "--seed", str(seed), "--fail-rate", "0.05", "--drop-rate", "0.05")
    with start_standalone_sandbox(*faults) as sandbox:
        yield sandbox


PEOPLE = 200


@pytest.mark.parametrize(
    ("standalone_sandbox", "kill_after"), [(1, 5), (2, 40), (3, 120)], indirect=["standalone_sandbox"]
)
def test_a_run_killed_with_sigkill_is_finished_by_the_same_command(
    tmp_path: Path, standalone_sandbox: StandaloneSandbox, kill_after: int
) -> None:
    sandbox = standalone_sandbox
    header = [name for name in HEADER if name != "password"]
    sheet = write_sheet(tmp_path / "hires.csv", [person(n)[:-1] for n in range(1, PEOPLE + 1)], header=header)
    upns = {f"new.hire{n}@contoso.com" for n in range(1, PEOPLE + 1)}
    journal, results, passwords = (
        tmp_path / "journal.sqlite",
        tmp_path / "results.xlsx",
        tmp_path / "passwords.xlsx",
    )
    command = [
        sys.executable,
        "-m",
        "bulkonboard.cli.commands",
        "run",
        str(sheet),
        "--customer",
        CONTOSO,
        "--sandbox-url",
        sandbox.url,
        "--journal",
        str(journal),
        "--results",
        str(results),
        "--generate-passwords",
        str(passwords),
        # Slow enough that the run is still going when the kill comes, seconds after the condition is seen.
        "--rate",
        "40",
        "--quiet",
    ]
    existing = len(sandbox.users())

    def ours() -> list[dict[str, Any]]:
        return [u for u in sandbox.users() if u["userPrincipalName"].casefold() in upns]

    killed = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while len(ours()) < kill_after:
            assert killed.poll() is None, f"the run ended before it could be killed: {killed.communicate()}"
            assert time.monotonic() < deadline, "the run created too few users to be killed in time"
        killed.send_signal(signal.SIGKILL)
    finally:
        if killed.poll() is None:
            killed.kill()
        killed.communicate(timeout=30)
    assert killed.returncode == -signal.SIGKILL
    created_before = {u["userPrincipalName"].casefold(): u["id"] for u in ours()}
    assert kill_after <= len(created_before) < PEOPLE  # killed mid-run
    saved = read_passwords(passwords)  # all of them, saved before the first user was sent
    assert set(saved) == upns
    with open_existing(journal) as left:
        in_doubt = {r.upn_key: r.request_id for r in left.rows(RowFilter(states=("sent",)))}

    rerun = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert rerun.returncode == 0, rerun.stderr

    listed = sandbox.users()
    assert len(listed) == existing + PEOPLE  # each person exactly once, and nobody else
    held = {u["userPrincipalName"].casefold(): u["id"] for u in listed}
    assert len(held) == len(listed) and upns <= set(held)
    assert all(held[upn] == user_id for upn, user_id in created_before.items())  # the killed run's users kept

    rows = results_rows(results)
    assert len(rows) == PEOPLE and {r["status"] for r in rows} <= {"created", "skipped"}
    assert_results_agree_with_the_service(rows, held)
    skipped = {r["userPrincipalName"].casefold() for r in rows if r["status"] == "skipped"}
    assert set(created_before) <= skipped  # what the killed run created, named as such
    assert all("created by an earlier run" in r["problems"] for r in rows if r["status"] == "skipped")

    assert read_passwords(passwords) == saved  # never regenerated nor overwritten
    # Each row the killed run had in flight was settled under its own request id: found in the tenant, or replayed.
    assert {
        r["userPrincipalName"]: r["requestId"] for r in rows if r["userPrincipalName"] in in_doubt
    } == in_doubt
    with open_existing(journal) as left:
        assert left.count_rows() == {"created": PEOPLE}
        assert {r.upn_key: r.user_id for r in left.rows()} == {upn: held[upn] for upn in upns}
        runs = left.runs()
    assert len(runs) == 2 and runs[0].finished is None and runs[1].exit_code == 0
