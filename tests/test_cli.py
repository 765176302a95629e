"""The command as a person runs it: real files in, real workbooks out, exit codes, one line per failure."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import openpyxl
import pytest

from bulkonboard import __version__
from tests.support import CONTOSO, ROOT, assert_one_clear_line, clean_env, run_cli, sheet_rows

SAMPLES = ROOT / "samples"


def bulkonboard(*args: str | Path, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, cwd=cwd, env=env, timeout=120)


def test_offline_dry_run_of_the_sample_writes_a_report(tmp_path: Path) -> None:
    report = tmp_path / "report.xlsx"
    result = bulkonboard("validate", SAMPLES / "new_hires.xlsx", "--domains", SAMPLES / "domains.csv", "--report", report)
    assert result.returncode == 1, result.stderr  # the sample has deliberate mistakes
    rows = sheet_rows(report)
    assert len(rows) == 35
    by_upn = {str(r["userPrincipalName"]).casefold(): r for r in rows}
    assert by_upn["olivia.brown@fabrikam.com"]["status"] == "invalid"
    assert "domain.federated" in str(by_upn["olivia.brown@fabrikam.com"]["problems"])
    assert by_upn["jane.doe@contoso.com"]["status"] == "valid"  # offline: nobody is known to exist
    statuses = {r["status"] for r in rows}
    assert statuses == {"valid", "invalid"}


def test_dry_run_against_the_embedded_sandbox_marks_existing_users(tmp_path: Path) -> None:
    report = tmp_path / "report.xlsx"
    result = bulkonboard("validate", SAMPLES / "new_hires.csv", "--sandbox", "--customer", CONTOSO, "--report", report)
    assert result.returncode == 1, result.stderr
    jane = next(r for r in sheet_rows(report) if r["userPrincipalName"] == "jane.doe@contoso.com")
    assert jane["status"] == "skipped" and jane["userId"]
    assert str(jane["problems"]).startswith("user.exists")


def test_a_clean_sheet_exits_zero_and_the_default_report_lands_beside_it(tmp_path: Path) -> None:
    sheet = tmp_path / "hires.csv"
    sheet.write_text(
        "userPrincipalName,displayName,usageLocation,password\nana@contoso.com,Ana,na,Str0ng-Passw0rd\n",
        encoding="utf-8",
    )
    result = bulkonboard("validate", sheet, "--domains", SAMPLES / "domains.csv", "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # --quiet: nothing but errors
    (row,) = sheet_rows(tmp_path / "hires.report.xlsx")
    assert row["status"] == "valid" and row["usageLocation"] == "NA"  # Namibia, upper-cased


@pytest.mark.parametrize(
    ("content", "name", "fragment"),
    [
        (b"", "empty.csv", "empty.csv"),
        (b"foo,bar\n1,2\n", "nocols.csv", "nocols.csv"),
        (b"userPrincipalName,displayName\na@contoso.com,A\n", "missing.csv", "missing required columns"),
        (b"not really a workbook", "fake.xlsx", "fake.xlsx"),
        (b"%PDF-1.4", "doc.pdf", "doc.pdf"),
    ],
)
def test_bad_inputs_get_one_line_and_exit_2(tmp_path: Path, content: bytes, name: str, fragment: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    result = bulkonboard("validate", path, "--domains", SAMPLES / "domains.csv")
    assert_one_clear_line(result, 2, fragment)
    assert not list(tmp_path.glob("*.report.xlsx"))


def test_missing_file_and_bad_arguments_exit_2(tmp_path: Path) -> None:
    assert_one_clear_line(bulkonboard("validate", tmp_path / "nope.csv", "--domains", SAMPLES / "domains.csv"), 2, "nope.csv")
    result = bulkonboard("validate", SAMPLES / "new_hires.csv", "--sandbox", "--sandbox-url", "http://x")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    result = bulkonboard("validate", SAMPLES / "new_hires.csv", "--domains", SAMPLES / "domains.csv", "--report", tmp_path / "r.csv")
    assert_one_clear_line(result, 2, ".xlsx")


def test_no_credentials_and_unreachable_service_exit_3(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_STATE_HOME": str(tmp_path / "state")}
    result = bulkonboard(
        "validate", SAMPLES / "new_hires.csv", "--customer", CONTOSO, "--report", tmp_path / "r.xlsx", cwd=tmp_path, env=env
    )
    assert_one_clear_line(result, 3, "sign-in is not configured")
    result = bulkonboard(
        "validate", SAMPLES / "new_hires.csv", "--customer", CONTOSO, "--sandbox-url", "http://127.0.0.1:9",
        "--report", tmp_path / "r.xlsx",
    )
    assert_one_clear_line(result, 3, "127.0.0.1:9")


def test_template_round_trips_through_the_reader(tmp_path: Path) -> None:
    path = tmp_path / "template.xlsx"
    result = bulkonboard("template", path)
    assert result.returncode == 0, result.stderr
    assert bulkonboard("template", path).returncode == 2  # never overwrites without --force
    report = tmp_path / "report.xlsx"
    result = bulkonboard("validate", path, "--domains", SAMPLES / "domains.csv", "--report", report)
    assert sheet_rows(report) == [] and result.returncode == 0  # the sheet read starts empty: nobody to create
    result = bulkonboard("validate", path, "--sheet", "Example", "--domains", SAMPLES / "domains.csv", "--report", report)
    (example,) = sheet_rows(report)
    assert example["status"] == "valid", example["problems"]  # the example is right, "US - United States" too
    assert example["usageLocation"] == "US" and result.returncode == 0


def test_help_explains_itself() -> None:
    result = bulkonboard("--help")
    assert result.returncode == 0
    for command in ("template", "validate", "sandbox"):
        assert command in result.stdout
    assert "Exit codes" in result.stdout
    assert "--domains" in bulkonboard("validate", "--help").stdout
    for command in ("auth", "journal", "sandbox"):  # loaded only when named: each still answers
        assert command in result.stdout
        assert bulkonboard(command, "--help").returncode == 0


@pytest.mark.parametrize("module", ["bulkonboard", "bulkonboard.cli.commands"])  # as installed, and as the tests run it
def test_the_program_ends_with_its_commands_code_and_every_line_it_wrote(tmp_path: Path, module: str) -> None:
    # `bulkonboard` skips the interpreter's teardown once the command is done: nothing written may be lost.
    def program(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", module, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
            timeout=120, env={k: v for k, v in os.environ.items() if not k.startswith("BULKONBOARD_")},
        )  # fmt: skip

    version = program("--version")
    assert (version.returncode, version.stdout.strip()) == (0, f"bulkonboard, version {__version__}")
    result = program(
        "validate", SAMPLES / "new_hires.csv", "--domains", SAMPLES / "domains.csv", "--log-format", "json",
        "--report", tmp_path / "r.xlsx",
    )  # fmt: skip
    assert result.returncode == 1
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert lines[-1]["event"] == "summary" and sum(lines[-1]["counts"].values()) == 35
    assert_one_clear_line(program("validate", tmp_path / "nope.csv", "--domains", SAMPLES / "domains.csv"), 2, "nope")


def test_ctrl_c_while_the_program_is_still_starting_exits_130() -> None:
    probe = (
        "import sys\n"
        "class Interrupt:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'bulkonboard.cli.commands':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, Interrupt())\n"
        "from bulkonboard.cli.program import entry\n"
        "entry()\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 130, result.stderr


@pytest.mark.parametrize("interrupt", [False, True], ids=["rows to fix", "ctrl-c while starting"])
def test_the_fast_exit_can_be_turned_off_and_the_exit_code_stays_the_same(tmp_path: Path, interrupt: bool) -> None:
    # A handler registered before the program's own is what the fast exit skips (coverage in a subprocess is one):
    # it runs only with BULKONBOARD_NO_FAST_EXIT=1, and the code is the same both ways.
    probe = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('torn down as usual', flush=True))\n"
        "class Interrupt:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'bulkonboard.cli.commands':\n"
        "            raise KeyboardInterrupt\n"
        f"if {interrupt}:\n"
        "    sys.meta_path.insert(0, Interrupt())\n"
        "from bulkonboard.cli.program import entry\n"
        "sys.argv = ['bulkonboard', *sys.argv[1:]]\n"
        "entry()\n"
    )
    args = ["validate", SAMPLES / "new_hires.csv", "--domains", SAMPLES / "domains.csv", "--quiet"]
    command = [sys.executable, "-c", probe, *map(str, args), "--report", str(tmp_path / "r.xlsx")]
    fast, usual = (
        subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, env=clean_env(**env))
        for env in ({}, {"BULKONBOARD_NO_FAST_EXIT": "1"})
    )
    expected = 130 if interrupt else 1  # the sample has rows to fix
    assert fast.returncode == expected, fast.stderr
    assert usual.returncode == expected, usual.stderr
    assert "torn down as usual" not in fast.stdout
    assert "torn down as usual" in usual.stdout
    assert "Traceback" not in usual.stderr


def test_a_quiet_dry_run_loads_neither_msal_nor_the_sandbox_nor_rich(tmp_path: Path) -> None:
    # Each costs start-up time on every scheduled run; they load when a command needs them.
    probe = (
        "import sys\n"
        "from bulkonboard.cli.commands import main\n"
        "try:\n"
        "    main(sys.argv[1:])\n"
        "except SystemExit as exc:\n"
        "    print('exit', exc.code)\n"
        "print(sorted({m.split('.')[0] if not m.startswith('bulkonboard') else m for m in sys.modules\n"
        "              if m.startswith(('msal', 'rich', 'bulkonboard.sandbox', 'bulkonboard.auth.tokens'))}))\n"
    )
    args = ["validate", SAMPLES / "new_hires.csv", "--domains", SAMPLES / "domains.csv", "--quiet"]
    result = subprocess.run(
        [sys.executable, "-c", probe, *map(str, args), "--report", str(tmp_path / "r.xlsx")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.stdout.splitlines() == ["exit 1", "[]"], result.stderr


def test_run_against_the_embedded_sandbox_creates_the_valid_rows(tmp_path: Path) -> None:
    results = tmp_path / "results-{date}.xlsx"
    result = bulkonboard(
        "run", SAMPLES / "new_hires.csv", "--sandbox", "--customer", CONTOSO, "--results", results, "--rate", "50",
        "--log-format", "json",
    )
    assert result.returncode == 1, result.stderr  # the sample's deliberate mistakes
    (written,) = list(tmp_path.glob("results-*.xlsx"))
    assert "{date}" not in written.name
    rows = sheet_rows(written)
    statuses = [r["status"] for r in rows]
    assert statuses.count("created") == 26 and statuses.count("skipped") == 1 and statuses.count("invalid") == 8
    for row in rows:
        if row["status"] == "created":
            assert row["userId"] and row["requestId"]
        if row["status"] == "invalid":
            assert not row["requestId"]  # never sent
    with (SAMPLES / "new_hires.csv").open(encoding="utf-8", newline="") as handle:
        passwords = [r["password"] for r in csv.DictReader(handle) if len(r["password"]) >= 8]
    assert passwords
    book = openpyxl.load_workbook(written)
    cells = [str(c) for ws in book.worksheets for line in ws.iter_rows(values_only=True) for c in line if c]
    for password in passwords:
        assert password not in result.stderr
        assert not any(password in cell for cell in cells)


def test_output_paths_that_cannot_be_used_exit_2_with_one_line(tmp_path: Path) -> None:
    sheet = SAMPLES / "new_hires.csv"
    result = bulkonboard("validate", sheet, "--domains", SAMPLES / "domains.csv", "--report", "/proc/nope/r.xlsx")
    assert_one_clear_line(result, 2, "/proc/nope/r.xlsx")
    same = tmp_path / "same.xlsx"
    result = bulkonboard("run", sheet, "--sandbox", "--customer", CONTOSO, "--results", same, "--generate-passwords", same)
    assert_one_clear_line(result, 2, "two files")
    assert not same.exists()
    result = bulkonboard(
        "run", sheet, "--sandbox", "--customer", CONTOSO, "--results", tmp_path / "r.xlsx", "--journal", "/proc/nope/j.sqlite"
    )
    assert_one_clear_line(result, 2, "/proc/nope/j.sqlite")


def test_every_json_log_line_names_its_event() -> None:
    """A collector filters on `event`: a line logged without fields of its own still has one."""
    import logging

    from bulkonboard.cli.console import JsonFormatter

    record = logging.LogRecord("bulkonboard", logging.WARNING, __file__, 1, "plain words", None, None)
    assert json.loads(JsonFormatter().format(record))["event"] == "log"
    record.fields = {"event": "wait", "seconds": 6.0}
    assert json.loads(JsonFormatter().format(record))["event"] == "wait"
