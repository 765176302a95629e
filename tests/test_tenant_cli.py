"""The dry run tells the truth about the tenant (issue 15), through the real CLI: a UPN held by a user in the
recycle bin is `user.deleted` in the report, a customer without a relationship stops before any row (exit 3),
and the offline domains file says once that it cannot know users.
"""

from __future__ import annotations

from pathlib import Path

from tests.support import assert_one_clear_line, person, run_cli, sheet_rows, write_sheet

TENANT = "33333333-0000-4000-8000-000000000001"
NO_RELATIONSHIP = "33333333-0000-4000-8000-000000000003"

DATA = f"""
[[customers]]
id = "{TENANT}"
name = "Tailspin"
domains = [{{ name = "tailspin.com", authenticationType = "Managed" }}]

[[customers.users]]
userPrincipalName = "kept@tailspin.com"
displayName = "Kept"
usageLocation = "US"

[[customers.users]]
userPrincipalName = "gone@tailspin.com"
displayName = "Gone"
state = "inactive"
softDeletionTime = "2026-11-20T09:30:00Z"

[[customers]]
id = "{NO_RELATIONSHIP}"
name = "Stranger"
relationship = false
domains = [{{ name = "stranger.com", authenticationType = "Managed" }}]
"""


def sandbox_data(tmp_path: Path) -> Path:
    path = tmp_path / "tenant.toml"
    path.write_text(DATA, encoding="utf-8")
    return path


def test_a_upn_in_the_recycle_bin_is_user_deleted_in_the_report(tmp_path: Path) -> None:
    sheet = write_sheet(
        tmp_path / "hires.csv",
        [
            person(1, "tailspin.com", userPrincipalName="Gone@Tailspin.com"),
            person(2, "tailspin.com", userPrincipalName="kept@tailspin.com"),
            person(3, "tailspin.com"),
        ],
    )
    report = tmp_path / "report.xlsx"
    result = run_cli(
        "validate", sheet, "--sandbox", "--sandbox-data", sandbox_data(tmp_path), "--customer", TENANT,
        "--report", report, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr  # a row to fix
    assert "Traceback" not in result.stderr
    rows = {str(r["userPrincipalName"]): r for r in sheet_rows(report)}
    gone = rows["Gone@Tailspin.com"]
    assert gone["status"] == "invalid"
    problems = str(gone["problems"])
    assert problems.startswith("user.deleted")
    assert "recycle bin since 2026-11-20 09:30 UTC" in problems
    assert "--restore-deleted" in problems and "change the UPN" in problems
    assert rows["kept@tailspin.com"]["status"] == "skipped"
    assert rows["new.hire3@tailspin.com"]["status"] == "valid"


def test_a_customer_without_a_relationship_stops_before_any_row(tmp_path: Path) -> None:
    sheet = write_sheet(tmp_path / "hires.csv", [person(1, "stranger.com")])
    report = tmp_path / "report.xlsx"
    result = run_cli(
        "validate", sheet, "--sandbox", "--sandbox-data", sandbox_data(tmp_path), "--customer", NO_RELATIONSHIP,
        "--report", report, timeout=120,
    )  # fmt: skip
    assert_one_clear_line(result, 3, NO_RELATIONSHIP, "20002")
    assert not report.exists()


def test_the_offline_domains_file_says_once_that_it_cannot_know_users(tmp_path: Path) -> None:
    domains = tmp_path / "domains.csv"
    domains.write_text("domain,authenticationType\ntailspin.com,Managed\n", encoding="utf-8")
    sheet = write_sheet(tmp_path / "hires.csv", [person(n, "tailspin.com") for n in range(1, 6)])
    result = run_cli("validate", sheet, "--domains", domains, "--report", tmp_path / "r.xlsx", timeout=120)
    assert result.returncode == 0, result.stderr
    said = [line for line in result.stderr.splitlines() if "recycle bin" in line]
    assert len(said) == 1, result.stderr  # once, not per row
    assert "cannot know" in said[0] and str(domains) in said[0]
    assert all(row["problems"] in (None, "") for row in sheet_rows(tmp_path / "r.xlsx"))
