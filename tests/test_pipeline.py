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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from bulkonboard.errors import AuthError, ServiceUnavailable
from bulkonboard.journal.store import open_journal
from bulkonboard.model import Code, Problem, RowResult, Status, UserRow
from bulkonboard.progress import Slowdowns
from bulkonboard.sending.pipeline import (
    API_UNREACHABLE,
    DEFAULT_LOOKUP_RETRIES,
    RUN_INTERRUPTED,
    NullJournal,
    Pipeline,
    PipelineOptions,
    PriorOutcome,
    PriorState,
    StopReason,
    _Pacer,
)
from bulkonboard.sending.retry import Backoff
from bulkonboard.service.partnercenter import (
    DUPLICATE_UPN_TEXT,
    Audience,
    CreatedUser,
    PermissionDenied,
    Refused,
    ServerError,
    Throttled,
    TransportError,
    Unauthorized,
)
from bulkonboard.sheets.validation import CheckedRow

from .support import FakeTime, checked_row

CUSTOMER = "11111111-2222-3333-4444-555555555555"
PASSWORD = "Tr0ub4dor&3-horse"
URL = f"https://pc.test/v1/customers/{CUSTOMER}/users"


# ---------------------------------------------------------------------------------------------------------------
# fakes


@dataclass
class Call:
    upn: str
    request_id: str
    at: float
    customer: str


@dataclass
class FakeService:
    """Partner Center as the pipeline sees it. `script[upn]` lists what each create answers, in turn:
    "ok", "429:<s>", "503", "503:<s>", "transport", "created-then-transport", "dup", "401", "400", "hang"
    (no answer until cancelled); once the script runs out, "ok". "token-down" and "token-refused" fail as the
    real client does when its token provider fails: before anything is sent."""

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
        upcoming = self.script.get(upn, [])
        if upcoming and upcoming[0].startswith("token-"):
            step = upcoming.pop(0)
            self.events.append((step, upn, self.time.now))
            if step == "token-down":
                raise ServiceUnavailable("cannot reach the sign-in service https://login.example: timed out")
            raise AuthError("the refresh token was revoked: run `bulkonboard auth login` again")
        self.calls.append(Call(upn, request_id, self.time.now, customer_id))
        self.events.append(("send", upn, self.time.now))
        if self.on_create is not None:
            self.on_create(upn)
        try:
            return await self._answer(upn, request_id)
        except asyncio.CancelledError:
            self.events.append(("cancelled", upn, self.time.now))
            raise

    async def _answer(self, upn: str, request_id: str) -> CreatedUser:
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
        if kind == "403":
            raise PermissionDenied(
                **common, status=403, code=900308, description="Insufficient privileges to complete the operation."
            )
        if kind == "401":
            raise Unauthorized(
                **common, status=401, code=800001, description="partner token missing or expired"
            )
        if kind == "400":
            raise Refused(**common, status=400, code=800002, description="Invalid usage location")
        if kind == "hang":
            await asyncio.Event().wait()
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
        self.unsent = 0
        self.slowdowns: Callable[[], Slowdowns] | None = None
        self.stopped = False

    def start(self, total: int | None, description: str) -> None:
        self.total = total

    def advance(self, count: int = 1, *, failed: int = 0, unsent: int = 0) -> None:
        self.done += count
        self.failed += failed
        self.unsent += unsent

    def follow(self, slowdowns: Callable[[], Slowdowns]) -> None:
        self.slowdowns = slowdowns

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
    return checked_row(
        n, upn, status=status, problems=kwargs.get("problems", ()), existing=kwargs.get("existing"),
        customer=CUSTOMER, password=PASSWORD,
    )  # fmt: skip


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
    assert progress.unsent == 2  # the invalid and the existing row: no request, so not in the rate
    assert progress.slowdowns is not None and progress.slowdowns() == (pipeline.stats.retries, pipeline.stats.throttled)
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


async def test_a_429_reaches_the_rate_controller_and_the_pacer_follows_it() -> None:
    service = FakeService(FakeTime())
    rows = [row(n) for n in range(2, 6)]
    service.script = {rows[1].user.userPrincipalName: ["429:1"]}
    controller = HalvingRate(1e6)
    options = PipelineOptions(concurrency=2, rate=None)
    pipeline = make(service, options=options, rate_controller=controller)
    results = await run(pipeline, rows)
    assert all(r.status is Status.CREATED for r in results)
    assert controller.throttles == [1.0] and controller.successes == 4
    assert pipeline.stats.rate_settled == 5e5


