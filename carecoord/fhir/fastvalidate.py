"""Fast structural validation of FHIR R4 JSON, derived from the ``fhir.resources.R4B`` models.

:func:`fast_check` answers one question: is this JSON resource *certainly* accepted by
``model_validate`` of its ``fhir.resources`` model class? ``True`` means yes. ``False`` means
"not sure": the caller then runs the full model validation, which gives the verdict and the error
messages. The check may be stricter than ``fhir.resources`` but never more lenient.

The rules are not written by hand per resource. On first use of a resource type, the model class
and every type reachable from it are introspected (pydantic ``model_fields``, aliases, the
``fhir_core`` field metadata ``element_required`` / ``one_of_many`` / ``one_of_many_required``,
``get_required_fields`` and ``get_one_of_many_fields``, list or single, the primitive annotations
with their length, bound and pattern constraints, nested complex types, Resource-typed fields such
as ``contained``) and compiled into :class:`_Table` objects: one dict from JSON key to a small
tuple per type. A recursive walker then checks a parsed JSON dict against the tables.

What the walker demands, beyond what the models check:

- no JSON ``null`` except inside primitive arrays, where it must line up with a ``_field`` entry;
- no empty objects, arrays or strings; ``resourceType`` on every resource; only JSON aliases;
- primitives in their JSON type only (no ``"true"`` for a boolean, no ``"1.5"`` for a decimal);
- a required primitive is present as a value (an extension alone falls back);
- leap seconds, non-ASCII values of patterned types and any model feature the builder does not
  recognise (unknown validators, annotations or metadata) fall back to the full validation.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime
import decimal
import re
import threading
import typing
from collections.abc import Callable
from typing import Any, Final

from annotated_types import Ge, GroupedMetadata, Gt, Le, Lt, MaxLen, MinLen
from fhir.resources.R4B import get_fhir_model_class
from fhir_core import types as fhir_core_types
from fhir_core.constraints import FHIR_TYPES_MAPS
from fhir_core.fhirabstractmodel import FHIRAbstractModel
from pydantic import TypeAdapter, ValidationError
from pydantic._internal._validators import import_string
from pydantic.types import Base64Encoder, EncodedBytes

__all__ = ["fast_check", "warm"]

Checker = Callable[[Any], bool]

# Field kinds (first item of a field spec).
_PRIM: Final = 0  # single primitive: (kind, checker, None, bit)
_PRIM_LIST: Final = 1  # primitive array: (kind, checker, ext key or None, 0)
_COMPLEX: Final = 2  # single complex type: (kind, table, None, bit)
_COMPLEX_LIST: Final = 3  # complex array: (kind, table, None, 0)
_RESOURCE: Final = 4  # any resource, chosen by its resourceType: (kind, type prefix, None, bit)
_RESOURCE_LIST: Final = 5  # array of resources: (kind, type prefix, None, 0)
_EXT_LIST: Final = 6  # ``_field`` array beside a primitive array: (kind, table, value key, 0)
_RESTYPE: Final = 7  # the ``resourceType`` of a resource: (kind, expected, None, 0)
_UNSUPPORTED: Final = 8  # present means "not sure"

FieldSpec = tuple[int, Any, Any, int]

# Deeper JSON falls back: the models recurse in Python (about six frames per object level).
_MAX_DEPTH: Final = 40

# The validators fhir_core and fhir.resources attach to every model (or to FHIRPrimitiveExtension)
# whose effect the tables reproduce. A model with any other validator is not fast-checked.
_KNOWN_MODEL_VALIDATORS: Final = frozenset(
    {
        "reject_null_complex_elements",
        "validate_after_model_construction",
        "validate_extension_or_fhir_comment_required",
    }
)
_BASE_METHODS: Final = (
    "__init__",
    "_validate_one_of_many",
    "_validate_required_primitive_elements",
    "validate_after_model_construction",
    "reject_null_complex_elements",
    "model_validate",
    "model_post_init",
)
_HARMLESS_CONFIG: Final = frozenset(
    {"extra", "validate_assignment", "populate_by_name", "validate_by_alias", "validate_by_name"}
)
_IGNORED_FIELDS: Final = frozenset({"fhir_comments"})

_FRACTION_DIGITS: Final = 9
_DECIMAL_INT_LIMIT: Final = 10**100
_DAYS: Final = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_SURROGATE = re.compile("[\ud800-\udfff]")
_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


class _Table:
    """The compiled rules of one model class."""

    __slots__ = ("fields", "name", "required", "required_bits")

    def __init__(self, name: str) -> None:
        self.name = name
        # Empty until built: an unbuilt or unsupported table accepts nothing.
        self.fields: dict[str, FieldSpec] = {}
        self.required: tuple[str, ...] = ()
        self.required_bits = 0


class _Unsupported(Exception):
    """The model uses something the tables do not reproduce."""


# ---------------------------------------------------------------------------------------------
# Primitive checkers


def _valid_day(value: str) -> bool:
    """``value`` starts with YYYY-MM-DD already matched by a FHIR date pattern."""
    day = int(value[8:10])
    if day <= 28:
        return True
    month = int(value[5:7])
    if day <= _DAYS[month] and month != 2:
        return True
    if month != 2 or day > 29:
        return False
    year = int(value[0:4])
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _time_tail_ok(value: str, seconds_at: int) -> bool:
    """Seconds ``60`` (a leap second) and very long fractions fall back."""
    if value[seconds_at : seconds_at + 2] == "60":
        return False
    if len(value) > seconds_at + 2 and value[seconds_at + 2] == ".":
        end = seconds_at + 3
        while end < len(value) and value[end].isdigit():
            end += 1
        if end - seconds_at - 3 > _FRACTION_DIGITS:
            return False
    return True


def _date_checker(pattern: re.Pattern[str]) -> Checker:
    fullmatch = pattern.fullmatch

    def check(value: Any) -> bool:
        if type(value) is not str or fullmatch(value) is None:
            return False
        return len(value) != 10 or _valid_day(value)

    return check


def _datetime_checker(pattern: re.Pattern[str]) -> Checker:
    fullmatch = pattern.fullmatch

    def check(value: Any) -> bool:
        if type(value) is not str or fullmatch(value) is None:
            return False
        if len(value) < 10:
            return True
        return _valid_day(value) and (len(value) == 10 or _time_tail_ok(value, 17))

    return check


def _instant_checker(pattern: re.Pattern[str]) -> Checker:
    fullmatch = pattern.fullmatch

    def check(value: Any) -> bool:
        if type(value) is not str or fullmatch(value) is None:
            return False
        return _valid_day(value) and _time_tail_ok(value, 17)

    return check


def _time_checker(pattern: re.Pattern[str]) -> Checker:
    fullmatch = pattern.fullmatch

    def check(value: Any) -> bool:
        return type(value) is str and fullmatch(value) is not None and _time_tail_ok(value, 6)

    return check


def _decimal_checker(pattern: re.Pattern[str]) -> Checker:
    fullmatch = pattern.fullmatch

    def check(value: Any) -> bool:
        kind = type(value)
        if kind is int:
            return bool(-_DECIMAL_INT_LIMIT < value < _DECIMAL_INT_LIMIT)
        return kind is float and fullmatch(str(value)) is not None

    return check


def _bool_check(value: Any) -> bool:
    return value is True or value is False


def _int_checker(low: int | None, high: int | None) -> Checker:
    lo = -(2**63) if low is None else low
    hi = 2**63 if high is None else high

    def check(value: Any) -> bool:
        return type(value) is int and lo <= value <= hi

    return check


def _base64_check(value: Any) -> bool:
    if type(value) is not str or not value or not value.isascii():
        return False
    if _BASE64.fullmatch(value) is None:
        return False
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


class _Slow:
    """The pydantic validator of one primitive annotation, for values the fast rules skip."""

    __slots__ = ("adapter", "annotation", "lock")

    def __init__(self, annotation: Any) -> None:
        self.annotation = annotation
        self.adapter: TypeAdapter[Any] | None = None
        self.lock = threading.Lock()

    def __call__(self, value: Any) -> bool:
        if type(value) is str and _SURROGATE.search(value) is not None:
            return False
        adapter = self.adapter
        if adapter is None:
            with self.lock:
                if self.adapter is None:
                    self.adapter = TypeAdapter(self.annotation)
                adapter = self.adapter
        try:
            adapter.validate_python(value)
        except (ValidationError, ValueError, TypeError):
            return False
        return True


def _rust_compatible(pattern: str) -> str:
    """Translate a pydantic (Rust ``regex``) pattern for Python ``re`` on ASCII input.

    Rust's ``$`` only matches at the very end; Python's also before a final newline.
    """
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            if char == "]":
                in_class = False
        elif char == "[":
            in_class = True
            if pattern[i + 1 : i + 2] == "^":
                out.append("[^")
                i += 2
                if pattern[i : i + 1] == "]":
                    out.append("]")
                    i += 1
                continue
            if pattern[i + 1 : i + 2] == "]":
                out.append("[]")
                i += 2
                continue
        elif char == "$":
            out.append(r"\Z")
            i += 1
            continue
        out.append(char)
        i += 1
    return "".join(out)


def _always_matches(pattern: str) -> bool:
    """An unanchored pattern that matches the empty string is found in every string."""
    if any(token in pattern for token in ("^", "$", "\\A", "\\Z", "\\z", "\\b", "\\B", "(?")):
        return False
    return re.fullmatch(pattern, "") is not None


def _string_checker(slow: _Slow, pattern: str | None, min_len: int, max_len: int | None) -> Checker:
    search: Callable[[str], re.Match[str] | None] | None = None
    if pattern is not None and not _always_matches(pattern):
        try:
            search = re.compile(_rust_compatible(pattern), re.ASCII).search
        except re.error as exc:
            raise _Unsupported(f"pattern {pattern!r}") from exc
    low = max(min_len, 1)
    high = 2**62 if max_len is None else max_len

    def check(value: Any) -> bool:
        if type(value) is not str:
            return False
        size = len(value)
        if size < low or size > high:
            return False
        if not value.isascii():
            return slow(value)
        return search is None or search(value) is not None

    return check


def _grouped_constraints(
    meta: GroupedMetadata,
) -> tuple[str | None, int, int | None, int | None, int | None]:
    """(pattern, min length, max length, lower bound, upper bound) of a grouped constraint."""
    pattern: str | None = None
    min_len = 0
    max_len: int | None = None
    low: int | None = None
    high: int | None = None
    for item in meta:
        if isinstance(item, MinLen):
            min_len = max(min_len, int(item.min_length))
        elif isinstance(item, MaxLen):
            max_len = int(item.max_length) if max_len is None else min(max_len, item.max_length)
        elif isinstance(item, Ge) and type(item.ge) is int:
            low = item.ge if low is None else max(low, item.ge)
        elif isinstance(item, Gt) and type(item.gt) is int:
            low = item.gt + 1 if low is None else max(low, item.gt + 1)
        elif isinstance(item, Le) and type(item.le) is int:
            high = item.le if high is None else min(high, item.le)
        elif isinstance(item, Lt) and type(item.lt) is int:
            high = item.lt - 1 if high is None else min(high, item.lt - 1)
        elif type(item).__name__ == "_PydanticGeneralMetadata" and set(vars(item)) == {"pattern"}:
            if pattern is not None or not isinstance(vars(item)["pattern"], str):
                raise _Unsupported("two patterns")
            pattern = vars(item)["pattern"]
        else:
            raise _Unsupported(f"constraint {item!r}")
    return pattern, min_len, max_len, low, high


def _make_checker(annotation: Any, slow: _Slow) -> Checker:
    """The checker of one primitive annotation (``bool`` or ``Annotated[base, *metadata]``)."""
    if annotation is bool:
        return _bool_check
    if typing.get_origin(annotation) is not typing.Annotated:
        raise _Unsupported(f"annotation {annotation!r}")
    base = annotation.__origin__
    metas = annotation.__metadata__
    if len(metas) == 2 and base is bytes:
        encoder, marker = metas
        if (
            isinstance(encoder, EncodedBytes)
            and encoder.encoder is Base64Encoder
            and type(marker) is fhir_core_types.Base64Binary
        ):
            return _base64_check
        raise _Unsupported(f"annotation {annotation!r}")
    if len(metas) != 1:
        raise _Unsupported(f"annotation {annotation!r}")
    meta = metas[0]
    kind = type(meta)
    if kind is fhir_core_types.Date and base is datetime.date:
        return _date_checker(kind.pattern)
    if kind is fhir_core_types.DateTime and base is datetime.datetime:
        return _datetime_checker(kind.pattern)
    if kind is fhir_core_types.Instant and base is datetime.datetime:
        return _instant_checker(kind.pattern)
    if kind is fhir_core_types.Time and base is datetime.time:
        return _time_checker(kind.pattern)
    if kind is fhir_core_types.Decimal and base is decimal.Decimal:
        return _decimal_checker(kind.pattern)
    if kind is fhir_core_types.Url:
        return _string_checker(slow, None, 1, None)
    if kind is fhir_core_types.Xhtml and base is str:
        return _string_checker(slow, None, 1, None)
    if isinstance(meta, GroupedMetadata) and not hasattr(kind, "__get_pydantic_core_schema__"):
        pattern, min_len, max_len, low, high = _grouped_constraints(meta)
        if base is str and low is None and high is None:
            return _string_checker(slow, pattern, min_len, max_len)
        if base is int and pattern is None and min_len == 0 and max_len is None:
            return _int_checker(low, high)
    raise _Unsupported(f"annotation {annotation!r}")


# Values every checker is tried on when it is built: one the checker accepts but the pydantic
# validator of the same annotation refuses makes the annotation unsupported.
_PROBES: Final[tuple[Any, ...]] = (
    *("", " ", "a", "a\n", "\na", "\x0b", "\x0c", "\t", "\r\n", "a b", "a  b", " a", "a "),
    *("abc$", "A.b-1", "x" * 300, "urn:oid:1.2.3", "urn:oid:1", "http://x.org/a b", "#", "|"),
    *("YQ==", "YQ=", "YWJj", "YW Jj", "===="),
    *("2020", "0000", "2020-13", "2020-00", "2020-02", "2020-02-29", "2021-02-29", "2020-04-31"),
    *("0001-01-01", "2020-1-1", "2020-02-03T10:00:00Z", "2020-02-03T10:00:00", "2020-02-03T10:00Z"),
    *("2020-02-03T24:00:00Z", "2020-02-03T10:00:60Z", "2020-02-03T10:00:00.123456789Z"),
    *("2020-02-03T10:00:00+14:00", "2020-02-03T10:00:00+14:01", "2021-02-29T10:00:00Z"),
    *("9999-12-31T23:59:59-13:59", "10:00:00", "23:59:60", "24:00:00", "10:00:00.5", "10:00"),
    *(0, -1, 1, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**64, 10**30),
    *(1.5, -0.0, 1e300, 1e-7, float("nan"), float("inf"), True, False, None, "1", "1.5", "true"),
)
_CHECKERS: dict[Any, Checker] = {}


def _primitive_checker(annotation: Any) -> Checker:
    """The checker of one primitive annotation, tried against the model's own validator."""
    try:
        found = _CHECKERS.get(annotation)
    except TypeError:
        found = None
    if found is not None:
        return found
    slow = _Slow(annotation)
    checker = _make_checker(annotation, slow)
    for probe in _PROBES:
        if checker(probe) and not slow(probe):
            raise _Unsupported(f"{annotation!r} would accept {probe!r}")
    with contextlib.suppress(TypeError):
        _CHECKERS[annotation] = checker
    return checker


