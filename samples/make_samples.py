"""Write the sample sheets `new_hires.csv` and `new_hires.xlsx` (same rows) next to this script.

The samples are what `make demo` and the README run against customer Contoso in the sandbox
(`3c9a8f12-5e6b-4c1d-9a7e-2f4b8d6c1e90`: contoso.onmicrosoft.com, contoso.com and contoso.co.uk are Managed,
fabrikam.com is Federated; jane.doe@contoso.com and wei.zhang@contoso.com already exist). They look like what
HR sends: names in several scripts, an Employee ID with leading zeros, a start date, a department, one blank
row, and one each of the mistakes people make, so a demo shows every kind of outcome.

Deterministic: the passwords come from a seeded generator, so running this again rewrites the same rows.
Run: `.venv/bin/python samples/make_samples.py`.
"""

from __future__ import annotations

import csv
import random
import string
from datetime import date
from pathlib import Path

import xlsxwriter

HERE = Path(__file__).resolve().parent
CUSTOMER_ID = "3c9a8f12-5e6b-4c1d-9a7e-2f4b8d6c1e90"

HEADERS = (
    "userPrincipalName",
    "firstName",
    "lastName",
    "displayName",
    "usageLocation",
    "password",
    "forceChangePassword",
    "immutableId",
    "Employee ID",
    "Start date",
    "Department",
)

#: The rows before the blank one; the blank row sits between BEFORE_BLANK and the rest.
BEFORE_BLANK = 17

_SYMBOLS = "!#$%&*+-=?@^_"
#: upn, first, last, display, usage location, password, forceChangePassword (None: left empty), immutableId,
#: Employee ID, Start date, Department.
SampleRow = tuple[str, str, str, str, str, str, bool | None, str, str, date, str]
_rng = random.Random(20260105)


def strong_password() -> str:
    """A fake but strong password: 14 characters with all four classes, only symbols Entra accepts.

    It starts with a letter so that opening the CSV in Excel cannot turn it into a formula (`=`, `+`, `-`, `@`).
    """
    classes = (string.ascii_uppercase, string.ascii_lowercase, string.digits, _SYMBOLS)
    chars = [_rng.choice(c) for c in classes]
    chars += [_rng.choice("".join(classes)) for _ in range(9)]
    _rng.shuffle(chars)
    return _rng.choice(string.ascii_letters) + "".join(chars)


