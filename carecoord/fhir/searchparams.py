"""Search parameter definitions and the extraction of search-index rows from a resource.

Definitions come from ``data/search-parameters.json`` (FHIR R4 4.0.1, simplified paths) plus the
parameters every type shares (``_tag``, ``_profile``, ``_security``). ``_id`` and ``_lastUpdated``
are columns of the resources table and need no rows.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache, lru_cache
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
#: The ``meta`` elements the shared parameters read: a ``meta`` without any has no rows for them.
_COMMON_META = frozenset(path.removeprefix("meta.") for _, _, path, _ in _COMMON)


class SearchRegistry:
    """Search parameters by resource type and code."""

    def __init__(self, params: Iterable[SearchParam]) -> None:
        self._by_type: dict[str, dict[str, SearchParam]] = {}
        self._all: dict[str, tuple[SearchParam, ...]] = {}
        self._extractors: dict[str, tuple[_Steps, _Steps]] = {}
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

    def extractors(self, res_type: str) -> tuple[_Steps, _Steps]:
        """The type's parameters compiled for :func:`extract_index`, in :meth:`for_type` order:
        its own, then those every type shares (``meta.tag`` ...). Each is (the top-level key a
        resource needs for the parameter to have rows, None when any may; table; extract)."""
        compiled = self._extractors.get(res_type)
        if compiled is None:
            params = self.for_type(res_type)
            own = len(params) - len(_COMMON)
            compiled = (
                tuple(_compile(param) for param in params[:own]),
                tuple(_compile(param) for param in params[own:]),
            )
            self._extractors[res_type] = compiled
        return compiled


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
#: Appends the rows of one value (with the choice type of an [x] step) to a parameter's rows.
_Add = Callable[[Any, str, list[tuple[Any, ...]]], None]
#: Rows of one parameter for one resource, without duplicates, in document order.
_Extract = Callable[[dict[str, Any]], list[tuple[Any, ...]]]
_Steps = tuple[tuple[str | None, str, _Extract], ...]


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


def _collect_plain(node: Any, segments: tuple[str, ...], i: int, out: list[Any]) -> None:
    """:func:`_collect` for a path without [x] steps (every choice type is empty)."""
    while True:
        if isinstance(node, list):
            for item in node:
                _collect_plain(item, segments, i, out)
            return
        if i == len(segments):
            out.append(node)
            return
        if not isinstance(node, dict):
            return
        node = node.get(segments[i])
        if node is None:
            return
        i += 1


@lru_cache(maxsize=16384)
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


_NAME_PARTS = ("family", "given", "prefix", "suffix", "text")
_ADDRESS_PARTS = ("line", "city", "district", "state", "postalCode", "country", "text")
_DATE_CHOICES = ("", "DateTime", "Date", "Instant")
_NUMBER_CHOICES = ("", "Quantity", "Decimal", "Integer")


def _clip(text: Any, size: int) -> str | None:
    if text is None:
        return None
    if not isinstance(text, str):  # not FHIR: refused as a code or system of no string type
        raise TypeError(f"an index value must be a string, not {type(text).__name__}")
    return text if len(text) <= size else text[:size]


def _token_adder(code: str, last: str) -> _Add:
    telecom = last == "telecom"

    def token(system: Any, value: Any, out: list[tuple[Any, ...]]) -> None:
        if value is not None or system is not None:
            out.append((code, _clip(system, _MAX_LONG), _clip(value, _MAX_CODE)))

    def add(value: Any, choice: str, out: list[tuple[Any, ...]]) -> None:
        if isinstance(value, bool):
            out.append((code, None, "true" if value else "false"))
        elif isinstance(value, str):
            out.append((code, None, _clip(value, _MAX_CODE)))
        elif isinstance(value, dict):
            if "coding" in value:
                for coding in value["coding"] or ():
                    if isinstance(coding, dict) and ("code" in coding or "system" in coding):
                        token(coding.get("system"), coding.get("code"), out)
            elif "code" in value:
                token(value.get("system"), value["code"], out)
            elif "value" in value:
                # A ContactPoint's system is a fixed code (phone, email ...); an Identifier's is
                # a URI.
                if telecom or value.get("system") in _CONTACT_SYSTEMS:
                    token(None, str(value["value"]), out)
                else:
                    token(value.get("system"), str(value["value"]), out)

    return add


def _string_adder(code: str) -> _Add:
    def string(text: str, out: list[tuple[Any, ...]]) -> None:
        norm = normalize_string(text)
        if norm:
            out.append((code, _clip(norm, _MAX_CODE), _clip(text, _MAX_LONG)))

    def add(value: Any, choice: str, out: list[tuple[Any, ...]]) -> None:
        if isinstance(value, str):
            string(value, out)
        elif isinstance(value, dict):
            parts = _NAME_PARTS if ("family" in value or "given" in value) else _ADDRESS_PARTS
            for part in parts:
                item = value.get(part)
                if isinstance(item, str):
                    string(item, out)
                elif isinstance(item, list):
                    for text in item:
                        if isinstance(text, str):
                            string(text, out)

    return add


def _reference_adder(code: str, targets: frozenset[str] | None) -> _Add:
    def add(value: Any, choice: str, out: list[tuple[Any, ...]]) -> None:
        ref = value.get("reference") if isinstance(value, dict) else value
        if isinstance(ref, str):
            target_type, target_id, url = parse_reference(ref)
            if target_type is None:
                if url is not None:
                    out.append((code, None, target_id, url))
            elif targets is None or target_type in targets:
                out.append((code, target_type, target_id, url))

    return add


def _date_adder(code: str) -> _Add:
    def add(value: Any, choice: str, out: list[tuple[Any, ...]]) -> None:
        try:
            if isinstance(value, str):
                if choice in _DATE_CHOICES:
                    out.append((code, *date_range(value)))
            elif isinstance(value, dict):
                if "start" in value or "end" in value:
                    low = date_range(value["start"])[0] if value.get("start") else MIN_TIME
                    high = date_range(value["end"])[1] if value.get("end") else MAX_TIME
                    out.append((code, low, high))
                elif "event" in value:
                    for event in value["event"] or ():
                        out.append((code, *date_range(event)))
        except (ValueError, TypeError):
            return

    return add


def _number_adder(code: str, any_choice: bool) -> _Add:
    def add(value: Any, choice: str, out: list[tuple[Any, ...]]) -> None:
        if isinstance(value, bool) or not (any_choice or choice in _NUMBER_CHOICES):
            return
        if isinstance(value, int | float):
            out.append((code, float(value), None, None))
        elif isinstance(value, dict) and isinstance(value.get("value"), int | float):
            unit = value.get("code") or value.get("unit")
            row = (code, float(value["value"]), value.get("system"), unit)
            hash(row)  # a system or unit of no scalar type is refused (TypeError), as for codes
            out.append(row)

    return add


def _adder(param: SearchParam, last: str) -> _Add:
    kind = param.type
    if kind in ("token", "uri"):
        return _token_adder(param.code, last)
    if kind == "string":
        return _string_adder(param.code)
    if kind == "reference":
        return _reference_adder(param.code, param.targets)
    if kind == "date":
        return _date_adder(param.code)
    return _number_adder(param.code, kind == "number")


def _matches(value: Any, where: tuple[tuple[str, str], ...]) -> bool:
    return isinstance(value, dict) and all(value.get(k) == v for k, v in where)


def _compile(param: SearchParam) -> tuple[str | None, str, _Extract]:
    """``param`` as (the top-level key a resource needs for it to have rows, or None when any
    may; its table; a function from a resource to its rows, each distinct row once, in document
    order)."""
    where = param.where
    path = param.paths[0]
    if len(param.paths) == 1 and not any(step.endswith("[x]") for step in path):
        key = path[0]
        add = _adder(param, path[-1])

        def one_path(resource: dict[str, Any]) -> list[tuple[Any, ...]]:
            out: list[tuple[Any, ...]] = []
            node = resource.get(key)
            if node is None:
                return out
            if len(path) == 1 and isinstance(node, list):
                for item in node:
                    if isinstance(item, list):  # not FHIR, but walked as the generic path would
                        values: list[Any] = []
                        _collect_plain(item, path, 1, values)
                        for value in values:
                            if not where or _matches(value, where):
                                add(value, "", out)
                    elif not where or _matches(item, where):
                        add(item, "", out)
            elif len(path) > 1:
                values = []
                _collect_plain(node, path, 1, values)
                for value in values:
                    if not where or _matches(value, where):
                        add(value, "", out)
            elif not where or _matches(node, where):
                add(node, "", out)
            return out if len(out) < 2 else list(dict.fromkeys(out))

        return key, param.table, one_path
    paths = [
        (steps, any(step.endswith("[x]") for step in steps), _adder(param, steps[-1]))
        for steps in param.paths
    ]

    def any_path(resource: dict[str, Any]) -> list[tuple[Any, ...]]:
        out: list[tuple[Any, ...]] = []
        for steps, choices, add in paths:
            if steps[0] not in resource and not steps[0].endswith("[x]"):
                continue
            found: list[tuple[Any, str]] = []
            if choices:
                _collect(resource, steps, 0, "", found)
            else:
                values: list[Any] = []
                _collect_plain(resource, steps, 0, values)
                found = [(value, "") for value in values]
            for value, choice in found:
                if not where or _matches(value, where):
                    add(value, choice, out)
        return out if len(out) < 2 else list(dict.fromkeys(out))

    first = path[0] if len(param.paths) == 1 and not path[0].endswith("[x]") else None
    return first, param.table, any_path


def extract_index(res_type: str, resource: dict[str, Any], registry: SearchRegistry) -> IndexRows:
    """Index rows (without rid and res_type) by table kind for one resource: per search
    parameter in the registry's order, each distinct row once, in document order."""
    rows: IndexRows = {kind: [] for kind in KINDS}
    own, common = registry.extractors(res_type)
    for key, table, extract in own:
        if key is None or key in resource:
            found = extract(resource)
            if found:
                rows[table].extend(found)
    meta = resource.get("meta")
    if meta is not None and not (isinstance(meta, dict) and _COMMON_META.isdisjoint(meta)):
        for _, table, extract in common:
            found = extract(resource)
            if found:
                rows[table].extend(found)
    return rows
