"""Reading FHIR resources for a screen through the store with the caller's access policy, keeping
what was read so that the page's access is audited once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from carecoord.fhir.access import AccessPolicy
from carecoord.fhir.errors import Forbidden, NotFound
from carecoord.fhir.store import FhirStore

__all__ = ["ScreenReader"]

Row = tuple[str, str, bytes | None]


class ScreenReader:
    """Searches and reads of one screen (synchronous: run it in a worker thread)."""

    def __init__(self, store: FhirStore, policy: AccessPolicy | None) -> None:
        self.store = store
        self.policy = policy
        self.rows: list[Row] = []
        self.denied: set[str] = set()

    def search(
        self, res_type: str, params: Sequence[tuple[str, str]], *, limit: int = 5000
    ) -> list[dict[str, Any]]:
        """Every match (pages followed up to ``limit``); [] when the policy refuses the type."""
        out: list[dict[str, Any]] = []
        cursor: str | None = None
        page_size = str(min(limit, 1000))
        while len(out) < limit:
            query = [*params, ("_count", page_size)]
            if cursor:
                query.append(("_cursor", cursor))
            try:
                page = self.store.search(self.store.parse(res_type, query, policy=self.policy))
            except Forbidden:
                self.denied.add(res_type)
                return out
            for kind, rid, content in page.matches:
                self.rows.append((kind, rid, content))
                out.append(orjson.loads(content))
            cursor = page.next_cursor
            if not cursor:
                break
        return out[:limit]

    def read(self, res_type: str, res_id: str) -> dict[str, Any] | None:
        """The resource, or None when it does not exist or is outside the policy."""
        try:
            stored = self.store.read(res_type, res_id, policy=self.policy)
        except NotFound:
            return None
        except Forbidden:
            self.denied.add(res_type)
            return None
        content = stored.content
        if content is None:
            return None
        self.rows.append((res_type, res_id, content))
        body: dict[str, Any] = orjson.loads(content)
        return body

    def read_reference(self, reference: str | None) -> dict[str, Any] | None:
        """The resource behind a relative ``Type/id`` reference."""
        if not reference or reference.count("/") != 1:
            return None
        res_type, res_id = reference.split("/")
        return self.read(res_type, res_id)
