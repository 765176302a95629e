"""Options checked up front, through the real command: exit 2 and one line that shows the fix, before anything is
opened (no journal, no results), never "unexpected ValueError" and never exit 1."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support import CONTOSO, assert_one_clear_line, person, run_cli, write_sheet


def bulkonboard(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, timeout=120)


def refused(tmp_path: Path, *options: str, verb: str = "run") -> str:
    sheet = write_sheet(tmp_path / "hires.csv", [person(1)])
    journal = tmp_path / "journal.sqlite"
    extra = ("--journal", str(journal), "--results", str(tmp_path / "r.xlsx")) if verb == "run" else ()
    result = bulkonboard(verb, sheet, "--customer", CONTOSO, *extra, *options)
    line = assert_one_clear_line(result, 2)
    assert "unexpected" not in result.stderr
    assert not journal.exists() and not (tmp_path / "r.xlsx").exists()
    return line


@pytest.mark.parametrize("rate", ["nan", "NaN", "-inf", "-1", "0", "0.0", "fast"])
def test_a_rate_that_is_not_a_positive_number_is_refused_with_an_example(tmp_path: Path, rate: str) -> None:
    line = refused(tmp_path, "--sandbox", "--rate", rate)
    assert "--rate" in line and "above 0, e.g. --rate 20" in line


@pytest.mark.parametrize("count", ["0", "-3", "257", "many"])
def test_a_concurrency_out_of_range_is_refused_with_the_range(tmp_path: Path, count: str) -> None:
    line = refused(tmp_path, "--sandbox", "--concurrency", count)
    assert "--concurrency" in line and "1 to 256" in line


@pytest.mark.parametrize(
    ("option", "value", "fix"),
    [
        ("--sandbox-url", "ht!tp://x", "must start with http:// or https://"),
        ("--sandbox-url", "ftp://127.0.0.1:8080", "must start with http:// or https://"),
        ("--sandbox-url", "localhost:8080", "add http://, as in --sandbox-url http://localhost:8080"),
        ("--sandbox-url", "127.0.0.1:8080", "add http://, as in --sandbox-url http://127.0.0.1:8080"),
        ("--sandbox-url", "http://127.0.0.1:99999", "the port must be a number"),
        ("--sandbox-url", "http://127.0.0.1:80a", "the port must be a number"),
        ("--sandbox-url", "http:///users", "names no host"),
        ("--sandbox-url", "http://exa mple", "no spaces"),
        ("--base-url", "api.partnercenter.microsoft.com", "add https://, as in --base-url https://api.partner"),
        ("--base-url", "ht!tp://x", "must start with http:// or https://"),
        ("--graph-url", "localhost:9/graph/{tenant}", "add http://, as in --graph-url http://localhost:9/graph/{tenant}"),
        ("--graph-url", "https://", "names no host"),
    ],
)
def test_every_url_option_is_checked_up_front_and_the_line_shows_the_fix(
    tmp_path: Path, option: str, value: str, fix: str
) -> None:
    line = refused(tmp_path, option, value, "--access-token", "t", "--domains", str(tmp_path / "d.csv"))
    assert option in line and fix in line


@pytest.mark.parametrize(
    ("value", "fix"),
    [
        ("http://admin:Hunter2secret@127.0.0.1:9", "carries no user name or password"),
        ("admin:Hunter2secret@localhost:9", "add http://, as in --sandbox-url http://localhost:9"),
        ("ht!tp://admin:Hunter2secret@x", "must start with http:// or https://"),
    ],
)
def test_a_url_with_a_password_is_refused_without_showing_it(tmp_path: Path, value: str, fix: str) -> None:
    """Sign-in is by token; a password in a URL would reach the journal's service identity and every log line (it
    used to end in "unexpected ValueError", exit 4, with the password on stderr)."""
    line = refused(tmp_path, "--sandbox-url", value)
    assert fix in line and "***@" in line
    assert "Hunter2secret" not in line and "admin" not in line


def test_validate_checks_urls_too(tmp_path: Path) -> None:
    line = refused(tmp_path, "--sandbox-url", "localhost:8080", verb="validate")
    assert "add http://" in line


def test_a_good_url_with_a_tenant_placeholder_and_a_port_is_accepted(tmp_path: Path) -> None:
    sheet = write_sheet(tmp_path / "hires.csv", [person(1)])
    result = bulkonboard(
        "validate", sheet, "--customer", CONTOSO, "--sandbox-url", "http://127.0.0.1:9", "--graph-url",
        "https://graph.example.test:8443/v1.0/{tenant}", "--report", tmp_path / "r.xlsx",
    )  # fmt: skip
    assert result.returncode == 3, result.stderr  # nothing listens on port 9: past the checks, to the service
    assert "Traceback" not in result.stderr


def test_a_customer_placeholder_never_leads_the_results_out_of_their_folder(tmp_path: Path) -> None:
    sheet = write_sheet(tmp_path / "hires.csv", [person(1)])
    nightly = tmp_path / "a" / "b"
    nightly.mkdir(parents=True)
    result = bulkonboard(
        "run", sheet, "--sandbox", "--customer", "../../escaped", "--results", nightly / "r-{customer}.xlsx",
        "--journal", tmp_path / "j.sqlite",
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--customer '../../escaped'" in lines[0] and "Traceback" not in result.stderr
    assert not list(tmp_path.rglob("*escaped*")) and not (tmp_path / "j.sqlite").exists()
