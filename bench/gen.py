"""Synthetic HR sheets for the benchmarks: realistic enough that every rule runs, mostly valid rows.

Deterministic (seeded), so two benchmark runs read the same bytes.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from pathlib import Path

HEADER = [
    "userPrincipalName",
    "firstName",
    "lastName",
    "displayName",
    "usageLocation",
    "password",
    "forceChangePassword",
    "Employee ID",
    "Department",
]
FIRST = [
    "Ana",
    "Björn",
    "Chloé",
    "Dmitri",
    "Eun-ji",
    "Fatima",
    "Giorgos",
    "Hiro",
    "Ines",
    "João",
    "Kwame",
    "Léa",
]
LAST = [
    "Lopez",
    "Müller",
    "Nakamura",
    "O'Brien",
    "Papadopoulos",
    "Quispe",
    "Rossi",
    "Singh",
    "Tanaka",
    "Zhang",
]
LOCATIONS = ["US", "GB", "DE", "FR", "JP", "IN", "BR", "NA", "CA", "AU"]
DOMAINS = ["contoso.com", "contoso.co.uk", "contoso.onmicrosoft.com"]


def rows(count: int, *, seed: int = 7, bad_every: int = 50) -> Iterator[list[str]]:
    rng = random.Random(seed)
    for i in range(count):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        upn = f"{first.lower()}.{i}@{rng.choice(DOMAINS)}"
        upn = upn.encode("ascii", "ignore").decode().replace("'", "")
        location = rng.choice(LOCATIONS)
        password = f"Pw-{rng.randrange(10**8):08d}-x"
        if bad_every and i % bad_every == 7:
            location = "XX"  # one rule failing now and then, so the Problems sheet has lines
        yield [upn, first, last, f"{first} {last}", location, password, "TRUE", f"{i:06d}", "Sales"]


def write_csv(path: Path, count: int, *, bad_every: int = 50) -> Path:
    """`bad_every=0`: every row valid (runs that must create exactly `count` users)."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        writer.writerows(rows(count, bad_every=bad_every))
    return path


def write_xlsx(path: Path, count: int) -> Path:
    import xlsxwriter

    book = xlsxwriter.Workbook(str(path), {"constant_memory": True})
    sheet = book.add_worksheet("New hires")
    sheet.write_row(0, 0, HEADER)
    for index, row in enumerate(rows(count), start=1):
        sheet.write_row(index, 0, row)
    book.close()
    return path
