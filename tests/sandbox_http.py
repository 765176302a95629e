"""Helpers shared by the sandbox's HTTP tests (test_sandbox.py, test_sandbox_faults.py): a sandbox on port 0
that is always stopped, a client session, a create body, and the checks of Partner Center's error shape."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from bulkonboard.sandbox import Sandbox

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "sandbox.toml"
CONTOSO = "3c9a8f12-5e6b-4c1d-9a7e-2f4b8d6c1e90"
NORTHWIND = "7d2e4b61-0c3a-4f8e-b5d9-1a6c3e8f2b47"
PASSWORD = "Qx7!vLm#93zR"  # distinctive, so a leak anywhere is unmistakable
AUTH = {"Authorization": "Bearer sandbox"}
DISCONNECTED = (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError)

Start = Callable[..., Awaitable[Sandbox]]


def new_user(upn: str = "new.hire@contoso.com", **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "usageLocation": "US",
        "userPrincipalName": upn,
        "firstName": "New",
        "lastName": "Hire",
        "displayName": "New Hire",
        "passwordProfile": {"password": PASSWORD, "forceChangePassword": True},
        "attributes": {"objectType": "CustomerUser"},
    }
    body.update(changes)
    return body


async def post_user(
    http: aiohttp.ClientSession,
    box: Sandbox,
    body: Any,
    request_id: str | None = None,
    customer: str = CONTOSO,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, dict[str, str]]:
    sent = {**AUTH, "MS-CorrelationId": "corr-1"}
    if request_id is not None:
        sent["MS-RequestId"] = request_id
    sent.update(headers or {})
    kwargs: dict[str, Any] = {"data": body} if isinstance(body, (str, bytes)) else {"json": body}
    async with http.post(f"{box.url}/v1/customers/{customer}/users", headers=sent, **kwargs) as response:
        text = await response.text()
        return response.status, (json.loads(text) if text else None), dict(response.headers)


async def get_json(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    async with http.get(url, headers={**AUTH, **(headers or {})}) as response:
        text = await response.text()
        return response.status, (json.loads(text) if text else None)


def assert_pc_error(body: Any, code: int) -> None:
    """Partner Center's error shape: `data` only when there is some detail (never `[]`)."""
    assert {"code", "description", "source"} <= set(body) <= {"code", "description", "data", "source"}
    assert body["code"] == code and body["source"] == "PartnerFD"
    assert isinstance(body["description"], str) and 0 < len(body["description"]) <= 1024
    if "data" in body:
        assert isinstance(body["data"], list) and body["data"]


