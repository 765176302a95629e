"""Any HR sheet -> a frame of text, with the row numbers a person sees in Excel.

This is the only module that reads input files. Everything downstream works on text exactly as typed: a
number, a date or `NA` that a library "helpfully" converts (to 1001.0, to a Timestamp, to NaN) would be sent to
the service wrong, and a shifted row number would send a person to the wrong line of their sheet. So text files
are parsed with every cell as a string and no NA detection, workbook cells are rendered the way Excel shows
them, and blank rows are counted before they are dropped.

Anything wrong with the file itself becomes one `InputError` line naming the file; never a traceback.
Hostile files are stopped before a parser sees them: only regular files, bounded (inputfile.py), text only in
an encoding known for certain (textencoding.py), an xlsx checked for bombs and hidden sheets (xlsxguard.py).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import reduce
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError
from .headers import (  # noqa: F401 (header_field, LAYOUT_*: the reader's names too)
    LAYOUT_ENTRA,
    LAYOUT_M365,
    LAYOUT_PLAIN,
    Header,
    find_header,
    frame_fields,
    header_field,
    is_version_row,
)
from .inputfile import MAX_CELLS, MAX_ROWS, read_regular_file
from .numberformat import general, render
from .textencoding import decode
from .xlsxguard import plan_sheet

if TYPE_CHECKING:
    import pandas as pd

XLSX_SUFFIXES = frozenset({".xlsx"})
TEXT_SUFFIXES = frozenset({".csv", ".tsv", ".txt"})
ACCEPTED = ".xlsx, .csv, .tsv or .txt"



@dataclass(frozen=True)
class Sheet:
    """One input sheet as text.

    `frame` has an int column `row` (the row number as the sheet shows it) and one str column per name in
    `model.FIELDS` ("" where the sheet lacks the column or the cell is empty), and of `model.OPTIONAL_FIELDS`
    (profile, manager) only those the sheet has (so they cost nothing otherwise); trimmed, in input order, with
    entirely blank rows dropped (row numbers still count them). `header_row` is the header's own row number:
    1 for a plain sheet, 2 under Entra's version row (later when blank rows come first).
    """

    path: Path
    frame: pd.DataFrame
    present: frozenset[str]
    layout: str
    sheet_name: str | None
    header_row: int

    def __len__(self) -> int:
        return len(self.frame)


# ------------------------------------------------------------------------------------------------ entry point


def read_sheet(path: Path, *, sheet: str | None = None) -> Sheet:
    """Read an input sheet (.xlsx, .csv, .tsv, .txt); raise `InputError` (exit 2) when it is unusable."""
    path = Path(path)
    suffix = path.suffix.casefold()
    if suffix not in XLSX_SUFFIXES | TEXT_SUFFIXES:
        hint = " (save it as an Excel Workbook, .xlsx)" if suffix in {".xls", ".xlsm", ".xlsb", ".ods"} else ""
        kind = f"'{path.suffix}' files" if path.suffix else "files without an extension"
        raise InputError(f"{path}: cannot read {kind}{hint}; use {ACCEPTED}")
    if suffix in TEXT_SUFFIXES and sheet is not None:
        raise InputError(f"{path}: --sheet applies only to .xlsx workbooks, not to {path.suffix} files")
    raw = _read_bytes(path)
    if suffix in XLSX_SUFFIXES:
        return _read_xlsx(path, raw, sheet)
    return _read_text(path, raw, tab_first=suffix == ".tsv")


def _read_bytes(path: Path) -> bytes:
    raw = read_regular_file(path, "the input sheet")
    if not raw.strip():
        raise InputError(f"{path}: is empty")
    return raw


# ----------------------------------------------------------------------------------------------------- bounds


def row_bound(width: int) -> tuple[int, str]:
    """How many rows a sheet `width` columns wide may have, and the line that names the bound it would pass."""
    by_cells = MAX_CELLS // max(width, 1)
    if by_cells < MAX_ROWS:
        return by_cells, (
            f"has more than {by_cells:,} rows of {width:,} columns, over the bound of {MAX_CELLS:,} cells; "
            "split it into several files"
        )
    return MAX_ROWS, f"has more than {MAX_ROWS:,} rows, over the bound of {MAX_ROWS:,} rows; split it into several files"


# ------------------------------------------------------------------------------------------------ text files

_DELIMITERS = (",", ";", "\t")
#: How many records may precede the header (blank rows, Entra's version row) before we stop looking.
_HEADER_SEARCH = 1000


def _is_blank_line(line: str) -> bool:
    return not line.strip(' \t\r\n,;"\ufeff\xa0')


def _count_outside_quotes(line: str, delimiter: str) -> int:
    # Quotes toggle; a doubled quote toggles twice, which is right for counting.
    return sum(part.count(delimiter) for part in line.split('"')[::2])


_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")


def _lines(text: str) -> Iterator[str]:
    """The text's lines (any line ending), lazily: io.StringIO would first copy a whole 100 MB file."""
    return (match.group() for match in _LINE.finditer(text))


