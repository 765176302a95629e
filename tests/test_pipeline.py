"""The pipeline against an in-test fake service: order, retries, the 429 gate, idempotency, stop, memory.

Time is fake (`FakeTime`): a sleep moves the clock instead of waiting, so a 7-second Retry-After costs
nothing. Runs use `rate=math.inf` (no pacing) unless a test is about the limiter, which keeps real time.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from bulkonboard.errors import AuthError
from bulkonboard.model import Code, Problem, RowResult, Status, UserRow
from bulkonboard.partnercenter import (
    DUPLICATE_UPN_TEXT,
    Audience,
    CreatedUser,
    Refused,
    ServerError,
    Throttled,
    TransportError,
    Unauthorized,
)
from bulkonboard.pipeline import (
    API_UNREACHABLE,
    RUN_INTERRUPTED,
    NullJournal,
    Pipeline,
    PipelineOptions,
    PriorOutcome,
    PriorState,
)
from bulkonboard.retry import AdaptiveRate, Backoff
from bulkonboard.validation import CheckedRow

CUSTOMER = "11111111-2222-3333-4444-555555555555"
PASSWORD = "Tr0ub4dor&3-horse"
URL = f"https://pc.test/v1/customers/{CUSTOMER}/users"


# ---------------------------------------------------------------------------------------------------------------
# fakes


class FakeTime:
    """A clock that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


@dataclass
class Call:
    upn: str
    request_id: str
    at: float
    customer: str


@dataclass
class FakeService:
    """Partner Center as the pipeline sees it. `script[upn]` lists what each create answers, in turn:
    "ok", "429:<s>", "503", "503:<s>", "transport", "created-then-transport", "dup", "401", "400"; once the
    script runs out, "ok"."""

    time: FakeTime
    script: dict[str, list[str]] = field(default_factory=dict)
    users: dict[str, str] = field(default_factory=dict)  # casefolded UPN -> id
    calls: list[Call] = field(default_factory=list)
    events: list[tuple[str, str, float]] = field(default_factory=list)  # (what, upn, time) in order
    lookups: list[str] = field(default_factory=list)
    preflights: list[str] = field(default_factory=list)
    yields: dict[str, int] = field(default_factory=dict)  # upn -> loop turns a create takes
    on_create: Any = None  # called with the upn when a create arrives

    async def preflight(self, customer_id: str) -> dict[str, Any]:
        self.preflights.append(customer_id)
        return {"id": customer_id}

    async def create_user(self, customer_id: str, user: UserRow, *, request_id: str) -> CreatedUser:
        upn = user.userPrincipalName
        self.calls.append(Call(upn, request_id, self.time.now, customer_id))
        self.events.append(("send", upn, self.time.now))
        if self.on_create is not None:
            self.on_create(upn)
        for _ in range(self.yields.get(upn, 1)):
            await asyncio.sleep(0)
        steps = self.script.get(upn, [])
        step = steps.pop(0) if steps else "ok"
        self.events.append((step, upn, self.time.now))
        kind, _, arg = step.partition(":")
        common: dict[str, Any] = dict(method="POST", url=URL, request_id=request_id)
        if kind == "429":
            raise Throttled(**common, status=429, retry_after=float(arg) if arg else None)
        if kind == "503":
            raise ServerError(
                **common,
                status=503,
                description="Service Unavailable",
                retry_after=float(arg) if arg else None,
            )
        if kind == "transport":
            raise TransportError("timed out waiting for the answer", **common)
        if kind == "created-then-transport":
            self._create(upn)
            raise TransportError("the server closed the connection without answering", **common)
        if kind == "dup":
            raise Refused(**common, status=400, code="ObjectConflict", description=DUPLICATE_UPN_TEXT + ".")
        if kind == "401":
            raise Unauthorized(
                **common, status=401, code=800001, description="partner token missing or expired"
            )
        if kind == "400":
            raise Refused(**common, status=400, code=800002, description="Invalid usage location")
        assert kind == "ok", step
        return CreatedUser(
            id=self._create(upn), userPrincipalName=upn, state="active", userDomainType="managed"
        )

    def _create(self, upn: str) -> str:
        return self.users.setdefault(upn.casefold(), str(uuid.UUID(int=len(self.users) + 1)))

    async def find_user_by_upn(self, customer_id: str, upn: str) -> dict[str, Any] | None:
        self.lookups.append(upn)
        user_id = self.users.get(upn.casefold())
        return {"id": user_id, "userPrincipalName": upn} if user_id else None

    def sent_request_ids(self, upn: str) -> list[str]:
        return [call.request_id for call in self.calls if call.upn == upn]


