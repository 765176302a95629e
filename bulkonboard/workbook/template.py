"""The input template HR fills in: a note on each header, drop-downs where a list applies, an example apart.

Why it checks as it is typed: a mistake caught by Excel in the cell costs a person seconds; the same mistake
caught by validation costs a round trip with the report. Validation still checks everything again.

Why the example is on a sheet of its own: in the first row of the sheet read, it was a real, valid user
(alex.wilber@contoso.com with a strong password); left in by HR, it was created in the sandbox, and against a
real customer it made every nightly run exit 1. `Users` (the first sheet, the one read) starts empty.
"""

from __future__ import annotations

import csv
import io
import secrets
import string
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from .atomic import AtomicTarget, close_workbook, new_workbook
from .cells import EXCEL_MAX_ROWS, MAX_COLUMN_WIDTH, cell_text

TEMPLATE_SHEET = "Users"
EXAMPLE_SHEET = "Example"
LISTS_SHEET = "Lists"
TEMPLATE_COLUMNS: tuple[str, ...] = (
    "userPrincipalName",
    "firstName",
    "lastName",
    "displayName",
    "usageLocation",
    "password",
    "forceChangePassword",
    "immutableId",
    "licenses",
)
#: The header notes: what goes in the column and the rule validation applies.
TEMPLATE_NOTES: dict[str, str] = {
    "userPrincipalName": (
        "Required. The sign-in name, name@domain, e.g. alex.wilber@contoso.com. Before the @: letters, digits "
        "and ' . - _ ! # ^ ~, at most 64 characters, no '.' right before the @. After it: a verified, "
        "non-federated domain of the customer, at most 48 characters; 113 in all. Each user once per sheet "
        "(case does not matter)."
    ),
    "firstName": "Optional. Given name, at most 64 characters.",
    "lastName": "Optional. Surname, at most 64 characters.",
    "displayName": "Required. The name shown in address lists, e.g. Alex Wilber; at most 256 characters.",
    "usageLocation": (
        "Required. Two-letter country/region code, e.g. US; pick from the list (the codes Partner Center "
        "supports; NA is Namibia). Needed to assign licences."
    ),
    "password": (
        "Required unless the run generates passwords (--generate-passwords). 8 to 256 characters with at "
        "least three of: lower-case letter, upper-case letter, digit, symbol. Replace the example's. "
        "This sheet then holds secrets: delete it once the users exist."
    ),
    "forceChangePassword": (
        "Optional: TRUE or FALSE (empty means TRUE). TRUE makes the user choose a new password at first "
        "sign-in."
    ),
    "immutableId": (
        "Optional. The on-premises anchor for directory sync (sourceAnchor); no $ or _. Leave empty for "
        "cloud-only users."
    ),
    "licenses": (
        "Optional. The licenses to assign, separated by ; e.g. ENTERPRISEPACK; FLOW_FREE. Each a part number, a "
        "product name as Partner Center shows it (Office 365 E3) or a SKU id, any case. Empty: none, or the "
        "run's --license. Needs a usage location."
    ),
}
#: Typing limits Excel checks as the sheet is filled in (validation checks them all again).
_TEMPLATE_LENGTHS: dict[str, tuple[int, int]] = {
    "userPrincipalName": (3, 113),
    "firstName": (0, 64),
    "lastName": (0, 64),
    "displayName": (1, 256),
    "password": (8, 256),
}
#: Validations cover the whole column, so a sheet of any length is checked as it is typed.
_TEMPLATE_LAST_ROW = EXCEL_MAX_ROWS - 1  # zero-based


def supported_countries() -> list[tuple[str, str]]:
    """(code, name) for each usage location Partner Center supports, from the packaged CSV."""
    text = resources.files("bulkonboard").joinpath("data/partner-center-countries.csv").read_text("utf-8")
    return [
        (record["code"].strip(), record["name"].strip())
        for record in csv.DictReader(io.StringIO(text))
        if record.get("code")
    ]


def example_password(length: int = 16) -> str:
    """A strong password for the template's example row, new each time so that no known one is in use."""
    symbols = "!#$%*-_+=?"
    alphabet = string.ascii_letters + string.digits + symbols
    while True:
        password = "".join(secrets.choice(alphabet) for _ in range(length))
        if (
            password[0].isalpha()  # a leading - + = would look like a formula to whoever pastes it
            and any(c.islower() for c in password)
            and any(c.isupper() for c in password)
            and any(c.isdigit() for c in password)
            and any(c in symbols for c in password)
        ):
            return password


def write_template(path: Path, skus: Sequence[tuple[str, str]] = ()) -> None:
    """The input sheet HR fills in: a note on each header, one example row, drop-downs where a list applies.

    `skus` (part number, product name) are a customer's licenses: made for a customer, the `licenses` column
    offers them in a drop-down. The CLI's `template` has no customer option yet; this is the library's way.
    """
    path = Path(path)
    target = AtomicTarget(path, 0o666)
    try:
        workbook = new_workbook(target)
        users = workbook.add_worksheet(TEMPLATE_SHEET)
        example = workbook.add_worksheet(EXAMPLE_SHEET)
        lists = workbook.add_worksheet(LISTS_SHEET)
        _fill_template(workbook, users, lists, skus)
        _fill_example(workbook, example)
    except BaseException:
        target.discard()
        raise
    close_workbook(workbook, target)


#: The example row, on the Example sheet only; the password is made anew for each template.
EXAMPLE_ROW: dict[str, str] = {
    "userPrincipalName": "alex.wilber@contoso.com",
    "firstName": "Alex",
    "lastName": "Wilber",
    "displayName": "Alex Wilber",
    "usageLocation": "US - United States",
    "immutableId": "",
    "licenses": "",
}


