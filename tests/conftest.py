"""Fixtures the test files share (their plain helpers are in tests/support.py, one copy each)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest


@pytest.fixture
def private_tempdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every temp file made through `tempfile` lands here, so a test can see that none is left behind."""
    scratch = tmp_path / "system-temp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    return scratch


@pytest.fixture
def domains_file(tmp_path: Path) -> Path:
    """Offline facts, a domains file only (`--domains FILE`): Contoso's one managed domain, no user list."""
    path = tmp_path / "domains.csv"
    path.write_text("domain,authenticationType\ncontoso.com,Managed\n", encoding="utf-8")
    return path
