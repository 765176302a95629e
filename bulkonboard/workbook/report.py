"""The validation report and the results workbook: sheets Rows, Summary and Problems.

Why it streams: xlsxwriter's constant_memory mode writes each sheet row by row to a temp file, so a run of a
million users never keeps a list of rows; only small tallies (widths, counts) live in memory. The rows go through
the fast row writer (fastrows.py); the workbook appears whole or not at all (atomic.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from ..model import (
    OPTIONAL_FIELDS,
    SECRET_FIELDS,
    LicenseDemand,
    LicenseUse,
    RowResult,
    Status,
    join_problems,
)
from .atomic import AtomicTarget, abandon_workbook, close_workbook, new_workbook
from .cells import MAX_COLUMN_WIDTH, cell_text, column_letter
from .fastrows import Table

ROWS_SHEET = "Rows"
SUMMARY_SHEET = "Summary"
PROBLEMS_SHEET = "Problems"
KINDS = ("validation", "results")

#: The row's own fields shown after the outcome columns; the keys of `RowResult.display`. Never a password.
DISPLAY_COLUMNS: tuple[str, ...] = (
    "displayName",
    "firstName",
    "lastName",
    "usageLocation",
    "immutableId",
    "customerTenantId",
    "licenses",  # validation: as asked (or as `--license` filled it in); results: the SKUs assigned
    "forceChangePassword",  # TRUE or FALSE, as sent (README: "the fields sent")
)
ROWS_COLUMNS: tuple[str, ...] = (
    "row",
    "userPrincipalName",
    "status",
    "userId",
    "problems",
    "requestId",
    *DISPLAY_COLUMNS,
)
PROBLEMS_COLUMNS: tuple[str, ...] = ("row", "userPrincipalName", "field", "code", "message")

#: Fills by status (Excel's own "Bad", "Neutral" and "Good" colours). Valid rows stay plain: in a validation
#: report they are the bulk, and the eye should go to the rest.
STATUS_FILLS: dict[str, str] = {
    Status.INVALID.value: "#FFC7CE",
    Status.FAILED.value: "#FFC7CE",
    Status.SKIPPED.value: "#FFEB9C",
    Status.PARTIAL.value: "#F8CBAD",  # the user exists, a later step did not succeed
    Status.CREATED.value: "#C6EFCE",
    Status.RESTORED.value: "#C6EFCE",
}


@dataclass
class Summary:
    """What the Summary sheet says about a validation or a run; the caller knows the times and the counts."""

    kind: str  # "validation" or "results"
    input_path: Path
    customer: str  # customer id(s), "" if none
    started: datetime  # aware, UTC
    finished: datetime
    counts: dict[str, int]  # per status value (model.Status); a status left out is shown as 0
    correlation_id: str | None = None
    problem_counts: dict[str, int] = field(default_factory=dict)  # by problem code
    extra: dict[str, str | int | float] = field(
        default_factory=dict
    )  # e.g. "source", "achieved rate (users/s)"
    licenses: tuple[LicenseDemand, ...] = ()  # a dry run's table per SKU: available, asked, short
    licenses_note: str = ""  # said once when the rows' licenses could not be checked (offline)
    units_used: tuple[LicenseUse, ...] = ()  # a run's table per SKU: the units its license steps used


class ReportWriter:
    """Streams a validation report or a results workbook: sheets Rows, Summary, Problems.

    Rows are written in the order `add` is called. Nothing exists at `path` until `close(summary)` succeeds;
    leaving the `with` block without `close` (an exception, say) removes every temp file and leaves `path`
    as it was.
    """

    def __init__(self, path: Path, *, kind: str, extra_columns: tuple[str, ...] = ()) -> None:
        """`extra_columns`: the optional columns the sheet has (profile, manager: `model.OPTIONAL_FIELDS`), shown
        after the others as sent; a sheet without them gets no empty columns for them."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        self.path = Path(path)
        self.kind = kind
        self._target = AtomicTarget(self.path, 0o666)
        self._finished = False
        self._extra = tuple(name for name in OPTIONAL_FIELDS if name in extra_columns)
        self._columns = (*ROWS_COLUMNS, *self._extra)
        self._workbook = new_workbook(self._target, constant_memory=True)
        try:
            self._bold = self._workbook.add_format({"bold": True})
            # Sheet order is creation order: Rows, Summary, Problems. Summary is only written at close(),
            # which constant_memory allows because each sheet streams to its own temp file.
            self._row_tables = [Table(self._workbook, ROWS_SHEET, self._columns, self._bold)]
            self._summary_sheet = self._workbook.add_worksheet(SUMMARY_SHEET)
            self._problems = Table(self._workbook, PROBLEMS_SHEET, PROBLEMS_COLUMNS, self._bold)
        except BaseException:
            abandon_workbook(self._workbook, self._target)
            raise
        self._problem_tally: dict[str, int] = {}
        self._problems_not_listed = 0

    def __enter__(self) -> ReportWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self._finished:
            self.discard()

    def add(self, result: RowResult) -> None:
        if self._finished:
            raise RuntimeError("this report is already closed")
        display = result.display
        get = display.get
        # The usual display holds only the known, harmless columns: no key to search for a password.
        secret = "" if display.keys() <= _SHOWN_DISPLAY_KEYS else _secret_in(display)
        table = self._row_tables[-1]
        if table.full:  # past Excel's last row: go on in "Rows (2)" rather than lose results
            table = Table(
                self._workbook, f"{ROWS_SHEET} ({len(self._row_tables) + 1})", self._columns, self._bold
            )
            self._row_tables.append(table)
        upn = result.userPrincipalName
        problems = result.problems
        table.append(
            result.row,
            (
                upn,
                _STATUS_TEXT.get(result.status) or str(result.status),
                result.userId or "",
                join_problems(problems) if problems else "",
                result.requestId or "",
                # Non-text values are turned into text by the table, as `_display_text` does.
                get("displayName", ""),
                get("firstName", ""),
                get("lastName", ""),
                get("usageLocation", ""),
                get("immutableId", ""),
                _display_text(display, "customerTenantId") or result.customerTenantId,
                get("licenses", ""),
                get("forceChangePassword", ""),
                *(get(name, "") for name in self._extra),
            ),
            secret,
        )
        listed = result.status is not Status.SKIPPED  # its note (user.exists) says why; it is not a problem
        for problem in problems:
            self._problem_tally[problem.code] = self._problem_tally.get(problem.code, 0) + 1
            if not listed:
                continue
            if self._problems.full:
                self._problems_not_listed += 1
                continue
            self._problems.append(
                result.row, (upn, problem.field or "", problem.code, problem.message), secret
            )

    def close(self, summary: Summary) -> None:
        """Write the Summary sheet and put the finished workbook at `path`."""
        if self._finished:
            raise RuntimeError("this report is already closed")
        if summary.kind != self.kind:
            raise ValueError(f"a {self.kind} report cannot take a {summary.kind} summary")
        for table in self._row_tables:
            table.finish()
            self._highlight_statuses(table)
            print_setup(table.sheet, header_row=True)
        if self._problems.next_row == 1:  # bare headers read as "something failed to be written"
            self._problems.sheet.write_string(1, 0, NO_PROBLEMS[self.kind])
        self._problems.finish()
        print_setup(self._problems.sheet, header_row=True)
        print_setup(self._summary_sheet, header_row=False)
        self._write_summary(summary)
        self._finished = True
        close_workbook(self._workbook, self._target)

    def discard(self) -> None:
        """Give up on this report: remove its temp files; `path` is left as it was."""
        if not self._finished:
            self._finished = True
            abandon_workbook(self._workbook, self._target)

    def _highlight_statuses(self, table: Table) -> None:
        """Colour rows by status with conditional formats: one rule per status instead of a style on each of
        millions of cells (cheaper to write, and the colour follows the row when a person sorts)."""
        last_row = table.next_row - 1
        if last_row < 1:
            return
        status_col = ROWS_COLUMNS.index("status")
        status_ref = f"${column_letter(status_col)}2"
        for status, colour in STATUS_FILLS.items():
            table.sheet.conditional_format(
                1,
                0,
                last_row,
                len(self._columns) - 1,
                {
                    "type": "formula",
                    "criteria": f'={status_ref}="{status}"',
                    "format": self._workbook.add_format({"bg_color": colour}),
                },
            )

    def _write_summary(self, summary: Summary) -> None:
        sheet = self._summary_sheet
        lines = _SummaryLines(sheet, self._bold)
        lines.heading("item", "value")
        lines.add("kind", self.kind)
        lines.add("input file", str(summary.input_path))
        lines.add("customer", summary.customer)
        lines.add("started (UTC)", _iso_utc(summary.started))
        lines.add("finished (UTC)", _iso_utc(summary.finished))
        lines.add("duration (s)", round((summary.finished - summary.started).total_seconds(), 3))
        lines.add("correlation id", summary.correlation_id or "")

        lines.blank()
        lines.heading("rows by status", "count")
        counts = _counts_with_every_status(summary.counts, summary.kind)
        first_status_row = lines.next_row
        for status, count in counts.items():
            lines.add(status, count)
        last_status_row = lines.next_row - 1
        lines.add("total", sum(counts.values()), bold=True)
        if len(self._row_tables) > 1:
            lines.add("rows continue on", ", ".join(table.name for table in self._row_tables[1:]))

        if summary.extra:
            lines.blank()
            lines.heading("details", "value")
            for label, value in summary.extra.items():
                lines.add(label, value)

        if summary.licenses or summary.licenses_note:
            lines.blank()
            _write_license_table(lines, summary)
        if summary.units_used:
            lines.blank()
            _write_units_used(lines, summary.units_used)

        lines.blank()
        lines.heading("problems by code", "count")
        # The caller's counts win (they may cover rows this writer never saw); else what went through add().
        for code, count in (summary.problem_counts or self._problem_tally).items():
            lines.add(code, count)
        if self._problems_not_listed:
            lines.add(
                f"problems not listed on the {PROBLEMS_SHEET} sheet (Excel's row limit)",
                self._problems_not_listed,
            )

        sheet.set_column(0, 0, min(max(lines.label_width, 12) + 2, MAX_COLUMN_WIDTH))
        sheet.set_column(1, 1, min(max(lines.value_width, 12) + 2, MAX_COLUMN_WIDTH))
        for col, width in lines.widths.items():
            sheet.set_column(col, col, min(width, MAX_COLUMN_WIDTH))
        self._insert_outcome_chart(counts, first_status_row, last_status_row)

    def _insert_outcome_chart(self, counts: dict[str, int], first_row: int, last_row: int) -> None:
        chart = self._workbook.add_chart({"type": "column"})
        statuses = list(counts)
        chart.add_series(
            {
                "name": "rows",
                "categories": [SUMMARY_SHEET, first_row, 0, last_row, 0],
                "values": [SUMMARY_SHEET, first_row, 1, last_row, 1],
                # The cells' values cached in the chart (constant_memory keeps none to read back): without them
                # the categories are a number reference, and a reader that draws from the cache shows 1, 2, 3.
                "categories_data": statuses,
                "values_data": list(counts.values()),
                "points": [{"fill": {"color": STATUS_FILLS.get(status, "#D9D9D9")}} for status in statuses],
                "border": {"color": "#7F7F7F"},
                "data_labels": {"value": True},
            }
        )
        value_labels_only(chart)
        chart.set_title({"name": "Outcome" if self.kind == "results" else "Verdict"})
        chart.set_legend({"none": True})
        chart.set_y_axis({"name": "rows", "min": 0})
        self._summary_sheet.insert_chart(1, 3, chart)


