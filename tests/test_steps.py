"""A row as a plan of steps: a made-up step (steps_support.LedgerStep) added to the plan in a few lines runs
exactly once per row, is journaled, makes a row `partial` when refused, is retried alone by the next run, and
survives a kill -9 between two steps; a journal of the format-1 release opens, migrates and resumes.

Over real HTTP against the sandbox (embedded in-process, or standalone for the kill -9), with the real journal.
"""

from __future__ import annotations

import asyncio
import json
import math
import signal
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from bulkonboard.journal import file as journal_file
from bulkonboard.journal.store import Journal, RowFilter, open_existing, open_journal
from bulkonboard.model import Code, RowResult, Status, UserRow
from bulkonboard.sending.pipeline import Pipeline, PipelineOptions, PipelineStats, Step
from bulkonboard.sending.retry import Backoff
from bulkonboard.sheets.validation import CheckedRow

from .steps_support import LedgerStep, read_ledger
from .support import (
    CONTOSO,
    FORMAT_1_SCHEMA,
    ROOT,
    SandboxService,
    checked_row,
    clean_env,
    sandbox_service,
    standalone_sandbox,
)

pytestmark = pytest.mark.timeout(120)

FAST = PipelineOptions(rate=math.inf, backoff=Backoff(initial=0.01, maximum=0.05))


def rows(count: int, first: int = 2) -> list[CheckedRow]:
    return [checked_row(n, f"stepped{n}@contoso.com") for n in range(first, first + count)]


async def run_plan(
    svc: SandboxService, journal: Journal, checked: list[CheckedRow], steps: Sequence[Step]
) -> tuple[dict[str, RowResult], PipelineStats]:
    """One run of the plan (create, then `steps`) with the journal, as the runner would start it."""
    journal.begin_run(
        input_path="steps", input_sha256="-", customer=CONTOSO, correlation_id=str(uuid.uuid4())
    )
    results: list[RowResult] = []
    pipeline = Pipeline(
        svc.client,
        options=FAST,
        customer=CONTOSO,
        graph=svc.graph,
        tokens=svc.tokens,
        journal=journal,
        steps=steps,
    )
    stats = await pipeline.run(checked, results.append)
    journal.end_run(counts=stats.counts, exit_code=0)
    return {r.userPrincipalName.casefold(): r for r in results}, stats


def step_records(path: Path) -> dict[str, tuple[str, str]]:
    """The journal's `steps` table as the file holds it: upn -> (state, request id)."""
    with sqlite3.connect(path) as connection:
        found = connection.execute("SELECT upn_key, step, state, request_id FROM steps").fetchall()
    assert all(step == "stamp" for _, step, _, _ in found)
    return {upn: (state, request_id) for upn, _, state, request_id in found}


def stamps(ledger: Path) -> dict[str, list[str]]:
    """upn -> the request ids that stamped it (exactly once: one each)."""
    found: dict[str, list[str]] = {}
    for line in read_ledger(ledger):
        found.setdefault(line["upn"], []).append(line["request_id"])
    return found


async def test_a_made_up_step_runs_exactly_once_per_row_and_is_journaled(tmp_path: Path) -> None:
    ledger, path = tmp_path / "ledger.jsonl", tmp_path / "j.sqlite"
    step = LedgerStep(ledger)  # the whole of adding a step to the plan: this, and `steps=[step]`
    async with sandbox_service() as svc:
        with open_journal(path, service=svc.sandbox.url) as journal:
            first, stats = await run_plan(svc, journal, rows(5), [step])
            again, rerun = await run_plan(svc, journal, rows(5), [step])
        held = svc.held()

    assert {r.status for r in first.values()} == {Status.CREATED} and stats.step_requests == 5
    stamped = stamps(ledger)
    assert sorted(stamped) == sorted(first) and all(len(ids) == 1 for ids in stamped.values())
    assert all(line["user_id"] == held[line["upn"]] for line in read_ledger(ledger))  # the id create got
    records = step_records(path)
    assert records == {upn: ("done", ids[0]) for upn, ids in stamped.items()}
    # The next run of the same journal: nothing left to do, nothing sent.
    assert {r.status for r in again.values()} == {Status.SKIPPED}
    assert rerun.requests == 0 and rerun.step_requests == 0 and stamps(ledger) == stamped


