"""The `manager` column: each manager a user of the customer or a row of the same sheet, checked before anything
is sent, and the order a run creates manager rows in.

Why in the dry run: a manager that cannot be found, or managers that manage each other, would leave users created
without the manager HR asked for (`partial`), to fix by hand one at a time. The customer's users are already
listed once for the dry run (existing users, facts.py): a manager is looked up there, with no request of its own.
A customer whose users cannot be known (the offline `--domains` file) has its managers checked against the sheet
only.

A row whose manager is a row of the sheet that is invalid is invalid too (its manager will not exist), and so,
row by row, are the rows under it: the message names the manager row to fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..model import MANAGER_FIELD
from .facts import CustomerFacts
from .rules import EXISTS_BIT, Rule, explain_upn_syntax, upn_syntax_ok

#: Rows of a cycle named in its message, at most.
_CYCLE_ROWS_SHOWN = 6


@dataclass(slots=True)
class ManagerCheck:
    """Each row's manager as the dry run found it, and what a run needs of it."""

    cells: np.ndarray  # the manager cell as typed ("" for none)
    in_sheet: np.ndarray  # the position of the manager's row, -1 where the manager is not a row
    tenant_id: np.ndarray  # the manager's id in the tenant, None where not a user of the customer
    rows: np.ndarray  # each position's sheet row number
    cycles: dict[int, tuple[int, ...]]  # a position on a cycle -> the cycle's positions, in order

    @classmethod
    def nothing(cls, n: int, rows: np.ndarray) -> ManagerCheck:
        return cls(
            np.full(n, "", dtype=object),
            np.full(n, -1, dtype=np.int64),
            np.full(n, None, dtype=object),
            rows,
            {},
        )

    def message(self, rule: Rule, position: int, customer: str) -> str:
        manager = str(self.cells[position])
        if rule is Rule.MANAGER_INVALID:
            return f"manager: {explain_upn_syntax(manager)}"
        if rule is Rule.MANAGER_UNKNOWN:
            return (
                f"manager {manager} is neither a user of customer {customer} nor a row of this sheet: check the "
                "spelling, or add a row for the manager"
            )
        if rule is Rule.MANAGER_CYCLE:
            cycle = self.cycles.get(position, (position,))
            if len(cycle) == 1:
                return f"manager {manager} is this row's own user: nobody can be their own manager"
            shown = [str(self.rows[p]) for p in cycle[:_CYCLE_ROWS_SHOWN]]
            more = " ..." if len(cycle) > _CYCLE_ROWS_SHOWN else ""
            return (
                f"manager {manager}: rows {' → '.join(shown)}{more} → {self.rows[cycle[0]]} manage each other in a "
                "circle; one of them needs a manager outside it (or none)"
            )
        row = int(self.rows[self.in_sheet[position]])
        return (
            f"manager {manager} is row {row} of this sheet, which is invalid: fix row {row} first (this row would be "
            "created without the manager it asks for)"
        )

    def levels(self, failed: np.ndarray) -> list[np.ndarray]:
        """The rows that manage another row of the sheet and may be sent, by depth: the top managers first (their
        own manager outside the sheet, or none), then the ones they manage, and so on. A run creates them in this
        order before the other rows, so every manager row exists before its reports ask for it."""
        reports = self.in_sheet >= 0
        if not reports.any():
            return []
        sendable = (failed & ~np.int64(EXISTS_BIT)) == 0
        targets = np.unique(self.in_sheet[reports & sendable])
        depth: dict[int, int] = {}
        for start in targets.tolist():
            chain: list[int] = []
            position = start
            while position not in depth and self.in_sheet[position] >= 0:
                chain.append(position)
                position = int(self.in_sheet[position])
            base = depth.setdefault(position, 0)
            for offset, link in enumerate(reversed(chain), start=1):
                depth[link] = base + offset
        by_level: dict[int, list[int]] = {}
        for position in targets.tolist():
            by_level.setdefault(depth[position], []).append(position)
        return [np.array(sorted(by_level[level]), dtype=np.int64) for level in sorted(by_level)]


