"""Event intake in the server: notification routes, channels, API writes of Encounters as events.

``install(app, settings, engine)`` loads the notification channels, the EHR connections (intake
from a configured connection goes through the sync identity map, ADR 0021) and the Da Vinci
senders, puts the intake routes ahead
of the FHIR API's ``/fhir/{type}`` routes (``POST /fhir/$process-message`` would otherwise be
taken for a create), and sets the store's write hook so that every Encounter created or updated
through the REST API (also inside transaction and batch Bundles) enqueues its automation job in
the same transaction, with source ``fhir-api`` and the request's id.
"""

from __future__ import annotations

import threading
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any, Final

from fastapi import FastAPI
from sqlalchemy import Engine
from starlette.types import ASGIApp, Receive, Scope, Send

from carecoord.events.channels import CHANNEL_NAME, Channel, load_channels
from carecoord.events.encounters import note_encounter_event
from carecoord.events.senders import DavinciSenders, load_senders
from carecoord.fhir.access import AccessPolicy
from carecoord.fhir.store import FhirStore, StoredResource, Writer
from carecoord.settings import Settings
from carecoord.smart.connections import load_connections
from carecoord.sync.upsert import Origin

__all__ = ["FHIR_API_SOURCE", "EventsRuntime", "RequestScopes", "install"]

#: The source of Encounter events written through the FHIR REST API.
FHIR_API_SOURCE: Final = "fhir-api"


@dataclass
class EventsRuntime:
    """What event intake shares in one app, kept on ``app.state.events``.

    Write units may run on another thread than their request (SQLite group commit), so the
    request of a write is found through its access policy: the object ``request_policy`` made
    for that request, kept in the scope of each request in flight.
    """

    channels: dict[str, Channel] = field(default_factory=dict)
    #: The configured EHR connections (name -> origin): intake from them uses the identity map.
    origins: dict[str, Origin] = field(default_factory=dict)
    senders: DavinciSenders = field(default_factory=DavinciSenders)
    _in_flight: dict[int, MutableMapping[str, Any]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def channel(self, name: str) -> Channel | None:
        """The configured channel, a default one for an unconfigured valid name, else None."""
        if name in self.channels:
            return self.channels[name]
        if CHANNEL_NAME.fullmatch(name):
            return Channel(name=name)
        return None

    def origin(self, connection: str | None) -> Origin | None:
        """The configured EHR connection named ``connection`` (None: not configured)."""
        return self.origins.get(connection) if connection is not None else None

    def sender_origin(self, policy: AccessPolicy | None) -> Origin | None:
        """The EHR connection a Da Vinci sender (the caller's client) is mapped to."""
        who = policy.agent.who if policy is not None else None
        return self.origin(self.senders.connection_of(who))

    def enter(self, scope: MutableMapping[str, Any]) -> None:
        with self._lock:
            self._in_flight[id(scope)] = scope

    def leave(self, scope: MutableMapping[str, Any]) -> None:
        with self._lock:
            self._in_flight.pop(id(scope), None)

    def request_id(self, policy: AccessPolicy | None) -> str | None:
        """The id of the request in flight whose access policy is ``policy``."""
        if policy is None:
            return None
        with self._lock:
            scopes = list(self._in_flight.values())
        for scope in scopes:
            state = scope.get("state") or {}
            if state.get("access_policy") is policy:
                request_id = state.get("request_id")
                return request_id if isinstance(request_id, str) else None
        return None

    def on_written(
        self, w: Writer, res_type: str, stored: StoredResource, previous: str | None
    ) -> None:
        """The store's write hook: an Encounter written through the API is an event."""
        if res_type == "Encounter":
            note_encounter_event(
                w,
                source=FHIR_API_SOURCE,
                encounter=stored,
                previous_status=previous,
                request_id=self.request_id(w.policy),
            )


class RequestScopes:
    """Pure ASGI middleware: keeps the scopes of the HTTP requests in flight on the runtime."""

    def __init__(self, app: ASGIApp, runtime: EventsRuntime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.runtime.enter(scope)
        try:
            await self.app(scope, receive, send)
        finally:
            self.runtime.leave(scope)


def install(app: FastAPI, settings: Settings, engine: Engine) -> None:
    """Add event intake to ``app`` (idempotent). Raises ConfigError for a bad channel file.

    ``engine`` must be the one of ``app.state.store``, which the intake writes through.
    """
    from carecoord.events.routes import router

    if getattr(app.state, "events", None) is not None:
        return
    store: FhirStore = app.state.store
    if store.engine is not engine:
        raise ValueError("install: engine is not the engine of app.state.store")
    origins = {
        c.name: Origin(c.name, c.iss)
        for c in load_connections(settings.config_dir, check_secrets=False)
    }
    runtime = EventsRuntime(
        load_channels(settings.config_dir), origins, load_senders(settings.config_dir)
    )
    app.state.events = runtime
    store.on_written = runtime.on_written
    app.add_middleware(RequestScopes, runtime=runtime)
    before = list(app.router.routes)
    app.include_router(router)
    added = [route for route in app.router.routes if all(route is not r for r in before)]
    app.router.routes[:] = [*added, *before]
