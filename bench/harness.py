"""What every benchmark shares: processes timed as a whole, a standalone sandbox per run, the Summary read back.

Every process has a time limit, and every benchmark a budget (`start_budget`): past either, the process running
is killed and the benchmark stops with a message. Every process started here is stopped on the way out.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


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
_budget_ends = float("inf")  # set by start_budget() before each benchmark


def start_budget() -> None:
    """The next benchmark has `BENCHMARK_BUDGET` seconds from now."""
    global _budget_ends
    _budget_ends = time.monotonic() + BENCHMARK_BUDGET


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

    def __init__(self, work: Path, *options: str, data: str = SANDBOX_DATA) -> None:
        self.data = work / "sandbox.toml"
        self.data.write_text(data, encoding="utf-8")
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


