"""FHIR search: parse a query into SQL over the search index, page it with keyset cursors.

``parse_search`` turns (name, value) pairs into a :class:`SearchQuery`; ``run_search`` runs it on a
connection and returns a :class:`SearchPage` of stored resources (bytes), with ``_include`` and
``_revinclude`` results beside the matches. Paging is by keyset: the ``next`` link carries the sort
values of the last row, so pages never overlap or skip even while resources are being written.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import (
    ColumnElement,
    Connection,
    FromClause,
    and_,
    false,
    func,
    literal,
    not_,
    or_,
    select,
)

from carecoord.fhir.errors import Forbidden, InvalidRequest, UnknownParameter
from carecoord.fhir.searchparams import SearchParam, SearchRegistry, parse_reference
from carecoord.fhir.tables import (
    idx_date,
    idx_number,
    idx_reference,
    idx_string,
    idx_token,
    index_tables,
    resources,
)
from carecoord.fhir.types import RESOURCE_TYPES
from carecoord.fhir.values import MAX_TIME, MIN_TIME, date_range, normalize_string, number_range

__all__ = [
    "RESULT_PARAMETERS",
    "SearchPage",
    "SearchQuery",
    "parse_search",
    "run_search",
    "split_values",
]

#: Parameters that shape results rather than filter them (always accepted).
RESULT_PARAMETERS = frozenset(
    {
        "_count",
        "_sort",
        "_include",
        "_revinclude",
        "_summary",
        "_total",
        "_elements",
        "_cursor",
        "_format",
        "_pretty",
    }
)
_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
_STRING_TOP = "\U0010ffff"

Condition = Callable[[FromClause], ColumnElement[bool]]
#: The access policy as the search sees it: (type, permission) -> False (type not granted),
#: None (every row) or a row condition. See :mod:`carecoord.fhir.access`.
Access = Callable[[str, str], "Condition | bool | None"]


@dataclass(frozen=True)
class SortKey:
    name: str
    descending: bool
    expr: Callable[[FromClause], ColumnElement[Any]]


@dataclass(frozen=True)
class IncludeSpec:
    source_type: str
    param: str | None  # None: every reference parameter ("*")
    target_type: str | None


@dataclass
class SearchQuery:
    """A parsed search of one resource type."""

    res_type: str
    conditions: list[Condition] = field(default_factory=list)
    sort: list[SortKey] = field(default_factory=list)
    count: int = 50
    summary: str | None = None
    total: bool = False
    includes: list[IncludeSpec] = field(default_factory=list)
    revincludes: list[IncludeSpec] = field(default_factory=list)
    elements: tuple[str, ...] | None = None
    cursor: list[Any] | None = None
    params: list[tuple[str, str]] = field(default_factory=list)  # as given, less _cursor
    guard: Condition | None = None  # the access policy's limit on matched rows
    access: Access | None = None  # the access policy, for included resources

    def where(self, alias: FromClause) -> ColumnElement[bool]:
        base = and_(alias.c.res_type == self.res_type, alias.c.deleted == false())
        conds = [cond(alias) for cond in self.conditions]
        if self.guard is not None:
            conds.append(self.guard(alias))
        return and_(base, *conds)


@dataclass
class SearchPage:
    """One page: matched rows (type, id, content), included rows, total and the next cursor."""

    matches: list[tuple[str, str, bytes]]
    included: list[tuple[str, str, bytes]]
    total: int | None
    next_cursor: str | None


def split_values(raw: str) -> list[str]:
    """Split a parameter value on unescaped commas and unescape ``\\,`` ``\\|`` ``\\$`` ``\\\\``."""
    out: list[str] = []
    current: list[str] = []
    escaped = False
    for ch in raw:
        if escaped:
            if ch not in ",|$\\":
                current.append("\\")
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ",":
            out.append("".join(current))
            current = []
        else:
            current.append(ch)
    if escaped:
        current.append("\\")
    out.append("".join(current))
    return out


def _split_token(value: str) -> tuple[str | None, str | None, bool]:
    """``system|code`` → (system, code, has_bar); escaped bars are not separators."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for ch in value:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "|" and not parts:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    if len(parts) == 1:
        return None, parts[0] or None, False
    return parts[0], parts[1] or None, True


def _prefix(value: str) -> tuple[str, str]:
    if len(value) > 2 and value[:2] in _PREFIXES and not value[2].isalpha():
        return value[:2], value[2:]
    return "eq", value


