"""The output workbooks, read back with openpyxl (which parses through defusedxml's guards) and as raw zips."""

from __future__ import annotations

import csv
import io
import os
import re
import stat
import tempfile
import tracemalloc
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import openpyxl
import pytest
from openpyxl.utils.escape import unescape

from bulkonboard.errors import InputError, OwnFailure
from bulkonboard.model import Problem, RowResult, Status
from bulkonboard.workbook import fastrows, template
from bulkonboard.workbook.cells import cell_text
from bulkonboard.workbook.passwords import read_passwords, write_passwords
from bulkonboard.workbook.report import ReportWriter, Summary
from bulkonboard.workbook.template import write_template

#: Every temp file the writer makes lands in a private folder (conftest), so a test can see none is left behind.
pytestmark = pytest.mark.usefixtures("private_tempdir")

ROWS_HEADER = [
    "row",
    "userPrincipalName",
    "status",
    "userId",
    "problems",
    "requestId",
    "displayName",
    "firstName",
    "lastName",
    "usageLocation",
    "immutableId",
    "customerTenantId",
    "licenses",
    "forceChangePassword",
]
PROBLEMS_HEADER = ["row", "userPrincipalName", "field", "code", "message"]
STARTED = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
SENTINEL_PASSWORD = "Sentinel-Pa55word!9"
FORMULA_LOOKING = ['=HYPERLINK("http://x","y")', "+1", "-2", "@SUM(A1)", "\tx", "\rx"]


def make_result(row: int, status: Status = Status.CREATED, **fields: Any) -> RowResult:
    fields.setdefault("userPrincipalName", f"user{row}@contoso.com")
    return RowResult(row=row, status=status, **fields)


def make_summary(kind: str = "results", counts: dict[str, int] | None = None, **fields: Any) -> Summary:
    fields.setdefault("input_path", Path("hires.xlsx"))
    fields.setdefault("customer", "3c9a7c39-0000-4000-8000-000000000001")
    fields.setdefault("started", STARTED)
    fields.setdefault("finished", STARTED + timedelta(seconds=83.5))
    return Summary(kind=kind, counts=counts or {}, **fields)


def write_report(path: Path, results: list[RowResult], kind: str = "results", **summary: Any) -> Path:
    with ReportWriter(path, kind=kind) as writer:
        for result in results:
            writer.add(result)
        writer.close(make_summary(kind, **summary))
    return path


def sheet_rows(path: Path, name: str) -> list[list[Any]]:
    book = openpyxl.load_workbook(path)
    return [[cell.value for cell in row] for row in book[name].iter_rows()]


def summary_items(path: Path) -> dict[str, Any]:
    return {row[0]: row[1] for row in sheet_rows(path, "Summary") if row and row[0] is not None}


def all_cells(path: Path) -> Iterator[Any]:
    book = openpyxl.load_workbook(path)
    for sheet in book.worksheets:
        for row in sheet.iter_rows():
            yield from row


def zip_text(path: Path) -> str:
    with zipfile.ZipFile(path) as archive:
        return "\n".join(archive.read(name).decode("utf-8") for name in archive.namelist())


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*")]


# ----------------------------------------------------------------------------------------- report


