"""Every xlsx bulkonboard writes: the validation report, the results workbook, the input template and the
generated-passwords workbook (the one workbook that may hold passwords; mode 0600).

Why it is built this way:
- Reports stream. xlsxwriter's constant_memory mode writes each sheet row by row to a temp file, so a run of a
  million users never keeps a list of rows; only small tallies (widths, counts) live in memory.
- No output cell is ever a formula: every text cell is an inline string, written by `write_string` or, for the
  big Rows/Problems sheets, as the very same XML by `_SheetData` (a million rows in seconds, not a minute),
  so input such as `=HYPERLINK(...)`, `+1` or `@SUM(A1)` stays text, unchanged. Control characters get
  OOXML's `_xHHHH_` escape, which Excel decodes, so they survive instead of corrupting the file.
- A workbook appears at its path whole or not at all: it is written to a temp file beside the target and
  renamed over it at the end, so an interrupted run never leaves half a file where a person expects results.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import re
import secrets
import shutil
import stat
import string
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import xlsxwriter
from xlsxwriter.exceptions import XlsxWriterException

from ..errors import InputError, OwnFailure
from ..model import SECRET_FIELDS, RowResult, Status, join_problems
from .leftovers import LOCKS, SCRATCH_PREFIX, hold, remove_leftovers

#: Excel's hard limits: rows per sheet (the header included) and UTF-16 units per cell.
EXCEL_MAX_ROWS = 1_048_576
EXCEL_MAX_CELL_CHARS = 32_767
#: Appended to a cell cut at Excel's limit, so nobody mistakes a cut message for the whole one.
TRUNCATED_MARK = "…(truncated)"
#: Put in place of a password that turns up where it must not (e.g. a service message echoing it).
REDACTED = "[password hidden]"
MAX_COLUMN_WIDTH = 60

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
PASSWORDS_SHEET = "Passwords"
PASSWORDS_COLUMNS: tuple[str, ...] = ("row", "userPrincipalName", "password")

#: Fills by status (Excel's own "Bad", "Neutral" and "Good" colours). Valid rows stay plain: in a validation
#: report they are the bulk, and the eye should go to the rest.
STATUS_FILLS: dict[str, str] = {
    Status.INVALID.value: "#FFC7CE",
    Status.FAILED.value: "#FFC7CE",
    Status.SKIPPED.value: "#FFEB9C",
    Status.CREATED.value: "#C6EFCE",
}

#: Never let xlsxwriter turn text into a formula, a number or a link, whichever write call is used.
_SAFE_TEXT_OPTIONS: dict[str, Any] = {
    "strings_to_formulas": False,
    "strings_to_numbers": False,
    "strings_to_urls": False,
}

# Lone surrogates (text decoded with errors="surrogateescape", say) cannot be encoded as UTF-8 at all, and
# xlsxwriter would fail half-way through the file; they become U+FFFD instead.
_UNENCODABLE = re.compile("[\ud800-\udfff]")


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


# --------------------------------------------------------------------------------------------- cell text


def cell_text(value: str) -> str:
    """Text that Excel can hold: lone surrogates replaced, cut at Excel's cell limit with a visible mark.

    Control characters are left alone on purpose: xlsxwriter escapes them (`_x0001_`), and Excel shows the
    original text.
    """
    if not value.isascii():
        value = _UNENCODABLE.sub("\ufffd", value)
    # A string of at most half the limit in code points cannot exceed it in UTF-16 units: skip the slow count.
    if len(value) > EXCEL_MAX_CELL_CHARS // 2 and _utf16_units(value) > EXCEL_MAX_CELL_CHARS:
        keep = EXCEL_MAX_CELL_CHARS - _utf16_units(TRUNCATED_MARK)
        head = value.encode("utf-16-le")[: keep * 2]
        if 0xD8 <= head[-1] <= 0xDB:  # the cut fell inside a surrogate pair: drop its first half
            head = head[:-2]
        value = head.decode("utf-16-le") + TRUNCATED_MARK
    return value


def _utf16_units(value: str) -> int:
    """Excel counts a cell's length in UTF-16 units: a character outside the BMP (an emoji) counts twice."""
    return len(value.encode("utf-16-le")) // 2


