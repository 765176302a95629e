"""The `licenses` column in a dry run: SKUs named any way Partner Center shows them, unknown and not assignable
SKUs refused with the closest names, units given out in input order, the usage location a license needs, one
note (no per-row noise) when the source cannot list SKUs, and the client that reads them from the sandbox."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pandas as pd
import pytest

from bulkonboard.errors import AuthError, InputError
from bulkonboard.model import FIELDS, Code, Status
from bulkonboard.sandbox import Sandbox, SandboxOptions
from bulkonboard.service.http import StaticTokens
from bulkonboard.service.partnercenter import PartnerCenterClient
from bulkonboard.sheets.facts import ANY_CUSTOMER, CustomerFacts, Domain, SubscribedSku
from bulkonboard.sheets.licenses import (
    SkuCatalog,
    default_licenses_text,
    split_licenses,
)
from bulkonboard.sheets.validation import CheckedRow, validate

from .sandbox_http import CONTOSO, E3, FLOW, MINECRAFT, SUSPENDED, Start, licensed_data

STRONG = "Str0ng!Passw0rd"
E3_SKU = SubscribedSku(E3, "ENTERPRISEPACK", "Office 365 E3", available_units=2)
FLOW_SKU = SubscribedSku(FLOW, "FLOW_FREE", "Power Automate Free", available_units=100)
SUSPENDED_SKU = SubscribedSku(SUSPENDED, "DEVELOPERPACK", "Office 365 E5 Developer", 0, "Suspended")
WARNING_SKU = SubscribedSku(
    "11111111-2222-3333-4444-555555555555", "VISIOCLIENT", "Visio Plan 2", 1, "Warning"
)


class FakeSheet:
    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self.present = frozenset(frame.columns) - {"row"}
        self.path = Path("hires.csv")


def sheet(*rows: dict[str, str]) -> FakeSheet:
    base = {"displayName": "Some One", "usageLocation": "US", "password": STRONG, "licenses": ""}
    records = [
        {"row": i + 2, "userPrincipalName": f"user{i}@contoso.com", **base, **row}
        for i, row in enumerate(rows)
    ]
    frame = pd.DataFrame(records)
    for name in FIELDS:
        if name not in frame.columns:
            frame[name] = ""
    return FakeSheet(frame)


def facts(skus: tuple[SubscribedSku, ...] | None = (E3_SKU, FLOW_SKU, SUSPENDED_SKU, WARNING_SKU), **kw: Any):
    return {
        CONTOSO: CustomerFacts(
            CONTOSO,
            {"contoso.com": Domain("contoso.com", "Managed")},
            existing_users={},
            subscribed_skus=skus,
            **kw,
        )
    }


def checked(*rows: dict[str, str], **kw: Any) -> tuple[list[CheckedRow], Any]:
    source = kw.pop("facts", None) or facts()
    validation = validate(sheet(*rows), source, default_customer=CONTOSO, **kw)
    return list(validation), validation


def codes(row: CheckedRow) -> list[str]:
    return [p.code for p in row.problems]


def test_split_trims_drops_empty_parts_and_repeats_ignoring_case() -> None:
    assert split_licenses(" ENTERPRISEPACK ;; flow_free; enterprisepack ;") == ("ENTERPRISEPACK", "flow_free")
    assert split_licenses("") == ()


def test_a_sku_is_found_by_part_number_product_name_or_id_in_any_case() -> None:
    catalog = SkuCatalog((E3_SKU, FLOW_SKU))
    for reference in ("enterprisepack", "OFFICE 365 e3", E3.upper(), "  Office 365 E3 "):
        assert catalog.find(reference) is E3_SKU, reference
    assert catalog.find("E5") is None
    assert "Office 365 E3 (ENTERPRISEPACK)" in catalog.closest("Enterprisepak")


def test_rows_name_skus_any_way_and_keep_them_as_asked() -> None:
    rows, validation = checked({"licenses": "office 365 e3; FLOW_FREE"}, {"licenses": E3.upper()}, {})
    assert [r.status for r in rows] == [Status.VALID] * 3
    assert rows[0].user.licenses == ("office 365 e3", "FLOW_FREE") and rows[2].user.licenses == ()
    assert {(d.sku_part_number, d.available, d.asked, d.short) for d in validation.license_demand} == {
        ("ENTERPRISEPACK", 2, 2, 0),
        ("FLOW_FREE", 100, 1, 0),
    }


def test_an_unknown_sku_names_the_closest_the_customer_holds() -> None:
    (row,), _ = checked({"licenses": "Enterprisepak; FLOW_FREE"})
    assert row.status is Status.INVALID and codes(row) == [Code.LICENSE_UNKNOWN]
    message = row.problems[0].message
    assert (
        "Enterprisepak is not a license" in message and "closest: Office 365 E3 (ENTERPRISEPACK)" in message
    )
    assert row.problems[0].field == "licenses"


def test_a_suspended_subscription_is_refused_saying_why_and_a_warning_one_is_not() -> None:
    (suspended, warning), _ = checked({"licenses": "developerpack"}, {"licenses": "Visio Plan 2"})
    assert codes(suspended) == [Code.LICENSE_UNKNOWN]
    assert (
        "Suspended" in suspended.problems[0].message and "cannot be assigned" in suspended.problems[0].message
    )
    assert warning.status is Status.VALID


def test_rows_past_the_free_units_are_insufficient_in_input_order() -> None:
    rows, validation = checked(*({"licenses": "ENTERPRISEPACK"} for _ in range(5)))
    assert [r.status for r in rows] == [Status.VALID, Status.VALID] + [Status.INVALID] * 3
    assert all(codes(r) == [Code.LICENSE_INSUFFICIENT] for r in rows[2:])
    assert (
        "has 2 available and 5 rows" in rows[4].problems[0].message
        and "number 5" in rows[4].problems[0].message
    )
    (e3,) = validation.license_demand
    assert (e3.available, e3.asked, e3.short) == (2, 5, 3)
    assert validation.problem_counts == {Code.LICENSE_INSUFFICIENT: 3}


def test_rows_that_will_not_be_created_take_no_unit() -> None:
    rows, validation = checked(
        {"licenses": "ENTERPRISEPACK", "displayName": ""},  # invalid anyway
        {"licenses": "ENTERPRISEPACK; Enterprisepak"},  # an unknown SKU: not created either
        {"licenses": "ENTERPRISEPACK"},
        {"licenses": "ENTERPRISEPACK"},
    )
    assert [r.status for r in rows[2:]] == [Status.VALID, Status.VALID]
    assert Code.LICENSE_INSUFFICIENT not in codes(rows[0]) + codes(rows[1])
    assert validation.license_demand[0].asked == 2


def test_users_that_exist_already_are_not_judged() -> None:
    source = facts()
    source[CONTOSO].existing_users = {"user0@contoso.com": "id-0"}
    rows, validation = checked({"licenses": "nonsense"}, {"licenses": "ENTERPRISEPACK"}, facts=source)
    assert rows[0].status is Status.SKIPPED and codes(rows[0]) == [Code.USER_EXISTS]
    assert rows[1].status is Status.VALID


def test_a_row_with_licenses_but_no_usage_location_is_told_licenses_need_one() -> None:
    (licensed, bare), _ = checked({"licenses": "ENTERPRISEPACK", "usageLocation": ""}, {"usageLocation": ""})
    assert codes(licensed) == [Code.FIELD_MISSING]
    assert "license can only be assigned to a user with a usage location" in licensed.problems[0].message
    assert "license" not in bare.problems[0].message


def test_offline_facts_check_no_license_and_say_so_once() -> None:
    offline = {ANY_CUSTOMER: CustomerFacts(ANY_CUSTOMER, {"contoso.com": Domain("contoso.com", "Managed")})}
    validation = validate(sheet({"licenses": "anything at all"}, {}), offline, default_customer=ANY_CUSTOMER)
    assert [r.status for r in validation] == [Status.VALID, Status.VALID]
    assert "offline" in validation.licenses_note and validation.license_demand == ()
    quiet = validate(sheet({}), offline, default_customer=ANY_CUSTOMER)
    assert quiet.licenses_note == ""  # no row asks: nothing to say


def test_skus_the_service_would_not_list_stop_the_check_only_when_rows_ask() -> None:
    refused = facts(None, licenses_unreadable=AuthError("denied reading the licenses"))
    assert [r.status for r in validate(sheet({}), refused, default_customer=CONTOSO)] == [Status.VALID]
    with pytest.raises(AuthError, match="denied reading the licenses"):
        validate(sheet({"licenses": "ENTERPRISEPACK"}), refused, default_customer=CONTOSO)


def test_default_licenses_serve_rows_without_their_own() -> None:
    rows, _ = checked({"licenses": "FLOW_FREE"}, {}, default_licenses=("ENTERPRISEPACK", "flow_free"))
    assert rows[0].user.licenses == ("FLOW_FREE",)
    assert rows[1].user.licenses == ("ENTERPRISEPACK", "flow_free")
    with pytest.raises(InputError, match="--license"):
        default_licenses_text([" ; "])


async def test_the_client_reads_every_license_group(start: Start, http: aiohttp.ClientSession) -> None:
    box: Sandbox = await start(SandboxOptions(seed=0), data=licensed_data())
    client = PartnerCenterClient(http, StaticTokens("sandbox"), base_url=box.url, correlation_id="c")
    skus = {sku.sku_id: sku for sku in await client.subscribed_skus(CONTOSO)}
    assert set(skus) == {E3, FLOW, MINECRAFT, SUSPENDED}  # MINECRAFT is in group2
    e3 = skus[E3]
    assert (e3.part_number, e3.product_name, e3.available_units, e3.assignable) == (
        "ENTERPRISEPACK",
        "Office 365 E3",
        2,  # 3 units, one held by jane
        True,
    )
    assert not skus[SUSPENDED].assignable and skus[MINECRAFT].license_group_id == "group2"
    found, unreadable = await client.subscribed_skus_or_refusal("00000000-0000-0000-0000-000000000000")
    assert found is None and unreadable is not None and "customer" in unreadable.message


def test_forty_thousand_rows_get_their_units_in_input_order() -> None:
    n = 40_000
    e3 = SubscribedSku(E3, "ENTERPRISEPACK", "Office 365 E3", available_units=30_000)
    rows, validation = checked(
        *({"licenses": "ENTERPRISEPACK; FLOW_FREE" if i % 2 else "office 365 e3"} for i in range(n)),
        facts=facts((e3, SubscribedSku(FLOW, "FLOW_FREE", "Power Automate Free", available_units=n))),
    )
    assert [r.status for r in rows] == [Status.VALID] * 30_000 + [Status.INVALID] * 10_000
    assert "this is number 40000 in input order" in rows[-1].problems[0].message
    assert [(d.sku_part_number, d.asked, d.short) for d in validation.license_demand] == [
        ("ENTERPRISEPACK", n, 10_000),
        ("FLOW_FREE", n // 2, 0),
    ]