class FakeGraph:
    def __init__(self, service: FakeService) -> None:
        self.service = service
        self.asked: list[tuple[str, str]] = []

    async def get_user(self, tenant: str, upn: str) -> dict[str, Any] | None:
        self.asked.append((tenant, upn))
        user_id = self.service.users.get(upn.casefold())
        return {"id": user_id} if user_id else None


class FakeTokens:
    def __init__(self, *, refuse_refresh: bool = False) -> None:
        self.refreshes = 0
        self.refuse_refresh = refuse_refresh

    async def token(
        self, audience: Audience, tenant: str | None = None, *, force_refresh: bool = False
    ) -> str:
        assert audience is Audience.PARTNER_CENTER
        if force_refresh:
            self.refreshes += 1
            await asyncio.sleep(0)
            if self.refuse_refresh:
                raise AuthError("the refresh token has expired: sign in again")
        return "token"


class RecordingProgress:
    def __init__(self) -> None:
        self.total: int | None = None
        self.done = 0
        self.failed = 0
        self.stopped = False

    def start(self, total: int | None, description: str) -> None:
        self.total = total

    def advance(self, count: int = 1, *, failed: int = 0) -> None:
        self.done += count
        self.failed += failed

    def stop(self) -> None:
        self.stopped = True


class RecordingJournal(NullJournal):
    def __init__(self, prior: dict[str, PriorState] | None = None) -> None:
        self._prior = prior or {}
        self.log: list[tuple[Any, ...]] = []

    def prior(self, customer: str, upn_key: str) -> PriorState | None:
        self.log.append(("prior", customer, upn_key))
        return self._prior.get(upn_key)

    async def sending(self, customer: str, upn_key: str, row: int, request_id: str) -> None:
        self.log.append(("sending", customer, upn_key, row, request_id))

    def finished(self, customer: str, upn_key: str, result: RowResult) -> None:
        self.log.append(("finished", customer, upn_key, result))

    def flush(self) -> None:
        self.log.append(("flush",))


def row(n: int, upn: str | None = None, status: Status = Status.VALID, **kwargs: Any) -> CheckedRow:
    upn = upn or f"user{n}@contoso.com"
    user = UserRow(
        row=n,
        userPrincipalName=upn,
        firstName="First",
        lastName=f"Last{n}",
        displayName=f"First Last{n}",
        usageLocation="US",
        password=PASSWORD,
        customerTenantId=CUSTOMER,
    )
    return CheckedRow(
        user=user,
        status=status,
        problems=kwargs.get("problems", ()),
        existing_user_id=kwargs.get("existing"),
    )


def make(service: FakeService, **kwargs: Any) -> Pipeline:
    options = kwargs.pop("options", None) or PipelineOptions(
        concurrency=kwargs.pop("concurrency", 4),
        rate=math.inf,
        attempts=kwargs.pop("attempts", 5),
        backoff=Backoff(initial=1.0, maximum=8.0),
    )
    return Pipeline(
        service,
        options=options,
        clock=service.time.clock,
        sleep=kwargs.pop("sleep", service.time.sleep),
        rng=random.Random(1234),
        **kwargs,
    )


