"""How `journal show` draws a journal for a person: tables that read at 80 columns.

Why this layout: a journal's runs share one customer (a journal is per customer and service) and, night after
night, one input file; as table columns, a 36-character customer id was folded into 5-character pieces and every
header wrapped mid-word ("create|d") at 80 columns. What every run shares is said once above the table; the table
keeps what differs, each header whole. Rows (`--rows`) carry two ids of 36 characters each: on a terminal narrower
than their table, each row is two lines (what happened, then its ids), never an id cut in pieces. Piped into a
file or grep, the console is wide and nothing is cut short.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

RESULT_COLUMNS = ("created", "skipped", "invalid", "failed")
#: The rows table's width with whole ids: narrower than this, each row takes two lines.
WIDE_ROWS = 150
_STATE_STYLES = {"created": "green", "skipped": "cyan", "failed": "red", "sent": "yellow", "pending": "dim"}


def journal_console() -> Console:
    """Tables for a person; piped into a file or grep, nothing is cut short to fit 80 columns."""
    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console.width = 240
    return console


def short_time(stamp: str | None) -> str:
    return (stamp or "")[:19].replace("T", " ")


def print_journal(console: Console, document: dict[str, Any]) -> None:
    console.print(Text(f"journal: {document['journal']}", style="bold"))
    console.print(f"service: {document['service']}")
    runs = document["runs"]
    shared = {
        name: {run[key] for run in runs} for name, key in (("customer", "customer"), ("input", "input_path"))
    }
    for name, values in shared.items():
        if len(values) == 1:
            value = next(iter(values))
            console.print(f"{name}: {Path(value).name if name == 'input' else value}")
    if not runs:
        console.print("no runs recorded")
    else:
        console.print(
            _runs_table(
                runs, input_column=len(shared["input"]) > 1, customer_column=len(shared["customer"]) > 1
            )
        )
    if "rows" in document:
        _print_rows(console, document["rows"])


def _column(table: Table, name: str, *, right: bool = False, wrap: bool = False) -> None:
    """A column whose header never wraps mid-word: at least as wide as its name."""
    table.add_column(name, justify="right" if right else "left", min_width=len(name), no_wrap=not wrap)


def _runs_table(runs: list[dict[str, Any]], *, input_column: bool, customer_column: bool) -> Table:
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, show_edge=False)
    _column(table, "run", right=True)
    _column(table, "started")
    _column(table, "finished", wrap=True)
    for name in (*RESULT_COLUMNS, "exit"):
        _column(table, name, right=True)
    if input_column:
        _column(table, "input", wrap=True)
    if customer_column:  # a sheet with a customerTenantId column: whole ids, one run a line each
        _column(table, "customer")
    for run in runs:
        table.add_row(*_run_cells(run, input_column=input_column, customer_column=customer_column))
    return table


def _run_cells(run: dict[str, Any], *, input_column: bool, customer_column: bool) -> list[str | Text]:
    counts = run["counts"]
    started = short_time(run["started"])
    if counts is None:
        left = run["rows_by_state"]
        finished = Text(run["state"].split(":")[0], style="yellow")
        cells = [f"{left.get('created', 0)}", "", "", ""]
        if left:
            finished.append(" — " + ", ".join(f"{state} {n}" for state, n in sorted(left.items())))
    else:
        ended = short_time(run["finished"])
        finished = Text(ended[11:] if ended[:10] == started[:10] else ended)  # the same day: the time alone
        cells = [str(counts.get(name, 0)) for name in RESULT_COLUMNS]
    row: list[str | Text] = [str(run["id"]), started[:16], finished, *cells]
    row.append("" if run["exit_code"] is None else str(run["exit_code"]))
    if input_column:
        row.append(Path(run["input_path"]).name)
    if customer_column:
        row.append(run["customer"])
    return row


def _print_rows(console: Console, rows: list[dict[str, Any]]) -> None:
    if not rows:
        console.print("no rows match")
        return
    if console.width >= WIDE_ROWS:
        table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, show_edge=False)
        for name in ("run", "row", "userPrincipalName", "state", "userId", "requestId"):
            _column(table, name)
        _column(table, "reason", wrap=True)
        for row in rows:
            table.add_row(*_row_cells(row))
        console.print(table)
        return
    for row in rows:  # narrow: what happened, then the ids whole, each on a line of its own
        run, number, upn, state, user_id, request_id, reason = _row_cells(row)
        console.print(Text(f"run {run} row {number}  ").append(state).append(f"  {upn}"))
        ids = [f"userId {user_id}" if user_id else "", f"requestId {request_id}" if request_id else ""]
        ids = [part for part in ids if part]
        together = "    " + "  ".join(ids)
        for text in [together] if len(together) <= console.width else [f"    {part}" for part in ids]:
            console.print(Text(text, style="dim"), no_wrap=True, overflow="ignore")
        if reason:
            console.print(Text(f"    {reason}"))


def _row_cells(row: dict[str, Any]) -> tuple[str, str, str, Text, str, str, str]:
    return (
        "" if row["run_id"] is None else str(row["run_id"]),
        "" if row["row"] is None else str(row["row"]),
        row["upn"],
        Text(row["state"], style=_STATE_STYLES.get(row["state"], "")),
        row["user_id"] or "",
        row["request_id"] or "",
        row["reason"] or "",
    )
