"""An .xlsx looked at before the parser touches it: bounded, the sheet a person sees, and its number formats.

python-calamine (Rust) is fast but trusts the file: a part that inflates to gigabytes (an 817 KB workbook with
one 800 MB shared string took 3.3 GB), or two cells far apart (A1 and XFD1048576: calamine allocates the whole
rectangle between them, 512 GB) abort the process with SIGABRT and a Rust backtrace, which no `except` can
catch. So, before calamine sees the bytes:

- the zip's parts are counted and their declared sizes summed against the bounds, then inflated once by
  Python's zipfile, which stops at the declared size and checks the CRC: a part that lies about its size is
  refused, not inflated without end;
- each sheet's XML is scanned for the cell furthest right and furthest down (a regex that fails fast on
  ordinary references: ~0.2 s on the 53 MB sheet of a 100,000-row workbook), and a rectangle past the bounds
  is refused;
- the sheet is the first *visible* worksheet (a hidden first sheet is someone's scratch data, not the hires);
- styles.xml says which cells have a number format that changes what Excel shows (`000000`), and where.

XML is parsed with defusedxml: a workbook is input from outside.
"""

from __future__ import annotations

import io
import posixpath
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree.ElementTree import Element

from ..errors import InputError
from .inputfile import MAX_CELLS, MAX_ROWS, MAX_XLSX_PARTS, MAX_XLSX_UNCOMPRESSED, mib
from .numberformat import BUILTIN_FORMATS, display_format

_CHUNK = 1024 * 1024
_VISIBLE = "visible"
_WORKSHEET = "/worksheet"


