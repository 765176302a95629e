"""What the license-step tests share: a sandbox data file with SKUs (sandbox_http.LICENSED_TOML, its Office 365 E3
units as the test needs), a standalone sandbox on it, and the tenant's licenses read back over HTTP."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import openpyxl

from .sandbox_http import CONTOSO, E3, FLOW, LICENSED_TOML, MINECRAFT
from .support import StandaloneSandbox, standalone_sandbox

#: Part numbers by SKU id, as the data file names them.
PART_NUMBERS = {E3: "ENTERPRISEPACK", FLOW: "FLOW_FREE", MINECRAFT: "MINECRAFT"}
PASSWORD = "Str0ng!Passw0rd"
HEADER = "userPrincipalName,displayName,usageLocation,password,licenses\n"


def licensed_data(path: Path, *, e3_units: int = 3) -> Path:
    """LICENSED_TOML with Contoso's Office 365 E3 total set to `e3_units` (jane holds one of them)."""
    text = LICENSED_TOML.replace("totalUnits = 3\n", f"totalUnits = {e3_units}\n", 1)
    assert text != LICENSED_TOML or e3_units == 3
    path.write_text(text, encoding="utf-8")
    return path


def licensed_sheet(path: Path, rows: list[tuple[str, str]]) -> Path:
    """(local part, licenses cell) per row, on contoso.com, each valid."""
    lines = [f"{local}@contoso.com,{local.title()},US,{PASSWORD},{cell}\n" for local, cell in rows]
    path.write_text(HEADER + "".join(lines), encoding="utf-8")
    return path


@contextmanager
def licensed_sandbox(data: Path, *args: str) -> Iterator[StandaloneSandbox]:
    """A standalone sandbox serving `data` (the later --data wins over standalone_sandbox's own)."""
    with standalone_sandbox("--data", str(data), *args) as sandbox:
        yield sandbox


def _get(sandbox: StandaloneSandbox, path: str) -> Any:
    request = urllib.request.Request(
        f"{sandbox.url}/v1/customers/{CONTOSO}/{path}", headers={"Authorization": f"Bearer {sandbox.token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.load(answer)


def held_licenses(sandbox: StandaloneSandbox, prefix: str = "") -> dict[str, list[str]]:
    """UPN (case-folded) -> the part numbers the user holds, sorted, as the service lists them; each UPN once."""
    held: dict[str, list[str]] = {}
    for user in sandbox.users():
        upn = user["userPrincipalName"].casefold()
        if not upn.startswith(prefix):
            continue
        assert upn not in held, f"{upn} twice in the tenant"
        page = _get(sandbox, f"users/{user['id']}/licenses?licenseGroupIds=Group1&licenseGroupIds=Group2")
        held[upn] = sorted(PART_NUMBERS[item["productSku"]["id"]] for item in page["items"])
    return held


def available_units(sandbox: StandaloneSandbox) -> dict[str, int]:
    """Part number -> availableUnits, as `subscribedskus` says."""
    page = _get(sandbox, "subscribedskus?licenseGroupIds=Group1&licenseGroupIds=Group2")
    return {item["productSku"]["skuPartNumber"]: item["availableUnits"] for item in page["items"]}


def units_used(results: Path) -> dict[str, tuple[int, int]]:
    """The results' Summary table "units used per SKU": part number -> (assigned by this run, confirmed after a
    lost answer)."""
    book = openpyxl.load_workbook(results, read_only=True)
    try:
        lines = list(book["Summary"].iter_rows(values_only=True))
    finally:
        book.close()
    table: dict[str, tuple[int, int]] = {}
    inside = False
    for first, *rest in lines:
        if first == "units used per SKU":
            inside = True
            assert rest[:4] == [
                "assigned by this run",
                "confirmed after a lost answer",
                "skuPartNumber",
                "customer",
            ]
        elif inside and first is None:
            break
        elif inside:
            assigned, confirmed, part_number = rest[0], rest[1], rest[2]
            assert isinstance(assigned, int) and isinstance(confirmed, int)
            table[str(part_number)] = (assigned, confirmed)
    return table
