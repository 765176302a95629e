"""Validation rules, one by one, then against simple independent oracles, then at scale.

Sheets are built by hand here (a frame of text, as the reader produces) so the rules are tested apart from
file parsing.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulkonboard.errors import InputError
from bulkonboard.model import FIELDS, Code, Status
from bulkonboard.sheets.columns import check_columns
from bulkonboard.sheets.facts import ANY_CUSTOMER, CustomerFacts, DeletedUser, Domain
from bulkonboard.sheets.rules import supported_usage_locations
from bulkonboard.sheets.validation import CheckedRow, customers_in, validate

CONTOSO = "3c9a0000-0000-0000-0000-00000000c0n7"
WOODGROVE = "77770000-0000-0000-0000-00000000w00d"

STRONG = "Str0ng!pass"


@dataclass(frozen=True)
class FakeSheet:
    """The attributes of reader.Sheet that validation may use, and nothing else."""

    frame: pd.DataFrame
    present: frozenset[str]
    path: Path


def make_sheet(
    rows: list[dict[str, str]],
    *,
    present: set[str] | None = None,
    first_row: int = 2,
    dtype: str = "str",
) -> FakeSheet:
    columns: dict[str, Any] = {"row": pd.Series(range(first_row, first_row + len(rows)), dtype="int64")}
    for name in FIELDS:
        columns[name] = pd.Series([r.get(name, "") for r in rows], dtype=dtype)
    if present is None:
        present = {name for r in rows for name in r}
    return FakeSheet(pd.DataFrame(columns), frozenset(present), Path("/tmp/new-hires.xlsx"))


def person(**fields: str) -> dict[str, str]:
    row = {
        "userPrincipalName": "jane.doe@contoso.com",
        "firstName": "Jane",
        "lastName": "Doe",
        "displayName": "Jane Doe",
        "usageLocation": "US",
        "password": STRONG,
    }
    row.update(fields)
    return row


def contoso_facts(existing: dict[str, str] | None = None) -> CustomerFacts:
    domains = [
        Domain("contoso.onmicrosoft.com", "Managed"),
        Domain("Contoso.com", "Managed"),
        Domain("fabrikam.com", "Federated"),
    ]
    return CustomerFacts(
        customer_id=CONTOSO,
        domains={d.name.casefold(): d for d in domains},
        existing_users=existing,
    )


def woodgrove_facts() -> CustomerFacts:
    domains = [Domain("woodgrove.com", "Managed"), Domain("woodgrove.onmicrosoft.com", "Managed")]
    return CustomerFacts(WOODGROVE, {d.name.casefold(): d for d in domains}, existing_users={})


def check(
    rows: list[dict[str, str]], *, facts: CustomerFacts | None = None, **options: Any
) -> list[CheckedRow]:
    options.setdefault("default_customer", CONTOSO)
    facts = facts or contoso_facts()
    return list(validate(make_sheet(rows), {facts.customer_id: facts}, **options))


def one(row: dict[str, str], **options: Any) -> CheckedRow:
    (checked,) = check([row], **options)
    return checked


def codes(checked: CheckedRow) -> list[str]:
    return [p.code for p in checked.problems]


def message(checked: CheckedRow, code: str) -> str:
    (found,) = [p.message for p in checked.problems if p.code == code]
    return found


# --------------------------------------------------------------------------------------------- a good row


def test_a_complete_row_is_valid_and_normalised() -> None:
    checked = one(person(usageLocation="gb", immutableId="abc-123", forceChangePassword=""))
    assert checked.status is Status.VALID
    assert checked.problems == ()
    assert checked.existing_user_id is None
    user = checked.user
    assert user.row == 2
    assert user.userPrincipalName == "jane.doe@contoso.com"
    assert (user.firstName, user.lastName, user.displayName) == ("Jane", "Doe", "Jane Doe")
    assert user.usageLocation == "GB"
    assert user.immutableId == "abc-123"
    assert user.password == STRONG
    assert user.forceChangePassword is True
    assert user.customerTenantId == CONTOSO


# ------------------------------------------------------------------------------------------ required fields


@pytest.mark.parametrize("field", ["userPrincipalName", "displayName", "usageLocation", "password"])
def test_an_empty_required_field_is_missing(field: str) -> None:
    checked = one(person(**{field: ""}))
    assert checked.status is Status.INVALID
    missing = [p for p in checked.problems if p.code == Code.FIELD_MISSING]
    assert [p.field for p in missing] == [field]
    assert field in missing[0].message


def test_an_empty_upn_gets_no_syntax_or_duplicate_complaint() -> None:
    rows = check([person(userPrincipalName=""), person(userPrincipalName="")])
    assert [codes(r) for r in rows] == [[Code.FIELD_MISSING], [Code.FIELD_MISSING]]


def test_password_may_be_empty_when_passwords_are_generated() -> None:
    assert one(person(password=""), generate_passwords=True).status is Status.VALID
    # a password that is given is still checked
    assert codes(one(person(password="short"), generate_passwords=True)) == [Code.PASSWORD_WEAK]


def test_default_usage_location_fills_only_empty_cells() -> None:
    rows = check(
        [person(usageLocation=""), person(userPrincipalName="bob@contoso.com", usageLocation="de")],
        default_usage_location="fr",
    )
    assert [r.user.usageLocation for r in rows] == ["FR", "DE"]
    assert all(r.status is Status.VALID for r in rows)


# ------------------------------------------------------------------------------------------------ lengths


@pytest.mark.parametrize(
    ("field", "limit"),
    [("displayName", 256), ("firstName", 64), ("lastName", 64)],
)
def test_name_lengths_count_characters(field: str, limit: int) -> None:
    at_limit = one(person(**{field: "é" * limit}))  # 2 bytes each in UTF-8: characters count, not bytes
    assert at_limit.status is Status.VALID
    over = one(person(**{field: "é" * (limit + 1)}))
    assert codes(over) == [Code.FIELD_TOO_LONG]
    assert over.problems[0].field == field
    assert f"{limit + 1} characters" in over.problems[0].message
    assert str(limit) in over.problems[0].message


# ------------------------------------------------------------------------------------------------ UPN syntax


def upn_of(local_length: int, domain_length: int) -> str:
    """A UPN whose parts have these lengths; the domain is made of 9-letter labels so it stays a DNS name."""
    domain = ""
    while len(domain) < domain_length:
        domain = (domain + ".abcdefghi") if domain else "abcdefghi"
    domain = domain[:domain_length].rstrip(".")
    if len(domain) < domain_length:  # the cut fell on a dot: pad the last label instead
        domain += "x" * (domain_length - len(domain))
    return "a" * local_length + "@" + domain


def test_upn_length_limits() -> None:
    assert len(upn_of(64, 48)) == 113
    rows = check(
        [
            person(userPrincipalName=upn_of(64, 48)),
            person(userPrincipalName=upn_of(65, 10)),
            person(userPrincipalName=upn_of(10, 49)),
            person(userPrincipalName=upn_of(65, 48)),
        ]
    )
    assert Code.UPN_SYNTAX not in codes(rows[0])
    assert codes(rows[0]) == [Code.DOMAIN_UNKNOWN]  # syntax passed, so the domain was looked at
    assert "65 characters before the @" in message(rows[1], Code.UPN_SYNTAX)
    assert "64" in message(rows[1], Code.UPN_SYNTAX)
    assert "49 characters" in message(rows[2], Code.UPN_SYNTAX)
    assert "48" in message(rows[2], Code.UPN_SYNTAX)
    too_long = message(rows[3], Code.UPN_SYNTAX)
    assert "114 characters long" in too_long and "113" in too_long
    for bad in rows[1:]:
        assert codes(bad) == [Code.UPN_SYNTAX]  # no domain check for a UPN with bad syntax


@pytest.mark.parametrize(
    ("upn", "says"),
    [
        ("jane doe@contoso.com", "a space cannot be used before the @"),
        ("jané@contoso.com", "'é' (U+00E9) cannot be used before the @"),
        ("jane+tag@contoso.com", "'+' cannot be used before the @"),
        ("jane\u200b@contoso.com", "U+200B cannot be used before the @"),
        ("jane.doe.contoso.com", "no @"),
        ("jane@doe@contoso.com", "2 @ characters"),
        ("jane.@contoso.com", "a . cannot stand right before the @"),
        ("@contoso.com", "nothing before the @"),
        ("jane@", "no domain after the @"),
        ("jane@contoso_hr.com", "'_' cannot be used in the domain"),
        ("jane@contoso..com", "empty part"),
        ("jane@.contoso.com", "empty part"),
        ("jane@contoso.com.", "empty part"),
        ("jane@-contoso.com", "-contoso starts or ends with a hyphen"),
        ("jane@contoso-.com", "contoso- starts or ends with a hyphen"),
        ("jane@cöntoso.com", "'ö' (U+00F6) cannot be used in the domain"),
    ],
)
def test_upn_syntax_says_what_is_wrong(upn: str, says: str) -> None:
    checked = one(person(userPrincipalName=upn))
    assert codes(checked) == [Code.UPN_SYNTAX]
    text = message(checked, Code.UPN_SYNTAX)
    assert says in text
    assert text.startswith(upn)


@pytest.mark.parametrize(
    "upn",
    [
        "o'brien@contoso.com",
        "a.b-c_d!e#f^g~h@contoso.com",
        ".leading@contoso.com",  # Entra forbids a dot only right before the @
        "a..b@contoso.com",
        "jane@xn--contoso-9za.com",
        "jane@con--toso.com",
        "7@contoso.com",
    ],
)
def test_unusual_but_valid_upns_pass_syntax(upn: str) -> None:
    checked = one(person(userPrincipalName=upn))
    assert Code.UPN_SYNTAX not in codes(checked)


# the oracle: Entra's rules, one character at a time, written without regular expressions
ASCII_ALNUM = set(string.ascii_letters + string.digits)
LOCAL_OK = ASCII_ALNUM | set("'.-_!#^~")


def upn_oracle(upn: str) -> bool:
    if len(upn) > 113 or upn.count("@") != 1:
        return False
    local, domain = upn.split("@")
    if not 1 <= len(local) <= 64 or not 1 <= len(domain) <= 48:
        return False
    if any(c not in LOCAL_OK for c in local) or local[-1] == ".":
        return False
    for label in domain.split("."):
        if label == "" or label[0] == "-" or label[-1] == "-":
            return False
        if any(c not in ASCII_ALNUM and c != "-" for c in label):
            return False
    return True


NASTY = 'é ßİＡ١\u200b\u00a0\n\t+,;:"<>()[]\\/%&*=é'
upn_chars = st.sampled_from(sorted(LOCAL_OK | set("@") | set(NASTY)))
label = st.text(st.sampled_from(sorted(ASCII_ALNUM | {"-"} | set("é_"))), min_size=0, max_size=20)
structured_upn = st.builds(
    lambda local, labels: local + "@" + ".".join(labels),
    st.text(st.sampled_from(sorted(LOCAL_OK | set("é +@"))), min_size=0, max_size=70),
    st.lists(label, min_size=1, max_size=5),
)
any_upn = st.one_of(st.text(upn_chars, max_size=120), structured_upn, st.text(max_size=30))


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(any_upn, min_size=1, max_size=40))
def test_upn_syntax_matches_the_oracle(upns: list[str]) -> None:
    rows = check([person(userPrincipalName=u) for u in upns])
    for upn, checked in zip(upns, rows, strict=True):
        if upn == "":
            assert Code.FIELD_MISSING in codes(checked)
            continue
        accepted = Code.UPN_SYNTAX not in codes(checked)
        assert accepted == upn_oracle(upn), upn
        if not accepted:
            text = message(checked, Code.UPN_SYNTAX)
            assert "it is not a valid user principal name" not in text  # a specific reason was found
            assert Code.DOMAIN_UNKNOWN not in codes(checked)


# --------------------------------------------------------------------------------------------------- domains


def test_domains_compare_case_insensitively() -> None:
    checked = one(person(userPrincipalName="Jane.Doe@CONTOSO.com"))
    assert checked.status is Status.VALID
    assert checked.user.userPrincipalName == "Jane.Doe@CONTOSO.com"  # sent as typed


def test_unknown_domain_lists_the_customers_domains() -> None:
    checked = one(person(userPrincipalName="jane@contoso.co"))
    assert codes(checked) == [Code.DOMAIN_UNKNOWN]
    text = message(checked, Code.DOMAIN_UNKNOWN)
    assert text.startswith("contoso.co is not a domain of customer " + CONTOSO)
    for name in ("Contoso.com", "contoso.onmicrosoft.com"):
        assert name in text
    assert "fabrikam.com" not in text  # federated: moving the user there would be refused too


def test_unknown_domain_offline_does_not_name_a_placeholder_customer() -> None:
    facts = contoso_facts()
    facts.customer_id = ANY_CUSTOMER
    checked = one(person(userPrincipalName="jane@contoso.co"), facts=facts, default_customer=ANY_CUSTOMER)
    text = message(checked, Code.DOMAIN_UNKNOWN)
    assert text.startswith("contoso.co is not a domain of the customer:")


def test_unknown_domain_of_a_customer_with_many_domains_names_a_few() -> None:
    names = [f"brand{i:02}.com" for i in range(30)]
    facts = CustomerFacts(CONTOSO, {n: Domain(n, "Managed") for n in names}, existing_users=None)
    text = message(one(person(userPrincipalName="jane@contoso.com"), facts=facts), Code.DOMAIN_UNKNOWN)
    assert "30 managed domains" in text
    assert sum(n in text for n in names) == 5


def test_federated_domain_is_refused() -> None:
    checked = one(person(userPrincipalName="jane@Fabrikam.com"))
    assert codes(checked) == [Code.DOMAIN_FEDERATED]
    assert message(checked, Code.DOMAIN_FEDERATED) == (
        "fabrikam.com is federated: users on it are created in the customer's own directory, "
        "not through Partner Center"
    )


# ---------------------------------------------------------------------------------------------- usage location


@pytest.mark.parametrize(("typed", "sent"), [("NA", "NA"), ("na", "NA"), ("Xk", "XK"), ("us", "US")])
def test_usage_location_is_accepted_in_any_case_and_upper_cased(typed: str, sent: str) -> None:
    checked = one(person(usageLocation=typed))
    assert checked.status is Status.VALID
    assert checked.user.usageLocation == sent


@pytest.mark.parametrize("code", ["CU", "IR", "KP", "SY", "SD", "ZZ"])
def test_unsupported_two_letter_codes_are_refused(code: str) -> None:
    checked = one(person(usageLocation=code.lower()))
    assert codes(checked) == [Code.USAGE_LOCATION_INVALID]
    assert checked.problems[0].field == "usageLocation"
    assert (
        message(checked, Code.USAGE_LOCATION_INVALID)
        == f"{code} is not a country/region Partner Center supports"
    )


@pytest.mark.parametrize("typed", ["USA", "usa", "United States", "united states"])
def test_country_names_and_alpha3_suggest_the_two_letter_code(typed: str) -> None:
    text = message(one(person(usageLocation=typed)), Code.USAGE_LOCATION_INVALID)
    assert text.startswith(typed)
    assert "two-letter" in text
    assert "US (United States)" in text


def test_an_unrecognisable_usage_location_asks_for_a_code() -> None:
    text = message(one(person(usageLocation="Narnia")), Code.USAGE_LOCATION_INVALID)
    assert text.startswith("Narnia is not a two-letter country/region code")


def test_supported_usage_locations_come_from_partner_centers_list() -> None:
    locations = supported_usage_locations()
    assert len(locations) == 248
    assert locations["NA"] == "Namibia"
    assert locations["XK"] == "Kosovo"
    assert {"CU", "IR", "KP", "SY", "SD"}.isdisjoint(locations)
    assert all(len(code) == 2 and code.isupper() for code in locations)


# -------------------------------------------------------------------------------------------------- passwords


@pytest.mark.parametrize(
    ("password", "says"),
    [
        ("Ab1!xyz", "7 characters, fewer than the 8 required"),
        ("Ab1!" + "x" * 253, "257 characters, more than the 256 allowed"),
        ("abcdefgh", "uses 1 of the 4 kinds"),
        ("abcdefg1", "uses 2 of the 4 kinds"),
        ("Pässword1!", "1 character Entra does not accept"),
        ("Pass\tword1", "1 character Entra does not accept"),
        ("Päss€word1", "2 characters Entra does not accept"),
    ],
)
def test_weak_passwords_say_which_requirement_fails(password: str, says: str) -> None:
    checked = one(person(password=password))
    assert codes(checked) == [Code.PASSWORD_WEAK]
    assert checked.problems[0].field == "password"
    text = message(checked, Code.PASSWORD_WEAK)
    assert says in text
    assert password not in text


@pytest.mark.parametrize(
    "password",
    ["Abcdefg1", "abcdefg1!", "ABCDEFG1 ", "abcdEFG!", "Ab1!" + "x" * 252, "pass word 1!", 'a"B\\c`d~1'],
)
def test_passwords_meeting_the_policy_pass(password: str) -> None:
    assert one(person(password=password)).status is Status.VALID


def test_missing_kinds_are_named() -> None:
    text = message(one(person(password="abcdefgh")), Code.PASSWORD_WEAK)
    assert "an uppercase letter or a digit or a symbol" in text


PASSWORD_SYMBOLS = set("@#$%^&*-_!+=[]{}|\\:',.?/`~\"();<> ")


def password_oracle(password: str) -> bool:
    if not 8 <= len(password) <= 256:
        return False
    lower = upper = digit = symbol = False
    for c in password:
        if "a" <= c <= "z":
            lower = True
        elif "A" <= c <= "Z":
            upper = True
        elif "0" <= c <= "9":
            digit = True
        elif c in PASSWORD_SYMBOLS:
            symbol = True
        else:
            return False
    return lower + upper + digit + symbol >= 3


def class_representative(c: str) -> str:
    """Stand-in of the same kind, to show that a message depends on a password's make-up only."""
    if "a" <= c <= "z":
        return "q"
    if "A" <= c <= "Z":
        return "Q"
    if "0" <= c <= "9":
        return "5"
    if c in PASSWORD_SYMBOLS:
        return "%"
    return "ж"


