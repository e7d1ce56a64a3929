"""The EHR FHIR client under every failure mode (respx)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from carecoord.smart.backend import BackendAuth
from carecoord.smart.connections import EhrConnection
from carecoord.smart.discovery import SmartConfiguration
from carecoord.smart.keys import KeyStore
from carecoord.sync.breaker import CircuitState
from carecoord.sync.client import EhrClient
from carecoord.sync.config import ConnectionSync
from carecoord.sync.errors import (
    AuthorizationFailed,
    CircuitOpen,
    EhrServerError,
    EhrUnreachable,
    ForeignLink,
    InvalidResponse,
    RateLimited,
    RequestRejected,
)
from carecoord.sync.retry import backoff, parse_retry_after
from tests.sync.conftest import Sleeps, run

BASE = "https://ehr.example.org/fhir"
TOKEN_URL = "https://ehr.example.org/token"
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


class WallClock:
    def __init__(self) -> None:
        self.now = NOW.timestamp()

    def __call__(self) -> float:
        return self.now


def bundle(*resources: dict[str, Any], next_url: str | None = None) -> dict[str, Any]:
    links = [{"relation": "self", "url": f"{BASE}/Patient"}]
    if next_url:
        links.append({"relation": "next", "url": next_url})
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": links,
        "entry": [{"resource": r} for r in resources],
    }


PATIENT = {"resourceType": "Patient", "id": "p1"}
OK = httpx.Response(200, json=bundle(PATIENT))


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


@pytest.fixture
def wall() -> WallClock:
    return WallClock()


def make_client(
    sleeps: Sleeps, wall: WallClock, *, auth: httpx.Auth | None = None, **limits: Any
) -> EhrClient:
    settings = {"backoff_base_seconds": 1.0, **limits}
    connection = EhrConnection(name="test-ehr", iss=BASE, client_id="cc")
    return EhrClient(
        connection,
        http=httpx.AsyncClient(),
        auth=auth,
        limits=ConnectionSync(**settings),
        sleep=sleeps,
        clock=wall,
    )


def search(client: EhrClient) -> Any:
    async def go() -> Any:
        try:
            return await client.search("Patient", [("_id", "p1")])
        finally:
            await client.aclose()

    return run(go())


# -- Retry-After -----------------------------------------------------------------------------------


def test_retry_after_parsing() -> None:
    now = NOW.timestamp()
    assert parse_retry_after("120", now=now) == 120.0
    later = format_datetime(NOW + timedelta(seconds=45), usegmt=True)
    assert parse_retry_after(later, now=now) == pytest.approx(45.0)
    past = format_datetime(NOW - timedelta(seconds=45), usegmt=True)
    assert parse_retry_after(past, now=now) == 0.0
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after(None, now=now) is None


def test_backoff_grows_and_is_capped() -> None:
    import random

    rng = random.Random(1)
    delays = [backoff(n, base=1.0, rng=rng, cap=10.0) for n in range(8)]
    assert 0.5 <= delays[0] <= 1.0 and 2.0 <= delays[2] <= 4.0
    assert all(d <= 10.0 for d in delays) and delays[-1] >= 5.0


def test_429_with_retry_after_seconds(
    mock: respx.MockRouter, sleeps: Sleeps, wall: WallClock
) -> None:
    route = mock.get(f"{BASE}/Patient").mock(
        side_effect=[httpx.Response(429, headers={"Retry-After": "7"}), OK]
    )
    page = search(make_client(sleeps, wall))
    assert [r["id"] for r in page.resources] == ["p1"]
    assert route.call_count == 2 and sleeps == [7.0]


def test_429_with_retry_after_date(mock: respx.MockRouter, sleeps: Sleeps, wall: WallClock) -> None:
    when = format_datetime(NOW + timedelta(seconds=30), usegmt=True)
    mock.get(f"{BASE}/Patient").mock(
        side_effect=[httpx.Response(429, headers={"Retry-After": when}), OK]
    )
    search(make_client(sleeps, wall))
    assert sleeps == [pytest.approx(30.0)]


def test_503_honours_retry_after_then_gives_up(
    mock: respx.MockRouter, sleeps: Sleeps, wall: WallClock
) -> None:
    busy = httpx.Response(503, headers={"Retry-After": "2"})
    route = mock.get(f"{BASE}/Patient").mock(return_value=busy)
    with pytest.raises(EhrServerError) as caught:
        search(make_client(sleeps, wall, max_retries=3, circuit_failures=10))
    assert caught.value.status == 503 and caught.value.retry_after == 2.0
    assert route.call_count == 4 and sleeps == [2.0, 2.0, 2.0]


def test_5xx_without_retry_after_backs_off(
    mock: respx.MockRouter, sleeps: Sleeps, wall: WallClock
) -> None:
    mock.get(f"{BASE}/Patient").mock(side_effect=[httpx.Response(500), httpx.Response(502), OK])
    search(make_client(sleeps, wall))
    assert len(sleeps) == 2 and 0.5 <= sleeps[0] <= 1.0 and 1.0 <= sleeps[1] <= 2.0


def test_a_longer_retry_after_than_we_wait_is_raised_at_once(
    mock: respx.MockRouter, sleeps: Sleeps, wall: WallClock
) -> None:
    route = mock.get(f"{BASE}/Patient").mock(
        return_value=httpx.Response(429, headers={"Retry-After": "3600"})
    )
    with pytest.raises(RateLimited) as caught:
        search(make_client(sleeps, wall, max_retry_wait_seconds=60))
    assert caught.value.retry_after == 3600.0
    assert route.call_count == 1 and sleeps == []


@pytest.mark.parametrize(
    "error",
    [httpx.ReadTimeout("slow"), httpx.ConnectError("refused"), httpx.RemoteProtocolError("x")],
)
def test_timeouts_and_connection_errors_are_temporary(
    mock: respx.MockRouter, sleeps: Sleeps, wall: WallClock, error: Exception
) -> None:
    route = mock.get(f"{BASE}/Patient").mock(side_effect=[error, OK])
    search(make_client(sleeps, wall))
    assert route.call_count == 2 and len(sleeps) == 1
    mock.get(f"{BASE}/Patient").mock(side_effect=error)
    with pytest.raises(EhrUnreachable):
        search(make_client(Sleeps(), wall, max_retries=2))


@pytest.mark.parametrize("status", [400, 403, 404, 410, 422])
def test_client_errors_are_fatal_and_not_retried(
    mock: respx.MockRouter, sleeps: Sleeps, wall: WallClock, status: int
) -> None:
    route = mock.get(f"{BASE}/Patient").mock(
        return_value=httpx.Response(status, json={"resourceType": "OperationOutcome"})
    )
    with pytest.raises(RequestRejected) as caught:
        search(make_client(sleeps, wall))
    assert caught.value.status == status
    assert route.call_count == 1 and sleeps == []


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, content=b"<html>not json</html>"),
        httpx.Response(200, json={"resourceType": "Patient", "id": "p1"}),
        httpx.Response(200, json={"resourceType": "Bundle", "entry": [{"fullUrl": "x"}]}),
        httpx.Response(200, json=[1, 2]),
    ],
)
def test_invalid_answers_are_fatal(
    mock: respx.MockRouter, sleeps: Sleeps, wall: WallClock, answer: httpx.Response
) -> None:
    mock.get(f"{BASE}/Patient").mock(return_value=answer)
    with pytest.raises(InvalidResponse):
        search(make_client(sleeps, wall))


def test_read_checks_the_type(mock: respx.MockRouter, sleeps: Sleeps, wall: WallClock) -> None:
    mock.get(f"{BASE}/Group/g1").mock(return_value=httpx.Response(200, json=PATIENT))
    mock.get(f"{BASE}/Group/gone").mock(return_value=httpx.Response(410))
    client = make_client(sleeps, wall)

    async def go() -> None:
        with pytest.raises(InvalidResponse):
            await client.read("Group", "g1")
        with pytest.raises(RequestRejected) as caught:
            await client.read("Group", "gone")
        assert caught.value.status == 410
        await client.aclose()

    run(go())


# -- re-authorisation ------------------------------------------------------------------------------


@pytest.fixture
def backend_auth(tmp_path: Path, keys_template: Path) -> BackendAuth:
    import shutil

    keys = tmp_path / "keys"
    shutil.copytree(keys_template, keys)
    connection = EhrConnection(name="test-ehr", iss=BASE, client_id="cc")
    configuration = SmartConfiguration(token_endpoint=TOKEN_URL)
    return BackendAuth(connection, configuration, KeyStore(keys))


def _token_route(mock: respx.MockRouter) -> respx.Route:
    counter = iter(range(1, 100))

    def issue(_: httpx.Request) -> httpx.Response:
        n = next(counter)
        return httpx.Response(
            200, json={"access_token": f"tok-{n}", "token_type": "Bearer", "expires_in": 3600}
        )

    return mock.post(TOKEN_URL).mock(side_effect=issue)


def test_401_reauthorises_once_then_succeeds(
    mock: respx.MockRouter, sleeps: Sleeps, wall: WallClock, backend_auth: BackendAuth
) -> None:
    tokens = _token_route(mock)
    fhir = mock.get(f"{BASE}/Patient").mock(side_effect=[httpx.Response(401), OK])
    search(make_client(sleeps, wall, auth=backend_auth))
    assert tokens.call_count == 2
    assert [c.request.headers["authorization"] for c in fhir.calls] == [
        "Bearer tok-1",
        "Bearer tok-2",
    ]


def test_401_after_reauthorisation_fails(
    mock: respx.MockRouter, sleeps: Sleeps, wall: WallClock, backend_auth: BackendAuth
) -> None:
    tokens = _token_route(mock)
    fhir = mock.get(f"{BASE}/Patient").mock(return_value=httpx.Response(401))
    client = make_client(sleeps, wall, auth=backend_auth)
    with pytest.raises(AuthorizationFailed):
        search(client)
    assert tokens.call_count == 2 and fhir.call_count == 2 and sleeps == []
    assert client.breaker.state is CircuitState.CLOSED  # the EHR is up; it refuses us


def test_401_without_an_auth_flow_is_fatal(
    mock: respx.MockRouter, sleeps: Sleeps, wall: WallClock
) -> None:
    mock.get(f"{BASE}/Patient").mock(return_value=httpx.Response(401))
    with pytest.raises(AuthorizationFailed):
        search(make_client(sleeps, wall))


def test_a_token_endpoint_refusal_is_fatal(
    mock: respx.MockRouter, sleeps: Sleeps, wall: WallClock, backend_auth: BackendAuth
) -> None:
    mock.post(TOKEN_URL).mock(return_value=httpx.Response(400, json={"error": "invalid_client"}))
    fhir = mock.get(f"{BASE}/Patient").mock(return_value=OK)
    with pytest.raises(AuthorizationFailed):
        search(make_client(sleeps, wall, auth=backend_auth))
    assert fhir.call_count == 0


def test_a_token_endpoint_outage_is_temporary(
    mock: respx.MockRouter, sleeps: Sleeps, wall: WallClock, backend_auth: BackendAuth
) -> None:
    mock.post(TOKEN_URL).mock(return_value=httpx.Response(503))
    with pytest.raises(EhrUnreachable):
        search(make_client(sleeps, wall, auth=backend_auth, max_retries=1))
    assert len(sleeps) == 1


def test_a_rate_limited_token_endpoint_is_temporary(
    mock: respx.MockRouter, sleeps: Sleeps, wall: WallClock, backend_auth: BackendAuth
) -> None:
    tokens = mock.post(TOKEN_URL).mock(
        side_effect=[
            httpx.Response(429, json={"error": "slow_down"}),
            httpx.Response(200, json={"access_token": "t", "token_type": "Bearer"}),
        ]
    )
    mock.get(f"{BASE}/Patient").mock(return_value=OK)
    search(make_client(sleeps, wall, auth=backend_auth))
    assert tokens.call_count == 2 and len(sleeps) == 1


# -- circuit breaker -------------------------------------------------------------------------------


def test_circuit_opens_after_k_failures_and_closes_after_a_probe(
    mock: respx.MockRouter, sleeps: Sleeps, wall: WallClock
) -> None:
    route = mock.get(f"{BASE}/Patient").mock(return_value=httpx.Response(503))
    client = make_client(
        sleeps, wall, max_retries=0, circuit_failures=3, circuit_cooldown_seconds=60
    )

    async def go() -> None:
        for _ in range(3):
            with pytest.raises(EhrServerError):
                await client.search("Patient", [])
        assert client.breaker.state is CircuitState.OPEN
        with pytest.raises(CircuitOpen) as caught:
            await client.search("Patient", [])  # fails fast: no request
        assert route.call_count == 3 and caught.value.retry_after == pytest.approx(60.0)

        wall.now += 61
        assert client.breaker.state is CircuitState.HALF_OPEN
        with pytest.raises(EhrServerError):
            await client.search("Patient", [])  # the probe fails: open again
        assert route.call_count == 4 and client.breaker.state is CircuitState.OPEN

        wall.now += 61
        route.mock(return_value=OK)
        await client.search("Patient", [])  # the probe succeeds: closed
        assert client.breaker.state is CircuitState.CLOSED and client.breaker.failures == 0
        await client.search("Patient", [])
        assert route.call_count == 6
        await client.aclose()

    run(go())


def test_half_open_lets_one_probe_through(
    mock: respx.MockRouter, sleeps: Sleeps, wall: WallClock
) -> None:
    async def slow(_: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.05)
        return OK

    route = mock.get(f"{BASE}/Patient").mock(return_value=httpx.Response(503))
    client = make_client(sleeps, wall, max_retries=0, circuit_failures=1)

    async def go() -> list[Any]:
        with pytest.raises(EhrServerError):
            await client.search("Patient", [])
        wall.now += 61
        route.mock(side_effect=slow)
        results = await asyncio.gather(
            *(client.search("Patient", []) for _ in range(3)), return_exceptions=True
        )
        await client.aclose()
        return results

    results = run(go())
    assert sum(isinstance(r, CircuitOpen) for r in results) == 2
    assert client.breaker.state is CircuitState.CLOSED


def test_a_fatal_answer_does_not_count_towards_the_circuit(
    mock: respx.MockRouter, sleeps: Sleeps, wall: WallClock
) -> None:
    mock.get(f"{BASE}/Patient").mock(
        side_effect=[httpx.Response(503), httpx.Response(404), httpx.Response(503)]
    )
    client = make_client(sleeps, wall, max_retries=0, circuit_failures=2)

    async def go() -> None:
        for expected in (EhrServerError, RequestRejected, EhrServerError):
            with pytest.raises(expected):
                await client.search("Patient", [])
        await client.aclose()

    run(go())
    assert client.breaker.state is CircuitState.CLOSED and client.breaker.failures == 1


# -- in flight -------------------------------------------------------------------------------------


def test_at_most_n_requests_in_flight(
    mock: respx.MockRouter, sleeps: Sleeps, wall: WallClock
) -> None:
    in_flight = 0
    peak = 0

    async def answer(_: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return OK

    route = mock.get(f"{BASE}/Patient").mock(side_effect=answer)
    client = make_client(sleeps, wall, max_in_flight=3)

    async def go() -> None:
        await asyncio.gather(*(client.search("Patient", []) for _ in range(12)))
        await client.aclose()

    run(go())
    assert route.call_count == 12 and peak == 3


def test_default_in_flight_limit_is_five(
    mock: respx.MockRouter, sleeps: Sleeps, wall: WallClock
) -> None:
    peak = in_flight = 0

    async def answer(_: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return OK

    mock.get(f"{BASE}/Patient").mock(side_effect=answer)
    connection = EhrConnection(name="test-ehr", iss=BASE, client_id="cc")
    client = EhrClient(connection, http=httpx.AsyncClient(), sleep=sleeps, clock=wall)

    async def go() -> None:
        await asyncio.gather(*(client.search("Patient", []) for _ in range(20)))
        await client.aclose()

    run(go())
    assert peak == 5


# -- paging ----------------------------------------------------------------------------------------


def test_search_all_follows_next_links_on_the_same_host(
    mock: respx.MockRouter, sleeps: Sleeps, wall: WallClock
) -> None:
    second = {"resourceType": "Patient", "id": "p2"}
    mock.get(f"{BASE}/Patient", params={"_id": "p1,p2"}).mock(
        return_value=httpx.Response(200, json=bundle(PATIENT, next_url=f"{BASE}/Patient?page=2"))
    )
    mock.get(f"{BASE}/Patient", params={"page": "2"}).mock(
        return_value=httpx.Response(200, json=bundle(second))
    )
    client = make_client(sleeps, wall)

    async def go() -> list[str]:
        found = [r["id"] async for r in client.search_all("Patient", [("_id", "p1,p2")])]
        await client.aclose()
        return found

    assert run(go()) == ["p1", "p2"]


@pytest.mark.parametrize(
    "link",
    [
        "https://evil.example.net/fhir/Patient?page=2",
        "http://ehr.example.org/fhir/Patient?page=2",  # another scheme
        "https://ehr.example.org:8443/fhir/Patient?page=2",  # another port
    ],
)
def test_a_next_link_to_another_host_is_refused(
    mock: respx.MockRouter, sleeps: Sleeps, wall: WallClock, link: str
) -> None:
    mock.get(f"{BASE}/Patient").mock(
        return_value=httpx.Response(200, json=bundle(PATIENT, next_url=link))
    )
    elsewhere = mock.route(host="evil.example.net").mock(return_value=OK)
    client = make_client(sleeps, wall)

    async def go() -> None:
        with pytest.raises(ForeignLink):
            async for _ in client.search_all("Patient", []):
                pass
        with pytest.raises(ForeignLink):
            await client.next_page("Patient", link)
        await client.aclose()

    run(go())
    assert elsewhere.call_count == 0


def test_a_relative_next_link_resolves_on_the_base(
    mock: respx.MockRouter, sleeps: Sleeps, wall: WallClock
) -> None:
    client = make_client(sleeps, wall)
    assert client.check_link("Patient?page=2") == f"{BASE}/Patient?page=2"
    run(client.aclose())


def test_outcome_entries_are_left_out(
    mock: respx.MockRouter, sleeps: Sleeps, wall: WallClock
) -> None:
    body = bundle(PATIENT)
    body["entry"].append(
        {"resource": {"resourceType": "OperationOutcome"}, "search": {"mode": "outcome"}}
    )
    mock.get(f"{BASE}/Patient").mock(return_value=httpx.Response(200, json=body))
    page = search(make_client(sleeps, wall))
    assert [r["resourceType"] for r in page.resources] == ["Patient"]


def test_logs_carry_no_query_strings_or_ids(
    mock: respx.MockRouter, sleeps: Sleeps, wall: WallClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="carecoord")
    mock.get(f"{BASE}/Patient").mock(
        side_effect=[httpx.Response(503), httpx.Response(200, json=bundle(PATIENT))]
    )
    client = make_client(sleeps, wall)

    async def go() -> None:
        await client.search("Patient", [("identifier", "MRN|SECRET-4711"), ("_id", "p1")])
        await client.aclose()

    run(go())
    text = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("carecoord"))
    assert "GET Patient search" in text
    assert "SECRET-4711" not in text and "?" not in text and "p1" not in text
