"""The progress bar, laid out for an 80-column terminal: rich's own pieces, arranged so that nothing wraps.

Why its own columns: rich's defaults (bar, M/N, percent, speed, ETA, elapsed) add up past 80 columns, so rich
squeezed the bar to 9 characters and wrapped "rows/s"; and its speed counts every row completed, so a resumed run
whose first thousand rows needed no request started at "128.6 rows/s, ETA 0:00:11". Here the figures never wrap
(the bar gives way, never below a readable width at 80 columns), the rate and ETA count only rows that needed a
request, and failures, retries and 429s get a line of their own under the bar once there are any: a 30 s pause
for Retry-After says why the bar stands still.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Column
from rich.text import Text

from ..progress import Slowdowns


def bar_for(console: Console, *, counting: bool, slowdowns: Callable[[], Slowdowns]) -> Progress:
    """The bar for a known total, or (`counting`) a spinner and a count for work whose end is not known yet."""
    description = TextColumn("[bold]{task.description}", table_column=Column(no_wrap=True))
    if counting:  # nothing is sent while counting: no slowdowns to show
        columns: list[ProgressColumn] = [SpinnerColumn(), description, CountColumn(), TimeElapsedColumn()]
        return BarWithTrouble(*columns, console=console, transient=False, slowdowns=Slowdowns)
    bar = BarColumn(bar_width=None, table_column=Column(ratio=1, min_width=10))
    columns = [SpinnerColumn(), description, bar, CountColumn(), RateColumn(), EtaColumn()]
    return BarWithTrouble(*columns, console=console, transient=False, expand=True, slowdowns=slowdowns)


class BarWithTrouble(Progress):
    """The bar, and under it one line of what went wrong or slowed the run, once anything did."""

    def __init__(self, *columns: ProgressColumn, slowdowns: Callable[[], Slowdowns], **options: Any) -> None:
        self._slowdowns = slowdowns  # before rich's own set-up, which draws a first frame
        super().__init__(*columns, **options)

    def get_renderables(self) -> Iterable[RenderableType]:
        yield self.make_tasks_table(self.tasks)
        failed = sum(int(task.fields.get("failed", 0)) for task in self.tasks)
        line = trouble_line(failed, self._slowdowns())
        if line.plain:
            yield line


def trouble_line(failed: int, slowdowns: Slowdowns) -> Text:
    """`  3 failed · 12 retries · 2 × 429 (paused as the service asked)`; empty when nothing went wrong."""
    parts: list[tuple[str, str]] = []
    if failed:
        parts.append((f"{failed:,} with problems", "red"))  # invalid or failed: the Problems sheet says why
    if slowdowns.retries:
        parts.append((f"{slowdowns.retries:,} {'retry' if slowdowns.retries == 1 else 'retries'}", "yellow"))
    if slowdowns.throttled:
        parts.append((f"{slowdowns.throttled:,} × 429 (paused as the service asked)", "yellow"))
    line = Text("  " if parts else "")
    for index, (text, style) in enumerate(parts):
        if index:
            line.append(" · ")
        line.append(text, style=style)
    return line


class CountColumn(ProgressColumn):
    """`1,234/2,000`, or `1,234` while the total is not known: thousands separated, as the closing table has them."""

    def __init__(self) -> None:
        super().__init__(table_column=Column(no_wrap=True, justify="right"))

    def render(self, task: Task) -> Text:
        done = f"{int(task.completed):,}"
        return Text(done if task.total is None else f"{done}/{int(task.total):,}", style="progress.download")


def sending_rate(task: Task) -> float | None:
    """Rows per second among those that needed a request: rows done by an earlier run are not this run's pace."""
    elapsed, sent = task.elapsed or 0.0, float(task.fields.get("sent", task.completed))
    return sent / elapsed if elapsed > 0 and sent > 0 else None


class RateColumn(ProgressColumn):
    """Rows per second: the figure a person compares with --rate."""

    def __init__(self) -> None:
        super().__init__(table_column=Column(no_wrap=True, justify="right"))

    def render(self, task: Task) -> Text:
        rate = sending_rate(task)
        return Text("-- rows/s" if rate is None else f"{rate:,.1f} rows/s", style="progress.data.speed")


class EtaColumn(ProgressColumn):
    """`ETA 0:01:02` from the rate of the rows that needed a request; `ETA -:--:--` until there is one."""

    def __init__(self) -> None:
        super().__init__(table_column=Column(no_wrap=True))

    def render(self, task: Task) -> Text:
        rate = sending_rate(task)
        if task.finished:
            return Text("done", style="progress.elapsed")
        if rate is None or task.total is None:
            return Text("ETA -:--:--", style="progress.remaining")
        seconds = int(max(0.0, task.total - task.completed) / rate)
        return Text(f"ETA {timedelta(seconds=seconds)}", style="progress.remaining")
