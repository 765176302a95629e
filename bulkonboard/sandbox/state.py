"""`--state FILE`: the users of each customer, kept across restarts as JSON. Never a password.

Writing the whole file after every creation would make a 10,000-user run quadratic, so changes only mark the
state dirty and one background task writes the latest snapshot: writes coalesce while one is under way, and a
final write happens on stop. Each write is atomic (a temporary file in the same directory, then `os.replace`), so
a reader or a crash never sees half a file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from .data import SandboxDataError
from .store import ACTIVE, INACTIVE, Record, Store, without_password

log = logging.getLogger("bulkonboard.sandbox")

FORMAT = "bulkonboard-sandbox-state"
VERSION = 1


def read_state(path: Path) -> dict[str, list[Record]] | None:
    """Users by customer id from a state file; None when the file does not exist yet."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise SandboxDataError(f"{path}: cannot read the sandbox state file ({exc})") from None
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise SandboxDataError(f"{path}: the sandbox state file is not valid JSON ({exc})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise SandboxDataError(f'{path}: not a sandbox state file (expected "format": "{FORMAT}")')
    if document.get("version") != VERSION:
        raise SandboxDataError(f"{path}: sandbox state version {document.get('version')!r} is not supported")
    customers = document.get("customers")
    if not isinstance(customers, dict):
        raise SandboxDataError(f'{path}: "customers" must be an object of customer id -> users')
    result: dict[str, list[Record]] = {}
    for customer_id, entry in customers.items():
        users = entry.get("users") if isinstance(entry, dict) else None
        if not isinstance(users, list):
            raise SandboxDataError(f"{path}: customers.{customer_id}.users must be a list")
        for index, user in enumerate(users):
            if not (
                isinstance(user, dict)
                and isinstance(user.get("id"), str)
                and isinstance(user.get("userPrincipalName"), str)
                and user.get("state") in (ACTIVE, INACTIVE)
            ):
                raise SandboxDataError(
                    f"{path}: customers.{customer_id}.users[{index}] needs id, userPrincipalName and state"
                )
        result[customer_id] = [without_password(user) for user in users]
    return result


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


class StateWriter:
    """Writes the store's snapshot after changes, coalescing bursts; `close()` waits for the last write."""

    def __init__(self, path: Path, store: Store) -> None:
        self.path = path
        self.store = store
        self.writes = 0
        self._pending = False  # changes not yet in a snapshot being written
        self._closing = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def mark_dirty(self) -> None:
        self._pending = True
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sandbox-state-writer")

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._pending:
                self._pending = False
                snapshot = self.store.snapshot()  # taken on the loop; records are never changed in place
                try:
                    await asyncio.to_thread(self._write, snapshot)
                except OSError as exc:
                    log.error("sandbox: cannot write the state file %s: %s", self.path, exc)
            if self._closing and not self._pending:
                return

    def _write(self, snapshot: dict[str, list[Record]]) -> None:
        write_atomically(self.path, render_state(snapshot))
        self.writes += 1

    async def close(self) -> None:
        """Write what is pending and stop. Never cancels a write half-way (the file would be stale)."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
