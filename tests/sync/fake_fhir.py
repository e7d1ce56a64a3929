"""An in-memory FHIR server for sync tests: SMART discovery, a token endpoint that accepts any
client assertion, read, and search with ``_id``, ``patient``, ``category``, ``_lastUpdated``
(``gt``/``ge``), ``_count`` and offset paging. Every write stamps ``versionId`` and
``lastUpdated`` from the server's own clock, which tests move; the ``Date`` header follows it.

``FakeFhir.handle(httpx.Request) -> httpx.Response`` serves respx routes. Knobs: ``failures``
(answers or exceptions returned instead of the next requests), ``foreign_next`` (paging links to
another host), ``unauthorized`` (the next N FHIR requests answer 401).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import orjson

#: The search parameter that ties each patient type to its patient.
PATIENT_PARAMS: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "Encounter": lambda r: [r.get("subject", {}).get("reference", "")],
    "Condition": lambda r: [r.get("subject", {}).get("reference", "")],
    "Observation": lambda r: [r.get("subject", {}).get("reference", "")],
    "Procedure": lambda r: [r.get("subject", {}).get("reference", "")],
    "Coverage": lambda r: [r.get("beneficiary", {}).get("reference", "")],
    "Appointment": lambda r: [
        p.get("actor", {}).get("reference", "") for p in r.get("participant", [])
    ],
    "RelatedPerson": lambda r: [r.get("patient", {}).get("reference", "")],
}


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass
class Logged:
    method: str
    path: str
    params: list[tuple[str, str]]


@dataclass
class FakeFhir:
    """The EHR at ``base`` (its FHIR base is ``{base}/fhir``)."""

    base: str = "https://ehr.example.org"
    now: datetime = field(default_factory=lambda: datetime(2030, 1, 1, 12, 0, tzinfo=UTC))
    resources: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    requests: list[Logged] = field(default_factory=list)
    failures: list[httpx.Response | Exception] = field(default_factory=list)
    foreign_next: bool = False
    unauthorized: int = 0
    tokens_issued: int = 0
    max_count: int = 1000

    @property
    def fhir_base(self) -> str:
        return f"{self.base}/fhir"

    @property
    def token_url(self) -> str:
        return f"{self.base}/token"

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    # -- data ------------------------------------------------------------------------------------

    def put(self, resource: dict[str, Any]) -> dict[str, Any]:
        """Create or update (new versionId, lastUpdated = now); the stored copy."""
        key = (resource["resourceType"], resource["id"])
        old = self.resources.get(key)
        version = int(old["meta"]["versionId"]) + 1 if old else 1
        stored = copy.deepcopy(resource)
        stored["meta"] = {
            **(resource.get("meta") or {}),
            "versionId": str(version),
            "lastUpdated": _instant(self.now),
        }
        self.resources[key] = stored
        return stored

    def searches(self, res_type: str | None = None) -> list[Logged]:
        return [
            r
            for r in self.requests
            if r.method == "GET"
            and r.path.count("/") == 2
            and (res_type is None or r.path.endswith(f"/{res_type}"))
        ]

    # -- HTTP ------------------------------------------------------------------------------------

    def _json(
        self, status: int, body: Any, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return httpx.Response(
            status,
            content=orjson.dumps(body),
            headers={
                "Content-Type": "application/fhir+json",
                "Date": format_datetime(self.now, usegmt=True),
                **(headers or {}),
            },
        )

    def handle(self, request: httpx.Request) -> httpx.Response:
        url = urlsplit(str(request.url))
        params = parse_qsl(url.query, keep_blank_values=True)
        self.requests.append(Logged(request.method, url.path, params))
        if url.path == "/fhir/.well-known/smart-configuration":
            return self._json(
                200,
                {
                    "issuer": self.base,
                    "token_endpoint": self.token_url,
                    "capabilities": ["permission-v2", "client-confidential-asymmetric"],
                    "token_endpoint_auth_signing_alg_values_supported": ["ES384", "RS384"],
                },
            )
        if url.path == "/token":
            self.tokens_issued += 1
            return self._json(
                200,
                {"access_token": f"token-{self.tokens_issued}", "token_type": "Bearer",
                 "expires_in": 3600},
            )  # fmt: skip
        if self.failures:
            failure = self.failures.pop(0)
            if isinstance(failure, Exception):
                raise failure
            return failure
        if self.unauthorized:
            self.unauthorized -= 1
            return self._json(401, {"resourceType": "OperationOutcome"})
        parts = [p for p in url.path.split("/") if p][1:]  # after "fhir"
        if len(parts) == 2:
            found = self.resources.get((parts[0], parts[1]))
            if found is None:
                return self._json(404, {"resourceType": "OperationOutcome"})
            return self._json(200, found)
        if len(parts) == 1:
            return self._search(parts[0], params)
        return self._json(404, {"resourceType": "OperationOutcome"})

    def _matches(self, resource: dict[str, Any], name: str, value: str) -> bool:
        values = value.split(",")
        if name == "_id":
            return resource["id"] in values
        if name == "patient":
            refs = PATIENT_PARAMS[resource["resourceType"]](resource)
            wanted = {v if "/" in v else f"Patient/{v}" for v in values}
            return any(r in wanted for r in refs)
        if name == "category":
            codes = {
                c.get("code") for cat in resource.get("category", []) for c in cat.get("coding", [])
            }
            return bool(codes & set(values))
        if name == "_lastUpdated":
            updated = _parse(resource["meta"]["lastUpdated"])
            prefix, moment = value[:2], _parse(value[2:])
            if prefix == "gt":
                return updated > moment
            if prefix == "ge":
                return updated >= moment
            raise AssertionError(f"unsupported _lastUpdated prefix {prefix}")
        raise AssertionError(f"unsupported search parameter {name}")

    def _search(self, res_type: str, params: list[tuple[str, str]]) -> httpx.Response:
        count = self.max_count
        offset = 0
        filters = []
        for name, value in params:
            if name == "_count":
                count = min(int(value), self.max_count)
            elif name == "_offset":
                offset = int(value)
            else:
                filters.append((name, value))
        matches = [
            r
            for (t, _), r in sorted(self.resources.items())
            if t == res_type and all(self._matches(r, n, v) for n, v in filters)
        ]
        page = matches[offset : offset + count]
        links = [{"relation": "self", "url": f"{self.fhir_base}/{res_type}"}]
        if offset + count < len(matches):
            host = "https://elsewhere.example.net/fhir" if self.foreign_next else self.fhir_base
            query = urlencode([*params_without(params, "_offset"), ("_offset", offset + count)])
            links.append({"relation": "next", "url": f"{host}/{res_type}?{query}"})
        bundle = {
            "resourceType": "Bundle",
            "type": "searchset",
            "link": links,
            "entry": [
                {"fullUrl": f"{self.fhir_base}/{res_type}/{r['id']}", "resource": r} for r in page
            ],
        }
        return self._json(200, bundle)


def params_without(params: list[tuple[str, str]], name: str) -> list[tuple[str, str]]:
    return [(k, v) for k, v in params if k != name]