def _scrub(text: str, secret: str) -> str:
    return text.replace(secret, REDACTED) if secret and secret in text else text


# ------------------------------------------------------------------------------------- atomic output


class WorkbookNotWritten(OwnFailure):
    """A workbook that could not be written (a full disk, a read-only or forbidden folder): exit 4, bulkonboard's
    own failure. `reason` alone (the system's words) lets a caller say in its own line how to get it back."""

    def __init__(self, path: Path, what: str, reason: str) -> None:
        super().__init__(f"{path}: {what} ({reason})")
        self.reason = reason



class _AtomicTarget:
    """A temp file beside `path`, created exclusively with `mode`; `commit` renames it over `path`.

    The temp file is in the same folder so that the rename is atomic; O_EXCL means it is ours and new, with
    its mode set at creation (no window where a passwords file is readable by others). The temp file and the
    scratch folder are locked while this writer lives, so that the next run removes them if it is killed, and
    never while it lives (leftovers.py); that next run is any writer's start.
    """

    def __init__(self, path: Path, mode: int) -> None:
        self.path = path
        remove_leftovers(path.parent)
        self.temp_path = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_BINARY", 0)
        try:
            fd = os.open(self.temp_path, flags, mode)
        except OSError as exc:
            raise WorkbookNotWritten(path, "cannot write the workbook there", exc.strerror or str(exc)) from None
        hold(fd)
        self.file: IO[bytes] = os.fdopen(fd, "wb")
        self._scratch_lock: int | None = None
        # xlsxwriter's own temp files (constant_memory row data, parts being zipped) go to a private folder
        # (mode 0700), so that they are easy to remove however the writing ends.
        try:
            self.scratch_dir = tempfile.mkdtemp(prefix=SCRATCH_PREFIX)
            self._scratch_lock = os.open(self.scratch_dir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError as exc:
            self.file.close()
            self.temp_path.unlink(missing_ok=True)
            raise OwnFailure(
                f"{path}: cannot make a scratch folder in {tempfile.gettempdir()} ({exc.strerror or exc})"
            ) from None
        hold(self._scratch_lock)

    def commit(self) -> None:
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            # Renamed while still open, so still locked: the next run's clean-up never takes it in between.
            # (Windows renames no open file, and has no such locks to keep.)
            if not LOCKS:
                self.file.close()
            os.replace(self.temp_path, self.path)
            self.file.close()
        except OSError as exc:
            self.discard()
            raise WorkbookNotWritten(self.path, "cannot write the workbook", exc.strerror or str(exc)) from None
        self._remove_scratch()

    def discard(self) -> None:
        if not self.file.closed:
            # Closing flushes what is buffered, which fails again on a full disk: the file goes all the same.
            with contextlib.suppress(OSError):
                self.file.close()
        with contextlib.suppress(OSError):
            self.temp_path.unlink(missing_ok=True)
        self._remove_scratch()

    def _remove_scratch(self) -> None:
        shutil.rmtree(self.scratch_dir, ignore_errors=True)
        if self._scratch_lock is not None:
            os.close(self._scratch_lock)
            self._scratch_lock = None


def _new_workbook(target: _AtomicTarget, *, constant_memory: bool = False, in_memory: bool = False) -> Any:
    options = dict(_SAFE_TEXT_OPTIONS, tmpdir=target.scratch_dir)
    if constant_memory:
        options["constant_memory"] = True
    if in_memory:
        options["in_memory"] = True
    return xlsxwriter.Workbook(target.file, options)


def _close_workbook(workbook: Any, target: _AtomicTarget) -> None:
    """Finish the zip and put it in place; on any failure leave neither the file nor the temp file behind."""
    try:
        workbook.close()
    except (OSError, XlsxWriterException) as exc:
        target.discard()
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise WorkbookNotWritten(target.path, "cannot write the workbook", reason) from None
    except BaseException:
        target.discard()
        raise
    target.commit()


def _abandon_workbook(workbook: Any, target: _AtomicTarget) -> None:
    """Drop a workbook that will never be finished: close the sheets' open temp files, then remove them all.

    xlsxwriter has no abort call; in constant_memory mode each sheet holds an open row-data file
    (`row_data_fh`), closed here so that the folder can be removed on every platform.
    """
    for sheet in workbook.worksheets():
        handle = getattr(sheet, "row_data_fh", None)
        if handle is not None and not handle.closed:
            handle.close()
    target.discard()


# ------------------------------------------------------------------------------------ report writer


class _SheetData:
    """The `<row>` elements of a constant_memory sheet, written straight into xlsxwriter's row-data temp file.

    Why: through `write_string` each cell costs a format lookup, a tuple, a dict and a generic XML writer;
    for a million-row report that was ~40 s of a dry run's ~45. Here a row is one f-string, escaped only when
    it needs it, with exactly the XML xlsxwriter writes in constant_memory mode (inline strings, control
    characters as `_xHHHH_`, `xml:space="preserve"` around edge spaces), so readers see the same cells.

    It leans on a few of xlsxwriter's internals (`row_data_fh`, `previous_row`, `_write_single_row`, the
    `dim_*` bounds); `attach` checks that they are there and otherwise hands back None, and the table falls
    back to the public calls. tests/test_workbook_stream.py compares both paths byte for byte. Rows are
    buffered a few hundred at a time so the file sees few, large writes.
    """

    _FLUSH_EVERY = 512

    def __init__(self, sheet: Any, columns: int) -> None:
        # The header (row 0) waits in xlsxwriter's one-row buffer; writing it out now puts it first in the
        # file. From here on only this object writes rows of the sheet.
        sheet._write_single_row(1)
        self._sheet = sheet
        self._file: IO[str] = sheet.row_data_fh
        self._columns = columns
        self.letters = tuple(_column_letter(col) for col in range(columns))
        self._pending: list[str] = []
        self._last_row = 0

    @classmethod
    def attach(cls, sheet: Any, columns: int) -> _SheetData | None:
        wanted = ("row_data_fh", "previous_row", "dim_rowmax", "dim_colmax", "_write_single_row")
        if not getattr(sheet, "constant_memory", False) or not all(hasattr(sheet, name) for name in wanted):
            return None
        if sheet.row_data_fh is None or sheet.previous_row != 0:
            return None
        return cls(sheet, columns)

    def add(self, row: int, xml: str) -> None:
        """`xml`: one whole `<row>` element for `row` (zero-based), rows in ascending order."""
        self._pending.append(xml)
        self._last_row = row
        if len(self._pending) >= self._FLUSH_EVERY:
            self._file.write("".join(self._pending))
            self._pending.clear()

    def finish(self) -> None:
        """Write what is buffered and tell xlsxwriter how far the sheet reaches (its `<dimension>`)."""
        if self._pending:
            self._file.write("".join(self._pending))
            self._pending.clear()
        sheet = self._sheet
        if self._last_row:
            sheet.dim_rowmax = max(sheet.dim_rowmax or 0, self._last_row)
            sheet.dim_colmax = max(sheet.dim_colmax or 0, self._columns - 1)
            sheet.previous_row = self._last_row + 1


#: What forces a cell's text through the full escaping; plain text (nearly all of it) skips it.
_NEEDS_ESCAPING = re.compile("[&<>\x00-\x08\x0b-\x1f\ufffe\uffff]|_x[0-9a-fA-F]{4}_")
_ESCAPED_CONTROL = re.compile("(_x[0-9a-fA-F]{4}_)")
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f]")
_HALF_CELL_LIMIT = EXCEL_MAX_CELL_CHARS // 2