async def run(pipeline: Pipeline, rows: list[CheckedRow]) -> list[RowResult]:
    results: list[RowResult] = []
    await pipeline.run(rows, results.append, total=len(rows))
    return results


def by_upn(results: list[RowResult]) -> dict[str, RowResult]:
    return {r.userPrincipalName: r for r in results}


# ---------------------------------------------------------------------------------------------------------------
# the happy path


async def test_results_keep_input_order_when_answers_come_back_out_of_order() -> None:
    service = FakeService(FakeTime())
    rows = [
        row(2),
        row(
            3, "bad@", Status.INVALID, problems=(Problem(Code.UPN_SYNTAX, "no domain", "userPrincipalName"),)
        ),
        row(4),
        row(
            5,
            "jane@contoso.com",
            Status.SKIPPED,
            problems=(Problem(Code.USER_EXISTS, "exists"),),
            existing="u-jane",
        ),
        row(6),
        row(7),
        row(8),
    ]
    # Earlier rows take longer, so the answers arrive in reverse.
    service.yields = {r.user.userPrincipalName: 40 - 5 * i for i, r in enumerate(rows)}
    progress = RecordingProgress()

    def to_result(checked: Any) -> RowResult:
        return RowResult(
            checked.user.row,
            checked.user.userPrincipalName,
            checked.status,
            checked.existing_user_id,
            checked.problems,
            display={"displayName": checked.user.displayName},
        )

    pipeline = make(service, progress=progress, to_result=to_result)

    results = await run(pipeline, rows)

    answered = [upn for what, upn, _ in service.events if what == "ok"]
    assert answered != sorted(answered, key=lambda u: int(u[4:5]))  # they really did come back out of order
    assert [r.row for r in results] == [2, 3, 4, 5, 6, 7, 8]
    sent = {call.upn for call in service.calls}
    assert sent == {
        "user2@contoso.com",
        "user4@contoso.com",
        "user6@contoso.com",
        "user7@contoso.com",
        "user8@contoso.com",
    }
    for result in results:
        if result.row in (3, 5):
            continue
        assert result.status is Status.CREATED
        assert result.userId == service.users[result.userPrincipalName.casefold()]
        assert [result.requestId] == service.sent_request_ids(result.userPrincipalName)
        assert result.attempts == 1 and result.problems == ()
        assert result.display == {"displayName": f"First Last{result.row}"}
    invalid, skipped = results[1], results[3]
    assert (
        invalid.status is Status.INVALID
        and invalid.problems[0].code == Code.UPN_SYNTAX
        and invalid.requestId is None
    )
    assert skipped.status is Status.SKIPPED and skipped.userId == "u-jane" and skipped.requestId is None
    assert pipeline.stats.counts["created"] == 5 and pipeline.stats.sent_rows == 5
    assert progress.total == 7 and progress.done == 7 and progress.failed == 1 and progress.stopped
    assert len({call.request_id for call in service.calls}) == 5  # one request id per row


async def test_preflight_asks_once_per_customer_and_its_error_stops_before_any_row() -> None:
    service = FakeService(FakeTime())
    pipeline = make(service)
    await pipeline.preflight([CUSTOMER, "", "other", CUSTOMER])
    assert service.preflights == [CUSTOMER, "other"]

    class Refusing(FakeService):
        async def preflight(self, customer_id: str) -> dict[str, Any]:
            raise AuthError("needs the GDAP role User Administrator or Directory Writers")

    refusing = Refusing(FakeTime())
    with pytest.raises(AuthError, match="User Administrator"):
        await make(refusing).preflight([CUSTOMER])
    assert refusing.calls == []


# ---------------------------------------------------------------------------------------------------------------
# 429: the whole run pauses