password_chars = st.sampled_from(
    sorted(set(string.ascii_letters + string.digits) | PASSWORD_SYMBOLS | set(NASTY))
)
any_password = st.one_of(
    st.text(password_chars, min_size=1, max_size=20),
    st.text(password_chars, min_size=250, max_size=262),
    st.text(min_size=1, max_size=12),
)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(any_password, min_size=1, max_size=30))
def test_password_rule_matches_the_oracle_and_never_echoes(passwords: list[str]) -> None:
    masked = ["".join(class_representative(c) for c in p) for p in passwords]
    rows = check([person(password=p) for p in passwords + masked])
    for password, checked, masked_checked in zip(passwords, rows, rows[len(passwords) :], strict=False):
        accepted = Code.PASSWORD_WEAK not in codes(checked)
        assert accepted == password_oracle(password)
        if not accepted:
            text = message(checked, Code.PASSWORD_WEAK)
            assert "it does not meet Entra's password policy" not in text  # a specific reason was found
            # the message is the same for any password of the same make-up: nothing of the password is in it
            assert text == message(masked_checked, Code.PASSWORD_WEAK)


# ---------------------------------------------------------------------------------- immutableId, forceChange


@pytest.mark.parametrize("immutable_id", ["abc$def", "abc_def"])
def test_immutable_id_may_not_hold_dollar_or_underscore(immutable_id: str) -> None:
    checked = one(person(immutableId=immutable_id))
    assert codes(checked) == [Code.IMMUTABLE_ID_INVALID]
    assert checked.problems[0].field == "immutableId"
    assert f"'{immutable_id[3]}'" in checked.problems[0].message


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("", True),
        ("TRUE", True),
        ("true", True),
        ("Yes", True),
        ("y", True),
        ("1", True),
        ("FALSE", False),
        ("false", False),
        ("No", False),
        ("N", False),
        ("0", False),
    ],
)
def test_force_change_password_words(typed: str, expected: bool) -> None:
    checked = one(person(forceChangePassword=typed))
    assert checked.status is Status.VALID
    assert checked.user.forceChangePassword is expected