def test_sheets_headers_and_values_in_add_order(tmp_path: Path) -> None:
    results = [
        make_result(
            2,
            Status.CREATED,
            userId="u-1",
            requestId="r-1",
            display={
                "displayName": "Alex Wilber",
                "firstName": "Alex",
                "lastName": "Wilber",
                "usageLocation": "US",
            },
        ),
        make_result(
            5,
            Status.INVALID,
            userPrincipalName="bad-upn",
            problems=(
                Problem("upn.syntax", "needs one @", "userPrincipalName"),
                Problem("field.missing", "displayName is required", "displayName"),
            ),
            display={
                "immutableId": "000123",
                "customerTenantId": "cust-a",
                "licenses": "ENTERPRISEPACK; FLOW_FREE",
            },
        ),
        make_result(3, Status.SKIPPED, userId="u-3", customerTenantId="cust-b"),
    ]
    path = write_report(tmp_path / "results.xlsx", results)

    book = openpyxl.load_workbook(path)
    assert book.sheetnames == ["Rows", "Summary", "Problems"]
    rows = sheet_rows(path, "Rows")
    assert rows[0] == ROWS_HEADER
    assert rows[1] == [
        2,
        "user2@contoso.com",
        "created",
        "u-1",
        None,
        "r-1",
        "Alex Wilber",
        "Alex",
        "Wilber",
        "US",
        None,
        None,
        None,
        None,
    ]
    assert rows[2] == [
        5,
        "bad-upn",
        "invalid",
        None,
        "upn.syntax: needs one @; field.missing: displayName is required",
        None,
        None,
        None,
        None,
        None,
        "000123",
        "cust-a",
        "ENTERPRISEPACK; FLOW_FREE",  # as asked
        None,  # forceChangePassword: not in this display
    ]
    # customerTenantId falls back to the result's own when display has none
    assert rows[3][:3] == [3, "user3@contoso.com", "skipped"] and rows[3][-3] == "cust-b"
    assert book["Rows"]["A2"].data_type == "n" and book["Rows"]["K3"].data_type == "s"

    problems = sheet_rows(path, "Problems")
    assert problems == [
        PROBLEMS_HEADER,
        [5, "bad-upn", "userPrincipalName", "upn.syntax", "needs one @"],
        [5, "bad-upn", "displayName", "field.missing", "displayName is required"],
    ]


def test_formula_looking_text_is_written_as_text_unchanged(tmp_path: Path) -> None:
    results = [
        make_result(
            index + 2,
            Status.INVALID,
            userPrincipalName=text,
            problems=(Problem("upn.syntax", text, "userPrincipalName"),),
            display={"displayName": text, "immutableId": text},
        )
        for index, text in enumerate(FORMULA_LOOKING)
    ]
    path = write_report(tmp_path / "results.xlsx", results)

    book = openpyxl.load_workbook(path)
    rows_sheet = book["Rows"]
    for index, text in enumerate(FORMULA_LOOKING):
        for column in ("B", "G", "K"):
            cell = rows_sheet[f"{column}{index + 2}"]
            assert cell.data_type == "s", (column, text)
            # openpyxl leaves OOXML's _xHHHH_ escape (used for the CR) in place; Excel decodes it
            assert unescape(cell.value) == text
        message = book["Problems"][f"E{index + 2}"]
        assert message.data_type == "s" and unescape(message.value) == text
    assert not [cell.coordinate for cell in all_cells(path) if cell.data_type == "f"]
    assert "<f>" not in zip_text(path)


def test_no_password_anywhere_even_when_display_carries_one(tmp_path: Path) -> None:
    results = [
        make_result(
            2,
            Status.FAILED,
            problems=(
                Problem("api.400", f"the service said: password {SENTINEL_PASSWORD} is weak", "password"),
            ),
            display={"displayName": "Alex", "password": SENTINEL_PASSWORD},
        ),
        make_result(3, Status.CREATED, display={"password": SENTINEL_PASSWORD, "firstName": "Bo"}),
    ]
    path = write_report(tmp_path / "results.xlsx", results)

    texts = [str(cell.value) for cell in all_cells(path) if cell.value is not None]
    assert texts, "the workbook should not be empty"
    assert not [text for text in texts if SENTINEL_PASSWORD in text]
    assert SENTINEL_PASSWORD not in zip_text(path)
    # the echoed password was scrubbed, not the whole message dropped
    assert "the service said: password [password hidden] is weak" in texts
    assert "password" not in sheet_rows(path, "Rows")[0]


def test_frozen_header_autofilter_and_widths(tmp_path: Path) -> None:
    long_name = "x" * 200
    results = [
        make_result(2, display={"displayName": long_name}),
        make_result(3, userPrincipalName="a.rather.long.user.principal.name@contoso.com"),
        make_result(4, Status.INVALID, problems=(Problem("upn.syntax", "m"),)),
    ]
    path = write_report(tmp_path / "results.xlsx", results)

    book = openpyxl.load_workbook(path)
    rows_sheet, problems_sheet = book["Rows"], book["Problems"]
    assert rows_sheet.freeze_panes == "A2" and problems_sheet.freeze_panes == "A2"
    assert rows_sheet.auto_filter.ref == "A1:N4"
    assert problems_sheet.auto_filter.ref == "A1:E2"
    widths = {letter: dim.width for letter, dim in rows_sheet.column_dimensions.items()}
    upn_width = len("a.rather.long.user.principal.name@contoso.com")
    assert upn_width <= widths["B"] < upn_width + 5
    assert 55 <= widths["G"] <= 61  # the 200-character name is capped
    assert len("status") <= widths["C"] < len("created") + 5


