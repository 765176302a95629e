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




# -- licenses and Graph (issues 16-18) ----------------------------------------------------------------------

E3 = "6fd2c87f-b296-42f0-b197-1e91e994b900"  # ENTERPRISEPACK, 3 units, one held by jane
FLOW = "f30db892-07e9-47e9-837c-80727f46fd3d"  # FLOW_FREE, 100 units
MINECRAFT = "9f3d9c1d-25a5-4aaa-8e59-23a1e6450a67"  # group2
SUSPENDED = "c42b9cae-ea4f-4ab7-9717-81576235ccac"  # DEVELOPERPACK, capabilityStatus Suspended
READERS = "readers-only-customer"  # a customer where the partner holds Directory Readers only
JANE = "jane.doe@contoso.com"
SAM = "sam.lee@contoso.com"  # jane's report, in the data file
NO_LOCATION = "nolocation@contoso.com"

LICENSED_TOML = f"""
[[customers]]
id = "{CONTOSO}"
name = "Contoso"
domains = [
  {{ name = "contoso.onmicrosoft.com", authenticationType = "Managed", isInitial = true }},
  {{ name = "contoso.com", authenticationType = "Managed", isDefault = true }},
  {{ name = "fabrikam.com", authenticationType = "Federated" }},
]

[[customers.skus]]
skuId = "{E3}"
skuPartNumber = "ENTERPRISEPACK"
productName = "Office 365 E3"
totalUnits = 3

[[customers.skus]]
skuId = "{FLOW}"
skuPartNumber = "FLOW_FREE"
productName = "Power Automate Free"
totalUnits = 100

[[customers.skus]]
skuId = "{MINECRAFT}"
skuPartNumber = "MINECRAFT"
productName = "Minecraft Education"
totalUnits = 5
licenseGroupId = "group2"

[[customers.skus]]
skuId = "{SUSPENDED}"
skuPartNumber = "DEVELOPERPACK"
productName = "Office 365 E5 Developer"
totalUnits = 10
capabilityStatus = "Suspended"

[[customers.users]]
userPrincipalName = "{JANE}"
displayName = "Jane Doe"
usageLocation = "US"
licenses = ["enterprisepack"]
jobTitle = "Director"
department = "Sales"
profile = {{ state = "WA" }}

[[customers.users]]
userPrincipalName = "{SAM}"
displayName = "Sam Lee"
usageLocation = "GB"
manager = "{JANE}"

[[customers.users]]
userPrincipalName = "{NO_LOCATION}"
displayName = "No Location"

[[customers]]
id = "{NORTHWIND}"
name = "Northwind"
gdapRoles = ["License Administrator"]
domains = [{{ name = "northwind.onmicrosoft.com", authenticationType = "Managed" }}]

[[customers.skus]]
skuId = "{E3}"
skuPartNumber = "ENTERPRISEPACK"
productName = "Office 365 E3"
totalUnits = 2

[[customers.users]]
userPrincipalName = "nancy@northwind.onmicrosoft.com"
displayName = "Nancy Davolio"
usageLocation = "US"

[[customers]]
id = "{READERS}"
name = "Readers"
gdapRoles = ["Directory Readers"]
domains = [{{ name = "readers.onmicrosoft.com", authenticationType = "Managed" }}]

[[customers.skus]]
skuId = "{E3}"
skuPartNumber = "ENTERPRISEPACK"
totalUnits = 5

[[customers.users]]
userPrincipalName = "rita@readers.onmicrosoft.com"
displayName = "Rita Reader"
usageLocation = "US"
"""


def licensed_data() -> Any:
    from bulkonboard.sandbox import parse_data

    return parse_data(LICENSED_TOML, origin="licensed test data")


async def call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, dict[str, str]]:
    """One request with the sandbox's token: status, parsed JSON body (None when empty), headers."""
    kwargs: dict[str, Any] = {} if body is None else {"json": body}
    async with http.request(method, url, headers={**AUTH, **(headers or {})}, **kwargs) as response:
        text = await response.text()
        return response.status, (json.loads(text) if text else None), dict(response.headers)


def graph_base(box: Sandbox, tenant: str = CONTOSO) -> str:
    return f"{box.url}/graph/{tenant}/v1.0"


def pc_base(box: Sandbox, customer: str = CONTOSO) -> str:
    return f"{box.url}/v1/customers/{customer}"


def license_update(*add: str, remove: list[str] | None = None) -> dict[str, Any]:
    """Partner Center's documented LicenseUpdate body."""
    return {
        "LicensesToAssign": [{"SkuId": sku_id, "ExcludedPlans": None} for sku_id in add],
        "LicensesToRemove": remove,
        "LicenseWarnings": [],
        "Attributes": {"ObjectType": "LicenseUpdate"},
    }


def graph_new_user(upn: str, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "accountEnabled": True,
        "displayName": "Graph Hire",
        "mailNickname": upn.partition("@")[0],
        "userPrincipalName": upn,
        "passwordProfile": {"password": PASSWORD, "forceChangePasswordNextSignIn": True},
        "usageLocation": "US",
    }
    body.update(changes)
    return body


def assert_graph_error(body: Any, code: str) -> str:
    """Graph's error shape; returns the message."""
    error = body["error"]
    assert error["code"] == code and isinstance(error["message"], str) and error["message"]
    assert {"date", "request-id", "client-request-id"} <= set(error["innerError"])
    assert set(body) == {"error"}
    return str(error["message"])
