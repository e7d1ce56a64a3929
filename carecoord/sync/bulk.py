"""FHIR Bulk Data ``$export`` import: kick-off, polling, bounded parallel NDJSON streaming, resume.

An export of a connection is one row of ``bulk_exports`` (ADR 0014):

1. **Kick-off** ``GET [base]/$export``, ``[base]/Patient/$export`` or ``[base]/Group/ID/$export``
   with ``Prefer: respond-async``, ``_type`` and ``_since`` (by default the ``transactionTime`` of
   the last complete export of the same scope and types). The 202's ``Content-Location`` (the
   status URL) is stored before anything else happens.
2. **Polling** the status URL: 202 waits ``Retry-After`` (else a default) and reports
   ``X-Progress``; 429 and 503 wait too; 200 is the manifest, stored with one ``bulk_files`` row
   per output file; any other 4xx/5xx with an OperationOutcome means the export failed:
   :class:`BulkExportFailed` (fatal), recorded with its issue codes only.
3. **Downloads**, at most ``parallel`` at a time, streamed line by line (``aiter_lines``): every
   ``batch_lines`` lines are validated, made local (the pull's page preparation) and stored
   through the source identity map (``upsert_from_source``: Patients and Encounters an ADT
   message created are adopted by identifier) in one transaction **with the file's line
   offset**, so a rerun after a crash skips the committed lines and stores the rest: no gap, no
   duplicate. The bearer token is sent only when the manifest says ``requiresAccessToken`` (and
   then only to the connection's own host). ``error`` files are counted (lines), never logged.
4. When every file is done, the export's ``transactionTime`` becomes the next ``_since`` (same
   transaction as the export's ``done``); then the status URL is deleted (best effort).

A restart finds the unfinished export of the same connection, scope and types and re-polls its
status URL or reuses its manifest. Logs carry the connection, the export id, types and counts:
never a URL, an id of a resource, a token or the server's free text.

Errors (besides those of :mod:`carecoord.sync`)::

    FatalError
    └── BulkExportFailed            the EHR reported the export failed (.status), or it expired
    TemporaryError
    └── BulkConflict                another run moved the same file on; try again later
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Protocol
from urllib.parse import quote, urljoin, urlsplit

import httpx
import orjson
from sqlalchemy import Connection, select, update
from sqlalchemy.dialects import postgresql, sqlite

from carecoord.db import read_connection, run_write
from carecoord.events.encounters import encounter_hook
from carecoord.fhir.store import FhirStore, Writer
from carecoord.fhir.types import RESOURCE_TYPES
from carecoord.jobs import Fatal, JobContext, Registry, RetryLater, enqueue
from carecoord.jobs.clock import Clock, to_micros, utc_now
from carecoord.settings import ConfigError, Settings, load_settings
from carecoord.smart.backend import BackendAuth
from carecoord.smart.errors import (
    DiscoveryError,
    EhrAccessError,
    TokenEndpointUnavailable,
    TokenRejected,
)
from carecoord.smart.tokens import parse_token_response
from carecoord.sync.bulk_tables import bulk_checkpoints, bulk_exports, bulk_files
from carecoord.sync.client import EhrClient, SearchPage, Sleep, new_http_client
from carecoord.sync.errors import (
    AuthorizationFailed,
    EhrServerError,
    EhrUnreachable,
    FatalError,
    InvalidResponse,
    PullStopped,
    RateLimited,
    RequestRejected,
    SyncConfigError,
    SyncError,
    TemporaryError,
)
from carecoord.sync.health import record_outcome
from carecoord.sync.pull import Puller, error_text
from carecoord.sync.retry import backoff, parse_retry_after
from carecoord.sync.runtime import SyncRuntime
from carecoord.sync.state import Counts
from carecoord.sync.tables import ERROR_LENGTH
from carecoord.sync.upsert import upsert_from_source

__all__ = [
    "BULK_KIND",
    "BulkConflict",
    "BulkEvent",
    "BulkExportFailed",
    "BulkExporter",
    "BulkHandler",
    "BulkOptions",
    "BulkReport",
    "ExportSpec",
    "StaticToken",
    "TokenSource",
    "enqueue_bulk",
    "load_since",
    "register_bulk_handlers",
    "run_bulk",
]

log = logging.getLogger("carecoord.sync.bulk")

BULK_KIND: Final = "sync.bulk"
FHIR_JSON: Final = "application/fhir+json"
NDJSON: Final = "application/fhir+ndjson"

POLLING, DOWNLOADING, DONE, FAILED = "polling", "downloading", "done", "failed"
_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_CODE = re.compile(r"^[a-z][a-z-]{0,39}$")


class BulkExportFailed(FatalError):
    """The EHR reported the export failed (4xx/5xx on kick-off or status, with an
    OperationOutcome), its status URL or a file is gone, or the manifest is unusable."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class BulkConflict(TemporaryError):
    """Another run stored lines of the same file first; this one stops and tries again later."""