async def test_a_refused_step_makes_its_row_partial_and_the_next_run_retries_only_that_step(
    tmp_path: Path,
) -> None:
    ledger, path = tmp_path / "ledger.jsonl", tmp_path / "j.sqlite"
    refused = "stepped3@contoso.com"
    async with sandbox_service() as svc:
        with open_journal(path, service=svc.sandbox.url) as journal:
            first, _ = await run_plan(
                svc, journal, rows(3), [LedgerStep(ledger, refuse=frozenset({refused}))]
            )
            after_first = step_records(path)
            again, rerun = await run_plan(svc, journal, rows(3), [LedgerStep(ledger)])
        users = [u for u in svc.sandbox.store.users(CONTOSO) if u["userPrincipalName"].startswith("stepped")]

    partial = first[refused]
    assert partial.status is Status.PARTIAL and partial.userId  # the user exists
    assert [p.code for p in partial.problems] == ["stamp.failed"] and "no stamp" in partial.problems_text
    assert after_first[refused][0] == "failed"
    assert all(first[upn].status is Status.CREATED for upn in first if upn != refused)
    # The rerun: no user created again, the refused stamp sent (afresh), the others left alone.
    assert rerun.requests == 0 and rerun.step_requests == 1
    assert again[refused].status is Status.SKIPPED and again[refused].userId == partial.userId
    assert {upn: len(ids) for upn, ids in stamps(ledger).items()} == dict.fromkeys(first, 1)
    assert step_records(path)[refused] == ("done", stamps(ledger)[refused][0]) != after_first[refused]
    assert len(users) == 3


async def test_a_lost_step_answer_is_settled_by_its_reconcile_and_never_applied_twice(tmp_path: Path) -> None:
    ledger, path = tmp_path / "ledger.jsonl", tmp_path / "j.sqlite"
    lost = "stepped2@contoso.com"
    async with sandbox_service() as svc:
        with open_journal(path, service=svc.sandbox.url) as journal:
            results, stats = await run_plan(
                svc, journal, rows(2), [LedgerStep(ledger, lose_answer=frozenset({lost}))]
            )
    # The retry carried the same request id: the ledger (like the service) did not apply it twice.
    assert results[lost].status is Status.CREATED and stats.step_requests == 3
    assert {upn: len(ids) for upn, ids in stamps(ledger).items()} == dict.fromkeys(results, 1)
    assert step_records(path)[lost] == ("done", stamps(ledger)[lost][0])


async def test_abort_while_a_step_is_in_flight_leaves_it_to_the_next_run_which_settles_it(
    tmp_path: Path,
) -> None:
    """abort() cuts the step's request short after it made its stamp: the row says so (`partial`, not finished,
    the user kept), the record stays "sent", and the next run's reconcile finds the stamp: never made twice."""
    ledger, path = tmp_path / "ledger.jsonl", tmp_path / "j.sqlite"
    hung = "stepped2@contoso.com"
    step = LedgerStep(ledger, hang=("after", hung))
    async with sandbox_service() as svc:
        with open_journal(path, service=svc.sandbox.url) as journal:
            journal.begin_run(input_path="s", input_sha256="-", customer=CONTOSO, correlation_id="c")
            results: list[RowResult] = []
            pipeline = Pipeline(
                svc.client, options=FAST, customer=CONTOSO, graph=svc.graph, tokens=svc.tokens, journal=journal,
                steps=[step],
            )  # fmt: skip
            running = asyncio.ensure_future(pipeline.run(rows(1), results.append))
            await step.reached.wait()
            pipeline.abort()
            await running
            journal.end_run(counts=None, exit_code=130)
            in_flight = step_records(path)[hung]
            again, rerun = await run_plan(svc, journal, rows(1), [LedgerStep(ledger)])

    [stopped] = results
    assert stopped.status is Status.PARTIAL and stopped.userId
    assert [p.code for p in stopped.problems] == [
        Code.RUN_INTERRUPTED
    ] and "stamp not finished" in stopped.problems_text
    assert in_flight[0] == "sent"
    assert again[hung].status is Status.SKIPPED and rerun.requests == 0 and rerun.step_requests == 0
    assert stamps(ledger) == {hung: [in_flight[1]]} and step_records(path)[hung] == ("done", in_flight[1])


