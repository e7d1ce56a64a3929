"""The CapabilityStatement: generated from what the server really supports, built once."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from carecoord import __version__
from carecoord.fhir.searchparams import SearchRegistry
from carecoord.fhir.types import RESOURCE_TYPES

__all__ = ["capability_statement"]

_SPEC = "http://hl7.org/fhir/SearchParameter"
_COMMON_PARAMS = (
    ("_id", "token", "Logical id of this resource", f"{_SPEC}/Resource-id"),
    (
        "_lastUpdated",
        "date",
        "When the resource version last changed",
        f"{_SPEC}/Resource-lastUpdated",
    ),
)
_INTERACTIONS = (
    "read",
    "vread",
    "update",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
)


def _resource_entry(res_type: str, registry: SearchRegistry) -> dict[str, Any]:
    params = registry.for_type(res_type)
    search_params: list[dict[str, Any]] = [
        {"name": name, "definition": url, "type": kind, "documentation": doc}
        for name, kind, doc, url in _COMMON_PARAMS
    ]
    for p in sorted(params, key=lambda p: p.code):
        entry: dict[str, Any] = {"name": p.code, "type": p.type}
        if not p.code.startswith("_"):
            entry["definition"] = f"{_SPEC}/{p.base}-{p.code}"
        if p.description:
            entry["documentation"] = p.description
        search_params.append(entry)
    reference_params = sorted(p.code for p in params if p.type == "reference")
    return {
        "type": res_type,
        "interaction": [{"code": code} for code in _INTERACTIONS],
        "versioning": "versioned-update",
        "readHistory": True,
        "updateCreate": True,
        "conditionalCreate": True,
        "conditionalRead": "not-supported",
        "conditionalUpdate": True,
        "conditionalDelete": "not-supported",
        "referencePolicy": ["literal", "local"],
        "searchInclude": ["*", *(f"{res_type}:{code}" for code in reference_params)],
        "searchRevInclude": [],
        "searchParam": search_params,
    }


def capability_statement(
    registry: SearchRegistry, base_url: str | None, token_url: str | None = None
) -> bytes:
    """The server's CapabilityStatement as JSON bytes."""
    rest_resources = [_resource_entry(t, registry) for t in sorted(RESOURCE_TYPES)]
    revincludes = sorted(
        f"{p.base}:{p.code}"
        for t in sorted(RESOURCE_TYPES)
        for p in registry.for_type(t)
        if p.type == "reference"
    )
    for entry in rest_resources:
        entry["searchRevInclude"] = [
            r for r in revincludes if _targets_type(registry, r, entry["type"])
        ]
    statement: dict[str, Any] = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": datetime.now(UTC).date().isoformat(),
        "publisher": "CareCoord",
        "kind": "instance",
        "software": {"name": "CareCoord", "version": __version__},
        "implementation": {"description": "CareCoord FHIR R4 API"},
        "fhirVersion": "4.0.1",
        "format": ["json", "application/fhir+json"],
        "rest": [
            {
                "mode": "server",
                "resource": rest_resources,
                "interaction": [
                    {"code": "transaction"},
                    {"code": "batch"},
                    {"code": "history-system"},
                ],
                "searchParam": [
                    {"name": name, "definition": url, "type": kind, "documentation": doc}
                    for name, kind, doc, url in _COMMON_PARAMS
                ],
            }
        ],
    }
    security: dict[str, Any] = {
        "cors": False,
        "service": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "SMART-on-FHIR",
                    }
                ]
            }
        ],
        "description": "SMART backend services (client_credentials with private_key_jwt) or a "
        "session from a SMART launch; discovery at .well-known/smart-configuration.",
    }
    if token_url:
        security["extension"] = [
            {
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": [{"url": "token", "valueUri": token_url}],
            }
        ]
    statement["rest"][0]["security"] = security
    if base_url:
        statement["implementation"]["url"] = base_url
    return orjson.dumps(statement)


def _targets_type(registry: SearchRegistry, revinclude: str, res_type: str) -> bool:
    base, code = revinclude.split(":")
    param = registry.get(base, code)
    return param is not None and (param.targets is None or res_type in param.targets)
