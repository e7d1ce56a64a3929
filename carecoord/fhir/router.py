"""The FHIR REST API at ``/fhir``: routes translate HTTP to store calls and back, nothing more.

Reads and searches return stored JSON bytes; only writes parse and validate. Errors are raised as
:class:`~carecoord.fhir.errors.FhirError` and rendered as OperationOutcome by the app's handler.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qsl, urlencode

import orjson
from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from carecoord.audit.rest import RestAudit
from carecoord.auth.policy import request_policy
from carecoord.fhir.access import AccessPolicy
from carecoord.fhir.aread import AsyncReader
from carecoord.fhir.bundles import EntryOutcome, parse_etag, process_batch, process_transaction
from carecoord.fhir.errors import (
    FHIR_JSON,
    Forbidden,
    InvalidRequest,
    NotAcceptable,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from carecoord.fhir.search import SearchPage, SearchQuery
from carecoord.fhir.store import FhirStore, HistoryPage, StoredResource, Writer, WriteResult
from carecoord.fhir.validation import check_type, parse_json, validate_resource
from carecoord.fhir.values import format_instant

__all__ = ["FHIR_JSON", "router"]

#: Searches of these types are audited even when they find nothing (the query names a patient).
_PATIENT_TYPES = frozenset({"Patient"})

_JSON_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")
_JSON_FORMATS = ("json", *_JSON_TYPES)

router = APIRouter(prefix="/fhir")
T = TypeVar("T")


async def get_store(request: Request) -> FhirStore:
    """The app's store (async: FastAPI runs sync dependencies in the threadpool, a hop per call)."""
    store: FhirStore = request.app.state.store
    return store


StoreDep = Annotated[FhirStore, Depends(get_store)]
PolicyDep = Annotated[AccessPolicy | None, Depends(request_policy)]


def _audit(request: Request) -> RestAudit:
    audit: RestAudit = request.app.state.audit
    return audit


def _request_id(request: Request) -> str | None:
    rid: str | None = request.scope.get("state", {}).get("request_id")
    return rid


async def _written(
    request: Request,
    store: FhirStore,
    policy: AccessPolicy | None,
    interaction: str,
    op: Callable[[Writer], WriteResult],
) -> WriteResult:
    """Run a write and its AuditEvent in one transaction."""
    audit, request_id = _audit(request), _request_id(request)

    def work(w: Writer) -> WriteResult:
        result = op(w)
        done = "create" if result.created else ("read" if result.unchanged else interaction)
        audit.on_write(w, policy, request_id, done, result.resource)
        return result

    return await store.awrite(work, policy=policy)


def _bundle_audit(
    request: Request, policy: AccessPolicy | None
) -> Callable[[Writer, list[tuple[str, EntryOutcome]]], None]:
    audit, request_id = _audit(request), _request_id(request)

    def hook(w: Writer, outcomes: list[tuple[str, EntryOutcome]]) -> None:
        for interaction, outcome in outcomes:
            if outcome.stored is not None and not (interaction == "read" and outcome.unchanged):
                audit.on_write(w, policy, request_id, interaction, outcome.stored)

    return hook


#: Base URLs already worked out from a request's scheme, host and root path (bounded: the
#: Host header comes from the client).
_BASES: dict[tuple[Any, ...], str] = {}


def base_url(request: Request) -> str:
    configured: str | None = request.app.state.settings.base_url
    if configured:
        return configured.rstrip("/")
    scope = request.scope
    host = next((value for name, value in scope["headers"] if name == b"host"), None)
    server = scope.get("server")
    key = (scope.get("scheme"), host, tuple(server) if server else None, scope.get("root_path"))
    found = _BASES.get(key)
    if found is None:
        found = str(request.base_url).rstrip("/") + "/fhir"
        if len(_BASES) < 256:
            _BASES[key] = found
    return found


