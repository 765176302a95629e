"""The sandbox's state: customers, their users, the service's refusals, and the MS-RequestId replay cache.

Users are records in the API's own shape (what `GET .../users/{id}` answers), so answering is a copy, not a
translation. A record never holds a password: the password is checked, echoed once in the create answer (as the
documented answer does) and forgotten. Records are replaced, never changed in place, so a snapshot for the state
file can be serialised in a worker thread while the server goes on changing the store.
"""

from __future__ import annotations

import copy
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from . import rules
from .codes import ApiError, duplicate_upn_error, invalid_input, user_not_found_error
from .data import CustomerData, DomainData, SandboxData, UserData
from .data_directory import SkuData
from .newuser import (
    LENGTH_LIMITS,
    USER_FIELDS,
    NewUser,
    case_insensitive,
    check_new_user,
    usage_location_error,
)
from .permissions import Grant

Record = dict[str, Any]

ACTIVE = "active"
INACTIVE = "inactive"

#: Fields a PATCH may change besides State (Partner Center's "update user accounts").
PATCHABLE_FIELDS = ("usageLocation", "firstName", "lastName", "displayName")

#: What a record holds beyond Partner Center's CustomerUser, for Graph and licensing: the SKU ids assigned
#: (`licenses`), Graph's profile fields (`profile`) and the manager's id (`managerId`). Partner Center's user
#: answers leave them out; the state file keeps them, so they survive a restart like the rest of the record.
LICENSES = "licenses"
PROFILE = "profile"
MANAGER_ID = "managerId"
DIRECTORY_KEYS = (LICENSES, PROFILE, MANAGER_ID)


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """The final answer an MS-RequestId got, kept to answer a replay of the same request (without a password)."""

    status: int
    body: Any


class CustomerState:
    """One customer's domains and users, and the partner's GDAP standing in it. Users are never purged (DELETE is
    a soft delete; the 30 days after which Entra purges them are not emulated), so a user's position in creation
    order is stable, which is what the continuation tokens of paging point at."""

    def __init__(self, data: CustomerData) -> None:
        self.id = data.id
        self.name = data.name
        self.grant = Grant(data.id, data.relationship, data.gdap_roles)
        self.domains: dict[str, DomainData] = {d.name.casefold(): d for d in data.domains}
        self.initial_domain = data.initial_domain
        self.skus: dict[str, SkuData] = {sku.sku_id.lower(): sku for sku in data.skus}
        self._consumed: Counter[str] = Counter()  # lower-cased SKU id -> units active users hold
        self._order: list[str] = []  # user ids (lower-cased) in creation order
        self._by_id: dict[str, Record] = {}
        # Case-folded UPN -> user id (lower-cased): the active holder, and the latest soft-deleted one.
        self._active_by_upn: dict[str, str] = {}
        self._deleted_by_upn: dict[str, str] = {}
        for user in data.users:
            self.put(_seed_record(user, self.domains))
        for user in data.users:  # managers by UPN, once every seeded user has its id
            if user.directory.manager is not None:
                manager = self.holder_of(user.directory.manager)
                assert manager is not None  # the data file checked it
                record = self.get(user.id)
                assert record is not None
                self.put({**record, MANAGER_ID: manager["id"]})

    # -- reading --------------------------------------------------------------------------------------------
    def get(self, user_id: str) -> Record | None:
        return self._by_id.get(user_id.lower())

    def active_by_upn(self, upn: str) -> Record | None:
        user_id = self._active_by_upn.get(upn.casefold())
        return self._by_id[user_id] if user_id is not None else None

    def holder_of(self, upn: str) -> Record | None:
        """Whoever holds the UPN: the active user, else a soft-deleted one (it keeps its UPN in the recycle bin)."""
        key = upn.casefold()
        user_id = self._active_by_upn.get(key) or self._deleted_by_upn.get(key)
        return self._by_id[user_id] if user_id is not None else None

    def records(self) -> Iterator[Record]:
        return (self._by_id[user_id] for user_id in self._order)

    def page(self, position: int, size: int, state: str = ACTIVE) -> tuple[list[Record], int | None]:
        """Up to `size` users in `state` from `position` on, and where the next page starts (None: the last)."""
        items: list[Record] = []
        index = position
        while index < len(self._order):
            record = self._by_id[self._order[index]]
            if record["state"] == state:
                if len(items) == size:
                    return items, index
                items.append(record)
            index += 1
        return items, None

    def consumed_units(self, sku_id: str) -> int:
        """Units of the SKU that active users hold (a soft-deleted user's licenses are freed, as in Microsoft 365;
        restoring the user takes them again, even past totalUnits: the sandbox's reading)."""
        return self._consumed[sku_id.lower()]

    def sku(self, sku_id: str) -> SkuData | None:
        return self.skus.get(sku_id.lower())

    # -- writing --------------------------------------------------------------------------------------------
    def put(self, record: Record) -> None:
        """Add or replace a record, keeping the UPN indexes and the units held in step."""
        key = record["id"].lower()
        old = self._by_id.get(key)
        if old is None:
            self._order.append(key)
        self._by_id[key] = record
        if old is not None:
            self._unindex(old, key)
            self._count_units(old, -1)
        self._count_units(record, +1)
        upn = record["userPrincipalName"].casefold()
        if record["state"] == ACTIVE:
            self._active_by_upn[upn] = key
        else:
            self._deleted_by_upn[upn] = key

    def _unindex(self, old: Record, key: str) -> None:
        upn = old["userPrincipalName"].casefold()
        if self._active_by_upn.get(upn) == key:
            del self._active_by_upn[upn]
        if self._deleted_by_upn.get(upn) == key:
            del self._deleted_by_upn[upn]
            # Another soft-deleted user with this UPN (only a state file from before UPNs were held can have
            # one) takes its place: a rare walk, on a restore.
            others = [i for i in self._order if i != key and self._is_deleted_holder(i, upn)]
            if others:
                self._deleted_by_upn[upn] = others[-1]

    def _count_units(self, record: Record, sign: int) -> None:
        if record["state"] == ACTIVE:
            for sku_id in record.get(LICENSES, ()):
                self._consumed[sku_id.lower()] += sign

    def _is_deleted_holder(self, user_id: str, upn: str) -> bool:
        record = self._by_id[user_id]
        return record["state"] != ACTIVE and record["userPrincipalName"].casefold() == upn

    def replace_all(self, records: list[Record]) -> None:
        self._order.clear()
        self._by_id.clear()
        self._active_by_upn.clear()
        self._deleted_by_upn.clear()
        self._consumed.clear()
        for record in records:
            self.put(record)