async def test_a_429_pauses_every_worker_and_does_not_use_up_attempts() -> None:
    service = FakeService(FakeTime())
    rows = [row(n) for n in range(2, 10)]
    first = rows[0].user.userPrincipalName
    # Attempts are 2: two 429s and a 503 before the success would exceed them if 429s counted.
    service.script = {first: ["429:7", "429:7", "503:1", "ok"]}
    service.yields = {r.user.userPrincipalName: 1 for r in rows} | {first: 0}
    pipeline = make(service, concurrency=4, attempts=2)

    results = await run(pipeline, rows)

    assert all(r.status is Status.CREATED for r in results)
    assert by_upn(results)[first].attempts == 4
    throttled_at = [t for what, upn, t in service.events if what.startswith("429")]
    assert len(throttled_at) == 2
    # After each 429, nobody sends until its Retry-After has passed.
    for index, (what, _, at) in enumerate(service.events):
        if what.startswith("429"):
            later_sends = [t for w, _, t in service.events[index + 1 :] if w == "send"]
            assert later_sends and all(t >= at + 7.0 for t in later_sends)
    assert 7.0 in service.time.slept  # the service's wait, not our backoff
    assert pipeline.stats.throttled == 2
    assert len(set(service.sent_request_ids(first))) == 1


async def test_adaptive_rate_is_cut_by_a_429() -> None:
    service = FakeService(FakeTime())
    rows = [row(n) for n in range(2, 6)]
    service.script = {rows[1].user.userPrincipalName: ["429:1"]}
    controller = AdaptiveRate(1e6, maximum=1e6, clock=service.time.clock)
    options = PipelineOptions(concurrency=2, rate=None)
    pipeline = make(service, options=options, rate_controller=controller)
    results = await run(pipeline, rows)
    assert all(r.status is Status.CREATED for r in results)
    assert pipeline.stats.rate_settled == 5e5 and controller.cuts == 1


async def test_a_row_throttled_without_end_gives_up_with_api_429() -> None:
    service = FakeService(FakeTime())
    service.script = {"user2@contoso.com": ["429:1"] * 10}
    options = PipelineOptions(concurrency=1, rate=math.inf, max_throttled=3)
    results = await run(make(service, options=options), [row(2)])
    assert results[0].status is Status.FAILED
    assert (
        results[0].problems[0].code == "api.429"
        and "still throttled after 3 tries" in results[0].problems[0].message
    )
    assert len(service.calls) == 3


# ---------------------------------------------------------------------------------------------------------------
# server errors and no answer: retried with the same request id


async def test_server_errors_are_retried_with_backoff_then_succeed() -> None:
    service = FakeService(FakeTime())
    service.script = {"user2@contoso.com": ["503", "503", "ok"]}
    results = await run(make(service), [row(2)])
    result = results[0]
    assert result.status is Status.CREATED and result.attempts == 3
    ids = service.sent_request_ids("user2@contoso.com")
    assert len(ids) == 3 and len(set(ids)) == 1 and result.requestId == ids[0]
    # Full jitter under the exponential ceiling (1 s, then 2 s).
    assert len(service.time.slept) == 2
    assert 0 <= service.time.slept[0] <= 1.0 and 0 <= service.time.slept[1] <= 2.0


async def test_a_server_retry_after_is_honoured() -> None:
    service = FakeService(FakeTime())
    service.script = {"user2@contoso.com": ["503:3", "ok"]}
    results = await run(make(service), [row(2)])
    assert results[0].status is Status.CREATED and service.time.slept == [3.0]


