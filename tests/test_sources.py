"""One way to pick a source: the options resolve to one mode (or exit 2 with the fix) before anything is opened."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bulkonboard.app.sources import SourceChoice, SourceMode, connect
from bulkonboard.errors import InputError
from bulkonboard.sheets.facts import DomainsFile
from tests.support import ROOT

DOMAINS = Path("domains.csv")


@pytest.mark.parametrize(
    ("options", "mode", "name"),
    [
        ({}, SourceMode.PARTNER_CENTER, "Partner Center at https://api.partnercenter.microsoft.com"),
        ({"access_token": "t", "domains": DOMAINS}, SourceMode.PARTNER_CENTER, "Partner Center at"),
        ({"sandbox": True}, SourceMode.EMBEDDED_SANDBOX, "embedded sandbox"),
        ({"sandbox": True, "domains": DOMAINS}, SourceMode.EMBEDDED_SANDBOX, "embedded sandbox"),
        ({"sandbox_url": "http://127.0.0.1:8080"}, SourceMode.SANDBOX_URL, "sandbox at http://127.0.0.1:8080"),
        ({"domains": DOMAINS}, SourceMode.DOMAINS_FILE, "domains file domains.csv"),
    ],
)
def test_the_options_pick_one_mode(options: dict[str, Any], mode: SourceMode, name: str) -> None:
    choice = SourceChoice.pick(**options)
    assert choice.mode is mode
    assert choice.name.startswith(name)
    assert choice.offline is (mode is SourceMode.DOMAINS_FILE)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"sandbox": True, "sandbox_url": "http://127.0.0.1:8080"}, "either --sandbox or --sandbox-url"),
        ({"sandbox_data": Path("x.toml")}, "--sandbox-data goes with --sandbox"),
        ({"sandbox_url": "127.0.0.1:8080"}, "add http://"),
        ({"base_url": "ftp://example.com"}, "must start with http:// or https://"),
    ],
)
def test_a_combination_that_cannot_work_is_refused_with_the_fix(options: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InputError, match=fragment.replace("(", r"\(")):
        SourceChoice.pick(**options)


def test_only_a_token_for_the_real_service_is_a_secret_to_warn_about() -> None:
    assert SourceChoice.pick(access_token="t").token_on_command_line_matters
    assert not SourceChoice.pick(access_token="t", sandbox_url="http://127.0.0.1:1").token_on_command_line_matters


async def test_the_domains_file_alone_opens_no_client() -> None:
    domains = ROOT / "samples" / "domains.csv"
    async with connect(SourceChoice.pick(domains=domains), correlation_id="c") as connection:
        assert isinstance(connection.facts, DomainsFile)
        assert connection.partner_center is None and not connection.embedded


async def test_an_embedded_sandbox_needs_a_starter_from_the_caller() -> None:
    # app never imports the emulator: a caller that offers --sandbox hands in how to start one.
    with pytest.raises(InputError, match="cannot start an embedded sandbox"):
        async with connect(SourceChoice.pick(sandbox=True), correlation_id="c"):
            pass
