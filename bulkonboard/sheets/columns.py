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
        complaints.append(f"missing required {noun}: {', '.join(missing)}")
    if not default_customer and "customerTenantId" not in sheet.present:
        complaints.append("no customer: give --customer or a customerTenantId column")
    if default_usage_location is not None and valid_default_usage_location(default_usage_location) is None:
        complaints.append("--usage-location: " + usage_location_message(default_usage_location or "(empty)"))
    if complaints:
        raise InputError(f"{sheet.path}: " + "; ".join(complaints))
