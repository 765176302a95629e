"""A partner without the write role: the first create refused for lack of a GDAP role stops the run (exit 3, one
line naming the roles), nothing is created, and every row the run did not finish is `pending`, never `failed`.

Through the real CLI against a standalone sandbox whose customer grants only Directory Readers (listing users, so
pre-flight passes, as on the service)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from .support import assert_one_clear_line, results_rows, run_cli, standalone_sandbox, summary_items

READER = "11111111-0000-4000-8000-0000000000aa"
TOKEN = "tok-reader-only"
PEOPLE = 30

DATA = f"""
[[customers]]
id = "{READER}"
name = "reader"
domains = [{{ name = "reader.onmicrosoft.com", authenticationType = "Managed", isInitial = true }}]
gdapRoles = ["Directory Readers"]

[[customers.users]]
userPrincipalName = "ann@reader.onmicrosoft.com"
displayName = "Ann"
usageLocation = "US"
"""


def write_sheet(path: Path) -> Path:
    lines = ["userPrincipalName,displayName,usageLocation,password"]
    lines += [f"new.hire{n}@reader.onmicrosoft.com,New Hire {n},US,Reader-Pa55word!{n}" for n in range(1, PEOPLE + 1)]
    lines.append("broken@,Broken,US,Reader-Pa55word!x")  # invalid: validation's verdict stands
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_as_reader(tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], list[dict[str, str]], list[str], Path]:
    data = tmp_path / "reader.toml"
    data.write_text(DATA, encoding="utf-8")
    sheet = write_sheet(tmp_path / "hires.csv")
    results = tmp_path / "results.xlsx"
    with standalone_sandbox("--data", str(data), token=TOKEN) as sandbox:
        result = run_cli(
            "run", sheet, "--customer", READER, "--sandbox-url", sandbox.url, "--journal", tmp_path / "j.sqlite",
            "--results", results, "--rate", "inf", "--concurrency", "4", *extra,
            env={"BULKONBOARD_ACCESS_TOKEN": TOKEN},
        )  # fmt: skip
        upns = [u["userPrincipalName"] for u in sandbox.users(READER)]
    return result, results_rows(results), upns, results


def test_a_reader_only_partner_stops_at_the_first_refusal_with_exit_3_and_every_row_pending(tmp_path: Path) -> None:
    result, rows, upns, results = run_as_reader(tmp_path)

    line = assert_one_clear_line(result, 3, "permission denied", "User Administrator", "Directory Writers")
    assert str(results) in line and "pending" in line and "no further row was sent" in line
    assert upns == ["ann@reader.onmicrosoft.com"]  # nothing was created
    assert len(rows) == PEOPLE + 1
    *valid, invalid = rows
    assert invalid["status"] == "invalid"
    assert all(r["status"] == "pending" and r["userId"] == "" for r in valid), {r["status"] for r in valid}
    refused = [r for r in valid if "refused it for lack of permission" in r["problems"]]
    assert refused and all("nothing was created" in r["problems"] for r in refused)
    assert all(r["problems"].startswith("permission.denied:") for r in refused)
    others = [r for r in valid if r not in refused]
    assert others and all(r["problems"].startswith("run.interrupted: not sent") for r in others)
    assert not any("may exist" in r["problems"] for r in valid)  # a 403 created nothing
    summary = summary_items(results)
    assert summary["pending"] == str(PEOPLE) and summary["failed"] == "0" and summary["created"] == "0"
    assert "permission denied" in summary["stopped early"]


def test_with_json_logs_the_refusal_is_one_error_line_and_the_pending_rows_one_line(tmp_path: Path) -> None:
    result, _rows, upns, _ = run_as_reader(tmp_path, "--log-format", "json")

    assert result.returncode == 3 and "Traceback" not in result.stderr
    assert upns == ["ann@reader.onmicrosoft.com"]
    entries = [json.loads(line) for line in result.stderr.splitlines()]
    (pending,) = [e for e in entries if e["event"] == "pending"]
    (error,) = [e for e in entries if e["event"] == "error"]
    assert pending["count"] == PEOPLE and pending["may_exist"] == 0 and pending["rows"] == f"2-{PEOPLE + 1}"
    assert "Directory Writers" in error["message"]
    assert [e["status"] for e in entries if e["event"] == "row"] == ["invalid"]  # no line per pending row
