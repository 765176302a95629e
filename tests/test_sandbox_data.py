"""The sandbox's data file, its own field rules, its options and its sliding window (no HTTP here)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from bulkonboard.errors import InputError
from bulkonboard.sandbox import SandboxDataError, SandboxOptions, load_data, parse_data, parse_rate_limit
from bulkonboard.sandbox.data import stable_user_id
from bulkonboard.sandbox.faults import Faults, SlidingWindow
from bulkonboard.sandbox.rules import (
    password_problem,
    supported_usage_locations,
    upn_problem,
    usage_location_ok,
)

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "sandbox.toml"
CONTOSO = "3c9a8f12-5e6b-4c1d-9a7e-2f4b8d6c1e90"
NORTHWIND = "7d2e4b61-0c3a-4f8e-b5d9-1a6c3e8f2b47"

MINIMAL = """
[[customers]]
id = "{id}"
name = "Tiny"
domains = [ {{ name = "tiny.onmicrosoft.com", authenticationType = "Managed" }}, {{ name = "tiny.com", authenticationType = "managed" }} ]
"""


def test_the_sample_has_what_the_contract_and_the_demo_need() -> None:
    data = load_data(SAMPLE)
    contoso = data.customer(CONTOSO.upper())
    northwind = data.customer(NORTHWIND)
    assert contoso is not None and northwind is not None
    assert contoso.name == "Contoso" and contoso.initial_domain.name == "contoso.onmicrosoft.com"
    kinds = {d.name: (d.authentication_type, d.is_initial, d.is_default) for d in contoso.domains}
    assert kinds == {
        "contoso.onmicrosoft.com": ("Managed", True, False),
        "contoso.com": ("Managed", False, True),
        "contoso.co.uk": ("Managed", False, False),
        "fabrikam.com": ("Federated", False, False),
    }
    users = {u.userPrincipalName: u for u in contoso.users}
    assert set(users) == {"jane.doe@contoso.com", "wei.zhang@contoso.com"}
    assert (users["jane.doe@contoso.com"].displayName, users["jane.doe@contoso.com"].usageLocation) == (
        "Jane Doe",
        "US",
    )
    assert users["wei.zhang@contoso.com"].usageLocation == "CN"
    assert users["jane.doe@contoso.com"].id == stable_user_id(CONTOSO, "JANE.DOE@contoso.com")
    assert northwind.initial_domain.name == "northwind.onmicrosoft.com"
    assert {d.name for d in northwind.domains} == {"northwind.onmicrosoft.com", "northwindtraders.com"}
    assert len(northwind.users) == 1


def test_initial_and_default_domains_are_filled_in() -> None:
    data = parse_data(MINIMAL.format(id=str(uuid.UUID(int=1))))
    tiny = data.customers[0]
    assert tiny.initial_domain.name == "tiny.onmicrosoft.com" and tiny.initial_domain.is_default
    assert [d.authentication_type for d in tiny.domains] == ["Managed", "Managed"]  # spelling normalised


def test_an_explicit_user_id_is_kept_and_guids_are_normalised() -> None:
    text = MINIMAL.format(id="{" + str(uuid.UUID(int=1)).upper() + "}") + (
        '[[customers.users]]\nid = "0AAAAAAA-0000-4000-8000-000000000001"\nuserPrincipalName = "a@tiny.com"\ndisplayName = "A"\n'
    )
    tiny = parse_data(text).customers[0]
    assert tiny.id == str(uuid.UUID(int=1))
    assert tiny.users[0].id == "0aaaaaaa-0000-4000-8000-000000000001"


def test_the_contracts_own_example_id_is_accepted() -> None:
    """The contract shows `id = "3c9a...-guid"`: a rehearsal file may use readable ids."""
    assert parse_data(MINIMAL.format(id="3c9a...-guid")).customers[0].id == "3c9a...-guid"


GOOD_ID = str(uuid.UUID(int=1))
BAD_FILES = [
    pytest.param("[[customers]\nid = 1", "not valid TOML", id="toml-syntax"),
    pytest.param("", "no [[customers]]", id="empty"),
    pytest.param("title = 'x'\n", "unknown top-level key", id="top-level-typo"),
    pytest.param(
        MINIMAL.format(id="not a/guid"), "customers[0]: id 'not a/guid' is neither a GUID", id="id-not-an-id"
    ),
    pytest.param(
        MINIMAL.format(id=GOOD_ID) + MINIMAL.format(id=GOOD_ID.upper()),
        "appears twice",
        id="duplicate-customer",
    ),
    pytest.param(
        MINIMAL.format(id=GOOD_ID).replace('name = "Tiny"', 'nmae = "Tiny"'),
        "unknown key 'nmae'",
        id="key-typo",
    ),
    pytest.param(
        MINIMAL.format(id=GOOD_ID).replace('"managed"', '"Cloud"'),
        "domains[1]: authenticationType must be Managed or Federated",
        id="auth-type",
    ),
    pytest.param(
        MINIMAL.format(id=GOOD_ID).replace('authenticationType = "managed"', 'authType = "Managed"'),
        "unknown key 'authType'",
        id="domain-key-typo",
    ),
    pytest.param(
        MINIMAL.format(id=GOOD_ID)
        .replace('"Managed" }', '"Managed", isInitial = true }')
        .replace('"managed" }', '"managed", isInitial = true }'),
        "more than one domain has isInitial",
        id="two-initial",
    ),
    pytest.param(
        MINIMAL.format(id=GOOD_ID).replace('"managed" }', '"managed", isDefault = "yes" }'),
        "isDefault must be true or false",
        id="flag-not-bool",
    ),
    pytest.param(
        MINIMAL.format(id=GOOD_ID).replace('"tiny.com"', '"tiny.onmicrosoft.com"'),
        "appears twice",
        id="duplicate-domain",
    ),
    pytest.param(
        f'[[customers]]\nid = "{GOOD_ID}"\ndomains = []\n',
        "domains must be a non-empty list",
        id="no-domains",
    ),
    pytest.param(
        MINIMAL.format(id=GOOD_ID)
        + '[[customers.users]]\nuserPrincipalName = "a@other.com"\ndisplayName = "A"\n',
        "users[0]: userPrincipalName a@other.com: other.com is not one of this customer's domains",
        id="user-domain",
    ),
    pytest.param(
        MINIMAL.format(id=GOOD_ID) + '[[customers.users]]\nuserPrincipalName = "a@tiny.com"\n',
        "users[0]: displayName is required",
        id="user-no-display-name",
    ),
    pytest.param(
        MINIMAL.format(id=GOOD_ID)
        + '[[customers.users]]\nuserPrincipalName = "a@tiny.com"\ndisplayName = "A"\nusageLocation = "CU"\n',
        "usageLocation 'CU'",
        id="user-usage-location",
    ),
    pytest.param(
        MINIMAL.format(id=GOOD_ID)
        + '[[customers.users]]\nuserPrincipalName = "a@tiny.com"\ndisplayName = "A"\n' * 2,
        "users[1]: userPrincipalName a@tiny.com appears twice",
        id="duplicate-user",
    ),
    pytest.param(
        MINIMAL.format(id=GOOD_ID)
        + '[[customers.users]]\nuserPrincipalName = "a b@tiny.com"\ndisplayName = "A"\n',
        "is invalid",
        id="user-upn-syntax",
    ),
    pytest.param(
        MINIMAL.format(id=GOOD_ID)
        + '[[customers.users]]\nuserPrincipalName = "a@tiny.com"\ndisplayName = "A"\npassword = "x"\n',
        "unknown key 'password'",
        id="user-password-key",
    ),
]


@pytest.mark.parametrize("text,expected", BAD_FILES)
def test_a_bad_data_file_is_one_clear_line(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SandboxDataError) as caught:
        load_data(path)
    message = str(caught.value)
    assert expected in message
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert isinstance(caught.value, InputError) and caught.value.exit_code == 2


def test_a_missing_data_file_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(SandboxDataError, match="cannot read the sandbox data file"):
        load_data(tmp_path / "nope.toml")


def test_no_data_means_the_sample_in_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    assert load_data(None).customer(CONTOSO) is not None
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples/sandbox.toml").write_text(MINIMAL.format(id=str(uuid.UUID(int=7))), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert [c.id for c in load_data(None).customers] == [str(uuid.UUID(int=7))]  # the folder's own sample wins


# ---------------------------------------------------------------------------------------------------------------
# The sandbox's own reading of Entra's rules


@pytest.mark.parametrize(
    "password,ok",
    [
        ("abcDEF12", True),
        ("abcdef12", False),  # two classes
        ("ABCDEF!!", False),
        ("aB1!", False),  # too short
        ("aB1!aB1", False),  # 7
        ("aB1!aB1!", True),  # 8
        ("a" * 250 + "B1!" + "cde", True),  # 256
        ("a" * 251 + "B1!" + "cde", False),  # 257
        ("Abc def 1", True),  # space is an allowed symbol
        ("Abcdefg1€", False),  # not an allowed symbol
        ("Abcdefg1\n", False),
        ('abc\\DEF"1', True),
    ],
)
def test_password_rules(password: str, ok: bool) -> None:
    problem = password_problem(password)
    assert (problem is None) == ok
    if problem is not None:
        assert password not in problem


@pytest.mark.parametrize(
    "upn,ok",
    [
        ("a@contoso.com", True),
        ("o'brien.x-y_z!#^~@contoso.com", True),
        ("a.@contoso.com", False),
        ("a", False),
        ("a@", False),
        ("@contoso.com", False),
        ("a@@contoso.com", False),
        ("a+b@contoso.com", False),
        ("x" * 64 + "@contoso.com", True),
        ("x" * 65 + "@contoso.com", False),
        ("a@" + "d" * 44 + ".com", True),  # 48 after the @
        ("a@" + "d" * 45 + ".com", False),  # 49
        ("x" * 64 + "@" + "d" * 44 + ".com", True),  # 113 in all
    ],
)
def test_upn_rules(upn: str, ok: bool) -> None:
    assert (upn_problem(upn) is None) == ok


def test_usage_locations_are_partner_centers_not_isos() -> None:
    codes = supported_usage_locations()
    assert len(codes) == 248
    assert {"XK", "XJ", "XS", "XE", "AN", "US", "NA"} <= codes
    assert not {"CU", "IR", "KP", "SY", "SD"} & codes
    assert usage_location_ok("us") and not usage_location_ok("USA") and not usage_location_ok("")


# ---------------------------------------------------------------------------------------------------------------
# Options and faults


@pytest.mark.parametrize(
    "text,expected",
    [
        ("30", (30, 60.0)),
        ("20/1s", (20, 1.0)),
        ("20/1", (20, 1.0)),
        ("20/s", (20, 1.0)),
        ("5/0.5s", (5, 0.5)),
        (" 100/10s ", (100, 10.0)),
    ],
)
def test_parse_rate_limit(text: str, expected: tuple[int, float]) -> None:
    assert parse_rate_limit(text) == expected


@pytest.mark.parametrize("text", ["", "x", "0", "-1", "20/", "30s", "20/0s", "20/1m", "1.5"])
def test_parse_rate_limit_refuses_nonsense(text: str) -> None:
    with pytest.raises(ValueError, match="rate limit|window"):
        parse_rate_limit(text)


@pytest.mark.parametrize(
    "changes",
    [
        {"fail_rate": 1.5},
        {"drop_rate": -0.1},
        {"latency_ms": -1},
        {"page_size": 0},
        {"rate_limit": (0, 60.0)},
        {"token": ""},
    ],
)
def test_options_refuse_nonsense(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SandboxOptions(**changes)  # type: ignore[arg-type]


def test_options_repr_hides_the_token() -> None:
    assert "s3cret" not in repr(SandboxOptions(token="s3cret"))


def test_sliding_window_counts_admissions_only() -> None:
    now = [0.0]
    window = SlidingWindow(3, 60.0, clock=lambda: now[0])
    assert [window.try_admit() for _ in range(2)] == [None, None]
    now[0] = 30.0
    assert window.try_admit() is None
    assert window.try_admit() == 30  # the t=0 admissions leave at t=60
    now[0] = 59.5
    assert window.try_admit() == 1  # rounded up, never 0
    now[0] = 60.0
    assert [window.try_admit(), window.try_admit(), window.try_admit()] == [None, None, 30]
    assert window.usage() == 1.0
    now[0] = 90.0
    assert window.usage() == pytest.approx(2 / 3)


def test_fault_draws_depend_only_on_the_seed() -> None:
    def fates(seed: int) -> list[tuple[bool, bool]]:
        faults = Faults(SandboxOptions(seed=seed, fail_rate=0.3, drop_rate=0.3))
        return [(f.fail, f.drop) for f in (faults.draw() for _ in range(200))]

    assert fates(1) == fates(1)
    assert fates(1) != fates(2)
    fails = sum(fail for fail, _ in fates(1))
    assert 30 < fails < 90  # about 30 % of 200
    never = Faults(SandboxOptions(seed=1))
    assert not any(f.fail or f.drop for f in (never.draw() for _ in range(100)))


def test_the_packaged_sample_is_the_repositorys_sample() -> None:
    """`--sandbox` from any folder uses the packaged copy: it must not drift from samples/sandbox.toml."""
    root = Path(__file__).resolve().parent.parent
    assert (root / "bulkonboard/sandbox/sample.toml").read_bytes() == (root / "samples/sandbox.toml").read_bytes()


def test_without_samples_in_the_folder_the_packaged_copy_serves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    data = load_data(None)
    assert {c.name for c in data.customers} >= {"Contoso"}