# -- what to export -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExportSpec:
    """One export request: ``level`` system | patient | group (with ``group``), ``types``
    (``_type``; empty: all), ``since`` (``_since``; None: the saved checkpoint)."""

    level: str = "system"
    group: str | None = None
    types: tuple[str, ...] = ()
    since: str | None = None

    def __post_init__(self) -> None:
        if self.level not in ("system", "patient", "group"):
            raise SyncConfigError(f"unknown export level {self.level!r}")
        if (self.level == "group") != (self.group is not None):
            raise SyncConfigError("a group export needs a group id (and only it has one)")
        if self.group is not None and not _FHIR_ID.match(self.group):
            raise SyncConfigError("the group id is not a FHIR id")
        unknown = [t for t in self.types if t not in RESOURCE_TYPES]
        if unknown:
            raise SyncConfigError(f"unknown resource types: {', '.join(sorted(unknown))}")
        object.__setattr__(self, "types", tuple(sorted(set(self.types))))

    @classmethod
    def of(
        cls,
        *,
        group: str | None = None,
        patient: bool = False,
        types: Sequence[str] = (),
        since: str | None = None,
    ) -> ExportSpec:
        """From CLI-like options (``types`` may hold comma lists)."""
        if group is not None and patient:
            raise SyncConfigError("choose a group or the patient level, not both")
        flat = tuple(t.strip() for item in types for t in item.split(",") if t.strip())
        level = "group" if group is not None else "patient" if patient else "system"
        return cls(level=level, group=group, types=flat, since=since)

    @property
    def scope(self) -> str:
        return f"group:{self.group}" if self.level == "group" else self.level

    @property
    def types_key(self) -> str:
        return ",".join(self.types)

    def path(self) -> str:
        if self.level == "group":
            return f"Group/{quote(self.group or '', safe='')}/$export"
        return "Patient/$export" if self.level == "patient" else "$export"

    def payload(self) -> dict[str, Any]:
        return {"level": self.level, "group": self.group, "types": list(self.types)}


# -- reports --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BulkEvent:
    """Handed to the progress callback after each poll (``progress``: the X-Progress text) and
    each committed batch (``res_type``, ``counts``)."""

    connection: str
    export_id: int
    phase: str  # poll | batch
    progress: str | None = None
    res_type: str | None = None
    counts: Counts | None = None


Progress = Callable[[BulkEvent], None]


@dataclass
class BulkReport:
    """What one call of :meth:`BulkExporter.run` did (a resumed export counts only its part)."""

    connection: str
    scope: str
    export_id: int = 0
    kicked_off: bool = False
    resumed: bool = False
    since: str | None = None
    transaction_time: str | None = None
    files: int = 0
    counts: Counts = field(default_factory=Counts)
    by_type: dict[str, Counts] = field(default_factory=dict)
    error_files: int = 0
    error_lines: int = 0

    def add(self, res_type: str, counts: Counts) -> None:
        self.counts = self.counts + counts
        self.by_type[res_type] = self.by_type.get(res_type, Counts()) + counts


@dataclass(frozen=True, slots=True)
class BulkOptions:
    """Tuning of an import: parallel downloads, lines per transaction, polling waits."""

    parallel: int = 3
    batch_lines: int = 500
    poll_default_seconds: float = 10.0
    poll_min_seconds: float = 1.0
    poll_max_seconds: float = 600.0


# -- the bearer for file downloads ----------------------------------------------------------------


class TokenSource(Protocol):
    """Access tokens for downloads that require one (streamed, so not through ``httpx.Auth``)."""

    async def token(self, *, renew: bool = False) -> str: ...


@dataclass
class StaticToken:
    """A fixed token (tests, or a connection with a long-lived token)."""

    value: str

    async def token(self, *, renew: bool = False) -> str:
        return self.value


class BackendTokens:
    """Tokens of a backend-services connection, from (and into) its :class:`BackendAuth` cache."""

    def __init__(
        self, auth: BackendAuth, http: httpx.AsyncClient, *, clock: Callable[[], float]
    ) -> None:
        self._auth = auth
        self._http = http
        self._clock = clock
        self._lock = asyncio.Lock()

    async def token(self, *, renew: bool = False) -> str:
        async with self._lock:
            cache = self._auth.cache
            if renew:
                cache.clear()
            found = cache.valid(self._clock())
            if found is not None:
                return found
            try:
                response = await self._http.send(self._auth.token_request())
                await response.aread()
                answer = parse_token_response(response)
            except (httpx.TimeoutException, httpx.TransportError, TokenEndpointUnavailable) as exc:
                raise EhrUnreachable(
                    f"EHR '{self._auth.connection.name}': token endpoint: {type(exc).__name__}"
                ) from None
            except TokenRejected as exc:
                raise AuthorizationFailed(
                    f"EHR '{self._auth.connection.name}' refused our backend-services client "
                    f"({type(exc).__name__})"
                ) from None
            value = answer.access_token.get_secret_value()
            cache.put(value, answer.expires_in, self._clock())
            return value


