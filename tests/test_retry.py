"""The retry policy, the 429 gate and the rate controllers, on their own (no loop, no network, no waiting)."""

from __future__ import annotations

import random

import pytest

from bulkonboard.sending.retry import (
    Backoff,
    FixedRate,
    PauseGate,
    RetryPolicy,
    retry_on_service_trouble,
)
from bulkonboard.service.partnercenter import (
    MalformedAnswer,
    Refused,
    ServerError,
    Throttled,
    TransportError,
    Unauthorized,
)

URL = "https://pc.test/v1/customers/c/users"


def api(kind: type, status: int, retry_after: float | None = None) -> Exception:
    error: Exception = kind(method="POST", url=URL, request_id="r", status=status, retry_after=retry_after)
    return error


def transport() -> TransportError:
    return TransportError("timed out", method="POST", url=URL, request_id="r")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# --- which failures are retried


def test_only_named_conditions_are_retried() -> None:
    assert retry_on_service_trouble(api(Throttled, 429)) is True
    assert retry_on_service_trouble(api(ServerError, 503)) is True
    assert retry_on_service_trouble(transport()) is True
    assert retry_on_service_trouble(api(MalformedAnswer, 200)) is True
    assert retry_on_service_trouble(api(Refused, 400)) is False
    assert retry_on_service_trouble(api(Unauthorized, 401)) is False
    assert retry_on_service_trouble(ValueError("a bug")) is False


def test_retry_after_replaces_the_backoff() -> None:
    assert retry_on_service_trouble(api(Throttled, 429, retry_after=7.0)) == 7.0
    assert retry_on_service_trouble(api(ServerError, 503, retry_after=2.0)) == 2.0
    policy = RetryPolicy(backoff=Backoff(initial=100.0, maximum=100.0), rng=random.Random(1))
    assert policy.wait_before_retry(api(ServerError, 503, retry_after=2.0), failures=1) == 2.0


def test_backoff_is_full_jitter_under_an_exponential_ceiling() -> None:
    backoff = Backoff(initial=0.5, maximum=8.0, multiplier=2.0)
    assert [backoff.ceiling(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert backoff.ceiling(10_000) == 8.0  # no overflow however long a row has been failing
    rng = random.Random(42)
    delays = [backoff.delay(4, rng) for _ in range(500)]
    assert all(0.0 <= d <= 4.0 for d in delays)
    assert min(delays) < 0.5 and max(delays) > 3.5  # spread over the whole range, not a fixed step
    # Seeded: the same seed gives the same waits.
    assert [backoff.delay(3, random.Random(7)) for _ in range(3)] == [backoff.delay(3, random.Random(7))] * 3


def test_attempts_are_bounded_and_refusals_are_not_retried() -> None:
    policy = RetryPolicy(attempts=3, backoff=Backoff(initial=1.0, maximum=1.0), rng=random.Random(0))
    failure = api(ServerError, 503)
    waits = [policy.wait_before_retry(failure, failures=n) for n in (1, 2, 3)]
    assert waits[0] is not None and waits[1] is not None and waits[2] is None
    assert policy.wait_before_retry(api(Refused, 400), failures=1) is None
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)


async def test_call_retries_then_returns_and_never_really_sleeps() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    answers: list[Exception | str] = [api(ServerError, 503), transport(), "done"]

    async def attempt() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    policy = RetryPolicy(attempts=5, backoff=Backoff(initial=1.0, maximum=10.0), rng=random.Random(3))
    assert await policy.call(attempt, sleep=sleep) == "done"
    assert len(slept) == 2 and 0 <= slept[0] <= 1.0 and 0 <= slept[1] <= 2.0


async def test_call_raises_the_last_failure_when_it_gives_up() -> None:
    calls = 0

    async def sleep(seconds: float) -> None:
        pass

    async def attempt() -> None:
        nonlocal calls
        calls += 1
        raise api(ServerError, 500 + calls)

    with pytest.raises(ServerError) as raised:
        await RetryPolicy(attempts=3).call(attempt, sleep=sleep)
    assert calls == 3 and raised.value.status == 503

    async def refused() -> None:
        raise api(Refused, 409)

    with pytest.raises(Refused):
        await RetryPolicy(attempts=3).call(refused, sleep=sleep)


# --- the gate


def test_the_gate_holds_until_the_latest_resume_time() -> None:
    clock = Clock()
    gate = PauseGate(clock)
    assert gate.remaining() == 0.0
    gate.pause_for(7.0)
    clock.now = 2.0
    assert gate.remaining() == 5.0
    gate.pause_for(1.0)  # a shorter pause does not shorten the one already set
    assert gate.remaining() == 5.0
    clock.now = 7.0
    assert gate.remaining() == 0.0
    assert gate.pauses == 2


# --- rate controllers


def test_fixed_rate_never_climbs_and_a_429_only_eases_it() -> None:
    rate = FixedRate(3.5)
    for _ in range(100):
        rate.on_success()
    assert rate.current_rate == 3.5
    rate.on_throttle(10.0, sent_at=0.0)
    for _ in range(100):
        rate.on_success()
    assert rate.current_rate == pytest.approx(3.5 * 0.96)
    with pytest.raises(ValueError):
        FixedRate(0)
