"""Publish CareCoord's CodeSystems into the store (fixed ids; a rerun writes nothing new)."""

from __future__ import annotations

from carecoord.fhir.store import FhirStore, Writer
from carecoord.transitions.codes import code_systems

__all__ = ["publish_code_systems"]


def publish_code_systems(store: FhirStore) -> int:
    """Write the CodeSystems; returns how many changed (0 when all were current)."""

    def work(w: Writer) -> int:
        changed = 0
        for system in code_systems():
            result = w.update("CodeSystem", str(system["id"]), system)
            changed += 0 if result.unchanged else 1
        return changed

    return store.write(work)
