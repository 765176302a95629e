"""The journal: the SQLite store itself, then its promise under crashes (property-based).

The property tests drive the REAL Pipeline and the REAL Journal against a model of Partner Center (accounts by UPN,
answers remembered by MS-RequestId, faults from a script) and crash the "process" at scripted points: the journal
is abandoned as kill -9 leaves it (everything not committed is lost) and the run is started again on the same file.
Whatever the interleaving, each person ends with at most one account, and after a final resume with exactly one,
recorded as created.
"""

from __future__ import annotations

import asyncio
import math
import os
import sqlite3
import stat
import tempfile
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulkonboard.errors import InputError
from bulkonboard.journal.store import (
    STATES,
    JournalClosed,
    JournalError,
    JournalFailure,
    RowFilter,
    open_existing,
    open_journal,
    read_meta,
)
from bulkonboard.model import Code, Problem, RowResult, Status, UserRow
from bulkonboard.sending.pipeline import RUN_INTERRUPTED, Pipeline, PipelineOptions, PriorOutcome
from bulkonboard.sending.retry import Backoff
from bulkonboard.service.partnercenter import (
    DUPLICATE_UPN_TEXT,
    CreatedUser,
    Refused,
    ServerError,
    Throttled,
    TransportError,
)
from bulkonboard.sheets.validation import CheckedRow
from tests.support import FakeTime, checked_row

CUSTOMER = "3c9a8f12-5e6b-4c1d-9a7e-2f4b8d6c1e90"
SERVICE = "https://pc.test"
PASSWORD = "Sentinel-Pa55word!q7"
URL = f"{SERVICE}/v1/customers/{CUSTOMER}/users"

pytestmark = pytest.mark.timeout(60)


def created(row: int, upn: str, user_id: str, request_id: str | None = "req") -> RowResult:
    return RowResult(
        row=row, userPrincipalName=upn, status=Status.CREATED, userId=user_id, requestId=request_id
    )


def failed(
    row: int, upn: str, request_id: str | None = "req", why: str = "HTTP 400: Invalid usage location"
) -> RowResult:
    return RowResult(
        row=row,
        userPrincipalName=upn,
        status=Status.FAILED,
        problems=(Problem("api.400", why),),
        requestId=request_id,
    )


def committed_states(path: Path) -> dict[str, tuple[str, str | None, str | None]]:
    """What another process would read from the file right now: only committed rows."""
    connection = sqlite3.connect(path)
    try:
        return {
            key: (state, request_id, user_id)
            for key, state, request_id, user_id in connection.execute(
                "SELECT upn_key, state, request_id, user_id FROM rows"
            )
        }
    finally:
        connection.close()


# ---------------------------------------------------------------------------------------------------------------
# the store


async def test_states_and_what_a_later_run_is_told(tmp_path: Path) -> None:
    with open_journal(tmp_path / "j.sqlite", service=SERVICE) as journal:
        await journal.sending(CUSTOMER, "inflight@contoso.com", 3, "req-3")
        await journal.sending(CUSTOMER, "made@contoso.com", 4, "req-4")
        journal.finished(CUSTOMER, "made@contoso.com", created(4, "Made@Contoso.com", "id-4", "req-4"))
        await journal.sending(CUSTOMER, "refused@contoso.com", 5, "req-5")
        journal.finished(CUSTOMER, "refused@contoso.com", failed(5, "refused@contoso.com", "req-5"))
        journal.flush()

        # Keys are case-folded on the way in and on the way out: customer and UPN alike.
        made = journal.prior(CUSTOMER.upper(), "MADE@contoso.COM")
        assert made is not None and made.outcome is PriorOutcome.CREATED
        assert (made.user_id, made.request_id) == ("id-4", "req-4")
        assert made.recorded_at is not None and made.recorded_at.tzinfo is not None
        inflight = journal.prior(CUSTOMER, "inflight@contoso.com")
        assert inflight is not None and inflight.outcome is PriorOutcome.IN_DOUBT
        assert inflight.request_id == "req-3"
        # Never sent, or refused for good: a later run sends afresh.
        assert journal.prior(CUSTOMER, "refused@contoso.com") is None
        assert journal.prior(CUSTOMER, "nobody@contoso.com") is None
        assert journal.prior("another-customer", "made@contoso.com") is None

        rows = {r.upn_key: r for r in journal.rows()}
        assert {key: r.state for key, r in rows.items()} == {
            "inflight@contoso.com": "sent",
            "made@contoso.com": "created",
            "refused@contoso.com": "failed",
        }
        assert rows["made@contoso.com"].upn == "Made@Contoso.com"  # as the sheet spells it
        assert rows["refused@contoso.com"].reason == "api.400: HTTP 400: Invalid usage location"
        assert rows["refused@contoso.com"].request_id == "req-5"


