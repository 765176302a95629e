"""The run's memory across runs, in SQLite: what was sent, what exists, what failed, per customer and UPN.

Why it exists: a run may be killed at any moment, the network may drop after Partner Center created a user, and
tomorrow's sheet repeats today's rows. Whatever happens, each person gets exactly one account. The journal makes
that possible by knowing, for every row ever sent:

    (none) ──────────────► sent(request id) ──► created(user id)
                              │         ▲  ├──► failed(reason)      a final refusal, or a stop before anything
                              │         │  │                        could be created: next run sends afresh
                              │         │  └──► skipped(user id)    the user was someone else's
                              └─────────┘ sent again, same request id, by a run that resumes it

- `sent` is written DURABLY before the request leaves (group commit: every row waiting to be sent shares one
  commit), so a run killed with the request in flight leaves "sent with request id X" behind, and the next run
  reconciles it (same MS-RequestId again; a duplicate-UPN answer then a lookup) instead of creating a second user.
- Outcomes (`created`, `failed`, `skipped`) are written lazily, in batches: a lost `created` leaves
  the row `sent`, which reconciliation recovers. A row whose outcome is still unknown at the end of a run (no
  answer, lookups failed) is never marked `failed`: it stays `sent`, in doubt, for the next run to settle.
  A lazy batch that cannot be committed (a full disk) is logged at once and raised by the next `flush()`, which
  the pipeline calls as a run ends: a record may be lost, never silently.
- WAL with synchronous=NORMAL: a commit survives kill -9 of the process (not a power cut, which the next run's
  reconciliation still covers). Such a commit writes to the WAL without an fsync and takes tens of microseconds,
  so it runs right on the event loop's thread, batched per turn of the loop: handing it to a thread cost far more
  (the thread must win the GIL back from a busy loop, then wake the loop again: ~1.2 ms per commit, measured).
- Never a password, a token or a raw service answer: rows hold the UPN, ids, and the problem text the results
  workbook shows. The file is mode 0600 (SQLite gives its -wal and -shm files the same mode).

Keys are the customer (case-folded tenant id) and the case-folded UPN, as everywhere else.

What opening checks before anything is written (a journal is opened only if it is one, never chmod-ed) is in
`journal_file`. The errors, each one line naming the journal:
- `JournalError` (exit 2): the file named is not this run's journal (empty, not SQLite, another program's
  database, another service's journal, a newer format). Nothing was written to it.
- `JournalFailure` (`errors.OwnFailure`, exit 4): the journal is one, but cannot be read or written: read-only,
  on a read-only disk or folder, damaged (left as it is), or a write that fails mid-run (a full disk, an I/O
  error): `sending` raises it before its request may leave, `flush`, `begin_run`, `end_run` and `forget` raise
  it for their own writes, reads (`prior`, `rows`, `runs`) for theirs. "<journal>: cannot write the journal
  (database or disk is full)". The run must stop sending: a request whose record is not durable could not be
  reconciled after a crash. What was committed before stays committed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from ..model import RowResult, Status
from ..protocols import PriorOutcome, PriorState
from . import file as journal_file
from .file import FORMAT, JournalError, JournalFailure

log = logging.getLogger("bulkonboard")

SCHEMA_VERSION = 1

#: Taken by a run, not yet sent (an admin reads it as "never left"). No release writes it any more; journals of
#: earlier ones may hold it (the schema still allows it), and `prior` reads it as never sent.
PENDING = "pending"
SENT = "sent"  # the request left (or was about to): outcome unknown until an answer is recorded
CREATED = "created"
FAILED = "failed"  # the service refused it for good, or retries gave up with the user certainly not created
SKIPPED = "skipped"  # the UPN belongs to a user this journal did not create
STATES: tuple[str, ...] = (PENDING, SENT, CREATED, FAILED, SKIPPED)

#: Lazily written records are committed at the latest this long after the first of them was queued...
DEFAULT_LAZY_DELAY = 0.05
#: ...or as soon as this many are waiting (whichever comes first; a `sending` commits them all at once).
DEFAULT_LAZY_BATCH = 512

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    started TEXT NOT NULL,
    finished TEXT,
    input_path TEXT NOT NULL,
    input_sha256 TEXT NOT NULL,
    customer TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    command TEXT NOT NULL DEFAULT '',
    counts TEXT,
    exit_code INTEGER
);
CREATE TABLE IF NOT EXISTS rows (
    customer TEXT NOT NULL,
    upn_key TEXT NOT NULL,
    upn TEXT NOT NULL,
    row INTEGER,
    state TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'created', 'failed', 'skipped')),
    request_id TEXT,
    user_id TEXT,
    reason TEXT,
    run_id INTEGER,
    sent_at TEXT,
    created_at TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (customer, upn_key)
) WITHOUT ROWID;
DROP INDEX IF EXISTS rows_by_state;
DROP INDEX IF EXISTS rows_by_run;
"""
# No index on `state` or `run_id`: records set both, so each index cost a page write per record on the hot path
# (a run's index pages were a third of its journal's writes), and only `journal show` / `forget` filter on them,
# where a scan of the rows is fine (~30 ms for 100,000): once per command, never once per run
# (`count_rows_by_run`). Journals written before lose them on opening; an older bulkonboard would simply build
# them again.