#: What an empty Problems sheet says, so that bare headers are not taken for a workbook that failed.
NO_PROBLEMS = {
    "validation": "No problems: every row is valid or already exists.",
    "results": "No problems: no row was invalid or failed.",
}


def print_setup(sheet: Any, *, header_row: bool) -> None:
    """Printed as Excel users expect: landscape, as wide as one page (35 rows were 15 portrait pages), the header
    row on every page."""
    sheet.set_landscape()
    sheet.fit_to_pages(1, 0)
    if header_row:
        sheet.repeat_rows(0)


def value_labels_only(chart: Any) -> None:
    """Data labels that show the value alone in every reader. xlsxwriter writes only the parts asked for;
    LibreOffice takes a part left out as shown, so a label read "created; rows; 26". The parts are written
    explicitly off, in the order the schema requires, around the value."""
    write_value = chart._write_show_val

    def value_and_nothing_else() -> None:
        chart._xml_empty_tag("c:showLegendKey", [("val", 0)])
        write_value()
        for part in ("c:showCatName", "c:showSerName", "c:showPercent", "c:showBubbleSize"):
            chart._xml_empty_tag(part, [("val", 0)])

    chart._write_show_val = value_and_nothing_else


#: The license table's columns after the first (the product): what a person buying units reads left to right.
LICENSE_TABLE_COLUMNS = ("available", "asked", "short", "to do", "skuPartNumber", "customer")