@pytest.mark.parametrize("typed", ["maybe", "2", "truee", "oui"])
def test_force_change_password_other_words_are_invalid(typed: str) -> None:
    checked = one(person(forceChangePassword=typed))
    assert codes(checked) == [Code.FIELD_INVALID]
    assert checked.problems[0].field == "forceChangePassword"
    assert repr(typed) in checked.problems[0].message


# -------------------------------------------------------------------------------------------------- customers


def test_rows_use_their_own_customer_and_fall_back_to_the_default() -> None:
    sheet = make_sheet(
        [
            person(userPrincipalName="a@woodgrove.com", customerTenantId=WOODGROVE),
            person(userPrincipalName="b@contoso.com"),
            person(userPrincipalName="c@contoso.com", customerTenantId=WOODGROVE),
            person(userPrincipalName="d@woodgrove.com", customerTenantId=CONTOSO),
        ]
    )
    assert customers_in(sheet, CONTOSO) == [WOODGROVE, CONTOSO]
    facts = {CONTOSO: contoso_facts(), WOODGROVE: woodgrove_facts()}
    rows = list(validate(sheet, facts, default_customer=CONTOSO))
    assert [r.user.customerTenantId for r in rows] == [WOODGROVE, CONTOSO, WOODGROVE, CONTOSO]
    assert [codes(r) for r in rows] == [[], [], [Code.DOMAIN_UNKNOWN], [Code.DOMAIN_UNKNOWN]]
    assert WOODGROVE in message(rows[2], Code.DOMAIN_UNKNOWN)
    assert "woodgrove.com" in message(rows[2], Code.DOMAIN_UNKNOWN)


