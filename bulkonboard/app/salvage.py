"""What a run that failed once sending had begun still tells: a line for every row, and why it stopped.

Apart from the runner because the words matter on their own: a row the run had taken "may exist" (its request
may have left), a row it never took was "not sent", and a failure's own text reaches a workbook only when it is
one of ours (a bug's text might hold anything, and a workbook never holds a secret).
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import cast

from ..errors import BulkOnboardError
from ..model import Code, Problem, RowResult, Status
from ..protocols import CheckedRowLike
from ..sheets.validation import CheckedRow
from .dryrun import checked_to_result


def failure_text(failure: BaseException) -> str:
    """Why the run failed, for the Summary: a command error's own line; a bug only by its kind (its text might
    hold anything, and a workbook never holds a secret)."""
    if isinstance(failure, BulkOnboardError):
        return failure.message
    if isinstance(failure, KeyboardInterrupt | asyncio.CancelledError):
        return "interrupted at once"
    if isinstance(failure, sqlite3.Error):  # the journal's own failure, e.g. a full disk
        return f"cannot write the journal ({failure})"
    if isinstance(failure, OSError):
        return f"cannot write ({failure.strerror or type(failure).__name__})"
    return f"unexpected {type(failure).__name__} (a bug: please report it)"


class Tally:
    """The rows handed to the results workbook so far, counted as its Summary counts them."""

    def __init__(self) -> None:
        self.rows = 0
        self.counts: dict[str, int] = {}
        self.problem_counts: dict[str, int] = {}

    def add(self, result: RowResult) -> None:
        self.rows += 1
        self.counts[result.status.value] = self.counts.get(result.status.value, 0) + 1
        for problem in result.problems:
            self.problem_counts[problem.code] = self.problem_counts.get(problem.code, 0) + 1


def unfinished(checked: CheckedRow, why: str, *, taken: bool) -> RowResult:
    """A row of a failed run that has no result: invalid and skipped rows as validation said; a row to create
    as `pending` (`run.interrupted`), in doubt if the pipeline had taken it (its request may have left)."""
    result = to_result(checked)
    if checked.status is not Status.VALID:
        return result
    if taken:
        message = (
            f"may exist: the run failed while this row was under way ({why}); run the same command again with "
            "the same journal, or check the tenant"
        )
    else:
        message = f"not sent: the run failed before this row ({why}); run the same command again"
    result.status, result.userId = Status.PENDING, None
    result.problems = (Problem(Code.RUN_INTERRUPTED, message),)
    return result


def to_result(checked: CheckedRowLike) -> RowResult:
    """The dry run's own row result (its columns, never the password); the pipeline only ever hands back the
    CheckedRows the runner gave it.

    The results' `licenses` column lists the licenses the user was given (the license step fills it in as each
    is done), never what the row asked for: a cell that repeated the request would read as licenses the user
    holds. What a row asked for is in the input sheet; what was refused, in `problems`."""
    result = checked_to_result(cast(CheckedRow, checked))
    if result.display.get("licenses"):
        result.display["licenses"] = ""
    return result
