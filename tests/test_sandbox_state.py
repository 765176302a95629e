"""`bulkonboard sandbox --state FILE` is durable before it answers: a sandbox killed -9 right after its 200s keeps
every write it answered; the file is a snapshot plus one appended line per write (never rewritten per write); a
write cut short by the kill is dropped, damage elsewhere is one clear line; a disk that fails answers 500."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import re
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bulkonboard.sandbox import Sandbox, SandboxOptions
from bulkonboard.sandbox.codes import STATE_NOT_SAVED_CODE
from bulkonboard.sandbox.data import SandboxDataError
from bulkonboard.sandbox.state import StateLog, read_state

from .sandbox_http import E3, FLOW, JANE, LICENSED_TOML, graph_new_user
from .sandbox_http import PASSWORD as GRAPH_PASSWORD
from .support import CONTOSO, ROOT, SANDBOX_DATA, clean_env

AUTH = {"Authorization": "Bearer sandbox"}
PASSWORD = "Dur4ble!Secret#77"
STARTUP_TIMEOUT = 30.0


def body(upn: str, **changes: Any) -> dict[str, Any]:
    user = {
        "userPrincipalName": upn,
        "displayName": "Kept User",
        "usageLocation": "US",
        "passwordProfile": {"password": PASSWORD, "forceChangePassword": True},
    }
    user.update(changes)
    return user


@asynccontextmanager
async def sandbox_process(
    state: Path, data: Path = SANDBOX_DATA
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """`bulkonboard sandbox --state FILE` through the real CLI, ready once it printed its first line."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bulkonboard.cli.commands", "sandbox", "--port", "0", "--data", str(data),
        "--page-size", "1000", "--state", str(state),
        cwd=ROOT, env=clean_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        first = (await asyncio.wait_for(process.stdout.readline(), STARTUP_TIMEOUT)).decode()
        match = re.match(r"listening on (\S+)\n", first)
        assert match, f"the sandbox said {first!r}"
        yield process, match.group(1)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def listed(http: aiohttp.ClientSession, url: str) -> dict[str, dict[str, Any]]:
    async with http.get(f"{url}/v1/customers/{CONTOSO}/users", headers=AUTH) as answer:
        assert answer.status == 200
        page = await answer.json()
    assert "next" not in page["links"]
    return {user["userPrincipalName"]: user for user in page["items"]}


