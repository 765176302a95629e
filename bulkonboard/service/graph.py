"""Graph, in the customer's tenant (its domains, a user by UPN), and the facts validation needs from the service.

Why Graph at all: Partner Center lists a customer's users but not its domains with their kind (managed or
federated), which validation needs to judge a UPN; Graph also finds a user by UPN in one call. `ServiceFacts`
runs before any row is sent, so its request errors become command-stopping errors (exit 3, `command_error`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from ..errors import BulkOnboardError
from ..progress import NullProgress, Progress
from ..sheets import facts
from .errors import MismatchedAnswer, Refused, RequestError, command_error
from .graph_licenses import GraphLicenseCalls
from .http import (
    Answer,
    Audience,
    HiddenHeaders,
    SecretBody,
    TokenProvider,
    clean_text,
    display_url,
    endless_paging,
    malformed_answer,
    past_paging_bound,
    path_part,
    same_origin,
    send_request,
    token_secrets,
)

if TYPE_CHECKING:  # partnercenter.py re-exports this module's names, so it imports this module
    from .partnercenter import PartnerCenterClient

GRAPH_URL = "https://graph.microsoft.com"


class GraphClient(GraphLicenseCalls):
    """Graph in the customer's tenant: its domains, its users, and (GraphLicenseCalls) its licenses.

    `graph_url` may hold `{tenant}`: the sandbox serves tenant T's Graph under URL/graph/T, while the real
    Graph tells tenants apart by the token (audience GRAPH, for tenant T).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        tokens: TokenProvider,
        *,
        graph_url: str = GRAPH_URL,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._session = session
        self._tokens = tokens
        self.graph_url = graph_url.rstrip("/")
        self._clock = clock

    def __repr__(self) -> str:
        return f"GraphClient({self.graph_url!r})"

    def _root(self, tenant: str) -> URL:
        return URL(self.graph_url.replace("{tenant}", quote(tenant, safe="")) + "/v1.0")

    async def _call(
        self,
        method: str,
        url: URL,
        tenant: str,
        body: Any = None,
        *,
        secrets: tuple[str, ...] = (),
        on_answer: Callable[[Answer], None] | None = None,
    ) -> Any:
        request_id = str(uuid.uuid4())
        token = await self._tokens.token(Audience.GRAPH, tenant)
        headers = HiddenHeaders(
            {
                "Authorization": f"Bearer {token}",
                "Accept": "application/json",
                "client-request-id": request_id,  # Graph's name for the caller's request id
            }
        )
        encoded = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            encoded = SecretBody(json.dumps(body, ensure_ascii=False).encode("utf-8"))
        return await send_request(
            self._session,
            method,
            url,
            headers=headers,
            request_id=request_id,
            secrets=(*token_secrets(token), *secrets),
            clock=self._clock,
            body=encoded,
            on_answer=on_answer,
        )

    def _user_url(self, tenant: str, user: str, *more: str) -> URL:
        return URL("/".join((str(self._root(tenant)), "users", path_part(user), *more)), encoded=True)

    async def post_user(
        self,
        tenant: str,
        body: dict[str, Any],
        password: str,
        *,
        on_answer: Callable[[Answer], None] | None = None,
    ) -> Any:
        """POST /users (201 with the user). The password is blotted out of anything an error answer says."""
        return await self._call(
            "POST", self._root(tenant) / "users", tenant, body, secrets=(password,), on_answer=on_answer
        )

    async def update_user(
        self,
        tenant: str,
        user_id: str,
        changes: dict[str, Any],
        *,
        on_answer: Callable[[Answer], None] | None = None,
    ) -> None:
        """PATCH the user's properties (204). Setting a value twice is harmless, so a retry needs no lookup."""
        await self._call("PATCH", self._user_url(tenant, user_id), tenant, changes, on_answer=on_answer)

    async def user_properties(
        self, tenant: str, user_id: str, names: tuple[str, ...]
    ) -> dict[str, Any] | None:
        """The user's `names` as Graph holds them ($select), or None when the user is not there."""
        url = self._user_url(tenant, user_id).with_query({"$select": ",".join(names)})
        try:
            payload = await self._call("GET", url, tenant)
        except Refused as exc:
            if exc.status == 404:
                return None
            raise
        if not isinstance(payload, dict):
            raise malformed_answer("GET", url, None, 200, "the user answer is not a JSON object")
        return payload

    async def set_manager(
        self,
        tenant: str,
        user_id: str,
        manager_id: str,
        *,
        on_answer: Callable[[Answer], None] | None = None,
    ) -> None:
        """PUT the manager reference (204); Graph's documented body names the manager by URL."""
        reference = {"@odata.id": f"{GRAPH_URL}/v1.0/users/{path_part(manager_id)}"}
        url = self._user_url(tenant, user_id, "manager", "$ref")
        await self._call("PUT", url, tenant, reference, on_answer=on_answer)

    async def manager_id(self, tenant: str, user_id: str) -> str | None:
        """The id of the user's manager, or None when the user has none (Graph answers 404)."""
        url = self._user_url(tenant, user_id, "manager").with_query({"$select": "id"})
        try:
            payload = await self._call("GET", url, tenant)
        except Refused as exc:
            if exc.status == 404:
                return None
            raise
        found = payload.get("id") if isinstance(payload, dict) else None
        if not isinstance(found, str) or not found:
            raise malformed_answer("GET", url, None, 200, "the manager answer has no id")
        return found

    async def list_domains(self, tenant: str) -> list[facts.Domain]:
        """The tenant's domains; a domain Graph marks unverified is left out, since no user can be created in it."""
        domains: list[facts.Domain] = []
        async for entry in self._paged(tenant, self._root(tenant) / "domains", "domain list"):
            if entry.get("isVerified") is False:
                continue
            name, kind = entry.get("id"), entry.get("authenticationType")
            if isinstance(name, str) and name and isinstance(kind, str):
                domains.append(facts.Domain(name=name, authentication_type=_domain_kind(kind)))
        return domains

    async def list_users(self, tenant: str) -> list[dict[str, Any]]:
        """The tenant's users (id and UPN), every page (`@odata.nextLink`): the existing users validation needs
        when there is no Partner Center to list them (an administrator of their own tenant)."""
        url = (self._root(tenant) / "users").with_query({"$select": "id,userPrincipalName", "$top": "999"})
        return [user async for user in self._paged(tenant, url, "user list")]

    async def _paged(self, tenant: str, url: URL, what: str) -> AsyncIterator[dict[str, Any]]:
        """Each object of a Graph collection, following `@odata.nextLink` on Graph's own origin; a next link that
        repeats or pages past the bound is an answer no run can trust (EndlessPaging)."""
        root, first = self._root(tenant), url
        seen: set[str] = set()
        count = 0
        while True:
            page = await self._call("GET", url, tenant)
            values = page.get("value") if isinstance(page, dict) else None
            if not isinstance(values, list):
                raise malformed_answer("GET", url, None, 200, f"the {what} has no `value` array")
            for entry in values:
                if isinstance(entry, dict):
                    count += 1
                    yield entry
            following = page.get("@odata.nextLink")
            if not isinstance(following, str) or not following:
                return
            next_url = URL(following)
            if not same_origin(next_url, root):
                raise malformed_answer("GET", first, None, 200, f"the {what}'s next link is not usable")
            if following in seen:
                raise endless_paging(first, None, len(seen) + 1, count, "its next link repeats an earlier page")
            if past_paging_bound(len(seen) + 1):
                raise endless_paging(first, None, len(seen) + 1, count, "it passed the bound on paging")
            seen.add(following)
            url = next_url

    async def get_user(self, tenant: str, upn: str) -> dict[str, Any] | None:
        url = URL(f"{self._root(tenant)}/users/{path_part(upn)}")
        try:
            payload = await self._call("GET", url, tenant)
        except Refused as exc:
            if exc.status == 404:
                return None
            raise
        if not isinstance(payload, dict):
            raise malformed_answer("GET", url, None, 200, "the user answer is not a JSON object")
        named = payload.get("userPrincipalName")
        if isinstance(named, str) and named and named.casefold() != upn.casefold():
            # Someone else's id must never settle a row: a lookup that answers for another user is no answer.
            raise MismatchedAnswer(
                method="GET",
                url=display_url(url),
                request_id=None,
                sent_upn=upn,
                named_upn=clean_text(named, ())[:200],
                answer="user lookup",
            )
        return payload


