"""The store's write path: creates with ids known to be new, held-back inserts, row ids, index
rows kept equal to the current content, and server-assigned ids; on SQLite and PostgreSQL."""

from __future__ import annotations

import re
import threading
from collections import Counter
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine, text

from carecoord.db import RetryableConflict
from carecoord.fhir.errors import Conflict, Gone
from carecoord.fhir.searchparams import KINDS, default_registry, extract_index
from carecoord.fhir.store import FhirStore, Writer, new_id
from tests.fhir.factories import encounter, patient

_COLUMNS = {
    "token": "system, code",
    "string": "value, exact",
    "reference": "target_type, target_id, url",
    "date": "low, high",
    "number": "value, system, code",
}


@pytest.fixture
def plain(engine: Engine) -> FhirStore:
    """A store that runs each unit alone and does not retry, so a conflict shows as raised."""
    return FhirStore(engine, retries=0, group_commit=False)


def _index_of(store: FhirStore, res_type: str, res_id: str) -> dict[str, Counter[Any]]:
    """The index rows stored for a resource, per kind (param and values, as extracted)."""
    with store.engine.connect() as conn:
        rid = conn.execute(
            text("SELECT rid FROM resources WHERE res_type = :t AND res_id = :i"),
            {"t": res_type, "i": res_id},
        ).scalar_one()
        return {
            kind: Counter(
                tuple(row)
                for row in conn.execute(
                    text(f"SELECT param, {_COLUMNS[kind]} FROM idx_{kind} WHERE rid = :rid"),
                    {"rid": rid},
                )
            )
            for kind in KINDS
        }


def _assert_index_is_current(store: FhirStore, res_type: str, res_id: str) -> None:
    content = store.read(res_type, res_id).content
    assert content is not None
    expected = extract_index(res_type, orjson.loads(content), default_registry())
    assert _index_of(store, res_type, res_id) == {k: Counter(expected[k]) for k in KINDS}


def _ids(store: FhirStore, res_type: str, params: list[tuple[str, str]]) -> list[str]:
    return [i for _, i, _ in store.search(store.parse(res_type, params)).matches]


# -- creates with ids known to be new -----------------------------------------------------------


def test_a_known_new_id_is_created_and_a_duplicate_is_still_refused(plain: FhirStore) -> None:
    made = plain.write(lambda w: w.create("Patient", patient(), res_id="p1", known_new=True))
    assert made.created and made.resource.res_id == "p1" and made.resource.version_id == 1
    with pytest.raises(RetryableConflict):  # the unique key holds: the unit would run again
        plain.write(lambda w: w.create("Patient", patient("Other"), res_id="p1", known_new=True))
    with pytest.raises(Conflict, match="Patient/p1 already exists"):
        plain.write(lambda w: w.create("Patient", patient("Other"), res_id="p1"))
    stored = orjson.loads(plain.read("Patient", "p1").content or b"{}")
    assert stored["name"][0]["family"] == "Chalmers" and stored["meta"]["versionId"] == "1"


def test_a_deleted_id_stays_taken(plain: FhirStore) -> None:
    plain.write(lambda w: w.create("Patient", patient(), res_id="gone"))
    plain.delete("Patient", "gone")
    assert plain.write(lambda w: w.taken("Patient", ["gone", "never", "gone"])) == {"gone"}
    with pytest.raises(RetryableConflict):
        plain.write(lambda w: w.create("Patient", patient(), res_id="gone", known_new=True))
    with pytest.raises(Gone):
        plain.read("Patient", "gone")


def test_taken_looks_at_one_type_and_at_every_id_asked(plain: FhirStore) -> None:
    plain.write(lambda w: [w.create("Patient", patient(), res_id=f"p{i}") for i in range(1500)])
    plain.write(lambda w: w.create("Encounter", encounter("p0"), res_id="p1500"))
    asked = [f"p{i}" for i in range(0, 3000, 3)]
    taken = plain.write(lambda w: w.taken("Patient", asked))
    assert taken == {f"p{i}" for i in range(0, 1500, 3)}
    assert plain.write(lambda w: w.taken("Patient", [])) == set()


