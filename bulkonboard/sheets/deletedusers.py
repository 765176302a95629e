"""Rows whose UPN belongs to a soft-deleted user of their customer: `user.deleted`, before anything is sent.

Why a check of its own: a deleted user stays in the customer's recycle bin for 30 days and keeps its UPN, so
the service refuses a new user with it; the row would fail at the service with a refusal that does not say why.
The dry run says so first, when, and the two ways out: restore that user (`--restore-deleted`) or change the UPN.
The facts source lists the deleted users once per customer (`CustomerFacts.deleted_users`); a source that
cannot know them (the offline domains file) says so once itself, so here it is simply no finding.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from .facts import CustomerFacts, DeletedUser

#: How long a deleted user stays restorable (Entra's recycle bin; shared/reference, Users).
RECYCLE_BIN_DAYS = 30


def find_deleted_users(
    keys: np.ndarray, candidates: np.ndarray, customer: np.ndarray, facts: Mapping[str, CustomerFacts]
) -> np.ndarray:
    """Per row, the deleted user its (case-folded) UPN belongs to, or None; only `candidates` are looked at (the
    first row of a UPN that no active user holds: a repeat is already `upn.duplicate`)."""
    found = np.full(len(keys), None, dtype=object)
    for customer_id, positions in pd.Series(customer).groupby(customer, sort=False).indices.items():
        deleted = facts[customer_id].deleted_users if customer_id else None
        if not deleted:
            continue
        rows = positions[candidates[positions]]
        found[rows] = [deleted.get(key) for key in keys[rows]]
    return found


def deleted_user_message(upn: str, user: DeletedUser, *, restoring: bool = False) -> str:
    since = f" since {as_read(user.deleted_at)}" if user.deleted_at else ""
    if restoring:
        return (
            f"{upn} belongs to a deleted user (id {user.id}) in the customer's recycle bin{since}: it will be "
            "restored (--restore-deleted), not created; it comes back as it was deleted, with its own names and "
            "password (this row's are not applied)"
        )
    return (
        f"{upn} belongs to a deleted user (id {user.id}) in the customer's recycle bin{since}, which keeps the "
        f"UPN for {RECYCLE_BIN_DAYS} days: give --restore-deleted to restore that user, or change the UPN"
    )


def as_read(stamp: str) -> str:
    """The service's ISO 8601 time as a person reads it (UTC, to the minute); as given when it is not one."""
    try:
        moment = datetime.fromisoformat(stamp.strip())
    except ValueError:
        return stamp
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC")
