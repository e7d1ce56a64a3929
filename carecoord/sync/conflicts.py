"""Push conflicts: list them and let a person resolve each, keeping ours or the EHR's version.

A push that cannot merge (ADR 0013) records a conflict in ``push_state`` and holds further pushes
of that resource to that connection. A conflict's id is ``{connection}:{Type}/{local id}``.

- **ours**: CareCoord's current version goes to the EHR over the EHR's one: ``PUT`` with the
  EHR's *current* version as ``If-Match`` (read just before); when the EHR deleted its copy, or
  never said which of several copies is ours, the push starts again with a conditional create.
- **theirs**: the EHR's current version becomes a new local version (references mapped back to
  local ids, CareCoord's stable identifier dropped) and is recorded as pushed, so nothing is sent.

Either way the conflict is cleared in the same step that records the outcome; if the EHR changed
its copy again meanwhile (412/409), the conflict stays and the resolution can be run again.
Reasons name elements, never their values, so listing conflicts shows no patient data.
"""

from __future__ import annotations

import asyncio
import copy
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

import orjson
from sqlalchemy import Connection, Engine, select, update

from carecoord.db import read_connection, run_write
from carecoord.fhir.errors import Gone, NotFound
from carecoord.fhir.store import FhirStore, Writer
from carecoord.fhir.types import RESOURCE_TYPES
from carecoord.jobs.clock import Clock, from_micros, to_micros
from carecoord.sync.client import EhrClient, EhrResponse
from carecoord.sync.errors import FatalError, InvalidResponse, RequestRejected, TemporaryError
from carecoord.sync.identity import ReferenceMapper, lookup
from carecoord.sync.push import (
    PUSH_TYPES,
    Pusher,
    _resolver,
    _save_pushed,
    _version_of,
    identifier_system,
    load_state,
    to_ehr_form,
)
from carecoord.sync.push_tables import push_state

__all__ = [
    "ConflictNotFound",
    "ConflictRecord",
    "Keep",
    "NothingToKeep",
    "conflict_id",
    "from_ehr_form",
    "list_conflicts",
    "parse_conflict_id",
    "resolve_conflict",
]

_SERVER_META: Final = ("versionId", "lastUpdated")


class Keep(StrEnum):
    """Which side a person keeps."""

    OURS = "ours"
    THEIRS = "theirs"


class ConflictNotFound(FatalError):
    """No conflict is recorded under that id (never, or resolved already)."""


class NothingToKeep(FatalError):
    """The side asked for cannot be kept (ours deleted locally, theirs deleted at the EHR)."""


@dataclass(frozen=True, slots=True)
class ConflictRecord:
    """One recorded push conflict."""

    connection: str
    res_type: str
    local_id: str
    ehr_id: str | None
    reason: str | None
    local_version: int | None
    at: datetime | None

    @property
    def id(self) -> str:
        return conflict_id(self.connection, self.res_type, self.local_id)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "connection": self.connection,
            "resource": f"{self.res_type}/{self.local_id}",
            "ehr_id": self.ehr_id,
            "reason": self.reason,
            "local_version": self.local_version,
            "at": self.at.isoformat().replace("+00:00", "Z") if self.at else None,
        }


def conflict_id(connection: str, res_type: str, local: str) -> str:
    """The id a person uses to name a conflict."""
    return f"{connection}:{res_type}/{local}"


def parse_conflict_id(text: str) -> tuple[str, str, str]:
    """(connection, type, local id) of a conflict id; ValueError when it is not one."""
    connection, _, rest = text.partition(":")
    res_type, _, local = rest.partition("/")
    if not connection or res_type not in PUSH_TYPES or not local or "/" in local:
        raise ValueError(f"{text!r} is not a conflict id (connection:Type/id)")
    return connection, res_type, local


def list_conflicts(engine: Engine, connection: str | None = None) -> list[ConflictRecord]:
    """The open conflicts (of one connection), oldest first."""
    t = push_state
    stmt = select(t).where(t.c.conflict.is_(True))
    if connection is not None:
        stmt = stmt.where(t.c.connection == connection)
    stmt = stmt.order_by(t.c.conflict_at, t.c.connection, t.c.res_type, t.c.local_id)
    with read_connection(engine) as conn:
        rows = conn.execute(stmt).all()
    return [
        ConflictRecord(
            connection=row.connection,
            res_type=row.res_type,
            local_id=row.local_id,
            ehr_id=row.ehr_id,
            reason=row.conflict_reason,
            local_version=row.conflict_version,
            at=from_micros(row.conflict_at) if row.conflict_at is not None else None,
        )
        for row in rows
    ]


def _clear(conn: Connection, key: tuple[str, str, str], *, forget_ehr: bool, now: int) -> None:
    """Clear a conflict so the push runs again (``forget_ehr``: from a conditional create)."""
    t = push_state
    connection, res_type, local = key
    values: dict[str, Any] = {
        "conflict": False,
        "conflict_reason": None,
        "conflict_version": None,
        "conflict_at": None,
        "updated_at": now,
    }
    if forget_ehr:
        values |= {"ehr_id": None, "ehr_version": None, "pushed_version": None}
    conn.execute(
        update(t)
        .where(t.c.connection == connection, t.c.res_type == res_type, t.c.local_id == local)
        .values(**values)
    )


