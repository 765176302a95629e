"""README's shell blocks run as written, so its examples cannot drift from the program.

Every ```sh block of README.md is a test case, found anew each run (a section another helper appends is picked up
with no change here). A block is skipped only when the line just before its fence says so, visibly:

    <!-- readme-test: skip: needs a real Microsoft sign-in -->

The blocks run in README's order in one temporary folder, as a reader pastes them one after the other: it holds
a copy of `samples/` and the venv under test as `.venv` (so `. .venv/bin/activate` works as typed), with that venv's real `bulkonboard` first on PATH, HOME and the state
folders in the temporary folder, and every port the block names swapped for a free one (two test runs on one
machine never fight over 8765). The block passes when every command in it exits 0, except `bulkonboard run` or
`validate`, which may exit 1 (README says the sample has deliberate mistakes), and no traceback is printed.
A command that fails is caught by bash's ERR trap, which names it and its exit code.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import ROOT, clean_env

README = ROOT / "README.md"
SKIP_MARKER = re.compile(r"<!--\s*readme-test:\s*skip:\s*(?P<reason>.+?)\s*-->")
#: A command's failure, as the ERR trap reports it on fd 3: "exit:CODE:COMMAND".
TRAP = "trap 'echo \"exit:$?:$BASH_COMMAND\" >&3' ERR\n"
#: bulkonboard's documented "rows to fix": the README's sample sheet has deliberate mistakes.
ROWS_TO_FIX = re.compile(r"^(\w+=\S+\s+)*(\S*/)?bulkonboard (run|validate)\b")
BLOCK_TIMEOUT = 240
SANDBOX_DEFAULT_PORT = 8765


@dataclass(frozen=True)
class Block:
    heading: str
    line: int
    text: str
    skip_reason: str | None

    @property
    def ident(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.heading.lower()).strip("-")
        return f"{slug}-line{self.line}"


def readme_blocks(text: str) -> list[Block]:
    """The ```sh blocks, each with the heading above it and the skip marker on the line before its fence."""
    blocks: list[Block] = []
    lines = text.splitlines()
    heading, index = "top", 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        if line.strip() in ("```sh", "```bash", "```shell"):
            end = next(i for i in range(index + 1, len(lines)) if lines[i].strip() == "```")
            before = lines[index - 1] if index else ""
            marker = SKIP_MARKER.search(before)
            body = "\n".join(lines[index + 1 : end]) + "\n"
            blocks.append(Block(heading, index + 1, body, marker.group("reason") if marker else None))
            index = end
        index += 1
    return blocks


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def with_free_ports(text: str) -> str:
    """Every port the block binds (`--port N`, or the sandbox's default) swapped, wherever it appears, for one free
    now."""
    text = re.sub(
        r"(?m)^(\s*bulkonboard sandbox)(?![^\n]*--port)", rf"\1 --port {SANDBOX_DEFAULT_PORT}", text
    )
    for port in sorted(set(re.findall(r"--port (\d+)", text))):
        text = re.sub(rf"(?<![0-9]){port}(?![0-9])", str(free_port()), text)
    return text


def failures(trapped: str) -> list[str]:
    """The trapped commands that did not end as README promises."""
    bad = []
    for line in trapped.splitlines():
        match = re.fullmatch(r"exit:(\d+):(.*)", line, flags=re.S)
        if not match:
            continue
        code, command = int(match.group(1)), match.group(2).strip()
        if code == 1 and ROWS_TO_FIX.match(command):
            continue
        bad.append(f"exit {code}: {command}")
    return bad


@pytest.fixture(scope="module")
def reader_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository's folder as a reader has it: the samples and the venv, shared by the blocks in order."""
    folder = tmp_path_factory.mktemp("readme")
    shutil.copytree(ROOT / "samples", folder / "samples")
    (folder / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    return folder


def run_block(block: Block, folder: Path) -> tuple[subprocess.CompletedProcess[str], str]:
    venv = Path(sys.prefix)
    env = clean_env(
        PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}", HOME=str(folder),
        XDG_STATE_HOME=str(folder / "state"), XDG_CONFIG_HOME=str(folder / "config"), COLUMNS="80",
    )  # fmt: skip
    trapped = folder / f"trapped-{block.line}.txt"
    script = TRAP + with_free_ports(block.text)
    with trapped.open("w") as fd3:
        process = subprocess.Popen(
            ["bash", "-c", f"exec 3>&{fd3.fileno()}\n" + script], cwd=folder, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True,
            pass_fds=(fd3.fileno(),),
        )  # fmt: skip
        try:
            stdout, stderr = process.communicate(timeout=BLOCK_TIMEOUT)
        finally:  # a background sandbox the block left (or a block cut short) never outlives the test
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    return result, trapped.read_text()


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))


def test_the_readme_has_runnable_blocks_and_skips_only_marked_ones() -> None:
    assert len(BLOCKS) >= 5
    runnable = [block for block in BLOCKS if block.skip_reason is None]
    assert len(runnable) >= 4
    assert all(block.skip_reason for block in BLOCKS if "auth login" in block.text)


@pytest.mark.timeout(BLOCK_TIMEOUT + 30)
@pytest.mark.parametrize("block", BLOCKS, ids=[block.ident for block in BLOCKS])
def test_readme_block_runs_as_written(block: Block, reader_folder: Path) -> None:
    if block.skip_reason:
        pytest.skip(f"README line {block.line}: {block.skip_reason}")
    result, trapped = run_block(block, reader_folder)
    report = (
        f"README line {block.line}\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
    )
    assert failures(trapped) == [], report
    assert "Traceback" not in result.stderr + result.stdout, report
    assert "command not found" not in result.stderr, report


def test_a_failing_command_in_a_block_is_caught(tmp_path: Path) -> None:
    """The harness itself can fail: a block whose curl finds no server is reported, as the old sandbox block was."""
    port = free_port()
    block = Block("probe", 0, f"curl -s http://127.0.0.1:{port}/\nbulkonboard run --no-such-option\n", None)
    _, trapped = run_block(block, tmp_path)
    found = failures(trapped)
    assert len(found) == 2, trapped
    assert found[0].startswith("exit 7: curl")
    assert found[1].startswith("exit 2: bulkonboard run")


def test_skip_markers_and_ports_are_read_from_the_text() -> None:
    text = "# A\n<!-- readme-test: skip: needs a real Microsoft sign-in -->\n```sh\nx\n```\n## B\n```sh\ny --port 8765\n```\n"
    first, second = readme_blocks(text)
    assert first.skip_reason == "needs a real Microsoft sign-in" and second.skip_reason is None
    assert second.heading == "B"
    for command in ("bulkonboard sandbox --port 8765 &", "bulkonboard sandbox --data x.toml &"):
        swapped = with_free_ports(f"{command}\ncurl http://127.0.0.1:8765/x\n")
        port = re.search(r"--port (\d+)", swapped)
        assert port and port.group(1) != "8765" and f"127.0.0.1:{port.group(1)}/x" in swapped