async def test_forgetting_a_row_forgets_its_steps(tmp_path: Path) -> None:
    ledger, path = tmp_path / "ledger.jsonl", tmp_path / "j.sqlite"
    async with sandbox_service() as svc:
        with open_journal(path, service=svc.sandbox.url) as journal:
            await run_plan(svc, journal, rows(2), [LedgerStep(ledger)])
            assert journal.forget(RowFilter(upns=("stepped2@contoso.com",))) == 1
            assert journal.prior_steps(CONTOSO, "stepped2@contoso.com") == {}
            assert set(journal.prior_steps(CONTOSO, "stepped3@contoso.com")) == {"stamp"}
    assert set(step_records(path)) == {"stepped3@contoso.com"}


# -- kill -9 between two steps of a row, in a process of its own


def stepped_users(listed: list[dict[str, Any]]) -> dict[str, str]:
    """This test's users in the sandbox (it holds others from its data file): UPN -> id, each UPN once."""
    found = [
        (u["userPrincipalName"].casefold(), u["id"])
        for u in listed
        if u["userPrincipalName"].startswith("stepped")
    ]
    assert len(found) == len(dict(found))
    return dict(found)


def child(url: str, journal: Path, ledger: Path, count: int, *hang: str) -> list[str]:
    return [sys.executable, "-m", "tests.steps_child", url, str(journal), str(ledger), str(count), *hang]


