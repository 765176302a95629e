"""The report and the results as Excel users expect them: a chart in both, print setup, a Problems sheet of
problems only (and saying so when there are none), the fields sent, chart labels every reader shows alike."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import openpyxl
import pytest

from tests.support import CONTOSO, ROOT, run_cli, sheet_rows

SAMPLE = ROOT / "samples" / "new_hires.csv"


@pytest.fixture(scope="module")
def workbooks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("workbooks")
    report, results = folder / "report.xlsx", folder / "results.xlsx"
    source = ("--sandbox", "--customer", CONTOSO)
    assert run_cli("validate", SAMPLE, *source, "--report", report, "-q").returncode == 1
    assert run_cli("run", SAMPLE, *source, "--results", results, "-q").returncode == 1
    return {"report": report, "results": results}


@pytest.mark.parametrize("kind", ["report", "results"])
def test_both_workbooks_have_an_outcome_chart_whose_labels_show_the_value_alone(
    workbooks: dict[str, Path], kind: str
) -> None:
    with zipfile.ZipFile(workbooks[kind]) as archive:
        charts = [name for name in archive.namelist() if re.fullmatch(r"xl/charts/chart\d+\.xml", name)]
        assert len(charts) == 1
        xml = archive.read(charts[0]).decode()
    labels = re.search(r"<c:dLbls>(.*?)</c:dLbls>", xml)
    assert labels, xml
    shown = dict(re.findall(r'<c:(show\w+) val="(\d)"/>', labels.group(1)))
    assert shown == {
        "showLegendKey": "0", "showVal": "1", "showCatName": "0", "showSerName": "0", "showPercent": "0",
        "showBubbleSize": "0",
    }  # fmt: skip
    categories = re.search(r"<c:cat><c:strRef>.*?<c:strCache>(.*?)</c:strCache>", xml)
    assert categories and "<c:v>skipped</c:v>" in categories.group(1)  # names, not 1, 2, 3


@pytest.mark.parametrize("kind", ["report", "results"])
def test_every_sheet_prints_landscape_one_page_wide_with_its_header_row_on_each_page(
    workbooks: dict[str, Path], kind: str
) -> None:
    book = openpyxl.load_workbook(workbooks[kind])
    for sheet in book.worksheets:
        assert sheet.page_setup.orientation == "landscape", sheet.title
        assert sheet.sheet_properties.pageSetUpPr.fitToPage and sheet.page_setup.fitToHeight == 0, sheet.title
        if sheet.title != "Summary":
            assert sheet.print_title_rows == "$1:$1", sheet.title


@pytest.mark.parametrize("kind", ["report", "results"])
def test_the_problems_sheet_lists_problems_not_skipped_rows(workbooks: dict[str, Path], kind: str) -> None:
    rows = sheet_rows(workbooks[kind])
    skipped = [row for row in rows if row["status"] == "skipped"]
    assert skipped and "user.exists" in str(skipped[0]["problems"])  # the row says why it was skipped
    problems = sheet_rows(workbooks[kind], "Problems")
    assert problems and not [p for p in problems if p["code"] == "user.exists"]
    assert {p["row"] for p in problems} == {
        row["row"] for row in rows if row["status"] in ("invalid", "failed")
    }


def test_the_rows_carry_force_change_password_as_sent(workbooks: dict[str, Path]) -> None:
    rows = sheet_rows(workbooks["results"])
    assert {row["forceChangePassword"] for row in rows if row["status"] == "created"} <= {"TRUE", "FALSE"}
    assert any(row["forceChangePassword"] == "TRUE" for row in rows)


def test_an_empty_problems_sheet_says_there_are_none(tmp_path: Path) -> None:
    sheet = tmp_path / "clean.csv"
    sheet.write_text(
        "userPrincipalName,displayName,usageLocation,password,forceChangePassword\n"
        "ann.lee@contoso.com,Ann Lee,US,Xq7!vLm#93zR,FALSE\n",
        encoding="utf-8",
    )
    report = tmp_path / "report.xlsx"
    result = run_cli(
        "validate", sheet, "--domains", ROOT / "samples" / "domains.csv", "--report", report, "-q"
    )
    assert result.returncode == 0, result.stderr
    problems = list(openpyxl.load_workbook(report)["Problems"].iter_rows(values_only=True))
    assert problems[1][0] == "No problems: every row is valid or already exists."
    (row,) = sheet_rows(report)
    assert row["forceChangePassword"] == "FALSE"
