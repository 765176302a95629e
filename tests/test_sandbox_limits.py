"""The sandbox's pace and faults beyond Partner Center's create (issues 17-18): faults and throttling on Graph's
writes, what counts against `--rate-limit` and `--customer-rate-limit`, and `--latency-ms N-M` (seeded, uniform;
checked by counting the latencies drawn, never by timing)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bulkonboard.sandbox import Sandbox, SandboxOptions, parse_rate_limit
from bulkonboard.sandbox.data import stable_user_id
from bulkonboard.sandbox.faults import Faults
from bulkonboard.sandbox.options import parse_latency

from .sandbox_http import (
    AUTH,
    CONTOSO,
    DISCONNECTED,
    E3,
    FLOW,
    LICENSED_TOML,
    NORTHWIND,
    SAM,
    Start,
    assert_graph_error,
    call,
    graph_base,
    graph_new_user,
    license_update,
    licensed_data,
    new_user,
    pc_base,
)
from .support import ROOT, SANDBOX_DATA, clean_env, standalone_sandbox

NANCY = "nancy@northwind.onmicrosoft.com"


async def _start(start: Start, **options: Any) -> Sandbox:
    return await start(SandboxOptions(**{"seed": 0, **options}), data=licensed_data(), clock=lambda: 0.0)


# -- faults and throttling on Graph's writes ------------------------------------------------------------------


async def test_graph_fail_rate_is_graphs_503_and_writes_nothing(
    start: Start, http: aiohttp.ClientSession
) -> None:
    box = await _start(start, fail_rate=1.0)
    base = graph_base(box)
    answers = [
        await call(http, "POST", f"{base}/users", graph_new_user("f@contoso.com")),
        await call(http, "PATCH", f"{base}/users/{SAM}", {"city": "Oslo"}),
        await call(
            http,
            "POST",
            f"{base}/users/{SAM}/assignLicense",
            {"addLicenses": [{"skuId": FLOW}], "removeLicenses": []},
        ),
    ]
    for status, body, _ in answers:
        assert status == 503 and assert_graph_error(body, "serviceNotAvailable")
    sam = box.store.user_by_upn(CONTOSO, SAM)
    assert box.store.user_by_upn(CONTOSO, "f@contoso.com") is None and sam is not None
    assert "licenses" not in sam and "city" not in sam.get("profile", {})
    assert (await call(http, "GET", f"{base}/users/{SAM}"))[0] == 200  # reads meet no faults


async def test_graph_drop_rate_writes_then_hangs_up_and_a_retry_finds_the_user(
    start: Start, http: aiohttp.ClientSession
) -> None:
    box = await _start(start, drop_rate=1.0)
    base = graph_base(box)
    with pytest.raises(DISCONNECTED):
        await call(http, "POST", f"{base}/users", graph_new_user("lost@contoso.com", jobTitle="Pilot"))
    with pytest.raises(DISCONNECTED):
        await call(
            http,
            "POST",
            f"{base}/users/lost@contoso.com/assignLicense",
            {"addLicenses": [{"skuId": FLOW}], "removeLicenses": []},
        )
    assert box.stats.dropped == 2
    status, found, _ = await call(http, "GET", f"{base}/users/lost@contoso.com?$select=id,jobTitle")
    assert status == 200 and found["jobTitle"] == "Pilot"
    status, details, _ = await call(http, "GET", f"{base}/users/lost@contoso.com/licenseDetails")
    assert [d["skuId"] for d in details["value"]] == [FLOW]


async def test_graph_throttling_is_graphs_429_with_retry_after_and_the_warning_header(
    start: Start, http: aiohttp.ClientSession
) -> None:
    box = await _start(start, rate_limit=(5, 60.0), throttle_warnings=True)
    base = graph_base(box)
    warnings = []
    for n in range(5):
        status, _, headers = await call(http, "POST", f"{base}/users", graph_new_user(f"g{n}@contoso.com"))
        assert status == 201
        warnings.append(headers.get("x-ms-throttle-limit-percentage"))
    assert warnings == [None, None, None, None, "1.00"]
    status, body, headers = await call(http, "PATCH", f"{base}/users/{SAM}", {"city": "Oslo"})
    assert status == 429 and headers["Retry-After"] == "60" and CONTOSO in headers["x-ms-throttle-scope"]
    assert_graph_error(body, "TooManyRequests")
    assert (await call(http, "GET", f"{base}/users/{SAM}"))[0] == 200  # reads are not counted
    assert box.stats.throttled == 1


# -- which calls count, and against which limit ----------------------------------------------------------------


async def _writes(
    http: aiohttp.ClientSession, box: Sandbox, customer: str, upn: str, count: int
) -> list[int]:
    """`count` writes for one customer, alternating creates, license updates and Graph patches."""
    statuses = []
    for n in range(count):
        kind = n % 3
        if kind == 0:
            domain = "contoso.com" if customer == CONTOSO else "northwind.onmicrosoft.com"
            body = new_user(f"w{n}.{customer[:4]}@{domain}")
            statuses.append((await call(http, "POST", f"{pc_base(box, customer)}/users", body))[0])
        elif kind == 1:
            user = box.store.user_by_upn(customer, upn)
            assert user is not None
            url = f"{pc_base(box, customer)}/users/{user['id']}/licenseupdates"
            statuses.append(
                (await call(http, "POST", url, license_update(remove=[]) | _any_license(box, customer)))[0]
            )
        else:
            statuses.append(
                (await call(http, "PATCH", f"{graph_base(box, customer)}/users/{upn}", {"city": f"C{n}"}))[0]
            )
    return statuses


def _any_license(box: Sandbox, customer: str) -> dict[str, Any]:
    """Assign a SKU the user may already hold (accepted, no second unit): a write that always succeeds."""
    sku = next(iter(box.store.customer(customer).skus.values()))  # type: ignore[union-attr]
    return {"LicensesToAssign": [{"SkuId": sku.sku_id, "ExcludedPlans": None}]}


async def test_the_customer_limit_throttles_one_customer_alone(
    start: Start, http: aiohttp.ClientSession
) -> None:
    box = await _start(start, rate_limit=(100, 60.0), customer_rate_limit=(3, 60.0))
    assert await _writes(http, box, CONTOSO, SAM, 3) == [200, 201, 204]
    status, body, headers = await call(http, "PATCH", f"{graph_base(box)}/users/{SAM}", {"city": "X"})
    assert status == 429 and headers["Retry-After"] == "60"
    status, body, headers = await call(http, "POST", f"{pc_base(box)}/users", new_user("late@contoso.com"))
    assert status == 429 and body["statusCode"] == 429  # Partner Center's shape, same window
    assert await _writes(http, box, NORTHWIND, NANCY, 3) == [403, 201, 403]  # Northwind: its own window
    # (License Administrator in Northwind: creates and patches are 403, refused before the limiter)
    assert (await call(http, "GET", f"{pc_base(box)}/subscribedskus"))[0] == 200


async def test_the_partner_limit_counts_every_customers_writes_together(
    start: Start, http: aiohttp.ClientSession
) -> None:
    box = await _start(start, rate_limit=(4, 60.0), customer_rate_limit=(10, 60.0))
    assert await _writes(http, box, CONTOSO, SAM, 3) == [200, 201, 204]
    user = box.store.user_by_upn(NORTHWIND, NANCY)
    assert user is not None
    url = f"{pc_base(box, NORTHWIND)}/users/{user['id']}/licenseupdates"
    assert (await call(http, "POST", url, license_update(remove=[]) | _any_license(box, NORTHWIND)))[0] == 201
    status, _, headers = await call(
        http, "POST", url, license_update(remove=[]) | _any_license(box, NORTHWIND)
    )
    assert status == 429 and box.stats.throttled == 1


def test_a_write_refused_by_one_window_counts_in_neither() -> None:
    now = [0.0]
    faults = Faults(SandboxOptions(rate_limit=(3, 10.0), customer_rate_limit=(1, 10.0)), clock=lambda: now[0])
    assert faults.admit_write("a") is None
    assert faults.admit_write("a") == 10  # the customer's window is full
    assert (
        faults.admit_write("b") is None and faults.admit_write("c") is None
    )  # the partner's has room for 2 more
    assert faults.admit_write("d") == 10  # now the partner's is full
    now[0] = 10.0
    assert faults.admit_write("a") is None


# -- latency -------------------------------------------------------------------------------------------------


def test_latency_is_uniform_between_n_and_m_and_repeats_with_the_seed() -> None:
    draws = [
        Faults(SandboxOptions(seed=7, latency_ms=1000, latency_max_ms=3000)).latency_seconds()
        for _ in range(1)
    ]
    faults = Faults(SandboxOptions(seed=7, latency_ms=1000, latency_max_ms=3000))
    draws = [faults.latency_seconds() for _ in range(10_000)]
    assert 1.0 <= min(draws) and max(draws) <= 3.0
    deciles = Counter(min(9, int((d - 1.0) / 0.2)) for d in draws)
    assert all(850 <= deciles[k] <= 1150 for k in range(10)), deciles  # ~1000 each
    again = Faults(SandboxOptions(seed=7, latency_ms=1000, latency_max_ms=3000))
    assert [again.latency_seconds() for _ in range(100)] == draws[:100]
    other = Faults(SandboxOptions(seed=8, latency_ms=1000, latency_max_ms=3000))
    assert [other.latency_seconds() for _ in range(100)] != draws[:100]
    fixed = Faults(SandboxOptions(seed=7, latency_ms=1500))
    assert {fixed.latency_seconds() for _ in range(10)} == {1.5}


def test_latency_draws_do_not_shift_the_faults() -> None:
    quiet = Faults(SandboxOptions(seed=4, fail_rate=0.5))
    busy = Faults(SandboxOptions(seed=4, fail_rate=0.5, latency_ms=1, latency_max_ms=9))
    fates = []
    for n in range(50):
        for _ in range(n % 4):
            busy.latency_seconds()
        fates.append(busy.draw())
    assert fates == [quiet.draw() for _ in range(50)]


async def test_every_call_waits_a_latency_drawn_from_the_range(
    start: Start, http: aiohttp.ClientSession
) -> None:
    waited: list[float] = []

    async def record(seconds: float) -> None:
        waited.append(seconds)

    box = await start(
        SandboxOptions(seed=1, latency_ms=50, latency_max_ms=250), data=licensed_data(), sleep=record
    )
    urls = [
        f"{pc_base(box)}",
        f"{pc_base(box)}/users",
        f"{pc_base(box)}/subscribedskus",
        f"{graph_base(box)}/users/{SAM}",
    ]
    for _ in range(10):
        for url in urls:
            assert (await call(http, "GET", url))[0] == 200
    assert len(waited) == 40 and all(0.05 <= w <= 0.25 for w in waited)
    assert max(waited) - min(waited) > 0.1  # a spread, not one value


@pytest.mark.parametrize(
    "text,expected",
    [
        ("1500", (1500.0, 1500.0)),
        ("1000-3000", (1000.0, 3000.0)),
        (" 50 - 50 ", (50.0, 50.0)),
        ("0", (0.0, 0.0)),
    ],
)
def test_latency_option_text(text: str, expected: tuple[float, float]) -> None:
    assert parse_latency(text) == expected


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--latency-ms", "3000-1000"], "from low to high"),
        (["--latency-ms", "fast"], "is not a latency"),
        (["--customer-rate-limit", "0/1s"], "at least 1"),
        (["--customer-rate-limit", "ten"], "is not a rate limit"),
    ],
)
def test_bad_pace_options_are_exit_2_with_one_line(args: list[str], fragment: str) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bulkonboard.cli.commands",
            "sandbox",
            "--port",
            "0",
            "--data",
            str(SANDBOX_DATA),
            *args,
        ],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and fragment in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert done.stdout == ""


def test_rate_limit_text_is_shared_by_both_limits() -> None:
    assert parse_rate_limit("10/1s") == (10, 1.0) and parse_rate_limit("30") == (30, 60.0)


def test_the_command_takes_a_latency_range_and_a_customer_limit(tmp_path: Path) -> None:
    data = tmp_path / "licensed.toml"
    data.write_text(LICENSED_TOML, encoding="utf-8")
    args = ("--data", str(data), "--latency-ms", "1-5", "--seed", "3", "--customer-rate-limit", "2/60s")
    with standalone_sandbox(*args) as sandbox:
        statuses = []
        for customer, upn in ((CONTOSO, SAM), (CONTOSO, SAM), (CONTOSO, SAM), (NORTHWIND, NANCY)):
            user_id = stable_user_id(customer, upn)  # a seeded user's id
            body = json.dumps({"LicensesToAssign": [{"SkuId": E3, "ExcludedPlans": None}]}).encode()
            request = urllib.request.Request(
                f"{sandbox.url}/v1/customers/{customer}/users/{user_id}/licenseupdates",
                data=body,
                headers={**AUTH, "Content-Type": "application/json"},
                method="POST",
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:
                    statuses.append(answer.status)
            except urllib.error.HTTPError as refused:
                statuses.append(refused.code)
    assert statuses == [201, 201, 429, 201]  # Contoso's third write waits; Northwind has a window of its own