def _check_format(request: Request) -> None:
    fmt = request.query_params.get("_format") if request.scope.get("query_string") else None
    if fmt is not None and fmt.split(";")[0].strip() not in _JSON_FORMATS:
        raise NotAcceptable(f"_format={fmt} is not supported; this server speaks FHIR JSON")
    accept = request.headers.get("accept")
    if accept and "xml" in accept and not any(t in accept for t in (*_JSON_TYPES, "*/*")):
        raise NotAcceptable("This server answers in FHIR JSON only (application/fhir+json)")


async def read_body(request: Request) -> bytes:
    """The request body, refused with 413 past the configured limit and 415 if not JSON."""
    limit: int = request.app.state.settings.max_body_bytes
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";")[0].strip().lower()
    if media and media not in _JSON_TYPES and media != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType(
            f"Content-Type {media!r} is not supported; send application/fhir+json"
        )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The body is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


BodyDep = Annotated[bytes, Depends(read_body)]


def _prefer(request: Request) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in request.headers.get("prefer", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key:
            out[key.lower()] = value.strip().strip('"')
    return out


def _resource_response(
    stored: StoredResource,
    status: int = 200,
    *,
    request: Request | None = None,
    created: bool = False,
) -> Response:
    headers = {"ETag": stored.etag, "Last-Modified": stored.last_modified}
    if created or status == 201:
        assert request is not None
        headers["Location"] = f"{base_url(request)}/{stored.location}"
    prefer = _prefer(request).get("return") if request is not None else None
    if prefer == "minimal" and request is not None and request.method != "GET":
        return Response(status_code=status, headers=headers)
    return Response(stored.content, status_code=status, headers=headers, media_type=FHIR_JSON)


def _write_response(result: WriteResult, request: Request) -> Response:
    return _resource_response(
        result.resource, result.status, request=request, created=result.created
    )


#: Bodies up to this size are parsed and validated on the event loop (tens of microseconds);
#: larger ones in the threadpool, so that one big resource does not hold up other requests.
_INLINE_BODY = 64 * 1024


def _validated(body: bytes, max_depth: int, res_type: str) -> dict[str, Any]:
    data = parse_json(body, max_depth=max_depth)
    _, resource = validate_resource(data, expected_type=res_type)
    return resource


async def _body_resource(body: bytes, request: Request, res_type: str) -> dict[str, Any]:
    max_depth: int = request.app.state.settings.max_json_depth
    if len(body) <= _INLINE_BODY:
        return _validated(body, max_depth, res_type)
    return await run_in_threadpool(_validated, body, max_depth, res_type)


def _query_pairs(request: Request) -> list[tuple[str, str]]:
    return list(request.query_params.multi_items())


# --- whole system ---------------------------------------------------------------------------


@router.get("/metadata")
def metadata(request: Request) -> Response:
    _check_format(request)
    return Response(request.app.state.capability, media_type=FHIR_JSON)


@router.post("")
@router.post("/")
def bundle(request: Request, store: StoreDep, policy: PolicyDep, body: BodyDep) -> Response:
    data = parse_json(body, max_depth=request.app.state.settings.max_json_depth)
    if not isinstance(data, dict) or data.get("resourceType") != "Bundle":
        raise InvalidRequest("POST to the base expects a Bundle of type transaction or batch")
    kind = data.get("type")
    include = _prefer(request).get("return") == "representation"
    base = base_url(request)
    hook = _bundle_audit(request, policy)
    if kind == "transaction":
        result = process_transaction(
            store, data, base=base, include_resources=include, policy=policy, audit=hook
        )
    elif kind == "batch":
        audit, request_id = _audit(request), _request_id(request)

        def searched(query: str, rows: list[tuple[str, str, bytes]]) -> None:
            audit.on_read_sync(policy, request_id, "search-type", rows, query=query)

        result = process_batch(
            store,
            data,
            base=base,
            include_resources=include,
            policy=policy,
            audit=hook,
            audit_search=searched,
        )
    else:
        raise InvalidRequest(f"Bundle.type must be transaction or batch, not {kind!r}")
    return Response(result.body, status_code=result.status, media_type=FHIR_JSON)


@router.get("/_history")
def history_system(request: Request, store: StoreDep, policy: PolicyDep) -> Response:
    return _history(request, store, policy, None, None)


# --- type level -----------------------------------------------------------------------------


def _search(
    request: Request,
    store: FhirStore,
    policy: AccessPolicy | None,
    res_type: str,
    params: list[tuple[str, str]],
) -> Response:
    _check_format(request)
    check_type(res_type)
    lenient = _prefer(request).get("handling") == "lenient"
    query = store.parse(res_type, params, lenient=lenient, policy=policy)
    page = store.search(query)
    _audit(request).on_read_sync(
        policy,
        _request_id(request),
        "search-type",
        [*page.matches, *page.included],
        query=f"{res_type}?{urlencode(params)}",
        always=res_type in _PATIENT_TYPES,
    )
    return Response(_searchset(request, res_type, query, page), media_type=FHIR_JSON)


@router.get("/{res_type}")
async def search_get(
    res_type: str, request: Request, store: StoreDep, policy: PolicyDep
) -> Response:
    params = _query_pairs(request)
    return await _blocking(store, lambda: _search(request, store, policy, res_type, params))


@router.post("/{res_type}/_search")
async def search_post(
    res_type: str, request: Request, store: StoreDep, policy: PolicyDep, body: BodyDep
) -> Response:
    params = _query_pairs(request) + parse_qsl(
        body.decode("utf-8", "replace"), keep_blank_values=True
    )
    return await _blocking(store, lambda: _search(request, store, policy, res_type, params))


@router.post("/{res_type}")
async def create(
    res_type: str, request: Request, store: StoreDep, policy: PolicyDep, body: BodyDep
) -> Response:
    check_type(res_type)
    resource = await _body_resource(body, request, res_type)
    resource.pop("id", None)  # the server assigns ids on create
    condition = request.headers.get("if-none-exist")
    if_none_exist = parse_qsl(condition.lstrip("?"), keep_blank_values=True) if condition else None
    if condition is not None and not if_none_exist:
        raise InvalidRequest("If-None-Exist must carry search parameters")
    result = await _written(
        request,
        store,
        policy,
        "create",
        lambda w: w.create(res_type, resource, if_none_exist=if_none_exist),
    )
    return _write_response(result, request)


@router.put("/{res_type}")
async def conditional_update(
    res_type: str, request: Request, store: StoreDep, policy: PolicyDep, body: BodyDep
) -> Response:
    check_type(res_type)
    params = _query_pairs(request)
    if not params:
        raise InvalidRequest("PUT on a type needs search parameters (conditional update)")
    resource = await _body_resource(body, request, res_type)
    if_match = _if_match(request)
    result = await _written(
        request,
        store,
        policy,
        "update",
        lambda w: w.conditional_update(res_type, params, resource, if_match=if_match),
    )
    return _write_response(result, request)


@router.get("/{res_type}/_history")
def history_type(res_type: str, request: Request, store: StoreDep, policy: PolicyDep) -> Response:
    check_type(res_type)
    return _history(request, store, policy, res_type, None)


# --- instance level -------------------------------------------------------------------------


async def _blocking(store: FhirStore, call: Callable[[], T]) -> T:
    """Run a store call inline when the store says it cannot block, else in the threadpool."""
    if store.inline_reads:
        return call()
    return await store.blocking(call)


async def _guarded_read(
    request: Request,
    store: FhirStore,
    policy: AccessPolicy | None,
    interaction: str,
    target: str,
    call: Callable[[], StoredResource],
    acall: Callable[[AsyncReader], Awaitable[StoredResource]] | None = None,
) -> StoredResource:
    """A read that is audited whether it succeeds or is refused.

    ``acall`` reads on the event loop (PostgreSQL), used when the policy limits nothing.
    """
    audit = _audit(request)
    reader: AsyncReader | None = request.app.state.async_reader
    try:
        if acall is not None and reader is not None and store.access(policy) is None:
            stored = await acall(reader)
        else:
            stored = await _blocking(store, call)
    except (Forbidden, NotFound) as exc:
        if policy is not None:
            await audit.on_denied(policy, _request_id(request), interaction, target, exc.message)
        raise
    await audit.on_read(
        policy,
        _request_id(request),
        interaction,
        [(stored.res_type, stored.res_id, stored.content)],
    )
    return stored


@router.get("/{res_type}/{res_id}")
async def read(
    res_type: str, res_id: str, request: Request, store: StoreDep, policy: PolicyDep
) -> Response:
    _check_format(request)
    check_type(res_type)
    stored = await _guarded_read(
        request,
        store,
        policy,
        "read",
        f"{res_type}/{res_id}",
        lambda: store.read(res_type, res_id, policy=policy),
        lambda reader: store.aread(res_type, res_id, reader),
    )
    if request.headers.get("if-none-match") == stored.etag:
        return Response(status_code=304, headers={"ETag": stored.etag})
    return _resource_response(stored)


def _if_match(request: Request) -> int | None:
    header = request.headers.get("if-match")
    return parse_etag(header) if header else None


@router.put("/{res_type}/{res_id}")
async def update(
    res_type: str,
    res_id: str,
    request: Request,
    store: StoreDep,
    policy: PolicyDep,
    body: BodyDep,
) -> Response:
    check_type(res_type)
    resource = await _body_resource(body, request, res_type)
    body_id = resource.get("id")
    if body_id is None:
        raise InvalidRequest(f"The resource must carry id {res_id!r} to match the URL")
    if body_id != res_id:
        raise InvalidRequest(f"Resource id {body_id!r} does not match the URL id {res_id!r}")
    if_match = _if_match(request)
    result = await _written(
        request,
        store,
        policy,
        "update",
        lambda w: w.update(res_type, res_id, resource, if_match=if_match),
    )
    return _write_response(result, request)


@router.delete("/{res_type}/{res_id}")
async def delete(
    res_type: str, res_id: str, request: Request, store: StoreDep, policy: PolicyDep
) -> Response:
    check_type(res_type)
    audit, request_id = _audit(request), _request_id(request)

    def work(w: Writer) -> WriteResult:
        result = w.delete(res_type, res_id)
        audit.on_write(w, policy, request_id, "delete", None, target=(res_type, res_id))
        return result

    result = await store.awrite(work, policy=policy)
    return Response(status_code=204, headers={"ETag": result.resource.etag})


@router.get("/{res_type}/{res_id}/_history")
def history_instance(
    res_type: str, res_id: str, request: Request, store: StoreDep, policy: PolicyDep
) -> Response:
    check_type(res_type)
    return _history(request, store, policy, res_type, res_id)


@router.get("/{res_type}/{res_id}/_history/{version}")
async def vread(
    res_type: str, res_id: str, version: str, request: Request, store: StoreDep, policy: PolicyDep
) -> Response:
    _check_format(request)
    check_type(res_type)
    if not version.isdigit():
        raise InvalidRequest(f"Version must be a number, not {version!r}")
    stored = await _guarded_read(
        request,
        store,
        policy,
        "vread",
        f"{res_type}/{res_id}",
        lambda: store.vread(res_type, res_id, int(version), policy=policy),
        lambda reader: store.avread(res_type, res_id, int(version), reader),
    )
    return _resource_response(stored)


# --- bundles out ----------------------------------------------------------------------------


def _link(request: Request, path: str, params: list[tuple[str, str]]) -> str:
    query = urlencode(params)
    return f"{base_url(request)}/{path}" + (f"?{query}" if query else "")


def _shape(content: bytes, query: SearchQuery) -> bytes | orjson.Fragment:
    if query.elements is None and query.summary != "data":
        return orjson.Fragment(content)
    data = orjson.loads(content)
    if query.summary == "data":
        data.pop("text", None)
    if query.elements is not None:
        keep = {"resourceType", "id", "meta", *query.elements}
        data = {k: v for k, v in data.items() if k in keep}
    meta = data.setdefault("meta", {})
    meta.setdefault("tag", []).append(
        {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}
    )
    return orjson.dumps(data)


def _searchset(request: Request, res_type: str, query: SearchQuery, page: SearchPage) -> bytes:
    base = base_url(request)
    links = [{"relation": "self", "url": _link(request, res_type, query.params)}]
    if page.next_cursor:
        links.append(
            {
                "relation": "next",
                "url": _link(request, res_type, [*query.params, ("_cursor", page.next_cursor)]),
            }
        )
    entries: list[dict[str, Any]] = []
    for t, rid, content in page.matches:
        shaped = _shape(content, query)
        resource = shaped if isinstance(shaped, orjson.Fragment) else orjson.Fragment(shaped)
        entries.append(
            {"fullUrl": f"{base}/{t}/{rid}", "resource": resource, "search": {"mode": "match"}}
        )
    for t, rid, content in page.included:
        entries.append(
            {
                "fullUrl": f"{base}/{t}/{rid}",
                "resource": orjson.Fragment(content),
                "search": {"mode": "include"},
            }
        )
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if page.total is not None:
        bundle["total"] = page.total
    bundle["link"] = links
    if entries:
        bundle["entry"] = entries
    return orjson.dumps(bundle)


def _history(
    request: Request,
    store: FhirStore,
    policy: AccessPolicy | None,
    res_type: str | None,
    res_id: str | None,
) -> Response:
    _check_format(request)
    params = request.query_params
    known = {"_count", "_since", "_cursor", "_format", "_pretty"}
    unknown = [k for k in params if k not in known]
    if unknown:
        raise InvalidRequest(f"Unsupported history parameter(s): {', '.join(sorted(unknown))}")
    count = None
    if "_count" in params:
        if not params["_count"].isdigit():
            raise InvalidRequest("_count must be a whole number")
        count = int(params["_count"])
    page = store.history(
        res_type,
        res_id,
        since=params.get("_since"),
        count=count,
        cursor=params.get("_cursor"),
        policy=policy,
    )
    _audit(request).on_read_sync(
        policy,
        _request_id(request),
        "history-instance" if res_id else "history-type",
        [(e.resource.res_type, e.resource.res_id, e.resource.content) for e in page.entries],
    )
    path = "/".join(p for p in (res_type, res_id, "_history") if p)
    return Response(_history_bundle(request, path, page), media_type=FHIR_JSON)


def _history_bundle(request: Request, path: str, page: HistoryPage) -> bytes:
    base = base_url(request)
    own = [(k, v) for k, v in request.query_params.multi_items() if k != "_cursor"]
    links = [{"relation": "self", "url": _link(request, path, own)}]
    if page.next_cursor:
        links.append(
            {"relation": "next", "url": _link(request, path, [*own, ("_cursor", page.next_cursor)])}
        )
    entries: list[dict[str, Any]] = []
    for item in page.entries:
        r = item.resource
        url = f"{r.res_type}/{r.res_id}"
        entry: dict[str, Any] = {"fullUrl": f"{base}/{url}"}
        if r.content is not None:
            entry["resource"] = orjson.Fragment(r.content)
        status = {"POST": "201 Created", "PUT": "200 OK", "DELETE": "204 No Content"}[item.method]
        if item.method == "PUT" and r.version_id == 1:
            status = "201 Created"
        entry["request"] = {
            "method": item.method,
            "url": url if item.method != "POST" else r.res_type,
        }
        entry["response"] = {
            "status": status,
            "etag": r.etag,
            "lastModified": format_instant(r.last_updated),
        }
        entries.append(entry)
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "history", "link": links}
    if entries:
        bundle["entry"] = entries
    return orjson.dumps(bundle)