# (upn, first, last, display, usage location, password or None for a strong one, forceChangePassword,
#  immutableId, employee id, start date, department). Comments name each deliberate mistake.
_ROWS: list[tuple[str, str, str, str, str, str | None, bool | None, str, str, date, str]] = [
    ("michael.johnson@contoso.com", "Michael", "Johnson", "Michael Johnson", "US", None, True, "", "000101", date(2026, 1, 5), "Sales"),
    ("emily.clarke@contoso.co.uk", "Emily", "Clarke", "Emily Clarke", "GB", None, True, "", "000102", date(2026, 1, 5), "Finance"),
    ("zoe.mueller@contoso.com", "Zoë", "Müller", "Zoë Müller", "DE", None, True, "", "000103", date(2026, 1, 5), "Engineering"),
    ("aiko.tanaka@contoso.com", "愛子", "田中", "田中 愛子", "JP", None, True, "", "000104", date(2026, 1, 12), "Engineering"),
    ("priya.sharma@contoso.com", "Priya", "Sharma", "Priya Sharma", "IN", None, False, "", "000105", date(2026, 1, 12), "Support"),
    ("joao.silva@contoso.com", "João", "Silva", "João Silva", "BR", None, True, "", "000106", date(2026, 1, 12), "Sales"),
    ("nangula.shikongo@contoso.com", "Nangula", "Shikongo", "Nangula Shikongo", "NA", None, True, "", "000107", date(2026, 1, 12), "Operations"),
    ("francois.lefevre@contoso.com", "François", "Lefèvre", "François Lefèvre", "fr", None, True, "", "000108", date(2026, 1, 19), "Marketing"),
    ("dimitris.papadopoulos@contoso.com", "Δημήτρης", "Παπαδόπουλος", "Δημήτρης Παπαδόπουλος", "GR", None, True, "", "000109", date(2026, 1, 19), "Legal"),
    ("fatima.alzahra@contoso.com", "فاطمة", "الزهراء", "فاطمة الزهراء", "AE", None, True, "", "000110", date(2026, 1, 19), "Finance"),
    ("olena.kovalenko@contoso.com", "Олена", "Коваленко", "Олена Коваленко", "UA", None, True, "", "000111", date(2026, 1, 19), "Engineering"),
    ("li.na@contoso.com", "娜", "李", "李娜", "CN", None, True, "", "000112", date(2026, 1, 26), "Research"),
    ("sinead.o'brien@contoso.co.uk", "Sinéad", "O'Brien", "Sinéad O'Brien", "IE", None, True, "", "000113", date(2026, 1, 26), "Support"),
    ("jose.alvarez@contoso.com", "José", "Álvarez", "José Álvarez", "ES", None, None, "", "000114", date(2026, 1, 26), "Sales"),
    ("lukasz.wisniewski@contoso.com", "Łukasz", "Wiśniewski", "Łukasz Wiśniewski", "PL", None, True, "", "000115", date(2026, 1, 26), "Engineering"),
    # mistake: a Federated domain (Partner Center cannot create users there)
    ("olivia.brown@fabrikam.com", "Olivia", "Brown", "Olivia Brown", "US", None, True, "", "000116", date(2026, 2, 2), "Sales"),
    # mistake: a domain the customer does not have
    ("lukas.schmidt@contoso.de", "Lukas", "Schmidt", "Lukas Schmidt", "DE", None, True, "", "000117", date(2026, 2, 2), "Sales"),
    # ---- the blank row goes here ----
    ("ngozi.okonkwo@contoso.com", "Ngozi", "Okonkwo", "Ngozi Okonkwo", "NG", None, True, "", "000118", date(2026, 2, 2), "Operations"),
    # mistake: a weak password (lower case and digits only)
    ("thandiwe.nkosi@contoso.com", "Thandiwe", "Nkosi", "Thandiwe Nkosi", "ZA", "welcome2026", True, "", "000119", date(2026, 2, 2), "Support"),
    ("min-jun.kim@contoso.com", "민준", "김", "김민준", "KR", None, True, "", "000120", date(2026, 2, 9), "Engineering"),
    # mistake: XX is no country
    ("mateo.garcia@contoso.com", "Mateo", "García", "Mateo García", "XX", None, True, "", "000121", date(2026, 2, 9), "Sales"),
    # mistake: CU is a country Partner Center does not serve
    ("yusniel.perez@contoso.com", "Yusniel", "Pérez", "Yusniel Pérez", "CU", None, True, "", "000122", date(2026, 2, 9), "Sales"),
    ("aarav.patel@contoso.com", "Aarav", "Patel", "Aarav Patel", "IN", None, True, "", "000123", date(2026, 2, 9), "Engineering"),
    # mistake: a dot right before the @
    ("sam.taylor.@contoso.com", "Sam", "Taylor", "Sam Taylor", "US", None, True, "", "000124", date(2026, 2, 16), "Facilities"),
    ("lars.andersson@contoso.com", "Lars", "Andersson", "Lars Andersson", "SE", None, True, "", "000125", date(2026, 2, 16), "Finance"),
    # mistake: no displayName
    ("ana.ferreira@contoso.com", "Ana", "Ferreira", "", "PT", None, True, "", "000126", date(2026, 2, 16), "Marketing"),
    # mistake: the same UPN as row 5 (aiko.tanaka@contoso.com) but for case
    ("Aiko.Tanaka@Contoso.com", "Aiko", "Tanaka", "Aiko Tanaka", "JP", None, True, "", "000127", date(2026, 2, 16), "Engineering"),
    ("hiroshi.sato@contoso.onmicrosoft.com", "浩", "佐藤", "佐藤 浩", "JP", None, True, "", "000128", date(2026, 2, 23), "Research"),
    # a displayName that a spreadsheet would run as a formula: it must come back out as plain text
    ("mark.evans@contoso.com", "Mark", "Evans", '=HYPERLINK("https://example.com","Mark Evans")', "GB", None, True, "", "000129", date(2026, 2, 23), "IT"),
    # mistake: this user already exists in the tenant
    ("jane.doe@contoso.com", "Jane", "Doe", "Jane Doe", "US", None, True, "", "000130", date(2026, 2, 23), "HR"),
    ("chloe.dubois@contoso.com", "Chloé", "Dubois", "Chloé Dubois", "FR", None, False, "", "000131", date(2026, 3, 2), "Legal"),
    ("siddharth.rao@contoso.com", "Siddharth", "Rao", "Siddharth Rao", "IN", None, True, "kq3YQ2x1Dk+LmW7rB5Hj8w==", "000132", date(2026, 3, 2), "Engineering"),
    ("grace.walker@contoso.com", "Grace", "Walker", "Grace Walker", "AU", None, True, "", "000133", date(2026, 3, 2), "Sales"),
    ("liam.tremblay@contoso.com", "Liam", "Tremblay", "Liam Tremblay", "CA", None, True, "", "000134", date(2026, 3, 2), "Support"),
    ("sofia.rossi@contoso.com", "Sofia", "Rossi", "Sofia Rossi", "IT", None, True, "", "000135", date(2026, 3, 9), "Design"),
]  # fmt: skip


