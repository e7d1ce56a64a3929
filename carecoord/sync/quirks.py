"""Vendor quirks of FHIR searches, taken from the connection's vendor profile in ``integrations/``.

A vendor profile (:func:`carecoord.smart.vendors.profile_for`) may define
``sync_quirks(connection) -> SyncQuirks``; profiles that do not get the defaults, which follow the
FHIR specification. Sync code asks this module and never tests a vendor name itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from carecoord.smart.connections import EhrConnection
from carecoord.smart.vendors import profile_for

__all__ = ["SyncQuirks", "quirks_for"]


@dataclass(frozen=True, slots=True)
class SyncQuirks:
    """What a vendor needs differently when CareCoord searches it.

    - ``max_page_size``: the largest ``_count`` the server honours (None: any).
    - ``no_last_updated``: types whose search does not take ``_lastUpdated``; they are fetched
      whole each time and de-duplicated on versionId.
    - ``extra_params``: parameters some types must carry (e.g. a required ``category``).
    - ``accept``: the Accept header of FHIR requests.
    """

    max_page_size: int | None = None
    no_last_updated: frozenset[str] = frozenset()
    extra_params: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    accept: str = "application/fhir+json"

    def page_size(self, wanted: int) -> int:
        return min(wanted, self.max_page_size) if self.max_page_size else wanted

    def params(self, res_type: str, params: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """``params`` with the type's required extras added and ``_lastUpdated`` dropped where
        the server does not take it."""
        if res_type in self.no_last_updated:
            params = [(k, v) for k, v in params if k != "_lastUpdated"]
        have = {k for k, _ in params}
        return params + [(k, v) for k, v in self.extra_params.get(res_type, ()) if k not in have]


@runtime_checkable
class _HasSyncQuirks(Protocol):
    def sync_quirks(self, connection: EhrConnection) -> SyncQuirks: ...


def quirks_for(connection: EhrConnection) -> SyncQuirks:
    """The quirks of the connection's vendor (defaults when its profile defines none)."""
    profile = profile_for(connection.vendor)
    if isinstance(profile, _HasSyncQuirks):
        return profile.sync_quirks(connection)
    return SyncQuirks()