def test_rows_are_highlighted_by_status(tmp_path: Path) -> None:
    statuses = [Status.CREATED, Status.FAILED, Status.SKIPPED, Status.INVALID, Status.VALID]
    path = write_report(tmp_path / "results.xlsx", [make_result(i + 2, s) for i, s in enumerate(statuses)])

    rows_sheet = openpyxl.load_workbook(path)["Rows"]
    assert rows_sheet["C1"].value == "status"
    fills: dict[str, str] = {}
    for formatting in rows_sheet.conditional_formatting:
        assert str(formatting.sqref) == "A2:N6"
        for rule in formatting.rules:
            (formula,) = rule.formula
            match = re.fullmatch(r'\$C2="(\w+)"', formula)
            assert match, formula
            fills[match.group(1)] = rule.dxf.fill.bgColor.rgb
    assert fills["failed"] == fills["invalid"] == "FFFFC7CE"  # light red
    assert fills["skipped"] == "FFFFEB9C"
    assert fills["created"] == "FFC6EFCE"
    assert "valid" not in fills


def test_summary_sheet(tmp_path: Path) -> None:
    results = [make_result(2), make_result(3, Status.FAILED, problems=(Problem("api.503", "gave up"),))]
    path = write_report(
        tmp_path / "results.xlsx",
        results,
        counts={"created": 1, "failed": 1},
        correlation_id="corr-1",
        extra={"achieved rate (users/s)": 2.5, "source": "sandbox", "rate settled at": 3},
    )

    items = summary_items(path)
    assert items["kind"] == "results"
    assert items["input file"] == "hires.xlsx"
    assert items["customer"] == "3c9a7c39-0000-4000-8000-000000000001"
    assert items["started (UTC)"] == "2024-05-06T07:08:09Z"
    assert items["finished (UTC)"] == "2024-05-06T07:09:32Z"
    assert items["duration (s)"] == 83.5
    assert items["correlation id"] == "corr-1"
    assert "valid" not in items  # a run leaves no row `valid`: a results workbook does not list it
    assert {status: items[status] for status in ("created", "skipped", "invalid", "failed")} == {
        "created": 1,
        "skipped": 0,
        "invalid": 0,
        "failed": 1,
    }
    assert items["total"] == 2
    assert items["achieved rate (users/s)"] == 2.5 and items["rate settled at"] == 3
    assert items["source"] == "sandbox"
    assert items["api.503"] == 1  # tallied from the rows when the caller gives no problem counts
    book = openpyxl.load_workbook(path)
    assert book["Summary"]["B2"].data_type == "s" and book["Summary"]["B7"].data_type == "n"


def test_summary_prefers_the_callers_problem_counts_and_converts_times_to_utc(tmp_path: Path) -> None:
    paris = datetime(2024, 5, 6, 11, 8, 9, tzinfo=timezone(timedelta(hours=2)))
    path = write_report(
        tmp_path / "report.xlsx",
        [make_result(2, Status.INVALID, problems=(Problem("upn.syntax", "m"),))],
        kind="validation",
        counts={"invalid": 1},
        problem_counts={"upn.syntax": 7, "domain.unknown": 2},
        started=paris,
        finished=paris,
    )
    items = summary_items(path)
    assert items["started (UTC)"] == "2024-05-06T09:08:09Z"
    assert items["upn.syntax"] == 7 and items["domain.unknown"] == 2
    assert items["kind"] == "validation"


def test_results_have_an_outcome_chart_over_the_status_counts(tmp_path: Path) -> None:
    path = write_report(tmp_path / "results.xlsx", [make_result(2)], counts={"created": 1})
    with zipfile.ZipFile(path) as archive:
        assert "xl/charts/chart1.xml" in archive.namelist()
        chart = archive.read("xl/charts/chart1.xml").decode()
    refs = re.findall(r"<c:f>Summary!\$(\w)\$(\d+):\$\w\$(\d+)</c:f>", chart)
    assert ("A", "B") == tuple(sorted({column for column, _, _ in refs}))
    summary = sheet_rows(path, "Summary")
    _, first, last = refs[0]
    assert [summary[i][0] for i in range(int(first) - 1, int(last))] == [
        "created",
        "restored",
        "partial",
        "skipped",
        "invalid",
        "failed",
        "pending",
    ]


