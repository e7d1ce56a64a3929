"""Auditing of the FHIR REST API: which events a request writes, and when."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from carecoord.audit.events import audit_event, audit_index, patients_in
from carecoord.audit.journal import AuditJournal, JournalError
from carecoord.fhir.access import PATIENT_COMPARTMENT, AccessPolicy, Agent
from carecoord.fhir.errors import Unavailable
from carecoord.fhir.store import StoredResource, Writer

__all__ = ["ANONYMOUS", "RestAudit"]

#: The agent recorded when authentication is switched off (local experiments only).
ANONYMOUS = Agent("system", "anonymous")

Row = tuple[str, str, bytes | None]


def _is_patient_data(res_type: str, patients: set[str]) -> bool:
    return res_type != "AuditEvent" and (bool(patients) or res_type in PATIENT_COMPARTMENT)


def _unaudited() -> Unavailable:
    return Unavailable("The access could not be audited, so it was not served; try again later")


class RestAudit:
    """Builds and writes the AuditEvents of REST interactions on patient data.

    Changes are audited inside their own transaction. Reads, searches and refusals go to the
    audit journal (:mod:`carecoord.audit.journal`) before they are answered.
    """

    def __init__(self, journal: AuditJournal) -> None:
        self.journal = journal

    def _record(self, event: dict[str, Any]) -> None:
        try:
            self.journal.append([event])
        except JournalError as exc:
            raise _unaudited() from exc

    @staticmethod
    def _now() -> str:
        """Now as a FHIR instant, as :func:`format_instant` writes it (UTC, microseconds)."""
        return datetime.now(UTC).isoformat(timespec="microseconds")[:-6] + "Z"

    def _event(
        self,
        policy: AccessPolicy | None,
        request_id: str | None,
        interaction: str,
        rows: Iterable[Row],
        *,
        query: str | None = None,
        outcome: str = "0",
        outcome_desc: str | None = None,
        always: bool = False,
    ) -> dict[str, Any] | None:
        patients: set[str] = set()
        targets: list[str] = []
        patient_data = always
        for res_type, res_id, content in rows:
            found = patients_in(res_type, res_id, content)
            patients |= found
            if _is_patient_data(res_type, found):
                patient_data = True
                targets.append(f"{res_type}/{res_id}")
        if not patient_data:
            return None
        return audit_event(
            interaction=interaction,
            agent=policy.agent if policy is not None else ANONYMOUS,
            recorded=self._now(),
            request_id=request_id,
            patients=patients,
            targets=targets[:50],
            query=query,
            outcome=outcome,
            outcome_desc=outcome_desc,
        )

    def on_write(
        self,
        w: Writer,
        policy: AccessPolicy | None,
        request_id: str | None,
        interaction: str,
        stored: StoredResource | None,
        *,
        target: tuple[str, str] | None = None,
    ) -> None:
        """Audit a change inside its own transaction (it fails together with the change)."""
        if stored is not None:
            rows: list[Row] = [(stored.res_type, stored.res_id, stored.content)]
        elif target is not None:
            rows = [(target[0], target[1], None)]
        else:
            return
        event = self._event(policy, request_id, interaction, rows)
        if event is not None:
            w.audit(event, audit_index(event))

    async def on_read(
        self,
        policy: AccessPolicy | None,
        request_id: str | None,
        interaction: str,
        rows: Iterable[Row],
        *,
        query: str | None = None,
        always: bool = False,
    ) -> None:
        """Audit a read or search before it is answered (raises if it cannot be)."""
        event = self._event(policy, request_id, interaction, rows, query=query, always=always)
        if event is not None:
            self._record(event)

    def on_read_sync(
        self,
        policy: AccessPolicy | None,
        request_id: str | None,
        interaction: str,
        rows: Iterable[Row],
        *,
        query: str | None = None,
        always: bool = False,
    ) -> None:
        event = self._event(policy, request_id, interaction, rows, query=query, always=always)
        if event is not None:
            self._record(event)

    async def on_denied(
        self,
        policy: AccessPolicy | None,
        request_id: str | None,
        interaction: str,
        target: str,
        reason: str,
    ) -> None:
        """Audit a refused or failed access to patient data (outcome 4: minor failure)."""
        res_type = target.split("/", 1)[0].split("?", 1)[0]
        if res_type == "AuditEvent" or (
            res_type not in PATIENT_COMPARTMENT and res_type != "Patient"
        ):
            return
        event = audit_event(
            interaction=interaction,
            agent=policy.agent if policy is not None else ANONYMOUS,
            recorded=self._now(),
            request_id=request_id,
            targets=[target] if "/" in target else [],
            outcome="4",
            outcome_desc=reason,
        )
        self._record(event)
