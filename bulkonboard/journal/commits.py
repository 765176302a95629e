"""Group commit: the journal's records reach the file in batches, on the event loop's thread, in queue order.

A `sending` (urgent: its request waits) is committed within a few turns of the loop, together with every record
queued meanwhile; lazy records (outcomes) wait for a batch to fill or a short delay. Checkpoints run on a thread of
their own. Why each figure is what it is: see the constants below and journal/store.py's docstring.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from . import file as journal_file
from .file import JournalError

log = logging.getLogger("bulkonboard")

#: Lazily written records are committed at the latest this long after the first of them was queued...
DEFAULT_LAZY_DELAY = 0.05
#: ...or as soon as this many are waiting (whichever comes first; a `sending` commits them all at once).
DEFAULT_LAZY_BATCH = 512


#: A `sending`'s commit waits this many more turns of the loop, so that the workers woken by answers read in them
#: share it (measured at 20k rows, 16 in flight: 6,000 commits without the wait, 2,600 with two turns). A turn of
#: an idle loop is microseconds: a lone row hardly waits.
_EXTRA_TURNS = 2
#: `prior` reads every row a customer has sent or created in the journal at once when there are at most this many
#: Copying the WAL back into the database (a checkpoint, with two fsyncs) is left to a thread of its own, asked
#: every this many committed records (~4,000 WAL pages): SQLite's automatic one (every 1,000 pages) ran inside a
#: commit on the loop's thread, ~90 times in a 20k-row run, a few ms each, most of the journal's cost. A passive
#: checkpoint blocks no commit and frees the GIL while it works; the WAL is reused once it is done.
_CHECKPOINT_RECORDS = 2_000
#: ...and should that thread fall behind, commits checkpoint by themselves again once the WAL holds this many pages
#: (~80 MB): a bound on the WAL's size, not a pace.
_CHECKPOINT_PAGES = 20_000


class JournalClosed(JournalError):
    """A call on a journal that was closed (or abandoned): nothing can be recorded, so nothing may be sent."""


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


def utc_now() -> datetime:
    return datetime.now(UTC)


class GroupCommit:
    """The journal's queue of records and its commits (a mixin of `store.Journal`, which sets these up)."""

    path: Path
    stats: JournalStats
    _clock: Callable[[], datetime]
    _stamp_ms: int
    _stamp_text: str
    _queue: list[_Write]
    _queue_lock: threading.Lock
    _write_lock: threading.Lock
    _closed: bool
    _lost: BaseException | None
    _failure_told: bool
    _loop: asyncio.AbstractEventLoop | None
    _commit_soon: asyncio.Handle | None
    _timer: asyncio.TimerHandle | None
    _turns_left: int
    _lazy_delay: float
    _lazy_batch: int
    _writer: sqlite3.Connection
    _checkpointer: _Checkpointer
    _records_since_checkpoint: int

    def flush(self) -> None: ...  # store.Journal's

    def _stamp(self) -> str:
        if self._clock is not utc_now:
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