async def test_a_sandbox_killed_9_right_after_its_answers_keeps_every_write_it_answered(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    upns = [f"kept{n}@contoso.com" for n in range(40)]
    async with aiohttp.ClientSession() as http:
        async with sandbox_process(state) as (process, url):
            users = f"{url}/v1/customers/{CONTOSO}/users"

            async def create(upn: str) -> tuple[int, dict[str, Any]]:
                async with http.post(users, json=body(upn), headers=AUTH) as answer:
                    return answer.status, await answer.json()

            answers = await asyncio.gather(*(create(upn) for upn in upns))  # concurrent: they share fsyncs
            before = await listed(http, url)
            jane, wei = before["jane.doe@contoso.com"], before["wei.zhang@contoso.com"]
            async with http.delete(f"{users}/{jane['id']}", headers=AUTH) as deleted:
                assert deleted.status == 204
            async with http.patch(f"{users}/{wei['id']}", json={"displayName": "Wei Z."}, headers=AUTH) as patched:
                assert patched.status == 200
            process.send_signal(signal.SIGKILL)  # at once: no clean stop, no compaction
            await process.wait()
        assert process.returncode == -signal.SIGKILL
        assert [status for status, _ in answers] == [200] * len(upns)
        ids = {created["userPrincipalName"]: created["id"] for _, created in answers}
        assert PASSWORD not in state.read_text(encoding="utf-8")

        async with sandbox_process(state) as (again, url):
            after = await listed(http, url)
            async with http.get(f"{url}/v1/customers/{CONTOSO}/users/{jane['id']}", headers=AUTH) as answer:
                jane_after = await answer.json()
            again.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(again.wait(), STARTUP_TIMEOUT) == 0
    assert {upn: after[upn]["id"] for upn in upns} == ids, "every user answered 200 is back, with its id"
    assert after["wei.zhang@contoso.com"]["displayName"] == "Wei Z."
    assert "jane.doe@contoso.com" not in after and jane_after["state"] == "inactive"
    compacted = json.loads(state.read_text(encoding="utf-8"))  # a clean stop leaves the snapshot alone
    assert compacted["version"] == 2 and len(compacted["customers"][CONTOSO]["users"]) == len(upns) + 2


async def _send(
    http: aiohttp.ClientSession, method: str, url: str, sent: Any = None
) -> tuple[int, Any]:
    async with http.request(method, url, json=sent, headers=AUTH) as answer:
        text = await answer.text()
        return answer.status, (json.loads(text) if text else None)


async def _licensed_writes(http: aiohttp.ClientSession, url: str) -> dict[str, str]:
    """Every kind of write issues 16-17 added, each answered before the kill: their ids by UPN."""
    pc, graph = f"{url}/v1/customers/{CONTOSO}", f"{url}/graph/{CONTOSO}/v1.0"
    status, made = await _send(http, "POST", f"{pc}/users", body("pc.licensed@contoso.com"))
    assert status == 200
    update = {"LicensesToAssign": [{"SkuId": E3, "ExcludedPlans": None}], "LicensesToRemove": None}
    assert (await _send(http, "POST", f"{pc}/users/{made['id']}/licenseupdates", update))[0] == 201
    profile = {"jobTitle": "Pilot", "employeeId": "E-7", "businessPhones": ["+1 555 0100"]}
    status, boss = await _send(http, "POST", f"{graph}/users", graph_new_user("boss@contoso.com", **profile))
    assert status == 201
    status, report = await _send(http, "POST", f"{graph}/users", graph_new_user("report@contoso.com"))
    assert status == 201
    assert (await _send(http, "PATCH", f"{graph}/users/{report['id']}", {"department": "Air", "city": "Oslo"}))[0] == 204
    reference = {"@odata.id": f"https://graph.microsoft.com/v1.0/users/{boss['id']}"}
    assert (await _send(http, "PUT", f"{graph}/users/{report['id']}/manager/$ref", reference))[0] == 204
    assign = {"addLicenses": [{"skuId": FLOW, "disabledPlans": []}], "removeLicenses": []}
    assert (await _send(http, "POST", f"{graph}/users/{report['id']}/assignLicense", assign))[0] == 200
    remove = {"addLicenses": [], "removeLicenses": [E3]}
    assert (await _send(http, "POST", f"{graph}/users/{JANE}/assignLicense", remove))[0] == 200
    return {"pc": made["id"], "boss": boss["id"], "report": report["id"]}


async def test_license_profile_and_manager_writes_survive_a_kill_9(tmp_path: Path) -> None:
    state, data = tmp_path / "state.json", tmp_path / "licensed.toml"
    data.write_text(LICENSED_TOML, encoding="utf-8")
    async with aiohttp.ClientSession() as http:
        async with sandbox_process(state, data) as (process, url):
            ids = await _licensed_writes(http, url)
            process.send_signal(signal.SIGKILL)
            await process.wait()
        async with sandbox_process(state, data) as (again, url):
            pc, graph = f"{url}/v1/customers/{CONTOSO}", f"{url}/graph/{CONTOSO}/v1.0"
            _, skus = await _send(http, "GET", f"{pc}/subscribedskus")
            _, pc_licenses = await _send(http, "GET", f"{pc}/users/{ids['pc']}/licenses")
            _, details = await _send(http, "GET", f"{graph}/users/{ids['report']}/licenseDetails")
            _, jane = await _send(http, "GET", f"{graph}/users/{JANE}/licenseDetails")
            _, boss = await _send(http, "GET", f"{graph}/users/{ids['boss']}?$select=jobTitle,employeeId,businessPhones")
            _, report = await _send(http, "GET", f"{graph}/users/{ids['report']}?$select=department,city")
            _, manager = await _send(http, "GET", f"{graph}/users/{ids['report']}/manager")
            again.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(again.wait(), STARTUP_TIMEOUT) == 0
    consumed = {item["productSku"]["skuPartNumber"]: item["consumedUnits"] for item in skus["items"]}
    assert consumed["ENTERPRISEPACK"] == 1 and consumed["FLOW_FREE"] == 1  # pc.licensed's E3; jane's E3 removed
    assert [item["productSku"]["id"] for item in pc_licenses["items"]] == [E3]
    assert [d["skuId"] for d in details["value"]] == [FLOW] and jane["value"] == []
    assert (boss["jobTitle"], boss["employeeId"], boss["businessPhones"]) == ("Pilot", "E-7", ["+1 555 0100"])
    assert (report["department"], report["city"]) == ("Air", "Oslo")
    assert manager["id"] == ids["boss"]
    saved = state.read_text(encoding="utf-8")
    assert PASSWORD not in saved and GRAPH_PASSWORD not in saved


@pytest.fixture
async def box(tmp_path: Path) -> AsyncIterator[Sandbox]:
    sandbox = Sandbox(SANDBOX_DATA, SandboxOptions(seed=0, page_size=1000), state_path=tmp_path / "state.json")
    await sandbox.start()
    yield sandbox
    await sandbox.stop()


async def test_each_write_appends_one_line_and_leaves_the_snapshot_as_it_was(box: Sandbox) -> None:
    assert box.state_path is not None
    snapshot = box.state_path.read_text(encoding="utf-8")
    async with aiohttp.ClientSession() as http:
        for n in range(5):
            async with http.post(f"{box.url}/v1/customers/{CONTOSO}/users", json=body(f"a{n}@contoso.com"), headers=AUTH) as answer:
                assert answer.status == 200
                text = box.state_path.read_text(encoding="utf-8")  # read while the answer is in hand
                assert text.startswith(snapshot) and text[len(snapshot):].count("\n") == n + 1
    logged = [json.loads(line) for line in text[len(snapshot):].splitlines()]
    assert [entry["user"]["userPrincipalName"] for entry in logged] == [f"a{n}@contoso.com" for n in range(5)]


async def test_a_write_the_disk_refuses_is_answered_500_and_kept_once_the_disk_is_back(
    box: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert box.state_path is not None
    real_append = StateLog._append
    failures = [OSError(errno.ENOSPC, "No space left on device")]

    def append(self: StateLog, data: bytes) -> None:
        if failures:
            raise failures.pop()
        real_append(self, data)

    monkeypatch.setattr(StateLog, "_append", append)
    request = {**AUTH, "MS-RequestId": str(uuid.uuid4())}
    async with aiohttp.ClientSession() as http:
        users = f"{box.url}/v1/customers/{CONTOSO}/users"
        async with http.post(users, json=body("disk@contoso.com"), headers=request) as refused:
            assert refused.status == 500
            error = await refused.json()
        assert error["code"] == STATE_NOT_SAVED_CODE and "No space left" in error["description"]
        assert "disk@contoso.com" not in json.dumps(read_state(box.state_path))
        async with http.post(users, json=body("disk@contoso.com"), headers=request) as replayed:
            assert replayed.status == 200  # the replay waits for the disk again, which now takes the write
            created = await replayed.json()
    saved = {u["userPrincipalName"]: u["id"] for u in (read_state(box.state_path) or {})[CONTOSO]}
    assert saved["disk@contoso.com"] == created["id"]


def _head(path: Path) -> str:
    return json.dumps({"format": "bulkonboard-sandbox-state", "version": 2, "customers": {CONTOSO: {"users": []}}})


def _line(upn: str, user_id: str) -> str:
    user = {"id": user_id, "userPrincipalName": upn, "displayName": "X", "state": "active"}
    return json.dumps({"customer": CONTOSO, "user": user})


def test_a_write_cut_short_by_a_kill_is_dropped_and_the_rest_is_kept(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    torn = _line("torn@contoso.com", "id-2")[:-9]  # no newline: the kill came mid-append, so it was never answered
    state.write_text(_head(state) + "\n" + _line("whole@contoso.com", "id-1") + "\n" + torn, encoding="utf-8")
    users = (read_state(state) or {})[CONTOSO]
    assert [u["userPrincipalName"] for u in users] == ["whole@contoso.com"]


def test_a_damaged_line_before_the_end_is_one_clear_line(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text(_head(state) + "\n{oops\n" + _line("whole@contoso.com", "id-1") + "\n", encoding="utf-8")
    with pytest.raises(SandboxDataError) as caught:
        Sandbox(SANDBOX_DATA, state_path=state)
    assert str(state) in str(caught.value) and "damaged" in str(caught.value) and "\n" not in str(caught.value)


def test_a_later_line_replaces_the_record_it_names_in_place(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    first = json.loads(_line("a@contoso.com", "id-1"))
    changed = {**first["user"], "state": "inactive"}
    lines = [_line("a@contoso.com", "id-1"), _line("b@contoso.com", "id-2"), json.dumps({"customer": CONTOSO, "user": changed})]
    state.write_text(_head(state) + "\n" + "\n".join(lines) + "\n", encoding="utf-8")
    users = (read_state(state) or {})[CONTOSO]
    assert [(u["id"], u["state"]) for u in users] == [("id-1", "inactive"), ("id-2", "active")]


def test_a_version_1_file_is_still_read(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    user = {"id": "id-1", "userPrincipalName": "old@contoso.com", "state": "active"}
    old = {"format": "bulkonboard-sandbox-state", "version": 1, "customers": {CONTOSO: {"users": [user]}}}
    state.write_text(json.dumps(old, indent=1), encoding="utf-8")
    assert (read_state(state) or {})[CONTOSO][0]["userPrincipalName"] == "old@contoso.com"
    assert os.path.getsize(state) > 0
