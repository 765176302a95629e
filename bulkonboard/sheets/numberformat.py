"""Numbers as Excel shows them, for the number formats that change what a person reads in the cell.

An employee id typed as 123 in a column formatted `000000` reads `000123` in Excel, and that is what the
person means. Only the formats that pad, fix decimals, group thousands, scale to a percentage or write an
exponent are rendered here; any other format (currency, text literals, colours, conditions) falls back to how
Excel's General format shows the number, which is also what a cell without a format gets.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal

#: Excel's built-in number formats that matter here (ECMA-376 part 1, 18.8.30). Others are General or dates.
BUILTIN_FORMATS = {
    1: "0",
    2: "0.00",
    3: "#,##0",
    4: "#,##0.00",
    9: "0%",
    10: "0.00%",
    11: "0.00E+00",
    48: "##0.0E+0",
}

_FIXED = re.compile(r"(#,##)?(#*)(0*)(?:\.(0+))?(%?)")
_SCIENTIFIC = re.compile(r"(#*)(0+)(?:\.(0+))?E([+-])(0+)")
#: Below 1e15 an integer-valued double is shown with all its digits; Excel keeps 15 significant digits.
_EXCEL_DIGITS = 15


def display_format(code: str) -> str | None:
    """The format's first section when this module renders it, else None (General will do)."""
    section = code.split(";")[0].strip().upper()
    if section == "GENERAL" or "0" not in section or any(char in section for char in '"\\[_*?/@'):
        return None
    if _FIXED.fullmatch(section) or _SCIENTIFIC.fullmatch(section):
        return section
    return None


def general(number: float) -> str:
    """Excel's General format: 1001 not 1001.0, 15 significant digits, `1.23E+20` not Python's `1.23e+20`."""
    if number.is_integer() and abs(number) < 10.0**_EXCEL_DIGITS:
        return str(int(number))
    text = f"{number:.{_EXCEL_DIGITS}G}"
    if "E" in text:
        mantissa, _, exponent = text.partition("E")
        sign, digits = exponent[0], exponent[1:].lstrip("0")
        text = f"{mantissa}E{sign}{digits.rjust(2, '0')}"
    return text


def render(number: float, section: str) -> str:
    """`number` shown in `section` (a value from `display_format`)."""
    if number.is_integer() and section.strip("0") == "" and abs(number) < 10.0**_EXCEL_DIGITS:
        return ("-" if number < 0 else "") + str(abs(int(number))).rjust(len(section), "0")  # `000000`: the usual
    scientific = _SCIENTIFIC.fullmatch(section)
    if scientific:
        hashes, zeros, decimals, sign, exponent_zeros = scientific.groups()
        return _scientific(number, len(hashes) + len(zeros), len(decimals or ""), sign, len(exponent_zeros))
    fixed = _FIXED.fullmatch(section)
    if fixed is None:
        return general(number)
    grouped, _, zeros, decimals, percent = fixed.groups()
    value = Decimal(repr(number)) * (100 if percent else 1)
    places = len(decimals or "")
    rounded = value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    whole, _, fraction = f"{abs(rounded):f}".partition(".")
    whole = whole.lstrip("0").rjust(len(zeros), "0")
    if grouped:
        whole = f"{int(whole or 0):,}" if whole or zeros else whole
    text = whole + ("." + fraction if places else "")
    negative = rounded < 0
    return ("-" if negative else "") + text + ("%" if percent else "")


def _scientific(number: float, group: int, places: int, sign: str, exponent_digits: int) -> str:
    """`0.00E+00` (group 1) or engineering `##0.0E+0` (group 3: the exponent is a multiple of three)."""
    if number == 0:
        exponent = 0
    else:
        exponent = Decimal(repr(abs(number))).adjusted()
        if group > 1:
            exponent -= exponent % group
    mantissa = Decimal(repr(number)).scaleb(-exponent)
    mantissa = mantissa.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    if group == 1 and abs(mantissa) >= 10:  # 9.999 rounded up to 10.00: one more power of ten
        exponent += 1
        mantissa = (Decimal(repr(number)).scaleb(-exponent)).quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP)
    shown_sign = "-" if exponent < 0 else ("+" if sign == "+" else "")
    return f"{mantissa:f}E{shown_sign}{str(abs(exponent)).rjust(exponent_digits, '0')}"