async def test_gives_up_after_the_attempts_with_the_status_code() -> None:
    service = FakeService(FakeTime())
    service.script = {"user2@contoso.com": ["503"] * 10, "user3@contoso.com": ["transport"] * 10}
    results = await run(make(service, attempts=3), [row(2), row(3)])
    server, unreachable = results
    assert server.status is Status.FAILED and server.userId is None
    assert [p.code for p in server.problems] == ["api.503"]
    assert "gave up after 3 attempts" in server.problems[0].message
    assert "HTTP 503: Service Unavailable" in server.problems[0].message
    assert unreachable.status is Status.FAILED and [p.code for p in unreachable.problems] == [API_UNREACHABLE]
    assert "may have been created" in unreachable.problems[0].message
    assert len(service.sent_request_ids("user2@contoso.com")) == 3
    assert len(set(service.sent_request_ids("user3@contoso.com"))) == 1
    # Before saying "failed" about a row that may exist, it was looked up.
    assert sorted(service.lookups) == ["user2@contoso.com", "user3@contoso.com"]


async def test_giving_up_on_a_user_that_was_created_after_all_reports_it_created() -> None:
    service = FakeService(FakeTime())
    service.script = {"user2@contoso.com": ["created-then-transport", "transport", "transport"]}
    results = await run(make(service, attempts=3), [row(2)])
    assert results[0].status is Status.CREATED
    assert results[0].userId == service.users["user2@contoso.com"]


@pytest.mark.parametrize("with_graph", [True, False])
async def test_no_answer_then_duplicate_is_our_own_user(with_graph: bool) -> None:
    service = FakeService(FakeTime())
    upn = "user2@contoso.com"
    service.script = {upn: ["created-then-transport", "dup"]}
    graph = FakeGraph(service) if with_graph else None
    results = await run(make(service, graph=graph), [row(2)])
    result = results[0]
    assert result.status is Status.CREATED and result.problems == ()
    assert result.userId == service.users[upn]
    ids = service.sent_request_ids(upn)
    assert len(ids) == 2 and ids[0] == ids[1] == result.requestId
    if graph is not None:
        assert graph.asked == [(CUSTOMER, upn)] and service.lookups == []
    else:
        assert service.lookups == [upn]


async def test_a_duplicate_on_a_clean_first_attempt_is_someone_elses_user() -> None:
    service = FakeService(FakeTime())
    service.users["user2@contoso.com"] = "someone-elses-id"
    service.script = {"user2@contoso.com": ["dup"], "user3@contoso.com": ["dup"]}
    results = await run(make(service), [row(2), row(3)])
    exists, ghost = results
    assert exists.status is Status.SKIPPED and exists.userId == "someone-elses-id"
    assert [p.code for p in exists.problems] == [Code.USER_EXISTS]
    # The service says taken, yet nobody has it (a soft-deleted user): failed, with the service's words.
    assert ghost.status is Status.FAILED and ghost.problems[0].code == "api.400"
    assert "ObjectConflict" in ghost.problems[0].message and "deleted" in ghost.problems[0].message


async def test_a_business_refusal_is_not_retried() -> None:
    service = FakeService(FakeTime())
    service.script = {"user2@contoso.com": ["400"]}
    results = await run(make(service), [row(2)])
    result = results[0]
    assert result.status is Status.FAILED and result.attempts == 1
    assert len(service.calls) == 1 and service.time.slept == []
    problem = result.problems[0]
    assert problem.code == "api.400"
    assert "800002" in problem.message and "Invalid usage location" in problem.message


# ---------------------------------------------------------------------------------------------------------------
# 401: one refresh


async def test_a_401_refreshes_the_token_once_and_retries_the_row() -> None:
    service = FakeService(FakeTime())
    service.script = {"user2@contoso.com": ["401", "ok"], "user3@contoso.com": ["401", "401"]}
    tokens = FakeTokens()
    results = await run(make(service, tokens=tokens, concurrency=1), [row(2), row(3)])
    refreshed, refused = results
    assert refreshed.status is Status.CREATED and refreshed.attempts == 2
    assert refused.status is Status.FAILED and refused.problems[0].code == "api.401" and refused.attempts == 2
    assert "also after a refresh" in refused.problems[0].message
    assert tokens.refreshes == 2  # one per stale token seen, never a loop
    assert len(set(service.sent_request_ids("user2@contoso.com"))) == 1


