"""The reader on real files of every kind: encodings, delimiters, Microsoft's templates, typed workbooks, and
the broken files people actually send. Row numbers and texts are asserted exactly: they are what a person
looks up in Excel and what is sent to the service."""

from __future__ import annotations

import csv
import importlib.util
import io
import zipfile
from datetime import date, datetime, time
from pathlib import Path

import openpyxl
import pytest
import xlsxwriter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulkonboard.errors import InputError
from bulkonboard.model import FIELDS, OPTIONAL_FIELDS
from bulkonboard.sheets.reader import Sheet, header_field, read_sheet

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"


def write_text(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def records(sheet: Sheet, *fields: str) -> list[tuple[object, ...]]:
    """(row, field...) per kept row: exact values, compared as plain Python objects."""
    return [tuple(r) for r in sheet.frame[["row", *fields]].itertuples(index=False)]


def assert_text_frame(sheet: Sheet) -> None:
    frame = sheet.frame
    # the optional columns (profile, manager) only when the sheet has them
    assert list(frame.columns) == ["row", *FIELDS, *(f for f in OPTIONAL_FIELDS if f in sheet.present)]
    assert str(frame["row"].dtype) == "int64"
    assert not frame.isna().any().any()
    for field in frame.columns[1:]:
        assert all(type(v) is str for v in frame[field])


def one_line_error(path: Path, **kwargs: str) -> str:
    with pytest.raises(InputError) as caught:
        read_sheet(path, **kwargs)
    message = caught.value.message
    assert caught.value.exit_code == 2
    assert "\n" not in message
    assert str(path) in message
    return message


# --------------------------------------------------------------------------------------------------- headers


@pytest.mark.parametrize(
    ("header", "field"),
    [
        ("userPrincipalName", "userPrincipalName"),
        ("  USER principal_name ", "userPrincipalName"),
        ("user-principal-name", "userPrincipalName"),
        ("First Name", "firstName"),
        ("last_name", "lastName"),
        ("Display\u00a0Name", "displayName"),
        ("usage location", "usageLocation"),
        ("ImmutableID", "immutableId"),
        ("Password", "password"),
        ("force change password", "forceChangePassword"),
        ("Customer Tenant Id", "customerTenantId"),
        # Entra's bulk-create template: the bracket holds Graph's name
        ("User name [userPrincipalName] Required", "userPrincipalName"),
        ("Name [displayName] Required", "displayName"),
        ("Name (example: Chris Green) [displayName] *", "displayName"),
        ("Initial password [passwordProfile] Required", "password"),
        ("First name [givenName]", "firstName"),
        ("Last name [surname]", "lastName"),
        ("Usage location [usageLocation]", "usageLocation"),
        ("Block sign in (Yes/No) [accountEnabled] Required", None),
        ("Country or region [country]", "country"),
        ("Job title [jobTitle]", "jobTitle"),
        # Microsoft 365 admin center template
        ("User Name", "userPrincipalName"),
        ("Country or Region", "country"),
        ("Alternate email address", None),
        # profile and manager columns (the contract's additions of 2026-12-03), by Graph's names or the templates'
        ("Employee ID", "employeeId"),
        ("Office [physicalDeliveryOfficeName]", "officeLocation"),
        ("Office phone [telephoneNumber]", "businessPhones"),
        ("Mobile phone [mobile]", "mobilePhone"),
        ("State or province [state]", "state"),
        ("ZIP or postal code [postalCode]", "postalCode"),
        ("Office Number", "officeLocation"),
        ("Office Phone", "businessPhones"),
        ("Mobile Phone", "mobilePhone"),
        ("Address", "streetAddress"),
        ("State or Province", "state"),
        ("ZIP or Postal Code", "postalCode"),
        ("Manager", "manager"),
        ("employee hire date", "employeeHireDate"),
        # anything else is kept out of the way
        ("Fax", None),
        ("Start date", None),
        ("", None),
        ("   ", None),
    ],
)
def test_header_field(header: str, field: str | None) -> None:
    assert header_field(header) == field


# ------------------------------------------------------------------------------------------------ text files


def test_plain_csv_keeps_text_as_typed_and_counts_blank_rows(tmp_path: Path) -> None:
    path = write_text(
        tmp_path / "hires.csv",
        "userPrincipalName,displayName,usageLocation,Employee ID,password\n"
        "nangula@contoso.com,Nangula Shikongo,NA,000123,Xy7!abcdefgh\n"
        "\n"
        ",,,,\n"
        "  francois@contoso.com\u00a0,\u00a0 François Lefèvre ,fr, 000124 ,\n"
        "n1001@contoso.com,1001,null,N/A,#N/A\n",
    )
    sheet = read_sheet(path)
    assert_text_frame(sheet)
    assert (sheet.layout, sheet.header_row, sheet.sheet_name, len(sheet)) == ("plain", 1, None, 3)
    # "Employee ID" is Graph's employeeId (a profile column since 2026-12-03): its zeros kept, as typed
    assert sheet.present == {"userPrincipalName", "displayName", "usageLocation", "password", "employeeId"}
    assert records(sheet, "userPrincipalName", "displayName", "usageLocation", "password", "firstName") == [
        (2, "nangula@contoso.com", "Nangula Shikongo", "NA", "Xy7!abcdefgh", ""),
        (5, "francois@contoso.com", "François Lefèvre", "fr", "", ""),
        (6, "n1001@contoso.com", "1001", "null", "#N/A", ""),
    ]
    assert records(sheet, "employeeId") == [(2, "000123"), (5, "000124"), (6, "N/A")]


def test_utf8_bom_does_not_hide_the_first_header(tmp_path: Path) -> None:
    path = write_text(tmp_path / "bom.csv", "userPrincipalName,lastName\r\nzoe@contoso.com,Müller\r\n", "utf-8-sig")
    sheet = read_sheet(path)
    assert sheet.present == {"userPrincipalName", "lastName"}
    assert records(sheet, "userPrincipalName", "lastName") == [(2, "zoe@contoso.com", "Müller")]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_unicode_text_with_tabs(tmp_path: Path, encoding: str) -> None:
    """Excel's "Unicode Text": UTF-16 with a byte-order mark, tab-separated, saved as .txt."""
    text = "userPrincipalName\tfirstName\tlastName\tdisplayName\r\naiko@contoso.com\t愛子\t田中\t田中 愛子\r\n"
    bom = {"utf-16-le": "\ufeff", "utf-16-be": "\ufeff", "utf-16": ""}[encoding]
    path = write_text(tmp_path / "unicode.txt", bom + text, encoding)
    assert path.read_bytes()[:2] in (b"\xff\xfe", b"\xfe\xff")
    sheet = read_sheet(path)
    assert records(sheet, "userPrincipalName", "firstName", "lastName", "displayName") == [
        (2, "aiko@contoso.com", "愛子", "田中", "田中 愛子")
    ]


def test_windows_1252_semicolons(tmp_path: Path) -> None:
    """European Excel's "CSV": Windows-1252 and `;`, where `,` is ordinary text."""
    path = write_text(
        tmp_path / "eu.csv",
        "userPrincipalName;displayName;lastName;password\r\n"
        "jose@contoso.com;Álvarez, José;Straße;Pa€€word1\r\n",
        "cp1252",
    )
    sheet = read_sheet(path)
    assert records(sheet, "userPrincipalName", "displayName", "lastName", "password") == [
        (2, "jose@contoso.com", "Álvarez, José", "Straße", "Pa€€word1")
    ]


@pytest.mark.parametrize(
    ("delimiter", "name"),
    [(",", "a.csv"), (";", "a.csv"), ("\t", "a.csv"), ("\t", "a.tsv"), (";", "a.txt"), (",", "a.TXT")],
)
def test_delimiter_is_detected(tmp_path: Path, delimiter: str, name: str) -> None:
    others = "".join(d for d in ",;\t" if d != delimiter)
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\n")
    writer.writerow(["User Principal Name", "Display Name", "Department"])
    writer.writerow(["a@contoso.com", f"A{others}B", "x"])
    writer.writerow(["b@contoso.com", f"say {delimiter} twice {delimiter} ok", "y"])
    sheet = read_sheet(write_text(tmp_path / name, buffer.getvalue()))
    assert records(sheet, "userPrincipalName", "displayName") == [
        (2, "a@contoso.com", f"A{others}B"),
        (3, "b@contoso.com", f"say {delimiter} twice {delimiter} ok"),
    ]


def test_single_column_sheet(tmp_path: Path) -> None:
    sheet = read_sheet(write_text(tmp_path / "one.csv", "userPrincipalName\na@contoso.com\n\nb@contoso.com"))
    assert records(sheet, "userPrincipalName") == [(2, "a@contoso.com"), (4, "b@contoso.com")]


def test_entra_template_csv(tmp_path: Path) -> None:
    path = write_text(
        tmp_path / "UserCreateTemplate.csv",
        "version:v1.0,,,,,,\n"
        "Name [displayName] Required,User name [userPrincipalName] Required,"
        "Initial password [passwordProfile] Required,Block sign in (Yes/No) [accountEnabled] Required,"
        "First name [givenName],Last name [surname],Usage location [usageLocation]\n"
        "Chris Green,chris@contoso.com,Xy7!abcdefgh,No,Chris,Green,US\n"
        "\n"
        "Wei Zhang,wei@contoso.com,Ab3$defghijk,Yes,Wei,Zhang,cn\n",
    )
    sheet = read_sheet(path)
    assert (sheet.layout, sheet.header_row) == ("entra", 2)
    assert sheet.present == {"displayName", "userPrincipalName", "password", "firstName", "lastName", "usageLocation"}
    assert records(sheet, "userPrincipalName", "displayName", "password", "firstName", "lastName", "usageLocation") == [
        (3, "chris@contoso.com", "Chris Green", "Xy7!abcdefgh", "Chris", "Green", "US"),
        (5, "wei@contoso.com", "Wei Zhang", "Ab3$defghijk", "Wei", "Zhang", "cn"),
    ]


def test_entra_version_row_without_trailing_delimiters(tmp_path: Path) -> None:
    """Told nothing, the parser would take the one-cell version row as the table's width."""
    path = write_text(
        tmp_path / "entra.csv",
        '"version:v1.0"\nUser name [userPrincipalName] Required;Name [displayName] Required;Job title [jobTitle]\n'
        "a@contoso.com;A;Boss\n",
    )
    sheet = read_sheet(path)
    assert (sheet.layout, sheet.header_row) == ("entra", 2)
    assert records(sheet, "userPrincipalName", "displayName") == [(3, "a@contoso.com", "A")]


def test_microsoft_365_template_csv(tmp_path: Path) -> None:
    path = write_text(
        tmp_path / "Import_User_Sample_en.csv",
        "User Name,First Name,Last Name,Display Name,Job Title,Department,Office Number,Office Phone,"
        "Mobile Phone,Fax,Alternate email address,Address,City,State or Province,ZIP or Postal Code,"
        "Country or Region\n"
        "chris@contoso.com,Chris,Green,Chris Green,IT Manager,Information Technology,123451,123-555-1211,"
        "123-555-6641,123-555-9821,chris@contoso.net,1 Microsoft way,Redmond,Wa,98052,United States\n",
    )
    sheet = read_sheet(path)
    assert (sheet.layout, sheet.header_row) == ("m365", 1)
    # The profile columns map to Graph's names (the contract's additions of 2026-12-03); Fax and the alternate
    # email address are not read.
    profile = ["jobTitle", "department", "officeLocation", "businessPhones", "mobilePhone", "streetAddress", "city",
               "state", "postalCode", "country"]  # fmt: skip
    assert sheet.present == {"userPrincipalName", "firstName", "lastName", "displayName", *profile}
    assert records(sheet, "userPrincipalName", "firstName", "lastName", "displayName", "usageLocation") == [
        (2, "chris@contoso.com", "Chris", "Green", "Chris Green", "")
    ]
    assert records(sheet, *profile) == [
        (2, "IT Manager", "Information Technology", "123451", "123-555-1211", "123-555-6641", "1 Microsoft way",
         "Redmond", "Wa", "98052", "United States"),
    ]  # fmt: skip


def test_quoted_newlines_and_delimiters_keep_excel_row_numbers(tmp_path: Path) -> None:
    """A quoted cell spanning lines is one Excel row: row numbers count records, not lines."""
    path = write_text(
        tmp_path / "quoted.csv",
        'userPrincipalName,displayName,Notes\r\n'
        'a@contoso.com,"Doe, Jane","line one\r\nline two\r\n\r\nline four"\r\n'
        'b@contoso.com,"He said ""hi""",\r\n'
        '\r\n'
        'c@contoso.com,"two\nlines",x\r\n',
    )
    sheet = read_sheet(path)
    assert records(sheet, "userPrincipalName", "displayName") == [
        (2, "a@contoso.com", "Doe, Jane"),
        (3, "b@contoso.com", 'He said "hi"'),
        (5, "c@contoso.com", "two\nlines"),
    ]


def test_ragged_rows(tmp_path: Path) -> None:
    path = write_text(
        tmp_path / "ragged.csv",
        "userPrincipalName,displayName,usageLocation\n"
        "a@contoso.com,A,US,surplus,cells,beyond,the,header\n"
        "b@contoso.com\n"
        "c@contoso.com,C\n"
        "d@contoso.com,D,GB,more\n",
    )
    sheet = read_sheet(path)
    assert records(sheet, "userPrincipalName", "displayName", "usageLocation") == [
        (2, "a@contoso.com", "A", "US"),
        (3, "b@contoso.com", "", ""),
        (4, "c@contoso.com", "C", ""),
        (5, "d@contoso.com", "D", "GB"),
    ]


def test_old_mac_line_endings(tmp_path: Path) -> None:
    sheet = read_sheet(write_text(tmp_path / "mac.csv", "userPrincipalName;displayName\ra@contoso.com;A\r\rb@x.com;B\r"))
    assert records(sheet, "userPrincipalName", "displayName") == [(2, "a@contoso.com", "A"), (4, "b@x.com", "B")]


def test_leading_blank_rows_move_the_header(tmp_path: Path) -> None:
    sheet = read_sheet(write_text(tmp_path / "late.csv", "\n,,\nuserPrincipalName,displayName\na@contoso.com,A\n"))
    assert sheet.header_row == 3
    assert records(sheet, "userPrincipalName") == [(4, "a@contoso.com")]


def test_entirely_blank_means_every_cell(tmp_path: Path) -> None:
    """A row that only has an unknown column filled is not blank (validation will say what it lacks);
    cells of nothing but spaces are blank; a column without a header is part of the table."""
    path = write_text(
        tmp_path / "blankish.csv",
        "userPrincipalName,Department,,displayName\n"
        "a@contoso.com,Sales,,A\n"
        ",Sales,,\n"
        " ,\u00a0, ,\t\n"
        ",,stray,\n"
        "b@contoso.com,,,B\n",
    )
    sheet = read_sheet(path)
    assert records(sheet, "userPrincipalName", "displayName") == [
        (2, "a@contoso.com", "A"),
        (3, "", ""),
        (5, "", ""),
        (6, "b@contoso.com", "B"),
    ]


def test_only_a_header_is_an_empty_sheet(tmp_path: Path) -> None:
    sheet = read_sheet(write_text(tmp_path / "header.csv", "userPrincipalName,displayName,usageLocation\r\n"))
    assert len(sheet) == 0
    assert_text_frame(sheet)
    assert sheet.present == {"userPrincipalName", "displayName", "usageLocation"}


def test_many_rows_keep_their_numbers(tmp_path: Path) -> None:
    lines = ["userPrincipalName,displayName"]
    for n in range(2, 5002):
        lines.append("" if n % 100 == 0 else f"u{n}@contoso.com,{n:06d}")
    sheet = read_sheet(write_text(tmp_path / "many.csv", "\n".join(lines) + "\n"))
    assert len(sheet) == 5000 - 50
    assert sheet.frame["row"].tolist() == [n for n in range(2, 5002) if n % 100]
    assert (sheet.frame["userPrincipalName"] == "u" + sheet.frame["row"].astype(str) + "@contoso.com").all()
    assert (sheet.frame["displayName"] == sheet.frame["row"].map(lambda n: f"{n:06d}")).all()


@settings(max_examples=60, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(
            st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\u2028\u2029\x85") | st.sampled_from(",;\t\"\n "), max_size=12),
            st.text(st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from(",;\"\n\u00a0"), max_size=12),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_any_text_survives_a_csv_round_trip(tmp_path: Path, rows: list[tuple[str, str]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(["userPrincipalName", "displayName"])
    writer.writerows(rows)
    sheet = read_sheet(write_text(tmp_path / "roundtrip.csv", buffer.getvalue()))
    expected = [
        (number, upn.strip(), display.strip())
        for number, (upn, display) in enumerate(rows, start=2)
        if upn.strip() or display.strip()
    ]
    assert records(sheet, "userPrincipalName", "displayName") == expected


# ----------------------------------------------------------------------------------------------------- xlsx


def test_xlsx_cells_read_as_excel_shows_them(tmp_path: Path) -> None:
    path = tmp_path / "typed.xlsx"
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = "Hires"
    sheet.append(["userPrincipalName", "displayName", "usageLocation", "immutableId", "forceChangePassword", "Start", "Salary"])
    sheet.append(["a@contoso.com", 1001, "NA", "000123", True, date(2026, 1, 5), 52000.5])
    sheet.append([])
    sheet.append(["b@contoso.com", 1.5, " fr ", -7, False, datetime(2026, 1, 5, 9, 30), time(8, 15)])
    sheet.append([None, None, None, None, None, None, None])
    sheet.append(["c@contoso.com", 0.1, "gb", 12345678901, None, "2026-02-01", None])
    sheet.append(["d@contoso.com", datetime(2026, 1, 5, 0, 0), "US", 1e20, "TRUE", None, None])
    workbook.save(path)

    result = read_sheet(path)
    assert_text_frame(result)
    assert (result.sheet_name, result.layout, result.header_row) == ("Hires", "plain", 1)
    assert records(result, "userPrincipalName", "displayName", "usageLocation", "immutableId", "forceChangePassword") == [
        (2, "a@contoso.com", "1001", "NA", "000123", "TRUE"),
        (4, "b@contoso.com", "1.5", "fr", "-7", "FALSE"),
        (6, "c@contoso.com", "0.1", "gb", "12345678901", ""),
        # a midnight datetime comes back from the workbook library as a date: the ISO date is what it shows
        (7, "d@contoso.com", "2026-01-05", "US", "1E+20", "TRUE"),  # as Excel shows it, not Python's 1e+20
    ]


def test_xlsx_dates_and_times_are_iso(tmp_path: Path) -> None:
    path = tmp_path / "dates.xlsx"
    workbook = xlsxwriter.Workbook(str(path))
    sheet = workbook.add_worksheet()
    day = workbook.add_format({"num_format": "dd/mm/yyyy"})
    moment = workbook.add_format({"num_format": "dd/mm/yyyy hh:mm"})
    clock = workbook.add_format({"num_format": "hh:mm:ss"})
    sheet.write_row(0, 0, ["userPrincipalName", "displayName", "immutableId", "lastName"])
    sheet.write_string(1, 0, "a@contoso.com")
    sheet.write_datetime(1, 1, datetime(2026, 1, 5), day)
    sheet.write_datetime(1, 2, datetime(2026, 1, 5, 9, 30), moment)
    sheet.write_datetime(1, 3, time(17, 45, 30), clock)
    sheet.write_formula(2, 0, '="b"&"@contoso.com"', None, "b@contoso.com")
    sheet.write_formula(2, 1, "=1000+1", None, 1001)
    workbook.close()
    assert records(read_sheet(path), "userPrincipalName", "displayName", "immutableId", "lastName") == [
        (2, "a@contoso.com", "2026-01-05", "2026-01-05T09:30:00", "17:45:30"),
        (3, "b@contoso.com", "1001", "", ""),
    ]


def test_xlsx_not_starting_in_a1_keeps_real_row_numbers(tmp_path: Path) -> None:
    path = tmp_path / "offset.xlsx"
    workbook = xlsxwriter.Workbook(str(path))
    sheet = workbook.add_worksheet("Data")
    sheet.write_row(2, 2, ["User Principal Name", "Display Name", "Notes"])  # C3
    sheet.write_row(3, 2, ["a@contoso.com", "A"])
    sheet.write_row(6, 2, ["b@contoso.com", "B"])
    sheet.write_row(7, 4, ["a note in an unknown column"])
    sheet.write_row(8, 1, ["left of the table"])  # column B: outside the table, this row is blank to us
    sheet.write_row(9, 2, ["c@contoso.com", 42])
    workbook.close()
    result = read_sheet(path)
    assert result.header_row == 3
    assert records(result, "userPrincipalName", "displayName") == [
        (4, "a@contoso.com", "A"),
        (7, "b@contoso.com", "B"),
        (8, "", ""),
        (10, "c@contoso.com", "42"),
    ]


def two_sheet_workbook(path: Path) -> Path:
    workbook = xlsxwriter.Workbook(str(path))
    readme = workbook.add_worksheet("Read me")
    readme.write_string(0, 0, "Fill in the second sheet")
    hires = workbook.add_worksheet("New hires")
    hires.write_row(0, 0, ["userPrincipalName", "displayName"])
    hires.write_row(1, 0, ["a@contoso.com", "A"])
    workbook.close()
    return path


def test_xlsx_first_sheet_by_default_and_sheet_by_name(tmp_path: Path) -> None:
    path = two_sheet_workbook(tmp_path / "two.xlsx")
    message = one_line_error(path)
    assert "Read me" in message and "no recognisable column header" in message
    for name in ("New hires", "new HIRES"):
        chosen = read_sheet(path, sheet=name)
        assert chosen.sheet_name == "New hires"
        assert records(chosen, "userPrincipalName", "displayName") == [(2, "a@contoso.com", "A")]


def test_xlsx_missing_sheet_lists_the_sheets(tmp_path: Path) -> None:
    message = one_line_error(two_sheet_workbook(tmp_path / "two.xlsx"), sheet="Hires")
    assert '"Hires"' in message and '"Read me", "New hires"' in message


def test_xlsx_entra_template(tmp_path: Path) -> None:
    path = tmp_path / "entra.xlsx"
    workbook = xlsxwriter.Workbook(str(path))
    sheet = workbook.add_worksheet()
    sheet.write_string(0, 0, "version:v1.0")
    sheet.write_row(1, 0, ["Name [displayName] Required", "User name [userPrincipalName] Required", "Usage location [usageLocation]"])
    sheet.write_row(2, 0, ["Chris Green", "chris@contoso.com", "US"])
    workbook.close()
    result = read_sheet(path)
    assert (result.layout, result.header_row) == ("entra", 2)
    assert records(result, "userPrincipalName", "displayName", "usageLocation") == [(3, "chris@contoso.com", "Chris Green", "US")]


def test_xlsx_only_a_header(tmp_path: Path) -> None:
    path = tmp_path / "header.xlsx"
    workbook = xlsxwriter.Workbook(str(path))
    workbook.add_worksheet().write_row(0, 0, ["userPrincipalName", "password"])
    workbook.close()
    result = read_sheet(path)
    assert len(result) == 0 and result.present == {"userPrincipalName", "password"}
    assert_text_frame(result)


def test_xlsx_empty_sheet(tmp_path: Path) -> None:
    path = tmp_path / "empty.xlsx"
    workbook = xlsxwriter.Workbook(str(path))
    workbook.add_worksheet("Blank")
    workbook.close()
    assert "empty" in one_line_error(path)


@settings(max_examples=30, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(st.characters(blacklist_categories=("Cs", "Cc")) | st.just("\n"), max_size=15), min_size=1, max_size=6))
def test_any_text_survives_an_xlsx_round_trip(tmp_path: Path, names: list[str]) -> None:
    path = tmp_path / "roundtrip.xlsx"
    workbook = xlsxwriter.Workbook(str(path))
    sheet = workbook.add_worksheet()
    sheet.write_row(0, 0, ["userPrincipalName", "displayName"])
    for line, name in enumerate(names, start=1):
        sheet.write_string(line, 0, "x@contoso.com")
        if name:
            sheet.write_string(line, 1, name)
    workbook.close()
    expected = [(n, name.strip()) for n, name in enumerate(names, start=2)]
    assert records(read_sheet(path), "row", "displayName") == [(n, n, text) for n, text in expected]


# ------------------------------------------------------------------------------------------------ bad input


def test_missing_file(tmp_path: Path) -> None:
    assert "no such file" in one_line_error(tmp_path / "nope.csv")


def test_a_directory(tmp_path: Path) -> None:
    folder = tmp_path / "folder.csv"
    folder.mkdir()
    assert "directory" in one_line_error(folder)


@pytest.mark.parametrize("content", [b"", b"   \r\n\r\n", b"\xef\xbb\xbf", b"\xff\xfe"])
def test_empty_text_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(content)
    assert "empty" in one_line_error(path)


def test_blank_rows_only(tmp_path: Path) -> None:
    assert "empty" in one_line_error(write_text(tmp_path / "commas.csv", ",,,\n,,,\n"))


def test_version_row_without_header(tmp_path: Path) -> None:
    assert "no header row" in one_line_error(write_text(tmp_path / "v.csv", "version:v1.0,,\n\n"))


@pytest.mark.parametrize("name", ["users.xls", "users.pdf", "users.xlsm", "users"])
def test_unsupported_extension(tmp_path: Path, name: str) -> None:
    path = write_text(tmp_path / name, "userPrincipalName\na@contoso.com\n")
    message = one_line_error(path)
    assert ".xlsx, .csv, .tsv or .txt" in message


def test_sheet_option_on_a_text_file(tmp_path: Path) -> None:
    path = write_text(tmp_path / "a.csv", "userPrincipalName\na@contoso.com\n")
    assert "--sheet" in one_line_error(path, sheet="New hires")


def test_no_recognisable_header_does_not_echo_the_row(tmp_path: Path) -> None:
    """A sheet without a header row has data in row 1, maybe a password: the message must not show it."""
    path = write_text(tmp_path / "noheader.csv", "jane@contoso.com,Jane Doe,Secret-Pa55word!\n")
    message = one_line_error(path)
    assert "row 1 has no recognisable column header" in message
    assert "Secret-Pa55word!" not in message and "jane@contoso.com" not in message


def test_two_columns_for_one_field(tmp_path: Path) -> None:
    path = write_text(tmp_path / "dup.csv", "User Name,Display Name,userPrincipalName\na,b,c\n")
    message = one_line_error(path)
    assert '"User Name"' in message and '"userPrincipalName"' in message


def test_two_columns_for_one_field_in_xlsx(tmp_path: Path) -> None:
    path = tmp_path / "dup.xlsx"
    workbook = xlsxwriter.Workbook(str(path))
    workbook.add_worksheet().write_row(0, 0, ["First name [givenName]", "First Name"])
    workbook.close()
    message = one_line_error(path)
    assert '"First name [givenName]"' in message and '"First Name"' in message and "firstName" in message


def test_undecodable_text(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(b"userPrincipalName\na\x81b@contoso.com\n")  # 0x81 is undefined in Windows-1252 too
    message = one_line_error(path)
    assert "cannot be told with confidence" in message and "CSV UTF-8" in message


def test_mixed_encodings_are_refused_rather_than_garbled(tmp_path: Path) -> None:
    path = tmp_path / "mixed.csv"
    path.write_bytes("userPrincipalName,lastName\na@x.com,Müller\n".encode() + "b@x.com,Müller\n".encode("cp1252"))
    message = one_line_error(path)
    assert "UTF-8" in message and "line 3" in message


def test_windows_1252_with_a_chance_utf8_pair_is_still_windows_1252(tmp_path: Path) -> None:
    """"É" followed by a no-break space is also a valid UTF-8 pair; the rest of the file says cp1252."""
    path = write_text(tmp_path / "w.csv", "userPrincipalName;lastName\na@x.com;GARCÍA\nb@x.com;JOSÉ\u00a0\nc@x.com;Müller\n", "cp1252")
    assert records(read_sheet(path), "lastName") == [(2, "GARCÍA"), (3, "JOSÉ"), (4, "Müller")]


def test_utf16_without_bom_is_not_text(tmp_path: Path) -> None:
    path = write_text(tmp_path / "nobom.txt", "userPrincipalName\ta\r\n", "utf-16-le")
    assert "NUL" in one_line_error(path)


def test_unterminated_quote(tmp_path: Path) -> None:
    path = write_text(tmp_path / "quote.csv", 'userPrincipalName,displayName\na@contoso.com,"Jane\nb@contoso.com,B\n')
    assert "quoted cell never ends" in one_line_error(path)


def test_csv_renamed_xlsx(tmp_path: Path) -> None:
    path = write_text(tmp_path / "renamed.xlsx", "userPrincipalName,displayName\na@contoso.com,A\n")
    message = one_line_error(path)
    assert "not an Excel workbook" in message and ".csv" in message


def test_encrypted_workbook(tmp_path: Path) -> None:
    """Excel saves a password-protected workbook as an OLE compound file, whatever its extension."""
    path = tmp_path / "locked.xlsx"
    path.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(4088))
    assert "password-protected" in one_line_error(path)


def test_zip_that_is_not_a_workbook(tmp_path: Path) -> None:
    path = tmp_path / "archive.xlsx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "not a workbook")
    assert "not a readable Excel workbook" in one_line_error(path)


def test_truncated_workbook(tmp_path: Path) -> None:
    whole = two_sheet_workbook(tmp_path / "whole.xlsx").read_bytes()
    path = tmp_path / "cut.xlsx"
    path.write_bytes(whole[: len(whole) // 2])
    assert "not a readable Excel workbook" in one_line_error(path)


# --------------------------------------------------------------------------------------------------- samples


def load_make_samples() -> object:
    spec = importlib.util.spec_from_file_location("make_samples", SAMPLES / "make_samples.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_samples_read_alike() -> None:
    from_csv = read_sheet(SAMPLES / "new_hires.csv")
    from_xlsx = read_sheet(SAMPLES / "new_hires.xlsx")
    assert from_xlsx.sheet_name == "New hires"
    profile = {"employeeId", "department"}  # "Employee ID" and "Department": Graph's names, any case and spacing
    assert from_csv.present == from_xlsx.present == set(FIELDS) - {"customerTenantId", "licenses"} | profile
    assert len(from_csv) == 35
    assert from_csv.frame.equals(from_xlsx.frame)
    rows = from_csv.frame.set_index("row")
    assert list(rows.index) == [*range(2, 19), *range(20, 38)]  # row 19 is the blank one
    assert rows.loc[8, ["userPrincipalName", "usageLocation"]].tolist() == ["nangula.shikongo@contoso.com", "NA"]
    assert rows.loc[9, "usageLocation"] == "fr"
    assert rows.loc[31, "displayName"].startswith("=HYPERLINK(")
    assert rows.loc[6, "forceChangePassword"] == "FALSE"
    assert rows.loc[15, "forceChangePassword"] == ""


def test_samples_match_their_script(tmp_path: Path) -> None:
    """The committed samples are what make_samples.py writes: nobody edited one and forgot the other."""
    module = load_make_samples()
    rows = module.sample_rows()  # type: ignore[attr-defined]
    module.write_csv(tmp_path / "new_hires.csv", rows)  # type: ignore[attr-defined]
    module.write_xlsx(tmp_path / "new_hires.xlsx", rows)  # type: ignore[attr-defined]
    assert (tmp_path / "new_hires.csv").read_bytes() == (SAMPLES / "new_hires.csv").read_bytes()
    assert read_sheet(tmp_path / "new_hires.xlsx").frame.equals(read_sheet(SAMPLES / "new_hires.xlsx").frame)
    notes = openpyxl.load_workbook(SAMPLES / "new_hires.xlsx", read_only=True)["Notes"]
    assert "Contoso" in str(next(notes.iter_rows(values_only=True))[0])