def _detect_delimiter(text: str, *, tab_first: bool) -> str:
    """The delimiter is the one the header line uses most (European Excel writes `;`, 'Unicode Text' tabs)."""
    order = ("\t", ",", ";") if tab_first else _DELIMITERS
    header_line = ""
    for count, line in enumerate(_lines(text)):
        if count >= _HEADER_SEARCH:
            break
        if _is_blank_line(line) or is_version_row([line]):
            continue
        header_line = line
        break
    counts = {d: _count_outside_quotes(header_line, d) for d in order}
    best = max(order, key=lambda d: counts[d])  # max keeps the first of equals: the preference order
    return best if counts[best] else order[0]


def _table_width(text: str, delimiter: str) -> int:
    """How many columns the header region spans, so the parser is told the width up front.

    Told nothing, pandas takes the first line's width (1 for Entra's version row) and refuses longer rows.
    """
    width = 1
    reader = csv.reader(_lines(text), delimiter=delimiter)
    version_seen = False
    try:
        for count, record in enumerate(reader):
            width = max(width, len(record))
            cells = [c.strip() for c in record]
            if count >= _HEADER_SEARCH:
                break
            if not any(cells):
                continue
            if not version_seen and is_version_row(cells):
                version_seen = True
                continue
            break
    except csv.Error:
        pass  # pandas reports the same damage with a better position
    return width


def _read_text(path: Path, raw: bytes, *, tab_first: bool) -> Sheet:
    text, payload = decode(path, raw)
    if not text.strip():
        raise InputError(f"{path}: is empty")
    delimiter = _detect_delimiter(text, tab_first=tab_first)
    width = _table_width(text, delimiter)
    del text
    most_rows, bound = row_bound(width)
    table = _parse_delimited(path, payload, delimiter, width, most_rows)
    if len(table) > most_rows:
        raise InputError(f"{path}: {bound}")

    def head() -> Iterator[tuple[int, list[str]]]:
        for index in range(len(table)):
            yield index + 1, [str(c).strip() for c in table.iloc[index].tolist()]

    header = find_header(str(path), head())
    return Sheet(
        path=path,
        frame=_rows_below_header(table, header),
        present=frozenset(header.columns),
        layout=header.layout,
        sheet_name=None,
        header_row=header.row,
    )


def _parse_delimited(path: Path, payload: bytes, delimiter: str, width: int, most_rows: int) -> pd.DataFrame:
    """Every cell as text, exactly as typed (leading zeros kept, nothing taken for a number or a missing value).

    Reads one row more than allowed, so that the caller sees a sheet past the bound without reading all of it.
    """
    import pandas as pd

    columns = list(range(width))
    try:
        return pd.read_csv(
            io.BytesIO(payload),
            sep=delimiter,
            header=None,
            names=columns,
            usecols=columns,  # with names, this also lets a row have more cells than the header
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            skip_blank_lines=False,  # blank rows count: row numbers are the sheet's own
            engine="c",  # not pyarrow: it would drop leading zeros
            encoding="utf-8",
            quotechar='"',
            doublequote=True,
            index_col=False,
            nrows=most_rows + 1,  # one more than allowed: the parser stops there, and the caller's check sees it
        )
    except pd.errors.ParserError as exc:
        detail = str(exc).removeprefix("Error tokenizing data. C error: ").strip().splitlines()[0]
        if "EOF inside string" in detail:
            detail = 'a quoted cell never ends (a " without its closing ")' + detail.partition("string")[2]
        raise InputError(f"{path}: cannot be parsed as delimited text: {detail}") from None
    except (ValueError, MemoryError) as exc:
        raise InputError(f"{path}: cannot be parsed as delimited text ({type(exc).__name__})") from None


def _rows_below_header(table: pd.DataFrame, header: Header) -> pd.DataFrame:
    """The rows under the header as the fields' columns, numbered as the sheet numbers them; a row blank in every
    column of the header's span is left out (a cell filled outside the known fields keeps the row)."""
    import pandas as pd

    data = table.iloc[header.row :]  # header.row is 1-based, so this starts right below it
    stripped = {field: data[index].str.strip() for field, index in header.columns.items()}
    mapped_blank = reduce(lambda a, b: a & b, (s == "" for s in stripped.values()))
    others = [i for i in header.span if i not in header.columns.values()]
    blank = mapped_blank
    if others and mapped_blank.any():
        candidates = data.loc[mapped_blank, others]
        filled = candidates.apply(lambda s: s.str.strip() != "").any(axis=1)
        blank = mapped_blank.copy()
        blank.loc[filled.index] = ~filled
    frame = pd.DataFrame(
        {
            "row": pd.array(range(header.row + 1, len(table) + 1), dtype="int64"),
            **{
                field: (
                    stripped[field].reset_index(drop=True)
                    if field in stripped
                    else pd.Series("", index=range(len(data)), dtype="str")
                )
                for field in frame_fields(header)
            },
        }
    )
    return frame[~blank.to_numpy()].reset_index(drop=True)


