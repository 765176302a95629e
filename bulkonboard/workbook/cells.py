"""Text that may go into a cell: cut to Excel's limits, never a formula, passwords scrubbed.

Why one module: every writer (report, template, passwords) and the fast row path must agree on what a cell may
hold, or the fast path and xlsxwriter's public calls would write different workbooks.
"""

from __future__ import annotations

import re
from typing import Any

#: Excel's hard limits: rows per sheet (the header included) and UTF-16 units per cell.
EXCEL_MAX_ROWS = 1_048_576
EXCEL_MAX_CELL_CHARS = 32_767
#: Appended to a cell cut at Excel's limit, so nobody mistakes a cut message for the whole one.
TRUNCATED_MARK = "…(truncated)"
#: Put in place of a password that turns up where it must not (e.g. a service message echoing it).
REDACTED = "[password hidden]"
MAX_COLUMN_WIDTH = 60

#: Never let xlsxwriter turn text into a formula, a number or a link, whichever write call is used.
SAFE_TEXT_OPTIONS: dict[str, Any] = {
    "strings_to_formulas": False,
    "strings_to_numbers": False,
    "strings_to_urls": False,
}

# Lone surrogates (text decoded with errors="surrogateescape", say) cannot be encoded as UTF-8 at all, and
# xlsxwriter would fail half-way through the file; they become U+FFFD instead.
_UNENCODABLE = re.compile("[\ud800-\udfff]")


def cell_text(value: str) -> str:
    """Text that Excel can hold: lone surrogates replaced, cut at Excel's cell limit with a visible mark.

    Control characters are left alone on purpose: xlsxwriter escapes them (`_x0001_`), and Excel shows the
    original text.
    """
    if not value.isascii():
        value = _UNENCODABLE.sub("\ufffd", value)
    # A string of at most half the limit in code points cannot exceed it in UTF-16 units: skip the slow count.
    if len(value) > EXCEL_MAX_CELL_CHARS // 2 and _utf16_units(value) > EXCEL_MAX_CELL_CHARS:
        keep = EXCEL_MAX_CELL_CHARS - _utf16_units(TRUNCATED_MARK)
        head = value.encode("utf-16-le")[: keep * 2]
        if 0xD8 <= head[-1] <= 0xDB:  # the cut fell inside a surrogate pair: drop its first half
            head = head[:-2]
        value = head.decode("utf-16-le") + TRUNCATED_MARK
    return value


def _utf16_units(value: str) -> int:
    """Excel counts a cell's length in UTF-16 units: a character outside the BMP (an emoji) counts twice."""
    return len(value.encode("utf-16-le")) // 2


def scrub(text: str, secret: str) -> str:
    """`text` with a password that slipped into it hidden: a service message may echo what it was sent."""
    return text.replace(secret, REDACTED) if secret and secret in text else text


def column_letter(col: int) -> str:
    """Excel's letters for a zero-based column (0 -> A, 26 -> AA), as cell references and formats need."""
    letters = ""
    col += 1
    while col:
        col, remainder = divmod(col - 1, 26)
        letters = chr(ord("A") + remainder) + letters
    return letters