def _write_license_table(lines: _SummaryLines, summary: Summary) -> None:
    """One line per SKU the rows ask for: what is free, what the rows to create ask, and what to buy."""
    if summary.licenses_note:
        lines.heading("licenses", summary.licenses_note)
        if not summary.licenses:
            return
    lines.row(("license", *LICENSE_TABLE_COLUMNS), bold=True)
    for sku in summary.licenses:
        to_do = f"buy {sku.short} more {sku.product_name}" if sku.short else "enough"
        lines.row(
            (sku.product_name, sku.available, sku.asked, sku.short, to_do, sku.sku_part_number, sku.customer)
        )


#: The columns of a run's "units used per SKU" table after the first (the product).
UNITS_USED_COLUMNS = ("assigned by this run", "confirmed after a lost answer", "skuPartNumber", "customer")


def _write_units_used(lines: _SummaryLines, used: tuple[LicenseUse, ...]) -> None:
    """One line per SKU the run's license steps gave out: units its requests took, and units an earlier request
    took whose answer was lost (found on the user by this run, counted once: here, never again)."""
    lines.row(("units used per SKU", *UNITS_USED_COLUMNS), bold=True)
    for sku in used:
        lines.row((sku.product_name, sku.assigned, sku.confirmed, sku.sku_part_number, sku.customer))


