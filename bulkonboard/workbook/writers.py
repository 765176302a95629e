"""Every xlsx bulkonboard writes, under the one name the other stages import them by.

The workbook stage is split by concern: `report` (the validation report and the results workbook), `template`
(the input sheet HR fills in), `passwords` (the generated-passwords workbook, mode 0600), `fastrows` (the
streaming row writer), `cells` (what a cell may hold: never a formula, within Excel's limits) and `atomic`
(a workbook appears whole or not at all). This module keeps the names callers imported before the split.
"""

from __future__ import annotations

from .atomic import WorkbookNotWritten
from .cells import EXCEL_MAX_CELL_CHARS, EXCEL_MAX_ROWS, MAX_COLUMN_WIDTH, REDACTED, TRUNCATED_MARK, cell_text
from .passwords import PASSWORDS_COLUMNS, PASSWORDS_SHEET, read_passwords, write_passwords
from .report import (
    DISPLAY_COLUMNS,
    KINDS,
    PROBLEMS_COLUMNS,
    PROBLEMS_SHEET,
    ROWS_COLUMNS,
    ROWS_SHEET,
    STATUS_FILLS,
    SUMMARY_SHEET,
    ReportWriter,
    Summary,
)
from .template import (
    LISTS_SHEET,
    TEMPLATE_COLUMNS,
    TEMPLATE_NOTES,
    TEMPLATE_SHEET,
    example_password,
    supported_countries,
    write_template,
)

__all__ = [
    "DISPLAY_COLUMNS",
    "EXCEL_MAX_CELL_CHARS",
    "EXCEL_MAX_ROWS",
    "KINDS",
    "LISTS_SHEET",
    "MAX_COLUMN_WIDTH",
    "PASSWORDS_COLUMNS",
    "PASSWORDS_SHEET",
    "PROBLEMS_COLUMNS",
    "PROBLEMS_SHEET",
    "REDACTED",
    "ROWS_COLUMNS",
    "ROWS_SHEET",
    "STATUS_FILLS",
    "SUMMARY_SHEET",
    "TEMPLATE_COLUMNS",
    "TEMPLATE_NOTES",
    "TEMPLATE_SHEET",
    "TRUNCATED_MARK",
    "ReportWriter",
    "Summary",
    "WorkbookNotWritten",
    "cell_text",
    "example_password",
    "read_passwords",
    "supported_countries",
    "write_passwords",
    "write_template",
]