async def test_workers_that_saw_the_same_stale_token_refresh_it_once() -> None:
    service = FakeService(FakeTime())
    rows = [row(n) for n in range(2, 6)]
    service.script = {r.user.userPrincipalName: ["401", "ok"] for r in rows}
    tokens = FakeTokens()
    results = await run(make(service, tokens=tokens, concurrency=4), rows)
    assert all(r.status is Status.CREATED for r in results)
    assert tokens.refreshes == 1


async def test_a_401_without_a_refreshable_token_fails_the_row() -> None:
    service = FakeService(FakeTime())
    service.script = {"user2@contoso.com": ["401"], "user3@contoso.com": ["401"]}
    results = await run(make(service), [row(2)])
    assert results[0].problems[0].code == "api.401" and len(service.calls) == 1
    assert "no way to refresh" in results[0].problems[0].message

    tokens = FakeTokens(refuse_refresh=True)
    results = await run(make(service, tokens=tokens), [row(3)])
    assert results[0].status is Status.FAILED and "could not be refreshed" in results[0].problems[0].message


# ---------------------------------------------------------------------------------------------------------------
# journal


async def test_the_journal_is_consulted_before_sending_and_never_sees_a_password() -> None:
    service = FakeService(FakeTime())
    earlier_id = str(uuid.uuid4())
    journal = RecordingJournal(
        {
            "user2@contoso.com": PriorState(PriorOutcome.CREATED, "old-request", "id-from-last-night"),
            "user3@contoso.com": PriorState(PriorOutcome.IN_DOUBT, earlier_id),
        }
    )
    service.users["user3@contoso.com"] = "created-by-the-killed-run"
    service.script = {"user3@contoso.com": ["dup"]}
    results = await run(make(service, journal=journal), [row(2), row(3), row(4)])
    before, in_doubt, fresh = results
    assert before.status is Status.SKIPPED and before.userId == "id-from-last-night"
    assert service.sent_request_ids("user2@contoso.com") == []
    # Re-sent with the SAME request id, and the duplicate reconciled as our own creation.
    assert service.sent_request_ids("user3@contoso.com") == [earlier_id]
    assert in_doubt.status is Status.CREATED and in_doubt.userId == "created-by-the-killed-run"
    assert fresh.status is Status.CREATED
    sending = [entry for entry in journal.log if entry[0] == "sending"]
    assert sending == [
        ("sending", CUSTOMER, "user3@contoso.com", 3, earlier_id),
        ("sending", CUSTOMER, "user4@contoso.com", 4, fresh.requestId),
    ]
    assert journal.log[-1] == ("flush",)
    assert PASSWORD not in repr(journal.log)


# ---------------------------------------------------------------------------------------------------------------
# stop


async def test_stop_lets_the_request_in_flight_finish_and_sends_nothing_new() -> None:
    service = FakeService(FakeTime())
    rows = [row(n) for n in range(2, 30)]
    pipeline = make(service, concurrency=2)

    def stop_on_the_fifth(upn: str) -> None:
        if len(service.calls) == 5:
            pipeline.stop()

    service.on_create = stop_on_the_fifth
    results = await run(pipeline, rows)

    assert pipeline.stats.interrupted
    assert len(service.calls) == 5  # the other worker's request was already counted: nothing new went out
    sent = {call.upn for call in service.calls}
    assert [r.row for r in results] == [r.user.row for r in rows[: len(results)]]  # in order, no gaps
    assert len(results) < len(rows)  # rows after the stop were not taken from the input
    for result in results:
        if result.userPrincipalName in sent:
            assert result.status is Status.CREATED  # in flight: finished
        else:
            assert result.status is Status.FAILED and result.problems[0].code == RUN_INTERRUPTED
            assert "not sent" in result.problems[0].message and result.requestId is None
    assert pipeline.stats.not_finished == len(results) - len(sent)