def test_an_update_known_to_create_makes_version_one_by_put(plain: FhirStore) -> None:
    made = plain.write(lambda w: w.update("Patient", "p1", patient(), known_new=True))
    assert made.created and made.resource.version_id == 1
    [entry] = plain.history("Patient", "p1").entries
    assert entry.method == "PUT"
    with pytest.raises(RetryableConflict):
        plain.write(lambda w: w.update("Patient", "p1", patient("B"), known_new=True))
    again = plain.write(lambda w: w.update("Patient", "p1", patient("B")))
    assert again.resource.version_id == 2 and not again.created


def test_an_audit_event_takes_the_id_it_is_given(plain: FhirStore) -> None:
    event = {"resourceType": "AuditEvent", "recorded": "2026-01-01T00:00:00Z"}
    given = plain.write(lambda w: w.audit(event, res_id="ae-1"))
    assert given.res_id == "ae-1" and plain.read("AuditEvent", "ae-1").version_id == 1
    assigned = plain.write(lambda w: w.audit(event))
    assert assigned.res_id != "ae-1"


# -- held-back inserts and row ids ----------------------------------------------------------------


def test_a_unit_reads_searches_and_updates_what_it_just_created(plain: FhirStore) -> None:
    def work(w: Writer) -> tuple[Any, ...]:
        made = w.create("Patient", patient("Held"), res_id="h1", known_new=True)
        read = w.read("Patient", "h1")
        found = w.find("Patient", [("family", "Held")])
        changed = w.update("Patient", "h1", patient("Held", gender="female"))
        return made.resource.version_id, read.version_id, found, changed.resource.version_id

    assert plain.write(work) == (1, 1, ["h1"], 2)
    assert _ids(plain, "Patient", [("gender", "female"), ("family", "held")]) == ["h1"]
    _assert_index_is_current(plain, "Patient", "h1")


def test_a_failed_unit_leaves_nothing_and_later_units_store_everything(plain: FhirStore) -> None:
    def fails(w: Writer) -> None:
        for i in range(3):
            w.create("Patient", patient(f"Lost{i}"))
        w.flush()
        raise RuntimeError("the unit gives up")

    with pytest.raises(RuntimeError):
        plain.write(fails)
    made = plain.write(lambda w: [w.create("Patient", patient(f"Kept{i}")) for i in range(3)])
    assert _ids(plain, "Patient", [("family", "lost")]) == []
    assert sorted(_ids(plain, "Patient", [("family", "kept")])) == sorted(
        m.resource.res_id for m in made
    )


def test_concurrent_units_sharing_transactions_store_every_resource_once(
    store: FhirStore,
) -> None:
    """SQLite runs concurrent units in one transaction (group commit), each in a savepoint;
    PostgreSQL in transactions of their own. Failing units leave nothing behind."""
    made: list[str] = []
    lock = threading.Lock()

    def writer(n: int) -> None:
        for k in range(15):

            def unit(w: Writer, k: int = k) -> list[str]:
                ids = [
                    w.create("Patient", patient(f"T{n}x{k}x{j}")).resource.res_id for j in range(3)
                ]
                if k % 5 == 4:
                    raise ValueError("this unit fails")
                return ids

            try:
                ids = store.write(unit)
            except ValueError:
                continue
            with lock:
                made.extend(ids)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(made) == 6 * 12 * 3 == len(set(made))
    with store.engine.connect() as conn:
        rows = conn.execute(text("SELECT res_id, rid FROM resources")).all()
        versions = conn.execute(text("SELECT count(*) FROM resource_versions")).scalar_one()
    assert sorted(r[0] for r in rows) == sorted(made) and versions == len(made)
    assert len({r[1] for r in rows}) == len(rows)


# -- index rows on update -------------------------------------------------------------------------


def _gp(role: str) -> dict[str, Any]:
    return {"generalPractitioner": [{"reference": f"PractitionerRole/{role}"}]}


