"""Small readers of stored resources shared by the transition services (JSON, no validation)."""

from __future__ import annotations

from typing import Any

import orjson

from carecoord.fhir.errors import NotFound
from carecoord.fhir.store import Writer

__all__ = ["read_json", "read_reference", "reference_of"]


def reference_of(value: Any) -> str | None:
    """The ``reference`` of a Reference element (None when absent or not a string)."""
    ref = value.get("reference") if isinstance(value, dict) else None
    return ref if isinstance(ref, str) else None


def read_json(w: Writer, res_type: str, res_id: str) -> dict[str, Any] | None:
    """The current JSON of a resource in the writer's transaction (None: unknown or deleted)."""
    try:
        stored = w.read(res_type, res_id)
    except NotFound:
        return None
    data = orjson.loads(stored.content) if stored.content else None
    return data if isinstance(data, dict) else None


def read_reference(w: Writer, reference: str) -> dict[str, Any] | None:
    """The JSON of the resource a relative reference (``Type/id``) points at."""
    res_type, _, res_id = reference.partition("/")
    if not res_id or "/" in res_id:
        return None
    return read_json(w, res_type, res_id)
