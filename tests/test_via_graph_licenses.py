"""`run --via graph` with licenses, through the real CLI against a standalone sandbox over loopback: the SKUs come
from Graph's `subscribedSkus` and each row's licenses go in ONE `assignLicense` (Graph has no license groups, so
Office and Minecraft together are one request and one journal step), settled through `licenseDetails`. Each user
ends with exactly its licenses, asked of Graph over HTTP; a rerun sends nothing; a refused one is `partial`."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import urllib.request
from pathlib import Path

import pytest

from .license_support import available_units, licensed_data, licensed_sandbox, licensed_sheet, units_used
from .sandbox_http import CONTOSO
from .support import results_rows, run_cli, summary_items

pytestmark = pytest.mark.timeout(240)

TOKEN = {"BULKONBOARD_ACCESS_TOKEN": "sandbox"}


def run(sheet: Path, url: str, journal: Path, results: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "run", sheet, "--sandbox-url", url, "--customer", CONTOSO, "--journal", journal, "--results", results,
        "--rate", "inf", "--via", "graph", "--log-format", "json", *extra, env=TOKEN,
    )  # fmt: skip


def counts(result: subprocess.CompletedProcess[str]) -> dict[str, int]:
    assert "Traceback" not in result.stderr, result.stderr
    summary = json.loads(result.stderr.strip().splitlines()[-1])
    assert summary["event"] == "summary", result.stderr
    return dict(summary["counts"])


def graph_licenses(url: str, upn: str) -> list[str]:
    """The part numbers the user holds, as Graph's `licenseDetails` lists them."""
    request = urllib.request.Request(
        f"{url}/graph/{CONTOSO}/v1.0/users/{upn}/licenseDetails", headers={"Authorization": "Bearer sandbox"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return sorted(item["skuPartNumber"] for item in json.load(answer)["value"])


def journal_steps(journal: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(journal) as db:
        return sorted(db.execute("SELECT DISTINCT step, state FROM steps").fetchall())


def test_via_graph_each_user_holds_exactly_its_licenses_one_request_a_row_and_a_rerun_sends_nothing(
    tmp_path: Path,
) -> None:
    sheet = licensed_sheet(
        tmp_path / "hires.csv",
        [
            ("ann", "ENTERPRISEPACK"),
            ("bob", "office 365 e3; Minecraft Education"),  # product names; two groups, one Graph request
            ("cem", ""),  # takes --license
            ("dee", "f30db892-07e9-47e9-837c-80727f46fd3d; minecraft"),  # by SKU id and part number
        ],
    )
    journal = tmp_path / "journal.sqlite"
    with licensed_sandbox(licensed_data(tmp_path / "data.toml")) as sandbox:
        before = available_units(sandbox)
        first = run(sheet, sandbox.url, journal, tmp_path / "first.xlsx", "--license", "FLOW_FREE")
        held_first = {
            f"{p}@contoso.com": graph_licenses(sandbox.url, f"{p}@contoso.com")
            for p in ("ann", "bob", "cem", "dee")
        }
        after_first = available_units(sandbox)
        again = run(sheet, sandbox.url, journal, tmp_path / "again.xlsx", "--license", "FLOW_FREE")
        held_again = {upn: graph_licenses(sandbox.url, upn) for upn in held_first}
        after_again = available_units(sandbox)

    assert first.returncode == 0, first.stderr
    assert counts(first) == {
        "created": 4,
        "restored": 0,
        "partial": 0,
        "skipped": 0,
        "invalid": 0,
        "failed": 0,
        "pending": 0,
    }
    wanted = {
        "ann@contoso.com": ["ENTERPRISEPACK"],
        "bob@contoso.com": ["ENTERPRISEPACK", "MINECRAFT"],
        "cem@contoso.com": ["FLOW_FREE"],
        "dee@contoso.com": ["FLOW_FREE", "MINECRAFT"],
    }
    assert held_first == wanted
    assert {sku: before[sku] - after_first[sku] for sku in before} == {
        "ENTERPRISEPACK": 2, "FLOW_FREE": 2, "MINECRAFT": 2, "DEVELOPERPACK": 0,
    }  # fmt: skip
    rows = {row["userPrincipalName"]: row["licenses"] for row in results_rows(tmp_path / "first.xlsx")}
    assert rows == {
        "ann@contoso.com": "ENTERPRISEPACK",
        "bob@contoso.com": "ENTERPRISEPACK; MINECRAFT",
        "cem@contoso.com": "FLOW_FREE",
        "dee@contoso.com": "FLOW_FREE; MINECRAFT",
    }
    assert units_used(tmp_path / "first.xlsx") == {
        "ENTERPRISEPACK": (2, 0),
        "FLOW_FREE": (2, 0),
        "MINECRAFT": (2, 0),
    }
    # Through Partner Center bob and dee would take two requests each (two license groups); through Graph, one.
    assert summary_items(tmp_path / "first.xlsx")["step requests"] == "4"
    assert journal_steps(journal) == [("license:group1", "done")]

    assert again.returncode == 0, again.stderr
    assert counts(again)["skipped"] == 4
    assert held_again == held_first and after_again == after_first
    assert summary_items(tmp_path / "again.xlsx")["step requests"] == "0"
    again_rows = {row["userPrincipalName"]: row["licenses"] for row in results_rows(tmp_path / "again.xlsx")}
    assert again_rows == rows


def test_via_graph_a_refused_license_makes_the_row_partial_with_graphs_words(tmp_path: Path) -> None:
    """Users an earlier run created, licensed by a later one (validation does not judge users that exist): the
    tenant has two Office 365 E3 units left, so Graph refuses the third; that row is `partial` (the user kept,
    exit 1), the others hold their license."""
    sheet = licensed_sheet(tmp_path / "hires.csv", [("ann", ""), ("bob", ""), ("cem", "")])
    journal = tmp_path / "journal.sqlite"
    with licensed_sandbox(licensed_data(tmp_path / "data.toml")) as sandbox:
        created = run(sheet, sandbox.url, journal, tmp_path / "created.xlsx")
        refused = run(
            sheet,
            sandbox.url,
            journal,
            tmp_path / "refused.xlsx",
            "--license",
            "ENTERPRISEPACK",
            "--concurrency",
            "1",
        )
        held = {
            f"{p}@contoso.com": graph_licenses(sandbox.url, f"{p}@contoso.com") for p in ("ann", "bob", "cem")
        }

    assert created.returncode == 0 and counts(created)["created"] == 3
    assert refused.returncode == 1, refused.stderr
    assert counts(refused) == {
        "created": 0,
        "restored": 0,
        "partial": 1,
        "skipped": 2,
        "invalid": 0,
        "failed": 0,
        "pending": 0,
    }
    assert held == {
        "ann@contoso.com": ["ENTERPRISEPACK"],
        "bob@contoso.com": ["ENTERPRISEPACK"],
        "cem@contoso.com": [],
    }
    cem = results_rows(tmp_path / "refused.xlsx")[2]
    assert cem["status"] == "partial" and cem["userId"] and cem["licenses"] == ""
    assert (
        "license.failed: license:group1: Office 365 E3 (ENTERPRISEPACK) not assigned: HTTP 400"
        in cem["problems"]
    )
