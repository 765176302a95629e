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
import json
import os
import platform
import select
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import gen  # noqa: E402

BIN = Path(sys.executable).parent
CUSTOMER = "3c9a8f12-5e6b-4c1d-9a7e-2f4b8d6c1e90"
#: The sandbox's customer: the domains gen.py writes UPNs in, and no existing users.
SANDBOX_DATA = f"""
[[customers]]
id = "{CUSTOMER}"
name = "Contoso"
domains = [
  {{ name = "contoso.onmicrosoft.com", authenticationType = "Managed", isInitial = true }},
  {{ name = "contoso.com", authenticationType = "Managed", isDefault = true }},
  {{ name = "contoso.co.uk", authenticationType = "Managed" }},
]
"""
#: No process may take longer than this, and no benchmark longer than `BENCHMARK_BUDGET` in all: past it, the
#: process running is killed and `make bench` stops with a message.
PROCESS_TIMEOUT = 110.0
BENCHMARK_BUDGET = 150.0
_budget_ends = float("inf")  # set by main() before each benchmark


# ---------------------------------------------------------------------------------------------------------------
# processes


@dataclass
class Measured:
    seconds: float
    peak_mib: float
    cpu_seconds: float  # user + system
    exit_code: int
    stdout: str = ""
    rss_samples: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, MiB)


def measure(
    argv: Sequence[str],
    *,
    timeout: float = PROCESS_TIMEOUT,
    ok: tuple[int, ...] = (0, 1),
    sample_rss: bool = False,
) -> Measured:
    """Wall time, CPU time and peak RSS of one whole process; killed (and the benchmark stopped) past `timeout`
    or past the benchmark's budget, whichever comes first."""
    timeout = min(timeout, max(1.0, _budget_ends - time.monotonic()))
    # Output goes to files, not pipes: a chatty process can never block on a full pipe nobody reads.
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    started = time.perf_counter()
    proc = subprocess.Popen(list(argv), stdout=out, stderr=err)
    samples: list[tuple[float, float]] = []
    try:
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            elapsed = time.perf_counter() - started
            if pid:
                break
            if elapsed > timeout:
                raise SystemExit(f"benchmark command took over {timeout:.0f} s, stopped: {' '.join(argv)}")
            if sample_rss:
                rss = _rss_mib(proc.pid)
                if rss is not None:
                    samples.append((elapsed, rss))
            time.sleep(0.05)
    finally:
        if proc.returncode is None and _alive(proc.pid):
            proc.kill()
            proc.wait()
    proc.returncode = os.waitstatus_to_exitcode(status)
    out.seek(0)
    err.seek(0)
    stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    out.close()
    err.close()
    if proc.returncode not in ok:
        raise SystemExit(f"benchmark command failed ({proc.returncode}): {' '.join(argv)}\n{stderr}")
    return Measured(
        seconds=elapsed,
        peak_mib=usage.ru_maxrss / 1024,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        exit_code=proc.returncode,
        stdout=stdout,
        rss_samples=samples,
    )


def _rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return waited == 0


