"""Storing an EHR's resources through the identity map, whatever path brought them (ADR 0021).

A pull page, a Bulk Data file, a full-resource Subscription notification, a Da Vinci message from
a sender mapped to a connection and a ``sync.fetch`` all store an EHR resource the same way: under
its local id from the identity map (``local_id(connection, type, source id)`` unless adopted, see
below), references rewritten to local ids (:class:`~carecoord.sync.identity.ReferenceMapper`, then
corrected through the map), and skipped without a write when the identity map already holds that
source version or a later one. So the same EHR Encounter arriving by pull and by notification is
one local resource with one version (one automation job) per real change, and a replayed or late
event changes nothing.

**Adoption.** A Patient or Encounter stored from the connection for the first time may exist here
already: created from an HL7 v2 ADT message, which knows no FHIR ids and keys it by MRN or visit
number (ADR 0010). Its business identifiers (system and value) are searched first, each under the
lock key the ADT intake's conditional update takes, so the two writers serialise. Exactly one
match that no EHR resource is mapped to is *adopted*: the identity records its id and the EHR's
copy becomes its next version (versions, index, write hook as for any update). Several matches, or
one that another EHR resource is mapped to, are not merged: the resource is stored under its own
id, as before, and the ambiguity is logged (type, count and local id: no patient data).
Resources stored earlier that refer to the adopted one by the id derived for it (they arrived
first) are pointed at the adopted id in the same transaction; later references follow the map.
On PostgreSQL the Patients and Encounters a call adopts, or refers to while they are not stored
yet, are locked by source key, so that an adoption and a write referring to the same resource
serialise: no reference is left on the derived id.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from sqlalchemy import false, select

from carecoord.db import is_postgres
from carecoord.fhir.errors import Forbidden
from carecoord.fhir.store import Writer, conditional_lock_key
from carecoord.fhir.tables import idx_reference, idx_token, resources
from carecoord.sync.identity import (
    Identity,
    Key,
    Pulled,
    ReferenceMapper,
    local_id,
    lookup,
    save_pulled,
    save_referenced,
    source_of,
)
from integrations.hl7v2 import identifier_query

__all__ = [
    "ADOPTABLE",
    "Origin",
    "SourceItem",
    "UpsertResult",
    "already_stored",
    "business_identifiers",
    "from_source",
    "local_reference",
    "upsert_from_source",
]

log = logging.getLogger(__name__)

#: Types whose first copy from an EHR adopts the local resource carrying its business identifier.
ADOPTABLE: Final = frozenset({"Patient", "Encounter"})
#: Identifier locks are taken in the ADT intake's order (Patient, then Encounter).
_LOCK_ORDER: Final = {"Patient": 0, "Encounter": 1}
#: Identifier values per query when looking for resources to adopt.
_SEARCH_CHUNK: Final = 500


@dataclass(frozen=True, slots=True)
class Origin:
    """The EHR connection a resource came from: its name and FHIR base (``iss``)."""

    connection: str
    iss: str

    def mapper(self) -> ReferenceMapper:
        return ReferenceMapper(self.connection, self.iss)


@dataclass(frozen=True, slots=True)
class SourceItem:
    """An EHR resource in its local form, with its source id, version and references.

    ``resource["id"]`` (``local_id``) is the id derived from the source id; the resource is
    stored under the id the identity map holds, which differs for an adopted one.
    """

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
    """What :func:`upsert_from_source` did.

    ``written``/``skipped``: local ``Type/id`` of the items; ``stored_as``: each item's local id
    by (type, source id); ``new_references``: references the identity map did not know before
    (recorded now); ``adopted``: local resources the items adopted; ``ambiguous``: items stored
    as new resources although local resources carry their identifiers; ``repointed``: resources
    whose references were moved to an adopted id; ``settled``: identities whose local id can no
    longer change (a caller may remember them instead of looking them up again).
    """

    written: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    new_references: frozenset[Key] = frozenset()
    stored_as: Mapping[Key, str] = field(default_factory=dict)
    adopted: tuple[str, ...] = ()
    ambiguous: tuple[str, ...] = ()
    repointed: tuple[str, ...] = ()
    settled: Mapping[Key, str] = field(default_factory=dict)


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


def business_identifiers(resource: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(system, value) of each identifier of ``resource`` that has both, sorted, once each."""
    found: set[tuple[str, str]] = set()
    for identifier in resource.get("identifier") or ():
        if not isinstance(identifier, dict):
            continue
        system, value = identifier.get("system"), identifier.get("value")
        if isinstance(system, str) and system and isinstance(value, str) and value:
            found.add((system, value))
    return sorted(found)