def test_a_row_without_any_customer_is_missing_one() -> None:
    sheet = make_sheet(
        [person(customerTenantId=""), person(userPrincipalName="bob@contoso.com", customerTenantId=CONTOSO)]
    )
    assert customers_in(sheet) == [CONTOSO]
    rows = list(validate(sheet, {CONTOSO: contoso_facts()}))
    assert codes(rows[0]) == [Code.FIELD_MISSING]
    assert rows[0].problems[0].field == "customerTenantId"
    assert "--customer" in rows[0].problems[0].message
    assert rows[1].status is Status.VALID


def test_customers_in_without_a_customer_column() -> None:
    sheet = make_sheet([person(), person()])
    assert customers_in(sheet, CONTOSO) == [CONTOSO]
    assert customers_in(sheet) == []


def test_facts_for_every_customer_are_required() -> None:
    sheet = make_sheet([person(customerTenantId=WOODGROVE)])
    with pytest.raises(KeyError):
        validate(sheet, {CONTOSO: contoso_facts()}, default_customer=CONTOSO)


# ------------------------------------------------------------------------------------------------- duplicates


def test_duplicates_compare_case_insensitively_and_name_the_first_row() -> None:
    sheet = make_sheet(
        [
            person(userPrincipalName="jane@contoso.com"),
            person(userPrincipalName="bob@contoso.com"),
            person(userPrincipalName="JANE@Contoso.COM"),
            person(userPrincipalName="Jane@contoso.com"),
        ],
        first_row=3,  # under Entra's version row
    )
    rows = list(validate(sheet, {CONTOSO: contoso_facts()}, default_customer=CONTOSO))
    assert [r.status for r in rows] == [Status.VALID, Status.VALID, Status.INVALID, Status.INVALID]
    for dup in rows[2:]:
        assert codes(dup) == [Code.UPN_DUPLICATE]
        text = message(dup, Code.UPN_DUPLICATE)
        assert "row 3" in text
        assert text.startswith(dup.user.userPrincipalName)


