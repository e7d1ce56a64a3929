"""Search parameter definitions and the extraction of search-index rows from a resource.

Definitions come from ``data/search-parameters.json`` (FHIR R4 4.0.1, simplified paths) plus the
parameters every type shares (``_tag``, ``_profile``, ``_security``). ``_id`` and ``_lastUpdated``
are columns of the resources table and need no rows.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from importlib import resources as package_files
from typing import Any

import orjson

from carecoord.fhir.values import MAX_TIME, MIN_TIME, date_range, normalize_string

__all__ = [
    "IndexRows",
    "SearchParam",
    "SearchRegistry",
    "default_registry",
    "extract_index",
    "parse_reference",
]

KINDS = ("token", "string", "reference", "date", "number")
# Search parameter type → index table kind.
TABLE_OF = {
    "token": "token",
    "uri": "token",
    "string": "string",
    "reference": "reference",
    "date": "date",
    "quantity": "number",
    "number": "number",
}
_CONTACT_SYSTEMS = frozenset({"phone", "fax", "email", "pager", "url", "sms", "other"})
_MAX_CODE = 255
_MAX_LONG = 2048
_REF_RE = re.compile(
    r"^(?:(?P<base>.*)/)?(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$"
)


@dataclass(frozen=True, slots=True)
class SearchParam:
    """One search parameter of one resource type."""

    base: str
    code: str
    type: str
    paths: tuple[tuple[str, ...], ...]
    targets: frozenset[str] | None  # None: any resource type
    where: tuple[tuple[str, str], ...] = ()
    description: str = ""

    @property
    def table(self) -> str:
        return TABLE_OF[self.type]


_COMMON = (
    ("_tag", "token", "meta.tag", "Tags applied to this resource"),
    ("_profile", "uri", "meta.profile", "Profiles this resource claims to conform to"),
    ("_security", "token", "meta.security", "Security labels applied to this resource"),
)


class SearchRegistry:
    """Search parameters by resource type and code."""

    def __init__(self, params: Iterable[SearchParam]) -> None:
        self._by_type: dict[str, dict[str, SearchParam]] = {}
        self._all: dict[str, tuple[SearchParam, ...]] = {}
        for param in params:
            self._by_type.setdefault(param.base, {})[param.code] = param

    def get(self, res_type: str, code: str) -> SearchParam | None:
        found = self._by_type.get(res_type, {}).get(code)
        if found is None and code in {c for c, *_ in _COMMON}:
            return _common_param(res_type, code)
        return found

    def for_type(self, res_type: str) -> tuple[SearchParam, ...]:
        cached = self._all.get(res_type)
        if cached is None:
            own = tuple(self._by_type.get(res_type, {}).values())
            cached = own + tuple(_common_param(res_type, code) for code, *_ in _COMMON)
            self._all[res_type] = cached
        return cached


@cache
def _common_param(res_type: str, code: str) -> SearchParam:
    for c, kind, path, description in _COMMON:
        if c == code:
            return SearchParam(res_type, c, kind, (tuple(path.split(".")),), None, (), description)
    raise KeyError(code)


@cache
def default_registry() -> SearchRegistry:
    """The registry shipped with CareCoord (loaded once)."""
    raw = package_files.files("carecoord.fhir").joinpath("data/search-parameters.json").read_bytes()
    params = []
    for item in orjson.loads(raw):
        targets = item.get("targets")
        params.append(
            SearchParam(
                base=item["base"],
                code=item["code"],
                type=item["type"],
                paths=tuple(tuple(p.split(".")) for p in item["paths"]),
                targets=None if not targets or "Any" in targets else frozenset(targets),
                where=tuple(sorted(item.get("where", {}).items())),
                description=item.get("description", ""),
            )
        )
    return SearchRegistry(params)


# --- extraction -------------------------------------------------------------------------------

IndexRows = dict[str, list[tuple[Any, ...]]]


def _collect(
    node: Any, segments: tuple[str, ...], i: int, choice: str, out: list[tuple[Any, str]]
) -> None:
    """Append the values at ``segments[i:]`` below ``node`` with the choice type of an [x] step."""
    while True:
        if isinstance(node, list):
            for item in node:
                _collect(item, segments, i, choice, out)
            return
        if i == len(segments):
            out.append((node, choice))
            return
        if not isinstance(node, dict):
            return
        head = segments[i]
        if head.endswith("[x]"):
            prefix = head[:-3]
            size = len(prefix)
            for key, value in node.items():
                if key.startswith(prefix) and len(key) > size and key[size].isupper():
                    _collect(value, segments, i + 1, key[size:], out)
            return
        node = node.get(head)
        if node is None:
            return
        i += 1


def parse_reference(ref: str) -> tuple[str | None, str | None, str | None]:
    """``Patient/1`` → ("Patient", "1", None); an absolute URL keeps its URL too; ``#x`` → Nones."""
    if not ref or ref.startswith("#"):
        return None, None, None
    if ref.startswith(("urn:uuid:", "urn:oid:")):
        return None, None, ref[:_MAX_LONG]
    match = _REF_RE.match(ref)
    if not match:
        return None, None, ref[:_MAX_LONG]
    url = ref[:_MAX_LONG] if match.group("base") else None
    return match.group("type"), match.group("id"), url


