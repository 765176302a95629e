"""The dry run as a library call: read, validate against the customer's facts, write the report.

The CLI only chooses the parts (which facts source, which progress); this is where they meet, so the same dry
run can be called from Python, from a test, or before a real run.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ..model import RowResult, Status
from ..progress import NullProgress, Progress, ShowsProgress
from ..sheets.columns import check_columns
from ..sheets.facts import ANY_CUSTOMER, CustomerFacts, FactsSource
from ..sheets.reader import Sheet
from ..sheets.validation import CheckedRow, Validation, customers_in, validate
from ..workbook.writers import ReportWriter, Summary


@dataclass(frozen=True, slots=True)
class DryRunOptions:
    customer: str = ""
    generate_passwords: bool = False
    default_usage_location: str | None = None
    default_licenses: tuple[str, ...] = ()  # --license: for rows whose licenses cell is empty
    restore_deleted: bool = False  # --restore-deleted


def display_fields(checked: CheckedRow) -> dict[str, str]:
    """The row's fields as they would be sent, for the workbook; never the password."""
    user = checked.user
    return {
        "displayName": user.displayName,
        "firstName": user.firstName,
        "lastName": user.lastName,
        "usageLocation": user.usageLocation,
        "immutableId": user.immutableId,
        "customerTenantId": "" if user.customerTenantId == ANY_CUSTOMER else user.customerTenantId,
        "licenses": "; ".join(user.licenses),
        "forceChangePassword": "TRUE" if user.forceChangePassword else "FALSE",
        **dict(user.profile),  # as sent (a hire date as Graph's date-time)
        **({"manager": user.manager} if user.manager else {}),
    }


def checked_to_result(checked: CheckedRow) -> RowResult:
    return RowResult(
        row=checked.user.row,
        userPrincipalName=checked.user.userPrincipalName,
        status=checked.status,
        userId=checked.existing_user_id,
        problems=checked.problems,
        customerTenantId="" if checked.user.customerTenantId == ANY_CUSTOMER else checked.user.customerTenantId,
        display=display_fields(checked),
    )


async def gather_facts(
    sheet: Sheet, source: FactsSource, customer: str, progress: Progress | None = None
) -> dict[str, CustomerFacts]:
    """One question per customer, not per row: a sheet of 5,000 rows for one customer asks once. Listing a
    customer's users is the slow part (seconds for thousands): `progress` shows their count as they come."""
    if progress is not None and isinstance(source, ShowsProgress):
        source.show_progress(progress)
    return {c: await source.customer_facts(c) for c in customers_in(sheet, customer) if c}


def check_sheet(sheet: Sheet, options: DryRunOptions) -> None:
    check_columns(
        sheet,
        generate_passwords=options.generate_passwords,
        default_usage_location=options.default_usage_location,
        default_customer=options.customer,
    )


def run_validation(sheet: Sheet, facts: dict[str, CustomerFacts], options: DryRunOptions) -> Validation:
    return validate(
        sheet,
        facts,
        default_customer=options.customer,
        generate_passwords=options.generate_passwords,
        default_usage_location=options.default_usage_location,
        default_licenses=options.default_licenses,
        restore_deleted=options.restore_deleted,
    )


def write_report(
    validation: Validation,
    sheet: Sheet,
    report: Path,
    *,
    customer: str,
    started: datetime,
    source_name: str,
    progress: Progress | None = None,
) -> Summary:
    progress = progress or NullProgress()
    progress.start(len(validation), "validating")
    with ReportWriter(report, kind="validation", extra_columns=tuple(sheet.present)) as writer:
        pending = 0
        pending_bad = 0
        for checked in validation:
            writer.add(checked_to_result(checked))
            pending += 1
            pending_bad += checked.status is Status.INVALID
            if pending == 1000:
                progress.advance(pending, failed=pending_bad)
                pending = pending_bad = 0
        progress.advance(pending, failed=pending_bad)
        progress.stop()
        summary = Summary(
            kind="validation",
            input_path=sheet.path,
            customer=customer,
            started=started,
            finished=datetime.now(UTC),
            counts={s.value: validation.counts.get(s, 0) for s in (Status.VALID, Status.SKIPPED, Status.INVALID)},
            correlation_id=str(uuid.uuid4()),
            problem_counts=dict(validation.problem_counts),
            extra={"source": source_name},
            licenses=validation.license_demand,
            licenses_note=validation.licenses_note,
        )
        writer.close(summary)
    return summary
