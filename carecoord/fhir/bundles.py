"""Bundle ``transaction`` and ``batch`` processing (FHIR R4 http §3.1.0.11).

A transaction is validated whole before anything is written, then runs in one database
transaction: conditional creates and conditional updates are resolved first, ``urn:uuid``
references are rewritten to the ids they got, then entries are processed in the order FHIR defines
(DELETE, POST, PUT, GET). Any failure rolls everything back. A batch runs each entry on its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import orjson

from carecoord.fhir.access import AccessPolicy
from carecoord.fhir.errors import FhirError, InvalidRequest, Issue, NotFound, PreconditionFailed
from carecoord.fhir.store import FhirStore, StoredResource, Writer, new_id
from carecoord.fhir.types import RESOURCE_TYPES
from carecoord.fhir.validation import validate_resource

__all__ = [
    "BundleResult",
    "EntryOutcome",
    "EntryRequest",
    "apply_transaction",
    "parse_entry_url",
    "parse_etag",
    "prepare_transaction",
    "process_batch",
    "process_transaction",
    "rewrite_references",
]

_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}


def parse_etag(value: str) -> int:
    """``W/"3"`` (or ``"3"`` or ``3``) → 3; anything else is a 400."""
    text = value.strip()
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    if not text.isdigit():
        raise InvalidRequest(f"Invalid version in If-Match: {value!r}")
    return int(text)


@dataclass
class EntryRequest:
    """One parsed Bundle.entry: what to do, to which resource."""

    index: int
    method: str
    res_type: str
    res_id: str | None = None
    version: int | None = None
    query: list[tuple[str, str]] | None = None
    resource: dict[str, Any] | None = None
    full_url: str | None = None
    if_none_exist: list[tuple[str, str]] | None = None
    if_match: int | None = None
    # filled while processing
    target_id: str | None = None
    exists: bool = False


def parse_entry_url(
    url: str, base_url: str | None = None
) -> tuple[str, str | None, int | None, list[tuple[str, str]] | None]:
    """``Patient/1/_history/2`` → ("Patient", "1", 2, None); ``Patient?x=y`` → (..., query)."""
    if base_url and url.startswith(base_url.rstrip("/") + "/"):
        url = url[len(base_url.rstrip("/")) + 1 :]
    parts = urlsplit(url)
    if parts.scheme or parts.netloc:
        raise InvalidRequest(f"Entry url must be relative to this server: {url!r}")
    segments = [s for s in parts.path.split("/") if s]
    query = parse_qsl(parts.query, keep_blank_values=True) if "?" in url else None
    if not segments or segments[0] not in RESOURCE_TYPES:
        raise InvalidRequest(f"Entry url has no known resource type: {url!r}")
    res_type = segments[0]
    res_id = segments[1] if len(segments) > 1 else None
    version = None
    if len(segments) == 4 and segments[2] == "_history" and segments[3].isdigit():
        version = int(segments[3])
    elif len(segments) > 2:
        raise InvalidRequest(f"Unsupported entry url: {url!r}")
    return res_type, res_id, version, query


# A reference value that a transaction may rewrite: urn:uuid/urn:oid placeholders and conditional
# references (Type?query). Values with JSON escapes are left to the slow path.
_REWRITABLE = re.compile(rb'"reference":"((?:urn:(?:uuid|oid):|[A-Z][A-Za-z]+\?)[^"\\]*)"')


def rewrite_references(raw: bytes, resolve: Callable[[str], str | None]) -> bytes:
    """Rewrite placeholder and conditional references inside serialized JSON (orjson output)."""

    def substitute(match: re.Match[bytes]) -> bytes:
        new = resolve(match.group(1).decode())
        if new is None:
            return match.group(0)
        return b'"reference":' + orjson.dumps(new)

    return _REWRITABLE.sub(substitute, raw)


@dataclass
class BundleResult:
    """The response Bundle as bytes and the HTTP status for it."""

    body: bytes
    status: int = 200
    outcomes: list[EntryOutcome] = field(default_factory=list)


@dataclass(frozen=True)
class EntryOutcome:
    """What one entry did: HTTP status, the resource version, and whether nothing changed."""

    status: int
    stored: StoredResource | None
    unchanged: bool = False


#: Called inside a bundle's transaction with each entry's interaction and outcome (auditing).
AuditHook = Callable[[Writer, list[tuple[str, "EntryOutcome"]]], None]


def _entry_error(index: int, exc: FhirError) -> FhirError:
    prefixed = [
        Issue(
            f"Bundle.entry[{index}]: {issue.diagnostics}",
            issue.code,
            issue.severity,
            tuple(
                f"Bundle.entry[{index}].resource.{e.split('.', 1)[1]}" if "." in e else e
                for e in issue.expression
            ),
        )
        for issue in exc.issues
    ]
    err = type(exc)(f"Bundle.entry[{index}]: {exc.message}", prefixed)
    err.headers = exc.headers
    return err


def _parse_entries(
    bundle: dict[str, Any], base_url: str | None, *, keep_ids: bool
) -> list[EntryRequest]:
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise InvalidRequest("Bundle.entry must be a list")
    parsed: list[EntryRequest] = []
    for i, entry in enumerate(entries):
        try:
            parsed.append(_parse_entry(i, entry, base_url, keep_ids=keep_ids))
        except FhirError as exc:
            raise _entry_error(i, exc) from exc
    return parsed


def _parse_entry(i: int, entry: Any, base_url: str | None, *, keep_ids: bool) -> EntryRequest:
    if not isinstance(entry, dict):
        raise InvalidRequest("An entry must be an object")
    request = entry.get("request")
    if not isinstance(request, dict):
        raise InvalidRequest("An entry needs request.method and request.url")
    method = str(request.get("method", "")).upper()
    if method not in _ORDER or method in ("PATCH", "HEAD"):
        raise InvalidRequest(f"Unsupported request.method {request.get('method')!r}")
    url = request.get("url")
    if not isinstance(url, str) or not url:
        raise InvalidRequest("request.url is required")
    res_type, res_id, version, query = parse_entry_url(url, base_url)
    item = EntryRequest(i, method, res_type, res_id, version, query, full_url=entry.get("fullUrl"))
    if method in ("POST", "PUT"):
        resource = entry.get("resource")
        _, checked = validate_resource(resource, expected_type=res_type)
        item.resource = checked
        if method == "PUT" and res_id is not None and checked.get("id") not in (None, res_id):
            raise InvalidRequest(
                f"Resource id {checked.get('id')!r} differs from request.url {url!r}"
            )
        if method == "PUT" and res_id is None and query is None:
            raise InvalidRequest("PUT needs Type/id or Type?search in request.url")
        if method == "POST":
            if res_id is not None:
                raise InvalidRequest("POST request.url must be the resource type only")
            if keep_ids and checked.get("id"):
                item.target_id = str(checked["id"])
    if method == "DELETE" and res_id is None:
        raise InvalidRequest("DELETE needs Type/id in request.url")
    if request.get("ifNoneExist"):
        item.if_none_exist = parse_qsl(
            str(request["ifNoneExist"]).lstrip("?"), keep_blank_values=True
        )
    if request.get("ifMatch"):
        item.if_match = parse_etag(str(request["ifMatch"]))
    return item


def _response_entry(
    status: str,
    stored: StoredResource | None,
    *,
    include: bool,
    base: str,
    outcome: bytes | None = None,
) -> dict[str, Any]:
    response: dict[str, Any] = {"status": status}
    entry: dict[str, Any] = {}
    if stored is not None:
        response["location"] = stored.location
        response["etag"] = stored.etag
        from carecoord.fhir.values import format_instant

        response["lastModified"] = format_instant(stored.last_updated)
        if include and stored.content is not None:
            entry["fullUrl"] = f"{base}/{stored.res_type}/{stored.res_id}"
            entry["resource"] = orjson.Fragment(stored.content)
    if outcome is not None:
        response["outcome"] = orjson.Fragment(outcome)
    entry["response"] = response
    return entry


_STATUS_TEXT = {200: "200 OK", 201: "201 Created", 204: "204 No Content"}


class _Transaction:
    def __init__(
        self,
        writer: Writer,
        entries: list[EntryRequest],
        resolve_urn: Callable[[Writer, str], str | None],
    ) -> None:
        self.w = writer
        self.entries = entries
        self.urls: dict[str, str] = {}
        self.resolve_urn = resolve_urn

    def run(self) -> list[EntryOutcome]:
        for e in self.entries:
            try:
                self._plan(e)
            except FhirError as exc:
                raise _entry_error(e.index, exc) from exc
        # Lock every existing target up front in one global order, so that transactions touching
        # the same resources in different orders queue behind each other instead of deadlocking.
        self.w.lock_rows(
            {
                (e.res_type, e.target_id)
                for e in self.entries
                if e.target_id is not None
                and (e.method in ("PUT", "DELETE") or (e.method == "POST" and e.exists))
            }
        )
        for e in self.entries:
            if e.resource is not None:
                try:
                    e.resource = orjson.loads(
                        rewrite_references(orjson.dumps(e.resource), self._resolve)
                    )
                except FhirError as exc:
                    raise _entry_error(e.index, exc) from exc
        results: dict[int, EntryOutcome] = {}
        for e in sorted(self.entries, key=lambda x: _ORDER[x.method]):
            try:
                results[e.index] = self._execute(e)
            except FhirError as exc:
                raise _entry_error(e.index, exc) from exc
        return [results[e.index] for e in self.entries]

    def _plan(self, e: EntryRequest) -> None:
        if e.method == "POST":
            if e.if_none_exist:
                found = self.w._locked_find(e.res_type, e.if_none_exist)
                if len(found) > 1:
                    raise PreconditionFailed(f"ifNoneExist matched {len(found)} resources")
                if found:
                    e.target_id, e.exists = found[0], True
            if e.target_id is None:
                e.target_id = new_id()
            elif not e.exists:
                e.exists = self.w._exists(e.res_type, e.target_id)
        elif e.method == "PUT":
            if e.query is not None:
                found = self.w._locked_find(e.res_type, e.query)
                if len(found) > 1:
                    raise PreconditionFailed(f"Conditional update matched {len(found)} resources")
                assert e.resource is not None
                e.target_id = found[0] if found else (e.resource.get("id") or new_id())
            else:
                e.target_id = e.res_id
        else:
            e.target_id = e.res_id
        if e.full_url and e.target_id and e.method in ("POST", "PUT"):
            self.urls[e.full_url] = f"{e.res_type}/{e.target_id}"

    def _resolve(self, ref: str) -> str | None:
        if ref in self.urls:
            return self.urls[ref]
        if ref.startswith(("urn:uuid:", "urn:oid:")):
            found = self.resolve_urn(self.w, ref)
            if found is None:
                raise InvalidRequest(
                    f"Reference {ref!r} resolves to no entry of this Bundle and no stored resource"
                )
            return found
        if "?" in ref:
            res_type, _, qs = ref.partition("?")
            if res_type not in RESOURCE_TYPES:
                raise InvalidRequest(f"Conditional reference {ref!r} names no known type")
            matches = self.w.find(res_type, parse_qsl(qs, keep_blank_values=True))
            if len(matches) != 1:
                raise PreconditionFailed(
                    f"Conditional reference {ref!r} matched {len(matches)} resources, not one"
                )
            return f"{res_type}/{matches[0]}"
        return None

    def _execute(self, e: EntryRequest) -> EntryOutcome:
        w = self.w
        if e.method == "DELETE":
            assert e.res_id is not None
            try:
                deleted = w.delete(e.res_type, e.res_id)
                return EntryOutcome(204, deleted.resource, deleted.unchanged)
            except NotFound:
                return EntryOutcome(204, None, unchanged=True)
        if e.method == "POST":
            assert e.resource is not None and e.target_id is not None
            if e.exists:
                if e.if_none_exist:
                    return EntryOutcome(200, w.read(e.res_type, e.target_id), unchanged=True)
                result = w.update(e.res_type, e.target_id, e.resource)
                return EntryOutcome(result.status, result.resource, result.unchanged)
            result = w.create(e.res_type, e.resource, res_id=e.target_id)
            return EntryOutcome(201, result.resource)
        if e.method == "PUT":
            assert e.resource is not None and e.target_id is not None
            e.resource["id"] = e.target_id
            result = w.update(e.res_type, e.target_id, e.resource, if_match=e.if_match)
            return EntryOutcome(result.status, result.resource, result.unchanged)
        # GET
        if e.res_id is None:
            raise InvalidRequest("GET entries in a transaction must read one resource (Type/id)")
        if e.version is not None:
            return EntryOutcome(
                200, w.store.vread(e.res_type, e.res_id, e.version, policy=w.policy), True
            )
        return EntryOutcome(200, w.read(e.res_type, e.res_id), unchanged=True)


def resolve_stored_urn(writer: Writer, ref: str) -> str | None:
    """``urn:uuid:X`` → ``Type/X`` when exactly one stored resource has the id X."""
    res_id = ref.rsplit(":", 1)[-1]
    types = writer.types_with_id(res_id)
    return f"{types[0]}/{res_id}" if len(types) == 1 else None


def prepare_transaction(
    bundle: dict[str, Any], *, base_url: str | None = None, keep_ids: bool = False
) -> list[EntryRequest]:
    """Parse and validate every entry of a transaction (no database); raise on the first bad one.

    ``keep_ids``: POST entries whose resource has an id keep it (create, or update when it exists),
    so that importing the same data twice changes nothing.
    """
    return _parse_entries(bundle, base_url, keep_ids=keep_ids)


def apply_transaction(
    store: FhirStore,
    entries: list[EntryRequest],
    *,
    base: str,
    include_resources: bool = False,
    resolve_urn: Callable[[Writer, str], str | None] = resolve_stored_urn,
    policy: AccessPolicy | None = None,
    audit: AuditHook | None = None,
) -> BundleResult:
    """Write prepared entries atomically; raise FhirError (nothing written) on any failure.

    ``audit`` runs inside the same transaction with each entry's interaction and outcome.
    """

    def work(w: Writer) -> list[EntryOutcome]:
        # Planning replaces entry resources (never mutates them): each attempt starts afresh.
        outcomes = _Transaction(w, [replace(e) for e in entries], resolve_urn).run()
        if audit is not None:
            audit(w, [(_interaction(e), o) for e, o in zip(entries, outcomes, strict=True)])
        return outcomes

    results = store.write(work, policy=policy)
    out = [
        _response_entry(
            _STATUS_TEXT.get(r.status, str(r.status)),
            r.stored if r.status != 204 else None,
            include=include_resources,
            base=base,
        )
        for r in results
    ]
    body = orjson.dumps({"resourceType": "Bundle", "type": "transaction-response", "entry": out})
    return BundleResult(body, 200, results)


def process_transaction(
    store: FhirStore,
    bundle: dict[str, Any],
    *,
    base: str,
    include_resources: bool = False,
    policy: AccessPolicy | None = None,
    audit: AuditHook | None = None,
) -> BundleResult:
    """Validate and run a transaction Bundle atomically (the ``POST /fhir`` interaction)."""
    entries = prepare_transaction(bundle, base_url=store.base_url)
    return apply_transaction(
        store, entries, base=base, include_resources=include_resources, policy=policy, audit=audit
    )


def _interaction(entry: EntryRequest) -> str:
    if entry.method == "GET":
        return "vread" if entry.version is not None else "read"
    return {"POST": "create", "PUT": "update", "DELETE": "delete"}[entry.method]


def _single_entry(entry: EntryRequest, audit: AuditHook | None) -> Callable[[Writer], EntryOutcome]:
    def work(w: Writer) -> EntryOutcome:
        outcome = _Transaction(w, [replace(entry)], resolve_stored_urn).run()[0]
        if audit is not None:
            audit(w, [(_interaction(entry), outcome)])
        return outcome

    return work


def process_batch(
    store: FhirStore,
    bundle: dict[str, Any],
    *,
    base: str,
    include_resources: bool = False,
    policy: AccessPolicy | None = None,
    audit: AuditHook | None = None,
    audit_search: Callable[[str, list[tuple[str, str, bytes]]], None] | None = None,
) -> BundleResult:
    """Run each entry of a batch Bundle on its own; failures become per-entry OperationOutcomes."""
    raw_entries = bundle.get("entry") or []
    if not isinstance(raw_entries, list):
        raise InvalidRequest("Bundle.entry must be a list")
    out: list[dict[str, Any]] = []
    outcomes: list[EntryOutcome] = []
    for i, raw in enumerate(raw_entries):
        try:
            entry = _parse_entry(i, raw, store.base_url, keep_ids=False)
            if entry.method == "GET" and entry.res_id is None:
                query = store.parse(entry.res_type, entry.query or [], policy=policy)
                page = store.search(query)
                if audit_search is not None:
                    audit_search(f"{entry.res_type}?{urlencode(entry.query or [])}", page.matches)
                searchset = {
                    "resourceType": "Bundle",
                    "type": "searchset",
                    "entry": [
                        {
                            "fullUrl": f"{base}/{t}/{rid}",
                            "resource": orjson.Fragment(c),
                            "search": {"mode": "match"},
                        }
                        for t, rid, c in page.matches
                    ],
                }
                out.append({"resource": searchset, "response": {"status": "200 OK"}})
                continue
            done = store.write(_single_entry(entry, audit), policy=policy)
            outcomes.append(done)
            out.append(
                _response_entry(
                    _STATUS_TEXT.get(done.status, str(done.status)),
                    done.stored if done.status != 204 else None,
                    include=include_resources or entry.method == "GET",
                    base=base,
                )
            )
        except FhirError as exc:
            err = _entry_error(i, exc)
            out.append(
                _response_entry(
                    f"{exc.status}", None, include=False, base=base, outcome=err.outcome()
                )
            )
    body = orjson.dumps({"resourceType": "Bundle", "type": "batch-response", "entry": out})
    return BundleResult(body, 200, outcomes)
