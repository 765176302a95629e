"""The journal's tables, the statements that write them, and the migration from earlier formats.

Format 2 (this release) adds the `steps` table: one record per row AND step after create (license, profile,
manager...), keyed (customer, upn_key, step), with the same life as a row's create record: `sent` (durable, before
the request leaves), then `done` or `failed` (lazy). The create step keeps its record in `rows`, as in format 1:
a format-1 journal is a format-2 journal without step records, so the migration only adds the empty table and
says so in `meta` (one transaction, on opening). A release that reads format 1 only refuses a format-2 journal
("use the bulkonboard that wrote it") rather than ignore the steps it cannot see.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from ..model import Status

log = logging.getLogger("bulkonboard")

SCHEMA_VERSION = 2
#: Formats this release opens; an older one is migrated on opening (`migrate`).
MIGRATES_FROM = ("1",)

#: Taken by a run, not yet sent (an admin reads it as "never left"). No release writes it any more; journals of
#: earlier ones may hold it (the schema still allows it), and `prior` reads it as never sent.
PENDING = "pending"
SENT = "sent"  # the request left (or was about to): outcome unknown until an answer is recorded
CREATED = "created"
FAILED = "failed"  # the service refused it for good, or retries gave up with the user certainly not created
SKIPPED = "skipped"  # the UPN belongs to a user this journal did not create
STATES: tuple[str, ...] = (PENDING, SENT, CREATED, FAILED, SKIPPED)


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
CREATE TABLE IF NOT EXISTS steps (
    customer TEXT NOT NULL,
    upn_key TEXT NOT NULL,
    step TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('sent', 'done', 'failed')),
    request_id TEXT NOT NULL,
    detail TEXT,
    run_id INTEGER,
    sent_at TEXT,
    done_at TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (customer, upn_key, step)
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
_OUTCOME_SQL = {
    Status.CREATED: _CREATED_SQL,
    Status.RESTORED: _CREATED_SQL,  # ours from now on, as a created user (its `restore` step record says how)
    Status.FAILED: _FAILED_SQL,
    Status.SKIPPED: _SKIPPED_SQL,
}

#: A step after create, as it leaves: (customer, upn_key, step, request_id, run_id, now). The first send of a
#: request id keeps its `sent_at` when a later run sends it again.
_STEP_SENT_SQL = """
INSERT INTO steps (customer, upn_key, step, state, request_id, detail, run_id, sent_at, done_at, updated_at)
VALUES (?1, ?2, ?3, 'sent', ?4, NULL, ?5, ?6, NULL, ?6)
ON CONFLICT (customer, upn_key, step) DO UPDATE SET
    state = 'sent', detail = NULL, run_id = excluded.run_id,
    sent_at = CASE WHEN steps.state = 'sent' AND steps.request_id = excluded.request_id
                   THEN steps.sent_at ELSE excluded.sent_at END,
    request_id = excluded.request_id, updated_at = excluded.updated_at
"""
#: Its outcome: (customer, upn_key, step, state, request_id, detail, run_id, now); `state` is 'done' or 'failed'.
_STEP_OUTCOME_SQL = """
INSERT INTO steps (customer, upn_key, step, state, request_id, detail, run_id, sent_at, done_at, updated_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, CASE WHEN ?4 = 'done' THEN ?8 END, ?8)
ON CONFLICT (customer, upn_key, step) DO UPDATE SET
    state = excluded.state, request_id = excluded.request_id, detail = excluded.detail, run_id = excluded.run_id,
    done_at = excluded.done_at, updated_at = excluded.updated_at
"""


def create_tables(connection: sqlite3.Connection) -> None:
    """Every table of this format (inside the caller's transaction); existing ones are left as they are."""
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            connection.execute(statement)


def migrate(connection: sqlite3.Connection, path: Path, version: str | None) -> str | None:
    """Bring a journal of an earlier format to this one, inside the caller's transaction (after
    `create_tables`, which made the tables it lacked); returns the version it has now. Unknown versions are left
    for the caller to refuse."""
    if version in MIGRATES_FROM:
        connection.execute("UPDATE meta SET value = ? WHERE key = 'version'", (str(SCHEMA_VERSION),))
        log.info("%s: journal format %s brought to %s (step records added)", path, version, SCHEMA_VERSION)
        return str(SCHEMA_VERSION)
    return version
