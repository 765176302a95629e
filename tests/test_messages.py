"""Messages that name the fix, through the real CLI: exit code, one clear line, no traceback."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support import CONTOSO, ROOT, assert_one_clear_line, run_cli, sheet_rows

SAMPLE_DOMAINS = ROOT / "samples" / "domains.csv"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_a_microsoft_365_csv_is_told_which_options_stand_in_for_its_missing_columns(tmp_path: Path) -> None:
    sheet = write(
        tmp_path / "m365.csv",
        "User Name,First Name,Last Name,Display Name\nann@contoso.com,Ann,Lee,Ann Lee\n",
    )
    result = run_cli("validate", sheet, "--domains", SAMPLE_DOMAINS)
    line = assert_one_clear_line(result, 2, "missing required columns: usageLocation, password")
    assert "--usage-location CODE and --generate-passwords PATH.xlsx" in line
    assert line.endswith("columns found: displayName, firstName, lastName, userPrincipalName")


def test_uk_is_answered_with_gb_as_an_option_and_in_a_row(tmp_path: Path) -> None:
    sheet = write(
        tmp_path / "uk.csv",
        "userPrincipalName,displayName,usageLocation,password\nann@contoso.com,Ann Lee,UK,Xq7!vLm#93zR\n",
    )
    result = run_cli("validate", sheet, "--domains", SAMPLE_DOMAINS, "--usage-location", "uk")
    assert_one_clear_line(result, 2, "--usage-location: UK is not an ISO country code: did you mean GB?")

    report = tmp_path / "report.xlsx"
    result = run_cli("validate", sheet, "--domains", SAMPLE_DOMAINS, "--report", report, "-q")
    assert result.returncode == 1, result.stderr
    (row,) = sheet_rows(report)
    assert "did you mean GB?" in str(row["problems"])


def test_a_title_row_above_the_headers_is_named_with_the_headers_found(tmp_path: Path) -> None:
    sheet = write(
        tmp_path / "titled.csv",
        "New hires December;;\n;;\nuserPrincipalName;displayName;password\nann@contoso.com;Ann Lee;Xq7!vLm#93zR\n",
    )
    result = run_cli("validate", sheet, "--domains", SAMPLE_DOMAINS, "--usage-location", "US")
    line = assert_one_clear_line(result, 2, "row 1 has no recognisable column header, but row 3 has")
    assert "(userPrincipalName, displayName, password)" in line and "delete the row(s) above row 3" in line
    assert "Xq7!" not in line  # never a cell's text


def test_validate_with_the_sandbox_and_a_domains_file_takes_the_domains_from_the_file(tmp_path: Path) -> None:
    domains = write(tmp_path / "domains.csv", "domain,authenticationType\nfabrikam.com,Managed\n")
    report = tmp_path / "report.xlsx"
    result = run_cli(
        "validate", ROOT / "samples" / "new_hires.csv", "--sandbox", "--customer", CONTOSO, "--domains", domains,
        "--report", report, "--log-format", "json",
    )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr
    summary = json.loads(result.stderr.splitlines()[-1])
    assert summary["source"] == f"embedded sandbox, domains from {domains}"
    unknown = [row for row in sheet_rows(report) if "domain.unknown" in str(row["problems"])]
    assert len(unknown) > 20  # contoso.com is not in the file: the file was honoured, not ignored


def test_an_offline_dry_run_says_existing_users_were_not_checked(tmp_path: Path) -> None:
    sheet, report = ROOT / "samples" / "new_hires.csv", tmp_path / "report.xlsx"
    result = run_cli(
        "validate", sheet, "--domains", SAMPLE_DOMAINS, "--report", report, env={"COLUMNS": "80"}
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert any(line.split("│")[1:3] == [" skipped ", " not checked "] for line in result.stderr.splitlines())
    assert "skipped │           0" not in result.stderr
    result = run_cli(
        "validate", sheet, "--domains", SAMPLE_DOMAINS, "--report", report, "--log-format", "json"
    )
    assert json.loads(result.stderr.splitlines()[-1])["not_checked"] == ["skipped"]


def test_a_bare_command_prints_its_help_and_exits_0() -> None:
    result = run_cli()
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith("Usage: ") and "[OPTIONS] COMMAND" in result.stdout.splitlines()[0]
    assert "validate" in result.stdout and "error" not in result.stdout
    result = run_cli("journal")
    assert result.returncode == 0 and " journal [OPTIONS] COMMAND" in result.stdout.splitlines()[0]


def test_a_customer_id_in_braces_is_the_guid(tmp_path: Path) -> None:
    report = tmp_path / "report.xlsx"
    braced = "{" + CONTOSO.upper() + "}"
    result = run_cli(
        "validate",
        ROOT / "samples" / "new_hires.csv",
        "--sandbox",
        "--customer",
        braced,
        "--report",
        report,
        "-q",
    )
    assert result.returncode == 1, (
        result.stderr
    )  # the sample's mistakes, not "not one of the partner's customers"
    assert result.stderr == ""
    assert sum(row["status"] == "valid" for row in sheet_rows(report)) == 26


def test_the_version_is_one_line_on_stdout() -> None:
    from bulkonboard import __version__

    result = run_cli("--version")
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout == f"bulkonboard, version {__version__}\n"
