"""The CLI's one error path, through the real program: each kind of failure, wherever it is raised, becomes its
exit code and ONE line on stderr (in the command's log format), never a traceback; a bug is exit 4, never 1.

Failures that need a fault the outside cannot cause (a bug, Ctrl-C at a chosen moment) are planted in the
app-layer call the command makes, then the program runs as installed (`program.entry`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import CONTOSO, ROOT, assert_one_clear_line, clean_env, person, run_cli, write_sheet

DOMAINS = ROOT / "samples" / "domains.csv"

PLANT = """
import sys
from bulkonboard.cli import commands
from bulkonboard.cli.program import entry
from bulkonboard.errors import OwnFailure

FAULTS = {
    "own failure": lambda: OwnFailure("the report's disk is full"),
    "bug": lambda: RuntimeError("an invariant broke\\nsecond line"),
    "ctrl-c": lambda: KeyboardInterrupt(),
}

FAULT = FAULTS[sys.argv[1]]

async def planted(*args, **kwargs):
    raise FAULT()

commands.validate_sheet = planted
sys.argv = ["bulkonboard", *sys.argv[2:]]
entry(commands.main)
"""


def with_fault(fault: str, *args: str | Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PLANT, fault, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
        timeout=120, env=clean_env(**env), stdin=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.fixture
def sheet(tmp_path: Path) -> Path:
    return write_sheet(tmp_path / "hires.csv", [person(1)])


def test_a_bad_argument_is_exit_2_with_the_way_to_help(sheet: Path) -> None:
    line = assert_one_clear_line(run_cli("run", sheet, "--customer", CONTOSO, "--sandbox", "--rate", "fast"), 2)
    assert "--rate" in line and line.endswith(" run --help`)")


def test_an_unknown_option_is_exit_2_even_before_the_log_format_is_known(sheet: Path) -> None:
    result = run_cli("validate", sheet, "--log-format", "json", "--no-such-option")
    assert_one_clear_line(result, 2, "error: No such option", "--no-such-option", "validate --help")


def test_unusable_input_is_exit_2(tmp_path: Path) -> None:
    assert_one_clear_line(run_cli("validate", tmp_path / "nope.csv", "--domains", DOMAINS), 2, "nope.csv")


def test_a_sign_in_problem_is_exit_3(sheet: Path, tmp_path: Path) -> None:
    # A Partner Center token but none for Graph, and no domains file: the customer's domains cannot be known.
    result = run_cli(
        "validate", sheet, "--customer", CONTOSO, "--report", tmp_path / "r.xlsx", env={"BULKONBOARD_ACCESS_TOKEN": "t"}
    )
    assert_one_clear_line(result, 3, "BULKONBOARD_GRAPH_TOKEN")
    assert not (tmp_path / "r.xlsx").exists()


@pytest.mark.parametrize(
    ("fault", "code", "fragment"),
    [
        ("own failure", 4, "error: the report's disk is full"),
        ("bug", 4, "error: unexpected RuntimeError: an invariant broke (a bug in bulkonboard"),
        ("ctrl-c", 130, "error: interrupted"),
    ],
)
def test_a_failure_inside_the_command_is_its_code_and_one_line(sheet: Path, fault: str, code: int, fragment: str) -> None:
    result = with_fault(fault, "validate", sheet, "--domains", DOMAINS)
    line = assert_one_clear_line(result, code, fragment)
    assert "second line" not in result.stderr  # a bug's text: its first line only
    assert line.startswith("error: ")


@pytest.mark.parametrize(("fault", "code"), [("own failure", 4), ("bug", 4), ("ctrl-c", 130)])
def test_with_json_logs_the_one_line_is_a_json_error(sheet: Path, fault: str, code: int) -> None:
    result = with_fault(fault, "validate", sheet, "--domains", DOMAINS, "--log-format", "json")
    line = assert_one_clear_line(result, code)
    entry = json.loads(line)
    assert entry["level"] == "error" and entry["event"] == "error" and entry["message"]


def test_a_bug_shows_its_traceback_only_when_asked(sheet: Path) -> None:
    result = with_fault("bug", "validate", sheet, "--domains", DOMAINS, BULKONBOARD_DEBUG="1")
    assert "Traceback" in result.stderr and "second line" in result.stderr


def test_a_failure_in_a_lazily_loaded_group_takes_the_same_path(tmp_path: Path) -> None:
    result = run_cli("journal", "forget", "--journal", tmp_path / "missing.sqlite", "--status", "failed", "--yes")
    assert_one_clear_line(result, 2, "missing.sqlite")
