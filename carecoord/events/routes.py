"""HTTP intake of events: Subscription notifications and Da Vinci ``$process-message``.

Routes translate only: authentication (a Bearer token through ``request_policy``, or a channel's
shared secret), the body, then one service call; the answer is an OperationOutcome. The event is
committed before the 200 is sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from carecoord.audit.rest import RestAudit
from carecoord.auth.policy import request_policy
from carecoord.events.channels import Channel
from carecoord.events.davinci import receive_message
from carecoord.events.errors import EventNotStored
from carecoord.events.intake import IntakeAudit, IntakeOutcome
from carecoord.events.notifications import receive_notification
from carecoord.events.runtime import EventsRuntime
from carecoord.fhir.access import AccessPolicy, Agent
from carecoord.fhir.errors import Forbidden, Issue, NotFound, Unavailable, operation_outcome
from carecoord.fhir.router import FHIR_JSON, read_body
from carecoord.fhir.store import FhirStore, StoredResource, Writer
from carecoord.fhir.validation import check_type

__all__ = ["ChannelAuth", "router"]

router = APIRouter()

BodyDep = Annotated[bytes, Depends(read_body)]
PolicyDep = Annotated[AccessPolicy | None, Depends(request_policy)]


@dataclass(frozen=True, slots=True)
class ChannelAuth:
    """The channel posted to and the caller's policy on it."""

    channel: Channel
    policy: AccessPolicy | None


async def channel_auth(channel: str, request: Request) -> ChannelAuth:
    """The channel's shared secret, else a Bearer token (of an allowed client): 401/403/404."""
    runtime: EventsRuntime = request.app.state.events
    found = runtime.channel(channel)
    if found is None:
        raise NotFound("No such notification channel")
    if found.secret_matches(request.headers):
        agent = Agent("system", f"channel:{found.name}")
        return ChannelAuth(found, AccessPolicy.from_scope_string(found.scope, agent))
    policy = await request_policy(request)
    if found.clients and (policy is None or policy.agent.who not in found.clients):
        raise Forbidden("This client may not post to this notification channel")
    return ChannelAuth(found, policy)


ChannelDep = Annotated[ChannelAuth, Depends(channel_auth)]


def _request_id(request: Request) -> str | None:
    rid: str | None = request.scope.get("state", {}).get("request_id")
    return rid


def _audit(request: Request, policy: AccessPolicy | None) -> IntakeAudit:
    audit: RestAudit = request.app.state.audit
    request_id = _request_id(request)

    def record(w: Writer, interaction: str, stored: StoredResource) -> None:
        audit.on_write(w, policy, request_id, interaction, stored)

    return record


def _answer(outcome: IntakeOutcome) -> Response:
    if outcome.replayed:
        text = f"Already received as event {outcome.event_id}; nothing changed"
    else:
        text = (
            f"Stored as event {outcome.event_id}: {len(outcome.produced)} resources, "
            f"{len(outcome.jobs)} to fetch"
        )
    body = operation_outcome([Issue(text, "informational", "information")])
    return Response(body, status_code=200, media_type=FHIR_JSON)


def _notification(
    request: Request, auth: ChannelAuth, body: bytes, path: tuple[str, str] | None
) -> Response:
    store: FhirStore = request.app.state.store
    runtime: EventsRuntime = request.app.state.events
    try:
        outcome = receive_notification(
            store,
            body,
            channel=auth.channel,
            policy=auth.policy,
            received_at=store.clock(),
            request_id=_request_id(request),
            audit=_audit(request, auth.policy),
            path=path,
            max_depth=request.app.state.settings.max_json_depth,
            origin=runtime.origin(auth.channel.effective_connection),
        )
    except EventNotStored:
        raise Unavailable("The notification could not be stored; send it again") from None
    return _answer(outcome)


@router.post("/notifications/subscription/{channel}", tags=["events"])
def subscription_notification(auth: ChannelDep, request: Request, body: BodyDep) -> Response:
    """A FHIR Subscription notification (R4 rest-hook, or an R4/R4B backport Bundle)."""
    return _notification(request, auth, body, None)


@router.api_route(
    "/notifications/subscription/{channel}/{res_type}/{res_id}",
    methods=["POST", "PUT"],
    tags=["events"],
)
def subscription_resource(
    res_type: str, res_id: str, auth: ChannelDep, request: Request, body: BodyDep
) -> Response:
    """An R4 rest-hook notification with the resource as payload, sent to ``<channel>/Type/id``."""
    check_type(res_type)
    return _notification(request, auth, body, (res_type, res_id))


@router.post("/fhir/$process-message", tags=["events"])
def process_message(policy: PolicyDep, request: Request, body: BodyDep) -> Response:
    """A Da Vinci Unsolicited Notification (admit, discharge, transfer) message Bundle."""
    store: FhirStore = request.app.state.store
    runtime: EventsRuntime = request.app.state.events
    try:
        outcome = receive_message(
            store,
            body,
            policy=policy,
            received_at=store.clock(),
            request_id=_request_id(request),
            audit=_audit(request, policy),
            max_depth=request.app.state.settings.max_json_depth,
            origin=runtime.sender_origin(policy),
        )
    except EventNotStored:
        raise Unavailable("The message could not be stored; send it again") from None
    return _answer(outcome)
