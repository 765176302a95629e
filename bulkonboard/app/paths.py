"""Where files land by default: output workbooks beside the input, state under the user's state directory.

Nightly runs name their workbooks with the date (`results-{date}.xlsx`) so that one night never overwrites
another's; the placeholders are expanded here, once, for every path option that accepts them.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from pathlib import Path

from ..defaults import state_dir  # re-exported: its old home
from ..errors import InputError

PLACEHOLDERS = ("date", "time", "datetime", "customer")


def expand(path: Path, *, now: datetime, customer: str = "") -> Path:
    """`{date}` 2026-11-24, `{time}` 2301, `{datetime}` 2026-11-24T2301, `{customer}` the customer id."""
    values = {
        "date": now.strftime("%Y-%m-%d"),
        "time": now.strftime("%H%M%S"),
        "datetime": now.strftime("%Y-%m-%dT%H%M%S"),
        "customer": customer or "customers",
    }

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise InputError(f"{path}: unknown placeholder {{{name}}} (known: {', '.join(PLACEHOLDERS)})")
        if name == "customer":
            _check_customer_for_path(customer, path)
        return values[name]

    return Path(re.sub(r"\{([^{}]*)\}", substitute, str(path)))


#: What a customer id may be when it becomes part of a file name: a tenant GUID or a domain (IDN letters too).
_CUSTOMER_IN_PATH = re.compile(r"[^\W_][\w.-]*")


def _check_customer_for_path(customer: str, path: Path) -> None:
    """`{customer}` must never lead the file elsewhere: `--customer ../../x` would write outside the folder a
    scheduler's command line names (and over whatever is there)."""
    if customer and (not _CUSTOMER_IN_PATH.fullmatch(customer) or ".." in customer):
        raise InputError(
            f"--customer {customer!r} cannot fill {{customer}} in {path}: a customer id is a tenant GUID or a domain "
            "(letters, digits, '.' and '-'; no path separator or '..')"
        )


def default_journal(service_url: str, customer: str) -> Path:
    """One journal per customer AND service, so a rehearsal against a sandbox never shares state with the real
    service (the sandbox's URL changes per start; an embedded sandbox gets a throwaway journal instead)."""
    service = re.sub(r"[^A-Za-z0-9.-]+", "_", service_url.split("://", 1)[-1]).strip("_") or "service"
    # Tenant ids compare case-insensitively: `3C9A...` and `3c9a...` must share one journal (and one lock).
    name = re.sub(r"[^A-Za-z0-9-]+", "_", customer.casefold()) or "customers"
    if len(name) > 80:
        name = name[:40] + "-" + hashlib.sha256(customer.casefold().encode()).hexdigest()[:16]
    return state_dir() / "journals" / service / f"{name}.sqlite"


def default_output_path(input_path: Path, suffix: str) -> Path:
    """Beside the input, never over it."""
    candidate = input_path.with_name(f"{input_path.stem}.{suffix}.xlsx")
    if candidate.resolve() == input_path.resolve():
        candidate = input_path.with_name(f"{input_path.stem}.{suffix}-1.xlsx")
    return candidate


def output_path(given: Path | None, input_path: Path, *, suffix: str, now: datetime, customer: str) -> Path:
    """A workbook a command writes: where it was asked (its placeholders filled) or beside the input; checked
    before anything is read or sent, so a path that cannot be used costs nothing (exit 2)."""
    path = expand(given or default_output_path(input_path, suffix), now=now, customer=customer)
    if path.suffix.lower() != ".xlsx":
        raise InputError(f"{path}: the output workbook must be an .xlsx file")
    if path.exists() and path.resolve() == input_path.resolve():
        raise InputError(f"{path}: refusing to write the output over the input sheet")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{path}: cannot create its folder ({exc.strerror or exc})") from None
    return path
