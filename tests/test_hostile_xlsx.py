"""Workbooks built to hurt the reader: a zip bomb, a part that lies about its size, two cells a sheet apart, a
hidden first sheet, numbers whose format changes what Excel shows. Each through the real CLI (exit code, one
line, no traceback; for the bombs, the child's peak memory measured by the kernel), plus unit tests.

The bombs are generated here (a few hundred KB, a second or two), never committed."""

from __future__ import annotations

import io
import os
import resource
import struct
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

import openpyxl
import pytest
import xlsxwriter

from bulkonboard.errors import InputError
from bulkonboard.sheets import inputfile, reader
from bulkonboard.sheets.reader import read_sheet

ROOT = Path(__file__).resolve().parent.parent
DOMAINS = ROOT / "samples" / "domains.csv"
SANDBOX_CUSTOMER = "3c9a8f12-5e6b-4c1d-9a7e-2f4b8d6c1e90"
HEADER = ["userPrincipalName", "displayName", "usageLocation", "password", "immutableId"]
#: The child may not map more than this: the 800 MB bomb took 3.3 GB before (and aborted under a cap).
ADDRESS_SPACE = 1536 * 1024 * 1024
#: What the kernel must report as the child's peak resident memory: well under 1 GiB.
PEAK_RSS = 400 * 1024 * 1024


def capped_run(*args: str | Path) -> tuple[int, str, int]:
    """(exit code, stderr, peak RSS in bytes) of `bulkonboard ARGS`, run under an address-space cap so a
    regression fails here instead of taking the machine's memory. wait4 gives this one child's rusage."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("BULKONBOARD_")}
    environment.update(OPENBLAS_NUM_THREADS="1", RUST_BACKTRACE="0")

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))

    process = subprocess.Popen(
        [sys.executable, "-m", "bulkonboard.cli.commands", *map(str, args)],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env=environment, preexec_fn=cap,
    )
    assert process.stderr is not None
    stderr = process.stderr.read().decode(errors="replace")  # EOF when the child exits
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, stderr, usage.ru_maxrss * 1024  # Linux reports KiB


def one_line(code: int, stderr: str, expected: int = 2) -> str:
    assert code == expected, stderr
    assert "Traceback" not in stderr and "panicked" not in stderr and "backtrace" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def base_workbook(path: Path, rows: Sequence[Sequence[object]] | None = None) -> Path:
    book = xlsxwriter.Workbook(str(path))  # shared strings, as Excel writes them
    sheet = book.add_worksheet("Hires")
    sheet.write_row(0, 0, HEADER)
    for index, row in enumerate(rows or [["jane@contoso.com", "Jane", "US", "Str0ng!Pass001", "x"]], start=1):
        sheet.write_row(index, 0, row)
    book.close()
    return path


def replace_part(path: Path, name: str, write: object) -> None:
    """Rewrite the zip with part `name` streamed by `write(handle)` (so a huge part never sits in memory)."""
    parts = {}
    with zipfile.ZipFile(path) as source:
        for info in source.infolist():
            parts[info.filename] = source.read(info)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as target:
        for part_name, data in parts.items():
            if part_name == name:
                with target.open(part_name, "w", force_zip64=True) as handle:
                    write(handle)  # type: ignore[operator]
            else:
                target.writestr(part_name, data)


def zip_bomb(path: Path, megabytes: int = 800) -> Path:
    """The issue's file: an xlsx of under 1 MB whose one shared string inflates to `megabytes` MB."""
    base_workbook(path)
    block = b"A" * (1024 * 1024)

    def write(handle: io.BufferedIOBase) -> None:
        handle.write(b'<?xml version="1.0" encoding="UTF-8"?><sst xmlns="http://schemas.openxmlformats.org/'
                     b'spreadsheetml/2006/main" count="6" uniqueCount="6"><si><t>')
        for _ in range(megabytes):
            handle.write(block)
        handle.write(b"</t></si></sst>")

    replace_part(path, "xl/sharedStrings.xml", write)
    return path