#: A `sending`'s commit waits this many more turns of the loop, so that the workers woken by answers read in them
#: share it (measured at 20k rows, 16 in flight: 6,000 commits without the wait, 2,600 with two turns). A turn of
#: an idle loop is microseconds: a lone row hardly waits.
_EXTRA_TURNS = 2
#: `prior` reads every row a customer has sent or created in the journal at once when there are at most this many
#: (~350 bytes each): one query instead of one per row of the sheet. A bigger journal is asked row by row.
_PRIOR_CACHE_ROWS = 50_000
#: Copying the WAL back into the database (a checkpoint, with two fsyncs) is left to a thread of its own, asked
#: every this many committed records (~4,000 WAL pages): SQLite's automatic one (every 1,000 pages) ran inside a
#: commit on the loop's thread, ~90 times in a 20k-row run, a few ms each, most of the journal's cost. A passive
#: checkpoint blocks no commit and frees the GIL while it works; the WAL is reused once it is done.
_CHECKPOINT_RECORDS = 2_000
#: ...and should that thread fall behind, commits checkpoint by themselves again once the WAL holds this many pages
#: (~80 MB): a bound on the WAL's size, not a pace.
_CHECKPOINT_PAGES = 20_000
_COLUMNS = (
    "customer, upn_key, upn, row, state, request_id, user_id, reason, run_id, sent_at, created_at, updated_at"
)

# Each statement takes (customer, upn_key, upn, row, request_id, user_id, reason, run_id, now).
_SENT_SQL = f"""
INSERT INTO rows ({_COLUMNS}) VALUES (?1, ?2, ?3, ?4, 'sent', ?5, NULL, NULL, ?8, ?9, NULL, ?9)
ON CONFLICT (customer, upn_key) DO UPDATE SET
    state = 'sent', row = excluded.row, user_id = NULL, reason = NULL, run_id = excluded.run_id,
    sent_at = CASE WHEN rows.state = 'sent' AND rows.request_id = excluded.request_id
                   THEN rows.sent_at ELSE excluded.sent_at END,
    request_id = excluded.request_id, updated_at = excluded.updated_at
"""
_CREATED_SQL = f"""
INSERT INTO rows ({_COLUMNS}) VALUES (?1, ?2, ?3, ?4, 'created', ?5, ?6, NULL, ?8, NULL, ?9, ?9)
ON CONFLICT (customer, upn_key) DO UPDATE SET
    upn = excluded.upn, row = excluded.row, user_id = excluded.user_id, reason = NULL, run_id = excluded.run_id,
    request_id = COALESCE(excluded.request_id, rows.request_id),
    created_at = CASE WHEN rows.state = 'created' THEN rows.created_at ELSE excluded.created_at END,
    state = 'created', updated_at = excluded.updated_at
"""
_FAILED_SQL = f"""
INSERT INTO rows ({_COLUMNS}) VALUES (?1, ?2, ?3, ?4, 'failed', ?5, NULL, ?7, ?8, NULL, NULL, ?9)
ON CONFLICT (customer, upn_key) DO UPDATE SET
    state = 'failed', upn = excluded.upn, row = excluded.row, user_id = NULL, reason = excluded.reason,
    request_id = COALESCE(excluded.request_id, rows.request_id), run_id = excluded.run_id,
    updated_at = excluded.updated_at
"""
_SKIPPED_SQL = f"""
INSERT INTO rows ({_COLUMNS}) VALUES (?1, ?2, ?3, ?4, 'skipped', ?5, ?6, ?7, ?8, NULL, NULL, ?9)
ON CONFLICT (customer, upn_key) DO UPDATE SET
    state = 'skipped', upn = excluded.upn, row = excluded.row, user_id = excluded.user_id,
    reason = excluded.reason, request_id = COALESCE(excluded.request_id, rows.request_id),
    run_id = excluded.run_id, updated_at = excluded.updated_at
"""
_OUTCOME_SQL = {Status.CREATED: _CREATED_SQL, Status.FAILED: _FAILED_SQL, Status.SKIPPED: _SKIPPED_SQL}


