"""`bulkonboard journal show` and `bulkonboard journal forget`: look into the run journal, re-drive chosen rows.

`show` only reads, so it works while a run holds the journal (WAL lets a reader in beside the writer).
`forget` changes what the next run does, so it takes the run lock first (a running run is never edited under
its feet: exit 3 naming it), says what it will forget before it does, and asks at a terminal. A script must say
`--yes`: without a terminal and without it, `forget` refuses (exit 2) rather than guess.

The group is attached to the main command by cli.py (`main.add_command(journal_command)`).
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.table import Table

from ..app import paths
from ..errors import BulkOnboardError, InputError
from ..journal.lock import RunLock, lock_path_for
from ..journal.store import (
    CREATED,
    SENT,
    STATES,
    Journal,
    RowFilter,
    RowRecord,
    RunRecord,
    journals_under,
    open_existing,
    read_meta,
)
from .console import Output
from .group import CommandGroup
from .journal_view import journal_console, print_journal, short_time

F = TypeVar("F", bound=Callable[..., Any])

#: How many UPNs `forget` names before "and N more".
NAMED_IN_PLAN = 5




@click.group("journal", cls=CommandGroup)
def journal_command() -> None:
    """Look into the run journal (what each run sent, created and failed), or make it forget rows on purpose.

    \b
    A run's journal remembers every row it sent, so that a crashed run is finished without duplicates and a
    later sheet that repeats earlier rows creates only the new people. By default there is one journal per
    customer and service under the state directory (~/.local/state/bulkonboard/journals).
    """


# ---------------------------------------------------------------------------------------------------------------
# show


@journal_command.command("show")
@click.option(
    "--journal",
    "journal_path",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PATH",
    help="The journal to read (default: the ones under the state directory, for --customer).",
)
@click.option("--customer", metavar="ID", help="Only this customer's runs and rows.")
@click.option("--run", "run_id", type=click.IntRange(min=1), metavar="N", help="Show run N and its rows.")
@click.option(
    "--rows", "show_rows", is_flag=True, help="List the journal's rows (every run's), not only the runs."
)
@click.option(
    "--status",
    "states",
    type=click.Choice(STATES),
    multiple=True,
    help="Only rows in this state (repeatable); implies --rows.",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="json: one document on stdout, for scripts.",
)
def show(
    journal_path: Path | None,
    customer: str | None,
    run_id: int | None,
    show_rows: bool,
    states: tuple[str, ...],
    output_format: str,
) -> None:
    """List the runs of a journal (when, input, customer, counts, exit) and, with --run N or --rows, its rows.

    Without --journal: the journals under the state directory that hold --customer, or, without --customer, a
    list of every journal there.
    """
    customer = customer.strip() if customer else None
    if journal_path is not None:
        found = [_existing(journal_path)]
    else:
        directory = paths.state_dir() / "journals"
        found = journals_under(directory)
        if customer is None:
            _list_journals(found, directory, output_format)
            return
        found = [path for path in found if _holds_customer(path, customer)]
        if not found:
            raise InputError(f"no journal under {directory} holds customer {customer}; give --journal PATH")

    documents = []
    for path in found:
        with open_existing(path) as journal:
            documents.append(_describe(journal, customer, run_id, show_rows or bool(states), states))
    if output_format == "json":
        click.echo(json.dumps(documents if journal_path is None else documents[0], indent=2))
        return
    console = journal_console()
    for document in documents:
        print_journal(console, document)


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise InputError(f"{path}: no such journal")
    return path


def _holds_customer(path: Path, customer: str) -> bool:
    try:
        with open_existing(path) as journal:
            return bool(journal.runs(customer=customer)) or bool(
                journal.rows(RowFilter(customer=customer), limit=1)
            )
    except BulkOnboardError:
        return False


def _describe(
    journal: Journal, customer: str | None, run_id: int | None, with_rows: bool, states: Sequence[str]
) -> dict[str, Any]:
    runs = journal.runs(customer=customer, run_id=run_id)
    if run_id is not None and not runs:
        raise InputError(
            f"{journal.path}: no run {run_id}" + (f" for customer {customer}" if customer else "")
        )
    holder = _lock_holder(journal.path)
    by_run = journal.count_rows_by_run() if runs else {}
    document: dict[str, Any] = {
        "journal": str(journal.path),
        "service": journal.service,
        "runs": [_run_document(run, holder, by_run.get(run.id, {})) for run in runs],
    }
    if run_id is not None or with_rows:
        where = RowFilter(customer=customer, run_id=run_id, states=tuple(states) or None)
        document["rows"] = [_row_document(row) for row in journal.rows(where)]
    return document


def _run_document(run: RunRecord, holder: dict[str, Any], rows_by_state: dict[str, int]) -> dict[str, Any]:
    document = asdict(run)
    document["state"] = _run_state(run, holder)
    # What a run that never finished left behind, from its rows (its counts were never written).
    document["rows_by_state"] = rows_by_state
    return document


def _lock_holder(journal: Path) -> dict[str, Any]:
    """Who the run lock file says holds it: a run that ends empties it; one killed leaves its own name there."""
    try:
        holder = json.loads(lock_path_for(journal).read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _run_state(run: RunRecord, holder: dict[str, Any]) -> str:
    if run.finished is not None:
        return "finished"
    if (
        holder.get("pid") == run.pid
        and holder.get("host") == run.host == socket.gethostname()
        and _alive(run.pid)
    ):
        return "running"
    return "did not finish (killed or crashed): run the same command again to finish it"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _row_document(row: RowRecord) -> dict[str, Any]:
    return asdict(row)


def _list_journals(found: list[Path], directory: Path, output_format: str) -> None:
    entries = []
    for path in found:
        meta = read_meta(path)
        entry: dict[str, Any] = {"journal": str(path), "service": meta.get("service", "")}
        try:
            with open_existing(path) as journal:
                runs = journal.runs()
                entry["customers"] = sorted({run.customer for run in runs})
                entry["runs"] = len(runs)
                entry["last_run"] = runs[-1].started if runs else None
        except BulkOnboardError as exc:
            entry["error"] = exc.message
        entries.append(entry)
    if output_format == "json":
        click.echo(json.dumps(entries, indent=2))
        return
    console = journal_console()
    if not entries:
        console.print(f"no journals under {directory}")
        return
    table = Table(title=f"journals under {directory}", title_justify="left", header_style="bold")
    for name in ("journal", "service", "customers", "runs", "last run"):
        table.add_column(name)
    for entry in entries:
        table.add_row(
            entry["journal"],
            entry["service"],
            ", ".join(entry.get("customers", [])) or entry.get("error", ""),
            str(entry.get("runs", "")),
            short_time(entry.get("last_run")),
        )
    console.print(table)
    console.print("show one with: bulkonboard journal show --customer ID (or --journal PATH)")


# ---------------------------------------------------------------------------------------------------------------
# forget


@journal_command.command("forget")
@click.option(
    "--journal",
    "journal_path",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PATH",
    required=True,
    help="The journal to change.",
)
@click.option("--upn", "upns", multiple=True, metavar="UPN", help="Forget this user's row (repeatable).")
@click.option(
    "--status",
    "states",
    type=click.Choice([s for s in STATES]),
    multiple=True,
    help="Forget the rows in this state (repeatable): failed, sent, created, pending, skipped.",
)
@click.option(
    "--run", "run_id", type=click.IntRange(min=1), metavar="N", help="Forget the rows run N touched last."
)
@click.option("--customer", metavar="ID", help="Only this customer's rows.")
@click.option("--yes", "-y", "assume_yes", is_flag=True, help="Do not ask (for scripts).")
def forget(
    journal_path: Path,
    upns: tuple[str, ...],
    states: tuple[str, ...],
    run_id: int | None,
    customer: str | None,
    assume_yes: bool,
) -> None:
    """Make the journal forget chosen rows, so that the next run sends them afresh (with a new request id).

    Every given filter must match. It says what it will forget before it does, and asks at a terminal.
    """
    if not (upns or states or run_id is not None):
        raise InputError("say which rows to forget: --upn UPN, --status STATE or --run N (or several)")
    path = _existing(journal_path)
    where = RowFilter(
        customer=customer.strip() if customer else None,
        upns=tuple(upns) or None,
        states=tuple(states) or None,
        run_id=run_id,
    )
    output = Output()
    with RunLock(path, what="bulkonboard journal forget"), open_existing(path) as journal:
        matching = journal.rows(where)
        if not matching:
            click.echo(f"no row of {path} matches: nothing to forget")
            return
        click.echo(_plan(matching, path))
        _warn_about(matching, output)
        if not assume_yes:
            if not sys.stdin.isatty():
                raise InputError(
                    "refusing to forget without a confirmation: standard input is not a terminal; "
                    "add --yes to confirm from a script"
                )
            if not click.confirm(f"Forget {_rows(len(matching))}?", default=False):
                click.echo("nothing forgotten")
                sys.exit(1)
        forgotten = journal.forget(where)
    click.echo(f"forgot {_rows(forgotten)}; the next run sends {'it' if forgotten == 1 else 'them'} afresh")


def _rows(count: int) -> str:
    return f"{count} row{'s' if count != 1 else ''}"


def _plan(matching: list[RowRecord], path: Path) -> str:
    named = ", ".join(row.upn for row in matching[:NAMED_IN_PLAN])
    more = len(matching) - NAMED_IN_PLAN
    if more > 0:
        named += f" and {more} more"
    by_state: dict[str, int] = {}
    for row in matching:
        by_state[row.state] = by_state.get(row.state, 0) + 1
    states = ", ".join(f"{state} {count}" for state, count in sorted(by_state.items()))
    return f"will forget {_rows(len(matching))} of {path} ({states}): {named}"


def _warn_about(matching: list[RowRecord], output: Output) -> None:
    created = [row for row in matching if row.state == CREATED]
    if created:
        output.warn(
            f"{_rows(len(created))} recorded as CREATED: re-driving "
            f"{'it' if len(created) == 1 else 'them'} will try to create the user again (the service refuses a "
            "duplicate UPN, and the run then looks the user up and reports it as already existing)"
        )
    sent = [row for row in matching if row.state == SENT]
    if sent:
        output.warn(
            f"{_rows(len(sent))} sent without a known outcome: forgetting loses the request id that would "
            "settle it; if the service created the user, the next run finds it existing instead"
        )


# ---------------------------------------------------------------------------------------------------------------
# results


@journal_command.command("results")
@click.option(
    "--journal",
    "journal_path",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PATH",
    required=True,
    help="The run's journal (the exit-4 line names it).",
)
@click.option(
    "--run", "run_id", type=click.IntRange(min=1), metavar="N", help="The run to rebuild (default: the last one)."
)
@click.option("--force", is_flag=True, help="Overwrite OUT if it exists.")
@click.argument("out", metavar="OUT.xlsx", type=click.Path(dir_okay=False, path_type=Path))
def results(journal_path: Path, run_id: int | None, force: bool, out: Path) -> None:
    """Rebuild a run's results workbook from its journal, when the run could not write it (exit 4: a full disk,
    a read-only folder).

    OUT has the results' sheets (Rows, Summary, Problems) with every row the run recorded: created, skipped,
    failed, and sent without a known outcome. Rows never sent (invalid ones, users already in the tenant) and the
    display columns are not in the journal; the Summary says so. Only reads the journal: a run may hold it.
    """
    from ..app.rebuild import chosen_run, write_results_from_journal

    path = _existing(journal_path)
    if out.suffix.lower() != ".xlsx":
        raise InputError(f"{out}: the results workbook must be an .xlsx file")
    if out.exists() and not force:
        raise InputError(f"{out} exists; pass --force to overwrite it")
    if out.exists() and out.resolve() == path.resolve():
        raise InputError(f"{out}: refusing to write the results over the journal")
    with open_existing(path) as journal:
        run = chosen_run(journal, run_id)
        counts = write_results_from_journal(journal, run, out)
    listed = ", ".join(f"{status} {count}" for status, count in counts.items())
    click.echo(f"rebuilt the results of run {run.id} of {path} in {out} ({listed})")