def _domain_kind(kind: str) -> str:
    """Graph spells them Managed/Federated; the facts compare case-insensitively, but show Graph's spelling."""
    for known in (facts.MANAGED, facts.FEDERATED):
        if kind.casefold() == known.casefold():
            return known
    return kind


# ---------------------------------------------------------------------------------------------------------------
# facts for validation, from the service


class ServiceFacts:
    """`facts.FactsSource` backed by the service: domains from Graph (or a `--domains` file), users from Partner Center
    (from Graph's list when there is no partner: app-only sign-in), SKUs from either (`skus_from_graph`: --via graph).

    Each customer is asked once per run (the list of users is paged and may be long); concurrent askers for the
    same customer wait for the first. A failure is not remembered, so a later call asks again.

    Only active users count as existing. Soft-deleted users (state `inactive`, kept 30 days in the recycle bin)
    drop out of Partner Center's plain list and are asked for apart, with the `UserState` filter: such a user
    still holds its UPN, so a row with it would be refused (`user.deleted`, or a restore with
    `--restore-deleted`). A user without a `state` is taken as active; an `inactive` one that a plain list
    shows anyway is counted as deleted.
    """

    def __init__(
        self,
        partner_center: PartnerCenterClient | None,
        graph: GraphClient | None,
        *,
        domains_file: facts.DomainsFile | None = None,
        skus_from_graph: bool = False,
    ) -> None:
        if graph is None and (domains_file is None or partner_center is None):
            raise ValueError("ServiceFacts needs Graph, or Partner Center and a domains file")
        self._partner_center = partner_center
        self._graph = graph
        self._domains_file = domains_file
        #: `--via graph`: the SKUs the licenses are assigned from are Graph's (`subscribedSkus`), read once here
        self._skus_from_graph = graph is not None and (skus_from_graph or partner_center is None)
        self._known: dict[str, facts.CustomerFacts] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._progress: Progress = NullProgress()

    def show_progress(self, progress: Progress) -> None:
        """Count the users as they are listed: 4,000 users take seconds, which a blank screen makes look hung."""
        self._progress = progress

    async def customer_facts(self, customer_id: str) -> facts.CustomerFacts:
        key = customer_id.casefold()
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if key not in self._known:
                self._known[key] = await self._ask(customer_id)
            return self._known[key]

    async def _ask(self, customer_id: str) -> facts.CustomerFacts:
        """Partner Center first: it knows whether the partner has a relationship with the customer (403 20002,
        one line saying so), where Graph would only say "insufficient privileges"."""
        deleted: dict[str, facts.DeletedUser] = {}
        self._progress.start(None, "listing users")  # a sign of life: thousands of users take seconds
        try:
            if self._partner_center is None:  # an administrator of their own tenant: Graph alone
                existing = await self._graph_users(customer_id)
            else:
                existing = await self._partner_center_users(self._partner_center, customer_id, deleted)
        finally:
            self._progress.stop()
        domains = await self._domains(customer_id)
        skus, unreadable = await self._skus(customer_id)
        return facts.CustomerFacts(
            customer_id=customer_id,
            domains=domains,
            existing_users=existing,
            deleted_users=deleted,
            subscribed_skus=skus,
            licenses_unreadable=unreadable,
        )

    async def _skus(
        self, customer_id: str
    ) -> tuple[tuple[facts.SubscribedSku, ...] | None, BulkOnboardError | None]:
        """Partner Center's SKUs; with `--via graph` Graph's (the API that assigns them: its units, its statuses),
        named by Partner Center's product names when Partner Center lists them too (Graph names no product, and a
        cell may say "Office 365 E3"). Partner Center's list is then a courtesy: unreadable, the names are the
        part numbers."""
        if not self._skus_from_graph:
            assert self._partner_center is not None
            return await self._partner_center.subscribed_skus_or_refusal(customer_id)
        assert self._graph is not None
        skus, unreadable = await self._graph.subscribed_skus_or_refusal(customer_id)
        if skus is None:
            return skus, unreadable
        named = None
        if self._partner_center is not None:
            named, _ = await self._partner_center.subscribed_skus_or_refusal(customer_id)
        names = {sku.sku_id.casefold(): sku.product_name for sku in named or ()}
        return tuple(
            dataclasses.replace(sku, product_name=names.get(sku.sku_id.casefold(), sku.product_name))
            for sku in skus
        ), None

    async def _partner_center_users(
        self,
        partner_center: PartnerCenterClient, customer_id: str, deleted: dict[str, facts.DeletedUser]
    ) -> dict[str, str]:
        """Active users by case-folded UPN; the soft-deleted ones filed in `deleted`."""
        existing: dict[str, str] = {}
        try:
            for listing_deleted in (False, True):
                async with aclosing(partner_center.iter_users(customer_id, deleted=listing_deleted)) as users:
                    async for user in users:
                        _sort_user(user, existing, deleted)
                        self._progress.advance(1)
        except RequestError as exc:
            raise command_error(exc, service="Partner Center", customer_id=customer_id) from None
        return existing

    async def _graph_users(self, customer_id: str) -> dict[str, str]:
        """Active users by case-folded UPN, from Graph's list. Graph's plain list holds no soft-deleted user (they
        sit under `directory/deletedItems`, not read here): without a partner no row is judged `user.deleted` in
        advance, and Graph's create refuses such a UPN as taken."""
        assert self._graph is not None
        try:
            listed = await self._graph.list_users(customer_id)
        except RequestError as exc:
            raise command_error(exc, service="Graph", customer_id=customer_id) from None
        self._progress.advance(len(listed))
        existing: dict[str, str] = {}
        for user in listed:
            upn, user_id = user.get("userPrincipalName"), user.get("id")
            if isinstance(upn, str) and upn and isinstance(user_id, str) and user_id:
                existing.setdefault(upn.casefold(), user_id)
        return existing

    async def _domains(self, customer_id: str) -> dict[str, facts.Domain]:
        if self._domains_file is not None:
            return self._domains_file.domains
        assert self._graph is not None
        try:
            listed = await self._graph.list_domains(customer_id)
        except RequestError as exc:
            raise command_error(exc, service="Graph", customer_id=customer_id) from None
        return {domain.name.casefold(): domain for domain in listed}


def _sort_user(user: dict[str, Any], existing: dict[str, str], deleted: dict[str, facts.DeletedUser]) -> None:
    """File a listed user as existing (active) or deleted (`inactive`), by its case-folded UPN."""
    upn, user_id, state = user.get("userPrincipalName"), user.get("id"), user.get("state")
    if not isinstance(upn, str) or not upn or not isinstance(user_id, str):
        return
    if not isinstance(state, str) or not state or state.casefold() == "active":
        existing.setdefault(upn.casefold(), user_id)
    elif state.casefold() == "inactive":
        when = user.get("softDeletionTime")
        deleted.setdefault(
            upn.casefold(),
            facts.DeletedUser(user_id, upn, when if isinstance(when, str) and when.strip() else None),
        )