# ---------------------------------------------------------------------------------------------
# Tables


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    """(annotation without ``| None``, whether None was allowed)."""
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin is typing.Union or (origin is not None and type(None) in args and len(args) > 1):
        rest = tuple(a for a in args if a is not type(None))
        if len(rest) == len(args):
            return annotation, False
        if len(rest) != 1:
            raise _Unsupported(f"union {annotation!r}")
        return rest[0], True
    return annotation, False


def _model_of(annotation: Any) -> type[FHIRAbstractModel] | None:
    """The model class behind a ``fhirtypes.XxxType`` annotation, or None for a primitive."""
    if isinstance(annotation, type) and issubclass(annotation, fhir_core_types.FhirBase):
        model = annotation.get_model_klass()
        if not (isinstance(model, type) and issubclass(model, FHIRAbstractModel)):
            raise _Unsupported(f"model {model!r}")
        return model
    return None


def _defined_in(cls: type, name: str) -> type | None:
    """The class of ``cls``'s MRO that defines attribute ``name``."""
    for klass in cls.__mro__:
        if name in vars(klass):
            return klass
    return None


class _Builder:
    """Builds the tables of a class and of every class reachable from it (under the lock)."""

    def __init__(self, cache: dict[type[FHIRAbstractModel], _Table]) -> None:
        self.cache = cache
        self.pending: list[tuple[type[FHIRAbstractModel], _Table]] = []

    def table(self, model: type[FHIRAbstractModel]) -> _Table:
        found = self.cache.get(model)
        if found is None:
            found = _Table(model.__name__)
            self.cache[model] = found
            self.pending.append((model, found))
        return found

    def run(self, model: type[FHIRAbstractModel]) -> _Table:
        root = self.table(model)
        while self.pending:
            cls, table = self.pending.pop()
            try:
                self.fill(cls, table)
            except _Unsupported:
                table.fields = {}
                table.required = ()
                table.required_bits = 0
        return root

    def fill(self, cls: type[FHIRAbstractModel], table: _Table) -> None:
        self.check_model(cls)
        fields: dict[str, FieldSpec] = {}
        required: set[str] = set()
        ext_keys: dict[str, str] = {}
        key_of: dict[str, str] = {}
        for name, info in cls.model_fields.items():
            if name in _IGNORED_FIELDS:
                continue
            key = info.alias or name
            if info.validation_alias not in (None, key):
                raise _Unsupported(f"{cls.__name__}.{name} validation alias")
            key_of[name] = key
            if key.startswith("_"):
                ext_keys[key[1:]] = key
        groups: dict[str, list[str]] = {}
        group_required: dict[str, bool] = {}
        for name, info in cls.model_fields.items():
            if name in _IGNORED_FIELDS:
                continue
            key = key_of[name]
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            if info.is_required() or extra.get("element_required") is True:
                required.add(key)
            prefix = extra.get("one_of_many")
            if isinstance(prefix, str):
                groups.setdefault(prefix, []).append(key)
                if extra.get("one_of_many_required") is True:
                    group_required[prefix] = True
            if info.metadata or info.discriminator is not None:
                fields[key] = (_UNSUPPORTED, None, None, 0)
            else:
                fields[key] = self.spec(cls, name, key, info.annotation, ext_keys)
        instance = cls.model_construct()
        alias_of = cls.get_alias_mapping()
        for element, _ext in instance.get_required_fields():
            field_name = alias_of.get(element, element)
            if field_name not in key_of:
                raise _Unsupported(f"{cls.__name__} requires unknown {element}")
            required.add(key_of[field_name])
        for prefix, names in instance.get_one_of_many_fields().items():
            keys = []
            for field_name in names:
                if field_name not in key_of:
                    raise _Unsupported(f"{cls.__name__} choice of unknown {field_name}")
                keys.append(key_of[field_name])
            group = groups.setdefault(prefix, [])
            group.extend(k for k in keys if k not in group)
            first = cls.model_fields[names[0]].json_schema_extra
            if isinstance(first, dict) and first.get("one_of_many_required") is True:
                group_required[prefix] = True
        required_bits = 0
        for number, (prefix, keys) in enumerate(sorted(groups.items())):
            bit = 1 << number
            for key in keys:
                kind, arg, other, old = fields[key]
                if kind in (_PRIM_LIST, _COMPLEX_LIST, _RESOURCE_LIST, _EXT_LIST):
                    raise _Unsupported(f"{cls.__name__}.{key}: a repeating choice")
                if old:
                    raise _Unsupported(f"{cls.__name__}.{key} is in two choices")
                fields[key] = (kind, arg, other, bit)
            if group_required.get(prefix):
                required_bits |= bit
        if cls.has_resource_base() and "resourceType" not in fields:
            fields["resourceType"] = (_RESTYPE, cls.get_resource_type(), None, 0)
            required.add("resourceType")
        table.required = tuple(sorted(required))
        table.required_bits = required_bits
        table.fields = fields

    @staticmethod
    def check_model(cls: type[FHIRAbstractModel]) -> None:
        decorators = cls.__pydantic_decorators__
        names = set(decorators.model_validators)
        if not names <= _KNOWN_MODEL_VALIDATORS:
            raise _Unsupported(f"{cls.__name__} validators {names - _KNOWN_MODEL_VALIDATORS}")
        # FHIRPrimitiveExtension: id, extension or fhir_comments must be given. An object the
        # walker accepts is never empty, and its keys can only be id or extension.
        if "validate_extension_or_fhir_comment_required" in names and (
            set(cls.model_fields) - _IGNORED_FIELDS != {"id", "extension"}
        ):
            raise _Unsupported(f"{cls.__name__} primitive extension fields")
        if decorators.field_validators or decorators.validators or decorators.root_validators:
            raise _Unsupported(f"{cls.__name__} field validators")
        for method in _BASE_METHODS:
            if _defined_in(cls, method) is not _defined_in(FHIRAbstractModel, method):
                raise _Unsupported(f"{cls.__name__} overrides {method}")
        if not set(cls.model_config) <= _HARMLESS_CONFIG:
            raise _Unsupported(f"{cls.__name__} config {set(cls.model_config)}")

    def spec(
        self,
        cls: type[FHIRAbstractModel],
        name: str,
        key: str,
        annotation: Any,
        ext_keys: dict[str, str],
    ) -> FieldSpec:
        try:
            inner, _ = _strip_optional(annotation)
            is_list = typing.get_origin(inner) is list
            item_optional = False
            if is_list:
                (item,) = typing.get_args(inner)
                item, item_optional = _strip_optional(item)
            else:
                item = inner
            if isinstance(item, type) and issubclass(
                item, fhir_core_types.FhirElementOrResourceBase
            ):
                base = item.get_model_klass()
                if base.__name__ != "Resource" or not isinstance(item._prefix, str):
                    raise _Unsupported(f"{cls.__name__}.{name}: {base.__name__}-typed")
                return (_RESOURCE_LIST if is_list else _RESOURCE, item._prefix, None, 0)
            model = _model_of(item)
            if model is not None:
                sub = self.table(model)
                if not is_list:
                    return (_COMPLEX, sub, None, 0)
                if key.startswith("_") and item_optional:
                    return (_EXT_LIST, sub, key[1:], 0)
                return (_COMPLEX_LIST, sub, None, 0)
            checker = _primitive_checker(item)
            if not is_list:
                return (_PRIM, checker, None, 0)
            ext_key = ext_keys.get(key) if item_optional else None
            return (_PRIM_LIST, checker, ext_key, 0)
        except _Unsupported:
            return (_UNSUPPORTED, None, None, 0)


