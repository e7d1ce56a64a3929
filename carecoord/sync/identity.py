"""Source identity of EHR resources: (connection, type, source id) <-> a deterministic local id.

A resource pulled from an EHR is stored under ``local_id(connection, type, source id)``: a
32-character hex BLAKE2b digest of the three, so a re-sync updates the same local resource, two
EHRs that use the same id never collide with each other or with CareCoord's own UUIDs, and a
reference to something not pulled yet already has the id it will have (ADR 0011). The stored copy
carries ``meta.source = {iss}/{type}/{source id}`` and a ``meta.tag`` of system
:data:`SOURCE_TAG_SYSTEM` with the connection's name (``_tag`` finds a connection's resources).

``sync_identities`` records each mapping, with the source ``versionId``/``lastUpdated`` last
stored (so a page seen again is skipped without a write) and, for resources only referenced so
far, ``pulled_at = NULL`` (so the pull fetches them later, and a push can translate a local
reference back to the EHR's id). The map is the authority: a Patient or Encounter that arrives
for the first time may *adopt* the local resource that carries its business identifier (one an
HL7 v2 ADT message created, ADR 0021), and is then mapped to that resource's id instead of the
derived one; :class:`ReferenceMapper` writes derived ids, which
:func:`~carecoord.sync.upsert.upsert_from_source` corrects through the map. Functions taking a
``Connection`` run in the caller's transaction.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Connection, select

from carecoord.fhir.types import RESOURCE_TYPES
from carecoord.sync.tables import sync_identities

__all__ = [
    "SOURCE_TAG_SYSTEM",
    "Identity",
    "Pulled",
    "ReferenceMapper",
    "list_source_ids",
    "local_id",
    "lookup",
    "save_pulled",
    "save_referenced",
    "source_ids",
    "source_of",
    "source_reference",
]

#: ``meta.tag`` system whose code is the name of the connection a resource was pulled from.
SOURCE_TAG_SYSTEM: Final = "https://carecoord.org/fhir/CodeSystem/source-connection"

_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_SERVER_META = ("versionId", "lastUpdated", "source")
_IN_CHUNK = 500

Key = tuple[str, str]  # (type, source id)


def local_id(connection: str, res_type: str, source_id: str) -> str:
    """The local id of the EHR resource ``res_type/source_id`` of ``connection`` (stable)."""
    material = f"{connection}\x1f{res_type}\x1f{source_id}".encode()
    return hashlib.blake2b(material, digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class Identity:
    """One row of ``sync_identities``."""

    connection: str
    res_type: str
    source_id: str
    local_id: str
    source_version: str | None
    source_updated: str | None
    pulled: bool


@dataclass(frozen=True, slots=True)
class Pulled:
    """What :func:`save_pulled` records for a resource just stored: by default under its
    deterministic local id; ``local_id`` names the local resource it was adopted as (ADR 0021)."""

    res_type: str
    source_id: str
    source_version: str | None
    source_updated: str | None
    local_id: str | None = None


class ReferenceMapper:
    """Turns a connection's resources into their local form (ids, references, meta)."""

    def __init__(self, connection: str, iss: str) -> None:
        self.connection = connection
        self.iss = iss.rstrip("/")
        self._absolute = self.iss + "/"

    def parse(self, reference: str) -> Key | None:
        """(type, source id) of a reference to a resource on this EHR (relative, or absolute on
        its FHIR base; a ``_history`` suffix is dropped); None for anything else (``#contained``,
        ``urn:``, other servers, conditional references)."""
        if reference.startswith(self._absolute):
            reference = reference[len(self._absolute) :]
        elif "://" in reference or reference.startswith(("#", "urn:")):
            return None
        parts = reference.split("/")
        if len(parts) not in (2, 4) or (len(parts) == 4 and parts[2] != "_history"):
            return None
        res_type, source_id = parts[0], parts[1]
        if res_type not in RESOURCE_TYPES or not _FHIR_ID.match(source_id):
            return None
        return res_type, source_id

    def reference(self, res_type: str, source_id: str) -> str:
        return f"{res_type}/{local_id(self.connection, res_type, source_id)}"

    def localize(self, resource: dict[str, Any]) -> set[Key]:
        """Rewrite ``resource`` in place to its local form; the (type, id) it refers to.

        Its id becomes the local id, every reference to this EHR the local id of its target,
        and ``meta`` keeps profile, security and tags but gets our ``source`` and source tag
        (the store sets ``versionId`` and ``lastUpdated``).
        """
        res_type, source_id = resource["resourceType"], resource["id"]
        referred: set[Key] = set()
        _rewrite(resource, self, referred)
        resource["id"] = local_id(self.connection, res_type, source_id)
        meta = {k: v for k, v in (resource.get("meta") or {}).items() if k not in _SERVER_META}
        tags = [
            t
            for t in meta.get("tag") or []
            if not (isinstance(t, dict) and t.get("system") == SOURCE_TAG_SYSTEM)
        ]
        tags.append({"system": SOURCE_TAG_SYSTEM, "code": self.connection})
        meta["tag"] = tags
        meta["source"] = f"{self.iss}/{res_type}/{source_id}"
        resource["meta"] = meta
        return referred


def _rewrite(node: Any, mapper: ReferenceMapper, referred: set[Key]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                target = mapper.parse(value)
                if target is not None:
                    referred.add(target)
                    node[key] = mapper.reference(*target)
            elif isinstance(value, dict | list):
                _rewrite(value, mapper, referred)
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, dict | list):
                _rewrite(item, mapper, referred)


