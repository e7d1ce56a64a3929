"""The worker: success, retries with backoff, dead letters, leases, async handlers, stopping."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine

from carecoord.fhir.store import FhirStore
from carecoord.jobs import (
    Fatal,
    JobContext,
    Outcome,
    Registry,
    RegistryError,
    RetryLater,
    Worker,
    backoff_delay,
    list_dead,
    retry_dead,
    utc_now,
)
from carecoord.jobs.worker import MIN_RETRY_DELAY, error_text
from tests.fhir import factories
from tests.jobs.conftest import START, Add, FakeClock, is_postgres, job


def _registry(**handlers: Any) -> Registry:
    registry = Registry()
    for kind, fn in handlers.items():
        registry.register(kind, fn)
    return registry


def _seconds(delta: timedelta) -> float:
    return delta.total_seconds()


# -- pure parts ------------------------------------------------------------------------------------


def test_backoff_is_full_jitter_under_an_exponential_ceiling_and_the_cap() -> None:
    rng = random.Random(1)
    for attempt in range(1, 15):
        ceiling = min(60.0, 2.0 * 2 ** (attempt - 1))
        samples = [backoff_delay(attempt, base=2.0, cap=60.0, rng=rng) for _ in range(500)]
        assert all(0.0 <= s <= ceiling for s in samples)
        # Full jitter: the whole range is used, not just the top.
        assert min(samples) < 0.1 * ceiling and max(samples) > 0.9 * ceiling
    assert backoff_delay(10_000, base=2.0, cap=60.0, rng=rng) <= 60.0


def test_error_text_is_one_short_line() -> None:
    assert error_text(ValueError("bad\n  value")) == "ValueError: bad value"
    assert error_text(KeyError()) == "KeyError"
    long = error_text(RuntimeError("x" * 1000))
    assert len(long) == 300 and long.endswith("…")


def test_registry_refuses_bad_and_duplicate_kinds() -> None:
    registry = Registry()

    def fn(payload: dict[str, Any], ctx: JobContext) -> None:
        return None

    registry.register("a.b", fn)
    registry.register("a.b", fn)  # the same function again is fine (module re-import)
    with pytest.raises(RegistryError):
        registry.register("a.b", lambda p, c: None)
    with pytest.raises(RegistryError):
        registry.register("bad kind", fn)
    assert registry.kinds == ("a.b",) and "a.b" in registry and len(registry) == 1


# -- outcomes --------------------------------------------------------------------------------------


def test_success_marks_the_job_done(engine: Engine, add: Add, clock: FakeClock) -> None:
    seen: list[tuple[dict[str, Any], int, str | None]] = []

    def fn(payload: dict[str, Any], ctx: JobContext) -> None:
        seen.append((payload, ctx.attempt, ctx.connection))

    job_id = add(kind="push", payload={"ref": "Task/1"}, connection="epic")
    worker = Worker(engine, _registry(push=fn), clock=clock)
    assert worker.run_once() == 1
    assert seen == [({"ref": "Task/1"}, 1, "epic")]
    info = job(engine, job_id)
    assert (info.status, info.attempts, info.locked_by, info.last_error) == ("done", 1, None, None)
    assert info.finished_at == START
    assert worker.run_once() == 0


def test_jobs_wait_for_run_at_and_run_in_order(engine: Engine, add: Add, clock: FakeClock) -> None:
    order: list[int] = []
    worker = Worker(
        engine, _registry(k=lambda payload, ctx: order.append(payload["n"])), clock=clock
    )
    add(kind="k", payload={"n": 3}, run_at=START + timedelta(seconds=30))
    add(kind="k", payload={"n": 1})
    add(kind="k", payload={"n": 2})
    assert worker.run_once() == 2
    clock.advance(30)
    assert worker.run_once() == 1
    assert order == [1, 2, 3]


def test_unknown_kinds_are_left_for_other_workers(
    engine: Engine, add: Add, clock: FakeClock
) -> None:
    job_id = add(kind="other")
    assert Worker(engine, _registry(k=lambda p, c: None), clock=clock).run_once() == 0
    assert Worker(engine, Registry(), clock=clock).run_once() == 0
    assert job(engine, job_id).status == "ready"


def test_retries_back_off_with_jitter_up_to_the_cap_then_die(
    engine: Engine, add: Add, clock: FakeClock
) -> None:
    calls: list[int] = []

    def flaky(payload: dict[str, Any], ctx: JobContext) -> None:
        calls.append(ctx.attempt)
        raise ConnectionError("EHR answered 503")

    worker = Worker(
        engine,
        _registry(push=flaky),
        clock=clock,
        backoff_base=10.0,
        backoff_cap=25.0,
        rng=random.Random(7),
    )
    expected_rng = random.Random(7)
    job_id = add(kind="push", max_attempts=4)
    for attempt, ceiling in ((1, 10.0), (2, 20.0), (3, 25.0)):
        assert worker.run_once() == 1
        info = job(engine, job_id)
        assert (info.status, info.attempts) == ("ready", attempt)
        assert info.last_error == "ConnectionError: EHR answered 503"
        delay = _seconds(info.run_at - clock())
        expected = backoff_delay(attempt, base=10.0, cap=25.0, rng=expected_rng)
        assert delay == pytest.approx(max(expected, MIN_RETRY_DELAY), abs=1e-5)
        assert 0.0 < delay <= ceiling
        # Not due yet: nothing runs until the clock reaches run_at.
        clock.advance(delay / 2)
        assert worker.run_once() == 0
        clock.set(info.run_at)
    assert worker.run_once() == 1
    info = job(engine, job_id)
    assert (info.status, info.attempts, info.finished_at) == ("dead", 4, clock())
    assert info.last_error == "ConnectionError: EHR answered 503"
    assert calls == [1, 2, 3, 4]
    assert [j.id for j in list_dead(engine)] == [job_id]
    clock.advance(3600)
    assert worker.run_once() == 0


def test_fatal_dead_letters_at_once_and_retry_dead_revives(
    engine: Engine, add: Add, clock: FakeClock
) -> None:
    fail = [True]

    def fn(payload: dict[str, Any], ctx: JobContext) -> None:
        if fail[0]:
            raise Fatal("EHR refused the Task (422)")

    worker = Worker(engine, _registry(push=fn), clock=clock)
    job_id = add(kind="push", max_attempts=5)
    assert job_id is not None
    assert worker.run_once() == 1
    info = job(engine, job_id)
    assert (info.status, info.attempts) == ("dead", 1)
    assert info.last_error == "Fatal: EHR refused the Task (422)"

    assert retry_dead(engine, 10_000, clock=clock) is False
    clock.advance(60)
    assert retry_dead(engine, job_id, clock=clock) is True
    assert retry_dead(engine, job_id, clock=clock) is False  # no longer dead
    info = job(engine, job_id)
    assert (info.status, info.attempts, info.run_at, info.finished_at) == (
        "ready",
        0,
        clock(),
        None,
    )
    assert info.last_error == "Fatal: EHR refused the Task (422)"  # the reason stays visible
    fail[0] = False
    assert worker.run_once() == 1
    assert job(engine, job_id).status == "done"


def test_retry_later_uses_the_given_delay(engine: Engine, add: Add, clock: FakeClock) -> None:
    def fn(payload: dict[str, Any], ctx: JobContext) -> None:
        if ctx.attempt == 1:
            raise RetryLater(42, "Retry-After")
        raise RetryLater(delay=timedelta(minutes=2))

    worker = Worker(engine, _registry(pull=fn), clock=clock)
    job_id = add(kind="pull")
    worker.run_once()
    info = job(engine, job_id)
    assert (info.status, info.run_at, info.last_error) == (
        "ready",
        START + timedelta(seconds=42),
        "RetryLater: Retry-After",
    )
    clock.set(info.run_at)
    worker.run_once()
    assert job(engine, job_id).run_at == clock() + timedelta(minutes=2)


def test_bad_payload_is_dead_at_once(engine: Engine, add: Add, clock: FakeClock) -> None:
    from sqlalchemy import update

    from carecoord.db import run_write
    from carecoord.jobs.tables import jobs

    job_id = add(kind="k")
    run_write(engine, lambda c: c.execute(update(jobs).values(payload="[1, 2]")))
    Worker(engine, _registry(k=lambda p, c: None), clock=clock).run_once()
    info = job(engine, job_id)
    assert (info.status, info.last_error) == ("dead", "Fatal: the payload is not a JSON object")


def test_async_handlers_run_on_the_workers_loop(engine: Engine, add: Add, clock: FakeClock) -> None:
    seen: list[int] = []

    async def fn(payload: dict[str, Any], ctx: JobContext) -> None:
        seen.append(payload["n"])

    worker = Worker(engine, _registry(k=fn), clock=clock)
    add(kind="k", payload={"n": 1})
    add(kind="k", payload={"n": 2})
    assert worker.run_once() == 2
    worker.close()
    assert seen == [1, 2]


# -- leases ----------------------------------------------------------------------------------------


def _conditional_patient(store: FhirStore) -> bool:
    """A side effect that is idempotent: conditional create on a deterministic identifier."""
    body = factories.patient(identifier=[{"system": "urn:test:job", "value": "job-42"}])
    result = store.write(
        lambda w: w.create("Patient", body, if_none_exist=[("identifier", "urn:test:job|job-42")])
    )
    return result.created


def test_a_crashed_workers_job_runs_again_after_the_lease(
    engine: Engine, store: FhirStore, add: Add, clock: FakeClock
) -> None:
    created: list[bool] = []

    def fn(payload: dict[str, Any], ctx: JobContext) -> None:
        created.append(_conditional_patient(store))

    registry = _registry(make_patient=fn)
    crashed = Worker(engine, registry, worker_id="crashed", clock=clock, lease_seconds=60)
    rescuer = Worker(engine, registry, worker_id="rescuer", clock=clock, lease_seconds=60)
    job_id = add(kind="make_patient")

    claimed = crashed.claim()
    assert claimed is not None and claimed.attempt == 1
    fn({}, None)  # type: ignore[arg-type]  # the side effect happened, then the worker died
    info = job(engine, job_id)
    assert (info.status, info.locked_by, info.locked_until) == (
        "running",
        "crashed",
        START + timedelta(seconds=60),
    )

    assert rescuer.run_once() == 0  # still leased
    clock.advance(61)
    assert rescuer.run_once() == 1
    info = job(engine, job_id)
    assert (info.status, info.attempts) == ("done", 2)
    assert info.last_error is not None and info.last_error.startswith("LeaseExpired")
    assert created == [True, False]  # the re-run found the resource instead of making another
    found = store.write(lambda w: w.find("Patient", [("identifier", "urn:test:job|job-42")], 5))
    assert len(found) == 1
    assert store.read("Patient", found[0]).version_id == 1

    # The slow worker wakes up: its outcome is not written over the newer attempt's.
    assert crashed.process(claimed) is Outcome.LOST
    assert job(engine, job_id).status == "done"


def test_a_job_whose_last_attempt_crashed_is_dead(
    engine: Engine, add: Add, clock: FakeClock
) -> None:
    registry = _registry(k=lambda p, c: None)
    job_id = add(kind="k", max_attempts=1)
    assert Worker(engine, registry, clock=clock, lease_seconds=10).claim() is not None
    clock.advance(11)
    assert Worker(engine, registry, clock=clock).run_once() == 0
    info = job(engine, job_id)
    assert info.status == "dead"
    assert info.last_error is not None and info.last_error.startswith("LeaseExpired")


def test_extend_lease_keeps_the_job(engine: Engine, add: Add, clock: FakeClock) -> None:
    results: list[bool] = []

    def slow(payload: dict[str, Any], ctx: JobContext) -> None:
        clock.advance(50)
        results.append(ctx.extend_lease())
        clock.advance(50)  # past the first lease, inside the extended one

    worker = Worker(engine, _registry(k=slow), clock=clock, lease_seconds=60)
    job_id = add(kind="k")
    assert worker.run_once() == 1
    assert results == [True]
    assert job(engine, job_id).status == "done"


# -- several workers -------------------------------------------------------------------------------


def _run_concurrently(engine: Engine, add: Add, clock: FakeClock, workers: int, total: int) -> None:
    lock = threading.Lock()
    in_flight: set[int] = set()
    calls: Counter[int] = Counter()
    overlaps: list[int] = []

    def fn(payload: dict[str, Any], ctx: JobContext) -> None:
        with lock:
            if ctx.job_id in in_flight:
                overlaps.append(ctx.job_id)
            in_flight.add(ctx.job_id)
            calls[ctx.job_id] += 1
        time.sleep(0.0005)
        with lock:
            in_flight.discard(ctx.job_id)

    registry = _registry(k=fn)
    ids = {add(kind="k", payload={"n": n}) for n in range(total)}
    processed: list[int] = []
    errors: list[BaseException] = []

    def run(number: int) -> None:
        try:
            worker = Worker(engine, registry, worker_id=f"w{number}", clock=clock)
            processed.append(worker.run_once())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert overlaps == []
    assert set(calls) == ids and set(calls.values()) == {1}
    assert sum(processed) == total
    from carecoord.jobs import list_jobs

    assert list_jobs(engine, statuses=("ready", "running", "dead")) == []
    assert len(list_jobs(engine, statuses=("done",), limit=total + 1)) == total


def test_four_workers_run_every_job_exactly_once_on_postgresql(
    engine: Engine, add: Add, clock: FakeClock
) -> None:
    if not is_postgres(engine):
        pytest.skip("SKIP LOCKED claims: PostgreSQL only")
    _run_concurrently(engine, add, clock, workers=4, total=200)


def test_two_workers_on_sqlite_are_still_correct(
    engine: Engine, add: Add, clock: FakeClock
) -> None:
    if is_postgres(engine):
        pytest.skip("SQLite only (PostgreSQL has its own, larger test)")
    _run_concurrently(engine, add, clock, workers=2, total=40)


# -- the loop --------------------------------------------------------------------------------------


def test_run_forever_finishes_the_job_in_hand_and_stops(engine: Engine, add: Add) -> None:
    started = threading.Event()
    release = threading.Event()

    def fn(payload: dict[str, Any], ctx: JobContext) -> None:
        started.set()
        release.wait(5)
        assert ctx.stopping

    job_id = add(kind="k", clock=utc_now)
    second = add(kind="k", clock=utc_now)
    worker = Worker(engine, _registry(k=fn), poll_interval=0.01)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run_forever, args=(stop,))
    thread.start()
    assert started.wait(5)
    stop.set()
    release.set()
    thread.join(5)
    assert not thread.is_alive()
    assert job(engine, job_id).status == "done"
    assert job(engine, second).status == "ready"  # not started after the stop


def test_run_forever_survives_database_errors(
    engine: Engine, add: Add, monkeypatch: pytest.MonkeyPatch
) -> None:
    done = threading.Event()
    worker = Worker(engine, _registry(k=lambda p, c: done.set()), poll_interval=0.01)
    real_claim = worker.claim
    failures = [2]

    def flaky_claim() -> Any:
        if failures[0]:
            failures[0] -= 1
            raise ConnectionError("database restarting")
        return real_claim()

    monkeypatch.setattr(worker, "claim", flaky_claim)
    add(kind="k", clock=utc_now)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run_forever, args=(stop,))
    thread.start()
    assert done.wait(5)
    stop.set()
    thread.join(5)
    assert not thread.is_alive() and failures == [0]
