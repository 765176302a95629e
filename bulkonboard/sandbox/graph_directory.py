"""A user as Graph shows it and as Graph's bodies describe it: the translation between Graph's names and the one
record both APIs share (Partner Center's CustomerUser fields, plus `profile`, `licenses` and `managerId`).

Graph's names: givenName/surname are the record's firstName/lastName, onPremisesImmutableId its immutableId,
passwordProfile.forceChangePasswordNextSignIn its passwordProfile.forceChangePassword. The profile fields keep
Graph's names (`profile.PROFILE_FIELDS`).
"""

from __future__ import annotations

from typing import Any

from . import rules
from .profile import ACCOUNT_ENABLED, PROFILE_FIELDS, mail_nickname, profile_problem
from .store import MANAGER_ID, PROFILE, Record

GRAPH_NAMES = {"givenName": "firstName", "surname": "lastName", "onPremisesImmutableId": "immutableId"}
#: What `GET /users/{id}` answers without `$select`: Graph's documented default set, plus usageLocation (the
#: sandbox answered it before $select existed, and callers may rely on it).
DEFAULT_SELECT = (
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
    "usageLocation",
)
#: The members a `POST /users` or `PATCH /users/{id}` body may carry (besides `@odata.*` annotations).
CREATE_MEMBERS = (
    ACCOUNT_ENABLED,
    "displayName",
    "userPrincipalName",
    "passwordProfile",
    "usageLocation",
    *GRAPH_NAMES,
    *PROFILE_FIELDS,
)
#: A PATCH may not rename a user or set its password (the sandbox's own limit: bulkonboard never does either).
PATCH_MEMBERS = tuple(name for name in CREATE_MEMBERS if name not in ("userPrincipalName", "passwordProfile"))
CONTEXT_URL = "https://graph.microsoft.com/v1.0/$metadata#users/$entity"


def graph_user(record: Record) -> dict[str, Any]:
    """Every property the sandbox knows of the user, by Graph's names; what is not set is null."""
    profile = record.get(PROFILE, {})
    user: dict[str, Any] = {
        "id": record["id"],
        "accountEnabled": profile.get(ACCOUNT_ENABLED, True),
        "displayName": record.get("displayName") or None,
        "givenName": record.get("firstName") or None,
        "surname": record.get("lastName") or None,
        "userPrincipalName": record["userPrincipalName"],
        "usageLocation": record.get("usageLocation") or None,
        "mail": None,
        "onPremisesImmutableId": record.get("immutableId") or None,
    }
    for name in PROFILE_FIELDS:
        user[name] = profile.get(name)
    user["businessPhones"] = profile.get("businessPhones") or []
    user["mailNickname"] = profile.get("mailNickname") or mail_nickname(record["userPrincipalName"])
    return user


def selected(record: Record, select: str | None) -> dict[str, Any] | str:
    """The user with the `$select`ed properties (Graph's default set without one), or the unknown name."""
    full = graph_user(record)
    if select is None:
        names: list[str] = list(DEFAULT_SELECT)
    else:
        by_key = {name.casefold(): name for name in full}
        names = []
        for wanted in (part.strip() for part in select.split(",") if part.strip()):
            name = by_key.get(wanted.casefold())
            if name is None:
                return wanted
            names.append(name)
    return {"@odata.context": CONTEXT_URL, **{name: full[name] for name in names}}


def partner_center_body(body: dict[str, Any]) -> dict[str, Any]:
    """A Graph create body in Partner Center's shape, so `newuser.check_new_user` applies the same rules."""
    pc: dict[str, Any] = {}
    for name in ("userPrincipalName", "displayName", "usageLocation"):
        if name in body:
            pc[name] = body[name]
    for graph_name, pc_name in GRAPH_NAMES.items():
        if body.get(graph_name) is not None:
            pc[pc_name] = body[graph_name]
    password_profile = body.get("passwordProfile")
    if isinstance(password_profile, dict):
        pc["passwordProfile"] = {
            "password": password_profile.get("password"),
            "forceChangePassword": password_profile.get("forceChangePasswordNextSignIn"),
        }
    return pc


def in_graph_names(message: str) -> str:
    """A refusal written for Partner Center's field names, told in Graph's."""
    for graph_name, pc_name in GRAPH_NAMES.items():
        message = message.replace(pc_name, graph_name)
    return message.replace("forceChangePassword", "forceChangePasswordNextSignIn")


def member_problem(name: str, value: Any) -> str | None:
    """Why Graph would refuse this member of a create or update body (its shape; the directory is checked later)."""
    if name == ACCOUNT_ENABLED:
        return None if isinstance(value, bool) else "it must be true or false"
    if name in PROFILE_FIELDS:
        return profile_problem(name, value)
    if name == "usageLocation":
        ok = value is None or (isinstance(value, str) and rules.usage_location_ok(value))
        return None if ok else "it is not a country or region code the service supports"
    if name == "displayName":
        ok = isinstance(value, str) and bool(value.strip()) and len(value) <= rules.DISPLAY_NAME_MAX
        return None if ok else f"it must be 1 to {rules.DISPLAY_NAME_MAX} characters"
    if name in ("givenName", "surname"):
        ok = value is None or (isinstance(value, str) and len(value) <= rules.NAME_MAX)
        return None if ok else f"it must be at most {rules.NAME_MAX} characters"
    if name == "onPremisesImmutableId":
        ok = value is None or (isinstance(value, str) and rules.immutable_id_ok(value))
        return None if ok else "it may not contain $ or _"
    return None


def patched(record: Record, changes: dict[str, Any]) -> Record:
    """The record after a Graph PATCH (members already checked); null clears a field."""
    updated = dict(record)
    profile = dict(record.get(PROFILE, {}))
    for name, value in changes.items():
        if name in PROFILE_FIELDS or name == ACCOUNT_ENABLED:
            if value is None:
                profile.pop(name, None)
            else:
                profile[name] = value
            continue
        key = GRAPH_NAMES.get(name, name)
        if value is None:
            updated.pop(key, None)
        else:
            updated[key] = value
    if profile:
        updated[PROFILE] = profile
    else:
        updated.pop(PROFILE, None)
    return updated


def with_manager(record: Record, manager_id: str) -> Record:
    return {**record, MANAGER_ID: manager_id}
