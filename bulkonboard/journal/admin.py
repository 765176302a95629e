"""Reading and forgetting: what `journal show`, `journal forget`, the rebuild of a results workbook and the tests
ask of a journal, and the records of runs (`journal show` lists them). Never on a run's hot path (no index serves
these: a scan is fine once per command).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import file as journal_file
from .commits import _transaction
from .schema import _COLUMNS, STATES

log = logging.getLogger("bulkonboard")


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


class JournalAdmin:
    """The run records, and the reading and forgetting calls (a mixin of `store.Journal`)."""

    path: Path
    service: str
    _reader: sqlite3.Connection
    _writer: sqlite3.Connection
    _write_lock: threading.Lock
    _known: dict[str, Any]
    run_id: int | None

    def flush(self) -> None: ...  # store.Journal's

    def _check_open(self) -> None: ...  # commits.GroupCommit's

    def _stamp(self) -> str:  # commits.GroupCommit's
        raise NotImplementedError

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
                self._writer.execute("DELETE FROM steps")
                cursor = self._writer.execute("DELETE FROM rows")
        if cursor.rowcount > 0:
            log.info(
                "%s: %d row(s) of earlier runs forgotten: %s starts empty, so none of their users exist in it",
                self.path,
                cursor.rowcount,
                self.service,
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
                self._writer.execute(
                    f"DELETE FROM steps WHERE (customer, upn_key) IN (SELECT customer, upn_key FROM rows{clause})",
                    params,
                )
                cursor = self._writer.execute(f"DELETE FROM rows{clause}", params)
        return cursor.rowcount


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
