"""The profile fields of a user, by Microsoft Graph's names, and the refusals Graph makes for them.

One list serves the data file, Graph's `POST /users` and `PATCH /users/{id}`, and the answers: a field set either
way reads back the same through Graph (Partner Center's CustomerUser has no such fields, so its answers leave them
out).

Lengths are the maxima Graph's user resource documents (employeeId 16, jobTitle 128, department 64, ...); where
Graph documents none (employeeType, officeLocation, preferredLanguage) the sandbox's own bound is marked below.
`businessPhones` is a list that "can only hold one number" (documented). `employeeHireDate` is an
Edm.DateTimeOffset: a date alone is refused, as Graph refuses a literal it cannot convert (the sandbox's reading).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

#: Text fields and their maximum lengths.
PROFILE_TEXT_FIELDS: dict[str, int] = {
    "jobTitle": 128,
    "department": 64,
    "officeLocation": 128,  # sandbox's own bound
    "companyName": 64,
    "employeeId": 16,
    "employeeType": 64,  # sandbox's own bound
    "mobilePhone": 64,
    "streetAddress": 1024,
    "city": 128,
    "state": 128,
    "postalCode": 40,
    "country": 128,
    "preferredLanguage": 16,  # sandbox's own bound (an ISO 639-1 tag like en-US)
    "mailNickname": 64,
}
BUSINESS_PHONES = "businessPhones"
HIRE_DATE = "employeeHireDate"
ACCOUNT_ENABLED = "accountEnabled"
#: Every profile field, in the order Graph's answers list them.
PROFILE_FIELDS: tuple[str, ...] = (*PROFILE_TEXT_FIELDS, BUSINESS_PHONES, HIRE_DATE)


def profile_problem(name: str, value: Any) -> str | None:
    """Why Graph would refuse this value for this field, or None. `None` clears a field and is always fine."""
    if value is None:
        return None
    if name == BUSINESS_PHONES:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            return "it must be a list of phone numbers"
        if len(value) > 1:
            return "it can only hold one number"
        if value and len(value[0]) > 64:
            return "the number is longer than 64 characters"
        return None
    if not isinstance(value, str):
        return "it must be a string"
    if name == HIRE_DATE:
        return None if is_date_time(value) else "it must be a date and time (2026-12-01T00:00:00Z)"
    limit = PROFILE_TEXT_FIELDS.get(name)
    if limit is not None and len(value) > limit:
        return f"it is longer than {limit} characters"
    return None


def is_date_time(value: str) -> bool:
    """An ISO 8601 date *and* time with an offset (or Z), as Edm.DateTimeOffset needs."""
    if "T" not in value:
        return False
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return parsed.tzinfo is not None


def mail_nickname(upn: str) -> str:
    """Graph requires mailNickname; for a user created without one (through Partner Center, or seeded by the data
    file) the sandbox shows the UPN's local part, as Entra does."""
    return upn.partition("@")[0]