def _tokens(value: Any, last: str) -> Iterator[tuple[str | None, str | None]]:
    if isinstance(value, bool):
        yield None, "true" if value else "false"
    elif isinstance(value, str):
        yield None, value
    elif isinstance(value, dict):
        if "coding" in value:
            for coding in value["coding"] or ():
                if isinstance(coding, dict) and ("code" in coding or "system" in coding):
                    yield coding.get("system"), coding.get("code")
        elif "code" in value:
            yield value.get("system"), value["code"]
        elif "value" in value:
            # A ContactPoint's system is a fixed code (phone, email ...); an Identifier's is a URI.
            if last == "telecom" or value.get("system") in _CONTACT_SYSTEMS:
                yield None, str(value["value"])
            else:
                yield value.get("system"), str(value["value"])


_NAME_PARTS = ("family", "given", "prefix", "suffix", "text")
_ADDRESS_PARTS = ("line", "city", "district", "state", "postalCode", "country", "text")


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        parts = _NAME_PARTS if ("family" in value or "given" in value) else _ADDRESS_PARTS
        for part in parts:
            item = value.get(part)
            if isinstance(item, str):
                yield item
            elif isinstance(item, list):
                yield from (s for s in item if isinstance(s, str))


def _dates(value: Any, choice: str) -> Iterator[tuple[int, int]]:
    try:
        if isinstance(value, str):
            if choice in ("", "DateTime", "Date", "Instant"):
                yield date_range(value)
        elif isinstance(value, dict):
            if "start" in value or "end" in value:
                low = date_range(value["start"])[0] if value.get("start") else MIN_TIME
                high = date_range(value["end"])[1] if value.get("end") else MAX_TIME
                yield low, high
            elif "event" in value:
                for event in value["event"] or ():
                    yield date_range(event)
    except (ValueError, TypeError):
        return


def _numbers(value: Any) -> Iterator[tuple[float, str | None, str | None]]:
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        yield float(value), None, None
    elif isinstance(value, dict) and isinstance(value.get("value"), int | float):
        code = value.get("code") or value.get("unit")
        yield float(value["value"]), value.get("system"), code


def _clip(text: str | None, size: int) -> str | None:
    return text if text is None or len(text) <= size else text[:size]


def extract_index(res_type: str, resource: dict[str, Any], registry: SearchRegistry) -> IndexRows:
    """Index rows (without rid and res_type) by table kind for one resource."""
    rows: IndexRows = {kind: [] for kind in KINDS}
    for param in registry.for_type(res_type):
        seen: set[tuple[Any, ...]] = set()
        table = param.table
        for path in param.paths:
            last = path[-1]
            if path[0] not in resource and not path[0].endswith("[x]"):
                continue
            found: list[tuple[Any, str]] = []
            _collect(resource, path, 0, "", found)
            for value, choice in found:
                if param.where and not (
                    isinstance(value, dict) and all(value.get(k) == v for k, v in param.where)
                ):
                    continue
                for row in _rows_for(param, value, choice, last):
                    if row not in seen:
                        seen.add(row)
                        rows[table].append((param.code, *row))
    return rows


def _rows_for(param: SearchParam, value: Any, choice: str, last: str) -> Iterator[tuple[Any, ...]]:
    kind = param.type
    if kind in ("token", "uri"):
        for system, code in _tokens(value, last):
            if code is not None or system is not None:
                yield _clip(system, _MAX_LONG), _clip(code, _MAX_CODE)
    elif kind == "string":
        for text in _strings(value):
            norm = normalize_string(text)
            if norm:
                yield _clip(norm, _MAX_CODE), _clip(text, _MAX_LONG)
    elif kind == "reference":
        ref = value.get("reference") if isinstance(value, dict) else value
        if isinstance(ref, str):
            target_type, target_id, url = parse_reference(ref)
            if target_type is None and url is None:
                return
            if param.targets is not None and target_type not in (None, *param.targets):
                return
            yield target_type, target_id, url
    elif kind == "date":
        yield from _dates(value, choice)
    elif kind == "number" or choice in ("", "Quantity", "Decimal", "Integer"):
        yield from _numbers(value)