_LOCK = threading.RLock()
_CLASS_TABLES: dict[type[FHIRAbstractModel], _Table] = {}
# Published tables: complete, with every table reachable from them complete.
_ROOTS: dict[type[FHIRAbstractModel], _Table] = {}
_BY_TYPE: dict[str, _Table] = {}
_BY_PREFIXED_TYPE: dict[str, _Table] = {}


def _root_table(model: type[FHIRAbstractModel]) -> _Table:
    table = _ROOTS.get(model)
    if table is None:
        with _LOCK:
            table = _ROOTS.get(model)
            if table is None:
                table = _Builder(_CLASS_TABLES).run(model)
                _ROOTS[model] = table
    return table


def _is_resource_model(model: Any, res_type: str) -> bool:
    return (
        isinstance(model, type)
        and issubclass(model, FHIRAbstractModel)
        and model.has_resource_base()
        and model.get_resource_type() == res_type
    )


def _type_table(res_type: str) -> _Table | None:
    """The table of a top-level resource type, as ``get_fhir_model_class`` resolves it."""
    table = _BY_TYPE.get(res_type)
    if table is None:
        try:
            model = get_fhir_model_class(res_type)
        except (ValueError, ImportError, AttributeError):
            return None
        if not _is_resource_model(model, res_type):
            return None
        table = _root_table(model)
        _BY_TYPE[res_type] = table
    return table


