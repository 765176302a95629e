"""`validate` with licenses through the real CLI against the embedded sandbox (a data file with SKUs): unknown and
suspended SKUs refused with the reason, units given out in input order, `--license` for empty cells, the Summary's
table per SKU, and an offline dry run that says once that it cannot check licenses."""

from __future__ import annotations

import subprocess
from pathlib import Path

import openpyxl
import pytest

from .sandbox_http import CONTOSO, LICENSED_TOML
from .support import assert_one_clear_line, results_rows, run_cli, summary_items

HEADER = "userPrincipalName,displayName,usageLocation,password,licenses\n"
PASSWORD = "Str0ng!Passw0rd"


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "licensed.toml"
    path.write_text(LICENSED_TOML, encoding="utf-8")
    return path


def write_sheet(tmp_path: Path, *rows: tuple[str, str, str]) -> Path:
    """(local part, usageLocation, licenses) per row, on contoso.com."""
    path = tmp_path / "hires.csv"
    lines = [
        f"{local}@contoso.com,{local.title()},{usage},{PASSWORD},{licenses}\n"
        for local, usage, licenses in rows
    ]
    path.write_text(HEADER + "".join(lines), encoding="utf-8")
    return path


def license_table(report: Path) -> dict[str, list[object]]:
    """The Summary's table per SKU: product -> [available, asked, short, to do, skuPartNumber, customer]."""
    sheet = openpyxl.load_workbook(report, read_only=True)["Summary"]
    table: dict[str, list[object]] = {}
    inside = False
    for first, *rest in sheet.iter_rows(values_only=True):
        if first == "license":
            inside = True
        elif inside and first is None:
            break
        elif inside:
            table[str(first)] = list(rest[:6])
    return table


def validate(sheet: Path, data: Path, report: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "validate",
        sheet,
        "--sandbox",
        "--sandbox-data",
        data,
        "--customer",
        CONTOSO,
        "--report",
        report,
        *extra,
    )


def test_unknown_suspended_and_short_rows_are_invalid_and_the_summary_says_what_to_buy(
    tmp_path: Path, data: Path
) -> None:
    sheet = write_sheet(
        tmp_path,
        ("ann", "US", "ENTERPRISEPACK"),
        ("bob", "US", "Office 365 E5"),  # unknown: the customer holds E3
        ("cem", "US", "office 365 e3; FLOW_FREE"),
        ("dee", "US", "DEVELOPERPACK"),  # suspended
        ("eve", "US", "enterprisepack"),  # the third E3: jane holds one of 3
        ("fay", "", "Minecraft Education"),  # group2 is known; no usage location
        ("gus", "GB", ""),  # takes --license
        ("hal", "US", "ENTERPRISEPACK"),  # the fourth E3
    )
    report = tmp_path / "report.xlsx"
    result = validate(sheet, data, report, "--license", "FLOW_FREE")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    rows = {row["userPrincipalName"].split("@")[0]: row for row in results_rows(report)}
    assert {name for name, row in rows.items() if row["status"] == "valid"} == {"ann", "cem", "gus"}
    assert rows["bob"]["problems"].startswith("license.unknown: Office 365 E5 is not a license")
    assert "closest: Office 365 E3 (ENTERPRISEPACK)" in rows["bob"]["problems"]
    assert rows["dee"]["problems"].startswith(
        "license.unknown: Office 365 E5 Developer (DEVELOPERPACK) cannot"
    )
    assert "Suspended" in rows["dee"]["problems"]
    assert rows["eve"]["problems"].startswith("license.insufficient:")
    assert (
        rows["hal"]["problems"].startswith("license.insufficient:") and "number 4" in rows["hal"]["problems"]
    )
    assert rows["fay"]["problems"].startswith("field.missing: usageLocation is empty")
    assert "usage location" in rows["fay"]["problems"].partition("(")[2]
    assert rows["gus"]["licenses"] == "FLOW_FREE" and rows["cem"]["licenses"] == "office 365 e3; FLOW_FREE"

    table = license_table(report)
    assert table["Office 365 E3"][:5] == [2, 4, 2, "buy 2 more Office 365 E3", "ENTERPRISEPACK"]
    assert table["Power Automate Free"][:4] == [100, 2, 0, "enough"]
    assert set(table) == {"Office 365 E3", "Power Automate Free"}
    items = summary_items(report)
    assert (items["license.unknown"], items["license.insufficient"]) == ("2", "2")


def test_enough_units_and_known_skus_pass(tmp_path: Path, data: Path) -> None:
    sheet = write_sheet(tmp_path, ("ann", "US", "ENTERPRISEPACK"), ("bob", "US", "Minecraft Education"))
    report = tmp_path / "report.xlsx"
    result = validate(sheet, data, report)
    assert result.returncode == 0, result.stderr
    assert [row["status"] for row in results_rows(report)] == ["valid", "valid"]
    assert license_table(report)["Minecraft Education"][:4] == [5, 1, 0, "enough"]


def test_an_offline_dry_run_says_once_that_licenses_are_not_checked(tmp_path: Path) -> None:
    domains = tmp_path / "domains.csv"
    domains.write_text("domain,authenticationType\ncontoso.com,Managed\n", encoding="utf-8")
    sheet = write_sheet(tmp_path, ("ann", "US", "Not A Sku"), ("bob", "US", "ENTERPRISEPACK"))
    report = tmp_path / "report.xlsx"
    result = run_cli("validate", sheet, "--domains", domains, "--report", report)
    assert result.returncode == 0, result.stderr
    rows = results_rows(report)
    assert [row["problems"] for row in rows] == ["", ""]  # no per-row noise
    assert rows[0]["licenses"] == "Not A Sku"
    assert summary_items(report)["licenses"].startswith("not checked: an offline dry run")


def test_an_empty_license_option_is_refused_in_one_line(tmp_path: Path, data: Path) -> None:
    sheet = write_sheet(tmp_path, ("ann", "US", ""))
    report = tmp_path / "report.xlsx"
    result = validate(sheet, data, report, "--license", " ")
    assert_one_clear_line(result, 2, "--license")
    assert not report.exists()
