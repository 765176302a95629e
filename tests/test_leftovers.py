"""Left-overs of a killed run (a `.<name>.<hex>.tmp` beside the results, a `bulkonboard-xlsx-*` scratch folder) are
removed by the next run; a live run's never are. Through the real command, and with a real kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support import CONTOSO, ROOT, clean_env, cli, person, standalone_sandbox, write_sheet

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the liveness check is a POSIX lock")

LONG_AGO = time.time() - 3600

HOLD = """
import fcntl, os, sys
flags = os.O_RDONLY | (os.O_DIRECTORY if os.path.isdir(sys.argv[1]) else 0)
fd = os.open(sys.argv[1], flags)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()
"""


@contextmanager
def held_by_a_live_process(path: Path) -> Iterator[None]:
    """Another live run's writer: holds the lock on `path` until the block ends."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None and process.stdout.readline() == "locked\n"
        yield
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=30)


def made(path: Path, *, folder: bool = False, age: float = LONG_AGO) -> Path:
    if folder:
        path.mkdir()
        (path / "worksheet1.xml").write_text("<row/>")
    else:
        path.write_bytes(b"")
    os.utime(path, (age, age))
    return path


def run(sheet: Path, results: Path, tmpdir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli("run", sheet, "--sandbox", "--customer", CONTOSO, "--results", results, *extra),
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=clean_env(TMPDIR=str(tmpdir)),
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_the_next_run_removes_a_killed_runs_left_overs_and_never_a_live_ones(tmp_path: Path) -> None:
    out, scratch = tmp_path / "out", tmp_path / "tmp"
    out.mkdir()
    scratch.mkdir()
    dead_file = made(out / ".results-2026-12-01.xlsx.0123456789ab.tmp")
    dead_dir = made(scratch / "bulkonboard-xlsx-dead0001", folder=True)
    live_file = made(out / ".other-run.xlsx.aaaaaaaaaaaa.tmp")
    live_dir = made(scratch / "bulkonboard-xlsx-live0001", folder=True)
    just_made = made(out / ".starting.xlsx.bbbbbbbbbbbb.tmp", age=time.time())  # its writer may lock it any moment
    not_ours = [
        made(out / ".notes.txt.0123456789ab.tmp"),
        made(out / ".results.xlsx.NOTHEX000000.tmp"),
        made(scratch / "bulkonboard-other", folder=True),
        made(scratch / "someone-xlsx-dead0001", folder=True),
    ]
    sheet = write_sheet(tmp_path / "hires.csv", [person(1)])
    with held_by_a_live_process(live_file), held_by_a_live_process(live_dir):
        result = run(sheet, out / "results.xlsx", scratch)
    assert result.returncode == 0, result.stderr
    assert (out / "results.xlsx").exists()
    assert not dead_file.exists() and not dead_dir.exists()
    assert live_file.exists() and live_dir.exists() and (live_dir / "worksheet1.xml").exists()
    assert just_made.exists()
    assert all(path.exists() for path in not_ours)
    # and this run left nothing of its own behind
    assert sorted(p.name for p in scratch.iterdir()) == sorted(
        ["bulkonboard-xlsx-live0001", "bulkonboard-other", "someone-xlsx-dead0001"]
    )


def test_after_a_kill_9_the_next_run_cleans_up(tmp_path: Path) -> None:
    out, scratch = tmp_path / "out", tmp_path / "tmp"
    out.mkdir()
    scratch.mkdir()
    sheet = write_sheet(tmp_path / "hires.csv", [person(n) for n in range(1, 201)])
    journal = tmp_path / "journal.sqlite"
    with standalone_sandbox("--latency-ms", "100") as sandbox:
        process = subprocess.Popen(
            cli("run", sheet, "--sandbox-url", sandbox.url, "--customer", CONTOSO, "--journal", journal,
                "--results", out / "results.xlsx", "--concurrency", "1", "--rate", "50"),
            cwd=ROOT, env=clean_env(TMPDIR=str(scratch)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while not (list(out.glob(".results.xlsx.*.tmp")) and list(scratch.glob("bulkonboard-xlsx-*"))):
                assert process.poll() is None and time.monotonic() < deadline, "the run never started writing"
                time.sleep(0.05)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
    left = [*out.glob(".results.xlsx.*.tmp"), *scratch.glob("bulkonboard-xlsx-*")]
    assert len(left) == 2
    for path in left:  # the clean-up leaves anything younger than a few seconds alone: this is an hour later
        os.utime(path, (LONG_AGO, LONG_AGO))

    result = run(write_sheet(tmp_path / "next.csv", [person(500)]), out / "next.xlsx", scratch)
    assert result.returncode == 0, result.stderr
    assert not any(path.exists() for path in left)
    assert list(scratch.iterdir()) == []
    assert sorted(p.name for p in out.iterdir()) == ["next.xlsx"]
