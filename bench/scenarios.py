"""The pace benchmarks (issue 18): as fast as the service allows at any latency, and many customers at once.

Each scenario is whole `bulkonboard run` processes against a standalone sandbox with the latency and limits
named, a few hundred users each, figures as ratios: the pace beside the rate asked for, the sending time beside
the time the limit allows. Nothing here is asserted by a test; `make bench` writes the tables.
"""

from __future__ import annotations

import csv
import sqlite3
from collections.abc import Callable
from contextlib import closing
from datetime import datetime
from pathlib import Path

import gen
from harness import CUSTOMER, SANDBOX_DATA, Sandbox, measure, run_command, summary_of

#: Three customers for the many-customers scenario, each with the domains gen.py writes UPNs in.
CUSTOMERS = (
    CUSTOMER,
    "5b1e7c3a-9d2f-4e8b-a6c0-3f7d1b9e5a24",
    "8e4a2d6f-1c9b-4a7e-b3d5-6f0c8a2e4b17",
)
DOMAINS = """domains = [
  { name = "contoso.onmicrosoft.com", authenticationType = "Managed", isInitial = true },
  { name = "contoso.com", authenticationType = "Managed", isDefault = true },
  { name = "contoso.co.uk", authenticationType = "Managed" },
]"""
CUSTOMERS_DATA = "\n".join(
    f'[[customers]]\nid = "{customer}"\nname = "Customer {n}"\n{DOMAINS}\n' for n, customer in enumerate(CUSTOMERS)
)


#: gen.py's profile columns: each makes a row send a Graph PATCH after its create (the profile step), a second write
#: that the sandbox's limit counts too. The pace scenarios measure creates against a limit of creates, and the
#: overhead and memory runs set the pipeline beside a bare loop that only creates, so their sheets leave them out
#: (with them, every user is two writes: half the users a second, 2x every ratio).
PROFILE_COLUMNS = ("Employee ID", "Department")


def creates_only(path: Path, rows: int, customers: tuple[str, ...] = ()) -> Path:
    """gen.py's valid rows without the profile columns (so a row is one create), with a customerTenantId column
    naming `customers` in turn when given."""
    keep = [n for n, name in enumerate(gen.HEADER) if name not in PROFILE_COLUMNS]
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([gen.HEADER[n] for n in keep] + (["customerTenantId"] if customers else []))
        for index, row in enumerate(gen.rows(rows, bad_every=0)):
            tenant = [customers[index % len(customers)]] if customers else []
            writer.writerow([row[n] for n in keep] + tenant)
    return path


def _pace(argv: list[str]) -> float:
    """The rate the rows' requests left at: (rows - 1) / (first to last `sent_at` in the run's journal, recorded
    just before each request leaves). Unlike the Summary's achieved rate, no answer's latency counts in it."""
    journal = argv[argv.index("--journal") + 1]
    with closing(sqlite3.connect(journal)) as db:
        found = db.execute("SELECT sent_at FROM rows WHERE sent_at IS NOT NULL").fetchall()
    sent = sorted(datetime.fromisoformat(at) for (at,) in found)
    return (len(sent) - 1) / (sent[-1] - sent[0]).total_seconds()