def _xml_text(text: str) -> str:
    """Cell text as xlsxwriter puts it in an inline string: control characters as Excel's `_xHHHH_` escape
    (a literal `_xHHHH_` gets its underscore escaped, or Excel would decode it), then XML's own escapes."""
    text = _ESCAPED_CONTROL.sub(r"_x005F\1", text)
    text = _CONTROL.sub(lambda match: f"_x{ord(match.group()):04X}_", text)
    text = text.replace("\ufffe", "_xFFFE_").replace("\uffff", "_xFFFF_")
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _as_text(value: object) -> str:
    return "" if value is None else value if isinstance(value, str) else str(value)


class _Table:
    """One sheet written as a table, row by row: bold frozen header, autofilter, widths that fit the text."""

    def __init__(self, workbook: Any, name: str, headers: Sequence[str], header_format: Any) -> None:
        self.name = name
        self.headers = tuple(headers)
        self.sheet = workbook.add_worksheet(name)
        for col, header in enumerate(self.headers):
            self.sheet.write_string(0, col, header, header_format)
        self.sheet.freeze_panes(1, 0)
        self.widths = [len(header) for header in self.headers]
        self.next_row = 1
        # Only a streaming (constant_memory) sheet has a row-data file to write into; the others, and any
        # xlsxwriter whose internals differ, take the public calls.
        self._data = _SheetData.attach(self.sheet, len(self.headers))

    @property
    def full(self) -> bool:
        return self.next_row >= EXCEL_MAX_ROWS

    def append(self, number: int, texts: Sequence[str], secret: str = "") -> None:
        """Write one line: `number` in the first column, then `texts` as text cells (empty ones skipped)."""
        if self._data is None:
            self._append_cells(number, texts, secret)
            return
        # One look at the whole line decides what each cell needs; a typical line needs nothing but its tags.
        try:
            joined = "".join(texts)
        except TypeError:  # a value that is not text (None, a number): shown as text, as the slow path does
            texts = [_as_text(text) for text in texts]
            joined = "".join(texts)
        if secret and secret in joined:
            texts = [_scrub(text, secret) for text in texts]
            joined = "".join(texts)
        needs_cell_text = not joined.isascii() or len(joined) > _HALF_CELL_LIMIT
        needs_escaping = _NEEDS_ESCAPING.search(joined) is not None

        row = self.next_row
        widths = self.widths
        letters = self._data.letters
        number = int(number)
        length = len(str(number))
        if length > widths[0]:
            widths[0] = length
        ref_row = str(row + 1)
        xml = f'<row r="{ref_row}"><c r="A{ref_row}"><v>{number}</v></c>'
        col = 0
        for text in texts:
            col += 1
            if not text:
                continue
            if needs_cell_text:
                text = cell_text(text)
            length = len(text)
            if length > widths[col]:
                widths[col] = length
            # CPython's strip() hands back the very same object when there is nothing to strip.
            edge_space = text.strip() is not text and (text[0].isspace() or text[-1].isspace())
            if needs_escaping:
                text = _xml_text(text)
            if edge_space:
                xml += f'<c r="{letters[col]}{ref_row}" t="inlineStr"><is><t xml:space="preserve">{text}</t></is></c>'
            else:
                xml += f'<c r="{letters[col]}{ref_row}" t="inlineStr"><is><t>{text}</t></is></c>'
        self._data.add(row, xml + "</row>")
        self.next_row = row + 1

    def _append_cells(self, number: int, texts: Sequence[str], secret: str) -> None:
        """The same line through xlsxwriter's public calls (small in-memory workbooks)."""
        row = self.next_row
        sheet = self.sheet
        widths = self.widths
        sheet.write_number(row, 0, number)
        length = len(str(number))
        if length > widths[0]:
            widths[0] = length
        for col, text in enumerate(texts, start=1):
            text = _as_text(text)
            if not text:
                continue
            text = cell_text(_scrub(text, secret))
            sheet.write_string(row, col, text)
            length = len(text)
            if length > widths[col]:
                widths[col] = length
        self.next_row = row + 1

    def finish(self) -> None:
        if self._data is not None:
            self._data.finish()
        last_row = self.next_row - 1
        self.sheet.autofilter(0, 0, last_row, len(self.headers) - 1)
        for col, width in enumerate(self.widths):
            self.sheet.set_column(col, col, min(width + 2, MAX_COLUMN_WIDTH))