class Sandbox:
    """A standalone sandbox process for one run; `cpu_seconds` and `seconds` are known once it has stopped."""

    def __init__(self, work: Path, *options: str) -> None:
        self.data = work / "sandbox.toml"
        self.data.write_text(SANDBOX_DATA, encoding="utf-8")
        self.options = options
        self.url = ""
        self.cpu_seconds = 0.0
        self.seconds = 0.0

    def __enter__(self) -> Sandbox:
        argv = [
            sys.executable,
            "-m",
            "bulkonboard.sandbox",
            "--port",
            "0",
            "--data",
            str(self.data),
            *self.options,
        ]
        self._started = time.perf_counter()
        # stdout is read for its first line only; the rest (and stderr) goes nowhere that could fill up.
        self._proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT)
        assert self._proc.stdout is not None
        try:
            ready, _, _ = select.select([self._proc.stdout], [], [], 30.0)
            line = self._proc.stdout.readline().decode() if ready else ""
        except BaseException:  # Ctrl-C while it starts: it must not outlive us
            self._stop()
            raise
        if not line.startswith("listening on "):
            self._stop()
            raise SystemExit(f"the sandbox did not start: {line!r}")
        self.url = line.split()[-1]
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop()

    def _stop(self) -> None:
        proc = self._proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10.0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                self.cpu_seconds = usage.ru_utime + usage.ru_stime
                break
            if time.monotonic() > deadline:
                proc.kill()
                deadline = time.monotonic() + 5.0
            time.sleep(0.05)
        self.seconds = time.perf_counter() - self._started

    def cpu_now(self) -> float:
        """CPU seconds (user + system) the running sandbox has used so far."""
        with open(f"/proc/{self._proc.pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def user_principal_names(self) -> list[str]:
        """Every user of the customer, through the paged list (each page's `links.next` and its token)."""
        names: list[str] = []
        path = f"/v1/customers/{CUSTOMER}/users"
        headers = {"Authorization": "Bearer sandbox"}
        while True:
            request = urllib.request.Request(self.url + path, headers=headers)
            with urllib.request.urlopen(request, timeout=30) as answer:
                page = json.load(answer)
            names += [item["userPrincipalName"] for item in page["items"]]
            following = page.get("links", {}).get("next")
            if not following:
                return names
            path = "/v1" + following["uri"]
            headers = {"Authorization": "Bearer sandbox"} | {
                h["key"]: h["value"] for h in following["headers"]
            }


def run_command(sheet: Path, sandbox: Sandbox, work: Path, *options: str) -> list[str]:
    results = work / f"results-{time.monotonic_ns()}.xlsx"
    journal = work / f"journal-{time.monotonic_ns()}.sqlite"
    return [
        str(BIN / "bulkonboard"), "run", str(sheet), "--customer", CUSTOMER, "--sandbox-url", sandbox.url,
        "--results", str(results), "--journal", str(journal), "--quiet", *options,
    ]  # fmt: skip


def summary_of(argv: list[str]) -> dict[str, Any]:
    """The Summary sheet of the results workbook a `run_command` wrote, as label -> value."""
    import openpyxl

    path = argv[argv.index("--results") + 1]
    book = openpyxl.load_workbook(path, read_only=True)
    try:
        return {row[0]: row[1] for row in book["Summary"].iter_rows(values_only=True) if row and row[0]}
    finally:
        book.close()


# ---------------------------------------------------------------------------------------------------------------
# benchmarks


def bench_pace(work: Path) -> list[str]:
    """--rate R with slow answers, under a limit above R: the rate held, and no 429."""
    rows = 400
    sheet = gen.write_csv(work / f"pace-{rows}.csv", rows, bad_every=0)
    lines = [
        "### Pace: `--rate R`, 250 ms answers, a limit above R",
        "",
        f"`bulkonboard run` of {rows} rows with `--rate R` against `bulkonboard sandbox --latency-ms 250 "
        "--rate-limit L/1s`. The Summary's achieved rate is created users / (first request to last answer), so "
        "the last answer's 250 ms count against it (at most 0.99 R at 20/s, 0.97 R at 50/s, even with perfect "
        "pacing); the pace is the rate requests left at after start-up: (created - 1) / (that span - 0.25 s).",
        "",
        "| R (users/s) | service limit | achieved (users/s) | pace / R | 429s | sending (s) | whole process (s) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for rate, limit in ((20, 25), (50, 60)):
        with Sandbox(work, "--latency-ms", "250", "--rate-limit", f"{limit}/1s") as sandbox:
            argv = run_command(sheet, sandbox, work, "--rate", str(rate))
            run = measure(argv)
        summary = summary_of(argv)
        achieved = float(summary["achieved rate (created/s)"])
        created = int(summary["created"])
        pace = (created - 1) / (created / achieved - 0.25)
        lines.append(
            f"| {rate} | {limit}/s | {achieved:.2f} | {pace / rate:.3f} | {summary['throttled (429)']} | "
            f"{summary['sending (s)']:.1f} | {run.seconds:.1f} |"
        )
        print(lines[-1], flush=True)
    return lines


def bench_licensed(work: Path) -> list[str]:
    """--rate R with a license per user: every call (create and license) paced together, still no 429."""
    rows, rate, limit = 200, 20, 25
    sheet = gen.write_csv(work / f"licensed-{rows}.csv", rows, bad_every=0)
    header, *people = sheet.read_text(encoding="utf-8").splitlines()  # gen's rows are one line each
    sheet.write_text("\n".join([header + ",licenses", *(row + ",ENTERPRISEPACK" for row in people)]) + "\n")
    skus = '[[customers.skus]]\nskuId = "6fd2c87f-b296-42f0-b197-1e91e994b900"\nskuPartNumber = "ENTERPRISEPACK"\n'
    out = [
        "### Pace with a license step: `--rate R`, 250 ms answers, a limit above R",
        "",
        f"`bulkonboard run` of {rows} rows, each with a license (one create and one `licenseupdates` call per user), "
        f"`--rate {rate}` against `bulkonboard sandbox --latency-ms 250 --rate-limit {limit}/1s` (the limit counts "
        "license updates too). The pace is every call sent (creates and license calls) per second of sending.",
        "",
        "| R (calls/s) | service limit | calls | licenses assigned | calls/s / R | 429s | sending (s) | whole process (s) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    licensed = Sandbox(work, "--latency-ms", "250", "--rate-limit", f"{limit}/1s")
    licensed.data.write_text(SANDBOX_DATA + skus + f"totalUnits = {rows}\n", encoding="utf-8")  # before start
    with licensed as sandbox:
        argv = run_command(sheet, sandbox, work, "--rate", str(rate))
        run = measure(argv)
    summary = summary_of(argv)
    calls = int(summary["create requests"]) + int(summary["step requests (licenses)"])
    sending = float(summary["sending (s)"])
    pace = (calls - 1) / (sending - 0.25)
    out.append(
        f"| {rate} | {limit}/s | {calls} | {summary['ENTERPRISEPACK']} | {pace / rate:.3f} | {summary['throttled (429)']} | "
        f"{sending:.1f} | {run.seconds:.1f} |"
    )
    print(out[-1], flush=True)
    return out


def bench_limit(work: Path) -> list[str]:
    """No --rate, a limit the client is not told: how close to the limit's own time, every user once."""
    rows, limit, latency_ms = 600, 20, 100
    ideal = (rows - 1) / limit + latency_ms / 1000
    sheet = gen.write_csv(work / f"limit-{rows}.csv", rows, bad_every=0)
    lines = [
        "### Unknown limit: no `--rate`",
        "",
        f"`bulkonboard run` of {rows} rows without `--rate` against `bulkonboard sandbox --rate-limit {limit}/1s "
        f"--latency-ms {latency_ms}`: the limit allows them in {ideal:.1f} s (first request to last answer). "
        "Users counted afterwards in the sandbox's own list.",
        "",
        "| sandbox | sending (s) | / limit's time | created | users in sandbox (unique) | requests | 429s "
        "| settled at (users/s) | controller |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for label, extra in (("429 only", ()), ("with `--throttle-warnings`", ("--throttle-warnings",))):
        with Sandbox(work, "--rate-limit", f"{limit}/1s", "--latency-ms", str(latency_ms), *extra) as sandbox:
            argv = run_command(sheet, sandbox, work)
            measure(argv)
            users = sandbox.user_principal_names()
        summary = summary_of(argv)
        sending = float(summary["sending (s)"])
        unique = len({name.casefold() for name in users})
        lines.append(
            f"| {label} | {sending:.1f} | {sending / ideal:.2f}x | {summary['created']} | {len(users)} ({unique}) "
            f"| {summary['create requests']} | {summary['throttled (429)']} | {summary['rate settled at (users/s)']} "
            f"| {summary['rate']} |"
        )
        print(lines[-1], flush=True)
    return lines


def bench_overhead(work: Path) -> list[str]:
    """The whole pipeline against an instant sandbox, beside a bare aiohttp loop posting the same bodies."""
    users, concurrency = 20_000, 16
    sheet = gen.write_csv(work / f"overhead-{users}.csv", users, bad_every=0)
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
    sheet = gen.write_csv(work / f"memory-{users}.csv", users, bad_every=0)
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
    "pace": bench_pace,
    "limit": bench_limit,
    "licensed": bench_licensed,
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
    global _budget_ends
    with tempfile.TemporaryDirectory(prefix="bulkonboard-bench-") as tmp:
        for name in names:
            print(f"== {name}", flush=True)
            started = time.perf_counter()
            _budget_ends = time.monotonic() + BENCHMARK_BUDGET
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
