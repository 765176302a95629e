"""`validate` with profile and manager columns, through the real CLI against the embedded sandbox: bad profile
cells are `field.*` problems before anything is sent, a manager is a user of the customer or a row of the sheet
(later rows too), `manager.unknown`, `manager.cycle`, and a row whose manager row is invalid is invalid too, with a
message naming that row. `Rows` shows the profile as it would be sent."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from .sandbox_http import CONTOSO, JANE, LICENSED_TOML
from .support import results_rows, run_cli, sheet_rows, summary_items

PASSWORD = "Str0ng!Passw0rd"
PROFILE = {
    "jobTitle": "Staff Engineer",
    "department": "R&D — Platform",
    "officeLocation": "Building 40/2.113",
    "companyName": "Contoso Ltd",
    "employeeId": "000123",
    "employeeType": "Employee",
    "employeeHireDate": "2026-12-01",
    "mobilePhone": "+1 (425) 555-0199",
    "businessPhones": "+1 425 555 0100 x42",
    "streetAddress": "1 Microsoft Way",
    "city": "Redmond",
    "state": "WA",
    "postalCode": "98052",
    "country": "United States",
    "preferredLanguage": "en-US",
    "mailNickname": "boss.person",
}
COLUMNS = ["userPrincipalName", "displayName", "usageLocation", "password", *PROFILE, "manager"]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "licensed.toml"
    path.write_text(LICENSED_TOML, encoding="utf-8")
    return path


def write_sheet(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS)
        writer.writeheader()
        for row in rows:
            local = row["userPrincipalName"].partition("@")[0]
            writer.writerow({"displayName": local.title(), "usageLocation": "US", "password": PASSWORD, **row})
    return path


def person(local: str, manager: str = "", **profile: str) -> dict[str, str]:
    return {"userPrincipalName": f"{local}@contoso.com", "manager": manager, **profile}


def test_profile_and_manager_problems_are_found_before_anything_is_sent(tmp_path: Path, data: Path) -> None:
    sheet = write_sheet(
        tmp_path / "hires.csv",
        [
            person("boss", JANE.upper(), **PROFILE),  # row 2: a manager in the tenant (any case)
            person("ana", "boss@contoso.com"),  # 3: a manager that is a row
            person(  # 4: four bad cells
                "bad", jobTitle="x" * 129, employeeHireDate="01/12/2026", mobilePhone="call me",
                businessPhones="+1 425 555 0100; +1 425 555 0101",
            ),  # fmt: skip
            person("ghost", "nobody@contoso.com"),  # 5
            person("loopa", "loopb@contoso.com"),  # 6
            person("loopb", "LOOPA@contoso.com"),  # 7
            person("self", "self@contoso.com"),  # 8
            person("under", "bad@contoso.com"),  # 9: its manager row is invalid
            person("deeper", "under@contoso.com"),  # 10: and so on down the chain
            person("early", "late.boss@contoso.com"),  # 11: a manager further down the sheet
            person("late.boss", "", employeeHireDate="2027-01-04T09:30:00Z"),  # 12
            person("typo", "not a upn"),  # 13
        ],
    )
    report = tmp_path / "report.xlsx"
    done = run_cli(
        "validate", sheet, "--sandbox", "--sandbox-data", data, "--customer", CONTOSO, "--report", report
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    rows = {r["userPrincipalName"].partition("@")[0]: r for r in results_rows(report)}
    status = {local: r["status"] for local, r in rows.items()}
    assert status == {
        "boss": "valid", "ana": "valid", "bad": "invalid", "ghost": "invalid", "loopa": "invalid",
        "loopb": "invalid", "self": "invalid", "under": "invalid", "deeper": "invalid", "early": "valid",
        "late.boss": "valid", "typo": "invalid",
    }  # fmt: skip

    listed = sheet_rows(report, "Problems")

    def codes(local: str) -> list[str]:
        return [str(p["code"]) for p in listed if str(p["userPrincipalName"]).startswith(local + "@")]

    assert codes("bad") == ["field.too_long", "field.invalid", "field.invalid", "field.invalid"]
    fields = [p["field"] for p in listed if p["userPrincipalName"] == "bad@contoso.com"]
    assert fields == ["jobTitle", "employeeHireDate", "mobilePhone", "businessPhones"]
    problems = rows["bad"]["problems"]
    assert "jobTitle has 129 characters, more than the 128 allowed" in problems
    assert "employeeHireDate '01/12/2026' is not an ISO date" in problems
    assert "businessPhones '+1 425 555 0100; +1 425 555 0101' is not a telephone number (one number only" in problems
    assert "mobilePhone 'call me' is not a telephone number" in problems
    assert codes("ghost") == ["manager.unknown"] and "nobody@contoso.com is neither a user" in rows["ghost"]["problems"]
    assert codes("loopa") == codes("loopb") == ["manager.cycle"]
    assert "rows 6 → 7 → 6 manage each other" in rows["loopa"]["problems"]
    assert codes("self") == ["manager.cycle"] and "nobody can be their own manager" in rows["self"]["problems"]
    assert codes("under") == ["field.invalid"] and "is row 4 of this sheet, which is invalid" in rows["under"]["problems"]
    assert "is row 9 of this sheet, which is invalid" in rows["deeper"]["problems"]
    assert codes("typo") == ["field.invalid"] and "not a valid user principal name" in rows["typo"]["problems"]

    # The Summary counts each bad cell, as the Problems sheet lists them.
    summary = summary_items(report)
    for code in ("field.too_long", "field.invalid", "manager.unknown", "manager.cycle"):
        assert summary[code] == str(sum(p["code"] == code for p in listed)), code

    # Rows: every profile column as it would be sent; the hire date as Graph's date-time.
    boss = rows["boss"]
    assert {name: boss[name] for name in PROFILE} == PROFILE | {"employeeHireDate": "2026-12-01T00:00:00Z"}
    assert boss["manager"] == JANE.upper() and rows["ana"]["manager"] == "boss@contoso.com"
    assert rows["late.boss"]["employeeHireDate"] == "2027-01-04T09:30:00Z"


def test_a_sheet_without_profile_columns_gets_no_empty_columns_for_them(tmp_path: Path, data: Path) -> None:
    sheet = tmp_path / "plain.csv"
    sheet.write_text(f"userPrincipalName,displayName,usageLocation,password\nann@contoso.com,Ann,US,{PASSWORD}\n")
    report = tmp_path / "report.xlsx"
    done = run_cli(
        "validate", sheet, "--sandbox", "--sandbox-data", data, "--customer", CONTOSO, "--report", report
    )
    assert done.returncode == 0, done.stderr
    [row] = results_rows(report)
    assert row["status"] == "valid"
    assert not set(row) & {*PROFILE, "manager"}
