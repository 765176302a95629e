"""`--via graph`: users created through Microsoft Graph (`POST /users` in the customer's tenant) instead of Partner
Center, with the whole profile in the one request; the sending stage sees the same `UserService` either way.

Graph has no idempotency key (Partner Center's MS-RequestId): a request sent again after a lost answer could find
its own earlier success. So a retry of the same request (the sending stage keeps one request id per row across its
retries) looks the UPN up first and takes the user found as the one its lost answer created; a conflict answered
to a retry anyway (the UPN is taken) is settled by the same lookup the Partner Center path uses. A rerun finds an
earlier run's user in the dry run's listing, and the journal says whether it is ours.

What Graph requires and Partner Center does not: `accountEnabled` (true: the user can sign in, as with Partner
Center) and `mailNickname` (the sheet's, else the UPN's part before the @, as Entra does).
"""

from __future__ import annotations

from typing import Any

from yarl import URL

from .. import model
from .errors import MismatchedAnswer
from .graph import GRAPH_URL, GraphClient
from .http import Answer, clean_text, malformed_answer
from .partnercenter import CreatedUser, PartnerCenterClient


def graph_body(user: model.UserRow) -> dict[str, Any]:
    """The create body as Graph documents it: the row's fields by Graph's names and its profile; empty cells left
    out (Graph would store or refuse "")."""
    body: dict[str, Any] = {
        "accountEnabled": True,
        "displayName": user.displayName,
        "userPrincipalName": user.userPrincipalName,
        "passwordProfile": {
            "password": user.password,
            "forceChangePasswordNextSignIn": user.forceChangePassword,
        },
    }
    optional = {
        "givenName": user.firstName,
        "surname": user.lastName,
        "usageLocation": user.usageLocation,
        "onPremisesImmutableId": user.immutableId,
    }
    body.update({name: value for name, value in optional.items() if value})
    body.update(user.profile_body)
    body.setdefault("mailNickname", user.userPrincipalName.partition("@")[0])
    return body


class GraphUserService:
    """`sending.ports.UserService` through Graph. Partner Center, when there is one, still proves the customer
    relationship before the first row (its pre-flight); Graph's own pre-flight reads the tenant's domains."""

    def __init__(self, graph: GraphClient, partner_center: PartnerCenterClient | None = None) -> None:
        self._graph = graph
        self._partner_center = partner_center
        #: Request ids sent and not yet answered for sure: a second send of one is a retry (look up first).
        self._unsettled: set[str] = set()

    @property
    def restorer(self) -> PartnerCenterClient | None:
        """Who restores a soft-deleted user (`--restore-deleted`): Partner Center, whose list of the recycle bin
        found it. Without a partner no row is known to be deleted beforehand, so nothing is restored."""
        return self._partner_center

    async def preflight(self, customer_id: str) -> dict[str, Any]:
        if self._partner_center is not None:
            return await self._partner_center.preflight(customer_id)
        await self._graph.list_domains(customer_id)
        return {"id": customer_id}

    async def create_user(self, customer_id: str, user: model.UserRow, *, request_id: str) -> CreatedUser:
        if not user.password:
            raise ValueError(f"row {user.row}: create_user needs a password (generate one before sending)")
        if request_id in self._unsettled:
            found = await self._graph.get_user(customer_id, user.userPrincipalName)
            if found is not None:  # the lost answer's user: taken, never created twice
                self._unsettled.discard(request_id)
                return _created(found, user, "the user found by UPN")
        self._unsettled.add(request_id)
        usage: list[float | None] = [None]

        def note_usage(answer: Answer) -> None:
            usage[0] = answer.throttle_usage

        payload = await self._graph.post_user(
            customer_id, graph_body(user), user.password, on_answer=note_usage
        )
        self._unsettled.discard(request_id)
        created = _created(payload, user, "the create answer")
        del payload
        return CreatedUser(created.id, created.userPrincipalName, created.state, None, usage[0])

    async def find_user_by_upn(self, customer_id: str, upn: str) -> dict[str, Any] | None:
        return await self._graph.get_user(customer_id, upn)


def _created(payload: Any, user: model.UserRow, what: str) -> CreatedUser:
    if not isinstance(payload, dict) or not isinstance(payload.get("id"), str) or not payload["id"]:
        raise malformed_answer("POST", URL(GRAPH_URL) / "v1.0" / "users", None, 201, f"{what} has no user id")
    named = payload.get("userPrincipalName")
    if isinstance(named, str) and named.casefold() != user.userPrincipalName.casefold():
        raise MismatchedAnswer(
            method="POST",
            url="POST /users",
            request_id=None,
            sent_upn=user.userPrincipalName,
            named_upn=clean_text(named, (user.password,))[:200],
        )
    return CreatedUser(payload["id"], str(named or user.userPrincipalName), "active", None)