class JournalClosed(JournalError):
    """A call on a journal that was closed (or abandoned): nothing can be recorded, so nothing may be sent."""


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run as `journal show` lists it. `counts` and `exit_code` are None for a run that never finished."""

    id: int
    started: str
    finished: str | None
    input_path: str
    input_sha256: str
    customer: str
    correlation_id: str
    pid: int
    host: str
    command: str
    counts: dict[str, int] | None
    exit_code: int | None


@dataclass(frozen=True, slots=True)
class RowRecord:
    customer: str
    upn: str
    upn_key: str
    row: int | None
    state: str
    request_id: str | None
    user_id: str | None
    reason: str | None
    run_id: int | None
    sent_at: str | None
    created_at: str | None
    updated_at: str


@dataclass(slots=True)
class JournalStats:
    """How the group commit is doing: `records / commits` is the batching achieved."""

    commits: int = 0
    records: int = 0
    largest_batch: int = 0


@dataclass(slots=True)
class _Write:
    sql: str
    params: tuple[Any, ...]
    waiter: asyncio.Future[None] | None = None


@dataclass(frozen=True, slots=True)
class RowFilter:
    """Which rows `rows()` and `forget()` touch; every given condition must hold (None: any)."""

    customer: str | None = None
    upns: tuple[str, ...] | None = None
    states: tuple[str, ...] | None = None
    run_id: int | None = None

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if self.customer is not None:
            clauses.append("customer = ?")
            params.append(self.customer.casefold())
        if self.upns is not None:
            keys = sorted({upn.strip().casefold() for upn in self.upns})
            clauses.append(f"upn_key IN ({', '.join('?' for _ in keys)})" if keys else "0")
            params.extend(keys)
        if self.states is not None:
            unknown = set(self.states) - set(STATES)
            if unknown:
                raise ValueError(f"unknown state(s) {', '.join(sorted(unknown))}; known: {', '.join(STATES)}")
            clauses.append(f"state IN ({', '.join('?' for _ in self.states)})" if self.states else "0")
            params.extend(self.states)
        if self.run_id is not None:
            clauses.append("run_id = ?")
            params.append(self.run_id)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _utc_now() -> datetime:
    return datetime.now(UTC)


def open_journal(
    path: Path,
    *,
    service: str,
    lazy_delay: float = DEFAULT_LAZY_DELAY,
    lazy_batch: int = DEFAULT_LAZY_BATCH,
    clock: Callable[[], datetime] = _utc_now,
    service_starts_empty: bool = False,
) -> Journal:
    """Open (creating if needed, mode 0600) the journal at `path` for `service` (the Partner Center base URL, or
    `sandbox:embedded:<data file>` for an embedded sandbox, whose port changes at every start).

    A journal remembers what ONE service holds: opening it for another service raises `JournalError` (exit 2),
    because its "created" rows would be skipped against a service that never saw them. Close it when the run
    ends (`with open_journal(...) as journal:` or `journal.close()`); the caller holds the run lock.

    `service_starts_empty`: the service holds none of the users an earlier run recorded (an embedded sandbox is
    born again from its data file at every start), so the rows of earlier runs are forgotten once the journal
    is known to be this service's; its runs stay listed (`journal show`), and this run creates those users again
    in the tenant that exists now, rather than skipping users it does not hold.
    """
    journal = Journal(Path(path), service=service, lazy_delay=lazy_delay, lazy_batch=lazy_batch, clock=clock)
    if service_starts_empty:
        try:
            journal.start_afresh()
        except BaseException:
            journal.close()
            raise
    return journal


class Journal:
    """The SQLite journal. Implements `pipeline.Journal` (row states) and the runner's run records.

    Thread use: the pipeline calls (`prior`, `sending`, `finished`, `flush`) come from the event
    loop's thread, and the commits run there too, in a callback of their own (one per turn of the loop).
    """

    def __init__(
        self,
        path: Path,
        *,
        service: str,
        lazy_delay: float = DEFAULT_LAZY_DELAY,
        lazy_batch: int = DEFAULT_LAZY_BATCH,
        clock: Callable[[], datetime] = _utc_now,
        create: bool = True,
    ) -> None:
        self.path = Path(path)
        self.service = _normal_service(service)
        self.run_id: int | None = None
        self.stats = JournalStats()
        self._lazy_delay = lazy_delay
        self._lazy_batch = max(1, lazy_batch)
        self._clock = clock
        self._stamp_ms, self._stamp_text = -1, ""
        self._queue: list[_Write] = []
        self._queue_lock = threading.Lock()  # held only to append or swap the queue: never while writing
        self._write_lock = threading.Lock()  # held while committing: batches land in queue order
        self._closed = False
        # A lazy batch that failed to commit: nobody waited for it, so the next flush() raises it.
        self._lost: BaseException | None = None
        self._failure_told = False  # the last failed commit was raised to a `sending` (no need to log it too)
        # loop-bound: the commit asked for this turn of the loop, or a lazy batch's deadline (reset by a new loop)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._commit_soon: asyncio.Handle | None = None
        self._turns_left = _EXTRA_TURNS
        # `prior` for a small journal: per customer, the committed states it had when this run first asked (None:
        # too many rows, ask row by row). Never updated by this run's own writes: see `prior`.
        self._known: dict[str, dict[str, tuple[Any, ...]] | None] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._writer, self._reader, legacy = _connect(self.path, create=create)
        self._checkpointer = _Checkpointer(self.path)
        self._records_since_checkpoint = 0
        try:
            self._check_or_init(service_given=bool(service), legacy=legacy)
        except BaseException:
            self._writer.close()
            self._reader.close()
            raise

    # -- opening

    def _check_or_init(self, *, service_given: bool, legacy: bool) -> None:
        """The schema and meta of a journal `_connect` has checked is one (a new one is filled in here; one of
        an earlier release gets the application id in the same transaction)."""
        try:
            with self._write_lock:
                self._writer.execute("BEGIN IMMEDIATE")
                if legacy:
                    self._writer.execute(f"PRAGMA application_id = {journal_file.APPLICATION_ID}")
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._writer.execute(statement)
                meta = dict(self._writer.execute("SELECT key, value FROM meta").fetchall())
                if not meta and not service_given:
                    _rollback(self._writer)
                    raise JournalError(f"{self.path}: the journal holds nothing yet (no run has written to it)")
                if not meta:
                    now = self._stamp()
                    self._writer.executemany(
                        "INSERT INTO meta (key, value) VALUES (?, ?)",
                        [
                            ("format", FORMAT),
                            ("version", str(SCHEMA_VERSION)),
                            ("service", self.service),
                            ("created", now),
                        ],
                    )
                    meta = {"format": FORMAT, "version": str(SCHEMA_VERSION), "service": self.service}
                self._writer.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            _rollback(self._writer)
            raise journal_file.failed(self.path, "open", exc) from None
        if meta.get("format") != FORMAT:
            raise JournalError(f"{self.path}: is not a bulkonboard journal")
        if meta.get("version") != str(SCHEMA_VERSION):
            raise JournalError(
                f"{self.path}: journal format version {meta.get('version')} is not supported by this bulkonboard "
                f"(it reads version {SCHEMA_VERSION}); use the bulkonboard that wrote it"
            )
        recorded = meta.get("service", "")
        if service_given and recorded != self.service:
            raise JournalError(
                f"{self.path}: this journal belongs to {recorded}, and this run talks to {self.service}; "
                "a journal only knows what one service holds: give another --journal"
            )
        self.service = recorded

    # -- the pipeline's calls (pipeline.Journal)

    def prior(self, customer: str, upn_key: str) -> PriorState | None:
        """What an earlier run left: CREATED (never send again), IN_DOUBT (sent, outcome unknown: reconcile with
        the same request id), or None (never sent, refused for good, or someone else's user: send afresh).

        Earlier runs only: a small journal answers from what was committed when this run first asked about the
        customer, not from what this run wrote since. The pipeline asks once per row, before writing it, and a
        UPN appears once in a sheet (a repeat is invalid), so no run asks about a key it has written; a new run
        (`begin_run`) or a reopened journal asks the file afresh."""
        self._check_open()
        customer, upn_key = customer.casefold(), upn_key.casefold()
        known = self._known.get(customer, ...)
        try:
            if known is ...:
                self._report(self._drain())  # what is queued is in the file first
                known = self._known[customer] = self._read_known(customer)
            if known is not None:
                found = known.get(upn_key)
            else:
                found = self._reader.execute(
                    "SELECT state, request_id, user_id, sent_at, created_at FROM rows "
                    "WHERE customer = ? AND upn_key = ?",
                    (customer, upn_key),
                ).fetchone()
        except sqlite3.Error as exc:
            raise journal_file.failed(self.path, "read", exc) from None
        if found is None:
            return None
        state, request_id, user_id, sent_at, created_at = found
        if state == CREATED:
            return PriorState(
                PriorOutcome.CREATED, request_id or "", user_id, recorded_at=_parse_stamp(created_at)
            )
        if state == SENT and request_id:
            return PriorState(PriorOutcome.IN_DOUBT, request_id, recorded_at=_parse_stamp(sent_at))
        return None

    def _read_known(self, customer: str) -> dict[str, tuple[Any, ...]] | None:
        """The states `prior` needs of every row of `customer`, if there are few enough to hold."""
        (count,) = self._reader.execute(
            "SELECT count(*) FROM rows WHERE customer = ? AND state IN ('sent', 'created')", (customer,)
        ).fetchone()
        if count > _PRIOR_CACHE_ROWS:
            return None
        found = self._reader.execute(
            "SELECT upn_key, state, request_id, user_id, sent_at, created_at FROM rows "
            "WHERE customer = ? AND state IN ('sent', 'created')",
            (customer,),
        )
        return {key: tuple(rest) for key, *rest in found}

    async def sending(self, customer: str, upn_key: str, row: int, request_id: str) -> None:
        """Record "sent with request_id" and return once it is committed: only then may the request leave."""
        key = upn_key.casefold()
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        write = _Write(
            _SENT_SQL,
            (customer.casefold(), key, key, row, request_id, None, None, self.run_id, self._stamp()),
            waiter,
        )
        self._enqueue(write, urgent=True)
        await waiter

    def finished(self, customer: str, upn_key: str, result: RowResult) -> None:
        """The row's final outcome in this run (lazy). The pipeline calls it only when the outcome is known: a
        row that may have been created but was not found stays `sent`."""
        sql = _OUTCOME_SQL.get(result.status)
        if sql is None:
            return  # invalid / valid rows never reach the service: nothing to remember
        reason = (result.problems_text or None) if result.status is not Status.CREATED else None
        self._enqueue(
            _Write(
                sql,
                (
                    customer.casefold(),
                    upn_key.casefold(),
                    result.userPrincipalName or upn_key,
                    result.row,
                    result.requestId,
                    result.userId,
                    reason,
                    self.run_id,
                    self._stamp(),
                ),
            )
        )

    def flush(self) -> None:
        """Commit everything queued, now (blocking). The pipeline calls it when a run ends. Raises
        `JournalFailure` (exit 4) if this commit fails, or if a lazy batch failed since the last flush (its records
        are lost: the run must not end as if they were written)."""
        if self._closed:
            return
        error = self._drain()
        lost, self._lost = self._lost, None
        error = error or lost
        if error is not None:
            raise journal_file.failed(self.path, "write", error) from error

    # -- run records (the runner's calls)

    def begin_run(
        self,
        *,
        input_path: Path | str,
        input_sha256: str,
        customer: str,
        correlation_id: str,
        command: str = "",
    ) -> int:
        """A new run: recorded (and committed) before any of its rows is sent; rows it touches carry its id."""
        self.flush()
        self._known.clear()  # a new run: `prior` tells what the earlier ones left, as committed now
        with self._write_lock:
            self._check_open()
            with _transaction(self._writer, self.path):
                cursor = self._writer.execute(
                    "INSERT INTO runs (started, input_path, input_sha256, customer, correlation_id, pid, host, "
                    "command) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        self._stamp(),
                        str(input_path),
                        input_sha256,
                        customer,
                        correlation_id,
                        os.getpid(),
                        socket.gethostname(),
                        command,
                    ),
                )
            run_id = cursor.lastrowid
        assert run_id is not None
        self.run_id = run_id
        return run_id

    def end_run(self, *, counts: Mapping[str, int] | None, exit_code: int | None) -> None:
        """The run's end: its counts per status and its exit code, after every row it recorded."""
        if self.run_id is None:
            return
        self.flush()
        with self._write_lock:
            self._check_open()
            with _transaction(self._writer, self.path):
                self._writer.execute(
                    "UPDATE runs SET finished = ?, counts = ?, exit_code = ? WHERE id = ?",
                    (
                        self._stamp(),
                        json.dumps(dict(counts)) if counts is not None else None,
                        exit_code,
                        self.run_id,
                    ),
                )

    # -- reading and forgetting (journal show / forget, tests)

    def runs(self, *, customer: str | None = None, run_id: int | None = None) -> list[RunRecord]:
        self.flush()
        sql = "SELECT * FROM runs"
        clauses: list[str] = []
        params: list[Any] = []
        if customer is not None:
            clauses.append(
                "(instr(lower(customer), ?) > 0 OR id IN (SELECT run_id FROM rows WHERE customer = ?))"
            )
            params += [customer.casefold(), customer.casefold()]
        if run_id is not None:
            clauses.append("id = ?")
            params.append(run_id)
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        names, found = self._query(sql + " ORDER BY id", params)
        records = []
        for values in found:
            raw = dict(zip(names, values, strict=True))
            raw["counts"] = json.loads(raw["counts"]) if raw["counts"] else None
            records.append(RunRecord(**raw))
        return records

    def rows(self, where: RowFilter | None = None, *, limit: int | None = None) -> list[RowRecord]:
        self.flush()
        clause, params = (where or RowFilter()).where()
        sql = f"SELECT {_COLUMNS} FROM rows{clause} ORDER BY run_id, row, upn_key"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        names, found = self._query(sql, params)
        return [RowRecord(**dict(zip(names, values, strict=True))) for values in found]

    def count_rows(self, where: RowFilter | None = None) -> dict[str, int]:
        """Rows per state."""
        self.flush()
        clause, params = (where or RowFilter()).where()
        _, found = self._query(f"SELECT state, count(*) FROM rows{clause} GROUP BY state", params)
        return {state: count for state, count in found}

    def count_rows_by_run(self) -> dict[int, dict[str, int]]:
        """Rows per state for every run, in one scan of the rows (there is no index on `run_id`: asking run by run
        would read the whole table once per run)."""
        self.flush()
        counts: dict[int, dict[str, int]] = {}
        _, found = self._query(
            "SELECT run_id, state, count(*) FROM rows WHERE run_id IS NOT NULL GROUP BY run_id, state", []
        )
        for run_id, state, count in found:
            counts.setdefault(run_id, {})[state] = count
        return counts

    def start_afresh(self) -> int:
        """Forget every row (not the runs): the service holds none of the users they name. Returns how many."""
        with self._write_lock:
            self._check_open()
            self._known.clear()
            with _transaction(self._writer, self.path):
                cursor = self._writer.execute("DELETE FROM rows")
        if cursor.rowcount > 0:
            log.info(
                "%s: %d row(s) of earlier runs forgotten: %s starts empty, so none of their users exist in it",
                self.path, cursor.rowcount, self.service,
            )
        return cursor.rowcount

    def _query(self, sql: str, params: Sequence[Any]) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Column names and rows; a failed read (a damaged page, an I/O error) is `JournalFailure`, exit 4."""
        try:
            cursor = self._reader.execute(sql, params)
            return [d[0] for d in cursor.description], cursor.fetchall()
        except sqlite3.Error as exc:
            raise journal_file.failed(self.path, "read", exc) from None

    def forget(self, where: RowFilter) -> int:
        """Delete the matching rows, so the next run treats them as new; returns how many. The caller holds the run
        lock (never forget under a running run) and has asked the person first."""
        clause, params = where.where()
        if not clause:
            raise ValueError("forget needs a filter: refusing to forget the whole journal by accident")
        self.flush()
        with self._write_lock:
            self._check_open()
            self._known.clear()
            with _transaction(self._writer, self.path):
                cursor = self._writer.execute(f"DELETE FROM rows{clause}", params)
        return cursor.rowcount

    # -- life

    def close(self) -> None:
        """Commit what is queued and close. Safe to call twice."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._shut()

    def abandon(self) -> None:
        """Close WITHOUT committing what is queued: exactly what kill -9 leaves behind. The resume tests crash a
        run in-process with it; nothing else should call it."""
        self._shut()

    def __enter__(self) -> Journal:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _shut(self) -> None:
        with self._queue_lock:
            dropped, self._queue = self._queue, []
            self._closed = True
        _settle(
            [w.waiter for w in dropped if w.waiter is not None], JournalClosed(f"{self.path}: journal closed")
        )
        self._cancel_scheduled()
        self._checkpointer.stop()  # before the writer closes: the last connection out removes the WAL
        with self._write_lock:  # a commit under way (flush() from another thread) finishes first
            self._writer.close()
            self._reader.close()

    # -- group commit

    def _stamp(self) -> str:
        if self._clock is not _utc_now:
            return self._clock().astimezone(UTC).isoformat(timespec="milliseconds")
        # The real clock: formatted once per millisecond (a busy run writes several records in each).
        now_ms = time.time_ns() // 1_000_000
        if now_ms != self._stamp_ms:
            seconds, millis = divmod(now_ms, 1000)
            moment = datetime.fromtimestamp(seconds, UTC).replace(microsecond=millis * 1000)
            self._stamp_ms, self._stamp_text = now_ms, moment.isoformat(timespec="milliseconds")
        return self._stamp_text

    def _check_open(self) -> None:
        if self._closed:
            raise JournalClosed(f"{self.path}: the journal is closed")

    def _enqueue(self, write: _Write, *, urgent: bool = False) -> None:
        with self._queue_lock:
            if self._closed:
                raise JournalClosed(f"{self.path}: the journal is closed")
            self._queue.append(write)
            waiting = len(self._queue)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            if urgent:  # no loop to commit in a moment: commit right here
                self.flush()
            return  # lazy writes outside a loop wait for flush()/close()
        if loop is not self._loop:  # a new run's loop: what the last one scheduled will never run
            self._loop = loop
            self._commit_soon = self._timer = None
        if urgent or waiting >= self._lazy_batch:
            if self._commit_soon is None:
                # Not now: every `sending` of this turn of the loop and the next `_EXTRA_TURNS` (the workers woken
                # by the answers read meanwhile) is queued before the commit, and they all share it.
                self._commit_soon = loop.call_soon(self._commit_queued)
        elif self._timer is None and self._commit_soon is None:
            self._timer = loop.call_later(self._lazy_delay, self._commit_queued)

    def _commit_queued(self) -> None:
        """Commit whatever is queued (a `sending` asked, or a lazy batch is full or old)."""
        if self._turns_left > 0 and self._commit_soon is not None and self._loop is not None:
            self._turns_left -= 1
            self._commit_soon = self._loop.call_soon(self._commit_queued)
            return
        self._turns_left = _EXTRA_TURNS
        self._cancel_scheduled()
        self._report(self._drain())

    def _cancel_scheduled(self) -> None:
        for handle in (self._commit_soon, self._timer):
            if handle is not None:
                handle.cancel()
        self._commit_soon = self._timer = None

    def _report(self, failure: BaseException | None) -> None:
        """A commit nobody called directly failed: a `sending` in it already raised to its caller, but lazy records
        have nobody waiting. Said now in the log, and raised by the next `flush()` (the end of the run)."""
        if failure is not None and not self._failure_told:
            log.error("%s: the journal could not commit a batch of records: %s", self.path, failure)

    def _drain(self) -> BaseException | None:
        """Swap the queue out, commit it, and tell its waiters. Returns the failure, if the commit failed."""
        with self._write_lock:
            with self._queue_lock:
                batch, self._queue = self._queue, []
            waiters = [w.waiter for w in batch if w.waiter is not None]
            if self._closed:
                _settle(waiters, JournalClosed(f"{self.path}: the journal is closed"))
                return None
            if not batch:
                return None
            try:
                with _transaction(self._writer) as writer:
                    for sql, params in _grouped(batch):
                        writer.executemany(sql, params)
            except sqlite3.Error as exc:
                _settle(waiters, journal_file.failed(self.path, "write", exc))
                if len(waiters) < len(batch) and self._lost is None:
                    self._lost = exc  # lazy records lost: the next flush() says so
                self._failure_told = bool(waiters)  # a `sending` raised it: its run stops and says so itself
                return exc
            self.stats.commits += 1
            self.stats.records += len(batch)
            self._records_since_checkpoint += len(batch)
            if self._records_since_checkpoint >= _CHECKPOINT_RECORDS:
                self._records_since_checkpoint = 0
                self._checkpointer.ask()
            self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
        _settle(waiters, None)
        return None


# ---------------------------------------------------------------------------------------------------------------
# helpers


class _Checkpointer:
    """A thread with its own connection that checkpoints the WAL when asked (`_CHECKPOINT_RECORDS`), so that the
    loop's thread never waits for a checkpoint's writes and fsyncs. Started on the first request: a journal that
    never commits that many records never starts it."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._asked = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def ask(self) -> None:
        if self._stopping:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="journal-checkpoint", daemon=True)
            self._thread.start()
        self._asked.set()

    def stop(self) -> None:
        self._stopping = True
        self._asked.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _serve(self) -> None:
        try:
            connection = sqlite3.connect(
                self._path, isolation_level=None, check_same_thread=False, timeout=10
            )
        except sqlite3.Error:
            return  # the writer's own checkpoints (`_CHECKPOINT_PAGES`) still bound the WAL
        try:
            while True:
                self._asked.wait()
                self._asked.clear()
                if self._stopping:
                    return
                try:
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # nothing is lost: the records are in the WAL, committed
                    log.debug("%s: a journal checkpoint failed: %s", self._path, exc)
        finally:
            connection.close()


def _grouped(batch: Sequence[_Write]) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """The batch as few `executemany` calls as it can be, each key's records still applied in queue order.

    Each statement touches only its own key's row, so records of different keys commute: the n-th record of
    every key goes in round n, and a round's records are grouped by statement. A batch interleaves `sent` and
    `created` records, so grouping only neighbours (what the queue order allows) made one call per two records.
    """
    rounds: list[dict[str, list[tuple[Any, ...]]]] = []
    seen: dict[tuple[Any, Any], int] = {}
    for write in batch:
        key = (write.params[0], write.params[1])
        n = seen.get(key, 0)
        seen[key] = n + 1
        if n == len(rounds):
            rounds.append({})
        rounds[n].setdefault(write.sql, []).append(write.params)
    return [(sql, params) for by_sql in rounds for sql, params in by_sql.items()]


def _normal_service(service: str) -> str:
    return service.strip().rstrip("/")


def _connect(path: Path, *, create: bool) -> tuple[sqlite3.Connection, sqlite3.Connection, bool]:
    """Two connections (one for commits, one for reads) to a file that is a journal (`journal_file` checks it
    before anything is written), and whether it is a journal of an earlier release to be given the id."""
    if journal_file.check_file(path, create=create):
        journal_file.create(Path(os.path.realpath(path)))
        journal_file.check_file(path, create=False)
    try:
        writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
        reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
    except sqlite3.Error as exc:
        raise JournalFailure(f"{path}: cannot open the journal ({exc})") from None
    try:
        for connection in (writer, reader):
            connection.execute("PRAGMA busy_timeout = 10000")
        legacy = journal_file.check_identity(writer, path)
        journal_file.check_integrity(writer, path)
        _warn_if_readable_by_others(path)
        mode = writer.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise JournalFailure(f"{path}: the journal needs SQLite's WAL mode, and this file system refused it")
        for connection in (writer, reader):
            connection.execute("PRAGMA synchronous = NORMAL")
        writer.execute(f"PRAGMA wal_autocheckpoint = {_CHECKPOINT_PAGES}")
    except sqlite3.DatabaseError as exc:
        writer.close()
        reader.close()
        raise journal_file.failed(path, "open", exc) from None
    except BaseException:
        writer.close()
        reader.close()
        raise
    return writer, reader, legacy


def _warn_if_readable_by_others(path: Path) -> None:
    """Rows hold people's names: owner only. Said, never done: bulkonboard does not change a journal's mode."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return
    if mode & 0o077:
        log.warning(
            "%s: the journal is readable by others (mode %04o); it holds people's names: chmod 600 it", path, mode
        )


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any failure (autocommit connections). Given the journal's
    path, an SQLite failure becomes `JournalFailure` naming it (exit 4: a full disk, an I/O error)."""

    def __init__(self, connection: sqlite3.Connection, path: Path | None = None) -> None:
        self.connection = connection
        self.path = path

    def __enter__(self) -> sqlite3.Connection:
        try:
            self.connection.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            if self.path is None:
                raise
            raise journal_file.failed(self.path, "write", exc) from None
        return self.connection

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if exc_type is None:
                self.connection.execute("COMMIT")
                return
        except sqlite3.Error as failure:
            exc = failure
        _rollback(self.connection)
        if self.path is not None and isinstance(exc, sqlite3.Error):
            raise journal_file.failed(self.path, "write", exc) from None
        if exc_type is None and exc is not None:
            raise exc


def _rollback(connection: sqlite3.Connection) -> None:
    try:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
    except sqlite3.Error:
        pass


def _settle(waiters: Iterable[asyncio.Future[None]], error: BaseException | None) -> None:
    for waiter in waiters:
        if waiter.done() or waiter.get_loop().is_closed():
            continue
        if error is None:
            _call_soon_safe(waiter, waiter.set_result, None)
        else:
            _call_soon_safe(waiter, waiter.set_exception, error)


def _call_soon_safe(waiter: asyncio.Future[None], method: Callable[..., None], value: Any) -> None:
    """Futures are resolved on their own loop's thread: a commit made on another one (a `flush()` called from
    outside the loop) hands them over."""
    loop = waiter.get_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        method(value)
        return
    try:
        loop.call_soon_threadsafe(lambda: None if waiter.done() else method(value))
    except RuntimeError:  # the loop closed meanwhile: nobody is waiting any more
        pass


def _parse_stamp(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def journals_under(directory: Path) -> list[Path]:
    """The journals `paths.default_journal` placed under `directory` (one folder per service)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("*/*.sqlite") if p.is_file())


def read_meta(path: Path) -> dict[str, str]:
    """A journal's meta table, read without creating or changing anything (for listing journals)."""
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return {}
    try:
        return dict(connection.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.Error:
        return {}
    finally:
        connection.close()


def open_existing(path: Path) -> Journal:
    """An existing journal, whatever its service (journal show / forget)."""
    return Journal(Path(path), service="", create=False)


__all__: Sequence[str] = (
    "CREATED",
    "FAILED",
    "PENDING",
    "SENT",
    "SKIPPED",
    "STATES",
    "Journal",
    "JournalClosed",
    "JournalError",
    "JournalFailure",
    "JournalStats",
    "RowFilter",
    "RowRecord",
    "RunRecord",
    "journals_under",
    "open_existing",
    "open_journal",
    "read_meta",
)