def test_a_journal_of_an_earlier_release_reads_its_pending_rows_as_never_sent(tmp_path: Path) -> None:
    # Earlier releases wrote `pending` (taken, not yet sent) before `sent`; none writes it now, but such a journal
    # must still open, list those rows by their state, and let the next run send them afresh.
    path = tmp_path / "j.sqlite"
    open_journal(path, service=SERVICE).close()
    connection = sqlite3.connect(path)
    with connection:
        connection.execute(
            "INSERT INTO rows (customer, upn_key, upn, row, state, run_id, updated_at) "
            "VALUES (?, 'old@contoso.com', 'old@contoso.com', 2, 'pending', NULL, '2026-11-01T00:00:00.000+00:00')",
            (CUSTOMER,),
        )
    connection.close()
    with open_journal(path, service=SERVICE) as journal:
        assert journal.prior(CUSTOMER, "old@contoso.com") is None
        assert journal.count_rows(RowFilter(states=("pending",))) == {"pending": 1}
        assert [r.state for r in journal.rows()] == ["pending"]


async def test_a_resent_request_keeps_its_first_send_time_and_a_new_one_does_not(tmp_path: Path) -> None:
    now = [datetime(2026, 11, 24, 23, 0, tzinfo=UTC)]
    with open_journal(tmp_path / "j.sqlite", service=SERVICE, clock=lambda: now[0]) as journal:
        await journal.sending(CUSTOMER, "a@contoso.com", 2, "req-1")
    # `prior` tells what earlier runs left: each step is a run of its own, on the journal reopened.
    with open_journal(tmp_path / "j.sqlite", service=SERVICE, clock=lambda: now[0]) as journal:
        now[0] = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
        await journal.sending(
            CUSTOMER, "a@contoso.com", 2, "req-1"
        )  # the same request, replayed next morning
    with open_journal(tmp_path / "j.sqlite", service=SERVICE, clock=lambda: now[0]) as journal:
        first = journal.prior(CUSTOMER, "a@contoso.com")
        now[0] = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
        await journal.sending(CUSTOMER, "a@contoso.com", 2, "req-2")  # a new request
    with open_journal(tmp_path / "j.sqlite", service=SERVICE) as journal:
        second = journal.prior(CUSTOMER, "a@contoso.com")
    assert first is not None and first.recorded_at == datetime(2026, 11, 24, 23, 0, tzinfo=UTC)
    assert second is not None and second.recorded_at == datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


