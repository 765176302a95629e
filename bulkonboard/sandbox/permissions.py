"""GDAP: which roles the partner holds in a customer's tenant, and what each call needs.

A partner reaches a customer's directory only through a GDAP relationship, and within it only as far as the
roles granted. The data file says both per customer (`gdapRoles`, `relationship`); leaving them out grants every
role, so a file written before these keys behaves as before.

What each call needs, from `shared/reference` ("More facts", Permissions):
- creating users: User Administrator or Directory Writers;
- listing and reading users: Directory Readers, Global Reader or User Administrator (so a listing that works
  proves nothing about writing: the reason a reader-only partner must be tested).
The rest is the sandbox's reading of Entra's built-in roles, which the reference does not spell out:
- Directory Writers and Global Administrator read users too (their permissions include reading);
- updating a user's names or usage location: as creating;
- deleting and restoring a user: User Administrator only (Directory Writers has no users/delete or
  users/restore permission);
- assigning licenses (issue 16): User Administrator, Directory Writers or License Administrator (the contract);
- reading subscribed SKUs and a user's licenses: Directory Readers, Global Reader, User Administrator or License
  Administrator (Partner Center's "get a list of available licenses"), and the writers;
- Graph's profile and manager writes (issue 17): as updating a user;
- Global Administrator may do everything.
- Reading the customer itself (`GET /v1/customers/{id}`) needs the relationship but no particular role.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum

from .codes import INSUFFICIENT_PRIVILEGES_CODE, INSUFFICIENT_PRIVILEGES_TEXT, NO_RELATIONSHIP_CODE, ApiError

GLOBAL_ADMINISTRATOR = "Global Administrator"
USER_ADMINISTRATOR = "User Administrator"
DIRECTORY_WRITERS = "Directory Writers"
DIRECTORY_READERS = "Directory Readers"
GLOBAL_READER = "Global Reader"
LICENSE_ADMINISTRATOR = "License Administrator"

#: The roles a data file may name (Entra's display names); any other name is a mistake in the file.
KNOWN_ROLES = (
    GLOBAL_ADMINISTRATOR,
    USER_ADMINISTRATOR,
    DIRECTORY_WRITERS,
    DIRECTORY_READERS,
    GLOBAL_READER,
    LICENSE_ADMINISTRATOR,
)

#: The partner id the sandbox stands for in 20002's text (sandbox's own: it has no partner of its own).
SANDBOX_PARTNER_ID = "00000000-5a4d-4b0c-8000-000000000001"


class Action(Enum):
    """What a call does to a customer's directory; each needs one of its roles."""

    READ_USERS = "read users"
    CREATE_USERS = "create users"
    UPDATE_USERS = "update users"
    DELETE_USERS = "delete or restore users"
    ASSIGN_LICENSES = "assign licenses"
    READ_LICENSES = "read licenses"


NEEDED: dict[Action, frozenset[str]] = {
    Action.READ_USERS: frozenset(
        {DIRECTORY_READERS, GLOBAL_READER, USER_ADMINISTRATOR, DIRECTORY_WRITERS, GLOBAL_ADMINISTRATOR}
    ),
    Action.CREATE_USERS: frozenset({USER_ADMINISTRATOR, DIRECTORY_WRITERS, GLOBAL_ADMINISTRATOR}),
    Action.UPDATE_USERS: frozenset({USER_ADMINISTRATOR, DIRECTORY_WRITERS, GLOBAL_ADMINISTRATOR}),
    Action.DELETE_USERS: frozenset({USER_ADMINISTRATOR, GLOBAL_ADMINISTRATOR}),
    Action.ASSIGN_LICENSES: frozenset(
        {USER_ADMINISTRATOR, DIRECTORY_WRITERS, LICENSE_ADMINISTRATOR, GLOBAL_ADMINISTRATOR}
    ),
    Action.READ_LICENSES: frozenset(
        {
            DIRECTORY_READERS,
            GLOBAL_READER,
            USER_ADMINISTRATOR,
            LICENSE_ADMINISTRATOR,
            DIRECTORY_WRITERS,
            GLOBAL_ADMINISTRATOR,
        }
    ),
}


def canonical_role(name: str) -> str | None:
    """The role's display name, whatever the case and spacing it was written in; None for an unknown name."""
    key = " ".join(name.split()).casefold()
    return next((role for role in KNOWN_ROLES if role.casefold() == key), None)


class Grant:
    """A partner's standing in one customer: the relationship and its roles (None: every role)."""

    __slots__ = ("customer_id", "relationship", "roles")

    def __init__(self, customer_id: str, relationship: bool, roles: Iterable[str] | None) -> None:
        self.customer_id = customer_id
        self.relationship = relationship
        self.roles = frozenset(roles) if roles is not None else None

    def allows(self, action: Action) -> bool:
        return self.relationship and (self.roles is None or bool(self.roles & NEEDED[action]))

    def refusal(self, action: Action | None) -> ApiError | None:
        """Partner Center's 403 for this call, or None when it may go ahead. `action=None`: any role will do."""
        if not self.relationship:
            return no_relationship_error(self.customer_id)
        if action is not None and not self.allows(action):
            return insufficient_privileges_error()
        return None


def no_relationship_error(customer_id: str) -> ApiError:
    # Documented: 403, code 20002, "The partner ID {0} has no commerce relationship with the customer ID {1}."
    return ApiError(
        403,
        NO_RELATIONSHIP_CODE,
        f"The partner ID {SANDBOX_PARTNER_ID} has no commerce relationship with the customer ID {customer_id}.",
    )


def insufficient_privileges_error() -> ApiError:
    # Documented: 403, code 900308 and its text. The docs show no `data` for it, so the sandbox sends none.
    return ApiError(403, INSUFFICIENT_PRIVILEGES_CODE, INSUFFICIENT_PRIVILEGES_TEXT)