@dataclass
class HalvingRate:
    """A rate controller that halves on every 429 and counts what the pipeline tells it."""

    current_rate: float
    throttles: list[float | None] = field(default_factory=list)
    successes: int = 0

    def on_success(self, *, usage: float | None = None) -> None:
        self.successes += 1

    def on_throttle(self, retry_after: float | None, *, sent_at: float | None = None) -> None:
        self.throttles.append(retry_after)
        self.current_rate /= 2


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
    for in_doubt in (server, unreachable):  # a 5xx or no answer may come after the work was done
        assert "may exist" in in_doubt.problems[0].message and "same journal" in in_doubt.problems[0].message
    assert len(service.sent_request_ids("user2@contoso.com")) == 3
    assert len(set(service.sent_request_ids("user3@contoso.com"))) == 1
    # Before saying "failed" about a row that may exist, it was looked up, and again while the directory may lag.
    lookups = 1 + DEFAULT_LOOKUP_RETRIES
    assert sorted(service.lookups) == ["user2@contoso.com"] * lookups + ["user3@contoso.com"] * lookups


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
    service.users["user2@contoso.com"] = "id-from-last-night"  # the tenant still holds it (looked up, not sent)
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

    assert pipeline.stats.interrupted and pipeline.stats.halted is None
    assert len(service.calls) == 5  # the other worker's request was already counted: nothing new went out
    sent = {call.upn for call in service.calls}
    # Every row of the input has its result, in order, the ones never reached too.
    assert [r.row for r in results] == [r.user.row for r in rows]
    for result in results:
        if result.userPrincipalName in sent:
            assert result.status is Status.CREATED  # in flight: finished
        else:
            assert result.status is Status.PENDING and result.problems[0].code == RUN_INTERRUPTED
            assert "not sent" in result.problems[0].message and result.requestId is None
    stats = pipeline.stats
    assert stats.not_reached > 0  # rows the feeder reached only after the stop were listed, never queued
    assert stats.not_finished + stats.not_reached == len(rows) - len(sent)
    assert stats.counts["pending"] == len(rows) - len(sent)


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
    assert server.status is Status.PENDING and server.problems[0].code == RUN_INTERRUPTED
    # A 5xx may come after the work was done (a gateway timing out): say so rather than "not created".
    assert "may exist" in server.problems[0].message and "HTTP 503" in server.problems[0].message
    assert server.requestId == service.calls[0].request_id
    assert unknown.status is Status.PENDING and "may exist" in unknown.problems[0].message
    assert "closed the connection" in unknown.problems[0].message
    # A 429 means the service did not take it: certainly not created.
    assert throttled.status is Status.PENDING and throttled.problems[0].code == RUN_INTERRUPTED
    assert "not created" in throttled.problems[0].message and "HTTP 429" in throttled.problems[0].message


async def test_stop_before_run_sends_nothing_and_lists_every_row() -> None:
    service = FakeService(FakeTime())
    pipeline = make(service)
    pipeline.stop()
    invalid = (Problem(Code.UPN_SYNTAX, "no domain", "userPrincipalName"),)
    results = await run(pipeline, [row(2), row(3, "bad@", Status.INVALID, problems=invalid)])
    assert service.calls == [] and pipeline.stats.interrupted
    never, refused = results
    assert never.status is Status.PENDING and never.requestId is None
    assert never.problems == (
        Problem(RUN_INTERRUPTED, "not sent: the run was stopped before this row; run the same command again"),
    )
    assert refused.status is Status.INVALID and refused.problems == invalid  # validation's verdict stands
    assert pipeline.stats.not_reached == 1 and pipeline.stats.rows == 2


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
    """Real time (aiolimiter keeps the loop's clock): 6 users at 40/s, a bucket of two let through at once, then
    one every 1/40 s: at least 4 intervals (a lower bound only: a loaded machine can only make it slower)."""
    service = FakeService(FakeTime())
    pipeline = Pipeline(service, options=PipelineOptions(concurrency=6, rate=40.0))
    started = time.monotonic()
    results = await run(pipeline, [row(n) for n in range(2, 8)])
    elapsed = time.monotonic() - started
    assert all(r.status is Status.CREATED for r in results)
    assert elapsed >= (6 - _Pacer.BUCKET) / 40 * 0.95
    assert pipeline.stats.rate_settled == 40.0