def test_updates_keep_the_index_equal_to_the_current_content(plain: FhirStore) -> None:
    home = [{"line": ["1 Main St"], "city": "Raleigh", "postalCode": "27601"}]
    base = patient("Smith", address=home)
    plain.write(lambda w: w.create("Patient", base, res_id="p1"))
    plain.write(lambda w: w.update("Patient", "p1", {**base, **_gp("a")}))  # one kind changes
    _assert_index_is_current(plain, "Patient", "p1")
    assert _ids(plain, "Patient", [("general-practitioner", "PractitionerRole/a")]) == ["p1"]
    assert _ids(plain, "Patient", [("birthdate", "1974-12-25"), ("address-city", "raleigh")]) == [
        "p1"
    ]
    moved = {**patient("Jones"), **_gp("b"), "address": [{"city": "Durham"}]}
    plain.write(lambda w: w.update("Patient", "p1", moved))  # names, address and GP change
    _assert_index_is_current(plain, "Patient", "p1")
    assert _ids(plain, "Patient", [("family", "smith")]) == []
    assert _ids(plain, "Patient", [("general-practitioner", "PractitionerRole/a")]) == []
    assert _ids(plain, "Patient", [("address-city", "durham"), ("family", "jones")]) == ["p1"]
    no_gp = {k: v for k, v in moved.items() if k != "generalPractitioner"}
    plain.write(lambda w: w.update("Patient", "p1", no_gp))  # a kind's rows all go
    _assert_index_is_current(plain, "Patient", "p1")
    assert _ids(plain, "Patient", [("general-practitioner", "PractitionerRole/b")]) == []
    reordered = {**no_gp, "identifier": [*no_gp["identifier"], {"system": "u", "value": "2"}]}
    reordered["identifier"].reverse()
    plain.write(lambda w: w.update("Patient", "p1", reordered))
    _assert_index_is_current(plain, "Patient", "p1")
    assert _ids(plain, "Patient", [("identifier", "u|2")]) == ["p1"]


def test_sqlite_rewrites_only_the_index_rows_that_change(plain: FhirStore) -> None:
    """An update that only sets the PCP leaves the birth date, name and address rows (and the
    index pages they sit on) untouched; PostgreSQL replaces them all (reading them first would be
    a round trip)."""
    if plain.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL replaces every index row of an updated resource")
    base = patient("Smith", address=[{"city": "Raleigh"}])
    plain.write(lambda w: w.create("Patient", base, res_id="p5"))
    plain.write(lambda w: w.create("Patient", base, res_id="p6"))  # rows after those of p5

    def row_ids() -> dict[str, list[int]]:
        with plain.engine.connect() as conn:
            return {
                kind: sorted(
                    conn.execute(
                        text(
                            f"SELECT i.rowid FROM idx_{kind} i JOIN resources r ON r.rid = i.rid "
                            "WHERE r.res_id = 'p5'"
                        )
                    ).scalars()
                )
                for kind in KINDS
            }

    before = row_ids()
    plain.write(lambda w: w.update("Patient", "p5", {**base, **_gp("a")}))
    after = row_ids()
    assert before["reference"] == [] and len(after["reference"]) == 1
    for kind in ("token", "string", "date"):
        assert after[kind] == before[kind] != []
    _assert_index_is_current(plain, "Patient", "p5")


def test_several_writes_of_one_resource_in_a_unit_leave_its_last_index(plain: FhirStore) -> None:
    def work(w: Writer) -> None:
        w.create("Patient", patient("One"), res_id="p2")
        w.update("Patient", "p2", {**patient("Two"), **_gp("a")})  # its rows are still buffered
        w.find("Patient", [("family", "two")])  # a search flushes them
        w.update("Patient", "p2", {**patient("Three"), **_gp("a")})  # stored rows compared
        w.update("Patient", "p2", {**patient("Four"), **_gp("b")})  # replaced before a flush

    plain.write(work)
    _assert_index_is_current(plain, "Patient", "p2")
    assert _ids(plain, "Patient", [("family", "four"), ("general-practitioner", "b")]) == ["p2"]
    assert _ids(plain, "Patient", [("family", "three")]) == []