def test_the_zip_bomb_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    bomb = zip_bomb(tmp_path / "bomb.xlsx")
    assert bomb.stat().st_size < 1024 * 1024
    code, stderr, peak = capped_run("validate", bomb, "--domains", DOMAINS, "--report", tmp_path / "r.xlsx")
    line = one_line(code, stderr)
    assert str(bomb) in line and "over the bound of 256 MiB (uncompressed size of an xlsx)" in line
    assert peak < PEAK_RSS, f"peak RSS {peak / 2**20:.0f} MiB"
    assert not (tmp_path / "r.xlsx").exists()


def lie_about_size(path: Path, name: str, size: int) -> None:
    """Patch the local header and the central directory so `name` claims to inflate to `size` bytes."""
    raw = bytearray(path.read_bytes())
    encoded = name.encode()
    central = raw.find(b"PK\x01\x02")
    while central != -1:
        name_length = struct.unpack_from("<H", raw, central + 28)[0]
        if raw[central + 46 : central + 46 + name_length] == encoded:
            local = struct.unpack_from("<I", raw, central + 42)[0]
            struct.pack_into("<I", raw, central + 24, size)
            struct.pack_into("<I", raw, local + 22, size)
            break
        central = raw.find(b"PK\x01\x02", central + 4)
    else:
        raise AssertionError(f"no part {name}")
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("lying", ["xl/sharedStrings.xml", "xl/workbook.xml", "xl/_rels/workbook.xml.rels"])
def test_a_part_that_lies_about_its_size_is_not_inflated_without_end(tmp_path: Path, lying: str) -> None:
    """Declared 1 KB, inflates to 300 MB: the declared-size bound alone would let it through. Neither the
    parts we parse ourselves (workbook, relationships) nor the ones only calamine reads are inflated past
    what they declare."""
    path = base_workbook(tmp_path / "liar.xlsx")
    honest = path.read_bytes()
    with zipfile.ZipFile(io.BytesIO(honest)) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            if info.filename != lying:
                target.writestr(info.filename, source.read(info))
    _append_raw_deflated(path, lying, _deflated_part(megabytes=300))
    lie_about_size(path, lying, 1024)
    with zipfile.ZipFile(path) as archive:
        assert sum(info.file_size for info in archive.infolist()) < inputfile.MAX_XLSX_UNCOMPRESSED
    code, stderr, peak = capped_run("validate", path, "--domains", DOMAINS)
    line = one_line(code, stderr)
    assert "not a readable Excel workbook" in line
    assert peak < PEAK_RSS, f"peak RSS {peak / 2**20:.0f} MiB"


def _deflated_part(megabytes: int) -> tuple[bytes, int, int]:
    """(raw deflate stream, crc32, size) of a shared-strings part of `megabytes` MB."""
    import zlib

    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    crc, size, out = 0, 0, []
    head = b'<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><si><t>'
    block = b"A" * (1024 * 1024)
    for piece in [head, *([block] * megabytes), b"</t></si></sst>"]:
        crc = zlib.crc32(piece, crc)
        size += len(piece)
        out.append(compressor.compress(piece))
    out.append(compressor.flush())
    return b"".join(out), crc, size


def _append_raw_deflated(path: Path, name: str, part: tuple[bytes, int, int]) -> None:
    """Add a part whose deflate stream is given, with honest 32-bit headers (lie_about_size patches them)."""
    data, crc, size = part
    with zipfile.ZipFile(path, "a") as archive:
        info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        info.CRC, info.compress_size, info.file_size = crc, len(data), size
        archive.fp.seek(archive.start_dir)  # type: ignore[union-attr]
        info.header_offset = archive.start_dir
        archive.fp.write(info.FileHeader(False))  # type: ignore[union-attr]
        archive.fp.write(data)  # type: ignore[union-attr]
        archive.start_dir = archive.fp.tell()  # type: ignore[union-attr]
        archive.filelist.append(info)
        archive.NameToInfo[name] = info
        archive._didModify = True  # type: ignore[attr-defined]


def test_two_cells_a_sheet_apart_are_refused_not_allocated(tmp_path: Path) -> None:
    """A1 and XFD1048576: calamine would allocate the 17-billion-cell rectangle between them (512 GB) and
    abort with SIGABRT."""
    path = tmp_path / "far.xlsx"
    book = xlsxwriter.Workbook(str(path))
    sheet = book.add_worksheet()
    sheet.write_row(0, 0, HEADER)
    sheet.write_row(1, 0, ["jane@contoso.com", "Jane", "US", "Str0ng!Pass001"])
    sheet.write(1_048_575, 16_383, "far away")
    book.close()
    code, stderr, peak = capped_run("validate", path, "--domains", DOMAINS)
    line = one_line(code, stderr)
    assert "over the bound of 20,000,000 cells" in line and "1,048,576 rows x 16,384 columns" in line
    assert peak < PEAK_RSS