# --- conditions per parameter type ---------------------------------------------------------


def _rid_in(alias: FromClause, sub: Any, negate: bool = False) -> ColumnElement[bool]:
    cond = alias.c.rid.in_(sub)
    return not_(cond) if negate else cond


def _date_condition(
    low_col: ColumnElement[int], high_col: ColumnElement[int], prefix: str, value: str
) -> ColumnElement[bool]:
    try:
        lo, hi = date_range(value)
    except ValueError as exc:
        raise InvalidRequest(f"Invalid date search value {value!r}: {exc}") from exc
    if prefix == "eq":
        return and_(low_col >= lo, high_col <= hi)
    if prefix == "ne":
        return or_(low_col < lo, high_col > hi)
    if prefix == "gt":
        return high_col > hi
    if prefix == "lt":
        return low_col < lo
    if prefix == "ge":
        return high_col >= lo
    if prefix == "le":
        return low_col <= hi
    if prefix == "sa":
        return low_col > hi
    if prefix == "eb":
        return high_col < lo
    # ap: overlap with the range widened by 10% of its distance from now (at least one day).
    from time import time

    now = int(time() * 1_000_000)
    margin = max(86_400_000_000, abs(now - lo) // 10)
    return and_(low_col <= hi + margin, high_col >= lo - margin)


def _number_condition(col: ColumnElement[float], prefix: str, text: str) -> ColumnElement[bool]:
    try:
        value, lo, hi = number_range(text)
    except ValueError as exc:
        raise InvalidRequest(f"Invalid number search value {text!r}") from exc
    if prefix == "eq":
        return and_(col >= lo, col < hi)
    if prefix == "ne":
        return or_(col < lo, col >= hi)
    if prefix in ("gt", "sa"):
        return col > value
    if prefix in ("lt", "eb"):
        return col < value
    if prefix == "ge":
        return col >= value
    if prefix == "le":
        return col <= value
    margin = abs(value) * 0.1
    return and_(col >= value - margin, col <= value + margin)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class _Builder:
    def __init__(
        self, registry: SearchRegistry, base_url: str | None, access: Access | None = None
    ) -> None:
        self.access = access
        self.registry = registry
        self.base_url = base_url.rstrip("/") + "/" if base_url else None

    def condition(
        self, res_type: str, name: str, raw: str, *, allow_chain: bool = True
    ) -> Condition:
        if "." in name:
            if not allow_chain:
                raise UnknownParameter(f"Chained parameters nest one level only: {name!r}")
            return self._chain(res_type, name, raw)
        code, _, modifier = name.partition(":")
        values = split_values(raw)
        if code == "_id":
            return self._id_condition(modifier, values)
        if code == "_lastUpdated":
            if modifier:
                raise UnknownParameter(f"Modifier :{modifier} is not supported on _lastUpdated")
            conds = [_prefix(v) for v in values]

            def last_updated(a: FromClause) -> ColumnElement[bool]:
                col = a.c.last_updated
                return or_(*(_date_condition(col, col, p, v) for p, v in conds))

            return last_updated
        param = self.registry.get(res_type, code)
        if param is None:
            raise UnknownParameter(
                f"Unknown search parameter {code!r} for {res_type}",
            )
        if modifier == "missing":
            if raw not in ("true", "false"):
                raise InvalidRequest(f"{name} takes true or false, not {raw!r}")
            table = index_tables[param.table]
            sub = select(table.c.rid).where(
                table.c.res_type == res_type, table.c.param == param.code
            )
            missing = raw == "true"
            return lambda a: _rid_in(a, sub, negate=missing)
        return self._value_condition(param, modifier, values)

    def _id_condition(self, modifier: str, values: list[str]) -> Condition:
        if modifier and modifier != "not":
            raise UnknownParameter(f"Modifier :{modifier} is not supported on _id")
        ids = [v for v in values if v]
        if modifier == "not":
            return lambda a: not_(a.c.res_id.in_(ids))
        return lambda a: a.c.res_id.in_(ids)

    def _value_condition(self, param: SearchParam, modifier: str, values: list[str]) -> Condition:
        kind = param.type
        res_type = param.base
        if kind in ("token", "uri"):
            if modifier not in ("", "not"):
                raise UnknownParameter(f"Modifier :{modifier} is not supported on {param.code}")
            ors: list[ColumnElement[bool]] = []
            for value in values:
                system: str | None
                code: str | None
                if kind == "uri":
                    system, code, has_bar = None, value, False
                else:
                    system, code, has_bar = _split_token(value)
                parts = [idx_token.c.code == code] if code is not None else []
                if has_bar:
                    parts.append(
                        idx_token.c.system.is_(None) if not system else idx_token.c.system == system
                    )
                if not parts:
                    raise InvalidRequest(f"Empty token value for {param.code}")
                ors.append(and_(*parts))
            sub = select(idx_token.c.rid).where(
                idx_token.c.res_type == res_type, idx_token.c.param == param.code, or_(*ors)
            )
            negate = modifier == "not"
            return lambda a: _rid_in(a, sub, negate)
        if kind == "string":
            if modifier not in ("", "exact", "contains"):
                raise UnknownParameter(f"Modifier :{modifier} is not supported on {param.code}")
            ors = []
            for value in values:
                if modifier == "exact":
                    ors.append(idx_string.c.exact == value)
                    continue
                norm = normalize_string(value)
                if modifier == "contains":
                    ors.append(idx_string.c.value.like(f"%{_escape_like(norm)}%", escape="\\"))
                else:
                    ors.append(
                        and_(idx_string.c.value >= norm, idx_string.c.value < norm + _STRING_TOP)
                    )
            sub = select(idx_string.c.rid).where(
                idx_string.c.res_type == res_type, idx_string.c.param == param.code, or_(*ors)
            )
            return lambda a: _rid_in(a, sub)
        if kind == "reference":
            target_type: str | None = None
            if modifier:
                if modifier not in RESOURCE_TYPES:
                    raise UnknownParameter(f"Modifier :{modifier} is not supported on {param.code}")
                target_type = modifier
            ors = [self._reference_match(param, value, target_type) for value in values]
            sub = select(idx_reference.c.rid).where(
                idx_reference.c.res_type == res_type,
                idx_reference.c.param == param.code,
                or_(*ors),
            )
            return lambda a: _rid_in(a, sub)
        if kind == "date":
            if modifier:
                raise UnknownParameter(f"Modifier :{modifier} is not supported on {param.code}")
            ors = [_date_condition(idx_date.c.low, idx_date.c.high, *_prefix(v)) for v in values]
            sub = select(idx_date.c.rid).where(
                idx_date.c.res_type == res_type, idx_date.c.param == param.code, or_(*ors)
            )
            return lambda a: _rid_in(a, sub)
        # quantity / number
        if modifier:
            raise UnknownParameter(f"Modifier :{modifier} is not supported on {param.code}")
        ors = []
        for value in values:
            prefix, rest = _prefix(value)
            number: str = rest
            system, code = None, None
            if kind == "quantity" and "|" in rest:
                pieces = rest.split("|")
                if len(pieces) != 3:
                    raise InvalidRequest(f"Quantity must be number|system|code: {value!r}")
                number, system, code = pieces[0], pieces[1] or None, pieces[2] or None
            parts = [_number_condition(idx_number.c.value, prefix, number)]
            if system:
                parts.append(idx_number.c.system == system)
            if code:
                parts.append(idx_number.c.code == code)
            ors.append(and_(*parts))
        sub = select(idx_number.c.rid).where(
            idx_number.c.res_type == res_type, idx_number.c.param == param.code, or_(*ors)
        )
        return lambda a: _rid_in(a, sub)

    def _reference_match(
        self, param: SearchParam, value: str, target_type: str | None
    ) -> ColumnElement[bool]:
        if not value:
            raise InvalidRequest(f"Empty reference value for {param.code}")
        if self.base_url and value.startswith(self.base_url):
            value = value[len(self.base_url) :]
        ref_type: str | None
        ref_id: str | None
        url: str | None
        if "/" not in value and ":" not in value:
            ref_type, ref_id, url = None, value, None
        else:
            ref_type, ref_id, url = parse_reference(value)
        if url is not None and ref_type is None:
            return idx_reference.c.url == url
        if url is not None:
            # An absolute URL of another server: match it as stored.
            return idx_reference.c.url == url
        if target_type and ref_type and target_type != ref_type:
            return false()
        wanted = target_type or ref_type
        parts = [idx_reference.c.target_id == ref_id]
        if wanted:
            parts.append(idx_reference.c.target_type == wanted)
        return and_(*parts)

    def _chain(self, res_type: str, name: str, raw: str) -> Condition:
        head, _, tail = name.partition(".")
        code, _, type_modifier = head.partition(":")
        param = self.registry.get(res_type, code)
        if param is None or param.type != "reference":
            raise UnknownParameter(f"{code!r} is not a reference parameter of {res_type}")
        if type_modifier:
            if type_modifier not in RESOURCE_TYPES:
                raise UnknownParameter(f"Unknown resource type {type_modifier!r} in {name!r}")
            targets = [type_modifier]
        elif param.targets is not None:
            targets = sorted(param.targets)
        else:
            raise InvalidRequest(f"Chain through {code!r} needs a type, e.g. {code}:Patient.{tail}")
        tail_code = tail.partition(":")[0]
        usable = [
            t
            for t in targets
            if tail_code in ("_id", "_lastUpdated") or self.registry.get(t, tail_code) is not None
        ]
        if not usable:
            raise UnknownParameter(
                f"Unknown chained parameter {tail_code!r} on {'/'.join(targets)}"
            )
        guards: dict[str, Condition | None] = {}
        for t in usable:
            allowed = self.access(t, "s") if self.access is not None else None
            if allowed is False:
                raise Forbidden(f"Chaining through {t} needs a scope that allows searching {t}")
            guards[t] = allowed if callable(allowed) else None
        inner = [(t, self.condition(t, tail, raw, allow_chain=False)) for t in usable]
        target = resources.alias("chain_target")
        ors = [
            and_(
                target.c.res_type == t,
                target.c.deleted == false(),
                cond(target),
                *((guard(target),) if (guard := guards[t]) is not None else ()),
            )
            for t, cond in inner
        ]
        sub = (
            select(idx_reference.c.rid)
            .join(
                target,
                and_(
                    target.c.res_type == idx_reference.c.target_type,
                    target.c.res_id == idx_reference.c.target_id,
                ),
            )
            .where(
                idx_reference.c.res_type == res_type,
                idx_reference.c.param == param.code,
                or_(*ors),
            )
        )
        return lambda a: _rid_in(a, sub)

    def sort_key(self, res_type: str, spec: str) -> SortKey:
        descending = spec.startswith("-")
        code = spec[1:] if descending else spec
        if code == "_id":
            return SortKey(code, descending, lambda a: a.c.res_id)
        if code == "_lastUpdated":
            return SortKey(code, descending, lambda a: a.c.last_updated)
        param = self.registry.get(res_type, code)
        if param is None:
            raise UnknownParameter(f"Unknown sort parameter {code!r} for {res_type}")
        agg = func.max if descending else func.min
        col: Any
        sentinel: Any
        table: Any
        if param.table == "date":
            col, sentinel = (
                (idx_date.c.high if descending else idx_date.c.low),
                (MIN_TIME if descending else MAX_TIME),
            )
            table = idx_date
        elif param.table == "string":
            col, sentinel, table = (
                idx_string.c.value,
                ("" if descending else _STRING_TOP),
                idx_string,
            )
        elif param.table == "token":
            col, sentinel, table = idx_token.c.code, ("" if descending else _STRING_TOP), idx_token
        elif param.table == "number":
            col, sentinel, table = (
                idx_number.c.value,
                (-1e308 if descending else 1e308),
                idx_number,
            )
        else:
            raise UnknownParameter(f"Sorting by {code!r} ({param.type}) is not supported")

        def expr(a: FromClause) -> ColumnElement[Any]:
            sub = (
                select(agg(col))
                .where(table.c.rid == a.c.rid, table.c.param == param.code)
                .scalar_subquery()
            )
            return func.coalesce(sub, literal(sentinel))

        return SortKey(code, descending, expr)


def _include_spec(res_type: str, raw: str, registry: SearchRegistry, rev: bool) -> IncludeSpec:
    parts = raw.split(":")
    if len(parts) not in (2, 3) or (parts[1] == "*" and len(parts) == 3):
        raise InvalidRequest(f"Invalid {'_revinclude' if rev else '_include'} value {raw!r}")
    source, code = parts[0], parts[1]
    target = parts[2] if len(parts) == 3 else None
    if source not in RESOURCE_TYPES:
        raise InvalidRequest(f"Unknown resource type {source!r} in {raw!r}")
    if not rev and source != res_type:
        raise InvalidRequest(f"_include must start with {res_type}: {raw!r}")
    if code == "*":
        return IncludeSpec(source, None, target)
    param = registry.get(source, code)
    if param is None or param.type != "reference":
        raise InvalidRequest(f"{code!r} is not a reference parameter of {source}")
    if target is not None and target not in RESOURCE_TYPES:
        raise InvalidRequest(f"Unknown resource type {target!r} in {raw!r}")
    return IncludeSpec(source, code, target)


def parse_search(
    res_type: str,
    params: Sequence[tuple[str, str]],
    registry: SearchRegistry,
    *,
    default_count: int = 50,
    max_count: int = 1000,
    base_url: str | None = None,
    lenient: bool = False,
    access: Access | None = None,
) -> SearchQuery:
    """Parse search parameters; raise UnknownParameter/InvalidRequest on anything unusable.

    With ``lenient`` (``Prefer: handling=lenient``) unknown parameters are ignored instead.
    With ``access`` the matches, chains and includes are limited to what the policy allows
    (Forbidden when it does not allow searching ``res_type`` at all).
    """
    builder = _Builder(registry, base_url, access)
    query = SearchQuery(res_type=res_type, count=default_count, access=access)
    if access is not None:
        allowed = access(res_type, "s")
        if allowed is False:
            raise Forbidden(f"No scope allows searching {res_type}")
        query.guard = allowed if callable(allowed) else None
    for name, value in params:
        if name == "_cursor":
            query.cursor = _decode_cursor(value)
            continue
        query.params.append((name, value))
        if name == "_count":
            try:
                query.count = max(0, min(int(value), max_count))
            except ValueError as exc:
                raise InvalidRequest(f"_count must be a whole number, not {value!r}") from exc
        elif name == "_sort":
            query.sort = [builder.sort_key(res_type, s) for s in value.split(",") if s]
        elif name == "_summary":
            if value not in ("count", "false", "data"):
                raise UnknownParameter(f"_summary={value} is not supported (count, data, false)")
            query.summary = None if value == "false" else value
        elif name == "_total":
            if value not in ("none", "estimate", "accurate"):
                raise InvalidRequest(f"_total must be none, estimate or accurate, not {value!r}")
            query.total = value != "none"
        elif name == "_include":
            query.includes.append(_include_spec(res_type, value, registry, rev=False))
        elif name == "_revinclude":
            query.revincludes.append(_include_spec(res_type, value, registry, rev=True))
        elif name in ("_include:iterate", "_revinclude:iterate"):
            raise UnknownParameter(f"{name} is not supported")
        elif name == "_elements":
            query.elements = tuple(e.strip() for e in value.split(",") if e.strip())
        elif name in ("_format", "_pretty"):
            continue
        else:
            try:
                query.conditions.append(builder.condition(res_type, name, value))
            except UnknownParameter:
                if not lenient:
                    raise
    if query.cursor is not None and len(query.cursor) != len(query.sort) + 1:
        raise InvalidRequest("The paging cursor does not match this search")
    return query


def _decode_cursor(value: str) -> list[Any]:
    try:
        decoded = orjson.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    except (binascii.Error, orjson.JSONDecodeError, ValueError) as exc:
        raise InvalidRequest("Invalid paging cursor") from exc
    if not isinstance(decoded, list) or not decoded:
        raise InvalidRequest("Invalid paging cursor")
    return decoded


def _encode_cursor(values: Sequence[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(values))).decode().rstrip("=")


def _after(keys: list[tuple[Any, bool]], cursor: list[Any]) -> ColumnElement[bool]:
    """Rows strictly after ``cursor`` in lexicographic order of ``keys`` (expr, descending)."""
    ors = []
    for i, (expr, desc) in enumerate(keys):
        eqs = [keys[j][0] == cursor[j] for j in range(i)]
        step = expr < cursor[i] if desc else expr > cursor[i]
        ors.append(and_(*eqs, step))
    return or_(*ors)


def count_matches(conn: Connection, query: SearchQuery) -> int:
    r = resources.alias("r")
    return int(conn.execute(select(func.count()).select_from(r).where(query.where(r))).scalar_one())


def find_ids(conn: Connection, query: SearchQuery, limit: int) -> list[tuple[int, str]]:
    """(rid, id) of up to ``limit`` matches, used by conditional interactions."""
    r = resources.alias("r")
    stmt = select(r.c.rid, r.c.res_id).where(query.where(r)).order_by(r.c.rid).limit(limit)
    return [(row[0], row[1]) for row in conn.execute(stmt)]


def run_search(conn: Connection, query: SearchQuery, *, max_include: int = 1000) -> SearchPage:
    """Run a parsed search: one page of matches, their includes, and the next cursor."""
    total = count_matches(conn, query) if (query.total or query.summary == "count") else None
    if query.summary == "count" or query.count == 0:
        return SearchPage([], [], total, None)
    r = resources.alias("r")
    sort_exprs = [(key.expr(r).label(f"s{i}"), key.descending) for i, key in enumerate(query.sort)]
    inner = (
        select(r.c.rid, r.c.res_type, r.c.res_id, r.c.content, *(e for e, _ in sort_exprs))
        .where(query.where(r))
        .subquery("q")
    )
    keys: list[tuple[Any, bool]] = [(inner.c[f"s{i}"], d) for i, (_, d) in enumerate(sort_exprs)]
    keys.append((inner.c.rid, False))
    stmt = select(inner)
    if query.cursor is not None:
        stmt = stmt.where(_after(keys, query.cursor))
    stmt = stmt.order_by(*((k.desc() if d else k.asc()) for k, d in keys)).limit(query.count + 1)
    rows = conn.execute(stmt).all()
    next_cursor = None
    if len(rows) > query.count:
        rows = rows[: query.count]
        last = rows[-1]
        next_cursor = _encode_cursor([*(last[4 + i] for i in range(len(sort_exprs))), last[0]])
    matches = [(row[1], row[2], row[3]) for row in rows]
    included = _includes(conn, query, [row[0] for row in rows], matches, max_include)
    return SearchPage(matches, included, total, next_cursor)


def _includes(
    conn: Connection,
    query: SearchQuery,
    rids: list[int],
    matches: list[tuple[str, str, bytes]],
    limit: int,
) -> list[tuple[str, str, bytes]]:
    if not rids or not (query.includes or query.revincludes):
        return []
    seen = {(t, i) for t, i, _ in matches}
    out: list[tuple[str, str, bytes]] = []
    ids = [i for _, i, _ in matches]
    target = resources.alias("inc")
    statements = []
    for spec in query.includes:
        conds: list[ColumnElement[bool]] = [idx_reference.c.rid.in_(rids)]
        if spec.param is not None:
            conds.append(idx_reference.c.param == spec.param)
        if spec.target_type is not None:
            conds.append(idx_reference.c.target_type == spec.target_type)
        statements.append(
            select(target.c.res_type, target.c.res_id, target.c.content)
            .join(
                idx_reference,
                and_(
                    target.c.res_type == idx_reference.c.target_type,
                    target.c.res_id == idx_reference.c.target_id,
                ),
            )
            .where(
                idx_reference.c.res_type == spec.source_type, target.c.deleted == false(), *conds
            )
        )
    for spec in query.revincludes:
        conds = [
            idx_reference.c.target_type == query.res_type,
            idx_reference.c.target_id.in_(ids),
        ]
        if spec.param is not None:
            conds.append(idx_reference.c.param == spec.param)
        statements.append(
            select(target.c.res_type, target.c.res_id, target.c.content)
            .join(idx_reference, target.c.rid == idx_reference.c.rid)
            .where(
                idx_reference.c.res_type == spec.source_type, target.c.deleted == false(), *conds
            )
        )
    for stmt in statements:
        for row in conn.execute(stmt.limit(limit + 1)):
            res_type, res_id, content = str(row[0]), str(row[1]), bytes(row[2])
            if (res_type, res_id) in seen:
                continue
            if len(out) >= limit:
                return _visible(conn, query.access, out)
            seen.add((res_type, res_id))
            out.append((res_type, res_id, content))
    return _visible(conn, query.access, out)


def _visible(
    conn: Connection, access: Access | None, rows: list[tuple[str, str, bytes]]
) -> list[tuple[str, str, bytes]]:
    """The included rows the access policy lets the caller read (one query per limited type)."""
    if access is None or not rows:
        return rows
    keep: set[tuple[str, str]] = set()
    by_type: dict[str, list[str]] = {}
    for res_type, res_id, _ in rows:
        by_type.setdefault(res_type, []).append(res_id)
    for res_type, ids in by_type.items():
        allowed = access(res_type, "r")
        if allowed is False:
            continue
        if allowed is None or allowed is True:
            keep.update((res_type, i) for i in ids)
            continue
        r = resources.alias("vis")
        stmt = select(r.c.res_id).where(r.c.res_type == res_type, r.c.res_id.in_(ids), allowed(r))
        keep.update((res_type, str(i)) for (i,) in conn.execute(stmt))
    return [row for row in rows if (row[0], row[1]) in keep]