class ReplayCache:
    """Final answers by (method, path, MS-RequestId). Bounded, oldest first out, like any idempotency store.

    A replay gets the very answer the first request got (the contract: "that same answer again"), password echo
    included, so the cache lives in memory only: it is never written to --state."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._answers: OrderedDict[tuple[str, str, str], CachedAnswer] = OrderedDict()

    def get(self, key: tuple[str, str, str]) -> CachedAnswer | None:
        return self._answers.get(key)

    def put(self, key: tuple[str, str, str], status: int, body: Any) -> None:
        self._answers[key] = CachedAnswer(status=status, body=copy.deepcopy(body))
        self._answers.move_to_end(key)
        while len(self._answers) > self.capacity:
            self._answers.popitem(last=False)

    def __len__(self) -> int:
        return len(self._answers)


class Store:
    """All customers; the rules a create, delete or restore must pass; what tests inspect (`users`, `user_by_upn`)."""

    def __init__(self, data: SandboxData, on_change: Callable[[str, Record], None] | None = None) -> None:
        self._customers: dict[str, CustomerState] = {c.id.lower(): CustomerState(c) for c in data.customers}
        self.replays = ReplayCache()
        self.on_change = on_change

    # -- for tests and the routes ---------------------------------------------------------------------------
    def customer(self, customer_id: str) -> CustomerState | None:
        return self._customers.get(customer_id.lower())

    def customers(self) -> list[CustomerState]:
        return list(self._customers.values())

    def users(self, customer_id: str) -> list[dict[str, Any]]:
        """Every user of a customer (soft-deleted ones too, with `state` inactive), as copies; never a password.
        Records carry what Graph and licensing know too (`licenses`, `profile`, `managerId`) when set."""
        customer = self._require(customer_id)
        return [copy.deepcopy(record) for record in customer.records()]

    def user_by_upn(self, customer_id: str, upn: str) -> dict[str, Any] | None:
        """The active user with this UPN (case-insensitive), else the latest soft-deleted one, else None."""
        customer = self._require(customer_id)
        record = customer.active_by_upn(upn)
        if record is None:
            key = upn.casefold()
            matches = [r for r in customer.records() if r["userPrincipalName"].casefold() == key]
            record = matches[-1] if matches else None
        return copy.deepcopy(record) if record is not None else None

    def _require(self, customer_id: str) -> CustomerState:
        customer = self.customer(customer_id)
        if customer is None:
            raise KeyError(f"no customer {customer_id} in the sandbox")
        return customer

    # -- creating -------------------------------------------------------------------------------------------
    def check_new_user(self, customer: CustomerState, body: Any) -> NewUser | ApiError:
        """The service's refusals of a create request (see `newuser`), or the user to create."""
        return check_new_user(customer, body)

    def create(
        self, customer: CustomerState, new_user: NewUser, user_id: str, directory: Record | None = None
    ) -> Record:
        """Add the user; returns the stored record (no password). The caller builds the answer with `answer()`.
        `directory`: what the record holds beyond a CustomerUser (`DIRECTORY_KEYS`), for a user Graph creates."""
        record: Record = {"id": user_id}
        for name in USER_FIELDS:
            if name in new_user.fields:
                record[name] = new_user.fields[name]
        if new_user.force_change_password is not None:
            record["passwordProfile"] = {"forceChangePassword": new_user.force_change_password}
        record.update(_system_fields(new_user.domain))
        record.update(directory or {})
        customer.put(record)
        self._changed(customer, record)
        return record

    def replace(self, customer: CustomerState, record: Record) -> None:
        """A changed record (licenses, profile, manager) takes the place of the one with its id, and is logged."""
        customer.put(record)
        self._changed(customer, record)

    # -- deleting and restoring -----------------------------------------------------------------------------
    def soft_delete(self, customer: CustomerState, user_id: str) -> ApiError | None:
        record = customer.get(user_id)
        # Sandbox's own: deleting a user that is already deleted answers "not found", as Entra's /users does.
        if record is None or record["state"] != ACTIVE:
            return user_not_found_error(user_id)
        deleted = {**record, "state": INACTIVE, "softDeletionTime": _now()}
        customer.put(deleted)
        self._changed(customer, deleted)
        return None

    def patch(self, customer: CustomerState, user_id: str, body: Any) -> Record | ApiError:
        """Restore (`{"State": "active"}`) and/or update the patchable fields."""
        record = customer.get(user_id)
        if record is None:
            return user_not_found_error(user_id)
        if not isinstance(body, dict):
            return invalid_input("The request body must be a JSON object.")
        members = case_insensitive(body)
        updated = dict(record)
        state = members.get("state")
        if state is not None:
            if not isinstance(state, str) or state.casefold() != ACTIVE:
                # Sandbox's own: PATCH only restores; deleting is DELETE.
                return invalid_input(
                    "State can only be set to active (to restore a user); use DELETE to delete.", "State"
                )
            if record["state"] != ACTIVE:
                if customer.active_by_upn(record["userPrincipalName"]) is not None:
                    return duplicate_upn_error()  # Entra refuses a restore whose UPN a newer user holds
                updated["state"] = ACTIVE
                updated["softDeletionTime"] = None
        for name in PATCHABLE_FIELDS:
            value = members.get(name.casefold())
            if value is None:
                continue
            if not isinstance(value, str) or (name in ("displayName", "usageLocation") and not value.strip()):
                return invalid_input(f"The field {name} must be a non-empty string.", name)
            limit = LENGTH_LIMITS.get(name)
            if limit is not None and len(value) > limit:
                return invalid_input(f"The field {name} must be at most {limit} characters long.", name)
            if name == "usageLocation" and not rules.usage_location_ok(value):
                return usage_location_error(value)
            updated[name] = value
        if updated != record:
            customer.put(updated)
            self._changed(customer, updated)
        return updated

    # -- the state file -------------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, list[Record]]:
        """Customer id -> records in creation order. Cheap (list copies): records are never changed in place."""
        return {c.id: list(c.records()) for c in self._customers.values()}

    def load_snapshot(self, users_by_customer: Mapping[str, list[Record]]) -> None:
        """Saved users win over the data file's; a user the data file gained since (a new id whose UPN nobody
        active holds) is added after them. Customers no longer in the data file are left out."""
        for customer_id, records in users_by_customer.items():
            customer = self.customer(customer_id)
            if customer is None:
                continue
            seeded = list(customer.records())
            customer.replace_all([without_password(r) for r in records])
            for record in seeded:
                if (
                    customer.get(record["id"]) is None
                    and customer.active_by_upn(record["userPrincipalName"]) is None
                ):
                    customer.put(record)

    def _changed(self, customer: CustomerState, record: Record) -> None:
        """Tell the state log (`--state`): it appends the record and the answer waits until it is on disk."""
        if self.on_change is not None:
            self.on_change(customer.id, record)