def test_a_csv_past_the_row_bound_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "long.csv"
    path.write_bytes(b"userPrincipalName\n" + b"x\n" * (inputfile.MAX_ROWS + 1))
    code, stderr, _ = capped_run("validate", path, "--domains", DOMAINS)
    line = one_line(code, stderr)
    assert str(path) in line and "over the bound of 2,000,000 rows" in line


def test_bounds_stop_the_parsers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cell bound, small enough to test without a 20-million-cell file: csv and xlsx alike."""
    monkeypatch.setattr(reader, "MAX_CELLS", 30)
    monkeypatch.setattr("bulkonboard.sheets.xlsxguard.MAX_CELLS", 30)
    rows = [[f"u{n}@contoso.com", "U", "US", "Str0ng!Pass001", "x"] for n in range(6)]
    csv_path = tmp_path / "wide.csv"
    csv_path.write_text("\n".join(",".join(r) for r in [HEADER, *rows]) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match="more than 6 rows of 5 columns, over the bound of 30 cells"):
        read_sheet(csv_path)
    with pytest.raises(InputError, match=r"spans 7 rows x 5 columns \(35 cells\), over the bound of 30 cells"):
        read_sheet(base_workbook(tmp_path / "wide.xlsx", rows))
    monkeypatch.setattr(reader, "MAX_CELLS", 35)
    assert len(read_sheet(csv_path)) == 6  # 7 rows of 5 columns: at the bound, read


# ------------------------------------------------------------------------------------------------- sheets


def hidden_first(path: Path, state: str) -> Path:
    book = openpyxl.Workbook()
    scratch = book.active
    assert scratch is not None
    scratch.title = "Scratch"
    scratch.append(HEADER)
    scratch.append(["hidden.user@contoso.com", "Hidden", "US", "Str0ng!Pass009", "h"])
    scratch.sheet_state = state
    hires = book.create_sheet("Hires")
    hires.append(HEADER)
    hires.append(["visible.user@contoso.com", "Visible", "US", "Str0ng!Pass001", "v"])
    book.save(path)
    return path


@pytest.mark.parametrize("state", ["hidden", "veryHidden"])
def test_a_hidden_first_sheet_is_not_read(tmp_path: Path, state: str) -> None:
    path = hidden_first(tmp_path / "hidden.xlsx", state)
    sheet = read_sheet(path)
    assert sheet.sheet_name == "Hires"
    assert sheet.frame["userPrincipalName"].tolist() == ["visible.user@contoso.com"]
    named = read_sheet(path, sheet="scratch")  # by name (case-insensitively), a hidden sheet is read
    assert named.frame["userPrincipalName"].tolist() == ["hidden.user@contoso.com"]


def test_run_creates_the_visible_sheets_users_only(tmp_path: Path) -> None:
    path = hidden_first(tmp_path / "hidden.xlsx", "hidden")
    results = tmp_path / "results.xlsx"
    code, stderr, _ = capped_run(
        "run", path, "--customer", SANDBOX_CUSTOMER, "--sandbox", "--results", results,
        "--journal", tmp_path / "j.db", "--quiet",
    )
    assert code == 0, stderr
    book = openpyxl.load_workbook(results, read_only=True)
    rows = list(book["Rows"].iter_rows(values_only=True))
    header = list(rows[0])
    created = [(r[header.index("userPrincipalName")], r[header.index("status")]) for r in rows[1:]]
    assert created == [("visible.user@contoso.com", "created")]


def test_no_visible_sheet(tmp_path: Path) -> None:
    path = hidden_first(tmp_path / "hidden.xlsx", "hidden")
    with zipfile.ZipFile(path) as archive:
        workbook_xml = archive.read("xl/workbook.xml")
    visible = b'<sheet name="Hires" sheetId="2" state="visible"'
    assert workbook_xml.count(visible) == 1  # openpyxl refuses to save it: hide it by hand
    replace_part(path, "xl/workbook.xml", lambda handle: handle.write(
        workbook_xml.replace(visible, visible.replace(b"visible", b"veryHidden"))))
    code, stderr, _ = capped_run("validate", path, "--domains", DOMAINS)
    line = one_line(code, stderr)
    assert "no visible worksheet" in line and '"Scratch"' in line and "--sheet" in line


# -------------------------------------------------------------------------------------------- number formats


def formatted_workbook(path: Path) -> Path:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(HEADER)
    cases = [
        (123, "000000"),
        (1.23e20, "General"),
        (1.23e20, "0.00E+00"),
        (1234567.891, "#,##0.00"),
        (0.125, "0%"),
        (42, "0.0"),
        (1001, "General"),
        (7, '"ID-"000'),  # a text literal: not rendered here, General instead
    ]
    for n, (value, number_format) in enumerate(cases):
        sheet.append([f"u{n}@contoso.com", value, "US", "Str0ng!Pass001", value])
        for column in (2, 5):
            sheet.cell(row=n + 2, column=column).number_format = number_format
    book.save(path)
    return path


EXPECTED_SHOWN = ["000123", "1.23E+20", "1.23E+20", "1,234,567.89", "13%", "42.0", "1001", "7"]


def test_numbers_read_as_excel_shows_them(tmp_path: Path) -> None:
    sheet = read_sheet(formatted_workbook(tmp_path / "formats.xlsx"))
    assert sheet.frame["displayName"].tolist() == EXPECTED_SHOWN
    assert sheet.frame["immutableId"].tolist() == EXPECTED_SHOWN


def test_the_report_shows_numbers_as_excel_does(tmp_path: Path) -> None:
    report = tmp_path / "report.xlsx"
    code, stderr, _ = capped_run("validate", formatted_workbook(tmp_path / "f.xlsx"), "--domains", DOMAINS,
                                 "--report", report, "--quiet")
    assert code in (0, 1), stderr
    rows = list(openpyxl.load_workbook(report, read_only=True)["Rows"].iter_rows(values_only=True))
    header = list(rows[0])
    assert [r[header.index("immutableId")] for r in rows[1:]] == EXPECTED_SHOWN


def test_every_sheet_is_held_to_the_bounds(tmp_path: Path) -> None:
    """calamine resolves part names its own way: a crafted workbook could point it at another part than the
    one checked, so a far cell in any sheet's part refuses the workbook."""
    path = tmp_path / "two.xlsx"
    book = xlsxwriter.Workbook(str(path))
    book.add_worksheet("Hires").write_row(0, 0, HEADER)
    book.add_worksheet("Other").write(1_048_575, 16_383, "far away")
    book.close()
    with pytest.raises(InputError, match=r"\[part xl/worksheets/sheet2.xml\]: spans 1,048,576 rows x 16,384"):
        read_sheet(path)