def _chunks(values: Sequence[str], size: int = _IN_CHUNK) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _identity(row: Any) -> Identity:
    return Identity(
        connection=row.connection,
        res_type=row.res_type,
        source_id=row.source_id,
        local_id=row.local_id,
        source_version=row.source_version,
        source_updated=row.source_updated,
        pulled=row.pulled_at is not None,
    )


# The page path runs these on the driver connection (like the store's hot path): SQLAlchemy's
# statement layer cost more than the statements themselves.
_COLUMNS = (
    '"connection", res_type, source_id, local_id, source_version, source_updated, pulled_at, '
    "first_seen_at"
)
_CONFLICT = 'ON CONFLICT ("connection", res_type, source_id)'


def _mark(conn: Connection) -> str:
    return "%s" if conn.dialect.name == "postgresql" else "?"


def _executemany(conn: Connection, sql: str, rows: list[tuple[Any, ...]]) -> None:
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.executemany(sql, rows)
    finally:
        cursor.close()


def lookup(conn: Connection, connection: str, keys: Iterable[Key]) -> dict[Key, Identity]:
    """The recorded identities among ``keys`` of ``connection``."""
    by_type: dict[str, list[str]] = {}
    for res_type, source_id in set(keys):
        by_type.setdefault(res_type, []).append(source_id)
    found: dict[Key, Identity] = {}
    mark = _mark(conn)
    db: Any = conn.connection.driver_connection
    for res_type, ids in by_type.items():
        for chunk in _chunks(sorted(ids)):
            sql = (
                "SELECT source_id, local_id, source_version, source_updated, pulled_at "
                f'FROM sync_identities WHERE "connection" = {mark} AND res_type = {mark} '
                f"AND source_id IN ({', '.join([mark] * len(chunk))})"
            )
            cursor = db.execute(sql, (connection, res_type, *chunk))
            try:
                for source_id, local, version, updated, pulled_at in cursor.fetchall():
                    found[(res_type, source_id)] = Identity(
                        connection,
                        res_type,
                        source_id,
                        local,
                        version,
                        updated,
                        pulled_at is not None,
                    )
            finally:
                cursor.close()
    return found


def save_pulled(conn: Connection, connection: str, pulled: Sequence[Pulled], *, now: int) -> None:
    """Record resources just stored (local id, source version and time), creating or updating
    rows (a row only referenced so far takes the local id the resource was stored under)."""
    if not pulled:
        return
    mark = _mark(conn)
    sql = (
        f"INSERT INTO sync_identities ({_COLUMNS}) VALUES ({', '.join([mark] * 8)}) {_CONFLICT} "
        "DO UPDATE SET local_id = excluded.local_id, source_version = excluded.source_version, "
        "source_updated = excluded.source_updated, pulled_at = excluded.pulled_at"
    )
    rows = [
        (
            connection,
            p.res_type,
            p.source_id,
            p.local_id or local_id(connection, p.res_type, p.source_id),
            p.source_version,
            p.source_updated,
            now,
            now,
        )
        for p in pulled
    ]
    _executemany(conn, sql, rows)


def save_referenced(conn: Connection, connection: str, keys: Iterable[Key], *, now: int) -> None:
    """Record resources that pulled ones refer to (rows that exist are left as they are)."""
    rows = [
        (connection, res_type, source_id, local_id(connection, res_type, source_id), None, None,
         None, now)
        for res_type, source_id in sorted(set(keys))
    ]  # fmt: skip
    if not rows:
        return
    mark = _mark(conn)
    sql = (
        f"INSERT INTO sync_identities ({_COLUMNS}) VALUES ({', '.join([mark] * 8)}) {_CONFLICT} "
        "DO NOTHING"
    )
    _executemany(conn, sql, rows)


def source_of(conn: Connection, res_type: str, local: str) -> Identity | None:
    """The EHR resource a local id stands for (None for CareCoord's own resources)."""
    t = sync_identities
    row = conn.execute(select(t).where(t.c.res_type == res_type, t.c.local_id == local)).first()
    return _identity(row) if row is not None else None


def source_ids(
    conn: Connection, connection: str, res_type: str, locals_: Iterable[str]
) -> dict[str, str]:
    """local id -> source id at ``connection``, for those of ``locals_`` that came from it."""
    t = sync_identities
    found: dict[str, str] = {}
    for chunk in _chunks(sorted(set(locals_))):
        rows = conn.execute(
            select(t.c.local_id, t.c.source_id).where(
                t.c.res_type == res_type, t.c.local_id.in_(chunk), t.c.connection == connection
            )
        )
        found.update({row.local_id: row.source_id for row in rows})
    return found


def source_reference(conn: Connection, connection: str, reference: str) -> str | None:
    """``Type/{local id}`` -> ``Type/{source id}`` at ``connection`` (for pushes); None when
    the target did not come from that connection."""
    res_type, _, local = reference.partition("/")
    if not local or "/" in local:
        return None
    found = source_ids(conn, connection, res_type, [local])
    return f"{res_type}/{found[local]}" if local in found else None


def list_source_ids(
    conn: Connection,
    connection: str,
    res_type: str,
    *,
    pulled: bool,
    after: str | None = None,
    limit: int = 1000,
) -> list[str]:
    """Source ids of ``res_type`` at ``connection`` in id order: pulled ones, or those only
    referenced so far; ``after`` pages through them."""
    t = sync_identities
    stmt = select(t.c.source_id).where(t.c.connection == connection, t.c.res_type == res_type)
    stmt = stmt.where(t.c.pulled_at.is_not(None) if pulled else t.c.pulled_at.is_(None))
    if after is not None:
        stmt = stmt.where(t.c.source_id > after)
    stmt = stmt.order_by(t.c.source_id).limit(limit)
    return [row[0] for row in conn.execute(stmt)]