@pytest.mark.parametrize("moment", ["before", "after"])
def test_a_kill_9_between_create_and_the_next_step_resumes_at_that_step_exactly_once(
    tmp_path: Path, moment: str
) -> None:
    """Killed while the second step of a row is in flight (its record "sent" is durable): before the step's
    effect, the rerun sends it again with the same request id; after it (the answer lost), the rerun's reconcile
    finds it done. Either way: one user, one stamp, and the create never sent again."""
    ledger, path = tmp_path / "ledger.jsonl", tmp_path / "j.sqlite"
    hung = "stepped4@contoso.com"
    with standalone_sandbox() as sandbox:
        killed = subprocess.Popen(
            child(sandbox.url, path, ledger, 4, moment, hung), cwd=ROOT, env=clean_env(),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert killed.stdout is not None
            said = killed.stdout.readline()  # blocks until the step of `hung` is in flight
            assert said == "reached\n", said + (killed.stderr.read() if killed.stderr else "")
            killed.send_signal(signal.SIGKILL)
        finally:
            if killed.poll() is None:
                killed.kill()
            killed.communicate(timeout=30)
        assert killed.returncode == -signal.SIGKILL
        left = step_records(path)
        with open_existing(path) as journal:
            created_then = {r.upn_key: r.state for r in journal.rows()}
        users_then = stepped_users(sandbox.users())
        stamped_then = stamps(ledger)

        rerun = subprocess.run(
            child(sandbox.url, path, ledger, 4),
            cwd=ROOT,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert rerun.returncode == 0 and "Traceback" not in rerun.stderr, rerun.stderr
        report: dict[str, Any] = json.loads(rerun.stdout.splitlines()[-1])
        users = stepped_users(sandbox.users())

    assert left[hung][0] == "sent" and created_then[hung] == "created"  # killed between the two steps
    # A create left "sent" by the kill (its answer came, its lazy "created" record had not been committed yet) is
    # sent again with its same request id and answered by replay: no user is created again either way.
    in_doubt = {upn for upn, state in created_then.items() if state == "sent"}
    assert report["requests"] == len(in_doubt)
    assert (hung in stamped_then) is (moment == "after")
    # Sent again: the stamps not made when the kill came (the hung row's "before"; another row's step may have
    # been on its way too); a stamp made whose answer was lost is found by reconcile, not sent.
    assert report["step_requests"] == len(set(users_then) - set(stamped_then)) >= (moment == "before")
    assert {row["upn"].casefold(): row["status"] for row in report["rows"]} == {
        upn: "created" if upn in in_doubt else "skipped" for upn in created_then
    }
    stamped = stamps(ledger)
    assert len(users) == 4 and users == users_then  # each user once, none created by the rerun
    assert sorted(stamped) == sorted(users)
    assert all(len(ids) == 1 for ids in stamped.values())
    assert stamped[hung] == [left[hung][1]]  # the request id recorded before the kill
    assert step_records(path)[hung] == ("done", left[hung][1])


# -- a journal of the format-1 release




def format_1_journal(path: Path, service: str, records: list[tuple[Any, ...]]) -> None:
    """A journal as the format-1 release left it: its tables, its meta, one run killed mid-way, `records` as
    (upn, state, request_id, user_id)."""
    with sqlite3.connect(path) as connection:
        connection.execute(f"PRAGMA application_id = {journal_file.APPLICATION_ID}")
        connection.execute("PRAGMA journal_mode = WAL")
        connection.executescript(FORMAT_1_SCHEMA)
        connection.executemany(
            "INSERT INTO meta VALUES (?, ?)",
            [
                ("format", journal_file.FORMAT),
                ("version", "1"),
                ("service", service),
                ("created", "2026-11-30"),
            ],
        )
        connection.execute(
            "INSERT INTO runs (id, started, input_path, input_sha256, customer, correlation_id, pid, host) "
            "VALUES (1, '2026-11-30T08:00:00+00:00', 'hires.csv', '-', ?, 'c', 1, 'h')",
            (CONTOSO,),
        )
        connection.executemany(
            "INSERT INTO rows (customer, upn_key, upn, row, state, request_id, user_id, run_id, sent_at, created_at,"
            " updated_at) VALUES (?, ?, ?, 2, ?, ?, ?, 1, '2026-11-30T08:00:01+00:00',"
            " CASE WHEN ?4 = 'created' THEN '2026-11-30T08:00:02+00:00' END, '2026-11-30T08:00:02+00:00')",
            [(CONTOSO.casefold(), upn, upn, state, rid, uid) for upn, state, rid, uid in records],
        )
    path.chmod(0o600)


def user(n: int) -> UserRow:
    return checked_row(n, f"stepped{n}@contoso.com").user


async def test_a_format_1_journal_opens_migrates_and_resumes(tmp_path: Path) -> None:
    """Format 1 (the last release): a row left `sent` by a run killed with its answer lost is settled with the
    SAME request id (one user); a `created` row is skipped, never sent; both then get the plan's new step."""
    path, ledger = tmp_path / "old.sqlite", tmp_path / "ledger.jsonl"
    in_doubt, created = str(uuid.uuid4()), str(uuid.uuid4())
    async with sandbox_service() as svc:
        # What the old run's requests did in the tenant before it was killed.
        await svc.client.create_user(CONTOSO, user(2), request_id=in_doubt)
        earlier = await svc.client.create_user(CONTOSO, user(3), request_id=created)
        format_1_journal(
            path,
            svc.sandbox.url,
            [
                ("stepped2@contoso.com", "sent", in_doubt, None),
                ("stepped3@contoso.com", "created", created, earlier.id),
            ],
        )
        with open_journal(path, service=svc.sandbox.url) as journal:
            results, stats = await run_plan(svc, journal, rows(2), [LedgerStep(ledger)])
            kept = {r.upn_key: (r.state, r.request_id) for r in journal.rows()}
        held = svc.held()

    settled, skipped = results["stepped2@contoso.com"], results["stepped3@contoso.com"]
    assert settled.status is Status.CREATED and settled.requestId == in_doubt
    assert skipped.status is Status.SKIPPED and skipped.userId == earlier.id and skipped.requestId == created
    assert stats.requests == 1  # only the row in doubt was sent again
    assert (
        len([u for u in held if u.startswith("stepped")]) == 2
        and held["stepped2@contoso.com"] == settled.userId
    )
    assert kept == {
        "stepped2@contoso.com": ("created", in_doubt),
        "stepped3@contoso.com": ("created", created),
    }
    assert {upn: len(ids) for upn, ids in stamps(ledger).items()} == {
        "stepped2@contoso.com": 1,
        "stepped3@contoso.com": 1,
    }
    with sqlite3.connect(path) as connection:
        assert dict(connection.execute("SELECT key, value FROM meta").fetchall())["version"] == "2"
    with open_existing(path) as reopened:  # and it opens as what it now is
        assert len(reopened.runs()) == 2


def test_a_format_1_journal_read_by_journal_show_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    format_1_journal(
        path, "https://api.partnercenter.microsoft.com", [("a@contoso.com", "created", "r1", "id-a")]
    )
    with open_existing(path) as journal:
        assert [(r.upn, r.state, r.user_id) for r in journal.rows()] == [("a@contoso.com", "created", "id-a")]
        assert journal.prior_steps(CONTOSO, "a@contoso.com") == {}