# --------------------------------------------------------------------------------------------- existing users


def test_an_existing_user_is_skipped_with_its_id() -> None:
    facts = contoso_facts(existing={"jane.doe@contoso.com": "id-jane"})
    checked = one(person(userPrincipalName="Jane.Doe@contoso.com"), facts=facts)
    assert checked.status is Status.SKIPPED
    assert checked.existing_user_id == "id-jane"
    assert codes(checked) == [Code.USER_EXISTS]
    assert "already exists in the tenant (id id-jane)" in checked.problems[0].message


def test_an_existing_user_with_other_problems_is_still_skipped_and_keeps_them() -> None:
    facts = contoso_facts(existing={"jane.doe@contoso.com": "id-jane"})
    checked = one(person(password="weak", usageLocation="CU"), facts=facts)
    assert checked.status is Status.SKIPPED
    assert checked.existing_user_id == "id-jane"
    assert set(codes(checked)) == {Code.USER_EXISTS, Code.PASSWORD_WEAK, Code.USAGE_LOCATION_INVALID}


def test_only_the_first_occurrence_of_an_existing_user_is_skipped() -> None:
    facts = contoso_facts(existing={"jane.doe@contoso.com": "id-jane"})
    first, second = check([person(), person(userPrincipalName="JANE.DOE@contoso.com")], facts=facts)
    assert first.status is Status.SKIPPED
    assert second.status is Status.INVALID
    assert codes(second) == [Code.UPN_DUPLICATE]
    assert second.existing_user_id is None