class ReportWriter:
    """Streams a validation report or a results workbook: sheets Rows, Summary, Problems.

    Rows are written in the order `add` is called. Nothing exists at `path` until `close(summary)` succeeds;
    leaving the `with` block without `close` (an exception, say) removes every temp file and leaves `path`
    as it was.
    """

    def __init__(self, path: Path, *, kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        self.path = Path(path)
        self.kind = kind
        self._target = _AtomicTarget(self.path, 0o666)
        self._finished = False
        self._workbook = _new_workbook(self._target, constant_memory=True)
        try:
            self._bold = self._workbook.add_format({"bold": True})
            # Sheet order is creation order: Rows, Summary, Problems. Summary is only written at close(),
            # which constant_memory allows because each sheet streams to its own temp file.
            self._row_tables = [_Table(self._workbook, ROWS_SHEET, ROWS_COLUMNS, self._bold)]
            self._summary_sheet = self._workbook.add_worksheet(SUMMARY_SHEET)
            self._problems = _Table(self._workbook, PROBLEMS_SHEET, PROBLEMS_COLUMNS, self._bold)
        except BaseException:
            _abandon_workbook(self._workbook, self._target)
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
            table = _Table(
                self._workbook, f"{ROWS_SHEET} ({len(self._row_tables) + 1})", ROWS_COLUMNS, self._bold
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
            ),
            secret,
        )
        for problem in problems:
            self._problem_tally[problem.code] = self._problem_tally.get(problem.code, 0) + 1
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
        self._problems.finish()
        self._write_summary(summary)
        self._finished = True
        _close_workbook(self._workbook, self._target)

    def discard(self) -> None:
        """Give up on this report: remove its temp files; `path` is left as it was."""
        if not self._finished:
            self._finished = True
            _abandon_workbook(self._workbook, self._target)

    def _highlight_statuses(self, table: _Table) -> None:
        """Colour rows by status with conditional formats: one rule per status instead of a style on each of
        millions of cells (cheaper to write, and the colour follows the row when a person sorts)."""
        last_row = table.next_row - 1
        if last_row < 1:
            return
        status_col = ROWS_COLUMNS.index("status")
        status_ref = f"${_column_letter(status_col)}2"
        for status, colour in STATUS_FILLS.items():
            table.sheet.conditional_format(
                1,
                0,
                last_row,
                len(ROWS_COLUMNS) - 1,
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
        if self.kind == "results":
            self._insert_outcome_chart(list(counts), first_status_row, last_status_row)

    def _insert_outcome_chart(self, statuses: list[str], first_row: int, last_row: int) -> None:
        chart = self._workbook.add_chart({"type": "column"})
        chart.add_series(
            {
                "name": "rows",
                "categories": [SUMMARY_SHEET, first_row, 0, last_row, 0],
                "values": [SUMMARY_SHEET, first_row, 1, last_row, 1],
                "points": [{"fill": {"color": STATUS_FILLS.get(status, "#D9D9D9")}} for status in statuses],
                "border": {"color": "#7F7F7F"},
                "data_labels": {"value": True},
            }
        )
        chart.set_title({"name": "Outcome"})
        chart.set_legend({"none": True})
        chart.set_y_axis({"name": "rows", "min": 0})
        self._summary_sheet.insert_chart(1, 3, chart)


class _SummaryLines:
    """Label/value lines of the Summary sheet, written top to bottom as constant_memory requires."""

    def __init__(self, sheet: Any, bold: Any) -> None:
        self.sheet = sheet
        self.bold = bold
        self.next_row = 0
        self.label_width = 0
        self.value_width = 0

    def heading(self, label: str, value: str) -> None:
        self.add(label, value, bold=True)

    def blank(self) -> None:
        self.next_row += 1

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
_SHOWN_DISPLAY_KEYS = frozenset(key for key in DISPLAY_COLUMNS if key.casefold() not in SECRET_FIELDS)
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
    "results": (Status.CREATED, Status.SKIPPED, Status.INVALID, Status.FAILED),
}