def _header_format(workbook: Any) -> Any:
    return workbook.add_format({"bold": True, "bg_color": "#DDEBF7", "border": 1})


def _fill_template(workbook: Any, users: Any, lists: Any, skus: Sequence[tuple[str, str]]) -> None:
    bold = _header_format(workbook)
    as_text = workbook.add_format({"num_format": "@"})
    ranges = {"usageLocation": _fill_country_list(lists, bold), "licenses": _fill_sku_list(lists, bold, skus)}
    for col, name in enumerate(TEMPLATE_COLUMNS):
        users.write_string(0, col, name, bold)
        users.write_comment(
            0, col, TEMPLATE_NOTES[name], {"author": "bulkonboard", "x_scale": 2.2, "y_scale": 1.6}
        )
        # Text format keeps what is typed as typed: 000123 keeps its zeros, 1-2 never becomes a date.
        width = max(len(name), len(EXAMPLE_ROW.get(name, "")), 16 if name == "password" else 0) + 4
        users.set_column(
            col, col, min(width, MAX_COLUMN_WIDTH), None if name == "forceChangePassword" else as_text
        )
        rule = _typing_rule(name, ranges.get(name))
        if rule is not None:
            users.data_validation(1, col, _TEMPLATE_LAST_ROW, col, rule)
    users.freeze_panes(1, 0)
    users.activate()


def _fill_example(workbook: Any, example: Any) -> None:
    """One filled-in row to copy the shape of, on a sheet nobody runs (the first sheet is the one read)."""
    bold = _header_format(workbook)
    for col, name in enumerate(TEMPLATE_COLUMNS):
        example.write_string(0, col, name, bold)
        if name == "forceChangePassword":
            example.write_boolean(1, col, True)  # what Excel stores when TRUE is typed or picked
        else:
            value = example_password() if name == "password" else EXAMPLE_ROW[name]
            example.write_string(1, col, value)
        example.set_column(
            col, col, min(max(len(name), len(EXAMPLE_ROW.get(name, "")), 16) + 4, MAX_COLUMN_WIDTH)
        )
    note = f"An example only: fill in the {TEMPLATE_SHEET} sheet, the one bulkonboard reads."
    example.write_comment(0, 0, note, {"author": "bulkonboard", "visible": True, "x_scale": 2})
    example.set_tab_color("#A6A6A6")


def _fill_country_list(lists: Any, bold: Any) -> str:
    """The hidden sheet of usage locations; returns the range the drop-down reads them from.

    A range, never an inline list: Excel "repairs" away an inline list longer than 255 characters.
    """
    countries = supported_countries()
    lists.write_string(0, 0, "code", bold)
    lists.write_string(0, 1, "name", bold)
    lists.write_string(0, 2, "pick", bold)
    for index, (code, name) in enumerate(countries, start=1):
        lists.write_string(index, 0, code)
        lists.write_string(index, 1, name)
        lists.write_string(index, 2, f"{code} - {name}")  # validation reads the code before " - "
    lists.set_column(0, 0, 6)
    lists.set_column(1, 2, min(max(len(name) for _, name in countries) + 7, MAX_COLUMN_WIDTH))
    lists.hide()
    return f"={LISTS_SHEET}!$C$2:$C${len(countries) + 1}"


def _fill_sku_list(lists: Any, bold: Any, skus: Sequence[tuple[str, str]]) -> str | None:
    """The customer's licenses beside the countries (columns D, E); None when the template is for no customer."""
    if not skus:
        return None
    lists.write_string(0, 3, "license", bold)
    lists.write_string(0, 4, "product", bold)
    for index, (part_number, product_name) in enumerate(skus, start=1):
        lists.write_string(index, 3, cell_text(part_number))
        lists.write_string(index, 4, cell_text(product_name))
    lists.set_column(3, 4, min(max(len(text) for sku in skus for text in sku) + 2, MAX_COLUMN_WIDTH))
    return f"={LISTS_SHEET}!$D$2:$D${len(skus) + 1}"


def _typing_rule(name: str, list_range: str | None) -> dict[str, Any] | None:
    """The check Excel makes as column `name` is typed in, or None where the column has none."""
    if name == "forceChangePassword":
        return {
            "validate": "list",
            "source": ["TRUE", "FALSE"],
            "error_title": name,
            "error_message": "TRUE or FALSE (an empty cell means TRUE).",
        }
    if name == "licenses" and list_range:
        return {
            "validate": "list",
            "source": list_range,
            "input_title": "Licenses",
            "input_message": "Pick one, or type several separated by ; (part numbers or product names).",
            "error_type": "information",  # several licenses are not one item of the list: allowed, said once
            "error_title": "Licenses",
            "error_message": "Not one license of the list: fine if it is several separated by ;.",
        }
    if name == "usageLocation" and list_range:
        return {
            "validate": "list",
            "source": list_range,
            "input_title": "Usage location",
            "input_message": "Pick the country from the list (US - United States), or type its two-letter code.",
            "error_type": "warning",  # a bare code (US) is not an item of the list but is right: let it in
            "error_title": "Usage location",
            "error_message": "Not in the list: a two-letter code Partner Center supports (e.g. US) is fine too.",
        }
    if name in _TEMPLATE_LENGTHS:
        shortest, longest = _TEMPLATE_LENGTHS[name]
        return {
            "validate": "length",
            "criteria": "between",
            "minimum": shortest,
            "maximum": longest,
            "ignore_blank": True,
            "error_title": name,
            "error_message": f"{shortest} to {longest} characters.",
        }
    return None
