"""What a person sees at an 80-column terminal: the progress bar, the closing table, `journal show`.

The CLI runs as a process whose stderr rich takes for a terminal (TTY_COMPATIBLE=1, rich's own switch) that does
not animate (TTY_INTERACTIVE=0: each bar is drawn once, as it ends), 80 columns wide, without colour, so what a
person would see is read back as plain text.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

from rich.cells import cell_len
from rich.console import Console

from bulkonboard.cli.console import RichProgress
from bulkonboard.progress import Slowdowns
from tests.support import CONTOSO, ROOT, run_cli, standalone_sandbox

TERMINAL_80 = {"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "0", "COLUMNS": "80", "NO_COLOR": "1"}
SHEET = ROOT / "samples" / "new_hires.csv"


def lines_of(text: str) -> list[str]:
    return [re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", line) for line in text.splitlines()]


def assert_fits_80(lines: list[str]) -> None:
    too_wide = [line for line in lines if cell_len(line) > 80]
    assert not too_wide, "\n".join(too_wide)


def bar_line(lines: list[str], description: str) -> str:
    found = [line for line in lines if description in line and "rows/s" in line]
    assert len(found) == 1, "\n".join(lines)
    return found[0]


def run_sample(folder: Path, *source: str) -> list[str]:
    """The sample sheet run in `folder` (short relative paths, as a person types them), 80 columns."""
    result = run_cli(
        "run", SHEET, *(source or ("--sandbox",)), "--customer", CONTOSO, "--journal", "journal.sqlite",
        "--results", "results.xlsx", cwd=folder, env=TERMINAL_80,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr  # the sample's deliberate mistakes
    assert "Traceback" not in result.stderr
    return lines_of(result.stderr)


def test_a_run_at_80_columns_lists_users_then_a_readable_bar_then_the_table(tmp_path: Path) -> None:
    lines = run_sample(tmp_path)
    assert_fits_80(lines)
    listing = [line for line in lines if "listing users" in line]
    assert listing and re.search(r"listing users\s+\d+\s+\d:\d\d:\d\d", listing[-1]), "\n".join(lines)
    bar = bar_line(lines, "creating users")
    assert "35/35" in bar and re.search(r"\d+\.\d rows/s", bar)
    assert bar.count("━") >= 20, bar  # not squeezed to 9 characters
    trouble = lines[lines.index(bar) + 1]
    assert trouble.strip() == "8 with problems", trouble  # the invalid rows, counted as they came
    assert any(line.startswith("│ total") for line in lines)


def test_a_resumed_run_shows_no_rate_for_rows_that_needed_no_request(tmp_path: Path) -> None:
    with standalone_sandbox() as sandbox:
        source = ("--sandbox-url", sandbox.url)
        run_sample(tmp_path, *source)
        lines = run_sample(tmp_path, *source)  # every row settled by the first run: nothing needs a request
    bar = bar_line(lines, "creating users")
    assert "35/35" in bar and "-- rows/s" in bar, bar


def test_failures_retries_and_429s_show_under_the_bar_within_80_columns() -> None:
    stream = io.StringIO()
    console = Console(file=stream, width=80, force_terminal=True, force_interactive=False, no_color=True)
    progress = RichProgress(console)
    slowdowns = Slowdowns()
    progress.follow(lambda: slowdowns)
    progress.start(100_000, "creating users")
    progress.advance(40_000, unsent=40_000)
    progress.advance(12_345, failed=7)
    slowdowns = Slowdowns(retries=31, throttled=4)
    progress.stop()
    lines = lines_of(stream.getvalue())
    assert_fits_80(lines)
    bar = bar_line(lines, "creating users")
    assert "52,345/100,000" in bar and "ETA" in bar
    assert lines[lines.index(bar) + 1].strip() == "7 with problems · 31 retries · 4 × 429 (paused as the service asked)"


def test_a_count_without_a_total_is_a_spinner_and_a_count() -> None:
    stream = io.StringIO()
    console = Console(file=stream, width=80, force_terminal=True, force_interactive=False, no_color=True)
    progress = RichProgress(console)
    progress.start(None, "listing users")
    progress.advance(4_000)
    progress.stop()
    text = "\n".join(lines_of(stream.getvalue()))
    assert re.search(r"listing users 4,000 \d:\d\d:\d\d", text), text


def test_journal_show_at_80_columns_keeps_headers_and_ids_whole(tmp_path: Path) -> None:
    run_sample(tmp_path)
    result = run_cli("journal", "show", "--journal", "journal.sqlite", "--rows", cwd=tmp_path, env=TERMINAL_80)
    assert result.returncode == 0, result.stderr
    lines = lines_of(result.stdout)
    assert_fits_80(lines)
    assert f"customer: {CONTOSO}" in lines
    header = next(line for line in lines if line.startswith("run "))
    assert header.split() == ["run", "started", "finished", "created", "skipped", "invalid", "failed", "exit"]
    guid = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    user_ids = [line for line in lines if re.fullmatch(rf"\s+userId {guid}", line)]
    assert len(user_ids) == 26, "\n".join(lines)  # every created user's id whole, on a line of its own