def test_validation_report_has_a_chart_of_its_verdicts(tmp_path: Path) -> None:
    path = write_report(tmp_path / "report.xlsx", [make_result(2, Status.VALID)], kind="validation")
    with zipfile.ZipFile(path) as archive:
        (chart,) = [name for name in archive.namelist() if name.startswith("xl/charts/")]
        assert "<c:v>valid</c:v>" in archive.read(chart).decode()


def test_long_text_is_truncated_visibly_at_excels_limit(tmp_path: Path) -> None:
    message = "m" * 40_000
    emoji = "\U0001f600" * 20_000  # 40,000 UTF-16 units
    path = write_report(
        tmp_path / "results.xlsx",
        [
            make_result(
                2, Status.FAILED, problems=(Problem("api.500", message),), display={"displayName": emoji}
            )
        ],
    )
    book = openpyxl.load_workbook(path)
    problems_cell = book["Rows"]["E2"].value
    assert len(problems_cell) == 32_767 and problems_cell.endswith("…(truncated)")
    assert problems_cell.startswith("api.500: mmm")
    assert book["Problems"]["E2"].value == "m" * (32_767 - len("…(truncated)")) + "…(truncated)"
    name = book["Rows"]["G2"].value
    assert name.endswith("…(truncated)") and name.startswith("\U0001f600")
    assert len(name.encode("utf-16-le")) // 2 <= 32_767


def test_cell_text_limits() -> None:
    assert cell_text("short") == "short"
    exact = "a" * 32_767
    assert cell_text(exact) == exact
    cut = cell_text("a" * 32_768)
    assert len(cut) == 32_767 and cut.endswith("…(truncated)")
    # a cut never splits a surrogate pair, counted in UTF-16 units as Excel counts
    odd = "a" + "\U0001f600" * 16_400
    cut = cell_text(odd)
    assert len(cut.encode("utf-16-le")) // 2 in (32_766, 32_767)
    cut.encode("utf-8")  # would raise on half a pair
    assert cell_text("a\ud800b") == "a\ufffdb"


def test_control_characters_neither_crash_nor_corrupt(tmp_path: Path) -> None:
    texts = ["a\x00b\x01c\x1f", "tab\tnew\nline", "x\ufffey\uffff", "_x0041_ literal", "del\x7f\x85"]
    results = [make_result(i + 2, display={"displayName": text}) for i, text in enumerate(texts)]
    results.append(make_result(len(texts) + 2, display={"displayName": "lone \udc80 surrogate"}))
    path = write_report(tmp_path / "results.xlsx", results)

    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if name.endswith(".xml") or name.endswith(".rels"):
                ElementTree.fromstring(archive.read(name))  # every part is well-formed XML
    rows_sheet = openpyxl.load_workbook(path)["Rows"]
    for index, text in enumerate(texts):
        assert unescape(rows_sheet[f"G{index + 2}"].value) == text
    assert rows_sheet[f"G{len(texts) + 2}"].value == "lone \ufffd surrogate"


def test_rows_and_problems_interleave_in_order(tmp_path: Path) -> None:
    results = []
    for row in range(2, 302):
        problems = tuple(Problem("upn.syntax", f"row {row} #{n}") for n in range(row % 3))
        status = Status.INVALID if problems else Status.VALID
        results.append(make_result(row, status, problems=problems))
    path = write_report(tmp_path / "report.xlsx", results, kind="validation")

    rows = sheet_rows(path, "Rows")[1:]
    assert [r[0] for r in rows] == list(range(2, 302))
    problem_lines = sheet_rows(path, "Problems")[1:]
    expected = [
        [row, f"user{row}@contoso.com", None, "upn.syntax", f"row {row} #{n}"]
        for row in range(2, 302)
        for n in range(row % 3)
    ]
    assert problem_lines == expected


