"""`bulkonboard journal results`: a run's results workbook, rebuilt from its journal.

Why: the journal is written before every request, the results workbook only at the end. When the workbook cannot
be written (a full disk, a folder gone read-only, a crash at the very end) the run exits 4 and names this command,
so that what the service did is never lost. The workbook has the results' layout (sheets Rows, Summary, Problems);
what the journal does not hold (rows never sent: invalid ones, users already in the tenant; the display columns)
is said in the Summary, never made up. The steps after create (licenses) are read as the journal holds them now:
a license the journal knows as assigned is listed in `licenses`; one refused or in doubt makes the row `partial`,
with the step and the reason the run recorded.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from ..errors import InputError
from ..journal.store import CREATED, FAILED, PENDING, SENT, SKIPPED, Journal, RowFilter, RowRecord, RunRecord
from ..model import Code, Problem, RowResult, Status
from ..protocols import StepPrior, StepState
from ..workbook.writers import ReportWriter, Summary

#: A `code: message` item of the journal's `reason` (the results' `problems` text, joined by `; `).
_PROBLEM_START = re.compile(r"(?:^|; )([a-z][A-Za-z]*(?:\.[A-Za-z0-9_]+)+): ")

NOT_IN_JOURNAL = (
    "rows never sent (invalid rows, users validation found already in the tenant, rows an earlier run of this "
    "journal had created) and the display columns (displayName, firstName, lastName, usageLocation, immutableId): "
    "see the input sheet, or its validation report"
)


def chosen_run(journal: Journal, run_id: int | None) -> RunRecord:
    """Run `run_id`, or the journal's last run."""
    runs = journal.runs(run_id=run_id)
    if not runs:
        if run_id is not None:
            raise InputError(f"{journal.path}: no run {run_id} (see `bulkonboard journal show --journal {journal.path}`)")
        raise InputError(f"{journal.path}: no run recorded yet: nothing to rebuild")
    return runs[-1]


def write_results_from_journal(journal: Journal, run: RunRecord, out: Path) -> dict[str, int]:
    """Write `out` from the journal's rows of `run`; returns the counts per status."""
    records = journal.rows(RowFilter(run_id=run.id))
    counts = {
        status.value: 0
        for status in (Status.CREATED, Status.PARTIAL, Status.SKIPPED, Status.INVALID, Status.FAILED, Status.PENDING)
    }
    problem_counts: dict[str, int] = {}
    in_doubt = 0
    with ReportWriter(out, kind="results") as writer:
        for record in records:
            result = result_of(record)
            if result.status in (Status.CREATED, Status.SKIPPED):
                with_steps(result, journal.prior_steps(record.customer, record.upn_key))
            in_doubt += record.state == SENT
            counts[result.status.value] = counts.get(result.status.value, 0) + 1
            for problem in result.problems:
                problem_counts[problem.code] = problem_counts.get(problem.code, 0) + 1
            writer.add(result)
        writer.close(
            Summary(
                kind="results",
                input_path=Path(run.input_path),
                customer=run.customer,
                started=_moment(run.started) or datetime.now(UTC),
                finished=_moment(run.finished) or _last_record(records) or _moment(run.started) or datetime.now(UTC),
                counts=counts,
                correlation_id=run.correlation_id,
                problem_counts=problem_counts,
                extra=_details(journal, run, in_doubt),
            )
        )
    return counts


def _details(journal: Journal, run: RunRecord, in_doubt: int) -> dict[str, str | int | float]:
    details: dict[str, str | int | float] = {
        "rebuilt from journal": str(journal.path),
        "journal run": run.id,
        "rebuilt at (UTC)": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "run finished": "yes" if run.finished else (
            "no: the run never recorded its end (killed, crashed, or it failed); 'finished (UTC)' is its last "
            "journal record"
        ),
        "exit code": run.exit_code if run.exit_code is not None else "not recorded",
    }
    if run.counts is not None:
        details["counts the run recorded at its end"] = ", ".join(f"{k} {v}" for k, v in run.counts.items())
    details["not in the journal"] = NOT_IN_JOURNAL
    details["rows listed"] = (
        "each user under the last run that touched it: the journal keeps a user's latest state, so a row a later "
        "run sent again is listed under that run"
    )
    if in_doubt:
        details["sent, outcome unknown"] = in_doubt
    return details


def result_of(record: RowRecord) -> RowResult:
    """One journal row as the results list it; a row whose outcome the journal never learnt says so, and is
    `pending` (as is a row a stopped run recorded as not created: `failed` in the journal, `run.interrupted`)."""
    result = RowResult(
        row=record.row or 0,
        userPrincipalName=record.upn,
        status=Status.FAILED,
        userId=record.user_id,
        requestId=record.request_id,
        customerTenantId=record.customer,
    )
    if record.state == CREATED:
        result.status = Status.CREATED
    elif record.state == SKIPPED:
        result.status = Status.SKIPPED
        result.problems = problems_of(record.reason)
    elif record.state == FAILED:
        result.problems = problems_of(record.reason)
        if result.problems and all(p.code == Code.RUN_INTERRUPTED for p in result.problems):
            result.status = Status.PENDING  # never answered: the run stopped first
    elif record.state == SENT:
        result.status, result.userId = Status.PENDING, None
        result.problems = (
            Problem(
                Code.RUN_INTERRUPTED,
                "may exist: its request left and the journal never learnt the outcome; run the same command "
                "again with the same journal (it settles it with the same request id), or check the tenant",
            ),
        )
    elif record.state == PENDING:
        result.status = Status.PENDING
        result.problems = (
            Problem(Code.RUN_INTERRUPTED, "not sent: the run stopped before its request left; run it again"),
        )
    return result


def with_steps(result: RowResult, steps: dict[str, StepPrior]) -> None:
    """The row's steps after create as the journal holds them: licenses assigned go to the `licenses` column (the
    part numbers it recorded); a step refused, or sent without its outcome learnt, makes the row `partial`."""
    licenses = [p.detail for name, p in sorted(steps.items()) if p.state is StepState.DONE and p.detail]
    result.display = {**result.display, "licenses": "; ".join(licenses)} if licenses else result.display
    for name, prior in sorted(steps.items()):
        if prior.state is StepState.DONE:
            continue
        what = (prior.detail or "refused") if prior.state is StepState.FAILED else (
            "may be done: its request left and the journal never learnt the outcome; run the same command again "
            "with the same journal (it checks the tenant before sending it again)"
        )
        result.status = Status.PARTIAL
        result.problems = (*result.problems, Problem(_step_code(name), f"{name}: {what}"))


def _step_code(step: str) -> str:
    """A step's problem code from its journal name: `license:group1` -> `license.failed`."""
    return Code.LICENSE_FAILED if step.startswith("license:") else f"{step.partition(':')[0]}.failed"


def problems_of(reason: str | None) -> tuple[Problem, ...]:
    """The `code: message` items the journal kept as text, back as problems for the Problems sheet. A text that
    is not such a list (the journal always writes one) is kept whole, under an empty code rather than a made-up one."""
    if not reason:
        return ()
    starts = list(_PROBLEM_START.finditer(reason))
    if not starts or starts[0].start() != 0:
        return (Problem("", reason),)
    problems = []
    for index, match in enumerate(starts):
        end = starts[index + 1].start() if index + 1 < len(starts) else len(reason)
        problems.append(Problem(match.group(1), reason[match.end() : end]))
    return tuple(problems)


def _moment(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _last_record(records: list[RowRecord]) -> datetime | None:
    moments = [m for m in (_moment(r.updated_at) for r in records) if m is not None]
    return max(moments) if moments else None