# ---------------------------------------------------------------------------------------------------------------
# the sign-in failing mid-run (the client asks for its token inside each call)


def finished_log(journal: RecordingJournal) -> dict[str, RowResult]:
    return {entry[2]: entry[3] for entry in journal.log if entry[0] == "finished"}


async def test_a_sign_in_service_out_of_reach_is_retried_and_its_row_fails_as_not_sent() -> None:
    service = FakeService(FakeTime())
    service.script = {
        "user2@contoso.com": ["token-down", "token-down", "ok"],
        "user3@contoso.com": ["token-down"] * 10,
    }
    journal = RecordingJournal()
    pipeline = make(service, journal=journal, attempts=3)

    recovered, unreachable, fine = await run(pipeline, [row(2), row(3), row(4)])  # the run goes on

    assert recovered.status is Status.CREATED and recovered.attempts == 1  # only the request that left
    assert len(service.sent_request_ids("user2@contoso.com")) == 1
    assert fine.status is Status.CREATED
    assert unreachable.status is Status.FAILED and unreachable.attempts == 0
    assert service.sent_request_ids("user3@contoso.com") == []
    (problem,) = unreachable.problems
    assert problem.code == API_UNREACHABLE and problem.message.startswith("not sent: no token after 3 tries")
    assert "cannot reach the sign-in service" in problem.message
    assert len(service.time.slept) == 4  # backoff before each retry: two for each row
    # Nothing left, so the journal records it as failed: the next run sends it afresh with a new request id.
    assert finished_log(journal)["user3@contoso.com"].status is Status.FAILED
    stats = pipeline.stats
    assert stats.requests == 2 and stats.sent_rows == 2 and stats.retries == 0
    assert not stats.interrupted and stats.halted is None


async def test_a_sign_in_refused_mid_run_fails_its_row_and_the_run_takes_no_new_row() -> None:
    service = FakeService(FakeTime())
    rows = [row(n) for n in range(2, 12)]
    service.script = {"user4@contoso.com": ["token-refused"]}
    journal = RecordingJournal()
    pipeline = make(service, journal=journal, concurrency=2)

    results = await run(pipeline, rows)

    assert [r.row for r in results] == [r.user.row for r in rows]
    refused = by_upn(results)["user4@contoso.com"]
    (problem,) = refused.problems
    assert refused.status is Status.FAILED and problem.code == "api.401"
    assert problem.message.startswith("not sent: the sign-in failed mid-run")
    assert "auth login" in problem.message  # the sign-in service's own words, which say what to do
    # Nothing was sent after the refusal; what was in flight before it finished.
    refusal_at = [what for what, _, _ in service.events].index("token-refused")
    assert [what for what, _, _ in service.events[refusal_at:]].count("send") == 0
    sent = {call.upn for call in service.calls}
    later = [r for r in results if r.row > 4]
    assert any(r.userPrincipalName not in sent for r in later)
    for result in later:
        if result.userPrincipalName in sent:
            assert result.status is Status.CREATED
        else:
            assert result.status is Status.PENDING and result.problems[0].code == RUN_INTERRUPTED
            assert "sign-in failed mid-run" in result.problems[0].message
    stats = pipeline.stats
    assert stats.halted is not None and "revoked" in stats.halted
    assert not stats.interrupted  # not a person's stop: the run is not "interrupted" (exit 1, not 130)
    assert finished_log(journal)["user4@contoso.com"].status is Status.FAILED  # not sent: afresh next time


async def test_a_persons_stop_after_the_run_halted_itself_is_a_stop_that_keeps_the_halt_text() -> None:
    service = FakeService(FakeTime())
    service.script = {"user2@contoso.com": ["token-refused"]}
    pipeline = make(service, concurrency=1)
    results: list[RowResult] = []

    def sink(result: RowResult) -> None:
        results.append(result)
        if len(results) == 1:
            assert pipeline.stop_reason is StopReason.HALTED  # the refusal halted it
            pipeline.stop()  # then a person's Ctrl-C

    await pipeline.run([row(2), row(3)], sink, total=2)
    assert pipeline.stop_reason is StopReason.STOPPED
    assert pipeline.stats.interrupted and pipeline.stats.halted is not None and "revoked" in pipeline.stats.halted
    assert "sign-in failed mid-run" in results[1].problems[0].message  # the halt still explains the rest
    assert pipeline.stats.requests == 0  # the refused row never sent a request


