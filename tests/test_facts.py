"""The offline domain facts (`--domains FILE`) and the shared row vocabulary."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from bulkonboard.errors import InputError
from bulkonboard.model import Code, Problem, RowResult, Status, UserRow, join_problems
from bulkonboard.sheets.facts import DomainsFile


def write(tmp_path: Path, content: bytes, name: str = "domains.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def test_domains_file_compares_case_insensitively_and_knows_federation(tmp_path: Path) -> None:
    path = write(tmp_path, b"Domain, AuthenticationType\nContoso.COM,managed\nfabrikam.com,Federated\n\n")
    facts = asyncio.run(DomainsFile(path).customer_facts("c1"))
    assert facts.customer_id == "c1"
    assert facts.existing_users is None  # a file cannot say who exists
    contoso = facts.domain("contoso.com")
    assert contoso is not None and contoso.name == "Contoso.COM" and not contoso.federated
    fabrikam = facts.domain("FABRIKAM.com")
    assert fabrikam is not None and fabrikam.federated
    assert facts.domain("contoso.de") is None


def test_domains_file_reads_utf16_and_bom(tmp_path: Path) -> None:
    text = "domain,authenticationType\ncontoso.com,Managed\n"
    facts = asyncio.run(DomainsFile(write(tmp_path, text.encode("utf-16"))).customer_facts(""))
    assert set(facts.domains) == {"contoso.com"}
    facts = asyncio.run(DomainsFile(write(tmp_path, text.encode("utf-8-sig"), "b.csv")).customer_facts(""))
    assert set(facts.domains) == {"contoso.com"}


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"name,type\ncontoso.com,Managed\n", "needs the columns"),
        (b"domain,authenticationType\ncontoso.com,Cloud\n", "expected Managed or Federated"),
        (b"domain,authenticationType\n", "lists no domain"),
    ],
)
def test_bad_domains_files_are_one_clear_input_error(tmp_path: Path, content: bytes, fragment: str) -> None:
    path = write(tmp_path, content)
    with pytest.raises(InputError) as caught:
        DomainsFile(path)
    assert fragment in caught.value.message
    assert str(path) in caught.value.message
    assert caught.value.exit_code == 2


def test_missing_domains_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read"):
        DomainsFile(tmp_path / "nope.csv")


def test_user_row_keys_and_problem_text() -> None:
    user = UserRow(row=2, userPrincipalName="Ana.Lopez@Contoso.COM", password="Secret-123")
    assert user.upn_key == "ana.lopez@contoso.com"
    assert user.domain == "contoso.com"
    assert "Secret-123" not in repr(user)
    problems = (
        Problem(Code.FIELD_MISSING, "displayName is empty", "displayName"),
        Problem(Code.UPN_SYNTAX, "x"),
    )
    assert join_problems(problems) == "field.missing: displayName is empty; upn.syntax: x"
    result = RowResult(
        row=2, userPrincipalName=user.userPrincipalName, status=Status.INVALID, problems=problems
    )
    assert result.problems_text.startswith("field.missing")
    assert Status("created") is Status.CREATED


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_domains_file_says_once_that_it_cannot_know_users(tmp_path: Path) -> None:
    source = DomainsFile(write(tmp_path, b"domain,authenticationType\ncontoso.com,Managed\n"))
    logger, kept = logging.getLogger("bulkonboard"), _Kept()
    level = logger.level
    logger.addHandler(kept)  # on the logger itself: the CLI's Output may have stopped it propagating
    logger.setLevel(logging.WARNING)  # or left it at ERROR (--quiet)
    try:
        facts = [asyncio.run(source.customer_facts(c)) for c in ("c1", "c2", "c1")]
        assert source.domains.keys() == {"contoso.com"}  # what a service-backed source reads: no warning
    finally:
        logger.removeHandler(kept)
        logger.setLevel(level)
    assert all(f.existing_users is None and f.deleted_users is None for f in facts)
    assert len(kept.lines) == 1, kept.lines
    assert "recycle bin" in kept.lines[0] and "cannot know" in kept.lines[0]
