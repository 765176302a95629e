"""`--state FILE`: the users of each customer, kept across restarts, durable before the sandbox answers. Never a
password.

The real service does not lose a user it answered 200 for, so neither may the sandbox: a rehearsal against a
sandbox killed -9 must not report users `skipped` that the tenant never got. The file is therefore a snapshot
followed by a write-ahead log:

    { "format": "bulkonboard-sandbox-state", "version": 2, "customers": {id: {"users": [...]}} }   <- snapshot
    {"customer": "<id>", "user": {...}}                                                            <- one line
    {"customer": "<id>", "user": {...}}                                                               per write

Every write (create, delete, restore, update) appends one line of the user's new record; the answer waits until
the line is fsync'd (`StateLog.durable`, awaited by the app's frame for every answer, reads included, since a
read may show a write not yet saved). Writes that come while an fsync is under way share the next one (group
commit), so a write costs one appended line, never a rewrite of the whole file. Reading replays the lines over
the snapshot; starting and a clean stop compact the file (the snapshot alone, written atomically). A last line
cut short by a kill is a write that was never answered: it is dropped with a warning. Version 1 (a snapshot
alone, written lazily) is still read.

All of this is the sandbox's own design: Partner Center documents nothing about how it stores users.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

from .data import SandboxDataError
from .store import ACTIVE, INACTIVE, Record, Store, without_password

log = logging.getLogger("bulkonboard.sandbox")

FORMAT = "bulkonboard-sandbox-state"
VERSION = 2
_READABLE_VERSIONS = (1, 2)


class StateNotSaved(Exception):
    """The state file could not be written: the answer must not leave as if the write were kept."""


def read_state(path: Path) -> dict[str, list[Record]] | None:
    """Users by customer id (in creation order) from a state file; None when the file does not exist yet."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise SandboxDataError(f"{path}: cannot read the sandbox state file ({exc})") from None
    try:
        document, end = json.JSONDecoder().raw_decode(text.lstrip())
        end += len(text) - len(text.lstrip())
    except ValueError as exc:
        raise SandboxDataError(f"{path}: the sandbox state file is not valid JSON ({exc})") from None
    users = _snapshot(path, document)
    _replay(path, text[end:], users)
    return {customer_id: list(records.values()) for customer_id, records in users.items()}


def _snapshot(path: Path, document: Any) -> dict[str, dict[str, Record]]:
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise SandboxDataError(f'{path}: not a sandbox state file (expected "format": "{FORMAT}")')
    if document.get("version") not in _READABLE_VERSIONS:
        raise SandboxDataError(f"{path}: sandbox state version {document.get('version')!r} is not supported")
    customers = document.get("customers")
    if not isinstance(customers, dict):
        raise SandboxDataError(f'{path}: "customers" must be an object of customer id -> users')
    result: dict[str, dict[str, Record]] = {}
    for customer_id, entry in customers.items():
        users = entry.get("users") if isinstance(entry, dict) else None
        if not isinstance(users, list):
            raise SandboxDataError(f"{path}: customers.{customer_id}.users must be a list")
        records = result.setdefault(customer_id, {})
        for index, user in enumerate(users):
            if not _is_record(user):
                raise SandboxDataError(
                    f"{path}: customers.{customer_id}.users[{index}] needs id, userPrincipalName and state"
                )
            records[user["id"].lower()] = without_password(user)
    return result


def _replay(path: Path, tail: str, users: dict[str, dict[str, Record]]) -> None:
    """Apply the logged writes in order: a record replaces the one with its id, or joins at the end."""
    lines = tail.split("\n")
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if not (isinstance(entry, dict) and isinstance(entry.get("customer"), str) and _is_record(entry.get("user"))):
            if number == len(lines) - 1:  # no newline after it: cut short by a kill, so never answered
                log.warning("sandbox: %s: dropped a write cut short at the end of the state file", path)
                return
            raise SandboxDataError(f"{path}: the sandbox state file has a damaged write log entry ({line[:80]!r})")
        record = without_password(entry["user"])
        users.setdefault(entry["customer"], {})[record["id"].lower()] = record


