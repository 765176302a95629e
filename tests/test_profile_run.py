"""`run` with profile and manager columns (Partner Center creating), through the real CLI against a standalone
sandbox over loopback: every profile cell arrives as typed (read back from the sandbox's Graph over HTTP), managers
further down the sheet are created first, and each report points at its manager; a manager step that cannot be
done makes its row `partial` (`manager.failed`), and the next run of the same journal finishes only that step.
A refused profile PATCH (the sandbox's own 400) gives `partial` / `profile.failed` and the rerun finishes it."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from bulkonboard.journal.store import open_journal
from bulkonboard.model import Code, RowResult, Status
from bulkonboard.sending.pipeline import Pipeline, PipelineOptions
from bulkonboard.sending.profile import ProfileStep
from bulkonboard.sending.retry import Backoff

from .sandbox_http import CONTOSO, JANE, LICENSED_TOML
from .support import (
    assert_one_clear_line,
    checked_row,
    results_rows,
    run_cli,
    sandbox_service,
    sheet_rows,
    standalone_sandbox,
    summary_items,
)

pytestmark = pytest.mark.timeout(180)

PASSWORD = "Str0ng!Passw0rd"
PROFILE = {
    "jobTitle": "Staff Engineer",
    "department": "R&D — Platform",
    "officeLocation": "Building 40/2.113",
    "companyName": "Contoso Ltd",
    "employeeId": "000123",
    "employeeType": "Employee",
    "employeeHireDate": "2026-12-01",
    "mobilePhone": "+1 (425) 555-0199",
    "businessPhones": "+1 425 555 0100 x42",
    "streetAddress": "1 Microsoft Way\nSuite 5",
    "city": "Redmond",
    "state": "WA",
    "postalCode": "98052",
    "country": "United States",
    "preferredLanguage": "en-US",
    "mailNickname": "ana.alias",
}
COLUMNS = ["userPrincipalName", "displayName", "usageLocation", "password", *PROFILE, "manager"]


def write_sheet(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS)
        writer.writeheader()
        for row in rows:
            local = row["userPrincipalName"].partition("@")[0]
            writer.writerow({"displayName": local.title(), "usageLocation": "US", "password": PASSWORD, **row})
    return path


def graph_get(url: str, path: str) -> Any:
    request = urllib.request.Request(
        f"{url}/graph/{CONTOSO}/v1.0/{path}", headers={"Authorization": "Bearer sandbox"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.load(answer)
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise


def manager_of(url: str, upn: str) -> str | None:
    found = graph_get(url, f"users/{upn}/manager")
    return None if found is None else str(found["userPrincipalName"]).casefold()


def run(url: str, sheet: Path, tmp_path: Path, results: Path, *extra: str | Path) -> Any:
    return run_cli(
        "run", sheet, "--customer", CONTOSO, "--sandbox-url", url, "--journal", tmp_path / "j.sqlite",
        "--results", results, "--rate", "inf", "--concurrency", "2", *extra,
    )  # fmt: skip


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "licensed.toml"
    path.write_text(LICENSED_TOML, encoding="utf-8")
    return path


@pytest.mark.parametrize("via", ["partnercenter", "graph"])
def test_every_profile_cell_arrives_as_typed_and_managers_further_down_are_created_first(
    tmp_path: Path, data: Path, via: str
) -> None:
    """Both ways in: Partner Center's create then Graph's PATCH, or Graph's create with the profile in it."""
    sheet = write_sheet(
        tmp_path / "hires.csv",
        [
            {"userPrincipalName": "ana@contoso.com", **PROFILE, "manager": "Boss@contoso.com"},
            {"userPrincipalName": "cy@contoso.com", "manager": "boss@contoso.com", "jobTitle": "Analyst"},
            {"userPrincipalName": "solo@contoso.com"},
            {"userPrincipalName": "boss@contoso.com", "manager": "big@contoso.com", "department": "R&D"},
            {"userPrincipalName": "big@contoso.com", "manager": JANE},  # a manager in the tenant
        ],
    )
    results = tmp_path / "results.xlsx"
    with standalone_sandbox("--data", str(data)) as sandbox:
        done = run(sandbox.url, sheet, tmp_path, results, "--via", via)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        rows = {r["userPrincipalName"]: r for r in results_rows(results)}
        assert list(rows) == ["ana@contoso.com", "cy@contoso.com", "solo@contoso.com", "boss@contoso.com",
                              "big@contoso.com"]  # fmt: skip  # the results keep the sheet's order
        assert {r["status"] for r in rows.values()} == {"created"}

        names = ",".join(PROFILE)
        ana = graph_get(sandbox.url, f"users/ana@contoso.com?$select={names}")
        expected: dict[str, Any] = dict(PROFILE)
        expected["businessPhones"] = [PROFILE["businessPhones"]]
        expected["employeeHireDate"] = "2026-12-01T00:00:00Z"
        assert {name: ana[name] for name in PROFILE} == expected
        assert rows["ana@contoso.com"]["employeeHireDate"] == "2026-12-01T00:00:00Z"  # Rows: as sent
        managers = {upn: manager_of(sandbox.url, upn) for upn in rows}
        assert managers == {
            "ana@contoso.com": "boss@contoso.com", "cy@contoso.com": "boss@contoso.com", "solo@contoso.com": None,
            "boss@contoso.com": "big@contoso.com", "big@contoso.com": JANE,
        }  # fmt: skip
        created_then = {u["userPrincipalName"]: u["id"] for u in sandbox.users()}

        # The same journal again: every user and step done, nothing sent.
        again = run(sandbox.url, sheet, tmp_path, tmp_path / "again.xlsx", "--via", via)
        assert again.returncode == 0, again.stderr
        assert {r["status"] for r in results_rows(tmp_path / "again.xlsx")} == {"skipped"}
        summary = summary_items(tmp_path / "again.xlsx")
        assert summary["create requests"] == "0" and summary["rows sent"] == "0"
        assert {u["userPrincipalName"]: u["id"] for u in sandbox.users()} == created_then


