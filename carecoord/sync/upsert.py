"""Storing an EHR's resources through the identity map, whatever path brought them (ADR 0021).

A pull page, a Bulk Data file, a full-resource Subscription notification, a Da Vinci message from
a sender mapped to a connection and a ``sync.fetch`` all store an EHR resource the same way: under
``local_id(connection, type, source id)``, references rewritten to local ids
(:class:`~carecoord.sync.identity.ReferenceMapper`), and skipped without a write when the identity
map already holds that source version or a later one. So the same EHR Encounter arriving by pull
and by notification is one local resource with one version (one automation job) per real change,
and a replayed or late event changes nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from carecoord.fhir.store import Writer
from carecoord.sync.identity import (
    Identity,
    Key,
    Pulled,
    ReferenceMapper,
    local_id,
    lookup,
    save_pulled,
    save_referenced,
)

__all__ = [
    "Origin",
    "SourceItem",
    "UpsertResult",
    "already_stored",
    "from_source",
    "local_reference",
    "upsert_from_source",
]


@dataclass(frozen=True, slots=True)
class Origin:
    """The EHR connection a resource came from: its name and FHIR base (``iss``)."""

    connection: str
    iss: str

    def mapper(self) -> ReferenceMapper:
        return ReferenceMapper(self.connection, self.iss)


@dataclass(frozen=True, slots=True)
class SourceItem:
    """An EHR resource in its local form, with its source id, version and references."""

    res_type: str
    source_id: str
    version: str | None
    updated: str | None
    resource: dict[str, Any] = field(repr=False)
    referred: frozenset[Key] = frozenset()

    @property
    def local_id(self) -> str:
        return str(self.resource["id"])

    @property
    def key(self) -> Key:
        return self.res_type, self.source_id


@dataclass(frozen=True, slots=True)
class UpsertResult:
    """What :func:`upsert_from_source` did: local ``Type/id`` written, skipped, and the
    references to resources the identity map did not know before (recorded now)."""

    written: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    new_references: frozenset[Key] = frozenset()


def _text(value: Any) -> str | None:
    return str(value) if isinstance(value, str | int) and not isinstance(value, bool) else None


def from_source(mapper: ReferenceMapper, resource: Mapping[str, Any]) -> SourceItem:
    """``resource`` as the EHR sent it (with its own id) -> its local form (a copy)."""
    local = copy.deepcopy(dict(resource))
    meta: dict[str, Any] = local["meta"] if isinstance(local.get("meta"), dict) else {}
    version, updated = _text(meta.get("versionId")), _text(meta.get("lastUpdated"))
    res_type, source_id = str(local["resourceType"]), str(local["id"])
    referred = mapper.localize(local)
    referred.discard((res_type, source_id))
    return SourceItem(res_type, source_id, version, updated, local, frozenset(referred))


def _instant(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def already_stored(seen: Identity | None, version: str | None, updated: str | None) -> bool:
    """Whether the store holds this source version of a resource, or a later one.

    Same ``versionId`` (or, without versions, the same ``lastUpdated``): the same version. An
    older ``lastUpdated`` than the one stored: a late copy (an out-of-order notification, a
    search answered before a change the notification already brought), not applied.
    """
    if seen is None or not seen.pulled:
        return False
    if version is not None and seen.source_version == version:
        return True
    if version is None and updated is not None and seen.source_updated == updated:
        return True
    mine, stored = _instant(updated), _instant(seen.source_updated)
    return mine is not None and stored is not None and mine < stored


def upsert_from_source(
    w: Writer, connection: str, items: Sequence[SourceItem], *, now: int
) -> UpsertResult:
    """Store ``items`` of ``connection`` in ``w``'s transaction (see the module docstring).

    The writer's hook runs for each new version (Encounter events, audit). References to
    resources not known yet get their identity rows (``pulled_at`` NULL), so the pull fetches
    those of the referenced types and pushes can translate them back.
    """
    own = {item.key for item in items}
    referred = {key for item in items for key in item.referred} - own
    known = lookup(w.conn, connection, own | referred)
    w.lock_rows({(item.res_type, item.local_id) for item in items})
    written: list[str] = []
    skipped: list[str] = []
    pulled: list[Pulled] = []
    for item in items:
        reference = f"{item.res_type}/{item.local_id}"
        if already_stored(known.get(item.key), item.version, item.updated):
            skipped.append(reference)
            continue
        result = w.update(item.res_type, item.local_id, item.resource)
        (skipped if result.unchanged else written).append(reference)
        pulled.append(Pulled(item.res_type, item.source_id, item.version, item.updated))
    save_pulled(w.conn, connection, pulled, now=now)
    fresh = frozenset(referred - set(known))
    save_referenced(w.conn, connection, fresh, now=now)
    return UpsertResult(tuple(written), tuple(skipped), fresh)


def local_reference(connection: str, res_type: str, source_id: str) -> str:
    """``Type/{local id}`` of an EHR resource."""
    return f"{res_type}/{local_id(connection, res_type, source_id)}"