def _identifier_params(system: str, value: str) -> list[tuple[str, str]]:
    return identifier_query({"system": system, "value": value})


def _pulled(seen: Identity | None) -> bool:
    return seen is not None and seen.pulled


def _type_order(key: tuple[str, ...]) -> tuple[int, tuple[str, ...]]:
    return _LOCK_ORDER.get(key[0], len(_LOCK_ORDER)), key


def _identity_lock(w: Writer, connection: str, keys: Iterable[Key]) -> None:
    """Lock the source keys of Patients and Encounters not stored yet (PostgreSQL): a write that
    refers to one and its adoption serialise."""
    w.lock_many(
        [
            f"sync-identity\x1f{connection}\x1f{key[0]}\x1f{key[1]}"
            for key in sorted(keys, key=_type_order)
        ]
    )


def _identities(w: Writer, connection: str, keys: set[Key], own: set[Key]) -> dict[Key, Identity]:
    """The identities among ``keys``; on PostgreSQL, those of the Patients and Encounters
    referred to (not among ``own``) and not stored yet are read again under their source-key
    lock: an adoption of one of them is either committed and seen, or waits for this
    transaction, whose reference it then finds."""
    known = lookup(w.conn, connection, keys)
    referred = [key for key in keys - own if key[0] in ADOPTABLE and not _pulled(known.get(key))]
    if referred and is_postgres(w.conn):
        _identity_lock(w, connection, referred)
        known.update(lookup(w.conn, connection, referred))
    return known


def _holders(
    w: Writer, res_type: str, pairs: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], set[str]]:
    """Ids of the live ``res_type`` resources carrying each (system, value), from the search
    index (what ``identifier=system|value`` finds; one query per chunk, no search parsing); for
    a writer with an access policy, only those it may see."""
    holders: dict[tuple[str, str], set[str]] = {pair: set() for pair in pairs}
    t, r = idx_token, resources
    w.flush()
    for start in range(0, len(pairs), _SEARCH_CHUNK):
        chunk = pairs[start : start + _SEARCH_CHUNK]
        rows = w.conn.execute(
            select(r.c.res_id, t.c.system, t.c.code)
            .select_from(t.join(r, r.c.rid == t.c.rid))
            .where(
                t.c.res_type == res_type,
                t.c.param == "identifier",
                t.c.code.in_(sorted({value for _, value in chunk})),
                r.c.deleted == false(),
            )
        )
        for row in rows:
            pair = (str(row.system), str(row.code))
            if pair in holders:
                holders[pair].add(str(row.res_id))
    found = sorted({res_id for ids in holders.values() for res_id in ids})
    if found and w.access is not None:
        visible = set(w.find(res_type, [("_id", ",".join(found))], limit=len(found)))
        for ids in holders.values():
            ids &= visible
    return holders


@dataclass(slots=True)
class _Adoption:
    adopted: dict[Key, str] = field(default_factory=dict)
    ambiguous: list[SourceItem] = field(default_factory=list)