# -- the EHR's form back to ours -----------------------------------------------------------------


def _ours(node: dict[str, Any]) -> str | None:
    """The local id of a logical reference ``to_ehr_form`` made (our stable identifier)."""
    identifier = node.get("identifier")
    if node.get("reference") is None and isinstance(identifier, dict):
        system, value = identifier.get("system"), identifier.get("value")
        kind = node.get("type")
        if isinstance(kind, str) and system == identifier_system(kind) and isinstance(value, str):
            return value
    return None


def from_ehr_form(
    theirs: dict[str, Any],
    current: dict[str, Any],
    *,
    mapper: ReferenceMapper,
    local_of: dict[tuple[str, str], str],
) -> dict[str, Any]:
    """The EHR's copy of one of our resources as a new local version of ``current``.

    References to the EHR's resources become local ids (``local_of``: (type, EHR id) -> local id
    of what was pulled from or pushed to it; else the id a pull would give them), logical
    references to our stable identifier become references again, that identifier is dropped,
    and ``current``'s id and ``meta`` (profiles, tags) are kept.
    """
    res_type = current["resourceType"]
    body: dict[str, Any] = copy.deepcopy(theirs)

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
            return
        if not isinstance(node, dict):
            return
        reference = node.get("reference")
        if isinstance(reference, str):
            target = mapper.parse(reference)
            if target is not None:
                local = local_of.get(target)
                node["reference"] = f"{target[0]}/{local}" if local else mapper.reference(*target)
        else:
            local = _ours(node)
            if local is not None:
                node["reference"] = f"{node.pop('type')}/{local}"
                del node["identifier"]
        for value in node.values():
            if isinstance(value, dict | list):
                walk(value)

    walk(body)
    ours = {"system": identifier_system(res_type), "value": current["id"]}
    kept = [i for i in body.get("identifier") or [] if i != ours]
    body.pop("identifier", None)
    if kept:
        body["identifier"] = kept
    local: dict[str, Any] = {"resourceType": res_type, "id": current["id"]}
    meta = {k: v for k, v in (current.get("meta") or {}).items() if k not in _SERVER_META}
    if meta:
        local["meta"] = meta
    for key, value in body.items():
        if key not in ("resourceType", "id", "meta"):
            local[key] = value
    return local


def _targets(node: Any, mapper: ReferenceMapper, found: set[tuple[str, str]]) -> None:
    if isinstance(node, list):
        for item in node:
            _targets(item, mapper, found)
    elif isinstance(node, dict):
        reference = node.get("reference")
        if isinstance(reference, str):
            target = mapper.parse(reference)
            if target is not None and target[0] in RESOURCE_TYPES:
                found.add(target)
        for value in node.values():
            if isinstance(value, dict | list):
                _targets(value, mapper, found)