def flag_managers(
    frame: pd.DataFrame,
    upn_keys: np.ndarray,
    first_of_upn: np.ndarray,
    customer: np.ndarray,
    facts: Mapping[str, CustomerFacts],
    failed: np.ndarray,
) -> ManagerCheck:
    """Flag the manager problems of every row; call it last, since a row whose manager row is invalid for any
    reason is invalid too. `first_of_upn`: the rows that hold their UPN first (a repeat is not a manager)."""
    rows = frame["row"].to_numpy()
    n = len(frame)
    if MANAGER_FIELD not in frame.columns:
        return ManagerCheck.nothing(n, rows)
    cells = frame[MANAGER_FIELD].fillna("").astype(str)
    check = ManagerCheck.nothing(n, rows)
    check.cells = cells.to_numpy(dtype=object)
    has = (cells != "").to_numpy()
    if not has.any():
        return check
    well_formed = has & upn_syntax_ok(cells)
    _flag(failed, Rule.MANAGER_INVALID, has & ~well_formed)
    keys = cells.str.casefold().to_numpy(dtype=object)
    _find_managers(check, keys, well_formed, upn_keys, first_of_upn, customer, facts, failed)
    _flag_cycles(check, failed)
    _spread_invalid_managers(check, failed)
    return check


def _find_managers(
    check: ManagerCheck,
    keys: np.ndarray,
    well_formed: np.ndarray,
    upn_keys: np.ndarray,
    first_of_upn: np.ndarray,
    customer: np.ndarray,
    facts: Mapping[str, CustomerFacts],
    failed: np.ndarray,
) -> None:
    """A manager in the tenant wins (its row, if any, is skipped as existing); else a row of the same customer."""
    sheet_rows = {(str(customer[p]), str(upn_keys[p])): p for p in np.flatnonzero(first_of_upn).tolist()}
    unknown = np.zeros(len(keys), dtype=bool)
    for position in np.flatnonzero(well_formed).tolist():
        owner, key = str(customer[position]), str(keys[position])
        known = facts[owner].existing_users if owner in facts else None
        if known is not None and key in known:
            check.tenant_id[position] = known[key]
            continue
        found = sheet_rows.get((owner, key))
        if found is not None:
            check.in_sheet[position] = found
        elif known is not None:  # the users of an offline customer cannot be known: not flagged
            unknown[position] = True
    _flag(failed, Rule.MANAGER_UNKNOWN, unknown)


def _flag_cycles(check: ManagerCheck, failed: np.ndarray) -> None:
    """Rows whose chain of managers comes back to them. Each row has at most one manager, so one walk per row that
    stops at the first row already seen finds every cycle in time proportional to the rows."""
    following = check.in_sheet
    state = np.zeros(len(following), dtype=np.int8)  # 0 unseen, 1 on the current walk, 2 done
    on_cycle = np.zeros(len(following), dtype=bool)
    for start in np.flatnonzero(following >= 0).tolist():
        walk: list[int] = []
        position = start
        while position >= 0 and state[position] == 0:
            state[position] = 1
            walk.append(position)
            position = int(following[position])
        if position >= 0 and state[position] == 1:  # came back into this walk: a cycle
            cycle = tuple(walk[walk.index(position) :])
            for member in cycle:
                on_cycle[member] = True
                check.cycles[member] = cycle
        for member in walk:
            state[member] = 2
    _flag(failed, Rule.MANAGER_CYCLE, on_cycle)


def _spread_invalid_managers(check: ManagerCheck, failed: np.ndarray) -> None:
    """A row whose manager row is invalid (its own manager included) cannot have its manager: invalid too, and so
    on down the chain, breadth first from each invalid manager row."""
    reports: dict[int, list[int]] = {}
    for position in np.flatnonzero(check.in_sheet >= 0).tolist():
        reports.setdefault(int(check.in_sheet[position]), []).append(position)
    invalid = (failed & ~np.int64(EXISTS_BIT)) != 0
    queue = [manager for manager in reports if invalid[manager]]
    while queue:
        manager = queue.pop()
        for report in reports.get(manager, ()):
            if failed[report] & (1 << int(Rule.MANAGER_CYCLE)):
                continue  # its cycle is its own problem
            failed[report] |= 1 << int(Rule.MANAGER_ROW_INVALID)
            if not invalid[report]:
                invalid[report] = True
                queue.append(report)


def _flag(failed: np.ndarray, rule: Rule, mask: np.ndarray) -> None:
    failed[np.asarray(mask, dtype=bool)] |= 1 << int(rule)