def _adopt(
    w: Writer, connection: str, items: Sequence[SourceItem], known: dict[Key, Identity]
) -> _Adoption:
    """Which of ``items`` (Patients and Encounters new to the identity map) adopt a local
    resource by business identifier. Identifier locks, then the source-key locks of those
    adopted, are held until the transaction ends; ``known`` is brought up to date for the items
    (another transaction may have stored one while this one waited for a lock)."""
    outcome = _Adoption()
    wanted = {item.key: business_identifiers(item.resource) for item in items}
    locks = sorted(
        {(item.res_type, *pair) for item in items for pair in wanted[item.key]}, key=_type_order
    )
    if not locks:
        return outcome
    w.lock_many(
        [conditional_lock_key(t, _identifier_params(system, value)) for t, system, value in locks]
    )
    if is_postgres(w.conn):  # (SQLite writers are serialised: nothing changed meanwhile)
        known.update(lookup(w.conn, connection, [item.key for item in items if wanted[item.key]]))
    items = [item for item in items if wanted[item.key] and not _pulled(known.get(item.key))]
    holders: dict[str, dict[tuple[str, str], set[str]]] = {}
    try:
        for res_type in sorted({item.res_type for item in items}, key=_LOCK_ORDER.__getitem__):
            pairs = sorted(
                {pair for i in items if i.res_type == res_type for pair in wanted[i.key]}
            )
            holders[res_type] = _holders(w, res_type, pairs)
    except Forbidden:
        return outcome  # the writer may not see these resources: nothing to adopt
    claimed: set[tuple[str, str]] = set()
    for item in items:
        found = holders.get(item.res_type, {})
        matches = {res_id for pair in wanted[item.key] for res_id in found.get(pair, ())}
        matches.discard(item.local_id)
        if not matches:
            continue
        if len(matches) > 1:
            outcome.ambiguous.append(item)
            log.warning(
                "sync %s: %d local %s resources carry the identifiers of one EHR %s; "
                "stored it as a new %s/%s instead of guessing",
                connection,
                len(matches),
                item.res_type,
                item.res_type,
                item.res_type,
                item.local_id,
            )
            continue
        (local,) = matches
        target = (item.res_type, local)
        if target in claimed or source_of(w.conn, item.res_type, local) is not None:
            log.warning(
                "sync %s: the local %s/%s carrying this EHR %s's identifier stands for another "
                "EHR resource; stored it as a new %s/%s",
                connection,
                item.res_type,
                local,
                item.res_type,
                item.res_type,
                item.local_id,
            )
            continue
        claimed.add(target)
        outcome.adopted[item.key] = local
    if outcome.adopted and is_postgres(w.conn):
        # Writes that refer to these by their derived id are committed (and found when they are
        # pointed at the adopted id) or wait for this transaction (and then see its identities).
        _identity_lock(w, connection, outcome.adopted)
        known.update(lookup(w.conn, connection, outcome.adopted))
        for key in [key for key in outcome.adopted if _pulled(known.get(key))]:
            del outcome.adopted[key]  # stored meanwhile by another path: it is an update now
    return outcome


def _point(node: Any, moves: Mapping[str, str]) -> bool:
    """Rewrite references found in ``moves`` (``Type/old`` -> ``Type/new``) in place."""
    changed = False
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                if value in moves:
                    node[key] = moves[value]
                    changed = True
            elif isinstance(value, dict | list):
                changed = _point(value, moves) or changed
    elif isinstance(node, list):
        for value in node:
            if isinstance(value, dict | list):
                changed = _point(value, moves) or changed
    return changed


def _repoint(w: Writer, moves: Mapping[tuple[str, str], str]) -> list[str]:
    """Point the stored resources that refer to (type, old id) at the new id of ``moves``, one
    new version each (through the writer's hook); their ``Type/id``."""
    if not moves:
        return []
    w.flush()
    i, r = idx_reference, resources
    found: set[tuple[str, str]] = set()
    for (res_type, old), _ in sorted(moves.items()):
        rows = w.conn.execute(
            select(r.c.res_type, r.c.res_id)
            .select_from(i.join(r, r.c.rid == i.c.rid))
            .where(i.c.target_type == res_type, i.c.target_id == old, r.c.deleted == false())
            .distinct()
        )
        found.update((row[0], row[1]) for row in rows)
    by_reference = {f"{t}/{old}": f"{t}/{new}" for (t, old), new in moves.items()}
    moved: list[str] = []
    with w.as_system():  # a consequence of the adoption, whoever's write caused it
        for ref_type, ref_id in sorted(found):
            content = w.read(ref_type, ref_id).content
            body = orjson.loads(content) if content else None
            if isinstance(body, dict) and _point(body, by_reference):
                w.update(ref_type, ref_id, body)
                moved.append(f"{ref_type}/{ref_id}")
    return moved


def _local_form(item: SourceItem, target: str, moves: Mapping[str, str]) -> dict[str, Any]:
    """The item's resource as stored: under ``target``, references through the identity map."""
    resource = item.resource
    if moves:
        resource = copy.deepcopy(resource)
        _point(resource, moves)
    if resource.get("id") != target:
        resource = {**resource, "id": target}
    return resource


