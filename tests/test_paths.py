from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

import pytest

from bulkonboard.app.paths import default_journal, expand, state_dir
from bulkonboard.errors import InputError


def test_placeholders_expand_so_nightly_runs_never_overwrite_each_other() -> None:
    now = datetime(2026, 11, 24, 23, 1, 5)
    assert expand(Path("out/results-{date}.xlsx"), now=now) == Path("out/results-2026-11-24.xlsx")
    assert expand(Path("r-{customer}-{datetime}.xlsx"), now=now, customer="c1") == Path(
        "r-c1-2026-11-24T230105.xlsx"
    )
    assert expand(Path("plain.xlsx"), now=now) == Path("plain.xlsx")


def test_unknown_placeholder_is_an_input_error() -> None:
    with pytest.raises(InputError, match="unknown placeholder"):
        expand(Path("r-{day}.xlsx"), now=datetime(2026, 1, 1))


def test_journal_is_per_service_and_customer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert state_dir() == tmp_path / "bulkonboard"
    real = default_journal("https://api.partnercenter.microsoft.com", "3c9a")
    sandbox = default_journal("http://127.0.0.1:8080", "3c9a")
    assert real != sandbox
    assert real == tmp_path / "bulkonboard/journals/api.partnercenter.microsoft.com/3c9a.sqlite"
    assert default_journal("http://x", "../../etc").name == "_etc.sqlite"


def test_journal_name_ignores_the_case_of_the_tenant_id(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_journal("http://x", "3C9A-AB") == default_journal("http://x", "3c9a-ab")


@pytest.mark.parametrize(
    "customer", ["../../x", "..", "a/b", "a\\b", "x/../../y", "/etc", ".hidden", "a b", "c..d"]
)
def test_a_customer_that_could_lead_the_path_elsewhere_is_refused(customer: str) -> None:
    with pytest.raises(InputError, match="tenant GUID or a domain") as caught:
        expand(Path("out/r-{customer}.xlsx"), now=datetime(2026, 1, 1), customer=customer)
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(
    "customer", ["3c9a8f12-5e6b-4c1d-9a7e-2f4b8d6c1e90", "contoso.onmicrosoft.com", "bücher.de"]
)
def test_a_guid_or_a_domain_fills_the_customer_placeholder(customer: str) -> None:
    assert expand(Path("r-{customer}.xlsx"), now=datetime(2026, 1, 1), customer=customer) == Path(
        f"r-{customer}.xlsx"
    )
    # without the placeholder the customer is not part of any path, and is left to validation
    assert expand(Path("r.xlsx"), now=datetime(2026, 1, 1), customer="../x") == Path("r.xlsx")


def test_without_xdg_the_state_lives_where_the_platform_keeps_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not Linux-only: Windows and macOS admins get their platform's folder (platformdirs), Linux keeps XDG's."""
    import platformdirs

    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    assert state_dir() == Path(platformdirs.user_state_dir("bulkonboard", appauthor=False))
    if sys.platform.startswith("linux"):
        assert state_dir() == Path.home() / ".local" / "state" / "bulkonboard"
    monkeypatch.setattr(
        platformdirs, "user_state_dir", lambda *_, **__: r"C:\Users\ann\AppData\Local\bulkonboard"
    )
    assert state_dir() == Path(r"C:\Users\ann\AppData\Local\bulkonboard")


def test_the_config_folder_is_xdgs_on_linux_and_the_platforms_elsewhere(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import platformdirs

    from bulkonboard.defaults import user_config_dir

    assert user_config_dir({"XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "bulkonboard"
    monkeypatch.setattr(sys, "platform", "linux")
    assert user_config_dir({}, home=tmp_path) == tmp_path / ".config" / "bulkonboard"
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(
        platformdirs, "user_config_dir", lambda *_, **__: "/Users/ann/Library/Application Support/bulkonboard"
    )
    assert user_config_dir({}, home=tmp_path) == Path("/Users/ann/Library/Application Support/bulkonboard")


def test_the_run_lock_uses_a_portable_lock_library_not_fcntl() -> None:
    """fcntl does not exist on Windows: the lock module must not need it (portalocker picks the platform's lock)."""
    source = (Path(__file__).parents[1] / "bulkonboard" / "journal" / "lock.py").read_text(encoding="utf-8")
    assert "import fcntl" not in source and "import portalocker" in source
    assert "os.pread" not in source and "os.pwrite" not in source  # POSIX-only calls