def _is_record(user: Any) -> bool:
    return (
        isinstance(user, dict)
        and isinstance(user.get("id"), str)
        and isinstance(user.get("userPrincipalName"), str)
        and user.get("state") in (ACTIVE, INACTIVE)
    )


def render_state(snapshot: dict[str, list[Record]]) -> str:
    document: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "customers": {
            customer_id: {"users": without_password(users)} for customer_id, users in snapshot.items()
        },
    }
    return json.dumps(document, indent=1, ensure_ascii=False) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """A temporary file beside `path`, fsync'd, renamed over it, and the directory fsync'd (so the rename is kept)."""
    directory = path.parent if str(path.parent) else Path(".")
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened or synced
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class StateLog:
    """Appends every write to the state file and tells the app when it is on disk; compacts at start and stop.

    `record` is the store's `on_change` (called on the loop, right after the change); `durable()` returns once
    every write recorded before the call is fsync'd, or raises `StateNotSaved`. A failed append is cut off the
    file and tried again with the next write, so a disk that recovers loses nothing and never leaves half a line.
    """

    def __init__(self, path: Path, store: Store) -> None:
        self.path = path
        self.store = store
        self.commits = 0  # fsyncs of appended writes (for tests: writes share them)
        self._file: BinaryIO | None = None
        self._lines: list[bytes] = []  # recorded, not yet appended
        self._recorded = 0  # writes recorded so far
        self._durable = 0  # writes on disk so far
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Compact (the loaded snapshot and replayed log become one snapshot), then append from there."""
        write_atomically(self.path, render_state(self.store.snapshot()))
        self._file = open(self.path, "ab")  # noqa: SIM115 - kept open for the sandbox's life, closed in close()
        self._task = asyncio.create_task(self._run(), name="sandbox-state-log")

    def record(self, customer_id: str, record: Record) -> None:
        entry = {"customer": customer_id, "user": without_password(record)}
        self._lines.append((json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8"))
        self._recorded += 1

    async def durable(self) -> None:
        target = self._recorded
        if target <= self._durable:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, waiter))
        self._wake.set()
        await waiter

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            failed = False
            if self._lines:
                lines, self._lines = self._lines, []
                upto = self._recorded
                try:
                    await asyncio.to_thread(self._append, b"".join(lines))
                except OSError as exc:
                    failed = True
                    self._lines[:0] = lines  # tried again with the next write
                    log.error("sandbox: cannot write the state file %s: %s", self.path, exc)
                    self._settle(StateNotSaved(f"{self.path}: {exc.strerror or exc}"))
                else:
                    self._durable = upto
                    self.commits += 1
            self._settle(None)
            if self._closing and (failed or not self._lines):
                return

    def _append(self, data: bytes) -> None:
        assert self._file is not None
        start = self._file.tell()
        try:
            self._file.write(data)
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError:
            with contextlib.suppress(OSError):  # never leave half a line for the next append to follow
                self._file.truncate(start)
                self._file.seek(start)
            raise

    def _settle(self, error: StateNotSaved | None) -> None:
        waiting = []
        for target, waiter in self._waiters:
            if waiter.done():
                continue
            if error is not None:
                waiter.set_exception(error)
            elif target <= self._durable:
                waiter.set_result(None)
            else:
                waiting.append((target, waiter))
        self._waiters = waiting

    async def close(self) -> None:
        """Append what is pending, then compact. Never cancels a write half-way."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        if self._file is not None:
            self._file.close()
            self._file = None
        try:
            await asyncio.to_thread(write_atomically, self.path, render_state(self.store.snapshot()))
        except OSError as exc:  # the log lines already hold every write: the next start replays them
            log.error("sandbox: cannot compact the state file %s: %s", self.path, exc)