# ----------------------------------------------------------------------------------------------------- xlsx

_ZIP_MAGIC = b"PK\x03\x04"
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


def _cell_text(value: object) -> str:
    """A workbook cell as Excel shows it in General format: 1001 not 1001.0, TRUE, dates in ISO 8601."""
    kind = type(value)
    if kind is str:
        return value.strip()  # type: ignore[attr-defined]
    if kind is float:
        return general(value)  # type: ignore[arg-type]
    if kind is bool:
        return "TRUE" if value else "FALSE"
    if kind is int:
        return str(value)
    if kind is datetime:
        moment: datetime = value  # type: ignore[assignment]
        return moment.isoformat(timespec="milliseconds" if moment.microsecond else "seconds")
    if kind is date:
        return value.isoformat()  # type: ignore[attr-defined]
    if kind is time:
        clock: time = value  # type: ignore[assignment]
        return clock.isoformat(timespec="milliseconds" if clock.microsecond else "seconds")
    if kind is timedelta:
        span: timedelta = value  # type: ignore[assignment]
        seconds = round(span.total_seconds())
        sign, seconds = ("-", -seconds) if seconds < 0 else ("", seconds)
        return f"{sign}{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"  # Excel's [h]:mm:ss
    return "" if value is None else str(value).strip()


def _check_workbook_bytes(path: Path, raw: bytes) -> None:
    """Name the usual impostors before the library gives a cryptic zip error."""
    if raw.startswith(_OLE_MAGIC):
        raise InputError(
            f"{path}: is password-protected (encrypted) or an old .xls saved under an .xlsx name; "
            "remove the password or save it as an Excel Workbook (.xlsx)"
        )
    if not raw.startswith(_ZIP_MAGIC):
        looks_like_text = all(32 <= b or b in b"\t\r\n" for b in raw[:512])
        hint = "; it looks like text: name it .csv" if looks_like_text else ""
        raise InputError(f"{path}: is not an Excel workbook (.xlsx){hint}")


def _read_xlsx(path: Path, raw: bytes, sheet: str | None) -> Sheet:
    import numpy as np
    import pandas as pd
    from python_calamine import CalamineWorkbook

    _check_workbook_bytes(path, raw)
    plan = plan_sheet(path, raw, sheet)  # bounds, the visible sheet, number formats: before calamine runs
    name = plan.name
    try:
        workbook = CalamineWorkbook.from_filelike(io.BytesIO(raw))
        try:
            # skip_empty_area=False keeps leading empty rows and columns, so list index + 1 is the row number.
            rows = workbook.get_sheet_by_name(name).to_python(skip_empty_area=False)
        finally:
            workbook.close()
    except Exception as exc:  # calamine raises its own errors, OSError or ValueError for a damaged workbook
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise InputError(f"{path}: is not a readable Excel workbook ({reason})") from None

    label = f"{path} [sheet {name}]"
    if not rows:
        raise InputError(f"{label}: the sheet is empty")
    header = find_header(label, ((n + 1, [_cell_text(c) for c in row]) for n, row in enumerate(rows)))
    data = rows[header.row :]
    texts: dict[str, list[str]] = {}
    for field, index in header.columns.items():
        texts[field] = [
            (cell.strip() if type(cell) is str else _cell_text(cell)) for cell in (r[index] for r in data)
        ]
        _apply_number_formats(texts[field], data, header.row, index, plan.formats)
    keep = [True] * len(data)
    for position, cells in enumerate(zip(*texts.values(), strict=True)):
        if not any(cells):
            # Only rows blank in every field get here: look at the rest of the row.
            keep[position] = any(_cell_text(c) for c in data[position][header.span.start : header.span.stop])
    empty = [""] * len(data)
    frame = pd.DataFrame(
        {
            "row": pd.array(range(header.row + 1, header.row + 1 + len(data)), dtype="int64"),
            **{field: pd.array(texts.get(field, empty), dtype="str") for field in frame_fields(header)},
        }
    )
    frame = frame[np.array(keep, dtype=bool)].reset_index(drop=True)
    return Sheet(
        path=path,
        frame=frame,
        present=frozenset(header.columns),
        layout=header.layout,
        sheet_name=name,
        header_row=header.row,
    )


def _apply_number_formats(
    texts: list[str], data: Sequence[Sequence[object]], header_row: int, column: int, formats: dict[int, dict[int, str]]
) -> None:
    """Numbers in cells whose format pads or fixes them, as Excel shows them (`000123`), in place.

    `data[i]` is sheet row `header_row + 1 + i`, which is 0-based row `header_row + i` in `formats`.
    """
    for row, section in formats.get(column, {}).items():
        position = row - header_row
        if not 0 <= position < len(data):
            continue
        cell = data[position][column]
        if type(cell) is float or type(cell) is int:
            texts[position] = render(float(cell), section)