@pytest.mark.parametrize(
    ("number", "code", "shown"),
    [
        (123.0, "000000", "000123"),
        (1234567.0, "000000", "1234567"),
        (-42.0, "00000;[Red]-00000", "-00042"),
        (2.5, "0", "3"),  # Excel rounds half away from zero
        (1.005, "0.00", "1.01"),
        (-1234.5, "#,##0.00", "-1,234.50"),
        (0.5, "0.00%", "50.00%"),
        (999900.0, "0.00E+00", "1.00E+06"),
        (1.5e-07, "0.00E+00", "1.50E-07"),
        (123456.0, "##0.0E+0", "123.5E+3"),
        (0.0, "0.00E+00", "0.00E+00"),
    ],
)
def test_number_formats_render_as_excel(number: float, code: str, shown: str) -> None:
    from bulkonboard.sheets.numberformat import display_format, render

    section = display_format(code)
    assert section is not None
    assert render(number, section) == shown


@pytest.mark.parametrize(
    ("number", "shown"),
    [(1001.0, "1001"), (1.23e20, "1.23E+20"), (1e-05, "1E-05"), (0.1 + 0.2, "0.3"), (2.0**53, "9.00719925474099E+15")],
)
def test_general_format(number: float, shown: str) -> None:
    from bulkonboard.sheets.numberformat import display_format, general

    assert general(number) == shown
    assert display_format("General") is None and display_format('"ID-"000') is None