def test_a_manager_row_that_fails_leaves_its_reports_partial_and_the_rerun_finishes_them(
    tmp_path: Path, data: Path
) -> None:
    """The domains file names a domain the tenant does not have, so the manager row's create is refused: its
    reports exist without their manager (`partial`, `manager.failed`); once the sheet is fixed, the next run
    creates the manager and sets only the managers that were missing."""
    domains = tmp_path / "domains.csv"
    domains.write_text("domain,authenticationType\ncontoso.com,Managed\nlost.example,Managed\n", encoding="utf-8")
    rows = [
        {"userPrincipalName": "dee@contoso.com", "manager": "lead@lost.example", "jobTitle": "Clerk"},
        {"userPrincipalName": "lead@lost.example"},
    ]
    sheet = write_sheet(tmp_path / "hires.csv", rows)
    results = tmp_path / "results.xlsx"
    with standalone_sandbox("--data", str(data)) as sandbox:
        done = run(sandbox.url, sheet, tmp_path, results, "--domains", domains)
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr
        dee, lead = results_rows(results)
        assert lead["status"] == "failed"
        assert dee["status"] == "partial" and dee["userId"]
        assert dee["problems"].startswith("manager.failed: manager: manager lead@lost.example is not a user")
        assert summary_items(results)["partial"] == "1"
        assert graph_get(sandbox.url, "users/dee@contoso.com?$select=jobTitle")["jobTitle"] == "Clerk"
        assert manager_of(sandbox.url, "dee@contoso.com") is None

        # Fixed: the manager on a real domain. Dee is not created again; only her manager step is sent.
        rows[0]["manager"] = rows[1]["userPrincipalName"] = "lead@contoso.com"
        write_sheet(sheet, rows)
        again = run(sandbox.url, sheet, tmp_path, tmp_path / "again.xlsx")
        assert again.returncode == 0, again.stderr
        dee2, lead2 = results_rows(tmp_path / "again.xlsx")
        assert (dee2["status"], dee2["userId"], lead2["status"]) == ("skipped", dee["userId"], "created")
        assert manager_of(sandbox.url, "dee@contoso.com") == "lead@contoso.com"
        assert [u["userPrincipalName"] for u in sandbox.users()].count("dee@contoso.com") == 1


def test_profile_columns_without_graph_are_refused_before_anything_is_sent(tmp_path: Path) -> None:
    sheet = write_sheet(tmp_path / "hires.csv", [{"userPrincipalName": "ann@contoso.com", "jobTitle": "Clerk"}])
    domains = tmp_path / "domains.csv"
    domains.write_text("domain,authenticationType\ncontoso.com,Managed\n", encoding="utf-8")
    with standalone_sandbox() as sandbox:
        done = run_cli(
            "run", sheet, "--customer", CONTOSO, "--base-url", sandbox.url, "--domains", domains,
            "--journal", tmp_path / "j.sqlite", "--results", tmp_path / "r.xlsx",
            env={"BULKONBOARD_ACCESS_TOKEN": "sandbox"},
        )  # fmt: skip
        assert_one_clear_line(done, 2, "(jobTitle, department, officeLocation and 14 more)", "Microsoft Graph")
        assert "ann@contoso.com" not in {u["userPrincipalName"] for u in sandbox.users()}


