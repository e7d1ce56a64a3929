"""Validation at the edge: JSON parsing with limits, and R4 structure checks by fhir.resources.

Every resource that enters the store from outside passes :func:`validate_resource` exactly once.
A fast structural check derived from the same models (:mod:`carecoord.fhir.fastvalidate`) accepts
what is certainly valid; everything else goes through the full ``fhir.resources`` validation,
which gives the verdict and the messages.
"""

from __future__ import annotations

from typing import Any

import orjson
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from carecoord.fhir.errors import InvalidRequest, Issue, UnknownType
from carecoord.fhir.fastvalidate import fast_check, warm
from carecoord.fhir.types import RESOURCE_TYPES

__all__ = ["check_type", "parse_json", "validate_resource", "warm_models"]

_FIELD_ALIASES = {"resource_type": "resourceType", "class_fhir": "class"}


def check_type(res_type: str) -> str:
    """The type from a URL: 404 when the server does not know it."""
    if res_type not in RESOURCE_TYPES:
        raise UnknownType(f"Unknown resource type {res_type!r}")
    return res_type


def _depth_exceeds(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values() if isinstance(v, dict | list))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node if isinstance(v, dict | list))
    return False


def parse_json(body: bytes, *, max_depth: int = 64) -> Any:
    """Parse a request body; malformed or too deeply nested JSON is a 400."""
    if not body.strip():
        raise InvalidRequest("The request body is empty; a FHIR JSON resource is expected")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"Malformed JSON: {exc}", [Issue(f"Malformed JSON: {exc}", "structure")]
        ) from exc
    # Nesting needs a bracket per level: a body with few brackets (counted in C, an upper bound,
    # since brackets inside strings count too) cannot nest too deep, and is not walked.
    if body.count(b"{") + body.count(b"[") > max_depth and _depth_exceeds(data, max_depth):
        message = f"JSON nests deeper than {max_depth} levels"
        raise InvalidRequest(message, [Issue(message, "structure")])
    return data


def _expression(res_type: str, loc: tuple[int | str, ...]) -> str:
    parts: list[str] = [res_type]
    for item in loc:
        if isinstance(item, int):
            parts[-1] += f"[{item}]"
        elif item != "root":
            parts.append(_FIELD_ALIASES.get(item, item))
    return ".".join(parts)


def validate_resource(data: Any, *, expected_type: str | None = None) -> tuple[str, dict[str, Any]]:
    """Check that ``data`` is a valid R4 resource (of ``expected_type``); return (type, data).

    Raises InvalidRequest (400) naming every invalid element as a FHIRPath expression.
    """
    if not isinstance(data, dict):
        raise InvalidRequest("A FHIR resource must be a JSON object")
    res_type = data.get("resourceType")
    if not isinstance(res_type, str) or not res_type:
        raise InvalidRequest(
            "The resource has no resourceType",
            [Issue("The resource has no resourceType", "required", expression=("resourceType",))],
        )
    if res_type not in RESOURCE_TYPES:
        raise InvalidRequest(
            f"Unknown resourceType {res_type!r}",
            [
                Issue(
                    f"Unknown resourceType {res_type!r}",
                    "not-supported",
                    expression=("resourceType",),
                )
            ],
        )
    if expected_type is not None and res_type != expected_type:
        message = f"resourceType {res_type!r} does not match the URL's type {expected_type!r}"
        raise InvalidRequest(message, [Issue(message, expression=("resourceType",))])
    if fast_check(data):
        return res_type, data
    model = get_fhir_model_class(res_type)
    try:
        model.model_validate(data)
    except LookupError as exc:
        # fhir.resources raises KeyError for a nested resource of an unknown type.
        message = f"Invalid {res_type}: a contained or nested resource has an unknown resourceType"
        raise InvalidRequest(message, [Issue(message, "structure")]) from exc
    except ValidationError as exc:
        issues = []
        for err in exc.errors(include_url=False):
            where = _expression(res_type, tuple(err["loc"]))
            msg = err["msg"].split("\n")[0].strip()
            if err["type"] == "extra_forbidden":
                msg = "Unknown element"
            issues.append(
                Issue(
                    f"{where}: {msg}",
                    "structure" if err["type"] == "extra_forbidden" else "value",
                    expression=(where,),
                )
            )
        summary = f"Invalid {res_type}: " + "; ".join(i.diagnostics for i in issues[:5])
        raise InvalidRequest(summary, issues) from exc
    return res_type, data


def warm_models(types: tuple[str, ...]) -> None:
    """Import model classes and build their fast-check tables ahead of the first request.

    Each costs tens of ms the first time.
    """
    for res_type in types:
        get_fhir_model_class(res_type)
    warm(types)
