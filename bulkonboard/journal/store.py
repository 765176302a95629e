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
import logging
import os
import sqlite3
import stat
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from ..model import RowResult, Status
from ..protocols import PriorOutcome, PriorState, StepPrior, StepState
from . import file as journal_file
from .admin import JournalAdmin, RowFilter, RowRecord, RunRecord, journals_under, read_meta
from .commits import (
    _CHECKPOINT_PAGES,
    _EXTRA_TURNS,
    DEFAULT_LAZY_BATCH,
    DEFAULT_LAZY_DELAY,
    GroupCommit,
    JournalClosed,
    JournalStats,
    _Checkpointer,
    _rollback,
    _settle,
    _Write,
)
from .commits import _grouped as _grouped  # re-exported: the batching tests build batches of their own
from .commits import utc_now as _utc_now
from .file import FORMAT, JournalError, JournalFailure
from .schema import _CREATED_SQL as _CREATED_SQL  # re-exported for the batching tests
from .schema import _FAILED_SQL as _FAILED_SQL
from .schema import (
    _OUTCOME_SQL,
    _SENT_SQL,
    _STEP_OUTCOME_SQL,
    _STEP_SENT_SQL,
    CREATED,
    FAILED,
    PENDING,
    SCHEMA_VERSION,
    SENT,
    SKIPPED,
    STATES,
    create_tables,
    migrate,
)

log = logging.getLogger("bulkonboard")

#: `prior` reads every row a customer has sent or created in the journal at once when there are at most this many
#: (~350 bytes each): one query instead of one per row of the sheet. A bigger journal is asked row by row.
_PRIOR_CACHE_ROWS = 50_000


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


class Journal(GroupCommit, JournalAdmin):
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
        an earlier release gets the application id, and its format is brought to this one (`schema.migrate`), in
        the same transaction)."""
        try:
            with self._write_lock:
                self._writer.execute("BEGIN IMMEDIATE")
                if legacy:
                    self._writer.execute(f"PRAGMA application_id = {journal_file.APPLICATION_ID}")
                create_tables(self._writer)
                meta = dict(self._writer.execute("SELECT key, value FROM meta").fetchall())
                if not meta and not service_given:
                    _rollback(self._writer)
                    raise JournalError(
                        f"{self.path}: the journal holds nothing yet (no run has written to it)"
                    )
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
                elif meta.get("format") == FORMAT:  # one of an earlier release: brought to this format
                    version = migrate(self._writer, self.path, meta.get("version"))
                    if version is not None:
                        meta["version"] = version
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

    def prior_steps(self, customer: str, upn_key: str) -> dict[str, StepPrior]:
        """What earlier runs left of the row's steps after create, by step name (asked only by a run whose plan
        has such steps, once per row that needs one). Steps `failed` are sent afresh; `sent` ones are settled."""
        self._check_open()
        try:
            found = self._reader.execute(
                "SELECT step, state, request_id, detail, sent_at, done_at FROM steps WHERE customer = ? AND upn_key = ?",
                (customer.casefold(), upn_key.casefold()),
            ).fetchall()
        except sqlite3.Error as exc:
            raise journal_file.failed(self.path, "read", exc) from None
        return {
            step: StepPrior(StepState(state), request_id, detail, _parse_stamp(done_at or sent_at))
            for step, state, request_id, detail, sent_at, done_at in found
        }

    async def step_sending(self, customer: str, upn_key: str, step: str, request_id: str) -> None:
        """Record "step sent with request_id" and return once it is committed (with every record queued before
        it, the row's create among them): only then may the step's request leave."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        key = (customer.casefold(), upn_key.casefold())
        write = _Write(_STEP_SENT_SQL, (*key, step, request_id, self.run_id, self._stamp()), waiter)
        self._enqueue(write, urgent=True)
        await waiter

    def step_finished(
        self, customer: str, upn_key: str, step: str, state: StepState, request_id: str, detail: str | None
    ) -> None:
        """The step's known outcome (`done` or `failed`; lazy). One in doubt is never written: it stays `sent`."""
        key = (customer.casefold(), upn_key.casefold())
        params = (*key, step, state.value, request_id, detail, self.run_id, self._stamp())
        self._enqueue(_Write(_STEP_OUTCOME_SQL, params))

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
            raise JournalFailure(
                f"{path}: the journal needs SQLite's WAL mode, and this file system refused it"
            )
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
            "%s: the journal is readable by others (mode %04o); it holds people's names: chmod 600 it",
            path,
            mode,
        )


def _parse_stamp(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


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
