"""The tenant is the truth on a rerun: a user an earlier run of the same journal created that the tenant no longer
holds is never reported as existing (`skipped` with a dead id), nor created again behind the admin's back. It is
`failed` with `user.deleted`, saying when the earlier run created it, whether it is in the recycle bin, and what
to do. Through the real CLI against standalone sandboxes, as an admin reruns README's nightly block.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from .support import (
    CONTOSO,
    StandaloneSandbox,
    person,
    results_rows,
    run_cli,
    standalone_sandbox,
    summary_items,
    write_sheet,
)

pytestmark = pytest.mark.timeout(180)

PEOPLE = 4


@contextmanager
def sandbox_on(port: int) -> Iterator[StandaloneSandbox]:
    """A fresh standalone sandbox on a given port: the same service URL as an earlier one, so a journal bound to
    that URL is accepted, while the tenant behind it knows none of the earlier run's users."""
    with standalone_sandbox("--port", str(port)) as sandbox:
        yield sandbox


def port_of(sandbox: StandaloneSandbox) -> int:
    return int(sandbox.url.rsplit(":", 1)[1].rstrip("/"))


def run(
    sheet: Path, sandbox: StandaloneSandbox, journal: Path, results: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "run", sheet, "--customer", CONTOSO, "--sandbox-url", sandbox.url, "--journal", journal,
        "--results", results, "--quiet", *extra,
    )  # fmt: skip


def delete_user(sandbox: StandaloneSandbox, user_id: str) -> None:
    """Partner Center's documented DELETE: the user goes to the recycle bin (soft-deleted) for 30 days."""
    request = urllib.request.Request(
        f"{sandbox.url}/v1/customers/{CONTOSO}/users/{user_id}",
        method="DELETE",
        headers={"Authorization": f"Bearer {sandbox.token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 204


def hires(tmp_path: Path) -> Path:
    return write_sheet(tmp_path / "hires.csv", [person(n, userPrincipalName=f"truth{n}@contoso.com") for n in range(1, PEOPLE + 1)])


def by_upn(results: Path) -> dict[str, dict[str, str]]:
    return {row["userPrincipalName"]: row for row in results_rows(results)}


def test_users_an_earlier_run_created_that_a_fresh_tenant_does_not_hold_are_failed_not_skipped(tmp_path: Path) -> None:
    """README's nightly block rerun against a fresh sandbox: the journal remembers users the tenant never had."""
    sheet, journal = hires(tmp_path), tmp_path / "nightly.sqlite"
    first, second, third = (tmp_path / f"results-{n}.xlsx" for n in (1, 2, 3))
    with standalone_sandbox() as sandbox:
        port = port_of(sandbox)
        done = run(sheet, sandbox, journal, first)
        assert done.returncode == 0, done.stderr
        created = {upn: row["userId"] for upn, row in by_upn(first).items()}
        assert all(row["status"] == "created" for row in by_upn(first).values())

    with sandbox_on(port) as fresh:
        again = run(sheet, fresh, journal, second)
        assert again.returncode == 1 and "Traceback" not in again.stderr, again.stderr
        rows = by_upn(second)
        today = datetime.now(UTC).date().isoformat()
        for upn, row in rows.items():
            assert row["status"] == "failed" and row["userId"] == "", row
            problems = row["problems"]
            assert problems.startswith("user.deleted: "), problems
            assert f"created by an earlier run of this journal on {today} (id {created[upn]})" in problems
            assert "not in the customer's recycle bin" in problems
            assert f"bulkonboard journal forget --journal {journal} --upn {upn}" in problems
        assert not [u for u in fresh.users() if u["userPrincipalName"].startswith("truth")]  # nobody re-created
        summary = summary_items(second)
        assert (summary["failed"], summary["skipped"], summary["created"]) == (str(PEOPLE), "0", "0")

        # The advice works as written: forget one, and the next run creates it afresh; the others still say so.
        forget = run_cli("journal", "forget", "--journal", journal, "--upn", "truth1@contoso.com", "--yes")
        assert forget.returncode == 0, forget.stderr
        last = run(sheet, fresh, journal, third)
        assert last.returncode == 1, last.stderr
        rows = by_upn(third)
        assert rows["truth1@contoso.com"]["status"] == "created"
        held = {u["userPrincipalName"]: u["id"] for u in fresh.users()}
        assert rows["truth1@contoso.com"]["userId"] == held["truth1@contoso.com"] != created["truth1@contoso.com"]
        assert {upn: row["status"] for upn, row in rows.items() if upn != "truth1@contoso.com"} == dict.fromkeys(
            [f"truth{n}@contoso.com" for n in range(2, PEOPLE + 1)], "failed"
        )


def test_a_user_an_earlier_run_created_then_deleted_into_the_recycle_bin_is_failed_with_the_way_out(
    tmp_path: Path,
) -> None:
    sheet, journal = hires(tmp_path), tmp_path / "nightly.sqlite"
    first, second = tmp_path / "results-1.xlsx", tmp_path / "results-2.xlsx"
    with standalone_sandbox() as sandbox:
        assert run(sheet, sandbox, journal, first).returncode == 0
        created = {upn: row["userId"] for upn, row in by_upn(first).items()}
        delete_user(sandbox, created["truth2@contoso.com"])

        again = run(sheet, sandbox, journal, second, "--log-format", "json")
        assert again.returncode == 1 and "Traceback" not in again.stderr, again.stderr
        rows = by_upn(second)
        deleted = rows["truth2@contoso.com"]
        assert deleted["status"] == "failed" and deleted["userId"] == ""
        problems = deleted["problems"]
        assert problems.startswith("user.deleted: ") and problems.count("user.deleted") == 1, problems
        assert f"created by an earlier run of this journal on {datetime.now(UTC).date().isoformat()}" in problems
        assert f"in the customer's recycle bin (id {created['truth2@contoso.com']}" in problems
        assert "--restore-deleted" in problems and "journal forget" in problems
        # The others are still there: skipped as this journal's own, with the ids the tenant holds.
        held = {u["userPrincipalName"]: u["id"] for u in sandbox.users()}
        for upn in ("truth1@contoso.com", "truth3@contoso.com", "truth4@contoso.com"):
            assert rows[upn]["status"] == "skipped" and rows[upn]["userId"] == held[upn] == created[upn]
        assert "truth2@contoso.com" not in held  # not re-created, not restored
        entries = [json.loads(line) for line in again.stderr.splitlines() if line.startswith("{")]
        (row_line,) = [e for e in entries if e.get("event") == "row" and e.get("upn") == "truth2@contoso.com"]
        assert row_line["status"] == "failed" and row_line["problems"][0]["code"] == "user.deleted"

