"""The license step's plan for a row, without a service: which steps a row needs, how its references resolve,
and what it says when they cannot be sent (the sending itself is tested over HTTP in test_license_step.py)."""

from __future__ import annotations

import dataclasses

from bulkonboard.model import RowResult, Status
from bulkonboard.sending.licensing import LicenseBook, license_steps
from bulkonboard.sending.steps import RowState
from bulkonboard.sheets.facts import CustomerFacts, SubscribedSku

from .support import CONTOSO, checked_row

E3 = SubscribedSku("e3-id", "ENTERPRISEPACK", "Office 365 E3", 5)
FLOW = SubscribedSku("flow-id", "FLOW_FREE", "Power Automate Free", 5)
MINECRAFT = SubscribedSku("mc-id", "MINECRAFT", "Minecraft Education", 5, license_group_id="Group2")
ODD = SubscribedSku("odd-id", "ODDGROUP", "Odd Group", 5, license_group_id="group9")
SUSPENDED = SubscribedSku(
    "dev-id", "DEVELOPERPACK", "Office 365 E5 Developer", 5, capability_status="Suspended"
)


class NoService:
    async def assign_licenses(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("nothing may be sent")

    async def user_licenses(self, *args: object) -> frozenset[str]:
        raise AssertionError("nothing may be read")


def book(*skus: SubscribedSku) -> LicenseBook:
    known = LicenseBook()
    known.learn({CONTOSO: CustomerFacts(CONTOSO, subscribed_skus=skus)})
    return known


def row(*licenses: str) -> RowState:
    user = dataclasses.replace(checked_row(2).user, licenses=licenses)
    return RowState(CONTOSO.upper(), user, RowResult(2, user.userPrincipalName, Status.CREATED, userId="u1"))


def test_each_license_group_is_a_step_of_its_own_and_a_row_without_licenses_needs_none() -> None:
    group1, group2 = license_steps(NoService(), book(E3, FLOW, MINECRAFT, ODD))
    assert (group1.name, group2.name) == ("license:group1", "license:group2")
    assert not group1.needed(row()) and not group2.needed(row())
    both = row("office 365 e3", "FLOW_FREE", "mc-id", "oddgroup")  # any case, by name, part number or id
    assert group1.needed(both) and group2.needed(both)
    # An undocumented group goes with Group1's request (the service then says whether it takes it).
    assert group1.effect(both) == "ENTERPRISEPACK; FLOW_FREE; ODDGROUP" and group2.effect(both) == "MINECRAFT"
    assert group1.needed(row("E3-ID")) and not group2.needed(row("E3-ID"))


async def test_a_cell_that_cannot_be_sent_fails_group1_once_and_sends_nothing() -> None:
    known = book(E3, MINECRAFT, SUSPENDED)
    group1, group2 = license_steps(NoService(), known)
    cell = row("ENTERPRISEPACK", "Minecraft Education", "Office 365 E5", "DEVELOPERPACK")
    assert group1.needed(cell) and not group2.needed(cell)  # said once, by Group1's step
    outcome = await group1.run(cell, "request-id", sender=None)  # type: ignore[arg-type]
    assert outcome.message == (
        "no license was sent: Office 365 E5 is not a license the customer holds (closest: Office 365 E3 "
        "(ENTERPRISEPACK), Office 365 E5 Developer (DEVELOPERPACK)), and Office 365 E5 Developer (DEVELOPERPACK) "
        "cannot be assigned: the subscription is Suspended; fix the licenses cell"
    )
    assert await group1.reconcile(cell, "request-id", sender=None) is None  # type: ignore[arg-type]
    assert known.usage() == ()


async def test_without_the_customers_skus_nothing_is_sent_and_the_row_says_why() -> None:
    group1, _ = license_steps(NoService(), LicenseBook())
    outcome = await group1.run(row("ENTERPRISEPACK"), "request-id", sender=None)  # type: ignore[arg-type]
    assert outcome.message.startswith("the customer's licenses (subscribed SKUs) could not be read")


def test_show_lists_what_each_group_assigned_in_the_licenses_column() -> None:
    group1, group2 = license_steps(NoService(), book(E3, MINECRAFT))
    state = row("ENTERPRISEPACK", "MINECRAFT")
    group1.show(state, "")
    assert state.result.display.get("licenses", "") == ""  # nothing done: nothing claimed
    group1.show(state, "ENTERPRISEPACK")
    group2.show(state, "MINECRAFT")
    assert state.result.display["licenses"] == "ENTERPRISEPACK; MINECRAFT"
