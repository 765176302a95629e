"""The data file's SKUs, licenses, profile fields and managers (issues 16-17): read as written, and every mistake
one clear line naming its place (exit 2 through the command)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bulkonboard.sandbox import SandboxDataError, Store, parse_data

from .sandbox_http import E3, FLOW, JANE, LICENSED_TOML, SAM, licensed_data
from .support import CONTOSO, ROOT, clean_env

HEAD = f"""
[[customers]]
id = "{CONTOSO}"
domains = [{{ name = "contoso.com", authenticationType = "Managed" }}]

[[customers.skus]]
skuId = "{E3}"
skuPartNumber = "ENTERPRISEPACK"
totalUnits = 1
"""


def user(upn: str, extra: str = "") -> str:
    return f'\n[[customers.users]]\nuserPrincipalName = "{upn}"\ndisplayName = "X"\nusageLocation = "US"\n{extra}\n'


def test_skus_licenses_profile_and_managers_are_read_as_written() -> None:
    data = licensed_data()
    contoso = data.customer(CONTOSO)
    assert contoso is not None
    skus = {sku.sku_part_number: sku for sku in contoso.skus}
    e3 = skus["ENTERPRISEPACK"]
    assert (e3.sku_id, e3.total_units, e3.license_group_id, e3.capability_status) == (
        E3,
        3,
        "group1",
        "Enabled",
    )
    assert (
        skus["MINECRAFT"].license_group_id == "group2"
        and skus["DEVELOPERPACK"].capability_status == "Suspended"
    )
    store = Store(data)
    jane, sam = store.user_by_upn(CONTOSO, JANE), store.user_by_upn(CONTOSO, SAM)
    assert jane is not None and sam is not None
    assert jane["licenses"] == [E3]  # "enterprisepack" in the file, any case
    assert jane["profile"] == {"jobTitle": "Director", "department": "Sales", "state": "WA"}
    assert jane["state"] == "active" and sam["managerId"] == jane["id"]
    customer = store.customer(CONTOSO)
    assert customer is not None and customer.consumed_units(E3) == 1 and customer.consumed_units(FLOW) == 0


def test_a_soft_deleted_users_licenses_hold_no_unit() -> None:
    text = HEAD + user("gone@contoso.com", 'state = "inactive"\nlicenses = ["ENTERPRISEPACK"]')
    text += user("here@contoso.com", 'licenses = ["ENTERPRISEPACK"]')
    customer = Store(parse_data(text)).customer(CONTOSO)
    assert customer is not None and customer.consumed_units(E3) == 1


@pytest.mark.parametrize(
    "extra,fragment",
    [
        (user("a@contoso.com", 'licenses = ["E5"]'), "'E5' is not a skuPartNumber or skuId"),
        (user("a@contoso.com", 'licenses = ["ENTERPRISEPACK"]') + user("b@contoso.com", f'licenses = ["{E3}"]'),
         "2 users hold ENTERPRISEPACK, but its totalUnits is 1"),
        (user("a@contoso.com", 'manager = "nobody@contoso.com"'), "must be the UPN of another user"),
        ('\n[[customers.users]]\nuserPrincipalName = "a@contoso.com"\ndisplayName = "A"\nlicenses = ["ENTERPRISEPACK"]\n',
         "a user with licenses needs a usageLocation"),
        (user("a@contoso.com", 'manager = "A@contoso.com"'), "must be the UPN of another user"),
        (user("a@contoso.com", 'employeeId = "12345678901234567"'), "employeeId: it is longer than 16"),
        (user("a@contoso.com", 'employeeHireDate = "2026-12-01"'), "employeeHireDate: it must be a date and time"),
        (user("a@contoso.com", 'businessPhones = ["1", "2"]'), "businessPhones: it can only hold one number"),
        (user("a@contoso.com", 'profile = { shoeSize = "9" }'), "unknown key 'shoeSize'"),
        (user("a@contoso.com", 'state = "WA"'), "state must be active or inactive"),
        ('\n[[customers.skus]]\nskuId = "x-1"\nskuPartNumber = "P"\ntotalUnits = -1\n', "totalUnits must be a whole"),
        ('\n[[customers.skus]]\nskuId = "x-1"\nskuPartNumber = "P"\ntotalUnits = 1\ncapabilityStatus = "Gone"\n',
         "capabilityStatus must be one of"),
        (f'\n[[customers.skus]]\nskuId = "{E3}"\nskuPartNumber = "OTHER"\ntotalUnits = 1\n', "appears twice"),
    ],
)  # fmt: skip
def test_each_mistake_is_one_line_naming_its_place(extra: str, fragment: str) -> None:
    with pytest.raises(SandboxDataError) as caught:
        parse_data(HEAD + extra, origin="test.toml")
    message = str(caught.value)
    assert fragment in message and message.startswith("test.toml: customers[0]") and "\n" not in message


def test_the_command_refuses_a_bad_licensing_data_file_with_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        LICENSED_TOML.replace('licenses = ["enterprisepack"]', 'licenses = ["E7"]'), encoding="utf-8"
    )
    done = subprocess.run(
        [sys.executable, "-m", "bulkonboard.cli.commands", "sandbox", "--port", "0", "--data", str(bad)],
        cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and "'E7' is not a skuPartNumber or skuId" in done.stderr
