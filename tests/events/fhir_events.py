"""FHIR events for the tests: EHR resources, subscription notifications, Da Vinci messages."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from sqlalchemy import Engine, func, select

from carecoord.events import AUTOMATION_ENCOUNTER
from carecoord.events.davinci import EVENT_SYSTEM
from carecoord.fhir.tables import resources
from carecoord.jobs.tables import jobs

EHR = "https://ehr.example.org/fhir"
SUBSCRIPTION = f"{EHR}/Subscription/admission"
TOPIC = "http://hl7.org/SubscriptionTopic/admission"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


def patient(pid: str = "pat-1", family: str = "Nguyen") -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": pid,
        "identifier": [{"system": "urn:oid:1.2.3.4", "value": f"MRN-{pid}"}],
        "name": [{"family": family, "given": ["Lan"]}],
        "birthDate": "1950-03-04",
    }


def encounter(
    eid: str = "enc-1",
    pid: str = "pat-1",
    *,
    status: str = "in-progress",
    end: str | None = None,
    ward: str = "4N",
    cls: str = "IMP",
    subject: str | None = None,
) -> dict[str, Any]:
    period: dict[str, str] = {"start": "2025-07-01T08:00:00Z"}
    if end:
        period["end"] = end
    return {
        "resourceType": "Encounter",
        "id": eid,
        "status": status,
        "class": {"system": ACT_CODE, "code": cls},
        "subject": {"reference": subject or f"Patient/{pid}"},
        "period": period,
        "location": [{"location": {"display": ward}, "status": "active"}],
    }


def discharged(eid: str = "enc-1", pid: str = "pat-1", **kw: Any) -> dict[str, Any]:
    return encounter(eid, pid, status="finished", end="2025-07-03T15:00:00Z", **kw)


def status_parameters(
    kind: str = "event-notification",
    *,
    number: str | None = "1",
    timestamp: str = "2025-07-01T08:05:00Z",
    focus: str | None = None,
    context: tuple[str, ...] = (),
    subscription: str = SUBSCRIPTION,
) -> dict[str, Any]:
    """An R4 backport SubscriptionStatus (Parameters)."""
    params: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": subscription}},
        {"name": "topic", "valueCanonical": TOPIC},
        {"name": "status", "valueCode": "active"},
        {"name": "type", "valueCode": kind},
    ]
    if number is not None:
        params.append({"name": "events-since-subscription-start", "valueString": number})
    if kind == "event-notification" and number is not None:
        parts: list[dict[str, Any]] = [
            {"name": "event-number", "valueString": number},
            {"name": "timestamp", "valueInstant": timestamp},
        ]
        if focus:
            parts.append({"name": "focus", "valueReference": {"reference": focus}})
        parts.extend(
            {"name": "additional-context", "valueReference": {"reference": ref}} for ref in context
        )
        params.append({"name": "notification-event", "part": parts})
    return {"resourceType": "Parameters", "id": str(uuid.uuid4()), "parameter": params}


def status_r4b(
    kind: str = "event-notification", *, number: str = "1", focus: str | None = None
) -> dict[str, Any]:
    """An R4B SubscriptionStatus."""
    event: dict[str, Any] = {"eventNumber": number, "timestamp": "2025-07-01T08:05:00Z"}
    if focus:
        event["focus"] = {"reference": focus}
    return {
        "resourceType": "SubscriptionStatus",
        "id": str(uuid.uuid4()),
        "status": "active",
        "type": kind,
        "eventsSinceSubscriptionStart": number,
        "notificationEvent": [event],
        "subscription": {"reference": SUBSCRIPTION},
        "topic": TOPIC,
    }


def notification(status: dict[str, Any], *entries: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": "history",
        "timestamp": "2025-07-01T08:05:01Z",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{status['id']}",
                "resource": status,
                "request": {"method": "GET", "url": f"{SUBSCRIPTION}/$status"},
                "response": {"status": "200"},
            },
            *entries,
        ],
    }


def full_entry(resource: dict[str, Any]) -> dict[str, Any]:
    url = f"{EHR}/{resource['resourceType']}/{resource['id']}"
    return {
        "fullUrl": url,
        "resource": resource,
        "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"},
        "response": {"status": "200"},
    }


def full_resource(number: str, enc: dict[str, Any], pat: dict[str, Any]) -> dict[str, Any]:
    """A full-resource event notification about an Encounter, with its Patient."""
    focus = f"{EHR}/Encounter/{enc['id']}"
    status = status_parameters(number=number, focus=focus, context=(f"{EHR}/Patient/{pat['id']}",))
    return notification(status, full_entry(enc), full_entry(pat))


def id_only(number: str, eid: str = "enc-1", pid: str = "pat-1") -> dict[str, Any]:
    focus = f"{EHR}/Encounter/{eid}"
    status = status_parameters(number=number, focus=focus, context=(f"{EHR}/Patient/{pid}",))
    entry = {
        "fullUrl": focus,
        "request": {"method": "PUT", "url": f"Encounter/{eid}"},
        "response": {"status": "200"},
    }
    return notification(status, entry)


def message(
    event: str,
    enc: dict[str, Any],
    pat: dict[str, Any],
    *,
    message_id: str = "msg-1",
    identifier: str | None = None,
    endpoint: str = "https://hospital.example.org/alerts",
    system: str = EVENT_SYSTEM,
) -> dict[str, Any]:
    """A Da Vinci notification message: urn:uuid fullUrls, references between entries by them."""
    enc_url = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'enc' + enc['id'])}"
    pat_url = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'pat' + pat['id'])}"
    org_url = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'org')}"
    enc = {**enc, "subject": {"reference": pat_url}, "serviceProvider": {"reference": org_url}}
    header = {
        "resourceType": "MessageHeader",
        "id": message_id,
        "eventCoding": {"system": system, "code": event},
        "source": {"endpoint": endpoint},
        "focus": [{"reference": enc_url}],
    }
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": "message",
        "timestamp": "2025-07-01T08:05:01Z",
        "entry": [
            {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": header},
            {"fullUrl": enc_url, "resource": enc},
            {"fullUrl": pat_url, "resource": pat},
            {
                "fullUrl": org_url,
                "resource": {"resourceType": "Organization", "name": "General Hospital"},
            },
        ],
    }
    if identifier:
        bundle["identifier"] = {"system": "urn:ietf:rfc:3986", "value": identifier}
    return bundle


def body(data: Any) -> bytes:
    return orjson.dumps(data)


FHIR = {"Content-Type": "application/fhir+json"}


def automation_jobs(engine: Engine) -> list[dict[str, Any]]:
    """Payloads of the automation.encounter jobs, oldest first."""
    return job_payloads(engine, AUTOMATION_ENCOUNTER)


def job_payloads(engine: Engine, kind: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(jobs.c.payload, jobs.c.status).where(jobs.c.kind == kind).order_by(jobs.c.id)
        ).all()
    return [dict(orjson.loads(row.payload)) for row in rows]


def count(engine: Engine, res_type: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(resources).where(resources.c.res_type == res_type)
            ).scalar_one()
        )


def stored(engine: Engine, res_type: str, res_id: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        content = conn.execute(
            select(resources.c.content).where(
                resources.c.res_type == res_type, resources.c.res_id == res_id
            )
        ).scalar_one_or_none()
    return dict(orjson.loads(content)) if content is not None else None


def snapshot(engine: Engine) -> tuple[int, ...]:
    """Counts of every table an event touches: resources, versions, events, jobs."""
    from carecoord.events.tables import inbound_events
    from carecoord.fhir.tables import resource_versions

    with engine.connect() as conn:
        return tuple(
            int(conn.execute(select(func.count()).select_from(t)).scalar_one())
            for t in (resources, resource_versions, inbound_events, jobs)
        )


def stored_all(engine: Engine, res_type: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(resources.c.content)
            .where(resources.c.res_type == res_type)
            .order_by(resources.c.rid)
        ).scalars()
        return [dict(orjson.loads(content)) for content in rows]
