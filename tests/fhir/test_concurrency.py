"""Correctness under concurrency, over real sockets, on SQLite and PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.fhir.factories import patient

FHIR = {"content-type": "application/fhir+json"}


def _parallel(n: int, call) -> list[httpx.Response]:  # type: ignore[no-untyped-def]
    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(call, range(n)))


def test_parallel_conditional_creates_store_exactly_one(
    live_server: str, auth_header: dict[str, str]
) -> None:
    body = patient(identifier=[{"system": "urn:example:mrn", "value": "RACE-1"}])

    def create(_: int) -> httpx.Response:
        with httpx.Client(base_url=live_server, headers=auth_header, timeout=60) as c:
            return c.post(
                "/fhir/Patient",
                json=body,
                headers={**FHIR, "if-none-exist": "identifier=urn:example:mrn|RACE-1"},
            )

    responses = _parallel(32, create)
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(201) == 1, statuses
    assert statuses.count(200) == 31, statuses
    assert len({r.json()["id"] for r in responses}) == 1
    with httpx.Client(base_url=live_server, headers=auth_header) as c:
        assert (
            c.get("/fhir/Patient?identifier=urn:example:mrn|RACE-1&_summary=count").json()["total"]
            == 1
        )


def test_parallel_if_match_updates_exactly_one_wins(
    live_server: str, auth_header: dict[str, str]
) -> None:
    with httpx.Client(base_url=live_server, headers=auth_header, timeout=60) as c:
        created = c.post("/fhir/Patient", json=patient(), headers=FHIR).json()
    pid = created["id"]

    def update(i: int) -> httpx.Response:
        with httpx.Client(base_url=live_server, headers=auth_header, timeout=60) as c:
            body = {**patient(given=f"G{i}"), "id": pid}
            return c.put(f"/fhir/Patient/{pid}", json=body, headers={**FHIR, "if-match": 'W/"1"'})

    responses = _parallel(16, update)
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) == 1, statuses
    assert statuses.count(412) == 15, statuses


def test_parallel_updates_without_if_match_leave_no_gap(
    live_server: str, auth_header: dict[str, str]
) -> None:
    with httpx.Client(base_url=live_server, headers=auth_header, timeout=60) as c:
        pid = c.post("/fhir/Patient", json=patient(), headers=FHIR).json()["id"]
    n = 20

    def update(i: int) -> httpx.Response:
        with httpx.Client(base_url=live_server, headers=auth_header, timeout=60) as c:
            return c.put(
                f"/fhir/Patient/{pid}", json={**patient(given=f"G{i}"), "id": pid}, headers=FHIR
            )

    responses = _parallel(n, update)
    assert all(r.status_code == 200 for r in responses), [
        r.text for r in responses if r.status_code != 200
    ]
    with httpx.Client(base_url=live_server, headers=auth_header) as c:
        history = c.get(f"/fhir/Patient/{pid}/_history?_count=100").json()
        versions = sorted(int(e["resource"]["meta"]["versionId"]) for e in history["entry"])
        assert versions == list(range(1, n + 2))  # 1 create + n updates, no gap, none lost
        givens = {e["resource"]["name"][0]["given"][0] for e in history["entry"][:-1]}
        assert givens == {f"G{i}" for i in range(n)}  # every update kept as its own version


def test_parallel_put_creates_of_same_id_make_one_resource(
    live_server: str, auth_header: dict[str, str]
) -> None:
    def put(i: int) -> httpx.Response:
        with httpx.Client(base_url=live_server, headers=auth_header, timeout=60) as c:
            return c.put(
                "/fhir/Patient/same-id",
                json={**patient(given=f"G{i}"), "id": "same-id"},
                headers=FHIR,
            )

    responses = _parallel(12, put)
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(201) == 1 and statuses.count(200) == 11, statuses
    with httpx.Client(base_url=live_server, headers=auth_header) as c:
        history = c.get("/fhir/Patient/same-id/_history?_count=100").json()
        assert sorted(int(e["resource"]["meta"]["versionId"]) for e in history["entry"]) == list(
            range(1, 13)
        )


def test_deadlocks_between_transactions_are_retried_not_500(
    live_server: str, auth_header: dict[str, str]
) -> None:
    with httpx.Client(base_url=live_server, headers=auth_header, timeout=60) as c:
        for pid in ("lock-a", "lock-b"):
            assert (
                c.put(
                    f"/fhir/Patient/{pid}", json={**patient(), "id": pid}, headers=FHIR
                ).status_code
                == 201
            )

    def crossed(i: int) -> httpx.Response:
        order = ("lock-a", "lock-b") if i % 2 else ("lock-b", "lock-a")
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "resource": {**patient(given=f"T{i}"), "id": pid},
                    "request": {"method": "PUT", "url": f"Patient/{pid}"},
                }
                for pid in order
            ],
        }
        with httpx.Client(base_url=live_server, headers=auth_header, timeout=60) as c:
            return c.post("/fhir", json=bundle)

    responses = _parallel(16, crossed)
    assert [r.status_code for r in responses] == [200] * 16, [
        r.text for r in responses if r.status_code != 200
    ]