def answer(record: Record, new_user: NewUser) -> Record:
    """The create answer as documented: the stored user plus the password echoed. Sent once, never stored."""
    profile = dict(record.get("passwordProfile", {}))
    profile["password"] = new_user.password
    return {**partner_center_user(record), "passwordProfile": profile}


def partner_center_user(record: Record) -> Record:
    """The record as Partner Center's CustomerUser: without what only Graph and licensing know."""
    return {key: value for key, value in record.items() if key not in DIRECTORY_KEYS}


def public(record: Record, customer_id: str) -> Record:
    """A user as `GET .../users/{id}` answers: the record and its `links.self`. The docs are silent on whether
    this answer carries `passwordProfile`; the sandbox keeps `forceChangePassword` there (never a password)."""
    return {**copy.deepcopy(partner_center_user(record)), "links": _self_link(customer_id, record["id"])}


def listed(record: Record, customer_id: str) -> Record:
    """A user as an item of `GET .../users`: documented with `links.self` and without `passwordProfile`."""
    item = {
        key: copy.deepcopy(value)
        for key, value in record.items()
        if key != "passwordProfile" and key not in DIRECTORY_KEYS
    }
    item["links"] = _self_link(customer_id, record["id"])
    return item


def _self_link(customer_id: str, user_id: str) -> dict[str, Any]:
    # Partner Center's links are relative to {base}/v1, like `links.next` of a list.
    return {"self": {"uri": f"/customers/{customer_id}/users/{user_id}", "method": "GET", "headers": []}}


