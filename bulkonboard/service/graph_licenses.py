"""Graph's license calls in the customer's tenant (`--via graph`): `GET /subscribedSkus`,
`POST /users/{id}/assignLicense`, `GET /users/{id}/licenseDetails`. The same three questions Partner Center's
license calls answer (licenses.py), so the license step takes either (sending/licensing.py, `LicenseService`).

What Graph documents and Partner Center does not:
- Graph has no license groups: one `assignLicense` takes any SKUs (the step then sends one request per row).
- Graph has no idempotency key: `assignLicense` of a SKU the user already holds is accepted and takes no second
  unit, so a retry after a lost answer is harmless; the step still reads `licenseDetails` first to settle it.
- `subscribedSkus` names no product (no "Office 365 E3"): only `skuPartNumber` and `skuId`. The free units are
  `prepaidUnits.enabled + prepaidUnits.warning - consumedUnits` (Graph documents that units in warning can still
  be assigned; suspended and locked-out ones cannot), never below 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from yarl import URL

from ..errors import AuthError, BulkOnboardError
from ..sheets.facts import SubscribedSku
from .errors import ApiError, PermissionDenied, RequestError, command_error
from .http import Answer, malformed_answer

#: Graph's roles (directory roles for a person, or the app's permissions app-only) that may assign licenses.
ROLES_TO_LICENSE_IN_GRAPH = (
    "User Administrator, Directory Writers or License Administrator (app-only: the application permission "
    "LicenseAssignment.ReadWrite.All or User.ReadWrite.All)"
)


class GraphLicenseCalls:
    """The license calls, mixed into `GraphClient` (which gives `_call`, `_root` and `_user_url`)."""

    if TYPE_CHECKING:

        async def _call(
            self,
            method: str,
            url: URL,
            tenant: str,
            body: Any = None,
            *,
            secrets: tuple[str, ...] = (),
            on_answer: Callable[[Answer], None] | None = None,
        ) -> Any: ...

        def _root(self, tenant: str) -> URL: ...

        def _user_url(self, tenant: str, user: str, *more: str) -> URL: ...

    async def subscribed_skus(self, customer_id: str) -> tuple[SubscribedSku, ...]:
        """The tenant's SKUs with their free units (one page: Graph does not page `subscribedSkus`)."""
        url = self._root(customer_id) / "subscribedSkus"
        payload = await self._call("GET", url, customer_id)
        values = payload.get("value") if isinstance(payload, dict) else None
        if not isinstance(values, list):
            raise malformed_answer("GET", url, None, 200, "the subscribed SKUs have no `value` array")
        skus = [_subscribed_sku(item) for item in values]
        return tuple(sku for sku in skus if sku is not None)

    async def subscribed_skus_or_refusal(
        self, customer_id: str
    ) -> tuple[tuple[SubscribedSku, ...] | None, BulkOnboardError | None]:
        """As Partner Center's: the SKUs, or the one line a command stops with when rows ask for licenses."""
        try:
            return await self.subscribed_skus(customer_id), None
        except RequestError as exc:
            if isinstance(exc, ApiError) and exc.status == 403:
                return None, AuthError(
                    f"Graph denied reading the licenses (subscribedSkus) of tenant {customer_id} "
                    f"({exc.status}{f' {exc.code}' if exc.code else ''}: {exc.description}); rows ask for licenses: "
                    f"the sign-in needs {ROLES_TO_LICENSE_IN_GRAPH} there"
                )
            return None, command_error(exc, service="Graph", customer_id=customer_id)

    async def assign_licenses(
        self, customer_id: str, user_id: str, sku_ids: Iterable[str], *, request_id: str
    ) -> None:
        """One `assignLicense` adding `sku_ids`. `request_id` is the step's (kept for the journal's sake);
        Graph takes no idempotency key, and needs none here: a SKU held already takes no second unit."""
        del request_id
        url = self._user_url(customer_id, user_id, "assignLicense")
        body = {
            "addLicenses": [{"skuId": sku_id, "disabledPlans": []} for sku_id in sku_ids],
            "removeLicenses": [],
        }
        try:
            payload = await self._call("POST", url, customer_id, body)
        except PermissionDenied as exc:
            raise exc.needing(ROLES_TO_LICENSE_IN_GRAPH) from None
        if not isinstance(payload, dict):
            raise malformed_answer("POST", url, None, 200, "the assignLicense answer is not the user")

    async def user_licenses(self, customer_id: str, user_id: str) -> frozenset[str]:
        """The SKU ids (case-folded) the user holds (`licenseDetails`, one page as Graph answers it)."""
        url = self._user_url(customer_id, user_id, "licenseDetails")
        payload = await self._call("GET", url, customer_id)
        values = payload.get("value") if isinstance(payload, dict) else None
        if not isinstance(values, list):
            raise malformed_answer("GET", url, None, 200, "the user's licenseDetails have no `value` array")
        return frozenset(
            item["skuId"].casefold()
            for item in values
            if isinstance(item, dict) and isinstance(item.get("skuId"), str) and item["skuId"]
        )


def _subscribed_sku(item: Any) -> SubscribedSku | None:
    """One `subscribedSku`; None without a SKU id. Graph names no product: the part number stands for it."""
    if not isinstance(item, dict) or not isinstance(item.get("skuId"), str) or not item["skuId"]:
        return None
    sku_id = item["skuId"]
    part_number = item.get("skuPartNumber") if isinstance(item.get("skuPartNumber"), str) else ""
    status = item.get("capabilityStatus") if isinstance(item.get("capabilityStatus"), str) else ""
    return SubscribedSku(
        sku_id=sku_id,
        part_number=part_number or sku_id,
        product_name=part_number or sku_id,
        available_units=_available(item),
        capability_status=status or "Enabled",
        license_group_id="group1",  # Graph has none; any SKUs go in one request
    )


def _available(item: dict[str, Any]) -> int:
    found = item.get("prepaidUnits")
    prepaid: dict[str, Any] = found if isinstance(found, dict) else {}

    def count(value: Any) -> int:
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    usable = count(prepaid.get("enabled")) + count(prepaid.get("warning"))
    return max(0, usable - count(item.get("consumedUnits")))
