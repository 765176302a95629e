"""`make bench`: every benchmark, side by side in one run, figures as ratios; the latest go to docs/BENCHMARKS.md.

This machine's absolute speed drifts, so each figure is set beside a yardstick measured in the same run (the
dry run beside a bare pandas read of the same file, a run beside a bare aiohttp loop against the same sandbox,
a paced run beside the rate it was asked for). Nothing here is asserted by a test.

    python bench/run.py                # all benchmarks, then rewrite docs/BENCHMARKS.md
    python bench/run.py pace limit     # only these (the docs then hold only their figures)
    python bench/run.py --no-write     # print, do not touch the docs

Every process is a whole `bulkonboard` command (start-up included, as a user would see it) against a standalone
sandbox started here (`python -m bulkonboard.sandbox --port 0`), one fresh sandbox per run so that each starts
from the same users. Each process has a time limit; every process started here is stopped on the way out.
"""


from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import gen  # noqa: E402
from harness import BIN, CUSTOMER, Measured, Sandbox, measure, run_command, start_budget, summary_of  # noqa: E402
from scenarios import SCENARIOS, creates_only  # noqa: E402

# ---------------------------------------------------------------------------------------------------------------
# benchmarks


def bench_overhead(work: Path) -> list[str]:
    """The whole pipeline against an instant sandbox, beside a bare aiohttp loop posting the same bodies."""
    users, concurrency = 20_000, 16
    sheet = creates_only(work / f"overhead-{users}.csv", users)  # one create a row, as the bare loop sends
    bare_argv = [sys.executable, str(HERE / "bare_loop.py"), str(sheet), "--customer", CUSTOMER,
                 "--concurrency", str(concurrency)]  # fmt: skip
    lines = [
        "### Overhead: the whole pipeline beside a bare aiohttp loop",
        "",
        f"{users:,} users, {concurrency} in flight, against an instant, unthrottled sandbox (a fresh one per "
        "process). `bulkonboard run --rate inf` (start-up, read, validate, post, journal, results workbook) "
        "beside `bench/bare_loop.py` (aiohttp posting the same bodies with the same headers, nothing else), "
        "both timed as whole processes, alternating, best of two each. The sandbox's CPU share (its CPU seconds "
        "while the client ran, over the client's wall time) says whether it, not the client, sets the pace: "
        "1.0 is one core busy all the time, and the sandbox is one process on one core.",
        "",
        "| process | seconds | users/s | client CPU (s) | sandbox CPU share |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    best: dict[str, tuple[Measured, float]] = {}
    for _ in range(2):
        for name in ("bare aiohttp loop", "bulkonboard run"):
            with Sandbox(work) as sandbox:
                argv = (
                    bare_argv + ["--url", sandbox.url]
                    if name.startswith("bare")
                    else run_command(sheet, sandbox, work, "--rate", "inf", "--concurrency", str(concurrency))
                )
                cpu_before = sandbox.cpu_now()
                run = measure(argv, ok=(0,))
                busy = (sandbox.cpu_now() - cpu_before) / run.seconds
            if name not in best or run.seconds < best[name][0].seconds:
                best[name] = (run, busy)
    for name, (run, busy) in best.items():
        lines.append(
            f"| {name} | {run.seconds:.2f} | {users / run.seconds:,.0f} | {run.cpu_seconds:.1f} | {busy:.2f} |"
        )
        print(lines[-1], flush=True)
    ratio = best["bare aiohttp loop"][0].seconds / best["bulkonboard run"][0].seconds
    lines += ["", f"Pipeline throughput / bare loop throughput: **{ratio:.2f}** (goal: at least 0.5)."]
    print(lines[-1], flush=True)
    return lines


def bench_memory(work: Path) -> list[str]:
    """A 100,000-row run: resident memory sampled while it runs must stay flat, not grow with the rows done."""
    users = 100_000
    sheet = creates_only(work / f"memory-{users}.csv", users)
    with Sandbox(work) as sandbox:
        argv = run_command(sheet, sandbox, work, "--rate", "inf")
        run = measure(argv, ok=(0,), sample_rss=True)
    summary = summary_of(argv)
    samples = run.rss_samples
    sending = float(summary["sending (s)"])
    # The sending phase is the last `sending` seconds before the results are written (a second or so).
    end = samples[-1][0] if samples else 0.0
    start = max(0.0, end - sending)
    during = [mib for at, mib in samples if start <= at <= end]
    quarter = max(1, len(during) // 4)
    early, late = max(during[:quarter], default=0.0), max(during[-quarter:], default=0.0)
    lines = [
        "### Memory: a 100,000-row run",
        "",
        f"`bulkonboard run` of {users:,} rows against an instant sandbox, resident memory sampled every 50 ms.",
        "",
        "| created | whole process (s) | peak RSS (MiB) | RSS in the first quarter of sending (MiB) "
        "| RSS in the last quarter (MiB) | growth while sending |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {summary['created']:,} | {run.seconds:.1f} | {run.peak_mib:.0f} | {early:.0f} | {late:.0f} "
        f"| {late - early:+.0f} MiB ({(late - early) / max(early, 1):+.0%}) |",
    ]
    print(lines[-1], flush=True)
    return lines


def bare_read(kind: str, path: Path) -> list[str]:
    """The yardstick: the fastest bare read of the same file, in its own process."""
    if kind == "csv":
        code = (
            "import pandas as pd, sys; "
            "pd.read_csv(sys.argv[1], dtype=str, keep_default_na=False, na_filter=False, engine='c')"
        )
    else:
        code = "import python_calamine as c, sys; c.CalamineWorkbook.from_path(sys.argv[1]).get_sheet_by_index(0).to_python()"
    return [sys.executable, "-c", code, str(path)]


def bench_dryrun(work: Path) -> list[str]:
    lines = [
        "### Dry run at scale",
        "",
        "`bulkonboard validate FILE --domains samples/domains.csv --report OUT.xlsx --quiet`, timed as a whole process"
        " beside a bare read of the same file (pandas C engine for csv, python-calamine for xlsx). Goals: 1,000,000"
        " csv rows under 30 s and 2 GiB; 100,000 xlsx rows under 8 s.",
        "",
        "| input | rows | dry run (s) | peak memory (MiB) | bare read (s) | dry run / bare read |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for kind, rows, writer in (("xlsx", 100_000, gen.write_xlsx), ("csv", 1_000_000, gen.write_csv)):
        source = writer(work / f"hires-{rows}.{kind}", rows)
        report = work / f"report-{kind}.xlsx"
        run = measure(
            [str(BIN / "bulkonboard"), "validate", str(source), "--domains", str(ROOT / "samples/domains.csv"),
             "--report", str(report), "--quiet"]
        )  # fmt: skip
        bare = measure(bare_read(kind, source), ok=(0,))
        lines.append(
            f"| {kind} | {rows:,} | {run.seconds:.1f} | {run.peak_mib:,.0f} | {bare.seconds:.1f} | "
            f"{run.seconds / bare.seconds:.1f}x |"
        )
        print(lines[-1], flush=True)
    return lines


BENCHMARKS: dict[str, Callable[[Path], list[str]]] = {
    **SCENARIOS,
    "overhead": bench_overhead,
    "memory": bench_memory,
    "dryrun": bench_dryrun,
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "names", nargs="*", help=f"benchmarks to run, of {', '.join(BENCHMARKS)} (default: all)"
    )
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/BENCHMARKS.md alone")
    args = parser.parse_args()
    names = args.names or list(BENCHMARKS)
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    sections: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bulkonboard-bench-") as tmp:
        for name in names:
            print(f"== {name}", flush=True)
            started = time.perf_counter()
            start_budget()
            sections += BENCHMARKS[name](Path(tmp)) + [""]
            print(f"   ({time.perf_counter() - started:.0f} s)", flush=True)
    if args.no_write:
        return
    command = "make bench" if not args.names else f"python bench/run.py {' '.join(args.names)}"
    header = [
        "# Benchmarks",
        "",
        f"Latest figures, produced by `{command}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC "
        f"({platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} cores).",
        "Absolute times drift with the machine; compare the ratios, measured side by side in one run.",
        "",
    ]
    target = ROOT / "docs/BENCHMARKS.md"
    notes = _kept_notes(target)
    target.write_text("\n".join(header + sections + notes) + "\n", encoding="utf-8")
    print(f"wrote {target}")


def _kept_notes(target: Path) -> list[str]:
    """The hand-written explanation below the figures survives a rerun."""
    if not target.exists():
        return []
    text = target.read_text(encoding="utf-8")
    marker = "## Where the time goes"
    return text[text.index(marker) :].splitlines() if marker in text else []


if __name__ == "__main__":
    main()