def test_unknown_existing_users_skip_nobody() -> None:
    checked = one(person(), facts=contoso_facts(existing=None))
    assert checked.status is Status.VALID


# ---------------------------------------------------------------------------------------- deleted users


def with_deleted(*deleted: DeletedUser, existing: dict[str, str] | None = None) -> CustomerFacts:
    facts = contoso_facts(existing=existing if existing is not None else {})
    facts.deleted_users = {d.userPrincipalName.casefold(): d for d in deleted}
    return facts


def test_a_upn_of_a_deleted_user_is_flagged_with_when_and_what_to_do() -> None:
    binned = DeletedUser("id-old", "Jane.Doe@contoso.com", "2026-11-20T09:30:00.000000Z")
    checked = one(person(userPrincipalName="JANE.DOE@Contoso.com"), facts=with_deleted(binned))
    assert checked.status is Status.INVALID
    assert codes(checked) == [Code.USER_DELETED]
    assert checked.deleted_user == binned and checked.existing_user_id is None
    text = message(checked, Code.USER_DELETED)
    assert "recycle bin since 2026-11-20 09:30 UTC" in text and "id-old" in text
    assert "--restore-deleted" in text and "change the UPN" in text


def test_a_deleted_user_without_a_deletion_time_says_no_time() -> None:
    checked = one(person(), facts=with_deleted(DeletedUser("id-old", "jane.doe@contoso.com", None)))
    assert "recycle bin, which keeps" in message(checked, Code.USER_DELETED)