def _counts_with_every_status(counts: dict[str, int], kind: str) -> dict[str, int]:
    ordered = {status.value: int(counts.get(status.value, 0)) for status in _KIND_STATUSES.get(kind, tuple(Status))}
    for key, count in counts.items():  # anything else the caller counted, after the statuses
        ordered.setdefault(str(key), int(count))
    return ordered


def _iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC; a naive time is taken to be UTC already (the interface asks for aware ones)."""
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _column_letter(col: int) -> str:
    letters = ""
    col += 1
    while col:
        col, remainder = divmod(col - 1, 26)
        letters = chr(ord("A") + remainder) + letters
    return letters


# ------------------------------------------------------------------------------------------ template

TEMPLATE_SHEET = "Users"
LISTS_SHEET = "Lists"
TEMPLATE_COLUMNS: tuple[str, ...] = (
    "userPrincipalName",
    "firstName",
    "lastName",
    "displayName",
    "usageLocation",
    "password",
    "forceChangePassword",
    "immutableId",
)
#: The header notes: what goes in the column and the rule validation applies.
TEMPLATE_NOTES: dict[str, str] = {
    "userPrincipalName": (
        "Required. The sign-in name, name@domain, e.g. alex.wilber@contoso.com. Before the @: letters, digits "
        "and ' . - _ ! # ^ ~, at most 64 characters, no '.' right before the @. After it: a verified, "
        "non-federated domain of the customer, at most 48 characters; 113 in all. Each user once per sheet "
        "(case does not matter)."
    ),
    "firstName": "Optional. Given name, at most 64 characters.",
    "lastName": "Optional. Surname, at most 64 characters.",
    "displayName": "Required. The name shown in address lists, e.g. Alex Wilber; at most 256 characters.",
    "usageLocation": (
        "Required. Two-letter country/region code, e.g. US; pick from the list (the codes Partner Center "
        "supports; NA is Namibia). Needed to assign licences."
    ),
    "password": (
        "Required unless the run generates passwords (--generate-passwords). 8 to 256 characters with at "
        "least three of: lower-case letter, upper-case letter, digit, symbol. Replace the example's. "
        "This sheet then holds secrets: delete it once the users exist."
    ),
    "forceChangePassword": (
        "Optional: TRUE or FALSE (empty means TRUE). TRUE makes the user choose a new password at first "
        "sign-in."
    ),
    "immutableId": (
        "Optional. The on-premises anchor for directory sync (sourceAnchor); no $ or _. Leave empty for "
        "cloud-only users."
    ),
}
#: Typing limits Excel checks as the sheet is filled in (validation checks them all again).
_TEMPLATE_LENGTHS: dict[str, tuple[int, int]] = {
    "userPrincipalName": (3, 113),
    "firstName": (0, 64),
    "lastName": (0, 64),
    "displayName": (1, 256),
    "password": (8, 256),
}
#: Validations cover the whole column, so a sheet of any length is checked as it is typed.
_TEMPLATE_LAST_ROW = EXCEL_MAX_ROWS - 1  # zero-based


def supported_countries() -> list[tuple[str, str]]:
    """(code, name) for each usage location Partner Center supports, from the packaged CSV."""
    text = resources.files("bulkonboard").joinpath("data/partner-center-countries.csv").read_text("utf-8")
    return [
        (record["code"].strip(), record["name"].strip())
        for record in csv.DictReader(io.StringIO(text))
        if record.get("code")
    ]


def example_password(length: int = 16) -> str:
    """A strong password for the template's example row, new each time so that no known one is in use."""
    symbols = "!#$%*-_+=?"
    alphabet = string.ascii_letters + string.digits + symbols
    while True:
        password = "".join(secrets.choice(alphabet) for _ in range(length))
        if (
            password[0].isalpha()  # a leading - + = would look like a formula to whoever pastes it
            and any(c.islower() for c in password)
            and any(c.isupper() for c in password)
            and any(c.isdigit() for c in password)
            and any(c in symbols for c in password)
        ):
            return password