class _SummaryLines:
    """Label/value lines of the Summary sheet, written top to bottom as constant_memory requires."""

    def __init__(self, sheet: Any, bold: Any) -> None:
        self.sheet = sheet
        self.bold = bold
        self.next_row = 0
        self.label_width = 0
        self.value_width = 0
        self.widths: dict[int, int] = {}  # columns past the second, sized as the table fills them

    def heading(self, label: str, value: str) -> None:
        self.add(label, value, bold=True)

    def blank(self) -> None:
        self.next_row += 1

    def row(self, values: tuple[str | int, ...], *, bold: bool = False) -> None:
        """A line of a table wider than label/value (the license table)."""
        self.add(str(values[0]), values[1], bold=bold)
        row = self.next_row - 1
        cell_format = self.bold if bold else None
        for col, value in enumerate(values[2:], start=2):
            if isinstance(value, int):
                self.sheet.write_number(row, col, value, cell_format)
            else:
                self.sheet.write_string(row, col, cell_text(value), cell_format)
            self.widths[col] = max(self.widths.get(col, 10), len(str(value)) + 2)

    def add(self, label: str, value: str | int | float, *, bold: bool = False) -> None:
        row = self.next_row
        cell_format = self.bold if bold else None
        label = cell_text(str(label))
        self.sheet.write_string(row, 0, label, cell_format)
        self.label_width = max(self.label_width, len(label))
        if isinstance(value, bool):
            self.sheet.write_boolean(row, 1, value, cell_format)
        elif isinstance(value, int | float) and math.isfinite(value):
            self.sheet.write_number(row, 1, value, cell_format)
        else:  # text, or a NaN/infinity that xlsx cannot hold as a number
            text = cell_text(str(value))
            if text:
                self.sheet.write_string(row, 1, text, cell_format)
        self.value_width = max(self.value_width, len(str(value)))
        self.next_row = row + 1


#: Display keys that can never hold a password; a display with only these skips the search for one.
_SHOWN_DISPLAY_KEYS = frozenset(
    key for key in (*DISPLAY_COLUMNS, *OPTIONAL_FIELDS) if key.casefold() not in SECRET_FIELDS
)
_STATUS_TEXT: dict[object, str] = {status: status.value for status in Status}


def _secret_in(display: dict[str, str]) -> str:
    """A password that reached `display` by mistake: dropped from every column, and scrubbed from the row's
    other text (a service message may echo it). Too short a value would scrub innocent text; ignore it."""
    for key, value in display.items():
        if key.casefold() in SECRET_FIELDS and isinstance(value, str) and len(value) >= 4:
            return value
    return ""


def _display_text(display: dict[str, str], key: str) -> str:
    value = display.get(key)
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


#: The statuses each kind of workbook can hold: a dry run never creates, a run never leaves a row `valid`.
_KIND_STATUSES = {
    "validation": (Status.VALID, Status.SKIPPED, Status.INVALID),
    "results": (
        Status.CREATED, Status.RESTORED, Status.PARTIAL, Status.SKIPPED, Status.INVALID, Status.FAILED,
        Status.PENDING,
    ),  # fmt: skip
}


def _counts_with_every_status(counts: dict[str, int], kind: str) -> dict[str, int]:
    ordered = {
        status.value: int(counts.get(status.value, 0)) for status in _KIND_STATUSES.get(kind, tuple(Status))
    }
    for key, count in counts.items():  # anything else the caller counted, after the statuses
        ordered.setdefault(str(key), int(count))
    return ordered


def _iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC; a naive time is taken to be UTC already (the interface asks for aware ones)."""
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