def test_an_active_namesake_wins_and_a_repeat_is_only_a_duplicate() -> None:
    binned = DeletedUser("id-old", "jane.doe@contoso.com", None)
    (exists,) = check([person()], facts=with_deleted(binned, existing={"jane.doe@contoso.com": "id-new"}))
    assert exists.status is Status.SKIPPED and codes(exists) == [Code.USER_EXISTS]
    first, second = check([person(), person()], facts=with_deleted(binned))
    assert codes(first) == [Code.USER_DELETED] and codes(second) == [Code.UPN_DUPLICATE]


def test_deleted_users_unknown_flag_nobody() -> None:
    assert one(person(), facts=contoso_facts(existing={})).status is Status.VALID


# ---------------------------------------------------------------------------------------------------- counts


def test_counts_and_problem_counts() -> None:
    facts = contoso_facts(existing={"old@contoso.com": "id-old"})
    sheet = make_sheet(
        [
            person(),
            person(userPrincipalName="old@contoso.com"),
            person(userPrincipalName="x@fabrikam.com", displayName=""),
            person(userPrincipalName="y@contoso.com", displayName="", usageLocation=""),
            person(userPrincipalName="JANE.DOE@contoso.com"),
        ]
    )
    result = validate(sheet, {CONTOSO: facts}, default_customer=CONTOSO)
    assert len(result) == 5
    assert result.counts == {Status.VALID: 1, Status.INVALID: 3, Status.SKIPPED: 1}
    assert result.problem_counts == {
        Code.FIELD_MISSING: 3,
        Code.DOMAIN_FEDERATED: 1,
        Code.USER_EXISTS: 1,
        Code.UPN_DUPLICATE: 1,
    }
    rows = list(result)
    assert list(result) == rows  # iterable more than once, same answer
    by_status = {s: sum(r.status is s for r in rows) for s in Status if s in result.counts}
    assert by_status == result.counts


@pytest.mark.parametrize("dtype", ["str", "object"])
def test_any_text_dtype_and_index(dtype: str) -> None:
    sheet = make_sheet([person(usageLocation="us"), person(userPrincipalName="bad")], dtype=dtype)
    frame = sheet.frame.set_axis([10, 30], axis=0)  # the reader's index after dropping blank rows has gaps
    frame.loc[30, "immutableId"] = None  # a hand-made frame with a missing cell still works
    rows = list(
        validate(
            FakeSheet(frame, sheet.present, sheet.path), {CONTOSO: contoso_facts()}, default_customer=CONTOSO
        )
    )
    assert [r.status for r in rows] == [Status.VALID, Status.INVALID]
    assert rows[0].user.usageLocation == "US"
    assert rows[1].user.immutableId == ""


# ------------------------------------------------------------------------------------------------ check_columns


ALL_COLUMNS = {"userPrincipalName", "displayName", "usageLocation", "password", "firstName", "lastName"}


def test_check_columns_accepts_a_complete_sheet() -> None:
    check_columns(make_sheet([], present=ALL_COLUMNS), default_customer=CONTOSO)
    check_columns(make_sheet([], present=ALL_COLUMNS | {"customerTenantId"}))


