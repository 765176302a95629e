"""Many customers in one sheet (a `customerTenantId` column), through the real CLI against a standalone sandbox.

Each customer has its own pace (the partner + customer scope): a customer that answers 429 slows alone while the
others go on, and the Summary and the closing table have a line per customer. Waits are on conditions (users
seen in the sandbox), never on time.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from tests.support import (
    CONTOSO,
    HEADER,
    ROOT,
    clean_env,
    cli,
    person,
    run_cli,
    sheet_rows,
    standalone_sandbox,
    summary_items,
    write_sheet,
)
from tests.test_nightly import wait_until

NORTHWIND = "7d2e4b61-0c3a-4f8e-b5d9-1a6c3e8f2b47"  # the sample data's second customer


def customers_sheet(path: Path, contoso: int, northwind: int, *, interleaved: bool) -> Path:
    """`contoso` rows for Contoso and `northwind` for Northwind, each naming its customer."""
    first = [person(n) + [CONTOSO] for n in range(contoso)]
    second = [person(n, "northwindtraders.com") + [NORTHWIND] for n in range(northwind)]
    if interleaved:
        rows = [row for pair in zip(first, second, strict=True) for row in pair]
    else:
        rows = first + second
    return write_sheet(path, rows, HEADER + ["customerTenantId"])


def test_each_customer_gets_its_users_and_its_own_line(tmp_path: Path) -> None:
    sheet = customers_sheet(tmp_path / "two.csv", 6, 6, interleaved=True)
    results = tmp_path / "results.xlsx"
    with standalone_sandbox("--latency-ms", "20", "--customer-rate-limit", "50/1s") as sandbox:
        before = {c: len(sandbox.users(c)) for c in (CONTOSO, NORTHWIND)}
        done = run_cli(
            "run", sheet, "--sandbox-url", sandbox.url, "--results", results,
            "--journal", tmp_path / "journal.sqlite", "--rate", "40",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        for customer in (CONTOSO, NORTHWIND):
            assert len(sandbox.users(customer)) == before[customer] + 6
    summary = summary_items(results)
    for customer in (CONTOSO, NORTHWIND):
        line = summary[f"customer {customer}"]
        assert line.startswith("6 created, 0 failed, ") and "created/s" in line
        assert f"customer {customer}: 6 created, 0 failed, " in done.stdout + done.stderr  # the closing table
    assert [r["status"] for r in sheet_rows(results)] == ["created"] * 12


def test_a_customer_answering_429_does_not_hold_up_the_other(tmp_path: Path) -> None:
    """Contoso's rows come first and its scope allows 4 creations in 300 s: its fifth answers 429 with a long
    Retry-After, and Contoso waits. Northwind's rows, after Contoso's in the sheet, are created meanwhile."""
    sheet = customers_sheet(tmp_path / "two.csv", 8, 4, interleaved=False)
    results = tmp_path / "results.xlsx"
    with standalone_sandbox("--customer-rate-limit", "4/300s") as sandbox:
        before = {c: len(sandbox.users(c)) for c in (CONTOSO, NORTHWIND)}
        command = cli(
            "run", sheet, "--sandbox-url", sandbox.url, "--results", results,
            "--journal", tmp_path / "journal.sqlite", "--rate", "20", "--quiet",
        )  # fmt: skip
        run = subprocess.Popen(command, cwd=ROOT, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            # Contoso's wait is 300 s: Northwind's users can only come while it lasts if Contoso holds up nobody.
            wait_until(lambda: len(sandbox.users(NORTHWIND)) == before[NORTHWIND] + 4, run, "Northwind's users", 120)
            assert len(sandbox.users(CONTOSO)) == before[CONTOSO] + 4  # still waiting out its 429
        finally:
            run.send_signal(signal.SIGTERM)
            _, stderr = run.communicate(timeout=60)
    assert run.returncode == 130, stderr
    assert "Traceback" not in stderr
    statuses = [str(r["status"]) for r in sheet_rows(results)]
    assert statuses == ["created"] * 4 + ["pending"] * 4 + ["created"] * 4
    summary = summary_items(results)
    assert summary[f"customer {CONTOSO}"].startswith("4 created, 0 failed, ")
    assert summary[f"customer {NORTHWIND}"].startswith("4 created, 0 failed, ")