def write_template(path: Path) -> None:
    """The input sheet HR fills in: a note on each header, one example row, drop-downs where a list applies."""
    path = Path(path)
    target = _AtomicTarget(path, 0o666)
    try:
        workbook = _new_workbook(target)
        users = workbook.add_worksheet(TEMPLATE_SHEET)
        lists = workbook.add_worksheet(LISTS_SHEET)
        _fill_template(workbook, users, lists)
    except BaseException:
        target.discard()
        raise
    _close_workbook(workbook, target)


def _fill_template(workbook: Any, users: Any, lists: Any) -> None:
    bold = workbook.add_format({"bold": True, "bg_color": "#DDEBF7", "border": 1})
    as_text = workbook.add_format({"num_format": "@"})

    countries = supported_countries()
    lists.write_string(0, 0, "code", bold)
    lists.write_string(0, 1, "name", bold)
    for index, (code, name) in enumerate(countries, start=1):
        lists.write_string(index, 0, code)
        lists.write_string(index, 1, name)
    lists.set_column(0, 0, 6)
    lists.set_column(1, 1, min(max(len(name) for _, name in countries) + 2, MAX_COLUMN_WIDTH))
    lists.hide()
    # A range, never an inline list: Excel "repairs" away an inline list longer than 255 characters.
    countries_range = f"={LISTS_SHEET}!$A$2:$A${len(countries) + 1}"

    example = {
        "userPrincipalName": "alex.wilber@contoso.com",
        "firstName": "Alex",
        "lastName": "Wilber",
        "displayName": "Alex Wilber",
        "usageLocation": "US",
        "password": example_password(),
        "immutableId": "",
    }
    for col, name in enumerate(TEMPLATE_COLUMNS):
        users.write_string(0, col, name, bold)
        users.write_comment(
            0, col, TEMPLATE_NOTES[name], {"author": "bulkonboard", "x_scale": 2.2, "y_scale": 1.6}
        )
        if name == "forceChangePassword":
            users.set_column(col, col, len(name) + 2)
            users.write_boolean(1, col, True)  # what Excel stores when TRUE is typed or picked
            users.data_validation(
                1,
                col,
                _TEMPLATE_LAST_ROW,
                col,
                {
                    "validate": "list",
                    "source": ["TRUE", "FALSE"],
                    "error_title": name,
                    "error_message": "TRUE or FALSE (an empty cell means TRUE).",
                },
            )
            continue
        # Text format keeps what is typed as typed: 000123 keeps its zeros, 1-2 never becomes a date.
        width = max(len(name), len(example[name])) + 4
        users.set_column(col, col, min(width, MAX_COLUMN_WIDTH), as_text)
        if example[name]:
            users.write_string(1, col, example[name], as_text)
        if name == "usageLocation":
            users.data_validation(
                1,
                col,
                _TEMPLATE_LAST_ROW,
                col,
                {
                    "validate": "list",
                    "source": countries_range,
                    "input_title": "Usage location",
                    "input_message": "Two-letter code, e.g. US; pick from the list.",
                    "error_title": "Usage location",
                    "error_message": "Pick a two-letter code from the list (the codes Partner Center supports).",
                },
            )
        elif name in _TEMPLATE_LENGTHS:
            shortest, longest = _TEMPLATE_LENGTHS[name]
            users.data_validation(
                1,
                col,
                _TEMPLATE_LAST_ROW,
                col,
                {
                    "validate": "length",
                    "criteria": "between",
                    "minimum": shortest,
                    "maximum": longest,
                    "ignore_blank": True,
                    "error_title": name,
                    "error_message": f"{shortest} to {longest} characters.",
                },
            )
    users.freeze_panes(1, 0)
    users.activate()


