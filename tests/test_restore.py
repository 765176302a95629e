"""`--restore-deleted`: a row whose UPN belongs to a soft-deleted user of the customer restores that user (status
`restored`, its own id) instead of failing with `user.deleted`, exactly once: journaled like a create, a lost
answer settled without a second restore or a new user beside it, a rerun skipping it as the journal's own.

Through the real CLI against a standalone sandbox whose data file holds soft-deleted users (`state =
"inactive"`), as an admin would run it; the refusals a single CLI run cannot stage (the user purged between the
check and the restore) in-process over real HTTP.
"""

from __future__ import annotations

import json
import math
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bulkonboard.journal.store import open_journal
from bulkonboard.model import RowResult, Status
from bulkonboard.sandbox import Sandbox, SandboxOptions
from bulkonboard.sending.pipeline import Pipeline, PipelineOptions
from bulkonboard.sending.retry import Backoff
from bulkonboard.service.partnercenter import PartnerCenterClient, StaticTokens
from bulkonboard.sheets.facts import DeletedUser
from bulkonboard.sheets.validation import CheckedRow

from .steps_support import read_ledger
from .support import (
    CONTOSO,
    ROOT,
    SANDBOX_DATA,
    StandaloneSandbox,
    assert_one_clear_line,
    checked_row,
    clean_env,
    person,
    results_rows,
    run_cli,
    sandbox_service,
    standalone_sandbox,
    summary_items,
    write_sheet,
)

pytestmark = pytest.mark.timeout(180)

FAST = PipelineOptions(rate=math.inf, backoff=Backoff(initial=0.01, maximum=0.05))

GONE_ID = "0b7d0e55-3c7a-4d52-9a43-7c1f3b0a9e01"
GONE_UPN = "left.once@contoso.com"
DELETED_AT = "2026-11-20T09:30:00Z"

#: Contoso's soft-deleted user, added to the sample data (before the next customer, so it is Contoso's).
DELETED_USER = """
[[customers.users]]
id = "{id}"
userPrincipalName = "{upn}"
displayName = "Left Once"
usageLocation = "US"
state = "inactive"
softDeletionTime = "{at}"
"""


def data_file(tmp_path: Path, *, roles: str | None = None, upn: str = GONE_UPN, user_id: str = GONE_ID) -> Path:
    text = SANDBOX_DATA.read_text("utf-8")
    head, sep, tail = text.partition('\n[[customers]]\nid = "7d2e4b61')
    assert sep, "the sample data's second customer moved"
    if roles is not None:
        head = head.replace('name = "Contoso"\n', f'name = "Contoso"\ngdapRoles = [{roles}]\n', 1)
    path = tmp_path / "tenant.toml"
    path.write_text(head + DELETED_USER.format(id=user_id, upn=upn, at=DELETED_AT) + sep + tail, "utf-8")
    return path


def sheet(tmp_path: Path) -> Path:
    """The deleted user's UPN back in HR's sheet (a returning employee), and one new hire."""
    return write_sheet(
        tmp_path / "hires.csv",
        [person(1, userPrincipalName=GONE_UPN), person(2, userPrincipalName="brand.new@contoso.com")],
    )