class TokenTroubleGraph(FakeGraph):
    """Graph whose token provider fails the first lookups with the errors given, in turn."""

    def __init__(self, service: FakeService, failures: list[Exception]) -> None:
        super().__init__(service)
        self.failures = failures

    async def get_user(self, tenant: str, upn: str) -> dict[str, Any] | None:
        if self.failures:
            raise self.failures.pop(0)
        return await super().get_user(tenant, upn)


async def test_a_lookup_whose_token_fails_is_retried_or_leaves_the_row_in_doubt() -> None:
    service = FakeService(FakeTime())
    service.script = {
        upn: ["created-then-transport", "dup"] for upn in ("user2@contoso.com", "user3@contoso.com")
    }
    blip = TokenTroubleGraph(service, [ServiceUnavailable("cannot reach the sign-in service: timed out")])
    (found,) = await run(make(service, graph=blip), [row(2)])
    assert found.status is Status.CREATED and found.userId == service.users["user2@contoso.com"]
    assert len(blip.asked) == 1  # asked again after the blip, and answered

    refused = TokenTroubleGraph(service, [AuthError("the refresh token was revoked")])
    journal = RecordingJournal()
    pipeline = make(service, graph=refused, journal=journal)
    (in_doubt,) = await run(pipeline, [row(3)])
    assert in_doubt.status is Status.FAILED and in_doubt.problems[0].message.startswith("may exist")
    assert "revoked" in in_doubt.problems[0].message and "same journal" in in_doubt.problems[0].message
    assert "user3@contoso.com" not in finished_log(journal)  # stays "sent", for the next run to settle
    assert pipeline.stats.halted is not None


# ---------------------------------------------------------------------------------------------------------------
# rows that may exist: never called failed for the wrong reason, and kept in doubt


class LaggingGraph(FakeGraph):
    """Graph that does not show a new user for its first `lag` lookups (it is eventually consistent)."""

    def __init__(self, service: FakeService, lag: int) -> None:
        super().__init__(service)
        self.lag = lag

    async def get_user(self, tenant: str, upn: str) -> dict[str, Any] | None:
        self.asked.append((tenant, upn))
        if len(self.asked) <= self.lag:
            return None
        user_id = self.service.users.get(upn.casefold())
        return {"id": user_id} if user_id else None


async def test_our_user_the_directory_does_not_show_yet_is_found_after_a_few_lookups() -> None:
    service = FakeService(FakeTime())
    service.script = {"user2@contoso.com": ["created-then-transport", "dup"]}
    graph = LaggingGraph(service, lag=2)
    (result,) = await run(make(service, graph=graph), [row(2)])
    assert result.status is Status.CREATED and result.userId == service.users["user2@contoso.com"]
    assert len(graph.asked) == 3
    assert service.time.slept[-2:] == [1.0, 2.0]  # waits that grow, as the backoff's ceilings


async def test_a_user_that_may_exist_and_cannot_be_found_stays_in_doubt() -> None:
    service = FakeService(FakeTime())
    service.script = {"user2@contoso.com": ["created-then-transport", "dup"]}
    graph = LaggingGraph(service, lag=1000)
    journal = RecordingJournal()
    (result,) = await run(make(service, graph=graph, journal=journal), [row(2)])
    assert len(graph.asked) == 1 + DEFAULT_LOOKUP_RETRIES
    (problem,) = result.problems
    assert result.status is Status.FAILED and problem.code == "api.400"
    assert problem.message.startswith("may exist") and "same journal" in problem.message
    assert "no user has it" not in problem.message
    assert finished_log(journal) == {}  # "sent" stays: the next run replays the same request id


