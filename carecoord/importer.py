"""Bulk import of FHIR data from files: transaction/collection Bundles, single resources, NDJSON.

Resources keep their ids, so importing the same files again changes nothing. ``urn:uuid``
references resolve across every file of one import (Synthea's patient bundles point at
practitioners and organisations defined in other files), then against resources already stored.
Each Bundle (or NDJSON chunk) is one transaction: it lands whole or not at all.

Validation is CPU-bound (~1 ms per resource with fhir.resources), so worker processes parse and
validate files while this process writes the previous ones.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from carecoord.fhir.bundles import (
    EntryRequest,
    apply_transaction,
    prepare_transaction,
    resolve_stored_urn,
)
from carecoord.fhir.errors import FhirError
from carecoord.fhir.store import FhirStore, Writer

__all__ = ["ImportReport", "count_resources", "discover", "import_paths"]

NDJSON_CHUNK = 500
_SUFFIXES = (".json", ".ndjson", ".jsonl")

# (label, prepared entries or an error message, number of resources in the unit)
PreparedUnit = tuple[str, list[EntryRequest] | str, int]


@dataclass
class ImportReport:
    """What an import did, per resource type and per failed unit (file or chunk, reason)."""

    files: int = 0
    created: Counter[str] = field(default_factory=Counter)
    updated: Counter[str] = field(default_factory=Counter)
    unchanged: Counter[str] = field(default_factory=Counter)
    errors: list[tuple[str, str]] = field(default_factory=list)

    @property
    def resources(self) -> int:
        return (
            sum(self.created.values()) + sum(self.updated.values()) + sum(self.unchanged.values())
        )


def discover(paths: list[Path]) -> list[Path]:
    """Files to import: the files named, and .json/.ndjson files below the folders named."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(
                sorted(p for p in path.rglob("*") if p.suffix in _SUFFIXES and p.is_file())
            )
        elif path.exists():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return found


def _units(path: Path) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(label, Bundle entries) import units of one file: a Bundle, a resource, or NDJSON chunks."""
    if path.suffix in (".ndjson", ".jsonl"):
        chunk: list[dict[str, Any]] = []
        start = 1
        with path.open("rb") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                chunk.append({"resource": orjson.loads(line)})
                if len(chunk) >= NDJSON_CHUNK:
                    yield f"{path}:{start}-{number}", chunk
                    chunk, start = [], number + 1
        if chunk:
            yield f"{path}:{start}-", chunk
        return
    data = orjson.loads(path.read_bytes())
    if (
        isinstance(data, dict)
        and data.get("resourceType") == "Bundle"
        and data.get("type")
        in (
            "transaction",
            "batch",
            "collection",
        )
    ):
        yield str(path), [e for e in data.get("entry") or [] if isinstance(e, dict)]
        return
    yield str(path), [{"resource": data}]


def count_resources(files: list[Path]) -> int:
    """How many resources the files hold (for a progress bar); unreadable files count 0."""
    total = 0
    for path in files:
        try:
            total += sum(len(items) for _, items in _units(path))
        except (orjson.JSONDecodeError, OSError):
            continue
    return total


def _scan_urns(files: list[Path]) -> dict[str, str]:
    """``urn:uuid`` fullUrls of every Bundle entry → ``Type/id`` (the id is kept on import)."""
    urns: dict[str, str] = {}
    for path in files:
        if path.suffix != ".json":
            continue
        try:
            data = orjson.loads(path.read_bytes())
        except (orjson.JSONDecodeError, OSError):
            continue
        if not isinstance(data, dict) or data.get("resourceType") != "Bundle":
            continue
        for entry in data.get("entry") or []:
            if not isinstance(entry, dict):
                continue
            resource, full_url = entry.get("resource"), entry.get("fullUrl")
            if (
                isinstance(resource, dict)
                and isinstance(full_url, str)
                and full_url.startswith("urn:")
            ):
                res_id = resource.get("id") or full_url.rsplit(":", 1)[-1]
                urns[full_url] = f"{resource.get('resourceType')}/{res_id}"
    return urns


def _as_transaction(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Every entry becomes an id-keeping POST (a resource without id takes its urn:uuid)."""
    out = []
    for entry in entries:
        resource = entry.get("resource")
        full_url = entry.get("fullUrl")
        if isinstance(resource, dict):
            if (
                not resource.get("id")
                and isinstance(full_url, str)
                and full_url.startswith("urn:uuid:")
            ):
                resource = {**resource, "id": full_url.rsplit(":", 1)[-1]}
            request = {"method": "POST", "url": str(resource.get("resourceType", ""))}
            entry = {"resource": resource, "request": request}
            if full_url:
                entry["fullUrl"] = full_url
        out.append(entry)
    return {"resourceType": "Bundle", "type": "transaction", "entry": out}


def _prepare_file(path: Path) -> list[PreparedUnit]:
    """Parse and validate one file (runs in a worker process)."""
    try:
        units = list(_units(path))
    except (orjson.JSONDecodeError, OSError) as exc:
        return [(str(path), f"cannot read: {exc}", 0)]
    prepared: list[PreparedUnit] = []
    for label, entries in units:
        try:
            prepared.append(
                (label, prepare_transaction(_as_transaction(entries), keep_ids=True), len(entries))
            )
        except FhirError as exc:
            prepared.append((label, exc.message, len(entries)))
    return prepared


def _prepared(files: list[Path], workers: int) -> Iterator[PreparedUnit]:
    """Prepared units in file order; with workers > 1, validated ahead in a process pool."""
    if workers <= 1 or len(files) <= 1:
        for path in files:
            yield from _prepare_file(path)
        return
    context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        pending: deque[Future[list[PreparedUnit]]] = deque()
        queue = iter(files)
        for path in queue:
            pending.append(pool.submit(_prepare_file, path))
            if len(pending) >= workers * 2:
                break
        while pending:
            done = pending.popleft().result()
            next_path = next(queue, None)
            if next_path is not None:
                pending.append(pool.submit(_prepare_file, next_path))
            yield from done


def import_paths(
    store: FhirStore,
    paths: list[Path],
    *,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Import files or folders into ``store``; a failing unit is reported and skipped."""
    files = discover(paths)
    urns = _scan_urns(files)

    def resolve(writer: Writer, ref: str) -> str | None:
        return urns.get(ref) or resolve_stored_urn(writer, ref)

    report = ImportReport(files=len(files))
    count = workers if workers is not None else (os.cpu_count() or 1)
    for label, prepared, size in _prepared(files, count):
        if isinstance(prepared, str):
            report.errors.append((label, prepared))
        else:
            try:
                result = apply_transaction(store, prepared, base="", resolve_urn=resolve)
            except FhirError as exc:
                report.errors.append((label, exc.message))
            else:
                for outcome in result.outcomes:
                    if outcome.stored is None:
                        continue
                    res_type = outcome.stored.res_type
                    if outcome.status == 201:
                        report.created[res_type] += 1
                    elif outcome.unchanged:
                        report.unchanged[res_type] += 1
                    else:
                        report.updated[res_type] += 1
        if progress:
            progress(size)
    return report