# -- stored state ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Export:
    id: int
    status: str
    status_url: str | None
    since: str | None
    transaction_time: str | None
    requires_token: bool
    manifest: dict[str, Any] | None


@dataclass
class _File:
    seq: int
    res_type: str
    url: str
    offset: int
    done: bool


def _export(row: Any) -> _Export:
    return _Export(
        id=row.id,
        status=row.status,
        status_url=row.status_url,
        since=row.request_since,
        transaction_time=row.transaction_time,
        requires_token=bool(row.requires_token),
        manifest=orjson.loads(row.manifest) if row.manifest else None,
    )


def _insert(conn: Connection) -> Any:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


def load_since(conn: Connection, connection: str, spec: ExportSpec) -> str | None:
    """The next ``_since`` of ``spec`` at ``connection`` (None before a complete export)."""
    t = bulk_checkpoints
    row = conn.execute(
        select(t.c.since).where(
            t.c.connection == connection, t.c.scope == spec.scope, t.c.types == spec.types_key
        )
    ).first()
    return None if row is None else str(row[0])


def _unfinished(conn: Connection, connection: str, spec: ExportSpec) -> _Export | None:
    t = bulk_exports
    row = conn.execute(
        select(t)
        .where(
            t.c.connection == connection,
            t.c.scope == spec.scope,
            t.c.types == spec.types_key,
            t.c.status.in_((POLLING, DOWNLOADING)),
        )
        .order_by(t.c.id.desc())
        .limit(1)
    ).first()
    return _export(row) if row is not None else None


def _outcome_codes(content: bytes) -> str | None:
    """``severity/code`` of an OperationOutcome's issues (None when ``content`` is not one);
    diagnostics and details are left out: they may name a patient."""
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return None
    codes = []
    for issue in body.get("issue") or []:
        if isinstance(issue, dict):
            severity, code = issue.get("severity"), issue.get("code")
            parts = [p for p in (severity, code) if isinstance(p, str) and _CODE.match(p)]
            if parts:
                codes.append("/".join(parts))
    return ", ".join(codes[:5]) or "no issue codes"


def _clean(text: str | None, limit: int) -> str | None:
    if text is None:
        return None
    printable = "".join(ch for ch in text if ch.isprintable())
    return printable[:limit]


# -- the exporter ---------------------------------------------------------------------------------