def without_password(value: Any) -> Any:
    """A deep copy with every `passwordProfile.password` removed (for the replay cache and the state file)."""
    if isinstance(value, dict):
        cleaned = {}
        for key, item in value.items():
            if isinstance(item, dict) and key.casefold() == "passwordprofile":
                item = {k: v for k, v in item.items() if k.casefold() != "password"}
            cleaned[key] = without_password(item)
        return cleaned
    if isinstance(value, list):
        return [without_password(item) for item in value]
    return value


def _system_fields(domain: DomainData | None) -> Record:
    return {
        "lastDirectorySyncTime": None,
        # The documented create answer says "none", even for a user on *.onmicrosoft.com; Partner Center never
        # creates users of a federated domain, and for one seeded by the data file the docs are silent (the
        # sandbox says "federated", the value the field documents).
        "userDomainType": "federated" if domain is not None and domain.federated else "none",
        "state": ACTIVE,
        "softDeletionTime": None,
        "attributes": {"objectType": "CustomerUser"},
    }


def _seed_record(user: UserData, domains: Mapping[str, DomainData]) -> Record:
    record: Record = {"id": user.id}
    for name in USER_FIELDS:
        value = getattr(user, name)
        if value is not None:
            record[name] = value
    record.update(_system_fields(domains.get(user.userPrincipalName.rpartition("@")[2].casefold())))
    if user.directory.licenses:
        record[LICENSES] = list(user.directory.licenses)
    if user.directory.profile:
        record[PROFILE] = dict(user.directory.profile)
    if user.state == INACTIVE:
        # Sandbox's own: a file that leaves the time out gets the time the sandbox read it.
        record.update(state=INACTIVE, softDeletionTime=user.softDeletionTime or _now())
    return record


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