def _local_ids(
    conn: Connection, connection: str, targets: set[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    """(type, EHR id) -> local id: pulled from the connection, else pushed to it."""
    found = {key: ident.local_id for key, ident in lookup(conn, connection, targets).items()}
    t = push_state
    for res_type, ehr_id in targets - set(found):
        local = conn.execute(
            select(t.c.local_id).where(
                t.c.connection == connection, t.c.res_type == res_type, t.c.ehr_id == ehr_id
            )
        ).scalar_one_or_none()
        if local is not None:
            found[(res_type, ehr_id)] = local
    return found


# -- resolving -----------------------------------------------------------------------------------


class _Resolver:
    def __init__(self, *, store: FhirStore, client: EhrClient, clock: Clock) -> None:
        self.store = store
        self.engine = store.engine
        self.client = client
        self.connection = client.name
        self.clock = clock

    def _now(self) -> int:
        return to_micros(self.clock())

    async def _read(self, res_type: str, ehr_id: str) -> tuple[EhrResponse, dict[str, Any] | None]:
        what = f"GET {res_type} read"
        response = await self.client.send("GET", self.client.url(res_type, ehr_id), what=what)
        if response.status in (404, 410):
            return response, None
        if response.status != 200:
            raise RequestRejected(
                f"EHR '{self.connection}' answered {response.status} to {what}",
                status=response.status,
            )
        body = response.json()
        if not isinstance(body, dict) or body.get("resourceType") != res_type:
            raise InvalidResponse(
                f"EHR '{self.connection}' did not answer {what} with a {res_type}"
            )
        return response, body

    @staticmethod
    def _version(response: EhrResponse, body: dict[str, Any]) -> str | None:
        version = _version_of(response.headers.get("etag"))
        if version is None:
            meta_version = (body.get("meta") or {}).get("versionId")
            version = meta_version if isinstance(meta_version, str) else None
        return version

    async def resolve(self, res_type: str, local: str, keep: Keep) -> str:
        key = (self.connection, res_type, local)
        with read_connection(self.engine) as conn:
            state = load_state(conn, *key)
        if state is None or not state.conflict:
            raise ConflictNotFound(f"no open conflict {conflict_id(*key)}")
        if keep is Keep.OURS:
            return await self._keep_ours(key, state.ehr_id)
        if state.ehr_id is None:
            raise NothingToKeep(
                "the EHR holds several resources with our identifier; remove the extra ones at "
                "the EHR, then keep ours"
            )
        return await self._keep_theirs(key, state.ehr_id)

    async def _again(self, key: tuple[str, str, str], *, forget_ehr: bool) -> str:
        now = self._now()
        await asyncio.to_thread(
            run_write, self.engine, lambda c: _clear(c, key, forget_ehr=forget_ehr, now=now)
        )
        pusher = Pusher(store=self.store, client=self.client, clock=self.clock)
        return await pusher.push(key[1], key[2])

    async def _keep_ours(self, key: tuple[str, str, str], ehr_id: str | None) -> str:
        _, res_type, local = key
        try:
            stored = self.store.read(res_type, local)
        except (NotFound, Gone):
            raise NothingToKeep(f"the {res_type} was deleted in CareCoord") from None
        if stored.content is None:
            raise NothingToKeep(f"the {res_type} was deleted in CareCoord")
        if ehr_id is None:
            return await self._again(key, forget_ehr=True)
        response, theirs = await self._read(res_type, ehr_id)
        if theirs is None:  # deleted at the EHR: create it there again
            return await self._again(key, forget_ehr=True)
        version = self._version(response, theirs)
        with read_connection(self.engine) as conn:
            ours = to_ehr_form(
                orjson.loads(stored.content), resolve=_resolver(conn, self.connection)
            )
        headers = {"If-Match": f'W/"{version}"'} if version is not None else {}
        what = f"PUT {res_type} update"
        answer = await self.client.send(
            "PUT",
            self.client.url(res_type, ehr_id),
            json={**ours, "id": ehr_id},
            headers=headers,
            what=what,
        )
        if answer.status in (409, 412):
            raise TemporaryError(
                f"the EHR changed the {res_type} again meanwhile; resolve the conflict again"
            )
        if answer.status in (404, 410):
            return await self._again(key, forget_ehr=True)
        if answer.status not in (200, 201):
            raise RequestRejected(
                f"EHR '{self.connection}' answered {answer.status} to {what}", status=answer.status
            )
        new_version = _version_of(answer.headers.get("etag"))
        if new_version is None:
            written = answer.json() if answer.content else None
            if isinstance(written, dict):
                new_version = self._version(answer, written)
        now = self._now()

        def record(conn: Connection) -> None:
            _save_pushed(
                conn,
                key,
                ehr_id=ehr_id,
                ehr_version=new_version,
                version=stored.version_id,
                content={**ours, "id": ehr_id},
                now=now,
            )
            _clear(conn, key, forget_ehr=False, now=now)

        await asyncio.to_thread(run_write, self.engine, record)
        return "ours"

    async def _keep_theirs(self, key: tuple[str, str, str], ehr_id: str) -> str:
        connection, res_type, local = key
        response, theirs = await self._read(res_type, ehr_id)
        if theirs is None:
            raise NothingToKeep(
                f"the {res_type} was deleted in the EHR; keep ours to create it there again"
            )
        version = self._version(response, theirs)
        mapper = ReferenceMapper(connection, self.client.base)
        now = self._now()

        def work(w: Writer) -> str:
            current = w.read(res_type, local)
            if current.content is None:
                raise NothingToKeep(f"the {res_type} was deleted in CareCoord")
            targets: set[tuple[str, str]] = set()
            _targets(theirs, mapper, targets)
            local_of = _local_ids(w.conn, connection, targets)
            body = from_ehr_form(
                theirs, orjson.loads(current.content), mapper=mapper, local_of=local_of
            )
            result = w.update(res_type, local, body)
            _save_pushed(
                w.conn,
                key,
                ehr_id=ehr_id,
                ehr_version=version,
                version=result.resource.version_id,
                content=theirs,
                now=now,
            )
            # _save_pushed leaves a row at a later pushed version alone: clear it in any case.
            _clear(w.conn, key, forget_ehr=False, now=now)
            return "theirs"

        try:
            return await asyncio.to_thread(self.store.write, work)
        except (NotFound, Gone):
            raise NothingToKeep(f"the {res_type} was deleted in CareCoord") from None


async def resolve_conflict(
    *, store: FhirStore, client: EhrClient, res_type: str, local: str, keep: Keep, clock: Clock
) -> str:
    """Resolve the conflict of ``res_type/local`` at ``client``'s connection; what was done:
    ``ours`` (pushed over the EHR's version), ``theirs`` (taken into our store), or the outcome
    of a new push (``created`` ... when the EHR's copy was gone).

    Raises :class:`ConflictNotFound`, :class:`NothingToKeep`, :class:`TemporaryError` (the EHR
    changed again, or is unavailable: the conflict stays), other :class:`FatalError`.
    """
    resolver = _Resolver(store=store, client=client, clock=clock)
    return await resolver.resolve(res_type, local, keep)