def _contained_table(prefix: str, res_type: Any) -> _Table | None:
    """The table of a resource in a Resource-typed field, resolved as fhir_core resolves it."""
    if type(res_type) is not str:
        return None
    key = prefix + res_type + "Type"
    table = _BY_PREFIXED_TYPE.get(key)
    if table is None:
        path = FHIR_TYPES_MAPS.get(key)
        if path is None:
            return None
        try:
            model = import_string(path)
        except (ImportError, ValueError, AttributeError):
            return None
        if not _is_resource_model(model, res_type):
            return None
        table = _root_table(model)
        _BY_PREFIXED_TYPE[key] = table
    return table


# ---------------------------------------------------------------------------------------------
# The walker


def _aligned(values: Any, index: int) -> bool:
    """``values`` (the other array of a primitive/extension pair) has an entry at ``index``."""
    return type(values) is list and index < len(values) and values[index] is not None


def _check(obj: Any, table: _Table, depth: int) -> bool:
    if type(obj) is not dict or not obj or depth > _MAX_DEPTH:
        return False
    fields = table.fields
    seen = 0
    for key, value in obj.items():
        spec = fields.get(key)
        if spec is None:
            return False
        kind, arg, other, bit = spec
        if kind == _PRIM:
            if not arg(value):
                return False
        elif kind == _COMPLEX:
            if not _check(value, arg, depth + 1):
                return False
        elif kind == _COMPLEX_LIST:
            if type(value) is not list or not value:
                return False
            for item in value:
                if not _check(item, arg, depth + 1):
                    return False
        elif kind == _PRIM_LIST:
            if type(value) is not list or not value:
                return False
            for index, item in enumerate(value):
                if not arg(item):
                    if item is not None or other is None:
                        return False
                    extensions: Any = obj.get(other)
                    if not _aligned(extensions, index) or len(extensions) != len(value):
                        return False
        elif kind == _EXT_LIST:
            if type(value) is not list or not value:
                return False
            values = obj.get(other)
            if values is not None and (type(values) is not list or len(values) != len(value)):
                return False
            for index, item in enumerate(value):
                if item is None:
                    if not _aligned(values, index):
                        return False
                elif not _check(item, arg, depth + 1):
                    return False
        elif kind == _RESTYPE:
            if type(value) is not str or value != arg:
                return False
        elif kind == _RESOURCE:
            if type(value) is not dict:
                return False
            sub = _contained_table(arg, value.get("resourceType"))
            if sub is None or not _check(value, sub, depth + 1):
                return False
        elif kind == _RESOURCE_LIST:
            if type(value) is not list or not value:
                return False
            for item in value:
                if type(item) is not dict:
                    return False
                sub = _contained_table(arg, item.get("resourceType"))
                if sub is None or not _check(item, sub, depth + 1):
                    return False
        else:
            return False
        if bit:
            if seen & bit:
                return False
            seen |= bit
    for key in table.required:
        if key not in obj:
            return False
    required_bits = table.required_bits
    return not required_bits or seen & required_bits == required_bits


def fast_check(data: Any) -> bool:
    """True when ``data`` is certainly a valid resource for ``fhir.resources`` (R4B models).

    False means "not sure": run the full validation for the verdict and the messages.
    """
    if type(data) is not dict:
        return False
    res_type = data.get("resourceType")
    if type(res_type) is not str or not res_type:
        return False
    try:
        table = _type_table(res_type)
        return table is not None and _check(data, table, 1)
    except Exception:
        # Never in the way of the full validation: a surprise here only means "not sure".
        return False


def warm(types: typing.Iterable[str]) -> None:
    """Build the tables of these resource types ahead of the first request."""
    for res_type in types:
        # A type whose tables cannot be built only means its resources take the full path.
        with contextlib.suppress(Exception):
            _type_table(res_type)
