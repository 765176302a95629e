"""The streaming row writer: a sheet written as a table, row by row, a million rows in seconds.

Why it exists: through xlsxwriter's `write_string` each cell costs a format lookup, a tuple, a dict and a generic
XML writer; here a row is one f-string with exactly the XML xlsxwriter would write, so readers see the same cells
and no cell is ever a formula (every text cell is an inline string).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import IO, Any

from .cells import EXCEL_MAX_CELL_CHARS, EXCEL_MAX_ROWS, MAX_COLUMN_WIDTH, cell_text, column_letter, scrub


class SheetData:
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
        self.letters = tuple(column_letter(col) for col in range(columns))
        self._pending: list[str] = []
        self._last_row = 0

    @classmethod
    def attach(cls, sheet: Any, columns: int) -> SheetData | None:
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


class Table:
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
        self._data = SheetData.attach(self.sheet, len(self.headers))

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
            texts = [scrub(text, secret) for text in texts]
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
            text = cell_text(scrub(text, secret))
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