def test_check_columns_names_every_missing_column_in_one_line() -> None:
    sheet = make_sheet([], present={"firstName", "displayName"})
    with pytest.raises(InputError) as caught:
        check_columns(sheet, default_customer=CONTOSO)
    text = caught.value.message
    assert caught.value.exit_code == 2
    assert "\n" not in text
    assert text.startswith("/tmp/new-hires.xlsx: ")
    missing, found = text.split("; columns found: ")
    assert "userPrincipalName, usageLocation, password" in missing and "displayName" not in missing
    assert "--usage-location CODE and --generate-passwords PATH.xlsx" in missing  # the fix, named
    assert found == "displayName, firstName"  # a header typo shows at once


def test_options_stand_in_for_columns() -> None:
    sheet = make_sheet([], present={"userPrincipalName", "displayName"})
    check_columns(sheet, generate_passwords=True, default_usage_location="us", default_customer=CONTOSO)
    with pytest.raises(
        InputError,
        match=r"missing required column: password \(add the column, or give "
        r"--generate-passwords PATH.xlsx\); columns found: displayName, userPrincipalName$",
    ):
        check_columns(sheet, default_usage_location="US", default_customer=CONTOSO)


def test_check_columns_needs_a_customer() -> None:
    with pytest.raises(InputError, match="give --customer or a customerTenantId column"):
        check_columns(make_sheet([], present=ALL_COLUMNS))


@pytest.mark.parametrize(
    ("default", "says"),
    [
        ("CU", "CU is not a country"),
        ("USA", "US (United States)"),
        ("", ""),
        ("uk", "UK is not an ISO country code: did you mean GB?"),
    ],
)
def test_check_columns_refuses_an_invalid_default_usage_location(default: str, says: str) -> None:
    sheet = make_sheet([], present=ALL_COLUMNS - {"usageLocation"})
    with pytest.raises(InputError, match="--usage-location") as caught:
        check_columns(sheet, default_usage_location=default, default_customer=CONTOSO)
    assert says in caught.value.message


# ------------------------------------------------------------------------------------------------------ scale


def test_two_hundred_thousand_rows() -> None:
    n = 200_000
    frame = pd.DataFrame(
        {
            "row": pd.Series(range(2, n + 2), dtype="int64"),
            "userPrincipalName": pd.Series([f"user{i}@contoso.com" for i in range(n)], dtype="str"),
            "firstName": "First",
            "lastName": "Last",
            "displayName": "First Last",
            "usageLocation": "US",
            "immutableId": "",
            "password": STRONG,
            "forceChangePassword": "",
            "customerTenantId": "",
            "licenses": "",
        }
    ).astype({name: "str" for name in FIELDS})
    bad = {
        7: ("userPrincipalName", "user 7@contoso.com", Code.UPN_SYNTAX),
        9_000: ("usageLocation", "CU", Code.USAGE_LOCATION_INVALID),  # past the first chunk of rows
        123_456: ("password", "password", Code.PASSWORD_WEAK),
        150_000: ("userPrincipalName", "USER3@contoso.com", Code.UPN_DUPLICATE),
        199_999: ("userPrincipalName", "user199999@fabrikam.com", Code.DOMAIN_FEDERATED),
    }
    for position, (field, value, _) in bad.items():
        frame.loc[position, field] = value
    facts = contoso_facts(existing={"user42@contoso.com": "id-42"})
    result = validate(
        FakeSheet(frame, frozenset(FIELDS), Path("big.csv")), {CONTOSO: facts}, default_customer=CONTOSO
    )
    assert len(result) == n
    assert result.counts == {Status.VALID: n - 6, Status.INVALID: 5, Status.SKIPPED: 1}
    seen = 0
    for position, checked in enumerate(result):
        assert checked.user.row == position + 2
        seen += 1
        if position in bad:
            assert codes(checked) == [bad[position][2]], position
        elif position == 42:
            assert checked.status is Status.SKIPPED and checked.existing_user_id == "id-42"
        else:
            assert checked.status is Status.VALID
    assert seen == n


def test_a_huge_upn_cell_is_shortened_in_its_message() -> None:
    pasted = "jane " * 2000 + "@contoso.com"
    text = message(one(person(userPrincipalName=pasted)), Code.UPN_SYNTAX)
    assert "10012 characters long" in text
    assert len(text) < 600
