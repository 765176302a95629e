"""The columns a sheet must have, checked before facts are fetched or rows are read: a sheet that could not
produce a single valid row is refused with one line naming everything missing at once."""

from __future__ import annotations

from ..errors import InputError
from .rules import usage_location_message, valid_default_usage_location
from .validation import SheetLike


def check_columns(
    sheet: SheetLike,
    *,
    generate_passwords: bool = False,
    default_usage_location: str | None = None,
    default_customer: str = "",
) -> None:
    """Refuse a sheet that could not produce a single valid row, before facts are fetched or rows are read.

    One line names every missing column at once, so the person fixes the sheet in one go.
    """
    required = ["userPrincipalName", "displayName"]
    if default_usage_location is None:
        required.append("usageLocation")
    if not generate_passwords:
        required.append("password")
    missing = [name for name in required if name not in sheet.present]
    complaints: list[str] = []
    if missing:
        noun = "column" if len(missing) == 1 else "columns"
        complaints.append(f"missing required {noun}: {', '.join(missing)}{missing_fix(missing, sheet)}")
    if not default_customer and "customerTenantId" not in sheet.present:
        complaints.append("no customer: give --customer or a customerTenantId column")
    if default_usage_location is not None and valid_default_usage_location(default_usage_location) is None:
        complaints.append("--usage-location: " + usage_location_message(default_usage_location or "(empty)"))
    if complaints:
        raise InputError(f"{sheet.path}: " + "; ".join(complaints))


#: What to give on the command line instead of a column a sheet may lack (Microsoft 365's template has neither).
COLUMN_OPTIONS = {"usageLocation": "--usage-location CODE", "password": "--generate-passwords PATH.xlsx"}


def missing_fix(missing: list[str], sheet: SheetLike) -> str:
    """What to do about the missing columns, and which columns were found, so a header typo shows at once.

    The found columns are named as recognised (their canonical names), never a cell's text: a sheet without a
    header row has a data row there, possibly a password."""
    options = [COLUMN_OPTIONS[name] for name in missing if name in COLUMN_OPTIONS]
    fix = f" (add the {'column' if len(missing) == 1 else 'columns'}"
    fix += f", or give {' and '.join(options)})" if options else ")"
    found = sorted(sheet.present, key=str.casefold)
    return fix + (f"; columns found: {', '.join(found)}" if found else "")