def bench_pace(work: Path) -> list[str]:
    """--rate 20 at 50 ms, 1.5 s and 1-3 s answers, under a limit above it: the rate held, and no 429."""
    rows, rate = 300, 20
    sheet = creates_only(work / f"pace-{rows}.csv", rows)
    lines = [
        "### Pace: `--rate 20` at any latency, a limit above it",
        "",
        f"`bulkonboard run` of {rows} rows with `--rate {rate}` against `bulkonboard sandbox --latency-ms L "
        "--rate-limit N/1s`. The pace is the rate the requests left at, from the journal's `sent_at` (recorded as "
        "each leaves): (rows - 1) / (first to last). A spread of 1-3 s makes arrivals at the service clump (a "
        "request sent later may arrive earlier), so its limit is 30/s rather than 25/s. Goal: pace >= 0.95 R, "
        "no 429.",
        "",
        "| latency | service limit | pace (users/s) | pace / R | 429s | most in flight | sending (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for latency, limit in (("50", 25), ("1500", 25), ("1000-3000", 30)):
        with Sandbox(work, "--latency-ms", latency, "--rate-limit", f"{limit}/1s", "--seed", "18") as sandbox:
            argv = run_command(sheet, sandbox, work, "--rate", str(rate))
            measure(argv)
        summary = summary_of(argv)
        pace = _pace(argv)
        lines.append(
            f"| {latency} ms | {limit}/s | {pace:.2f} | {pace / rate:.3f} | {summary['throttled (429)']} "
            f"| {summary['requests in flight (most at once)']} | {summary['sending (s)']:.1f} |"
        )
        print(lines[-1], flush=True)
    return lines


def bench_limit(work: Path) -> list[str]:
    """No --rate, a limit the client is not told: how close to the limit's own time, every user once."""
    rows, limit = 400, 20
    ideal = (rows - 1) / limit
    sheet = creates_only(work / f"limit-{rows}.csv", rows)
    lines = [
        "### Unknown limit: no `--rate`",
        "",
        f"`bulkonboard run` of {rows} rows without `--rate` against `bulkonboard sandbox --rate-limit {limit}/1s "
        f"--latency-ms L`: the limit allows them in {ideal:.1f} s plus one latency (first request to last answer). "
        "Users counted afterwards in the sandbox's own list. Goal at 1-2 s: within 1.2x.",
        "",
        "| latency | sandbox | sending (s) | / limit's time | created | users in sandbox (unique) | 429s "
        "| settled at (users/s) | most in flight |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    runs = (("100", 0.1, "429 only", ()), ("100", 0.1, "`--throttle-warnings`", ("--throttle-warnings",)),
            ("1000-2000", 1.5, "429 only", ()))  # fmt: skip
    for latency, mean, label, extra in runs:
        with Sandbox(work, "--rate-limit", f"{limit}/1s", "--latency-ms", latency, "--seed", "18", *extra) as box:
            argv = run_command(sheet, box, work)
            measure(argv)
            users = box.user_principal_names()
        summary = summary_of(argv)
        sending = float(summary["sending (s)"])
        unique = len({name.casefold() for name in users})
        lines.append(
            f"| {latency} ms | {label} | {sending:.1f} | {sending / (ideal + mean):.2f}x | {summary['created']} "
            f"| {len(users)} ({unique}) | {summary['throttled (429)']} | {summary['rate settled at (users/s)']} "
            f"| {summary['requests in flight (most at once)']} |"
        )
        print(lines[-1], flush=True)
    return lines


def bench_at_limit(work: Path) -> list[str]:
    """--rate R against a service whose limit is exactly R: eased a little, no 429-pause cycles."""
    rows, rate, latency = 400, 20, 1.5
    ideal = (rows - 1) / rate + latency
    sheet = creates_only(work / f"at-limit-{rows}.csv", rows)
    with Sandbox(work, "--latency-ms", "1500", "--rate-limit", f"{rate}/1s") as sandbox:
        argv = run_command(sheet, sandbox, work, "--rate", str(rate))
        measure(argv)
    summary = summary_of(argv)
    sending = float(summary["sending (s)"])
    lines = [
        "### `--rate R` at the service's own limit",
        "",
        f"`bulkonboard run` of {rows} rows with `--rate {rate}` against `bulkonboard sandbox --latency-ms 1500 "
        f"--rate-limit {rate}/1s`: ideally {ideal:.1f} s (first request to last answer). A 429 under a fixed rate "
        "eases it a little instead of pausing every request. Goal: within 1.1x.",
        "",
        "| sending (s) | / ideal | created | 429s | pace (users/s) | the Summary says |",
        "| ---: | ---: | ---: | ---: | ---: | --- |",
        f"| {sending:.1f} | {sending / ideal:.2f}x | {summary['created']} | {summary['throttled (429)']} "
        f"| {_pace(argv):.2f} | {summary.get('pace', 'not eased')} |",
    ]
    print(lines[-1], flush=True)
    return lines


def bench_customers(work: Path) -> list[str]:
    """Three customers limited to 10/s each, 100/s partner-wide, no --rate: each finds its own pace."""
    rows, each = 450, 10
    ideal = rows / (each * len(CUSTOMERS))
    sheet = creates_only(work / f"customers-{rows}.csv", rows, CUSTOMERS)
    options = ("--latency-ms", "250", "--customer-rate-limit", f"{each}/1s", "--rate-limit", "100/1s")
    with Sandbox(work, *options, data=CUSTOMERS_DATA) as sandbox:
        argv = run_command(sheet, sandbox, work)
        argv.remove("--customer")
        argv.remove(CUSTOMER)
        measure(argv)
    summary = summary_of(argv)
    sending = float(summary["sending (s)"])
    combined = int(summary["created"]) / sending
    lines = [
        "### Many customers at once",
        "",
        f"`bulkonboard run` of {rows} rows for three customers in turn (`customerTenantId`), no `--rate`, against "
        f"`bulkonboard sandbox {' '.join(options)}`: together they allow {each * len(CUSTOMERS)}/s, so "
        f"{ideal:.0f} s. Goal: at least 0.9 of 30/s combined.",
        "",
        "| sending (s) | combined (users/s) | / 30/s | 429s | per customer |",
        "| ---: | ---: | ---: | ---: | --- |",
        f"| {sending:.1f} | {combined:.2f} | {combined / (each * len(CUSTOMERS)):.2f} | {summary['throttled (429)']} "
        f"| {'; '.join(str(summary.get(f'customer {c}', '')) for c in CUSTOMERS)} |",
    ]
    print(lines[-1], flush=True)
    return lines


def bench_licensed(work: Path) -> list[str]:
    """--rate R with a license per user: every call (create and license) paced together, still no 429."""
    rows, rate, limit = 200, 20, 25
    sheet = creates_only(work / f"licensed-{rows}.csv", rows)
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
    data = SANDBOX_DATA + skus + f"totalUnits = {rows}\n"
    with Sandbox(work, "--latency-ms", "250", "--rate-limit", f"{limit}/1s", data=data) as sandbox:
        argv = run_command(sheet, sandbox, work, "--rate", str(rate))
        run = measure(argv)
    summary = summary_of(argv)
    calls = int(summary["create requests"]) + int(summary["step requests"])
    sending = float(summary["sending (s)"])
    pace = (calls - 1) / (sending - 0.25)
    out.append(
        f"| {rate} | {limit}/s | {calls} | {summary['ENTERPRISEPACK']} | {pace / rate:.3f} | {summary['throttled (429)']} | "
        f"{sending:.1f} | {run.seconds:.1f} |"
    )
    print(out[-1], flush=True)
    return out


SCENARIOS: dict[str, Callable[[Path], list[str]]] = {
    "pace": bench_pace,
    "limit": bench_limit,
    "at-limit": bench_at_limit,
    "customers": bench_customers,
    "licensed": bench_licensed,
}