async def test_stop_abandons_a_retry_that_was_waiting() -> None:
    fake_time = FakeTime()
    service = FakeService(fake_time)
    service.script = {
        "user2@contoso.com": ["503"],
        "user3@contoso.com": ["created-then-transport"],
        "user4@contoso.com": ["429:30"],
    }
    never = asyncio.Event()
    holder: dict[str, Pipeline] = {}
    waits = 0

    async def sleep_until_stopped(seconds: float) -> None:
        nonlocal waits
        waits += 1
        if waits == 3:  # every row is waiting to retry: stop, and never wake on our own
            holder["p"].stop()
        await never.wait()

    pipeline = make(service, concurrency=3, sleep=sleep_until_stopped)
    holder["p"] = pipeline
    results = await asyncio.wait_for(run(pipeline, [row(2), row(3), row(4)]), timeout=10)
    server, unknown, throttled = results
    assert len(service.calls) == 3
    assert server.status is Status.FAILED and server.problems[0].code == RUN_INTERRUPTED
    # A 5xx may come after the work was done (a gateway timing out): say so rather than "not created".
    assert "may exist" in server.problems[0].message and "HTTP 503" in server.problems[0].message
    assert server.requestId == service.calls[0].request_id
    assert unknown.status is Status.FAILED and "may exist" in unknown.problems[0].message
    assert "closed the connection" in unknown.problems[0].message
    # A 429 means the service did not take it: certainly not created.
    assert throttled.status is Status.FAILED and throttled.problems[0].code == RUN_INTERRUPTED
    assert "not created" in throttled.problems[0].message and "HTTP 429" in throttled.problems[0].message


async def test_stop_before_run_sends_nothing() -> None:
    service = FakeService(FakeTime())
    pipeline = make(service)
    pipeline.stop()
    results = await run(pipeline, [row(2), row(3)])
    assert results == [] and service.calls == [] and pipeline.stats.interrupted


# ---------------------------------------------------------------------------------------------------------------
# memory and pacing


async def test_a_long_sheet_streams_through_a_bounded_window() -> None:
    service = FakeService(FakeTime())
    total = 100_000
    taken = 0

    def rows() -> Iterator[CheckedRow]:
        nonlocal taken
        invalid = (Problem(Code.FIELD_MISSING, "displayName is empty", "displayName"),)
        for n in range(total):
            taken += 1
            if n % 10 == 0:
                yield row(n + 2)
            else:
                yield row(n + 2, f"x{n}@contoso.com", Status.INVALID, problems=invalid)

    options = PipelineOptions(concurrency=8, rate=math.inf, queue_size=16, window=64)
    pipeline = make(service, options=options)
    window = options.effective_window
    out = 0
    ahead = 0
    expected_row = itertools.count(2)

    def sink(result: RowResult) -> None:
        nonlocal out, ahead
        assert result.row == next(expected_row)
        out += 1
        ahead = max(ahead, taken - out)

    stats = await pipeline.run(rows(), sink, total=total)
    assert (
        out == total
        and stats.counts["created"] == total // 10
        and stats.counts["invalid"] == total - total // 10
    )
    # Never more than the window between the input and the sink: the sheet was never held whole.
    assert ahead <= window + 1
    assert stats.max_pending <= window


async def test_the_limiter_holds_the_rate() -> None:
    """Real time (aiolimiter keeps the loop's clock): 6 users at 40/s take at least 5 intervals."""
    service = FakeService(FakeTime())
    pipeline = Pipeline(service, options=PipelineOptions(concurrency=6, rate=40.0))
    started = time.monotonic()
    results = await run(pipeline, [row(n) for n in range(2, 8)])
    elapsed = time.monotonic() - started
    assert all(r.status is Status.CREATED for r in results)
    assert elapsed >= 5 / 40 * 0.95
    assert pipeline.stats.rate_settled == 40.0
