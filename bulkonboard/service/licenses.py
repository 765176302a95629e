"""Partner Center's license endpoints: the customer's subscribed SKUs, a user's licenses, `licenseupdates`.

Apart from partnercenter.py (which mixes `LicenseCalls` into its client) because licensing is a concern of its
own and the client's module would pass its bound. Documented (the reference's "Licenses"): `subscribedskus`
lists Group1 only unless asked for every group; `licenseupdates` takes the SKUs of ONE license group per request
and answers 201 with the update echoed; a refusal is a 400 (60012: not enough licenses, its detail in `data`);
`GET .../users/{id}/licenses` lists what the user holds, each with its `productSku`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from yarl import URL

from ..errors import AuthError, BulkOnboardError
from ..sheets.facts import SubscribedSku
from .errors import CODE_NO_RELATIONSHIP, ApiError, PermissionDenied, RequestError, command_error
from .http import Answer, SecretBody, malformed_answer

#: Partner Center's license groups: Group1 (Entra ID products), Group2 (Minecraft).
LICENSE_GROUPS = ("Group1", "Group2")
#: The GDAP roles that may assign licenses (the contract's additions: creating roles, or License Administrator).
ROLES_TO_LICENSE = "User Administrator, Directory Writers or License Administrator"

_ENCODER = json.JSONEncoder(ensure_ascii=False)


class LicenseCalls:
    """The license endpoints, mixed into `PartnerCenterClient` (which gives `_call` and `_customer_url`)."""

    if TYPE_CHECKING:

        async def _call(
            self,
            method: str,
            url: URL,
            *,
            request_id: str | None = None,
            extra_headers: dict[str, str] | None = None,
            body: SecretBody | None = None,
            secrets: tuple[str, ...] = (),
            on_answer: Callable[[Answer], None] | None = None,
        ) -> Any: ...

        def _customer_url(self, customer_id: str, *rest: str) -> URL: ...

    async def subscribed_skus(
        self, customer_id: str, license_groups: tuple[str, ...] = LICENSE_GROUPS
    ) -> tuple[SubscribedSku, ...]:
        """The customer's SKUs with their free units, every license group asked at once (without
        `licenseGroupIds` Partner Center lists only Group1, and a Minecraft SKU would look unknown)."""
        url = self._customer_url(customer_id, "subscribedskus").with_query(
            [("licenseGroupIds", group) for group in license_groups]
        )
        request_id = str(uuid.uuid4())
        payload = await self._call("GET", url, request_id=request_id)
        items = payload.get("items") if isinstance(payload, dict) else None
        if not isinstance(items, list):
            raise malformed_answer("GET", url, request_id, 200, "the subscribed SKUs have no `items` array")
        skus = [_subscribed_sku(item) for item in items]
        return tuple(sku for sku in skus if sku is not None)

    async def subscribed_skus_or_refusal(
        self, customer_id: str
    ) -> tuple[tuple[SubscribedSku, ...] | None, BulkOnboardError | None]:
        """The SKUs, or why they could not be read as the one line a command stops with (exit 3). Not raised
        here: a sheet that asks for no license must not need a role that reads licenses."""
        try:
            return await self.subscribed_skus(customer_id), None
        except RequestError as exc:
            if isinstance(exc, ApiError) and exc.status == 403 and str(exc.code) != str(CODE_NO_RELATIONSHIP):
                return None, AuthError(
                    f"Partner Center denied reading the licenses (subscribed SKUs) of customer {customer_id} "
                    f"({exc.status}{f' {exc.code}' if exc.code else ''}: {exc.description}); rows ask for "
                    "licenses: the signed-in "
                    "user needs a GDAP role such as License Administrator or User Administrator there"
                )
            return None, command_error(exc, service="Partner Center", customer_id=customer_id)

    async def assign_licenses(
        self, customer_id: str, user_id: str, sku_ids: Iterable[str], *, request_id: str
    ) -> None:
        """One `licenseupdates` request assigning `sku_ids` (all of one license group); `request_id` is the
        caller's, so a retry after a lost answer is the same request (the service answers it again and takes
        no second unit). Anything but the documented 201 with an object is a malformed answer: the outcome is
        unknown, and the caller settles it by reading the user's licenses."""
        url = self._customer_url(customer_id, "users", user_id, "licenseupdates")
        update = {
            "LicensesToAssign": [{"SkuId": sku_id, "ExcludedPlans": None} for sku_id in sku_ids],
            "LicensesToRemove": None,
            "LicenseWarnings": [],
            "Attributes": {"ObjectType": "LicenseUpdate"},
        }
        body = SecretBody(_ENCODER.encode(update).encode("utf-8"))
        try:
            payload = await self._call("POST", url, request_id=request_id, body=body)
        except PermissionDenied as exc:
            raise exc.needing(ROLES_TO_LICENSE) from None
        if not isinstance(payload, dict):
            raise malformed_answer("POST", url, request_id, 201, "the license update answer is not an object")

    async def user_licenses(self, customer_id: str, user_id: str) -> frozenset[str]:
        """The SKU ids (case-folded) the user holds, of every license group."""
        url = self._customer_url(customer_id, "users", user_id, "licenses").with_query(
            [("licenseGroupIds", group) for group in LICENSE_GROUPS]
        )
        request_id = str(uuid.uuid4())
        payload = await self._call("GET", url, request_id=request_id)
        items = payload.get("items") if isinstance(payload, dict) else None
        if not isinstance(items, list):
            raise malformed_answer("GET", url, request_id, 200, "the user's licenses have no `items` array")
        held: set[str] = set()
        for item in items:
            product = item.get("productSku") if isinstance(item, dict) else None
            sku_id = product.get("id") if isinstance(product, dict) else None
            if isinstance(sku_id, str) and sku_id:
                held.add(sku_id.casefold())
        return frozenset(held)


def _subscribed_sku(item: Any) -> SubscribedSku | None:
    """One item of `subscribedskus`; None for an item without a SKU id (nothing could be assigned from it)."""
    product = item.get("productSku") if isinstance(item, dict) else None
    if not isinstance(product, dict) or not isinstance(product.get("id"), str) or not product["id"]:
        return None

    def text(table: dict[str, Any], key: str, default: str = "") -> str:
        value = table.get(key)
        return value if isinstance(value, str) and value else default

    available = item.get("availableUnits")
    return SubscribedSku(
        sku_id=product["id"],
        part_number=text(product, "skuPartNumber", product["id"]),
        product_name=text(product, "name", text(product, "skuPartNumber", product["id"])),
        available_units=available if isinstance(available, int) and not isinstance(available, bool) else 0,
        capability_status=text(item, "capabilityStatus", "Enabled"),
        license_group_id=text(product, "licenseGroupId", "group1"),
    )