async def test_a_401_or_429s_after_a_lost_answer_say_the_user_may_exist() -> None:
    service = FakeService(FakeTime())
    service.script = {
        "user2@contoso.com": ["created-then-transport", "401", "401"],
        "user3@contoso.com": ["transport", "429:1", "429:1"],
    }
    journal = RecordingJournal()
    options = PipelineOptions(concurrency=1, rate=math.inf, max_throttled=2, backoff=Backoff(1.0, 8.0))
    pipeline = make(service, options=options, tokens=FakeTokens(), journal=journal)
    refused, throttled = await run(pipeline, [row(2), row(3)])
    assert refused.problems[0].code == "api.401" and "also after a refresh" in refused.problems[0].message
    assert throttled.problems[0].code == "api.429" and "still throttled" in throttled.problems[0].message
    for result in (refused, throttled):
        assert result.status is Status.FAILED
        assert "may exist" in result.problems[0].message and "same journal" in result.problems[0].message
    assert finished_log(journal) == {}  # both stay "sent": in doubt


# ---------------------------------------------------------------------------------------------------------------
# stop and abort: what the journal keeps


async def test_a_row_stopped_after_answers_that_created_nothing_is_sent_afresh_next_time(
    tmp_path: Any,
) -> None:
    """Its only answer was a 429 when the run was stopped: the next run must not take a user that someone else
    created meanwhile for the one it sent. A row whose request may have created the user stays in doubt."""
    with open_journal(tmp_path / "j.sqlite", service="https://pc.test") as journal:
        for upn, answer in (("user2@contoso.com", "429:30"), ("user3@contoso.com", "transport")):
            service = FakeService(FakeTime(), script={upn: [answer]})
            holder: dict[str, Pipeline] = {}

            async def stop_then_sleep(
                seconds: float, service: FakeService = service, holder: dict[str, Pipeline] = holder
            ) -> None:
                holder["p"].stop()  # SIGTERM during the wait
                await service.time.sleep(seconds)

            journal.begin_run(input_path="in.csv", input_sha256="0" * 64, customer=CUSTOMER, correlation_id=upn)
            holder["p"] = make(service, journal=journal, concurrency=1, sleep=stop_then_sleep)
            (result,) = await run(holder["p"], [row(int(upn[4]), upn)])
            assert result.status is Status.PENDING and result.problems[0].code == RUN_INTERRUPTED
        journal.begin_run(input_path="in.csv", input_sha256="0" * 64, customer=CUSTOMER, correlation_id="next")
        assert journal.prior(CUSTOMER, "user2@contoso.com") is None  # recorded as not created
        assert {r.upn_key: r.state for r in journal.rows()} == {
            "user2@contoso.com": "failed",
            "user3@contoso.com": "sent",
        }
        in_doubt = journal.prior(CUSTOMER, "user3@contoso.com")
        assert in_doubt is not None and in_doubt.outcome is PriorOutcome.IN_DOUBT

        # Someone else created user2 between the runs; validation found that user in the tenant.
        exists = (Problem(Code.USER_EXISTS, "already exists in the tenant", "userPrincipalName"),)
        stranger = row(2, status=Status.SKIPPED, existing="someone-elses-id", problems=exists)
        (result,) = await run(make(FakeService(FakeTime()), journal=journal), [stranger])
        assert (
            result.status is Status.SKIPPED and result.problems == exists
        )  # not "created by an earlier run"
        assert result.requestId is None
        assert {r.upn_key: r.state for r in journal.rows()}["user2@contoso.com"] == "failed"


async def test_a_stop_while_the_send_is_being_recorded_sends_nothing() -> None:
    service = FakeService(FakeTime())

    class StoppedWhileCommitting(RecordingJournal):
        pipeline: Pipeline

        async def sending(self, customer: str, upn_key: str, row: int, request_id: str) -> None:
            await super().sending(customer, upn_key, row, request_id)
            self.pipeline.stop()  # arrives while the commit is under way
            await asyncio.sleep(0)

    journal = StoppedWhileCommitting()
    pipeline = make(service, journal=journal, concurrency=1)
    journal.pipeline = pipeline
    (result,) = await run(pipeline, [row(2)])
    assert service.calls == []
    assert result.status is Status.PENDING and result.problems[0].message.startswith("not sent")
    # The journal holds "sent" for it: settled as not created, so the next run sends it afresh.
    settled = finished_log(journal)["user2@contoso.com"]
    assert settled.status is Status.FAILED and settled.problems[0].code == RUN_INTERRUPTED