# ---------------------------------------------------------------------------------- passwords workbook


def write_passwords(path: Path, entries: Iterable[tuple[int, str, str]]) -> None:
    """The generated passwords, (row, upn, password) each, in a workbook only its owner can read (0600).

    It replaces any file at `path` atomically: a caller adding to an earlier run's passwords reads them with
    `read_passwords` and writes them all again. Built in memory, so no password reaches a temp file.
    """
    path = Path(path)
    target = _AtomicTarget(path, 0o600)
    try:
        workbook = _new_workbook(target, in_memory=True)
        bold = workbook.add_format({"bold": True})
        table = _Table(workbook, PASSWORDS_SHEET, PASSWORDS_COLUMNS, bold)
        for row, upn, password in entries:
            table.append(row, (upn, password))
        table.finish()
    except BaseException:
        target.discard()
        raise
    _close_workbook(workbook, target)


def read_passwords(path: Path) -> dict[str, str]:
    """Casefolded UPN -> password from a workbook `write_passwords` wrote; the first entry for a UPN stands.

    Refuses a file that others may read: it has been exposed, and carrying on would hide that.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise InputError(f"{path}: cannot read the passwords workbook ({exc.strerror or exc})") from None
    try:
        # The mode is checked on the open file itself, so a swap of the path after the check changes nothing.
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"{path}: the passwords workbook is not a regular file")
        if os.name == "posix" and info.st_mode & 0o077:
            raise InputError(
                f"{path}: the passwords workbook may be read by others (mode {stat.S_IMODE(info.st_mode):04o}); "
                "it must be 0600 (chmod 600, and consider those passwords exposed)"
            )
        with os.fdopen(os.dup(fd), "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the passwords workbook ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    return _passwords_from(path, raw)


def _passwords_from(path: Path, raw: bytes) -> dict[str, str]:
    import openpyxl  # only reading needs it; openpyxl uses defusedxml's guards when installed

    try:
        book = openpyxl.load_workbook(io.BytesIO(raw), read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        raise InputError(f"{path}: is not a readable passwords workbook ({type(exc).__name__})") from None
    try:
        if PASSWORDS_SHEET not in book.sheetnames:
            raise InputError(f"{path}: has no sheet {PASSWORDS_SHEET!r}")
        rows = book[PASSWORDS_SHEET].iter_rows(values_only=True)
        header = [str(cell).strip().casefold() if cell is not None else "" for cell in next(rows, ())]
        try:
            upn_col = header.index("userprincipalname")
            password_col = header.index("password")
        except ValueError:
            raise InputError(
                f"{path}: the {PASSWORDS_SHEET} sheet needs columns userPrincipalName and password"
            ) from None
        passwords: dict[str, str] = {}
        for values in rows:
            upn = _text_of(values[upn_col] if upn_col < len(values) else None).strip()
            password = _text_of(values[password_col] if password_col < len(values) else None)
            if upn and password:
                passwords.setdefault(upn.casefold(), password)
        return passwords
    finally:
        book.close()


def _text_of(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
