"""The sandbox over real HTTP on loopback: faults, headers and auth, unknown routes, Graph, pluggable auth and
routes, the store seen by tests, and --state. Same harness as test_sandbox.py (tests/sandbox_http.py)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from bulkonboard.sandbox import (
    GRAPH_AUDIENCE,
    PARTNER_CENTER_AUDIENCE,
    Sandbox,
    SandboxDataError,
    SandboxOptions,
    parse_data,
)
from bulkonboard.sandbox.codes import (
    SERVICE_UNAVAILABLE_CODE,
    TOKEN_MISSING_CODE,
)
from bulkonboard.sandbox.state import read_state

from .sandbox_http import (
    AUTH,
    CONTOSO,
    DISCONNECTED,
    NORTHWIND,
    PASSWORD,
    SAMPLE,
    Start,
    assert_pc_error,
    get_json,
    new_user,
    post_user,
)

# ---------------------------------------------------------------------------------------------------------------
# Faults


async def _create_many(http: aiohttp.ClientSession, box: Sandbox, count: int) -> list[int | str]:
    """Sequential creations; a dropped connection shows as "dropped"."""
    outcomes: list[int | str] = []
    for i in range(count):
        try:
            status, _, _ = await post_user(http, box, new_user(f"user{i}@contoso.com"), request_id=f"req-{i}")
            outcomes.append(status)
        except DISCONNECTED:
            outcomes.append("dropped")
    return outcomes


async def test_fail_rate_answers_503_without_creating_and_repeats_with_the_seed(
    start: Start, http: aiohttp.ClientSession
) -> None:
    first = await start(SandboxOptions(seed=11, fail_rate=0.3))
    outcomes = await _create_many(http, first, 40)
    failed = [i for i, outcome in enumerate(outcomes) if outcome == 503]
    assert 0 < len(failed) < 40 and set(outcomes) == {200, 503}
    assert first.stats.failed == len(failed)
    created = {u["userPrincipalName"] for u in first.store.users(CONTOSO)}
    assert all((f"user{i}@contoso.com" in created) == (i not in failed) for i in range(40))

    again = await start(SandboxOptions(seed=11, fail_rate=0.3))
    assert await _create_many(http, again, 40) == outcomes

    status, body, _ = await post_user(http, await start(SandboxOptions(seed=0, fail_rate=1.0)), new_user())
    assert status == 503
    assert_pc_error(body, SERVICE_UNAVAILABLE_CODE)


async def test_drop_rate_creates_then_hangs_up(start: Start, http: aiohttp.ClientSession) -> None:
    first = await start(SandboxOptions(seed=5, drop_rate=0.4))
    outcomes = await _create_many(http, first, 20)
    dropped = [i for i, outcome in enumerate(outcomes) if outcome == "dropped"]
    assert 0 < len(dropped) < 20 and set(outcomes) == {200, "dropped"}
    assert first.stats.dropped == len(dropped) and first.stats.creations == 20
    for i in range(20):  # dropped or not, every user exists
        assert first.store.user_by_upn(CONTOSO, f"user{i}@contoso.com") is not None

    # the lost answer is what a retry with the same id gets
    i = dropped[0]
    status, replayed, _ = await post_user(
        http, first, new_user(f"user{i}@contoso.com"), request_id=f"req-{i}"
    )
    assert status == 200
    assert replayed["id"] == first.store.user_by_upn(CONTOSO, f"user{i}@contoso.com")["id"]  # type: ignore[index]

    again = await start(SandboxOptions(seed=5, drop_rate=0.4))
    assert await _create_many(http, again, 20) == outcomes


async def test_rate_limit_answers_429_in_partner_centers_shape(
    start: Start, http: aiohttp.ClientSession
) -> None:
    now = [500.0]
    box = await start(SandboxOptions(seed=0, rate_limit=(3, 60.0)), clock=lambda: now[0])
    statuses = []
    for i in range(3):
        statuses.append((await post_user(http, box, new_user(f"u{i}@contoso.com")))[0])
        now[0] += 10
    status, body, headers = await post_user(http, box, new_user("u3@contoso.com"))
    assert statuses == [200, 200, 200] and status == 429
    assert headers["Retry-After"] == "30"  # the first admission (t=500) leaves the window at t=560
    assert body == {"statusCode": 429, "message": "Rate limit is exceeded. Try again in 30 seconds."}
    assert box.store.user_by_upn(CONTOSO, "u3@contoso.com") is None and box.stats.throttled == 1
    # refused attempts do not count; once the first admission leaves the window, one slot is free
    now[0] = 560.0
    assert (await post_user(http, box, new_user("u3@contoso.com")))[0] == 200
    assert (await post_user(http, box, new_user("u4@contoso.com")))[0] == 429


async def test_replays_and_reads_do_not_count_against_the_rate_limit(
    start: Start, http: aiohttp.ClientSession
) -> None:
    box = await start(SandboxOptions(seed=0, rate_limit=(1, 60.0)), clock=lambda: 0.0)
    assert (await post_user(http, box, new_user(), request_id="req-x"))[0] == 200
    assert (await post_user(http, box, new_user(), request_id="req-x"))[0] == 200
    assert (await get_json(http, f"{box.url}/v1/customers/{CONTOSO}/users"))[0] == 200
    assert (await post_user(http, box, new_user("other@contoso.com"), request_id="req-y"))[0] == 429


async def test_retry_after_is_whole_seconds_at_least_one(start: Start, http: aiohttp.ClientSession) -> None:
    now = [0.0]
    box = await start(SandboxOptions(seed=0, rate_limit=(1, 1.0)), clock=lambda: now[0])
    await post_user(http, box, new_user("a@contoso.com"))
    now[0] = 0.95
    status, body, headers = await post_user(http, box, new_user("b@contoso.com"))
    assert status == 429 and headers["Retry-After"] == "1"
    assert body["message"] == "Rate limit is exceeded. Try again in 1 seconds."


async def test_throttle_warnings_past_80_percent(start: Start, http: aiohttp.ClientSession) -> None:
    box = await start(
        SandboxOptions(seed=0, rate_limit=(10, 60.0), throttle_warnings=True), clock=lambda: 0.0
    )
    seen = [
        (await post_user(http, box, new_user(f"w{i}@contoso.com")))[2].get("x-ms-throttle-limit-percentage")
        for i in range(11)
    ]
    assert seen == [None] * 8 + ["0.90", "1.00", "1.00"]

    quiet = await start(SandboxOptions(seed=0, rate_limit=(2, 60.0)), clock=lambda: 0.0)
    headers = [(await post_user(http, quiet, new_user(f"q{i}@contoso.com")))[2] for i in range(3)]
    assert all("x-ms-throttle-limit-percentage" not in h for h in headers)


async def test_latency_slows_every_call(start: Start, http: aiohttp.ClientSession) -> None:
    box = await start(SandboxOptions(seed=0, latency_ms=150))
    for url in (f"{box.url}/v1/customers/{CONTOSO}", f"{box.url}/graph/{CONTOSO}/v1.0/domains"):
        began = time.monotonic()
        status, _ = await get_json(http, url)
        assert status == 200 and time.monotonic() - began >= 0.15


async def test_latency_is_the_services_work_after_counting_and_a_429_is_answered_at_once(
    start: Start, http: aiohttp.ClientSession
) -> None:
    """The create is done (and counted) when the request arrives; its answer waits out the latency. A request the
    limit refuses does no work: its 429 never waits."""
    entered, release = asyncio.Event(), asyncio.Event()

    async def held_sleep(seconds: float) -> None:  # the latency, held until the test lets it go
        entered.set()
        await release.wait()

    options = SandboxOptions(seed=0, latency_ms=150, rate_limit=(1, 60.0))
    box = await start(options, clock=lambda: 0.0, sleep=held_sleep)
    first = asyncio.ensure_future(post_user(http, box, new_user(), str(uuid.uuid4())))
    await entered.wait()  # the first answer is being held back...
    assert box.store.user_by_upn(CONTOSO, new_user()["userPrincipalName"]) is not None  # ...its work is done
    second = await post_user(http, box, new_user("b@contoso.com"), str(uuid.uuid4()))
    assert second[0] == 429 and not first.done()  # refused at once, while the first still waits
    release.set()
    assert (await first)[0] == 200


# ---------------------------------------------------------------------------------------------------------------
# Headers, auth, unknown routes


async def test_request_and_correlation_ids_are_echoed(start: Start, http: aiohttp.ClientSession) -> None:
    box = await start(SandboxOptions(seed=0, rate_limit=(1, 60.0)), clock=lambda: 0.0)
    request_ids = [str(uuid.uuid4()) for _ in range(4)]
    answers = [
        await post_user(http, box, new_user(), request_ids[0]),  # 200
        await post_user(http, box, new_user("b@contoso.com"), request_ids[1]),  # 429
        await post_user(http, box, new_user(), request_ids[2], headers={"Authorization": "Bearer no"}),  # 401
        await post_user(http, box, new_user(), request_ids[3], customer=str(uuid.UUID(int=1))),  # 404
    ]
    assert [status for status, _, _ in answers] == [200, 429, 401, 404]
    for request_id, (_, _, headers) in zip(request_ids, answers, strict=True):
        assert headers["MS-RequestId"] == request_id and headers["MS-CorrelationId"] == "corr-1"
    async with http.get(f"{box.url}/v1/customers/{CONTOSO}", headers=AUTH) as response:
        made_up = response.headers["MS-RequestId"], response.headers["MS-CorrelationId"]
    assert all(uuid.UUID(value) for value in made_up)


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", "Basic c2FuZGJveA==", "Bearer", "sandbox"])
@pytest.mark.parametrize(
    "method,suffix",
    [("GET", ""), ("GET", "/users"), ("POST", "/users"), ("DELETE", "/users/x"), ("PATCH", "/users/x")],
)
async def test_partner_center_needs_the_token(
    start: Start, http: aiohttp.ClientSession, authorization: str | None, method: str, suffix: str
) -> None:
    box = await start()
    headers = {"Authorization": authorization} if authorization is not None else {}
    async with http.request(
        method, f"{box.url}/v1/customers/{CONTOSO}{suffix}", headers=headers, json=new_user()
    ) as response:
        body = await response.json()
        assert response.status == 401 and response.headers["WWW-Authenticate"] == "Bearer"
    assert_pc_error(body, TOKEN_MISSING_CODE)
    assert box.stats.creations == 0 and len(box.store.users(CONTOSO)) == 2


async def test_another_token_can_be_configured(start: Start, http: aiohttp.ClientSession) -> None:
    box = await start(SandboxOptions(token="s3cret-token"))
    async with http.get(
        f"{box.url}/v1/customers/{CONTOSO}", headers={"Authorization": "bearer s3cret-token"}
    ) as ok:
        assert ok.status == 200
    async with http.get(f"{box.url}/v1/customers/{CONTOSO}", headers=AUTH) as refused:
        assert refused.status == 401


async def test_unknown_routes_answer_in_the_services_shape(start: Start, http: aiohttp.ClientSession) -> None:
    box = await start()
    async with http.get(f"{box.url}/v1/nothing/here", headers=AUTH) as response:
        assert response.status == 404
        assert (await response.json())["source"] == "PartnerFD"
    async with http.put(f"{box.url}/v1/customers/{CONTOSO}/users", headers=AUTH) as response:
        assert response.status == 405
    async with http.get(f"{box.url}/graph/{CONTOSO}/v1.0/groups", headers=AUTH) as response:
        assert response.status == 404 and "error" in await response.json()


# ---------------------------------------------------------------------------------------------------------------
# Graph


async def test_graph_lists_the_customers_domains(start: Start, http: aiohttp.ClientSession) -> None:
    box = await start()
    status, body = await get_json(http, f"{box.url}/graph/{CONTOSO}/v1.0/domains")
    assert status == 200
    domains = {d["id"]: d for d in body["value"]}
    assert set(domains) == {"contoso.onmicrosoft.com", "contoso.com", "contoso.co.uk", "fabrikam.com"}
    assert {d["authenticationType"] for d in domains.values()} == {"Managed", "Federated"}
    assert domains["fabrikam.com"]["authenticationType"] == "Federated"
    assert [d for d, v in domains.items() if v["isInitial"]] == ["contoso.onmicrosoft.com"]
    assert [d for d, v in domains.items() if v["isDefault"]] == ["contoso.com"]
    assert all(v["isVerified"] is True and isinstance(v["supportedServices"], list) for v in domains.values())

    _, northwind = await get_json(
        http, f"{box.url}/graph/northwindtraders.com/v1.0/domains"
    )  # tenant by domain
    assert {d["id"] for d in northwind["value"]} == {"northwind.onmicrosoft.com", "northwindtraders.com"}


async def test_graph_finds_a_user_by_upn_in_any_case(start: Start, http: aiohttp.ClientSession) -> None:
    box = await start()
    status, wei = await get_json(http, f"{box.url}/graph/{CONTOSO}/v1.0/users/WEI.ZHANG@contoso.com")
    stored = box.store.user_by_upn(CONTOSO, "wei.zhang@contoso.com")
    assert status == 200 and stored is not None
    assert wei["id"] == stored["id"] and wei["userPrincipalName"] == "wei.zhang@contoso.com"
    assert (wei["displayName"], wei["givenName"], wei["surname"], wei["usageLocation"]) == (
        "Wei Zhang",
        "Wei",
        "Zhang",
        "CN",
    )
    assert wei["mail"] is None and wei["businessPhones"] == []

    _, created, _ = await post_user(http, box, new_user("o'neil@contoso.com"))
    status, found = await get_json(http, f"{box.url}/graph/{CONTOSO}/v1.0/users/O%27Neil@Contoso.com")
    assert status == 200 and found["id"] == created["id"]
    status, by_id = await get_json(http, f"{box.url}/graph/{CONTOSO}/v1.0/users/{created['id']}")
    assert status == 200 and by_id["userPrincipalName"] == "o'neil@contoso.com"


async def test_graph_404_has_graphs_error_body(start: Start, http: aiohttp.ClientSession) -> None:
    box = await start()
    async with http.get(
        f"{box.url}/graph/{CONTOSO}/v1.0/users/nobody@contoso.com",
        headers={**AUTH, "client-request-id": "cri-1"},
    ) as response:
        body = await response.json()
        assert response.status == 404 and response.headers["client-request-id"] == "cri-1"
    assert set(body) == {"error"}
    assert (
        body["error"]["code"] == "Request_ResourceNotFound"
        and "nobody@contoso.com" in body["error"]["message"]
    )
    assert set(body["error"]["innerError"]) == {"date", "request-id", "client-request-id"}
    assert body["error"]["innerError"]["client-request-id"] == "cri-1"
    # the other customer's users are not in this tenant
    status, _ = await get_json(
        http, f"{box.url}/graph/{CONTOSO}/v1.0/users/nancy.davolio@northwindtraders.com"
    )
    assert status == 404


@pytest.mark.parametrize("authorization,message", [(None, "empty"), ("Bearer wrong", "validation")])
@pytest.mark.parametrize("suffix", ["domains", "users/jane.doe@contoso.com"])
async def test_graph_401_is_invalid_authentication_token(
    start: Start, http: aiohttp.ClientSession, authorization: str | None, message: str, suffix: str
) -> None:
    box = await start()
    headers = {"Authorization": authorization} if authorization else {}
    async with http.get(f"{box.url}/graph/{CONTOSO}/v1.0/{suffix}", headers=headers) as response:
        body = await response.json()
        assert response.status == 401
    assert body["error"]["code"] == "InvalidAuthenticationToken" and message in body["error"]["message"]


async def test_graph_unknown_tenant_is_404(start: Start, http: aiohttp.ClientSession) -> None:
    box = await start()
    status, body = await get_json(http, f"{box.url}/graph/{uuid.UUID(int=5)}/v1.0/domains")
    assert status == 404 and body["error"]["code"] == "Request_ResourceNotFound"


# ---------------------------------------------------------------------------------------------------------------
# Pluggable auth and routes


async def test_a_token_verifier_hears_token_tenant_and_audience(
    start: Start, http: aiohttp.ClientSession
) -> None:
    heard: list[tuple[str, str | None, str]] = []

    async def verifier(token: str, tenant: str | None, audience: str) -> bool:  # async verifiers are awaited
        heard.append((token, tenant, audience))
        return token == ("pc" if audience == PARTNER_CENTER_AUDIENCE else f"graph-{tenant}")

    box = await start(verifier=verifier)
    async with http.get(f"{box.url}/v1/customers/{CONTOSO}", headers={"Authorization": "Bearer pc"}) as pc:
        assert pc.status == 200
    async with http.get(
        f"{box.url}/graph/contoso.com/v1.0/domains", headers={"Authorization": f"Bearer graph-{CONTOSO}"}
    ) as graph:
        assert graph.status == 200
    async with http.get(
        f"{box.url}/graph/{NORTHWIND}/v1.0/domains", headers={"Authorization": f"Bearer graph-{CONTOSO}"}
    ) as other:
        assert other.status == 401
    assert heard == [
        ("pc", None, PARTNER_CENTER_AUDIENCE),
        (f"graph-{CONTOSO}", CONTOSO, GRAPH_AUDIENCE),  # the tenant's id, though the path named a domain
        (f"graph-{CONTOSO}", NORTHWIND, GRAPH_AUDIENCE),
    ]


async def test_extra_routes_share_the_server(start: Start, http: aiohttp.ClientSession) -> None:
    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"hello": "world"})

    def setup(app: web.Application) -> None:
        app.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", hello)

    box = await start(extra_routes=[web.get("/hello", hello)], setup_app=setup)
    for path in ("/hello", "/contoso/v2.0/.well-known/openid-configuration"):
        async with http.get(f"{box.url}{path}") as response:  # no token: these are not the API
            assert response.status == 200 and await response.json() == {"hello": "world"}
    status, _ = await get_json(http, f"{box.url}/graph/{CONTOSO}/v1.0/domains")
    assert status == 200


# ---------------------------------------------------------------------------------------------------------------
# The store seen by tests


async def test_store_hands_out_copies(start: Start) -> None:
    box = await start()
    users = box.store.users(CONTOSO)
    users[0]["displayName"] = "changed"
    jane = box.store.user_by_upn(CONTOSO, "Jane.Doe@Contoso.com")
    assert jane is not None and jane["displayName"] == "Jane Doe"
    assert box.store.user_by_upn(CONTOSO, "nobody@contoso.com") is None
    with pytest.raises(KeyError):
        box.store.users(str(uuid.UUID(int=1)))


async def test_url_has_no_trailing_slash_and_needs_a_start() -> None:
    box = Sandbox(SAMPLE)
    with pytest.raises(RuntimeError):
        _ = box.url
    async with box:
        assert box.url.startswith("http://127.0.0.1:") and not box.url.endswith("/")
        port = int(box.url.rsplit(":", 1)[1])
        assert port > 0


# ---------------------------------------------------------------------------------------------------------------
# --state


def _state_upns(path: Path) -> dict[str, str]:
    """What a restarted sandbox would load (the snapshot and the write log after it)."""
    saved = read_state(path) or {}
    return {u["userPrincipalName"]: u["state"] for u in saved.get(CONTOSO, [])}


async def test_state_keeps_users_across_restarts_without_passwords(
    start: Start, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    state = tmp_path / "state.json"
    box = await start(state_path=state)
    status, created, _ = await post_user(http, box, new_user())
    assert status == 200
    assert "new.hire@contoso.com" in _state_upns(state), "on disk before the answer came"
    jane = box.store.user_by_upn(CONTOSO, "jane.doe@contoso.com")
    assert jane is not None
    async with http.delete(f"{box.url}/v1/customers/{CONTOSO}/users/{jane['id']}", headers=AUTH) as response:
        assert response.status == 204
    await box.stop()

    text = state.read_text(encoding="utf-8")
    assert PASSWORD not in text and '"password"' not in text
    assert _state_upns(state) == {
        "jane.doe@contoso.com": "inactive",
        "wei.zhang@contoso.com": "active",
        "new.hire@contoso.com": "active",
    }
    assert not list(tmp_path.glob(".state.json.*")), "no temporary file left behind"

    reborn = await start(state_path=state)
    kept = reborn.store.user_by_upn(CONTOSO, "NEW.HIRE@contoso.com")
    assert kept is not None and kept["id"] == created["id"]
    status, fetched = await get_json(http, f"{reborn.url}/v1/customers/{CONTOSO}/users/{created['id']}")
    assert status == 200 and fetched["displayName"] == "New Hire"
    assert reborn.store.user_by_upn(CONTOSO, "jane.doe@contoso.com")["state"] == "inactive"  # type: ignore[index]
    status, _, _ = await post_user(http, reborn, new_user())
    assert status == 400, "the kept user still holds its UPN"


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        '{"format": "other"}',
        '{"format": "bulkonboard-sandbox-state", "version": 1, "customers": {"x": {"users": [{"id": 1}]}}}',
    ],
)
def test_a_bad_state_file_is_one_clear_line(tmp_path: Path, content: str) -> None:
    state = tmp_path / "state.json"
    state.write_text(content, encoding="utf-8")
    with pytest.raises(SandboxDataError) as caught:
        Sandbox(SAMPLE, state_path=state)
    assert str(state) in str(caught.value) and "\n" not in str(caught.value)


async def test_users_the_data_file_gained_join_the_saved_ones(start: Start, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    first = await start(state_path=state)
    await first.stop()
    grown = SAMPLE.read_text(encoding="utf-8").replace(
        '[[customers]]\nid = "7d2e',
        '[[customers.users]]\nuserPrincipalName = "late.joiner@contoso.com"\ndisplayName = "Late Joiner"\n\n'
        '[[customers]]\nid = "7d2e',
    )
    reborn = await start(data=parse_data(grown), state_path=state)
    upns = [u["userPrincipalName"] for u in reborn.store.users(CONTOSO)]
    assert upns == ["jane.doe@contoso.com", "wei.zhang@contoso.com", "late.joiner@contoso.com"]


def test_a_state_file_in_a_missing_directory_is_refused_at_once(tmp_path: Path) -> None:
    with pytest.raises(SandboxDataError, match="directory does not exist"):
        Sandbox(SAMPLE, state_path=tmp_path / "nowhere" / "state.json")