def test_past_excels_row_limit_problems_stop_and_rows_continue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fastrows, "EXCEL_MAX_ROWS", 5)  # 4 lines under the header
    results = [
        make_result(row, Status.INVALID, problems=(Problem("upn.syntax", f"p{row}"),)) for row in range(2, 8)
    ]
    path = write_report(tmp_path / "report.xlsx", results, kind="validation", counts={"invalid": 6})

    book = openpyxl.load_workbook(path)
    assert book.sheetnames == ["Rows", "Summary", "Problems", "Rows (2)"]
    assert [r[0] for r in sheet_rows(path, "Rows")[1:]] == [2, 3, 4, 5]
    assert sheet_rows(path, "Rows (2)")[0] == ROWS_HEADER
    assert [r[0] for r in sheet_rows(path, "Rows (2)")[1:]] == [6, 7]
    assert [r[4] for r in sheet_rows(path, "Problems")[1:]] == ["p2", "p3", "p4", "p5"]
    items = summary_items(path)
    assert items["problems not listed on the Problems sheet (Excel's row limit)"] == 2
    assert items["rows continue on"] == "Rows (2)"
    assert items["upn.syntax"] == 6


def test_an_exception_inside_with_leaves_no_file_and_no_temp(tmp_path: Path, private_tempdir: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(RuntimeError, match="boom"):
        with ReportWriter(out / "results.xlsx", kind="results") as writer:
            for row in range(2, 50):
                writer.add(make_result(row, problems=(Problem("upn.syntax", "m"),)))
            assert files_under(out), "the temp file should exist while writing"
            raise RuntimeError("boom")
    assert files_under(out) == []
    assert files_under(private_tempdir) == []


def test_an_existing_file_survives_a_failed_write_and_is_replaced_by_a_good_one(
    tmp_path: Path, private_tempdir: Path
) -> None:
    path = tmp_path / "results.xlsx"
    path.write_bytes(b"previous results")
    with pytest.raises(KeyboardInterrupt):
        with ReportWriter(path, kind="results") as writer:
            writer.add(make_result(2))
            raise KeyboardInterrupt
    assert path.read_bytes() == b"previous results"

    write_report(path, [make_result(2)])
    assert sheet_rows(path, "Rows")[1][1] == "user2@contoso.com"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.xlsx", "system-temp"]
    assert files_under(private_tempdir) == []


def test_an_empty_report_still_has_every_sheet_and_header(tmp_path: Path) -> None:
    path = write_report(tmp_path / "report.xlsx", [], kind="validation")
    assert sheet_rows(path, "Rows") == [ROWS_HEADER]
    assert sheet_rows(path, "Problems") == [
        PROBLEMS_HEADER,
        ["No problems: every row is valid or already exists.", None, None, None, None],
    ]
    assert openpyxl.load_workbook(path)["Rows"].auto_filter.ref == "A1:N1"
    assert summary_items(path)["total"] == 0


def test_a_mismatched_summary_or_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        ReportWriter(tmp_path / "x.xlsx", kind="report")
    with pytest.raises(ValueError):
        with ReportWriter(tmp_path / "x.xlsx", kind="validation") as writer:
            writer.close(make_summary("results"))
    assert list(tmp_path.glob("*.xlsx")) == [] and not list(tmp_path.glob(".x.xlsx*"))
    writer = ReportWriter(tmp_path / "y.xlsx", kind="results")
    writer.close(make_summary("results"))
    with pytest.raises(RuntimeError):
        writer.add(make_result(2))


def test_an_unwritable_folder_is_our_own_failure_up_front(tmp_path: Path) -> None:
    with pytest.raises(OwnFailure, match="cannot write") as caught:
        ReportWriter(tmp_path / "missing" / "results.xlsx", kind="results")
    assert caught.value.exit_code == 4  # results not writable: bulkonboard's own failure, never 1 or 2


def test_memory_does_not_grow_with_rows(tmp_path: Path) -> None:
    def peak(count: int) -> int:
        tracemalloc.start()
        try:
            with ReportWriter(tmp_path / f"r{count}.xlsx", kind="results") as writer:
                for row in range(2, count + 2):
                    writer.add(
                        make_result(
                            row,
                            Status.FAILED,
                            problems=(Problem("api.503", f"service unavailable for row {row}"),),
                            display={"displayName": f"Person {row}", "usageLocation": "US"},
                        )
                    )
                writer.close(make_summary("results", {"failed": count}))
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, large = peak(1_000), peak(8_000)
    # kept rows would cost hundreds of bytes each: 7,000 more rows, well over a megabyte more
    assert large - small < 500_000, (small, large)


# --------------------------------------------------------------------------------------- template


def countries_csv() -> list[dict[str, str]]:
    path = Path(template.__file__).parents[1] / "data" / "partner-center-countries.csv"
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_template_columns_notes_and_example(tmp_path: Path) -> None:
    path = tmp_path / "template.xlsx"
    write_template(path)
    book = openpyxl.load_workbook(path)
    assert book.sheetnames == ["Users", "Example", "Lists"]  # Users, the sheet read, comes first
    users = book["Users"]
    assert users.max_row == 1  # headers only: no example row a run could create
    header = [cell.value for cell in users[1]]
    assert header == [
        "userPrincipalName",
        "firstName",
        "lastName",
        "displayName",
        "usageLocation",
        "password",
        "forceChangePassword",
        "immutableId",
        "licenses",
    ]
    assert all(cell.font.b for cell in users[1])
    assert users.freeze_panes == "A2"
    notes = {cell.value: cell.comment.text if cell.comment else "" for cell in users[1]}
    assert all(notes.values()), notes
    assert "Required" in notes["userPrincipalName"] and "Optional" in notes["firstName"]
    assert "US" in notes["usageLocation"] and "list" in notes["usageLocation"]
    assert "ENTERPRISEPACK" in notes["licenses"] and "usage location" in notes["licenses"]

    example_sheet = book["Example"]
    assert [cell.value for cell in example_sheet[1]] == header
    example = {name: cell.value for name, cell in zip(header, example_sheet[2], strict=True)}
    assert example["userPrincipalName"] == "alex.wilber@contoso.com"
    assert example["usageLocation"] == "US - United States"  # as the drop-down writes it
    assert example["forceChangePassword"] is True
    password = example["password"]
    assert 8 <= len(password) <= 256
    kinds = [
        any(c.islower() for c in password),
        any(c.isupper() for c in password),
        any(c.isdigit() for c in password),
        any(not c.isalnum() for c in password),
    ]
    assert all(kinds) and password[0].isalpha()
    assert example_sheet["F2"].data_type == "s"
    assert users.column_dimensions["F"].number_format == "@"
    assert not [cell.coordinate for cell in all_cells(path) if cell.data_type == "f"]


def test_template_drop_downs_refer_to_a_hidden_list_of_supported_codes(tmp_path: Path) -> None:
    path = tmp_path / "template.xlsx"
    write_template(path)
    book = openpyxl.load_workbook(path)
    lists = book["Lists"]
    assert lists.sheet_state == "hidden"
    expected = countries_csv()
    assert len(expected) == 248
    listed = [(row[0].value, row[1].value) for row in lists.iter_rows(min_row=2)]
    # the packaged CSV has stray padding (Laos ends in spaces and a hair space): shown trimmed
    assert listed == [(record["code"].strip(), record["name"].strip()) for record in expected]
    picks = [row[2].value for row in lists.iter_rows(min_row=2)]
    assert picks == [f"{code} - {name}" for code, name in listed]  # the drop-down shows the country's name
    codes = {code for code, _ in listed}
    assert {"NA", "XK", "US"} <= codes and "CU" not in codes

    by_column: dict[str, Any] = {}
    for validation in book["Users"].data_validations.dataValidation:
        for cell_range in validation.sqref.ranges:
            by_column[cell_range.coord.split(":")[0].rstrip("0123456789")] = (validation, cell_range)
    usage, usage_range = by_column["E"]
    assert usage.type == "list"
    assert usage.formula1.lstrip("=") == "Lists!$C$2:$C$249"
    assert usage.errorStyle == "warning"  # a bare code typed in is right too
    assert usage_range.min_row == 2 and usage_range.max_row >= 1000
    force, force_range = by_column["G"]
    assert force.type == "list" and force.formula1 == '"TRUE,FALSE"'
    assert force_range.min_row == 2 and force_range.max_row >= 1000
    password, _ = by_column["F"]
    assert password.type == "textLength" and (password.formula1, password.formula2) == ("8", "256")
    assert "I" not in by_column  # made for no customer: no list of licenses to offer


def test_a_template_for_a_customer_offers_its_licenses_in_a_drop_down(tmp_path: Path) -> None:
    path = tmp_path / "template.xlsx"
    skus = [("ENTERPRISEPACK", "Office 365 E3"), ("FLOW_FREE", "Power Automate Free")]
    write_template(path, skus=skus)
    book = openpyxl.load_workbook(path)
    lists = book["Lists"]
    assert [(row[3].value, row[4].value) for row in lists.iter_rows(min_row=1, max_row=3)] == [
        ("license", "product"),
        *skus,
    ]
    assert lists["D4"].value is None
    (licenses,) = [v for v in book["Users"].data_validations.dataValidation if str(v.sqref).startswith("I2")]
    assert licenses.type == "list" and licenses.formula1.lstrip("=") == "Lists!$D$2:$D$3"
    assert licenses.errorStyle == "information"  # several SKUs separated by ; are not one item: still allowed
    assert book["Users"]["I1"].value == "licenses"


# ---------------------------------------------------------------------------------------- passwords


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_passwords_workbook_is_0600_from_the_start_and_round_trips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, private_tempdir: Path
) -> None:
    path = tmp_path / "passwords.xlsx"
    modes_before_rename: list[int] = []
    real_replace = os.replace

    def spying_replace(src: Any, dst: Any) -> None:
        modes_before_rename.append(stat.S_IMODE(os.stat(src).st_mode))
        real_replace(src, dst)

    def no_temp_files(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a password must not reach a temp file")

    monkeypatch.setattr(os, "replace", spying_replace)
    monkeypatch.setattr(tempfile, "mkstemp", no_temp_files)
    old_umask = os.umask(0)  # the most permissive umask still gives 0600
    try:
        write_passwords(
            path, [(2, "Alex.Wilber@Contoso.com", "=Xy9!formula"), (3, "bo@contoso.com", "-Q7#wert")]
        )
    finally:
        os.umask(old_umask)

    assert modes_before_rename == [0o600]
    assert mode_of(path) == 0o600
    assert read_passwords(path) == {"alex.wilber@contoso.com": "=Xy9!formula", "bo@contoso.com": "-Q7#wert"}
    book = openpyxl.load_workbook(path)
    assert book.sheetnames == ["Passwords"]
    assert [c.value for c in book["Passwords"][1]] == ["row", "userPrincipalName", "password"]
    assert book["Passwords"]["C2"].data_type == "s" and book["Passwords"]["A2"].value == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["passwords.xlsx", "system-temp"]
    assert files_under(private_tempdir) == []


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_rewriting_a_loose_passwords_file_makes_it_0600(tmp_path: Path) -> None:
    path = tmp_path / "passwords.xlsx"
    path.write_bytes(b"old")
    path.chmod(0o644)
    write_passwords(path, [(2, "a@contoso.com", "Pw-1234567")])
    assert mode_of(path) == 0o600
    assert read_passwords(path) == {"a@contoso.com": "Pw-1234567"}


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_passwords_file_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "passwords.xlsx"
    write_passwords(path, [(2, "a@contoso.com", SENTINEL_PASSWORD)])
    path.chmod(mode)
    with pytest.raises(InputError, match="0600") as caught:
        read_passwords(path)
    assert SENTINEL_PASSWORD not in str(caught.value)


def test_unreadable_passwords_files_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        read_passwords(tmp_path / "missing.xlsx")
    not_a_workbook = tmp_path / "junk.xlsx"
    fd = os.open(not_a_workbook, os.O_CREAT | os.O_WRONLY, 0o600)
    os.write(fd, b"not a zip")
    os.close(fd)
    with pytest.raises(InputError, match="not a readable"):
        read_passwords(not_a_workbook)
    report = write_report(tmp_path / "report.xlsx", [make_result(2)])
    report.chmod(0o600)
    with pytest.raises(InputError, match="no sheet 'Passwords'"):
        read_passwords(report)
    with pytest.raises(InputError, match="not a regular file"):
        read_passwords(tmp_path)


def test_passwords_workbook_of_many_entries(tmp_path: Path) -> None:
    path = tmp_path / "passwords.xlsx"
    entries = [(row, f"User{row}@Contoso.com", f"Pw-{row:06d}x") for row in range(2, 2002)]
    write_passwords(path, iter(entries))
    assert read_passwords(path) == {upn.casefold(): password for _, upn, password in entries}
    raw = io.BytesIO(path.read_bytes())
    assert zipfile.is_zipfile(raw)