async def test_abort_cuts_the_requests_in_flight_short_and_every_row_still_has_a_result() -> None:
    service = FakeService(FakeTime())
    rows = [row(n) for n in range(2, 10)]
    service.script = {"user3@contoso.com": ["hang"], "user4@contoso.com": ["hang"]}
    journal = RecordingJournal()
    pipeline = make(service, journal=journal, concurrency=2)

    def abort_when_both_hang(upn: str) -> None:
        if upn == "user4@contoso.com":  # the second Ctrl-C, as the signal handler runs it: from the loop
            asyncio.get_running_loop().call_soon(pipeline.abort)

    service.on_create = abort_when_both_hang
    results = await asyncio.wait_for(run(pipeline, rows), timeout=10)

    assert [r.row for r in results] == [r.user.row for r in rows]
    assert sorted(upn for what, upn, _ in service.events if what == "cancelled") == [
        "user3@contoso.com",
        "user4@contoso.com",
    ]
    assert [call.upn for call in service.calls] == [
        "user2@contoso.com",
        "user3@contoso.com",
        "user4@contoso.com",
    ]
    (
        done,
        *cut,
    ) = results[:3]
    assert done.status is Status.CREATED
    for result in cut:
        assert result.status is Status.PENDING and result.problems[0].code == RUN_INTERRUPTED
        assert (
            result.problems[0].message.startswith("may exist")
            and "same journal" in result.problems[0].message
        )
        assert [result.requestId] == service.sent_request_ids(result.userPrincipalName)
    for result in results[3:]:
        assert result.status is Status.PENDING and result.problems[0].message.startswith("not sent")
        assert result.requestId is None
    assert set(finished_log(journal)) == {"user2@contoso.com"}  # the two cut short stay "sent", in doubt
    assert pipeline.stats.interrupted


async def test_a_stop_counts_no_row_as_failed_on_the_progress_bar() -> None:
    service = FakeService(FakeTime())
    progress = RecordingProgress()
    rows = [row(n) for n in range(2, 30)]
    pipeline = make(service, concurrency=2, progress=progress)
    service.on_create = lambda upn: pipeline.stop() if upn == "user3@contoso.com" else None
    results = await run(pipeline, rows)
    pending = [r for r in results if r.status is Status.PENDING]
    assert pending and progress.done == len(rows)
    assert progress.failed == 0  # pending is not failed
    assert pipeline.stats.counts["failed"] == 0 and pipeline.stats.counts["pending"] == len(pending)


async def test_a_permission_refusal_stops_the_run_and_leaves_every_unfinished_row_pending() -> None:
    service = FakeService(FakeTime())
    progress = RecordingProgress()
    journal = RecordingJournal()
    # user2: a 503 first (it may have created the user), then refused; user3: refused outright
    service.script = {"user2@contoso.com": ["503", "403"], "user3@contoso.com": ["403"]}
    rows = [row(n) for n in range(2, 12)]
    pipeline = make(service, concurrency=2, journal=journal, progress=progress)
    results = await run(pipeline, rows)

    assert pipeline.stop_reason is StopReason.DENIED and not pipeline.stats.interrupted
    assert pipeline.stats.denied is not None and "Directory Writers" in pipeline.stats.denied
    assert {call.upn for call in service.calls} <= {"user2@contoso.com", "user3@contoso.com", "user4@contoso.com"}
    doubt, refused, *rest = results
    assert doubt.status is Status.PENDING and doubt.problems[0].message.startswith("may exist")
    assert refused.status is Status.PENDING and refused.problems[0].code == Code.PERMISSION_DENIED
    assert "nothing was created" in refused.problems[0].message
    for result in rest:
        assert result.status in (Status.PENDING, Status.CREATED)
        if result.status is Status.PENDING:
            assert "lack of permission" in result.problems[0].message
    assert any(r.status is Status.PENDING and r.requestId is None for r in rest)  # never sent
    assert progress.failed == 0 and pipeline.stats.counts["failed"] == 0
    log = finished_log(journal)
    assert "user2@contoso.com" not in log  # in doubt: stays "sent" for the next run to settle
    assert log["user3@contoso.com"].status is Status.FAILED  # certainly not created: afresh next time