async def test_sending_is_committed_before_it_returns_and_outcomes_wait_for_a_batch(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = open_journal(path, service=SERVICE, lazy_delay=3600, lazy_batch=10_000)
    try:
        await journal.sending(CUSTOMER, "a@contoso.com", 2, "req-a")
        # Another process (another connection) already sees it: the request may leave now.
        assert committed_states(path) == {"a@contoso.com": ("sent", "req-a", None)}

        journal.finished(CUSTOMER, "a@contoso.com", created(2, "a@contoso.com", "id-a", "req-a"))
        journal.finished(CUSTOMER, "b@contoso.com", failed(3, "b@contoso.com", None))
        await asyncio.sleep(0.05)
        assert committed_states(path) == {"a@contoso.com": ("sent", "req-a", None)}  # lazily queued

        # The next durable record takes everything queued before it along, in order.
        await journal.sending(CUSTOMER, "c@contoso.com", 4, "req-c")
        assert committed_states(path) == {
            "a@contoso.com": ("created", "req-a", "id-a"),
            "b@contoso.com": ("failed", None, None),
            "c@contoso.com": ("sent", "req-c", None),
        }
    finally:
        journal.close()


async def test_lazy_outcomes_are_committed_after_a_short_delay_or_a_full_batch(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with open_journal(path, service=SERVICE, lazy_delay=0.01, lazy_batch=10_000) as journal:
        journal.finished(CUSTOMER, "a@contoso.com", failed(2, "a@contoso.com", None))
        for _ in range(500):
            if committed_states(path):
                break
            await asyncio.sleep(0.01)
        assert committed_states(path) == {"a@contoso.com": ("failed", None, None)}

    path = tmp_path / "batch.sqlite"
    with open_journal(path, service=SERVICE, lazy_delay=3600, lazy_batch=5) as journal:
        for n in range(4):
            journal.finished(CUSTOMER, f"u{n}@contoso.com", failed(n, f"u{n}@contoso.com", None))
        await asyncio.sleep(0.02)
        assert committed_states(path) == {}
        journal.finished(CUSTOMER, "u4@contoso.com", failed(4, "u4@contoso.com", None))  # the fifth fills the batch
        for _ in range(500):
            if len(committed_states(path)) == 5:
                break
            await asyncio.sleep(0.01)
        assert len(committed_states(path)) == 5


async def test_concurrent_senders_share_commits(tmp_path: Path) -> None:
    with open_journal(tmp_path / "j.sqlite", service=SERVICE) as journal:
        await asyncio.gather(
            *(journal.sending(CUSTOMER, f"u{n}@contoso.com", n, f"r{n}") for n in range(300))
        )
        assert journal.stats.records == 300
        # All 300 were queued before the flusher's first turn: one commit, not 300.
        assert journal.stats.commits == 1
        assert len(journal.rows(RowFilter(states=("sent",)))) == 300


async def test_a_record_that_cannot_be_committed_stops_the_send(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with open_journal(path, service=SERVICE) as journal:
        # Sabotage from outside: the file refuses this one row (as a full disk would refuse everything).
        other = sqlite3.connect(path)
        other.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON rows WHEN NEW.upn_key = 'doomed@contoso.com' "
            "BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
        )
        other.commit()
        other.close()
        service = ModelService(mode="unique", script=[])
        pipeline = Pipeline(service, options=fast_options(1), customer=CUSTOMER, journal=journal)
        results: list[RowResult] = []
        with pytest.raises(JournalFailure, match="j.sqlite: cannot write the journal .disk says no") as caught:
            await pipeline.run([checked(2, "doomed@contoso.com")], results.append)
        assert caught.value.exit_code == 4
    assert service.sends == []  # nothing left without its record


async def test_a_lazy_batch_that_cannot_be_committed_is_logged_and_raised_by_the_next_flush(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "j.sqlite"
    with open_journal(path, service=SERVICE, lazy_delay=0.01) as journal:
        other = sqlite3.connect(path)
        other.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON rows WHEN NEW.upn_key = 'doomed@contoso.com' "
            "BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
        )
        other.commit()
        other.close()
        with caplog.at_level("ERROR", logger="bulkonboard"):
            journal.finished(CUSTOMER, "doomed@contoso.com", created(2, "doomed@contoso.com", "id-d"))
            # Nobody waits for a lazy record: the flusher commits it on its own, and fails.
            for _ in range(500):
                if caplog.records:
                    break
                await asyncio.sleep(0.01)
        (record,) = caplog.records
        assert record.name == "bulkonboard" and "disk says no" in record.getMessage()
        with pytest.raises(JournalFailure, match="j.sqlite: cannot write the journal .disk says no"):
            journal.flush()  # the end of the run hears of it: a record was lost
        journal.flush()  # said once
        assert committed_states(path) == {}


async def test_a_closed_journal_records_nothing_and_so_nothing_is_sent(tmp_path: Path) -> None:
    journal = open_journal(tmp_path / "j.sqlite", service=SERVICE)
    journal.close()
    journal.close()  # twice is fine
    with pytest.raises(JournalClosed):
        await journal.sending(CUSTOMER, "a@contoso.com", 2, "req")
    with pytest.raises(JournalClosed):
        journal.prior(CUSTOMER, "a@contoso.com")


async def test_abandoning_loses_exactly_what_was_not_committed(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = open_journal(path, service=SERVICE, lazy_delay=3600, lazy_batch=10_000)
    await journal.sending(CUSTOMER, "a@contoso.com", 2, "req-a")
    journal.finished(CUSTOMER, "a@contoso.com", created(2, "a@contoso.com", "id-a", "req-a"))
    journal.abandon()  # kill -9
    with open_journal(path, service=SERVICE) as reopened:
        prior = reopened.prior(CUSTOMER, "a@contoso.com")
    assert prior is not None and prior.outcome is PriorOutcome.IN_DOUBT and prior.request_id == "req-a"


def test_opened_outside_the_loop_used_in_one_and_closed_after_it(tmp_path: Path) -> None:
    """How a command uses it: open before asyncio.run, a run (or two) inside, close after."""
    path = tmp_path / "j.sqlite"
    journal = open_journal(path, service=SERVICE)
    try:
        for attempt in range(2):  # a new loop each time: the flusher follows

            async def one_run(n: int = attempt) -> None:
                await journal.sending(CUSTOMER, f"u{n}@contoso.com", n, f"r{n}")
                journal.finished(
                    CUSTOMER, f"u{n}@contoso.com", created(n, f"u{n}@contoso.com", f"id{n}", f"r{n}")
                )

            asyncio.run(one_run())
    finally:
        journal.close()
    assert committed_states(path) == {
        "u0@contoso.com": ("created", "r0", "id0"),
        "u1@contoso.com": ("created", "r1", "id1"),
    }


def test_wal_mode_and_only_the_owner_may_read(tmp_path: Path) -> None:
    path = tmp_path / "state" / "journals" / "svc" / "customer.sqlite"
    journal = open_journal(path, service=SERVICE)
    try:
        journal.finished(CUSTOMER, "a@contoso.com", failed(2, "a@contoso.com"))
        journal.flush()
        files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
        for file in files:
            assert file.exists(), file
            assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        connection = sqlite3.connect(path)
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        connection.close()
    finally:
        journal.close()


def test_an_existing_journal_others_could_read_is_said_but_never_chmod_ed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "j.sqlite"
    open_journal(path, service=SERVICE).close()
    os.chmod(path, 0o644)
    with caplog.at_level("WARNING", logger="bulkonboard"):
        open_journal(path, service=SERVICE).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # the owner's choice: said, not undone
    (record,) = caplog.records
    assert "readable by others (mode 0644)" in record.getMessage() and "chmod 600" in record.getMessage()


def test_indexes_older_journals_kept_on_the_hot_path_are_dropped_on_opening(tmp_path: Path) -> None:
    # Every record sets `state` and `run_id`: an index on either cost a page write per record. Journals written
    # by earlier versions had them; opening one drops them, and reads by state or run still work (by a scan).
    path = tmp_path / "j.sqlite"
    open_journal(path, service=SERVICE).close()
    connection = sqlite3.connect(path)
    connection.execute("CREATE INDEX rows_by_state ON rows (state)")
    connection.execute("CREATE INDEX rows_by_run ON rows (run_id)")
    connection.close()
    with open_journal(path, service=SERVICE) as journal:
        journal.finished(CUSTOMER, "a@contoso.com", failed(2, "a@contoso.com"))
        journal.flush()
        assert journal.count_rows(RowFilter(states=("failed",))) == {"failed": 1}
    connection = sqlite3.connect(path)
    indexes = connection.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'rows'")
    assert [name for (name,) in indexes if not name.startswith("sqlite_autoindex")] == []
    connection.close()


def test_a_journal_belongs_to_one_service(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    open_journal(path, service="http://127.0.0.1:8765/").close()
    open_journal(path, service="http://127.0.0.1:8765").close()  # a trailing slash is the same service
    with pytest.raises(JournalError, match="belongs to http://127.0.0.1:8765") as refused:
        open_journal(path, service="https://api.partnercenter.microsoft.com")
    assert isinstance(refused.value, InputError) and refused.value.exit_code == 2
    assert read_meta(path)["service"] == "http://127.0.0.1:8765"
    with open_existing(path) as journal:  # `journal show` reads any service's journal
        assert journal.service == "http://127.0.0.1:8765"


def test_what_is_not_a_journal_is_refused_with_exit_2(tmp_path: Path) -> None:
    text = tmp_path / "notes.sqlite"
    text.write_text("this is not a database, just notes about new hires\n" * 20)
    with pytest.raises(JournalError, match="not a bulkonboard journal") as refused:
        open_journal(text, service=SERVICE)
    assert refused.value.exit_code == 2

    other = tmp_path / "other.sqlite"
    connection = sqlite3.connect(other)
    connection.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    connection.execute("INSERT INTO meta VALUES ('format', 'something-else')")
    connection.commit()
    connection.close()
    with pytest.raises(JournalError, match="not a bulkonboard journal"):
        open_journal(other, service=SERVICE)

    newer = tmp_path / "newer.sqlite"
    open_journal(newer, service=SERVICE).close()
    connection = sqlite3.connect(newer)
    connection.execute("UPDATE meta SET value = '99' WHERE key = 'version'")
    connection.commit()
    connection.close()
    with pytest.raises(JournalError, match="version 99"):
        open_journal(newer, service=SERVICE)

    with pytest.raises(JournalError, match="no such journal"):
        open_existing(tmp_path / "missing.sqlite")
    assert not (tmp_path / "missing.sqlite").exists()


async def test_runs_are_recorded_with_what_journal_show_needs(tmp_path: Path) -> None:
    with open_journal(tmp_path / "j.sqlite", service=SERVICE) as journal:
        first = journal.begin_run(
            input_path="/hr/new_hires.xlsx",
            input_sha256="ab" * 32,
            customer=CUSTOMER,
            correlation_id="corr-1",
        )
        await journal.sending(CUSTOMER, "a@contoso.com", 2, "req-a")
        journal.finished(CUSTOMER, "a@contoso.com", created(2, "a@contoso.com", "id-a", "req-a"))
        journal.end_run(counts={"created": 1, "failed": 0}, exit_code=0)
        second = journal.begin_run(
            input_path="/hr/new_hires.xlsx",
            input_sha256="cd" * 32,
            customer=CUSTOMER,
            correlation_id="corr-2",
        )
        await journal.sending(CUSTOMER, "b@contoso.com", 3, "req-b")  # and then the run is killed
        runs = journal.runs()
        assert [r.id for r in runs] == [first, second]
        done, killed = runs
        assert (done.counts, done.exit_code, done.pid) == ({"created": 1, "failed": 0}, 0, os.getpid())
        assert (
            done.finished is not None and done.input_sha256 == "ab" * 32 and done.correlation_id == "corr-1"
        )
        assert killed.finished is None and killed.counts is None
        assert [r.upn_key for r in journal.rows(RowFilter(run_id=second))] == ["b@contoso.com"]
        assert [r.id for r in journal.runs(customer=CUSTOMER.upper())] == [first, second]
        assert journal.runs(customer="someone-else") == []


async def test_rows_per_state_of_every_run_in_one_scan_match_each_runs_own_count(tmp_path: Path) -> None:
    with open_journal(tmp_path / "j.sqlite", service=SERVICE) as journal:
        runs = []
        for n, upns in enumerate([("a", "b", "c"), ("d",), ()]):
            runs.append(journal.begin_run(input_path="/hr/x.csv", input_sha256="ab" * 32, customer=CUSTOMER,
                                          correlation_id=f"c{n}"))  # fmt: skip
            for row, name in enumerate(upns, start=2):
                await journal.sending(CUSTOMER, f"{name}@contoso.com", row, f"req-{name}")
                if name != "b":  # b stays in doubt
                    upn = f"{name}@contoso.com"
                    journal.finished(CUSTOMER, upn, created(row, upn, f"id-{name}", f"req-{name}"))
            journal.end_run(counts=None, exit_code=0)
        by_run = journal.count_rows_by_run()
        assert by_run == {runs[0]: {"created": 2, "sent": 1}, runs[1]: {"created": 1}}
        for run in runs:
            assert by_run.get(run, {}) == journal.count_rows(RowFilter(run_id=run))


async def test_prior_states_read_in_bulk_tell_what_earlier_runs_left_and_what_was_forgotten(tmp_path: Path) -> None:
    """`prior` loads a customer's rows once per run: the next run sees this run's writes, and a forget is seen at
    once (a run asks about each row once, before writing it: a UPN appears once in a sheet)."""
    path = tmp_path / "j.sqlite"
    with open_journal(path, service=SERVICE) as journal:
        await journal.sending(CUSTOMER, "old@contoso.com", 2, "req-old")
        journal.finished(CUSTOMER, "old@contoso.com", created(2, "old@contoso.com", "id-old", "req-old"))
        journal.flush()
    with open_journal(path, service=SERVICE) as journal:
        journal.begin_run(input_path="in.csv", input_sha256="0" * 64, customer=CUSTOMER, correlation_id="c1")
        old = journal.prior(CUSTOMER, "old@contoso.com")  # loads the customer's rows
        assert old is not None and old.outcome is PriorOutcome.CREATED and old.user_id == "id-old"
        assert journal.prior(CUSTOMER, "new@contoso.com") is None
        await journal.sending(CUSTOMER, "new@contoso.com", 3, "req-new")  # written after the load
        journal.end_run(counts=None, exit_code=130)
        journal.begin_run(input_path="in.csv", input_sha256="0" * 64, customer=CUSTOMER, correlation_id="c2")
        new = journal.prior(CUSTOMER, "new@contoso.com")
        assert new is not None and new.outcome is PriorOutcome.IN_DOUBT and new.request_id == "req-new"
        journal.finished(CUSTOMER, "new@contoso.com", created(3, "new@contoso.com", "id-new", "req-new"))
        journal.end_run(counts=None, exit_code=0)
        journal.begin_run(input_path="in.csv", input_sha256="0" * 64, customer=CUSTOMER, correlation_id="c3")
        settled = journal.prior(CUSTOMER, "new@contoso.com")
        assert settled is not None and settled.outcome is PriorOutcome.CREATED and settled.user_id == "id-new"
        assert journal.forget(RowFilter(upns=("old@contoso.com",))) == 1
        assert journal.prior(CUSTOMER, "old@contoso.com") is None  # forgotten: the next run may send it again


async def test_forget_deletes_only_what_the_filter_names(tmp_path: Path) -> None:
    with open_journal(tmp_path / "j.sqlite", service=SERVICE) as journal:
        for n in range(4):
            await journal.sending(CUSTOMER, f"u{n}@contoso.com", n, f"r{n}")
        journal.finished(CUSTOMER, "u0@contoso.com", failed(0, "u0@contoso.com", "r0"))
        journal.finished(CUSTOMER, "u1@contoso.com", created(1, "u1@contoso.com", "id1", "r1"))
        with pytest.raises(ValueError, match="needs a filter"):
            journal.forget(RowFilter())
        assert journal.forget(RowFilter(states=("failed",))) == 1
        assert journal.forget(RowFilter(upns=("U2@CONTOSO.COM",))) == 1
        assert journal.forget(RowFilter(upns=("u3@contoso.com",), states=("created",))) == 0
        assert sorted(r.upn_key for r in journal.rows()) == ["u1@contoso.com", "u3@contoso.com"]
        with pytest.raises(ValueError, match="unknown state"):
            journal.rows(RowFilter(states=("deleted",)))


async def test_no_password_token_or_raw_answer_reaches_the_file(tmp_path: Path) -> None:
    """The real client against the real sandbox, which echoes the password in its create answer."""
    import aiohttp

    from bulkonboard.sandbox import Sandbox, SandboxOptions
    from bulkonboard.service.partnercenter import PartnerCenterClient, StaticTokens

    token = "Sentinel-Token-6b0c1f"
    data = Path(__file__).resolve().parent.parent / "samples" / "sandbox.toml"
    path = tmp_path / "j.sqlite"
    rows = [
        checked(2, "alice.secret@contoso.com"),
        checked(3, "bob.secret@unknown-domain.example"),  # refused by the service: its answer is kept as text
        checked(4, "jane.doe@contoso.com"),  # exists in the sample data: a duplicate refusal, then a lookup
    ]
    async with Sandbox(data=data, options=SandboxOptions(token=token)) as sandbox:
        async with aiohttp.ClientSession() as session:
            client = PartnerCenterClient(
                session, StaticTokens(token), base_url=sandbox.url, correlation_id="c"
            )
            with open_journal(path, service=sandbox.url) as journal:
                journal.begin_run(
                    input_path="in.csv", input_sha256="0" * 64, customer=CUSTOMER, correlation_id="c"
                )
                results: list[RowResult] = []
                pipeline = Pipeline(client, options=fast_options(2), customer=CUSTOMER, journal=journal)
                await pipeline.run(rows, results.append)
                journal.end_run(counts={"created": 1}, exit_code=1)
                states = {r.upn_key: r.state for r in journal.rows()}
    assert [r.status for r in results] == [Status.CREATED, Status.FAILED, Status.SKIPPED]
    assert states == {
        "alice.secret@contoso.com": "created",
        "bob.secret@unknown-domain.example": "failed",
        "jane.doe@contoso.com": "skipped",
    }
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("j.sqlite"))
    assert b"alice.secret@contoso.com" in raw  # the scan does see the file's contents
    for secret in (PASSWORD, token):
        for encoding in ("utf-8", "utf-16-le", "utf-16-be"):
            assert secret.encode(encoding) not in raw
    assert b"passwordProfile" not in raw and b'"objectType"' not in raw  # no raw answer either


# ---------------------------------------------------------------------------------------------------------------
# a model of the service, for the crash tests


class Crash(Exception):
    """The process dies here (kill -9): raised after the journal was abandoned."""


FAULTS = ("ok", "ok", "ok", "drop", "503", "429", "400")
CRASHES = (None, None, None, None, None, "before", "after", "stop")


@dataclass
class ModelService:
    """Partner Center as a model, scripted: each call takes the next (fault, crash) step; then all is well.

    mode "lenient": UPNs need not be unique, so a second create with a new request id makes a SECOND account:
        the journal alone must prevent duplicates. Final answers are replayed by request id.
    mode "unique": duplicate UPNs are refused; final answers are replayed (the sandbox's reading).
    mode "replay-refused": duplicate UPNs refused; a replayed id is processed afresh, so a replay of our own
        success is refused as a duplicate (the real service's possible reading).
    Faults: "drop" creates, then no answer comes; "503" creates nothing; "429" too; "400" is a final refusal.
    Crash: "before" the request leaves, "after" the service processed it (the answer is lost with the process),
    "stop" asks the pipeline to stop (Ctrl-C) and goes on.
    """

    mode: str
    script: list[tuple[str, str | None]]
    accounts: dict[str, list[str]] = field(default_factory=dict)
    answers: dict[str, tuple[str, str]] = field(
        default_factory=dict
    )  # request id -> ("created", id) / ("refused", "")
    sends: list[tuple[str, str]] = field(default_factory=list)
    crashed: bool = False
    on_crash: Any = None
    on_stop: Any = None
    journal_path: Path | None = None  # the journal of the run under way, read as another process would
    resent_after_created: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.steps = deque(self.script)

    async def preflight(self, customer_id: str) -> dict[str, Any]:
        return {"id": customer_id}

    def _next_step(self) -> tuple[str, str | None]:
        return self.steps.popleft() if self.steps else ("ok", None)

    def _crash(self) -> None:
        self.crashed = True
        if self.on_crash is not None:
            self.on_crash()
        raise Crash()

    async def create_user(self, customer_id: str, user: UserRow, *, request_id: str) -> CreatedUser:
        assert user.password == PASSWORD
        await asyncio.sleep(0)  # on the wire
        fault, crash = self._next_step()
        if crash == "before":
            self._crash()
        if crash == "stop" and self.on_stop is not None:
            self.on_stop()
        key = user.upn_key
        self.sends.append((key, request_id))
        if (
            self.journal_path is not None
            and committed_states(self.journal_path).get(key, ("",))[0] == "created"
        ):
            self.resent_after_created.append(key)  # a row created earlier is never sent again
        common: dict[str, Any] = dict(method="POST", url=URL, request_id=request_id)
        failure: Exception | None = None
        answer: tuple[str, str] | None = None
        remembered = self.answers.get(request_id) if self.mode != "replay-refused" else None
        if remembered is not None:
            answer = remembered
        elif fault == "429":
            failure = Throttled(**common, status=429, retry_after=1.0)
        elif fault == "503":
            failure = ServerError(**common, status=503, description="Service Unavailable")
        elif fault == "400":
            answer = ("refused", "")
        elif self.mode != "lenient" and self.accounts.get(key):
            answer = ("duplicate", "")
        else:
            user_id = str(uuid.uuid4())
            self.accounts.setdefault(key, []).append(user_id)
            answer = ("created", user_id)
        if answer is not None:
            self.answers[request_id] = answer
            if fault == "drop":
                failure = TransportError("the server closed the connection without answering", **common)
            elif answer[0] == "refused":
                failure = Refused(**common, status=400, code=800002, description="Invalid usage location")
            elif answer[0] == "duplicate":
                failure = Refused(**common, status=400, code="ObjectConflict", description=DUPLICATE_UPN_TEXT)
        if crash == "after":
            self._crash()
        if failure is not None:
            raise failure
        assert answer is not None and answer[0] == "created"
        return CreatedUser(
            id=answer[1], userPrincipalName=user.userPrincipalName, state="active", userDomainType=None
        )

    async def find_user_by_upn(self, customer_id: str, upn: str) -> dict[str, Any] | None:
        await asyncio.sleep(0)
        fault, crash = self._next_step()
        if crash in ("before", "after"):
            self._crash()
        if fault in ("503", "drop"):
            raise ServerError(
                method="GET", url=URL, request_id=None, status=503, description="Service Unavailable"
            )
        ids = self.accounts.get(upn.casefold())
        return {"id": ids[0], "userPrincipalName": upn} if ids else None


def checked(row: int, upn: str) -> CheckedRow:
    return checked_row(row, upn, customer=CUSTOMER, password=PASSWORD)


def fast_options(concurrency: int) -> PipelineOptions:
    return PipelineOptions(
        concurrency=concurrency,
        rate=math.inf,
        attempts=3,
        max_throttled=3,
        backoff=Backoff(initial=0.5, maximum=1.0),
    )


async def run_once(
    path: Path, service: ModelService, rows: list[CheckedRow], concurrency: int
) -> list[RowResult] | None:
    """One process's run: the results, or None when it was killed."""
    journal = open_journal(path, service=SERVICE)
    time = FakeTime()
    pipeline = Pipeline(
        service,
        options=fast_options(concurrency),
        customer=CUSTOMER,
        journal=journal,
        clock=time.clock,
        sleep=time.sleep,
    )
    service.crashed = False
    service.journal_path = path
    service.on_crash = journal.abandon
    service.on_stop = pipeline.stop
    results: list[RowResult] = []
    try:
        await pipeline.run(rows, results.append, total=len(rows))
    except (Crash, JournalClosed):
        assert service.crashed
        return None
    finally:
        journal.close()  # after a crash: already abandoned, nothing more is written
    return results


def check_the_file_tells_the_truth(path: Path, service: ModelService) -> dict[str, Any]:
    """What must hold after any run, killed or not, of what the next process would read."""
    with open_existing(path) as journal:
        rows = {r.upn_key: r for r in journal.rows()}
    for key, ids in service.accounts.items():
        assert len(ids) == 1, f"{key} has {len(ids)} accounts"
        record = rows.get(key)
        # The account exists: the journal must know it was sent (or created), or a rerun would create another.
        assert record is not None and record.state in ("sent", "created"), (key, record)
        if record.state == "created":
            assert record.user_id == ids[0]
    for key, record in rows.items():
        assert record.state in STATES and record.state != "skipped"  # nobody else creates users here
        if record.state in ("failed", "pending"):
            assert not service.accounts.get(key), (key, record)
        if record.state == "created":
            assert service.accounts.get(key) == [record.user_id]
    return rows


def check_the_results_tell_the_truth(
    results: list[RowResult], rows: list[CheckedRow], service: ModelService
) -> None:
    assert [r.row for r in results] == [c.user.row for c in rows]  # every row, in input order
    for result in results:
        ids = service.accounts.get(result.userPrincipalName.casefold(), [])
        if result.status in (Status.CREATED, Status.SKIPPED):
            assert ids == [result.userId]
        if result.status is Status.SKIPPED:
            assert [p.code for p in result.problems] == [Code.USER_EXISTS]
            assert "earlier run" in result.problems[0].message  # never "someone else": only we create users
        if result.status is Status.FAILED:
            codes = {p.code for p in result.problems}
            assert codes <= {"api.400", "api.429", "api.503", "api.unreachable", RUN_INTERRUPTED}, codes


steps = st.lists(st.tuples(st.sampled_from(FAULTS), st.sampled_from(CRASHES)), max_size=30)


@settings(
    max_examples=120,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    mode=st.sampled_from(["lenient", "unique", "replay-refused"]),
    people=st.integers(min_value=1, max_value=5),
    concurrency=st.integers(min_value=1, max_value=3),
    script=steps,
)
def test_any_crashes_and_faults_end_with_one_account_each_recorded_as_created(
    mode: str, people: int, concurrency: int, script: list[tuple[str, str | None]]
) -> None:
    rows = [checked(n + 2, f"Person{n}@Contoso.com") for n in range(people)]
    service = ModelService(mode=mode, script=script)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "journal.sqlite"
        runs = 0
        while service.steps and runs < 15:
            runs += 1
            results = asyncio.run(run_once(path, service, rows, concurrency))
            check_the_file_tells_the_truth(path, service)
            if results is not None:
                check_the_results_tell_the_truth(results, rows, service)

        service.steps.clear()  # the final resume: the service behaves
        final = asyncio.run(run_once(path, service, rows, concurrency))
        assert final is not None
        check_the_results_tell_the_truth(final, rows, service)
        refused = [r for r in final if r.status is Status.FAILED]
        if refused:
            # A request in flight when its process died got a final refusal: the service remembers it for that
            # request id, so the resume that replays it learns "refused" (and finds no user). Recorded as failed,
            # it is sent afresh by the next run, as a row HR fixed would be.
            assert {p.code for r in refused for p in r.problems} == {"api.400"}
            check_the_file_tells_the_truth(path, service)
            final = asyncio.run(run_once(path, service, rows, concurrency))
            assert final is not None
            check_the_results_tell_the_truth(final, rows, service)
        assert {r.status for r in final} <= {Status.CREATED, Status.SKIPPED}
        recorded = check_the_file_tells_the_truth(path, service)
        assert set(service.accounts) == {c.user.upn_key for c in rows}
        assert {key: (r.state, r.user_id) for key, r in recorded.items()} == {
            key: ("created", ids[0]) for key, ids in service.accounts.items()
        }
        assert service.resent_after_created == []


# ---------------------------------------------------------------------------------------------------------------
# the store's own promise under crashes: what a crash keeps is exactly what was committed


@dataclass(frozen=True)
class Op:
    kind: str  # sending, created, failed, flush, crash
    person: int


def apply(model: dict[str, tuple[str, str | None]], op: Op, request_ids: dict[int, str]) -> None:
    """The transition table of the journal's docstring, as the spec of the store."""
    key = f"p{op.person}@contoso.com"
    state = model.get(key)
    if op.kind == "sending":
        model[key] = ("sent", request_ids[op.person])
    elif op.kind == "created":
        model[key] = ("created", state[1] if state else None)
    elif op.kind == "failed":
        model[key] = ("failed", state[1] if state else None)


@settings(max_examples=150, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.builds(
            Op,
            kind=st.sampled_from(["sending", "created", "failed", "flush", "crash"]),
            person=st.integers(min_value=0, max_value=3),
        ),
        max_size=40,
    )
)
def test_a_crash_keeps_exactly_what_was_committed(ops: list[Op]) -> None:
    """Lazy writes are committed only by the next durable write (or a flush); a crash loses the rest."""

    async def scenario(path: Path) -> None:
        committed: dict[str, tuple[str, str | None]] = {}
        applied: dict[str, tuple[str, str | None]] = {}
        request_ids: dict[int, str] = {}
        journal = open_journal(path, service=SERVICE, lazy_delay=3600, lazy_batch=10_000)
        try:
            for op in ops:
                key = f"p{op.person}@contoso.com"
                if op.kind == "crash":
                    journal.abandon()
                    applied = dict(committed)
                    journal = open_journal(path, service=SERVICE, lazy_delay=3600, lazy_batch=10_000)
                    continue
                if op.kind == "flush":
                    journal.flush()
                    committed = dict(applied)
                    continue
                if op.kind == "sending":
                    request_ids[op.person] = f"req-{len(request_ids)}-{op.person}"
                    await journal.sending(CUSTOMER, key, op.person, request_ids[op.person])
                elif op.kind == "created":
                    journal.finished(CUSTOMER, key, created(op.person, key, f"id-{op.person}", None))
                else:
                    journal.finished(CUSTOMER, key, failed(op.person, key, None))
                apply(applied, op, request_ids)
                if op.kind == "sending":
                    committed = dict(applied)
                on_disk = {k: (s, r) for k, (s, r, _) in committed_states(path).items()}
                assert on_disk == committed
        finally:
            journal.close()

    with tempfile.TemporaryDirectory() as directory:
        asyncio.run(scenario(Path(directory) / "j.sqlite"))