def upsert_from_source(
    w: Writer,
    connection: str,
    items: Sequence[SourceItem],
    *,
    now: int,
    settled: Mapping[Key, str] | None = None,
) -> UpsertResult:
    """Store ``items`` of ``connection`` in ``w``'s transaction (see the module docstring).

    The writer's hook runs for each new version (Encounter events, audit). References to
    resources not known yet get their identity rows (``pulled_at`` NULL), so the pull fetches
    those of the referenced types and pushes can translate them back. ``settled``: identities a
    caller remembers from :attr:`UpsertResult.settled` of earlier calls (not looked up again).
    """
    own = {item.key for item in items}
    referred = {key for item in items for key in item.referred} - own
    memo: dict[Key, str] = {}  # a copy: the caller's memory may change under another thread
    if settled:
        for key in referred:
            remembered = settled.get(key)
            if remembered is not None:
                memo[key] = remembered
    known = _identities(w, connection, own | {key for key in referred if key not in memo}, own)

    local_of: dict[Key, str] = {}
    for key in referred:
        seen = known.get(key)
        local_of[key] = memo.get(key) or (seen.local_id if seen else local_id(connection, *key))
    adoption = _adopt(
        w,
        connection,
        [i for i in items if i.res_type in ADOPTABLE and not _pulled(known.get(i.key))],
        known,
    )
    for item in items:
        seen = known.get(item.key)
        local_of[item.key] = adoption.adopted.get(item.key) or (
            seen.local_id if seen is not None else item.local_id
        )
    moved = {
        key: f"{key[0]}/{local}"
        for key, local in local_of.items()
        if key[0] in ADOPTABLE and local != local_id(connection, *key)
    }

    # Rows that exist (stored before, or adopted) are locked in order before any write.
    w.lock_rows(
        (item.res_type, local_of[item.key])
        for item in items
        if (_pulled(known.get(item.key)) or item.key in adoption.adopted)
        and not already_stored(known.get(item.key), item.version, item.updated)
    )
    written: list[str] = []
    skipped: list[str] = []
    pulled: list[Pulled] = []
    for item in items:
        target = local_of[item.key]
        reference = f"{item.res_type}/{target}"
        if already_stored(known.get(item.key), item.version, item.updated):
            skipped.append(reference)
            continue
        moves = {
            f"{key[0]}/{local_id(connection, *key)}": moved[key]
            for key in _moved_references(item, moved)
        }
        result = w.update(item.res_type, target, _local_form(item, target, moves))
        (skipped if result.unchanged else written).append(reference)
        pulled.append(Pulled(item.res_type, item.source_id, item.version, item.updated, target))
    # Adopted resources referred to before they arrived: point those references at them.
    repointed = _repoint(
        w,
        {
            (key[0], seen.local_id): local
            for key, local in adoption.adopted.items()
            if (seen := known.get(key)) is not None
        },
    )
    save_pulled(w.conn, connection, pulled, now=now)
    fresh = frozenset(key for key in referred if key not in known and key not in memo)
    save_referenced(w.conn, connection, fresh, now=now)
    if adoption.adopted:
        log.info(
            "sync %s: %d local resources adopted by business identifier",
            connection,
            len(adoption.adopted),
        )
    settled_now = {item.key: local_of[item.key] for item in items}
    settled_now.update(
        (key, local_of[key])
        for key in referred
        if key[0] not in ADOPTABLE or key in memo or _pulled(known.get(key))
    )
    return UpsertResult(
        written=tuple(written),
        skipped=tuple(skipped),
        new_references=fresh,
        stored_as={item.key: local_of[item.key] for item in items},
        adopted=tuple(f"{key[0]}/{local}" for key, local in adoption.adopted.items()),
        ambiguous=tuple(f"{item.res_type}/{item.local_id}" for item in adoption.ambiguous),
        repointed=tuple(repointed),
        settled=settled_now,
    )


def _moved_references(item: SourceItem, moved: Mapping[Key, str]) -> Iterable[Key]:
    """The keys ``item`` refers to whose local id is not the derived one."""
    if not moved:
        return ()
    return [key for key in item.referred if key in moved]


def local_reference(connection: str, res_type: str, source_id: str) -> str:
    """``Type/{local id}`` of an EHR resource (the id derived from its source id)."""
    return f"{res_type}/{local_id(connection, res_type, source_id)}"
