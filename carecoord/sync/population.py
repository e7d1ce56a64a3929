"""The patients of a population, as EHR patient ids: a Group's members, a list, or open cases.

"Open cases" are the local patients with an EpisodeOfCare whose status is ``active`` or
``waitlist``; only those that came from the connection (their source identity is recorded)
can be pulled from it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from sqlalchemy import Engine

from carecoord.db import read_connection
from carecoord.fhir.search import run_search
from carecoord.fhir.store import FhirStore
from carecoord.sync.client import EhrClient
from carecoord.sync.config import Population
from carecoord.sync.errors import InvalidResponse
from carecoord.sync.identity import ReferenceMapper, source_ids

__all__ = ["OPEN_STATUSES", "group_members", "open_case_patients", "resolve_members"]

OPEN_STATUSES = ("active", "waitlist")
_PAGE = 1000


def group_members(group: dict[str, Any], mapper: ReferenceMapper) -> list[str]:
    """Source ids of the active Patient members of a Group read from the EHR."""
    found: set[str] = set()
    members = group.get("member") or []
    if not isinstance(members, list):
        raise InvalidResponse("the Group's member element is not a list")
    for member in members:
        if not isinstance(member, dict) or member.get("inactive") is True:
            continue
        entity = member.get("entity")
        reference = entity.get("reference") if isinstance(entity, dict) else None
        target = mapper.parse(reference) if isinstance(reference, str) else None
        if target is not None and target[0] == "Patient":
            found.add(target[1])
    return sorted(found)


def _patient_reference(content: bytes) -> str | None:
    body = orjson.loads(content)
    patient = body.get("patient") if isinstance(body, dict) else None
    reference = patient.get("reference") if isinstance(patient, dict) else None
    if not isinstance(reference, str) or not reference.startswith("Patient/"):
        return None
    return reference.removeprefix("Patient/")


def open_case_patients(store: FhirStore, connection: str) -> list[str]:
    """Source ids at ``connection`` of the local patients with an active or waitlisted case."""
    local: set[str] = set()
    params: list[tuple[str, str]] = [("status", ",".join(OPEN_STATUSES)), ("_count", str(_PAGE))]
    cursor: str | None = None
    with read_connection(store.engine) as conn:
        while True:
            paged = [*params, ("_cursor", cursor)] if cursor else params
            query = store.parse("EpisodeOfCare", paged)
            query.count = _PAGE
            page = run_search(conn, query, max_include=0)
            for _, _, content in page.matches:
                patient = _patient_reference(content)
                if patient:
                    local.add(patient)
            cursor = page.next_cursor
            if cursor is None:
                break
        mapped = source_ids(conn, connection, "Patient", local)
    return sorted(mapped.values())


async def resolve_members(
    population: Population, *, client: EhrClient, engine: Engine
) -> list[str]:
    """The population's patients now, as sorted EHR patient ids."""
    if population.kind == "patients":
        return sorted(set(population.patients))
    if population.kind == "group":
        assert population.group is not None
        group = await client.read("Group", population.group)
        return group_members(group, ReferenceMapper(client.name, client.base))
    store = FhirStore(engine)
    return await asyncio.to_thread(open_case_patients, store, client.name)
