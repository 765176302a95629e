"""Fixtures the test files share (their plain helpers are in tests/support.py, one copy each)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bulkonboard.sandbox import Sandbox, SandboxOptions
from tests.sandbox_http import SAMPLE, Start


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


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: a disk that fills up. Needs root (and the right to mount) or is skipped."""
    folder = tmp_path / "disk"
    folder.mkdir()
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("a small disk needs root and the right to mount a tmpfs")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"this machine refuses a tmpfs mount: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    """Start sandboxes on port 0; every one is stopped at the end, whatever the test did."""
    started: list[Sandbox] = []

    async def _start(options: SandboxOptions | None = None, data: Any = SAMPLE, **kwargs: Any) -> Sandbox:
        box = Sandbox(data, options or SandboxOptions(seed=0), **kwargs)
        await box.start()
        started.append(box)
        return box

    yield _start
    for box in started:
        await box.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
