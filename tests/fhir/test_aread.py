"""PostgreSQL point reads on the event loop: reads that arrive together share one query."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import Engine

from carecoord.fhir.aread import AsyncReader
from carecoord.fhir.store import FhirStore

pytestmark = pytest.mark.usefixtures("engine")


@pytest.fixture
def reader(engine: Engine) -> AsyncReader:
    if engine.dialect.name != "postgresql":
        pytest.skip("the event-loop reader serves PostgreSQL only")
    return AsyncReader(engine.url.render_as_string(hide_password=False), max_size=2)


def _patient(family: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": family}]}


def test_reads_of_one_turn_share_a_query_and_each_gets_its_own_row(
    store: FhirStore, reader: AsyncReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    patients = [store.create("Patient", _patient(f"Family{i}")).resource for i in range(20)]
    practitioner = store.create(
        "Practitioner", {"resourceType": "Practitioner", "name": [{"family": "Adeyemi"}]}
    ).resource
    gone = store.create("Patient", _patient("Gone")).resource
    store.write(lambda w: w.delete("Patient", gone.res_id))
    queries: list[int] = []
    fetch_many = reader._fetch_many

    async def counted(keys: list[tuple[str, str]]) -> Any:
        queries.append(len(keys))
        return await fetch_many(keys)

    monkeypatch.setattr(reader, "_fetch_many", counted)
    wanted = [("Patient", p.res_id) for p in patients] * 2  # each twice
    wanted += [
        ("Practitioner", practitioner.res_id),
        ("Patient", "missing"),
        ("Patient", gone.res_id),
    ]

    async def main() -> list[Any]:
        try:
            return await asyncio.gather(*(reader.read_current(t, i) for t, i in wanted))
        finally:
            await reader.close()

    rows = asyncio.run(main())
    assert queries == [23]  # 43 reads, 23 distinct resources, one query
    for (res_type, res_id), row in zip(wanted, rows, strict=True):
        if res_id == "missing":
            assert row is None
            continue
        version, _updated, deleted, content = row
        if res_id == gone.res_id:
            assert deleted and version == 2
            continue
        current = store.read(res_type, res_id)
        assert (version, deleted) == (current.version_id, False)
        assert content.encode() == current.content


def test_an_error_reaches_every_read_of_the_batch(
    store: FhirStore, reader: AsyncReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(keys: list[tuple[str, str]]) -> Any:
        raise ConnectionError("database unavailable")

    monkeypatch.setattr(reader, "_fetch_many", broken)

    async def main() -> list[Any]:
        return await asyncio.gather(
            *(reader.read_current("Patient", str(i)) for i in range(5)), return_exceptions=True
        )

    results = asyncio.run(main())
    assert all(isinstance(r, ConnectionError) for r in results)


def test_reads_after_a_turn_get_a_query_of_their_own(store: FhirStore, reader: AsyncReader) -> None:
    first = store.create("Patient", _patient("First")).resource

    async def main() -> tuple[Any, Any]:
        try:
            one = await reader.read_current("Patient", first.res_id)
            store.write(lambda w: w.update("Patient", first.res_id, _patient("Changed")))
            two = await reader.read_current("Patient", first.res_id)
            return one, two
        finally:
            await reader.close()

    one, two = asyncio.run(main())
    assert (one[0], two[0]) == (1, 2)  # the second read saw the update, not a cached row
