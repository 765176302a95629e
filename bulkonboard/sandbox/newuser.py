"""A create request, checked: the refusals Partner Center (and Entra behind it) makes before a user exists.

The order is a service's: shape, required fields, lengths, UPN syntax, domain, usage location, password,
immutableId, and last the directory itself (a UPN someone holds, a soft-deleted user included). Partner Center
documents no codes for these refusals, so their codes are the sandbox's own (`codes`, 9000x).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import rules
from .codes import (
    DOMAIN_FEDERATED_CODE,
    DOMAIN_UNKNOWN_CODE,
    IMMUTABLE_ID_INVALID_CODE,
    PASSWORD_WEAK_CODE,
    UPN_INVALID_CODE,
    USAGE_LOCATION_INVALID_CODE,
    ApiError,
    duplicate_upn_error,
    invalid_input,
)
from .data import DomainData

if TYPE_CHECKING:
    from .store import CustomerState

#: The CustomerUser fields a create request may carry (besides passwordProfile and attributes), in the order the
#: documented answer lists them. Unknown members of a request are ignored, as .NET services do.
USER_FIELDS = ("usageLocation", "userPrincipalName", "firstName", "lastName", "displayName", "immutableId")
REQUIRED_FIELDS = ("userPrincipalName", "displayName", "usageLocation")
LENGTH_LIMITS = {
    "displayName": rules.DISPLAY_NAME_MAX,
    "firstName": rules.NAME_MAX,
    "lastName": rules.NAME_MAX,
}


@dataclass(frozen=True, slots=True)
class NewUser:
    """A create request that passed every rule. The password is kept only long enough to echo it once."""

    fields: dict[str, str]
    password: str
    force_change_password: bool | None
    domain: DomainData

    def __repr__(self) -> str:  # never show the password, even in a debugger or a failing assertion
        return f"NewUser(fields={self.fields!r}, password=<hidden>)"


@dataclass(frozen=True, slots=True)
class _Request:
    """The members of a create body, typed; nothing about the directory checked yet."""

    fields: dict[str, str]
    password: str | None
    force_change_password: bool | None


def case_insensitive(members: Mapping[str, Any]) -> dict[str, Any]:
    """Partner Center is a .NET service: it binds JSON members case-insensitively (`State` and `state` alike)."""
    return {str(key).casefold(): value for key, value in members.items()}


def check_new_user(
    customer: CustomerState,
    body: Any,
    *,
    required: tuple[str, ...] = REQUIRED_FIELDS,
    federated_ok: bool = False,
) -> NewUser | ApiError:
    """`body` in Partner Center's shape. Graph's create (`graph_newuser`) passes its own `required` (Graph needs no
    usage location) and `federated_ok` (Graph creates users of a federated domain that carry an immutableId)."""
    request = _read_request(body)
    if isinstance(request, ApiError):
        return request
    missing = [name for name in required if not request.fields.get(name, "").strip()]
    if not request.password:
        missing.append("passwordProfile.password")
    if missing:
        return invalid_input(f"The request is missing required fields: {', '.join(missing)}.", *missing)
    for name, limit in LENGTH_LIMITS.items():
        if len(request.fields.get(name, "")) > limit:
            return invalid_input(f"The field {name} must be at most {limit} characters long.", name)
    assert request.password is not None
    domain = _domain(customer, request.fields["userPrincipalName"], federated_ok)
    if isinstance(domain, ApiError):
        return domain
    refused = _field_rules(request.fields, request.password)
    if refused is not None:
        return refused
    if customer.holder_of(request.fields["userPrincipalName"]) is not None:
        # A soft-deleted user still holds its UPN (shared/reference, "More facts"): restore it, or wait.
        return duplicate_upn_error()
    return NewUser(
        fields=request.fields,
        password=request.password,
        force_change_password=request.force_change_password,
        domain=domain,
    )


def _read_request(body: Any) -> _Request | ApiError:
    if not isinstance(body, dict):
        return invalid_input("The request body must be a JSON object describing the user.")
    members = case_insensitive(body)
    fields: dict[str, str] = {}
    for name in USER_FIELDS:
        value = members.get(name.casefold())
        if value is None:
            continue
        if not isinstance(value, str):
            return invalid_input(f"The field {name} must be a string.", name)
        fields[name] = value
    profile = members.get("passwordprofile")
    if profile is not None and not isinstance(profile, dict):
        return invalid_input("The field passwordProfile must be an object.", "passwordProfile")
    profile_members = case_insensitive(profile or {})
    password = profile_members.get("password")
    if password is not None and not isinstance(password, str):
        return invalid_input(
            "The field passwordProfile.password must be a string.", "passwordProfile.password"
        )
    force_change = profile_members.get("forcechangepassword")
    if force_change is not None and not isinstance(force_change, bool):
        return invalid_input(
            "The field passwordProfile.forceChangePassword must be true or false.",
            "passwordProfile.forceChangePassword",
        )
    return _Request(fields=fields, password=password, force_change_password=force_change)


def _domain(customer: CustomerState, upn: str, federated_ok: bool = False) -> DomainData | ApiError:
    """The UPN's domain, if the UPN is well formed and its domain a verified, managed one of the customer."""
    problem = rules.upn_problem(upn)
    if problem:
        return ApiError(
            400,
            UPN_INVALID_CODE,
            f"Invalid value specified for property 'userPrincipalName' of resource 'User': {problem}.",
            ("userPrincipalName",),
        )
    domain_name = upn.rpartition("@")[2]
    domain = customer.domains.get(domain_name.casefold())
    if domain is None or not domain.is_verified:
        return ApiError(
            400,
            DOMAIN_UNKNOWN_CODE,
            f"The domain portion of the userPrincipalName property is invalid: {domain_name} is not a verified "
            "domain of this customer. You must use one of the verified domain names in the organization.",
            ("userPrincipalName",),
        )
    if domain.federated and not federated_ok:
        return ApiError(
            400,
            DOMAIN_FEDERATED_CODE,
            f"The domain {domain.name} is federated; users of a federated domain cannot be created through "
            "Partner Center.",
            ("userPrincipalName",),
        )
    return domain


def _field_rules(fields: dict[str, str], password: str) -> ApiError | None:
    if "usageLocation" in fields and not rules.usage_location_ok(fields["usageLocation"]):
        return usage_location_error(fields["usageLocation"])
    problem = rules.password_problem(password)
    if problem:
        return ApiError(
            400,
            PASSWORD_WEAK_CODE,
            "The specified password does not comply with password complexity requirements. Please provide a "
            f"different password ({problem}).",
            ("passwordProfile.password",),
        )
    if not rules.immutable_id_ok(fields.get("immutableId", "")):
        return ApiError(
            400,
            IMMUTABLE_ID_INVALID_CODE,
            "Invalid value specified for property 'immutableId' of resource 'User': it may not contain $ or _.",
            ("immutableId",),
        )
    return None


def usage_location_error(value: str) -> ApiError:
    return ApiError(
        400,
        USAGE_LOCATION_INVALID_CODE,
        f"Invalid value specified for property 'usageLocation' of resource 'User': {value!r} is not a country or "
        "region Partner Center supports.",
        ("usageLocation",),
    )