def sample_rows() -> list[SampleRow]:
    return [(*row[:5], row[5] if row[5] is not None else strong_password(), *row[6:]) for row in _ROWS]


def _flag_text(flag: bool | None) -> str:
    return "" if flag is None else "TRUE" if flag else "FALSE"


def write_csv(path: Path, rows: list[SampleRow]) -> None:
    """UTF-8 without BOM, comma-separated, the blank row as Excel writes one (only commas)."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\r\n")
        writer.writerow(HEADERS)
        for index, row in enumerate(rows):
            if index == BEFORE_BLANK:
                writer.writerow([""] * len(HEADERS))
            upn, first, last, display, location, password, force, immutable, employee, start, department = row
            writer.writerow(
                [upn, first, last, display, location, password, _flag_text(force), immutable, employee,
                 start.isoformat(), department]
            )  # fmt: skip


def write_xlsx(path: Path, rows: list[SampleRow]) -> None:
    """Typed cells as HR's Excel holds them: text IDs, a real date, real booleans; every text written as text."""
    workbook = xlsxwriter.Workbook(str(path))
    try:
        bold = workbook.add_format({"bold": True})
        day = workbook.add_format({"num_format": "yyyy-mm-dd"})
        sheet = workbook.add_worksheet("New hires")
        sheet.write_row(0, 0, HEADERS, bold)
        sheet.freeze_panes(1, 0)
        line = 1
        for index, row in enumerate(rows):
            if index == BEFORE_BLANK:
                line += 1
            upn, first, last, display, location, password, force, immutable, employee, start, department = row
            for column, text in enumerate((upn, first, last, display, location, password)):
                # write_string, never write(): "=HYPERLINK(...)" must stay text, not become a formula.
                if text:
                    sheet.write_string(line, column, text)
            if force is not None:
                sheet.write_boolean(line, 6, force)
            if immutable:
                sheet.write_string(line, 7, immutable)
            sheet.write_string(line, 8, employee)
            sheet.write_datetime(line, 9, start, day)
            sheet.write_string(line, 10, department)
            line += 1
        sheet.set_column(0, 0, 36)
        sheet.set_column(1, 3, 22)
        sheet.set_column(4, 10, 14)

        notes = workbook.add_worksheet("Notes")
        for number, text in enumerate(
            (
                "New hires for Contoso, January to March 2026",
                f"Customer tenant: {CUSTOMER_ID}",
                "Passwords are temporary; each person must change theirs at first sign-in unless noted.",
                "Questions: hr-onboarding@contoso.com",
            )
        ):
            notes.write_string(number, 0, text)
        notes.set_column(0, 0, 90)
    finally:
        workbook.close()


def main() -> None:
    rows = sample_rows()
    write_csv(HERE / "new_hires.csv", rows)
    write_xlsx(HERE / "new_hires.xlsx", rows)
    print(f"wrote {len(rows)} rows to {HERE / 'new_hires.csv'} and {HERE / 'new_hires.xlsx'}")


if __name__ == "__main__":
    main()