def test_a_deleted_resource_brought_back_is_indexed_again(plain: FhirStore) -> None:
    plain.write(lambda w: w.create("Patient", patient("Back"), res_id="p3"))
    plain.write(lambda w: (w.delete("Patient", "p3"), w.update("Patient", "p3", patient("Back"))))
    _assert_index_is_current(plain, "Patient", "p3")
    plain.delete("Patient", "p3")
    assert _ids(plain, "Patient", [("family", "back")]) == []
    plain.write(lambda w: w.update("Patient", "p3", patient("Back")))  # in a unit of its own
    _assert_index_is_current(plain, "Patient", "p3")
    assert _ids(plain, "Patient", [("family", "back")]) == ["p3"]


def test_an_update_that_changes_nothing_keeps_version_and_index(plain: FhirStore) -> None:
    plain.write(lambda w: w.create("Patient", patient(), res_id="p4"))
    before = _index_of(plain, "Patient", "p4")
    same = plain.write(lambda w: w.update("Patient", "p4", patient()))
    assert same.unchanged and same.resource.version_id == 1
    assert _index_of(plain, "Patient", "p4") == before


# -- server-assigned ids --------------------------------------------------------------------------


def test_server_assigned_ids_are_unique_fhir_ids_in_creation_order(plain: FhirStore) -> None:
    ids = [new_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids) and sorted(ids) == ids
    assert all(
        re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", i)
        for i in ids
    )
    made = plain.write(
        lambda w: [w.create("Patient", patient()).resource.res_id for _ in range(50)]
    )
    assert made == sorted(made) and made[0] > ids[-1]


def test_a_large_unit_stores_every_row_a_single_write_would(
    plain: FhirStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A unit with many rows (a batch, an import, the audit journal) sends its version and index
    rows in bulk on PostgreSQL (COPY): what is stored is what single writes store."""
    from tests.fhir.factories import observation

    bulk_tables: list[str] = []
    copy_rows = Writer._copy_rows

    def counted(self: Writer, bulk: list[tuple[str, list[tuple[Any, ...]]]]) -> None:
        bulk_tables.extend(statement.split()[1] for statement, _ in bulk)
        copy_rows(self, bulk)

    monkeypatch.setattr(Writer, "_copy_rows", counted)

    def work(w: Writer) -> list[tuple[str, str]]:
        made = []
        for i in range(40):
            pat = w.create("Patient", patient(f"Bulk{i}", "Ana", birthDate="1970-01-02")).resource
            obs = w.create("Observation", observation(pat.res_id, value=10.0 + i)).resource
            made += [("Patient", pat.res_id), ("Observation", obs.res_id)]
        return made

    made = plain.write(work)
    single = plain.write(lambda w: w.create("Patient", patient("Single", "Ana")).resource)
    for res_type, res_id in [*made, ("Patient", single.res_id)]:
        _assert_index_is_current(plain, res_type, res_id)
        current = plain.read(res_type, res_id)
        assert plain.vread(res_type, res_id, 1).content == current.content
        (entry,) = plain.history(res_type, res_id).entries
        assert entry.resource.content == current.content
    found = plain.search(plain.parse("Observation", [("value-quantity", "gt49")]))
    assert len(found.matches) == 0 + sum(1 for i in range(40) if 10.0 + i > 49)
    by_name = plain.search(plain.parse("Patient", [("family", "Bulk3"), ("birthdate", "1970")]))
    assert len(by_name.matches) == 11  # Bulk3 and Bulk30-Bulk39
    if plain.engine.dialect.name == "postgresql":  # the bulk path ran, for every kind it holds
        assert set(bulk_tables) >= {"resource_versions", "idx_token", "idx_reference", "idx_date"}
        assert {"idx_string", "idx_number"} <= set(bulk_tables)
    else:
        assert bulk_tables == []