class BulkExporter:
    """Runs (or resumes) ``$export`` imports from one connection into the store."""

    def __init__(
        self,
        *,
        store: FhirStore,
        client: EhrClient,
        http: httpx.AsyncClient,
        auth: httpx.Auth | None = None,
        tokens: TokenSource | None = None,
        options: BulkOptions | None = None,
        clock: Clock = utc_now,
        sleep: Sleep = asyncio.sleep,
        progress: Progress | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.engine = store.engine
        self.client = client
        self.connection = client.name
        self.http = http
        self.auth = auth
        self.tokens = tokens
        self.options = options or BulkOptions()
        self.clock = clock
        self.sleep = sleep
        self.progress = progress
        self.rng = rng or random.Random()
        self._pages = Puller(store=store, client=client, clock=clock)
        base = urlsplit(client.base)
        self._origin = (base.scheme.lower(), base.netloc.lower())

    def _now(self) -> int:
        return to_micros(self.clock())

    def _wall(self) -> float:
        return self.clock().timestamp()

    # -- the run ---------------------------------------------------------------------------------

    async def run(self, spec: ExportSpec) -> BulkReport:
        """Import (or resume importing) ``spec``; records the outcome and re-raises failures."""
        report = BulkReport(self.connection, spec.scope)
        export: _Export | None = None
        try:
            export = await asyncio.to_thread(self._find, spec)
            if export is None:
                export = await self._kick_off(spec)
                report.kicked_off = True
            else:
                report.resumed = True
                log.info("bulk %s: resuming export %d", self.connection, export.id)
            report.export_id, report.since = export.id, export.since
            if export.manifest is None:
                export = await self._poll(export)
            files = await asyncio.to_thread(self._files, export.id)
            report.transaction_time, report.files = export.transaction_time, len(files)
            await self._download_all(export, [f for f in files if not f.done], report)
            report.error_files, report.error_lines = await self._count_errors(export)
            await asyncio.to_thread(
                run_write, self.engine, lambda c: self._finish(c, export, spec, report)
            )
        except BaseException as exc:
            if isinstance(exc, Exception) and not isinstance(exc, PullStopped):
                await asyncio.to_thread(self._record_failure, export, exc)
            raise
        await self._delete(export)
        c = report.counts
        log.info(
            "bulk %s export %d done: %d files, %d fetched, %d written, %d skipped, %d rejected, "
            "%d error lines",
            self.connection,
            export.id,
            report.files,
            c.fetched,
            c.written,
            c.skipped,
            c.rejected,
            report.error_lines,
        )
        return report

    def _find(self, spec: ExportSpec) -> _Export | None:
        with read_connection(self.engine) as conn:
            return _unfinished(conn, self.connection, spec)

    # -- kick-off --------------------------------------------------------------------------------

    async def _kick_off(self, spec: ExportSpec) -> _Export:
        with read_connection(self.engine) as conn:
            since = (
                spec.since if spec.since is not None else load_since(conn, self.connection, spec)
            )
        params: list[tuple[str, str]] = []
        if spec.types:
            params.append(("_type", ",".join(spec.types)))
        if since is not None:
            params.append(("_since", since))
        what = f"GET {spec.level} $export kick-off"
        response = await self.client.send(
            "GET",
            f"{self.client.base}/{spec.path()}",
            params=params,
            headers={"Accept": FHIR_JSON, "Prefer": "respond-async"},
            what=what,
        )
        if response.status != 202:
            codes = _outcome_codes(response.content)
            detail = f" ({codes})" if codes else ""
            if 400 <= response.status < 600:
                raise BulkExportFailed(
                    f"EHR '{self.connection}' answered {response.status} to {what}{detail}",
                    status=response.status,
                )
            raise InvalidResponse(
                f"EHR '{self.connection}' answered {response.status} to {what}, not 202"
            )
        location = response.headers.get("content-location")
        if not location:
            raise InvalidResponse(f"EHR '{self.connection}': {what}: no Content-Location")
        status_url = self.client.check_link(location)

        def create(conn: Connection) -> _Export:
            now = self._now()
            export_id: int = conn.execute(
                bulk_exports.insert()
                .values(
                    connection=self.connection,
                    scope=spec.scope,
                    types=spec.types_key,
                    status=POLLING,
                    status_url=status_url,
                    request_since=since,
                    requires_token=False,
                    started_at=now,
                    updated_at=now,
                )
                .returning(bulk_exports.c.id)
            ).scalar_one()
            return _Export(int(export_id), POLLING, status_url, since, None, False, None)

        export = await asyncio.to_thread(run_write, self.engine, create)
        log.info(
            "bulk %s: export %d kicked off (%s, %s)",
            self.connection,
            export.id,
            spec.level,
            spec.types_key or "all types",
        )
        return export

    # -- polling ---------------------------------------------------------------------------------

    async def _poll(self, export: _Export) -> _Export:
        url = export.status_url
        if url is None:
            raise BulkExportFailed(f"bulk {self.connection}: export {export.id} has no status URL")
        errors = 0
        limits = self.client.limits
        while True:
            response, failure = await self._get_status(url)
            if response is not None:
                status = response.status_code
                if status == 200:
                    return await self._accept_manifest(export, response.content)
                retry_after = parse_retry_after(
                    response.headers.get("retry-after"), now=self._wall()
                )
                if status == 202:
                    errors = 0
                    text = _clean(response.headers.get("x-progress"), 100)
                    await asyncio.to_thread(self._save_progress, export.id, text)
                    self._report(BulkEvent(self.connection, export.id, "poll", progress=text))
                    wait = self.options.poll_default_seconds if retry_after is None else retry_after
                    wait = min(
                        max(wait, self.options.poll_min_seconds), self.options.poll_max_seconds
                    )
                    await self.sleep(wait)
                    continue
                codes = _outcome_codes(response.content)
                transient = (
                    status == 429
                    or (status >= 500 and codes is None)
                    or (status == 503 and retry_after is not None)
                )
                if not transient:
                    detail = f" ({codes})" if codes else ""
                    raise BulkExportFailed(
                        f"EHR '{self.connection}': export {export.id} failed: status poll "
                        f"answered {status}{detail}",
                        status=status,
                    )
                failure = (
                    RateLimited(
                        f"EHR '{self.connection}' answered 429 to a status poll",
                        retry_after=retry_after,
                    )
                    if status == 429
                    else EhrServerError(
                        f"EHR '{self.connection}' answered {status} to a status poll",
                        status=status,
                        retry_after=retry_after,
                    )
                )
            assert failure is not None
            delay = failure.retry_after
            if delay is None:
                delay = backoff(errors, base=limits.backoff_base_seconds, rng=self.rng)
            if errors >= limits.max_retries or delay > limits.max_retry_wait_seconds:
                raise failure
            errors += 1
            await self.sleep(delay)

    async def _get_status(self, url: str) -> tuple[httpx.Response | None, TemporaryError | None]:
        """One status poll: the answer, or the temporary failure of the transport."""
        breaker = self.client.breaker
        breaker.before()
        try:
            response = await self.http.get(
                url,
                headers={"Accept": "application/json"},
                auth=self.auth if self.auth is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except asyncio.CancelledError:
            breaker.release()
            raise
        except (EhrAccessError, TokenRejected) as exc:
            breaker.success()
            raise AuthorizationFailed(
                f"EHR '{self.connection}' refused our client on a status poll "
                f"({type(exc).__name__})"
            ) from None
        except (
            httpx.TimeoutException,
            httpx.TransportError,
            TokenEndpointUnavailable,
            DiscoveryError,
        ) as exc:
            breaker.failure()
            return None, EhrUnreachable(
                f"EHR '{self.connection}' status poll: {type(exc).__name__}"
            )
        status = response.status_code
        if status == 401:
            breaker.success()
            raise AuthorizationFailed(f"EHR '{self.connection}' answered 401 to a status poll")
        if status == 429 or status >= 500:
            breaker.failure()
        else:
            breaker.success()
        return response, None

    def _save_progress(self, export_id: int, text: str | None) -> None:
        now = self._now()
        run_write(
            self.engine,
            lambda c: c.execute(
                update(bulk_exports)
                .where(bulk_exports.c.id == export_id)
                .values(progress=text, updated_at=now)
            ),
        )

    async def _accept_manifest(self, export: _Export, content: bytes) -> _Export:
        try:
            manifest = orjson.loads(content)
        except orjson.JSONDecodeError:
            raise InvalidResponse(f"EHR '{self.connection}': the manifest is not JSON") from None
        if not isinstance(manifest, dict):
            raise InvalidResponse(f"EHR '{self.connection}': the manifest is not an object")
        transaction_time = manifest.get("transactionTime")
        if not isinstance(transaction_time, str) or not transaction_time:
            raise InvalidResponse(f"EHR '{self.connection}': the manifest has no transactionTime")
        requires_token = manifest.get("requiresAccessToken") is True
        outputs = manifest.get("output") or []
        errors = manifest.get("error") or []
        if not isinstance(outputs, list) or not isinstance(errors, list):
            raise InvalidResponse(f"EHR '{self.connection}': manifest output/error not lists")
        files: list[dict[str, Any]] = []
        ignored = 0
        for seq, item in enumerate(outputs):
            if not isinstance(item, dict):
                raise InvalidResponse(f"EHR '{self.connection}': a manifest output is no object")
            res_type, url, count = item.get("type"), item.get("url"), item.get("count")
            if not isinstance(url, str) or not url:
                raise InvalidResponse(f"EHR '{self.connection}': a manifest output has no url")
            if res_type not in RESOURCE_TYPES:
                ignored += 1
                continue
            files.append(
                {
                    "seq": seq,
                    "res_type": res_type,
                    "url": self._file_url(url, requires_token),
                    "expected": count if isinstance(count, int) else None,
                }
            )
        for item in errors:
            url = item.get("url") if isinstance(item, dict) else None
            if isinstance(url, str):
                self._file_url(url, requires_token)  # refused early when foreign
        if ignored:
            log.info(
                "bulk %s export %d: %d output files of types not stored here were ignored",
                self.connection,
                export.id,
                ignored,
            )
        stored = {
            "transactionTime": transaction_time,
            "requiresAccessToken": requires_token,
            "output": outputs,
            "error": errors,
        }

        def save(conn: Connection) -> None:
            now = self._now()
            conn.execute(bulk_files.delete().where(bulk_files.c.export_id == export.id))
            if files:
                conn.execute(
                    bulk_files.insert(),
                    [
                        {
                            "export_id": export.id,
                            **f,
                            "line_offset": 0,
                            "done": False,
                            "fetched": 0,
                            "written": 0,
                            "skipped": 0,
                            "rejected": 0,
                            "updated_at": now,
                        }
                        for f in files
                    ],
                )
            conn.execute(
                update(bulk_exports)
                .where(bulk_exports.c.id == export.id)
                .values(
                    status=DOWNLOADING,
                    transaction_time=transaction_time[:40],
                    requires_token=requires_token,
                    manifest=orjson.dumps(stored).decode(),
                    updated_at=now,
                )
            )

        await asyncio.to_thread(run_write, self.engine, save)
        log.info(
            "bulk %s export %d complete on the EHR: %d files, %d error files",
            self.connection,
            export.id,
            len(files),
            len(errors),
        )
        return _Export(
            export.id,
            DOWNLOADING,
            export.status_url,
            export.since,
            transaction_time[:40],
            requires_token,
            stored,
        )

    def _file_url(self, url: str, requires_token: bool) -> str:
        """An output file's absolute URL: on the connection's own host when a token goes with it,
        else any ``https`` URL (pre-signed storage links)."""
        absolute = urljoin(self.client.base + "/", url)
        parts = urlsplit(absolute)
        if requires_token or (parts.scheme.lower(), parts.netloc.lower()) == self._origin:
            return self.client.check_link(absolute)
        if parts.scheme.lower() != "https":
            raise InvalidResponse(f"EHR '{self.connection}': a file URL is not https")
        return absolute

    # -- downloads -------------------------------------------------------------------------------

    def _files(self, export_id: int) -> list[_File]:
        t = bulk_files
        with read_connection(self.engine) as conn:
            rows = conn.execute(select(t).where(t.c.export_id == export_id).order_by(t.c.seq))
            return [_File(r.seq, r.res_type, r.url, int(r.line_offset), bool(r.done)) for r in rows]

    async def _download_all(self, export: _Export, files: list[_File], report: BulkReport) -> None:
        slots = asyncio.Semaphore(max(1, self.options.parallel))

        async def one(f: _File) -> None:
            async with slots:
                await self._download(export, f, report)

        tasks = [asyncio.create_task(one(f)) for f in files]
        if not tasks:
            return
        try:
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        except BaseException:
            await _cancel(tasks)
            raise
        failed = [t for t in done if not t.cancelled() and t.exception() is not None]
        if failed:
            await _cancel(list(pending))
            exc = failed[0].exception()
            assert exc is not None
            raise exc

    async def _download(self, export: _Export, f: _File, report: BulkReport) -> None:
        """One file, retried in place on temporary failures (from its committed offset)."""
        limits = self.client.limits
        attempt = 0
        while True:
            try:
                await self._stream_file(export, f, report)
                return
            except (BulkConflict, PullStopped):
                raise
            except TemporaryError as exc:
                delay = exc.retry_after
                if delay is None:
                    delay = backoff(attempt, base=limits.backoff_base_seconds, rng=self.rng)
                if attempt >= limits.max_retries or delay > limits.max_retry_wait_seconds:
                    raise
                attempt += 1
                log.info(
                    "bulk %s export %d: %s file %d: %s; retry %d in %.1f s",
                    self.connection,
                    export.id,
                    f.res_type,
                    f.seq,
                    type(exc).__name__,
                    attempt,
                    delay,
                )
                await self.sleep(delay)

    async def _stream_file(self, export: _Export, f: _File, report: BulkReport) -> None:
        batch_size = max(1, self.options.batch_lines)
        start = f.offset
        async with self._open(export, f.url, f"{f.res_type} file") as lines:
            line_no = 0
            batch: list[str] = []
            async for line in lines:
                line_no += 1
                if line_no <= start:
                    continue
                batch.append(line)
                if len(batch) >= batch_size:
                    await self._commit(export, f, batch, line_no, done=False, report=report)
                    batch = []
            await self._commit(export, f, batch, line_no, done=True, report=report)

    @contextlib.asynccontextmanager
    async def _open(
        self, export: _Export, url: str, what: str
    ) -> AsyncIterator[AsyncIterator[str]]:
        """The lines of an NDJSON file, streamed (the bearer only if the manifest requires it)."""
        breaker = self.client.breaker
        renewed = False
        while True:
            headers = {"Accept": NDJSON}
            if export.requires_token:
                if self.tokens is None:
                    raise AuthorizationFailed(
                        f"EHR '{self.connection}': the files require a token and none is set up"
                    )
                headers["Authorization"] = f"Bearer {await self.tokens.token(renew=renewed)}"
            breaker.before()
            try:
                async with self.http.stream("GET", url, headers=headers) as response:
                    status = response.status_code
                    if status == 401 and export.requires_token and not renewed:
                        breaker.success()
                        renewed = True
                        continue
                    wait = parse_retry_after(response.headers.get("retry-after"), now=self._wall())
                    if status == 429:
                        breaker.failure()
                        raise RateLimited(
                            f"EHR '{self.connection}' answered 429 to {what}", retry_after=wait
                        )
                    if status >= 500:
                        breaker.failure()
                        raise EhrServerError(
                            f"EHR '{self.connection}' answered {status} to {what}",
                            status=status,
                            retry_after=wait,
                        )
                    breaker.success()
                    if status == 401:
                        raise AuthorizationFailed(f"EHR '{self.connection}' answered 401 to {what}")
                    if status in (404, 410):
                        raise BulkExportFailed(
                            f"EHR '{self.connection}': export {export.id}: {what} is gone "
                            f"({status}); the export must be run again",
                            status=status,
                        )
                    if status != 200:
                        raise RequestRejected(
                            f"EHR '{self.connection}' answered {status} to {what}", status=status
                        )
                    yield response.aiter_lines()
                    return
            except asyncio.CancelledError:
                breaker.release()
                raise
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                breaker.failure()
                raise EhrUnreachable(
                    f"EHR '{self.connection}' {what}: {type(exc).__name__}"
                ) from None

    async def _commit(
        self,
        export: _Export,
        f: _File,
        lines: list[str],
        offset: int,
        *,
        done: bool,
        report: BulkReport,
    ) -> None:
        counts = await asyncio.to_thread(self._store_batch, export, f, lines, offset, done)
        f.offset, f.done = offset, done
        report.add(f.res_type, counts)
        self._report(
            BulkEvent(self.connection, export.id, "batch", res_type=f.res_type, counts=counts)
        )

    def _store_batch(
        self, export: _Export, f: _File, lines: list[str], offset: int, done: bool
    ) -> Counts:
        """Store a batch of lines with the file's new offset, in one transaction."""
        resources: list[dict[str, Any]] = []
        unreadable = 0
        for line in lines:
            if not line.strip():
                continue
            try:
                parsed = orjson.loads(line)
            except orjson.JSONDecodeError:
                unreadable += 1
                continue
            if isinstance(parsed, dict):
                resources.append(parsed)
            else:
                unreadable += 1
        if unreadable:
            log.warning(
                "bulk %s export %d: %d unreadable %s lines left out",
                self.connection,
                export.id,
                unreadable,
                f.res_type,
            )
        items, base = self._pages._prepare(SearchPage(f.res_type, resources, None))
        base = base + Counts(fetched=unreadable, rejected=unreadable)
        previous = f.offset
        connection = self.connection

        def work(w: Writer) -> Counts:
            # Encounters that change at the EHR are events for automation, like ADT ones.
            w.on_written = encounter_hook(source=f"sync:{self.connection}")
            now = self._now()
            result = upsert_from_source(w, connection, items, now=now)
            counts = base + Counts(written=len(result.written), skipped=len(result.skipped))
            t = bulk_files
            moved = w.conn.execute(
                update(t)
                .where(t.c.export_id == export.id, t.c.seq == f.seq, t.c.line_offset == previous)
                .values(
                    line_offset=offset,
                    done=done,
                    fetched=t.c.fetched + counts.fetched,
                    written=t.c.written + counts.written,
                    skipped=t.c.skipped + counts.skipped,
                    rejected=t.c.rejected + counts.rejected,
                    updated_at=now,
                )
            ).rowcount
            if moved != 1:
                raise BulkConflict(
                    f"bulk {connection} export {export.id}: another run is storing the same file"
                )
            return counts

        return self.store.write(work)

    # -- error files -----------------------------------------------------------------------------

    async def _count_errors(self, export: _Export) -> tuple[int, int]:
        """(error files, their lines): OperationOutcomes are counted, never logged."""
        entries = (export.manifest or {}).get("error") or []
        urls = [e["url"] for e in entries if isinstance(e, dict) and isinstance(e.get("url"), str)]
        lines = 0
        for url in urls:
            try:
                async with self._open(
                    export, self._file_url(url, export.requires_token), "error file"
                ) as stream:
                    async for line in stream:
                        if line.strip():
                            lines += 1
            except SyncError as exc:
                log.warning(
                    "bulk %s export %d: an error file could not be read (%s)",
                    self.connection,
                    export.id,
                    type(exc).__name__,
                )
        if urls:
            log.warning(
                "bulk %s export %d: the EHR reported %d errors in %d error files",
                self.connection,
                export.id,
                lines,
                len(urls),
            )
        return len(urls), lines

    # -- the end ---------------------------------------------------------------------------------

    def _finish(
        self, conn: Connection, export: _Export, spec: ExportSpec, report: BulkReport
    ) -> None:
        now = self._now()
        t, files = bulk_exports, bulk_files
        left = conn.execute(
            select(files.c.seq).where(files.c.export_id == export.id, files.c.done.is_(False))
        ).first()
        if left is not None:
            raise BulkConflict(f"bulk {self.connection} export {export.id}: files remain")
        conn.execute(
            update(t)
            .where(t.c.id == export.id)
            .values(
                status=DONE,
                error_files=report.error_files,
                error_lines=report.error_lines,
                finished_at=now,
                updated_at=now,
            )
        )
        assert export.transaction_time is not None
        values = {
            "connection": self.connection,
            "scope": spec.scope,
            "types": spec.types_key,
            "since": export.transaction_time,
            "export_id": export.id,
            "updated_at": now,
        }
        stmt = _insert(conn)(bulk_checkpoints).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[
                bulk_checkpoints.c.connection,
                bulk_checkpoints.c.scope,
                bulk_checkpoints.c.types,
            ],
            set_={k: v for k, v in values.items() if k not in ("connection", "scope", "types")},
        )
        conn.execute(stmt)
        record_outcome(
            conn, self.connection, ok=True, now=now, circuit=self.client.breaker.snapshot()
        )

    async def _delete(self, export: _Export) -> None:
        """Tell the EHR it may delete the files (best effort: they expire anyway)."""
        if export.status_url is None:
            return
        try:
            await self.client.send(
                "DELETE", export.status_url, what="DELETE $export status", retry=False
            )
        except SyncError as exc:
            log.info(
                "bulk %s export %d: the status URL was not deleted (%s)",
                self.connection,
                export.id,
                type(exc).__name__,
            )

    def _record_failure(self, export: _Export | None, exc: Exception) -> None:
        text = error_text(exc)[:ERROR_LENGTH]
        log.warning("bulk %s failed: %s", self.connection, text)
        final = isinstance(exc, BulkExportFailed)

        def work(conn: Connection) -> None:
            now = self._now()
            if export is not None:
                values: dict[str, Any] = {"error": text, "updated_at": now}
                if final:
                    values.update(status=FAILED, finished_at=now)
                conn.execute(
                    update(bulk_exports).where(bulk_exports.c.id == export.id).values(**values)
                )
            record_outcome(
                conn,
                self.connection,
                ok=False,
                now=now,
                error=text,
                circuit=self.client.breaker.snapshot(),
            )

        try:
            run_write(self.engine, work)
        except Exception as db_exc:  # the original failure matters more
            log.error("bulk %s: cannot record the failure: %s", self.connection, type(db_exc))

    def _report(self, event: BulkEvent) -> None:
        if self.progress is not None:
            self.progress(event)


async def _cancel(tasks: Sequence[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(BaseException):
            await task


# -- with the sync runtime ------------------------------------------------------------------------


async def run_bulk(
    runtime: SyncRuntime,
    connection: str,
    spec: ExportSpec,
    *,
    options: BulkOptions | None = None,
    progress: Progress | None = None,
    sleep: Sleep = asyncio.sleep,
) -> BulkReport:
    """Run (or resume) ``spec`` on ``connection`` with the runtime's client and credentials."""
    try:
        client = await runtime.client(connection)
        auth = await runtime.smart.backend.auth(runtime.connection(connection))
    except SyncError:
        raise
    except (DiscoveryError, TokenEndpointUnavailable) as exc:
        raise EhrUnreachable(f"EHR '{connection}': {type(exc).__name__}") from None
    http = new_http_client(runtime.settings_for(connection))
    try:
        exporter = BulkExporter(
            store=runtime.store,
            client=client,
            http=http,
            auth=auth,
            tokens=BackendTokens(auth, http, clock=lambda: runtime.clock().timestamp()),
            options=options,
            clock=runtime.clock,
            sleep=sleep,
            progress=progress,
        )
        return await exporter.run(spec)
    finally:
        await http.aclose()


# -- the job --------------------------------------------------------------------------------------


def _spec(payload: dict[str, Any]) -> ExportSpec:
    types = payload.get("types") or []
    level, group, since = payload.get("level", "system"), payload.get("group"), payload.get("since")
    if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
        raise Fatal("the payload's types are not a list of names")
    if not isinstance(level, str) or not (group is None or isinstance(group, str)):
        raise Fatal("the payload's level or group is not a string")
    if since is not None and not isinstance(since, str):
        raise Fatal("the payload's since is not a string")
    try:
        return ExportSpec(level=level, group=group, types=tuple(types), since=since)
    except SyncConfigError as exc:
        raise Fatal(str(exc)) from None


class BulkHandler:
    """The ``sync.bulk`` handler; ``settings`` None: read them (environment) at the first job.

    Payload ``{"connection": NAME, "level": "system"|"patient"|"group", "group": ID|null,
    "types": [...], "since": INSTANT|null}``. The lease is extended at every poll and batch;
    when the worker stops, the job ends early and resumes later from what is stored.
    """

    def __init__(
        self, settings: Settings | None = None, *, options: BulkOptions | None = None
    ) -> None:
        self.settings = settings
        self.options = options

    def _settings(self) -> Settings:
        if self.settings is None:
            try:
                self.settings = load_settings()
            except ConfigError as exc:
                raise Fatal(f"settings: {exc}") from None
        return self.settings

    async def __call__(self, payload: dict[str, Any], ctx: JobContext) -> None:
        name = payload.get("connection")
        if not isinstance(name, str) or not name:
            raise Fatal("the payload names no connection")
        spec = _spec(payload)

        def progress(_: BulkEvent) -> None:
            if ctx.stopping or not ctx.extend_lease():
                raise PullStopped("the worker is stopping; the bulk import resumes later")

        runtime = SyncRuntime(self._settings(), ctx.engine, clock=ctx.clock)
        try:
            await run_bulk(runtime, name, spec, options=self.options, progress=progress)
        except PullStopped as exc:
            raise RetryLater(0.0, str(exc)) from None
        except TemporaryError as exc:
            raise RetryLater(exc.retry_after, str(exc)) from None
        except (FatalError, SyncError, ConfigError) as exc:
            raise Fatal(str(exc)) from None
        finally:
            await runtime.aclose()


def register_bulk_handlers(
    registry: Registry, *, settings: Settings | None = None, options: BulkOptions | None = None
) -> None:
    """Register ``sync.bulk`` on ``registry`` (again: only the settings are updated)."""
    existing = registry.get(BULK_KIND)
    if isinstance(existing, BulkHandler):
        if settings is not None:
            existing.settings = settings
        return
    registry.register(BULK_KIND, BulkHandler(settings, options=options))


def enqueue_bulk(
    conn: Connection,
    *,
    connection: str,
    spec: ExportSpec,
    slot: str | None = None,
    run_at: datetime | None = None,
) -> int | None:
    """Queue a bulk import in the caller's transaction. ``slot`` (e.g. ``2030-01-01``) makes it
    once per slot, so a scheduler never doubles an export."""
    key = f"bulk|{connection}|{spec.scope}|{spec.types_key}|{slot}" if slot else None
    payload = {"connection": connection, **spec.payload(), "since": spec.since}
    return enqueue(
        conn, kind=BULK_KIND, payload=payload, key=key, connection=connection, run_at=run_at
    )