class RefusingOnce:
    """The real Graph client, except that the first PATCH setting `job` carries a member the sandbox refuses
    (400): a real refusal over HTTP, for that one row."""

    def __init__(self, graph: Any, job: str) -> None:
        self._graph = graph
        self._job = job
        self.refused = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._graph, name)

    async def update_user(self, tenant: str, user_id: str, changes: dict[str, Any], **options: Any) -> None:
        if not self.refused and changes.get("jobTitle") == self._job:
            self.refused = True
            changes = {**changes, "favouriteColour": "blue"}
        await self._graph.update_user(tenant, user_id, changes, **options)


async def test_a_refused_profile_makes_the_row_partial_and_the_next_run_finishes_only_it(tmp_path: Path) -> None:
    options = PipelineOptions(rate=math.inf, backoff=Backoff(initial=0.01, maximum=0.05))
    checked = [
        dataclasses.replace(c, user=dataclasses.replace(c.user, profile=(("jobTitle", f"Job {c.user.row}"),)))
        for c in (checked_row(n, f"prof{n}@contoso.com") for n in (2, 3))
    ]
    async with sandbox_service() as svc:
        refusing = RefusingOnce(svc.graph, "Job 3")

        async def one_run(step_graph: Any) -> tuple[dict[str, RowResult], int]:
            journal.begin_run(input_path="p", input_sha256="-", customer=CONTOSO, correlation_id=str(uuid.uuid4()))
            found: list[RowResult] = []
            pipeline = Pipeline(
                svc.client, options=options, customer=CONTOSO, graph=svc.graph, tokens=svc.tokens, journal=journal,
                steps=[ProfileStep(step_graph)],
            )  # fmt: skip
            stats = await pipeline.run(checked, found.append)
            journal.end_run(counts=None, exit_code=0)
            return {r.userPrincipalName: r for r in found}, stats.step_requests

        with open_journal(tmp_path / "j.sqlite", service=svc.sandbox.url) as journal:
            first, _ = await one_run(refusing)
            second, steps_sent = await one_run(svc.graph)
        held = {u["userPrincipalName"]: u for u in svc.sandbox.store.users(CONTOSO)}

    victim = first["prof3@contoso.com"]
    assert refusing.refused and victim.status is Status.PARTIAL and victim.userId
    assert [p.code for p in victim.problems] == [Code.PROFILE_FAILED]
    assert "favouriteColour" in victim.problems_text  # the service's own words
    assert first["prof2@contoso.com"].status is Status.CREATED
    # The rerun: the user is not created again; only the refused profile is sent.
    assert second["prof3@contoso.com"].status is Status.SKIPPED and second["prof3@contoso.com"].userId == victim.userId
    assert steps_sent == 1
    assert held["prof3@contoso.com"]["profile"]["jobTitle"] == "Job 3"
    assert held["prof2@contoso.com"]["profile"]["jobTitle"] == "Job 2"


def test_generated_passwords_reach_the_managers_created_first(tmp_path: Path, data: Path) -> None:
    """Managers sent before the stream still get the generated password the workbook keeps for them."""
    sheet = tmp_path / "hires.csv"
    sheet.write_text(
        "userPrincipalName,displayName,usageLocation,manager\n"
        "gia@contoso.com,Gia,US,hal@contoso.com\n"
        "hal@contoso.com,Hal,US,\n",
        encoding="utf-8",
    )
    results, passwords = tmp_path / "results.xlsx", tmp_path / "passwords.xlsx"
    with standalone_sandbox("--data", str(data)) as sandbox:
        done = run(sandbox.url, sheet, tmp_path, results, "--generate-passwords", passwords)
        assert done.returncode == 0, done.stderr
        assert [r["status"] for r in results_rows(results)] == ["created", "created"]
        assert manager_of(sandbox.url, "gia@contoso.com") == "hal@contoso.com"
    kept = {str(r["userPrincipalName"]) for r in sheet_rows(passwords, "Passwords")}
    assert kept == {"gia@contoso.com", "hal@contoso.com"}