def user_state(sandbox: StandaloneSandbox, user_id: str) -> dict[str, Any] | None:
    request = urllib.request.Request(
        f"{sandbox.url}/v1/customers/{CONTOSO}/users/{user_id}", headers={"Authorization": f"Bearer {sandbox.token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            found: dict[str, Any] = json.load(answer)
            return found
    except urllib.error.HTTPError as refused:
        if refused.code == 404:
            return None
        raise


def holding(sandbox: StandaloneSandbox, upn: str) -> list[str]:
    """The ids of the active users with this UPN (never more than one: never a new user beside the restored)."""
    return [u["id"] for u in sandbox.users() if u["userPrincipalName"].casefold() == upn.casefold()]


def child(url: str, journal: Path, ledger: Path, count: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "tests.steps_child", url, str(journal), str(ledger), str(count), *args]


def by_upn(results: Path) -> dict[str, dict[str, str]]:
    return {row["userPrincipalName"]: row for row in results_rows(results)}


def summary_line(stderr: str) -> dict[str, Any]:
    (line,) = [json.loads(text) for text in stderr.splitlines() if '"event": "summary"' in text]
    found: dict[str, Any] = line
    return found


def run(
    hires: Path, sandbox: StandaloneSandbox, tmp_path: Path, name: str, *extra: str
) -> tuple[subprocess.CompletedProcess[str], Path]:
    results = tmp_path / f"{name}.xlsx"
    done = run_cli(
        "run", hires, "--customer", CONTOSO, "--sandbox-url", sandbox.url, "--journal", tmp_path / "j.sqlite",
        "--results", results, "--log-format", "json", *extra,
    )  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    return done, results


def test_validate_says_user_deleted_and_with_restore_deleted_that_it_will_be_restored(tmp_path: Path) -> None:
    hires = sheet(tmp_path)
    with standalone_sandbox("--data", str(data_file(tmp_path))) as sandbox:
        plain, restoring = tmp_path / "plain.xlsx", tmp_path / "restoring.xlsx"
        common = ("--customer", CONTOSO, "--sandbox-url", sandbox.url, "--quiet")
        without = run_cli("validate", hires, *common, "--report", plain)
        with_flag = run_cli("validate", hires, *common, "--report", restoring, "--restore-deleted")
        assert user_state(sandbox, GONE_ID)["state"] == "inactive"  # type: ignore[index]  # a dry run changes nothing

    assert without.returncode == 1 and "Traceback" not in without.stderr, without.stderr
    row = by_upn(plain)[GONE_UPN]
    assert row["status"] == "invalid" and row["problems"].startswith("user.deleted: ")
    assert f"(id {GONE_ID})" in row["problems"] and "give --restore-deleted" in row["problems"]

    assert with_flag.returncode == 0 and "Traceback" not in with_flag.stderr, with_flag.stderr
    rows = by_upn(restoring)
    assert rows[GONE_UPN]["status"] == "valid" and rows["brand.new@contoso.com"]["status"] == "valid"
    note = rows[GONE_UPN]["problems"]
    assert note.startswith("user.deleted: ") and "will be restored (--restore-deleted), not created" in note
    assert "since 2026-11-20 09:30 UTC" in note and "this row's are not applied" in note
    assert rows["brand.new@contoso.com"]["problems"] == ""


def test_run_restores_the_deleted_user_once_and_the_rerun_skips_it_as_its_own(tmp_path: Path) -> None:
    hires = sheet(tmp_path)
    with standalone_sandbox("--data", str(data_file(tmp_path))) as sandbox:
        only_deleted = write_sheet(tmp_path / "returning.csv", [person(1, userPrincipalName=GONE_UPN)])
        refused, plain = run(only_deleted, sandbox, tmp_path, "plain")
        assert refused.returncode == 1
        assert by_upn(plain)[GONE_UPN]["status"] == "invalid"  # without the flag: nothing restored
        assert user_state(sandbox, GONE_ID)["state"] == "inactive"  # type: ignore[index]

        done, first = run(hires, sandbox, tmp_path, "first", "--restore-deleted")
        assert done.returncode == 0, done.stderr
        rows = by_upn(first)
        assert rows[GONE_UPN]["status"] == "restored" and rows[GONE_UPN]["userId"] == GONE_ID
        assert rows[GONE_UPN]["problems"] == "" and rows[GONE_UPN]["requestId"]
        assert rows["brand.new@contoso.com"]["status"] == "created"
        assert user_state(sandbox, GONE_ID)["state"] == "active"  # type: ignore[index]
        assert holding(sandbox, GONE_UPN) == [GONE_ID]
        assert summary_items(first)["restored"] == "1" and summary_items(first)["created"] == "1"
        assert summary_line(done.stderr)["counts"]["restored"] == 1

        again, second = run(hires, sandbox, tmp_path, "second", "--restore-deleted")
        assert again.returncode == 0, again.stderr
        rows = by_upn(second)
        assert rows[GONE_UPN]["status"] == "skipped" and rows[GONE_UPN]["userId"] == GONE_ID
        assert "restored by an earlier run" in rows[GONE_UPN]["problems"]
        assert summary_items(second)["rows sent"] == "0"  # nothing restored (or created) twice
        assert holding(sandbox, GONE_UPN) == [GONE_ID]

        table = run_cli(
            "run", hires, "--customer", CONTOSO, "--sandbox-url", sandbox.url, "--journal", tmp_path / "j.sqlite",
            "--results", tmp_path / "third.xlsx",
        )  # fmt: skip
        assert table.returncode == 0, table.stderr
        assert re.search(r"restored\s*│\s*0\s*│", table.stderr), table.stderr  # the closing table counts it


def test_a_restore_whose_answer_is_lost_is_done_exactly_once(tmp_path: Path) -> None:
    """Every write's first answer is dropped (the restore done, the connection closed): the retry carries the
    same request id and is answered by replay; the user is restored once, with its own id, and nobody else."""
    hires = write_sheet(tmp_path / "hires.csv", [person(1, userPrincipalName=GONE_UPN)])
    with standalone_sandbox("--data", str(data_file(tmp_path)), "--drop-rate", "1", "--seed", "7") as sandbox:
        done, results = run(hires, sandbox, tmp_path, "lossy", "--restore-deleted")
        assert done.returncode == 0, done.stderr
        (row,) = results_rows(results)
        assert row["status"] == "restored" and row["userId"] == GONE_ID
        assert holding(sandbox, GONE_UPN) == [GONE_ID]
        again, rerun = run(hires, sandbox, tmp_path, "rerun", "--restore-deleted")
        assert again.returncode == 0 and summary_items(rerun)["rows sent"] == "0"
    with open_journal(tmp_path / "j.sqlite", service=sandbox.url) as journal:
        (record,) = journal.rows()
        steps = journal.prior_steps(CONTOSO, GONE_UPN)
    assert (record.state, record.user_id, record.request_id) == ("created", GONE_ID, row["requestId"])
    assert steps["restore"].state.value == "done" and steps["restore"].request_id == row["requestId"]


def test_a_user_the_journal_created_then_deleted_is_restored_with_restore_deleted(tmp_path: Path) -> None:
    hires = write_sheet(tmp_path / "hires.csv", [person(1, userPrincipalName="came.back@contoso.com")])
    with standalone_sandbox() as sandbox:
        done, first = run(hires, sandbox, tmp_path, "first")
        assert done.returncode == 0
        (created,) = results_rows(first)
        request = urllib.request.Request(
            f"{sandbox.url}/v1/customers/{CONTOSO}/users/{created['userId']}", method="DELETE",
            headers={"Authorization": f"Bearer {sandbox.token}"},
        )  # fmt: skip
        urllib.request.urlopen(request, timeout=10).close()

        back, second = run(hires, sandbox, tmp_path, "second", "--restore-deleted")
        assert back.returncode == 0, back.stderr
        (row,) = results_rows(second)
        assert row["status"] == "restored" and row["userId"] == created["userId"]
        assert holding(sandbox, "came.back@contoso.com") == [created["userId"]]
        assert row["requestId"] != created["requestId"]  # a restore of its own, not the create replayed


def test_a_restore_refused_for_lack_of_role_stops_the_run_with_exit_3(tmp_path: Path) -> None:
    """Directory Writers may create users but not restore them: the refusal stops the run like a create's."""
    hires = sheet(tmp_path)
    data = data_file(tmp_path, roles='"Directory Writers"')
    with standalone_sandbox("--data", str(data)) as sandbox:
        results = tmp_path / "denied.xlsx"
        done = run_cli(
            "run", hires, "--customer", CONTOSO, "--sandbox-url", sandbox.url, "--journal", tmp_path / "j.sqlite",
            "--results", results, "--quiet", "--concurrency", "1", "--restore-deleted",
        )  # fmt: skip
        assert_one_clear_line(done, 3, "User Administrator", "no further row was sent")
        rows = by_upn(results)
        assert rows[GONE_UPN]["status"] == "pending"
        assert rows[GONE_UPN]["problems"].startswith("permission.denied: not restored: the service refused it")
        assert rows["brand.new@contoso.com"]["status"] == "pending"
        assert user_state(sandbox, GONE_ID)["state"] == "inactive"  # type: ignore[index]
        assert holding(sandbox, "brand.new@contoso.com") == []


async def test_a_user_purged_between_the_check_and_the_restore_is_failed_and_never_created(tmp_path: Path) -> None:
    """The deleted user validation saw is gone when the restore comes (purged): `failed`, saying the UPN is free
    now; nothing else is sent, and the journal lets the next run create it afresh."""
    purged = DeletedUser(id="5c0ffee0-0000-4000-8000-000000000001", userPrincipalName="purged@contoso.com", deleted_at=None)
    row = checked_row(2, "purged@contoso.com")
    restore_row = CheckedRow(row.user, Status.VALID, (), None, purged)
    results: list[RowResult] = []
    async with sandbox_service() as svc:
        with open_journal(tmp_path / "j.sqlite", service=svc.sandbox.url) as journal:
            pipeline = Pipeline(svc.client, customer=CONTOSO, graph=svc.graph, tokens=svc.tokens, journal=journal)
            stats = await pipeline.run([restore_row], results.append)
            journal.flush()
            prior = journal.prior(CONTOSO, "purged@contoso.com")
        assert "purged@contoso.com" not in svc.held()
    (result,) = results
    assert result.status is Status.FAILED and result.userId is None
    assert [p.code for p in result.problems] == ["api.404"]
    assert "no longer in the customer's recycle bin" in result.problems_text and "create the user afresh" in result.problems_text
    assert stats.requests == 0  # never a create
    assert prior is None  # recorded as not done: the next run sends afresh


async def test_under_drop_rate_the_restore_answer_is_lost_and_the_retry_is_answered_by_replay(tmp_path: Path) -> None:
    """The same, in-process, to see the sandbox's side: the restore was done and its answer dropped, the retry
    (same request id) answered by replay: one restore, the user active with its own id."""
    row = checked_row(2, GONE_UPN)
    restore_row = CheckedRow(row.user, Status.VALID, (), None, DeletedUser(GONE_ID, GONE_UPN, DELETED_AT))
    results: list[RowResult] = []
    options = SandboxOptions(drop_rate=1.0, seed=7)
    async with Sandbox(data=data_file(tmp_path), options=options) as box, aiohttp.ClientSession() as session:
        tokens = StaticTokens("sandbox")
        client = PartnerCenterClient(session, tokens, base_url=box.url, correlation_id=str(uuid.uuid4()))
        with open_journal(tmp_path / "j.sqlite", service=box.url) as journal:
            pipeline = Pipeline(client, options=FAST, customer=CONTOSO, tokens=tokens, journal=journal)
            await pipeline.run([restore_row], results.append)
        active = [u for u in box.store.users(CONTOSO) if u["userPrincipalName"] == GONE_UPN and u["state"] == "active"]
        assert (box.stats.dropped, box.stats.replays, box.stats.creations) == (1, 1, 0)
    (result,) = results
    assert result.status is Status.RESTORED and result.userId == GONE_ID and result.attempts == 2
    assert [u["id"] for u in active] == [GONE_ID]


# -- kill -9 between the restore and the next step of its row (the made-up step of tests/steps_support.py)


@pytest.mark.parametrize("moment", ["before", "after"])
def test_a_kill_9_between_restore_and_the_next_step_resumes_at_that_step_exactly_once(
    tmp_path: Path, moment: str
) -> None:
    """The restored user counts as the journal's own: killed while its stamp is in flight, the rerun (which finds
    the user active, as validation would) restores nothing again, creates nobody, and stamps it exactly once."""
    ledger, path = tmp_path / "ledger.jsonl", tmp_path / "j.sqlite"
    back = "stepped3@contoso.com"
    data = data_file(tmp_path, upn=back)
    with standalone_sandbox("--data", str(data)) as sandbox:
        killed = subprocess.Popen(
            child(sandbox.url, path, ledger, 3, moment, back, f"restore:{back}:{GONE_ID}"), cwd=ROOT,
            env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert killed.stdout is not None
            said = killed.stdout.readline()  # blocks until the stamp of the restored row is in flight
            assert said == "reached\n", said + (killed.stderr.read() if killed.stderr else "")
            killed.send_signal(signal.SIGKILL)
        finally:
            if killed.poll() is None:
                killed.kill()
            killed.communicate(timeout=30)
        assert killed.returncode == -signal.SIGKILL
        assert user_state(sandbox, GONE_ID)["state"] == "active"  # type: ignore[index]  # restored before the kill
        with open_journal(path, service=sandbox.url) as journal:
            restore_record = journal.prior_steps(CONTOSO, back)["restore"]
        stamped_then = {line["upn"] for line in read_ledger(ledger)}

        rerun = subprocess.run(
            child(sandbox.url, path, ledger, 3, f"existing:{back}:{GONE_ID}"),
            cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=90,
        )  # fmt: skip
        assert rerun.returncode == 0 and "Traceback" not in rerun.stderr, rerun.stderr
        report: dict[str, Any] = json.loads(rerun.stdout.splitlines()[-1])
        holders = holding(sandbox, back)

    assert restore_record.state.value in ("sent", "done")  # recorded before the restore left
    statuses = {row["upn"]: (row["status"], row["userId"]) for row in report["rows"]}
    assert statuses[back] == ("skipped", GONE_ID)
    assert holders == [GONE_ID]  # one user, its own id: no new user beside it
    stamps = [line for line in read_ledger(ledger) if line["upn"] == back]
    assert len(stamps) == 1 and stamps[0]["user_id"] == GONE_ID
    assert (back in stamped_then) is (moment == "after")
    # Sent by the rerun besides creates: the stamps not made before the kill, nothing else (a restore would be
    # one more step request; a create for the restored row would be a second user, which `holders` rules out).
    assert report["step_requests"] == len(set(statuses) - stamped_then)


def test_with_via_graph_the_deleted_user_is_restored_through_partner_center_not_created_beside_it(
    tmp_path: Path,
) -> None:
    """Graph creates the new users; the one in the recycle bin is restored (Partner Center found it there), once."""
    hires = sheet(tmp_path)
    with standalone_sandbox("--data", str(data_file(tmp_path))) as sandbox:
        done, first = run(hires, sandbox, tmp_path, "first", "--restore-deleted", "--via", "graph")
        assert done.returncode == 0, done.stderr
        rows = by_upn(first)
        assert rows[GONE_UPN]["status"] == "restored" and rows[GONE_UPN]["userId"] == GONE_ID
        assert rows["brand.new@contoso.com"]["status"] == "created"
        assert user_state(sandbox, GONE_ID)["state"] == "active"  # type: ignore[index]
        assert holding(sandbox, GONE_UPN) == [GONE_ID]

        again, second = run(hires, sandbox, tmp_path, "second", "--restore-deleted", "--via", "graph")
        assert again.returncode == 0, again.stderr
        assert by_upn(second)[GONE_UPN]["status"] == "skipped" and summary_items(second)["rows sent"] == "0"
        assert holding(sandbox, GONE_UPN) == [GONE_ID]