@dataclass(frozen=True)
class SheetPlan:
    """What reader.py needs to read one sheet safely: its name, and the number format of each numeric-display
    cell: 0-based column -> 0-based row -> format."""

    name: str
    formats: dict[int, dict[int, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class _SheetEntry:
    name: str
    state: str
    part: str | None  # the sheet's XML part; None when the relationship is missing
    worksheet: bool


def plan_sheet(path: Path, raw: bytes, wanted: str | None) -> SheetPlan:
    """Check the workbook against the bounds and choose the sheet; raise InputError (exit 2) otherwise."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise InputError(f"{path}: is not a readable Excel workbook ({_reason(exc)})") from None
    with archive:
        _check_declared_sizes(path, archive)  # before anything is inflated
        workbook_part = _office_document(archive)
        entry = _choose(path, _sheets(path, archive, workbook_part), wanted)
        xml = _inflate_every_part(path, archive, keep=entry.part, label=f"{path} [sheet {entry.name}]")
        if xml is None:
            return SheetPlan(entry.name)  # no such part: calamine names the damage
        special = _special_styles(archive, workbook_part)
        formats = _cell_formats(xml, special) if special else {}
    return SheetPlan(entry.name, formats)


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# ------------------------------------------------------------------------------------------------ the zip


def _check_declared_sizes(path: Path, archive: zipfile.ZipFile) -> None:
    infos = archive.infolist()
    if len(infos) > MAX_XLSX_PARTS:
        raise InputError(
            f"{path}: has {len(infos):,} parts, over the bound of {MAX_XLSX_PARTS:,} parts in an xlsx"
        )
    declared = sum(info.file_size for info in infos)
    if declared > MAX_XLSX_UNCOMPRESSED:
        raise InputError(
            f"{path}: inflates to {mib(declared)}, over the bound of {mib(MAX_XLSX_UNCOMPRESSED)} "
            "(uncompressed size of an xlsx); is it a zip bomb?"
        )


def _inflate_every_part(path: Path, archive: zipfile.ZipFile, keep: str | None, label: str) -> bytes | None:
    """Inflate each part once and return the `keep` part.

    zipfile stops at the declared size and checks the CRC, so a part that lies about its size is refused here,
    before calamine would inflate it without end. Every part holding cells (`sheetData`) is held to the
    bounds, not only the one we resolved for the sheet: calamine resolves part names its own way, and a
    crafted workbook could point the two at different parts.
    """
    kept: bytes | None = None
    for info in archive.infolist():
        try:
            data = _inflate(archive, info)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, RuntimeError) as exc:
            raise InputError(
                f"{path}: is not a readable Excel workbook (part {info.filename}: {_reason(exc)})"
            ) from None
        if info.filename == keep:
            kept = data
            check_extent(label, data)
        elif b"sheetData" in data:
            check_extent(f"{path} [part {info.filename}]", data)
    return kept


def _inflate(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """In chunks: zipfile's read() of a whole part inflates all of a lying part's stream before cutting it to
    the declared size (689 MB peak for one that declares 1 KB); a chunk at a time it never holds more than the
    declared size plus one chunk."""
    chunks: list[bytes] = []
    with archive.open(info) as part:
        while chunk := part.read(_CHUNK):
            chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _xml(archive: zipfile.ZipFile, part: str) -> Element | None:
    from defusedxml import ElementTree
    from defusedxml.common import DefusedXmlException

    if part not in archive.NameToInfo:
        return None
    try:
        return ElementTree.fromstring(_inflate(archive, archive.getinfo(part)))
    except (ElementTree.ParseError, DefusedXmlException, ValueError, zipfile.BadZipFile, OSError, EOFError):
        return None  # a damaged part: the caller falls back or names it


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _children(element: Element | None, name: str) -> Iterator[Element]:
    if element is not None:
        yield from (child for child in element.iter() if _local(child.tag) == name)


def _attribute(element: Element, name: str) -> str | None:
    """An attribute by local name: `r:id` is `{namespace}id`, and strict OOXML uses other namespaces."""
    for key, value in element.attrib.items():
        if _local(key) == name:
            return value
    return None


def _relationships(archive: zipfile.ZipFile, part: str) -> dict[str, tuple[str, str]]:
    """id -> (type, target part) for the relationships of `part`."""
    folder, name = posixpath.split(part)
    rels = _xml(archive, posixpath.join(folder, "_rels", name + ".rels"))
    found: dict[str, tuple[str, str]] = {}
    for rel in _children(rels, "Relationship"):
        target = rel.get("Target", "")
        resolved = target.lstrip("/") if target.startswith("/") else posixpath.normpath(posixpath.join(folder, target))
        found[rel.get("Id", "")] = (rel.get("Type", ""), resolved)
    return found


def _office_document(archive: zipfile.ZipFile) -> str:
    for kind, target in _relationships(archive, "").values():
        if kind.endswith("/officeDocument"):
            return target
    return "xl/workbook.xml"


# ------------------------------------------------------------------------------------------------- sheets


def _sheets(path: Path, archive: zipfile.ZipFile, workbook_part: str) -> list[_SheetEntry]:
    workbook = _xml(archive, workbook_part)
    if workbook is None:
        raise InputError(f"{path}: is not a readable Excel workbook (its workbook part is missing or not XML)")
    rels = _relationships(archive, workbook_part)
    entries = []
    for sheet in _children(workbook, "sheet"):
        kind, part = rels.get(_attribute(sheet, "id") or "", ("", ""))
        entries.append(
            _SheetEntry(
                name=sheet.get("name", ""),
                state=(sheet.get("state") or _VISIBLE),
                part=part or None,
                worksheet=kind.endswith(_WORKSHEET) or not kind,
            )
        )
    return entries


def _choose(path: Path, sheets: list[_SheetEntry], wanted: str | None) -> _SheetEntry:
    """The first visible worksheet; a hidden one only by name (Excel's names are case-insensitive)."""
    if wanted is None:
        for entry in sheets:
            if entry.worksheet and entry.state == _VISIBLE:
                return entry
        if any(entry.worksheet for entry in sheets):
            hidden = ", ".join(f'"{e.name}"' for e in sheets if e.worksheet)
            raise InputError(f"{path}: has no visible worksheet (hidden: {hidden}); name one with --sheet")
        raise InputError(f"{path}: has no worksheet")
    names = [entry.name for entry in sheets]
    matches = [e for e in sheets if e.name == wanted] or [
        e for e in sheets if e.name.casefold() == wanted.strip().casefold()
    ]
    if len(matches) == 1:
        return matches[0]
    listed = ", ".join(f'"{n}"' for n in names)
    raise InputError(f'{path}: has no sheet "{wanted}"; its sheets are {listed}')


# ------------------------------------------------------------------------------------------------- extent

#: References that can take a sheet past 26 columns or 99,999 rows: two or more letters, or six or more
#: digits (a row's own `r` too), however the attribute is spelt. Normal references fail this after a few
#: bytes, so the scan costs ~0.2 s on the 53 MB sheet of a 100,000-row workbook.
_FAR_REFERENCE = re.compile(rb"r\s*=\s*[\"']([A-Za-z]{2,}\d*|[A-Za-z]*\d{6,})[\"']")
#: Every reference; used only when the cheap bound is not enough.
_ANY_REFERENCE = re.compile(rb"\sr\s*=\s*[\"']([A-Za-z]*)(\d*)[\"']")


def _column_number(letters: bytes) -> int:
    number = 0
    for letter in letters.upper():
        number = number * 26 + (letter - 64)
    return number


def _extent(references: list[tuple[bytes, bytes]]) -> tuple[int, int]:
    rows = max((int(digits) for _, digits in references if digits), default=0)
    columns = max((_column_number(letters) for letters, _ in references if letters), default=0)
    return rows, columns


def check_extent(label: str, xml: bytes) -> None:
    """Refuse a sheet whose cells span more rows or cells than the bounds (calamine allocates the rectangle
    from A1 to the furthest cell, whatever lies between)."""
    rows, columns = _extent([_split(reference) for reference in _FAR_REFERENCE.findall(xml)])
    rows, columns = max(rows, 99_999), max(columns, 26)
    if rows > MAX_ROWS or rows * columns > MAX_CELLS:
        rows, columns = _extent(_ANY_REFERENCE.findall(xml))  # the cheap bound was too rough: count
    if rows > MAX_ROWS:
        raise InputError(f"{label}: has a cell in row {rows:,}, over the bound of {MAX_ROWS:,} rows")
    if rows * columns > MAX_CELLS:
        raise InputError(
            f"{label}: spans {rows:,} rows x {columns:,} columns ({rows * columns:,} cells), over the bound of "
            f"{MAX_CELLS:,} cells"
        )


def _split(reference: bytes) -> tuple[bytes, bytes]:
    digits_at = len(reference.rstrip(b"0123456789"))
    return reference[:digits_at], reference[digits_at:]


# ------------------------------------------------------------------------------------------- number formats

_STYLE = re.compile(rb' s="(\d+)"')
_CELL_REFERENCE = re.compile(rb"\sr\s*=\s*[\"']([A-Za-z]+)(\d+)[\"']")


def _special_styles(archive: zipfile.ZipFile, workbook_part: str) -> dict[int, str]:
    """Cell style index -> number format, for the styles whose format changes how a number is shown."""
    styles_part = next(
        (target for kind, target in _relationships(archive, workbook_part).values() if kind.endswith("/styles")),
        "xl/styles.xml",
    )
    styles = _xml(archive, styles_part)
    if styles is None:
        return {}
    custom = {
        int(fmt.get("numFmtId", "-1")): fmt.get("formatCode", "")
        for fmt in _children(styles, "numFmt")
        if (fmt.get("numFmtId") or "").isdigit()
    }
    special: dict[int, str] = {}
    for cell_xfs in _children(styles, "cellXfs"):
        for index, xf in enumerate(child for child in cell_xfs if _local(child.tag) == "xf"):
            number_format = xf.get("numFmtId", "0")
            if not number_format.isdigit():
                continue
            code = custom.get(int(number_format)) or BUILTIN_FORMATS.get(int(number_format), "")
            shown = display_format(code) if code else None
            if shown:
                special[index] = shown
        break
    return special


def _cell_formats(xml: bytes, special: dict[int, str]) -> dict[int, dict[int, str]]:
    """0-based column -> 0-based row -> format, for each cell whose style is special. Cells are found by their `s`
    attribute, then their reference is read from the same start tag."""
    formats: dict[int, dict[int, str]] = {}
    wanted = {str(index).encode() for index in special}
    for match in _STYLE.finditer(xml):
        if match.group(1) not in wanted:
            continue
        start, end = xml.rfind(b"<", 0, match.start()), xml.find(b">", match.end())
        reference = _CELL_REFERENCE.search(xml, start, end)
        if reference is None or not xml.startswith((b"<c ", b"<c\t", b"<c\n"), start):
            continue
        row, column = int(reference.group(2)) - 1, _column_number(reference.group(1)) - 1
        formats.setdefault(column, {})[row] = special[int(match.group(1))]
    return formats
