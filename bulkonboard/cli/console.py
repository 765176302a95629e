"""What a person (or a log collector) sees while a command works: progress, log lines, the closing table.

The core never asks "am I silent?": it is handed a `progress.Progress`, and `NullProgress` is the silent one (the
sqlite-utils habit); this module draws the rich one. Rich only ever writes to stderr, so stdout stays clean for
scripts.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any

from ..model import RowResult, Status
from ..progress import NullProgress, Progress, Slowdowns  # re-exported: their old home

if TYPE_CHECKING:
    from rich.console import Console

LOGGER_NAME = "bulkonboard"
log = logging.getLogger(LOGGER_NAME)


class RichProgress:
    """What a person at a terminal sees while a command works, drawn by `cli.progressbar`: a bar with done/total,
    rate and ETA, failures and what slowed the run; or, with no total, a spinner and a count."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._bar: Any = None
        self._task: Any = None
        self._slowdowns: Callable[[], Slowdowns] = Slowdowns

    def follow(self, slowdowns: Callable[[], Slowdowns]) -> None:
        self._slowdowns = slowdowns

    def start(self, total: int | None, description: str) -> None:
        from .progressbar import bar_for

        self.stop()
        self._bar = bar_for(self._console, counting=total is None, slowdowns=lambda: self._slowdowns())
        self._bar.start()
        self._task = self._bar.add_task(description, total=total, failed=0, sent=0)

    def advance(self, count: int = 1, *, failed: int = 0, unsent: int = 0) -> None:
        if self._bar is None:
            return
        fields = self._bar.tasks[0].fields
        self._bar.update(
            self._task, advance=count, failed=fields["failed"] + failed, sent=fields["sent"] + count - unsent
        )

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors; fields passed with `extra={"fields": {...}}` are merged.
    Every line has an `event` (a collector filters on it): `log` for a line that names none of its own."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "event": "log",
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            entry.update(fields)
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        return f"{stamp} {record.levelname.lower():7} {record.getMessage()}"


class Output:
    """Everything a command prints, chosen once from --quiet / --log-format and whether stderr is a terminal.

    Rich is imported the first time something is drawn for a person: a `--quiet` or JSON-logging run (cron's)
    never needs it."""

    def __init__(self, *, quiet: bool = False, log_format: str = "text", stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.json = log_format == "json"
        self._console: Console | None = None
        self.pending = PendingRows()
        self.interactive = not quiet and not self.json and self.console.is_terminal
        handler = logging.StreamHandler(self.stream)
        handler.setFormatter(JsonFormatter() if self.json else TextFormatter())
        log.handlers[:] = [handler]
        log.propagate = False
        # Text logs on a terminal would fight the progress bar: a person sees the table instead.
        if self.json:
            log.setLevel(logging.INFO)
        elif quiet:
            log.setLevel(logging.ERROR)
        else:
            log.setLevel(logging.WARNING)

    @property
    def console(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(file=self.stream, highlight=False, soft_wrap=True)
        return self._console

    def progress(self) -> Progress:
        return RichProgress(self.console) if self.interactive else NullProgress()

    def error(self, message: str) -> None:
        """The one clear line for a failure that stops the command (always shown, even with --quiet)."""
        if self.json:
            log.error(message, extra={"fields": {"event": "error"}})
        else:
            from rich.text import Text

            self.console.print(Text(f"error: {message}", style="bold red"))

    def warn(self, message: str) -> None:
        if self.json:
            log.warning(message, extra={"fields": {"event": "warning"}})
        elif not self.quiet:
            from rich.text import Text

            self.console.print(Text(f"warning: {message}", style="yellow"))

    def info(self, message: str) -> None:
        if self.json:
            log.info(message, extra={"fields": {"event": "info"}})
        elif not self.quiet:
            self.console.print(message)

    def row(self, result: RowResult, *, correlation_id: str) -> None:
        """One JSON line per row outcome (JSON logs only): what a log collector alerts on. Never a password:
        a RowResult holds none, and the problems' messages never quote one."""
        if not self.json:
            return
        if result.status is Status.PENDING:
            self.pending.add(result)  # one line for them all (`pending_line`): a stopped run is not 2,000 warnings
            return
        fields: dict[str, Any] = {
            "event": "row",
            "correlation_id": correlation_id,
            "row": result.row,
            "upn": result.userPrincipalName,
            "status": result.status.value,
        }
        if result.userId:
            fields["user_id"] = result.userId
        if result.requestId:
            fields["request_id"] = result.requestId
        if result.problems:
            fields["problems"] = [{"code": p.code, "message": p.message} for p in result.problems]
        level = logging.WARNING if result.status.value in ("invalid", "failed", "partial") else logging.INFO
        log.log(level, f"row {result.row} {result.status.value}", extra={"fields": fields})

    def pending_line(self, *, correlation_id: str) -> None:
        """The one JSON line for every row the run did not finish (JSON logs only, and only when there are any):
        how many, which rows, and how many may exist (a request of theirs may have reached the service)."""
        if not self.json or not self.pending.count:
            return
        pending = self.pending
        fields = {
            "event": "pending",
            "correlation_id": correlation_id,
            "count": pending.count,
            "may_exist": pending.may_exist,
            "rows": pending.ranges(),
        }
        said = f"{pending.count} rows pending: the run stopped before their outcome was known"
        log.warning(said, extra={"fields": fields})

    def summary(
        self, title: str, counts: Mapping[str, int], details: Mapping[str, Any], *, not_checked: Collection[str] = ()
    ) -> None:
        """The closing table for a person, or one summary log line for a collector. A status in `not_checked`
        (skipped, offline: nobody asked the tenant) says so rather than a 0 that reads as "nobody exists"."""
        if self.json:
            fields: dict[str, Any] = {"event": "summary", "counts": dict(counts)}
            if not_checked:
                fields["not_checked"] = sorted(not_checked)
            fields.update({key.replace(" ", "_"): value for key, value in details.items()})
            log.info(title, extra={"fields": fields})
            return
        if self.quiet:
            return
        from rich.table import Table
        from rich.text import Text

        table = Table(title=title, title_justify="left", show_header=True, header_style="bold")
        table.add_column("status")
        table.add_column("rows", justify="right")
        styles = {
            "valid": "green", "created": "green", "restored": "green", "skipped": "cyan", "invalid": "red",
            "failed": "red", "pending": "yellow", "partial": "yellow",
        }  # fmt: skip
        for status, count in counts.items():
            shown = Text("not checked", style="dim") if status in not_checked and not count else f"{count:,}"
            table.add_row(Text(status, style=styles.get(status, "")), shown)
        table.add_row(Text("total", style="bold"), f"{sum(counts.values()):,}")
        self.console.print(table)
        for key, value in details.items():
            self.console.print(f"{key}: {value}")


class PendingRows:
    """The rows a run did not finish, as few figures: a count, how many may exist, and the row numbers as ranges
    (rows come in input order, so a stopped run's thousands of rows are a handful of ranges)."""

    def __init__(self) -> None:
        self.count = 0
        self.may_exist = 0
        self._ranges: list[list[int]] = []

    def add(self, result: RowResult) -> None:
        self.count += 1
        self.may_exist += any(p.message.startswith(("may exist", "may be restored")) for p in result.problems)
        if self._ranges and result.row == self._ranges[-1][1] + 1:
            self._ranges[-1][1] = result.row
        else:
            self._ranges.append([result.row, result.row])

    def ranges(self) -> str:
        """`"4, 7-1950"`: the sheet's row numbers."""
        return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in self._ranges)
