"""Who is looking at a screen: the access policy, the launch session, the user and the CSRF
token, decided once per request."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from starlette.requests import Request

from carecoord.auth.policy import request_policy
from carecoord.fhir.access import AccessPolicy, relative_reference
from carecoord.smart.sessions import SESSION_COOKIE
from carecoord.web.config import WebConfig
from carecoord.web.security import csrf_token

__all__ = ["ScreenContext", "WebState", "screen_context", "user_reference"]


@dataclass
class WebState:
    """What the screens share, kept on ``app.state.web``."""

    config: WebConfig
    secret: bytes
    clock: Callable[[], datetime]
    render: Callable[..., str]


def user_reference(fhir_user: str | None) -> str | None:
    """``Type/id`` of a ``fhirUser`` claim (often an absolute URL on the EHR's FHIR base)."""
    return relative_reference(fhir_user) if fhir_user else None


@dataclass(frozen=True)
class ScreenContext:
    """The request's policy, session and user as the screens need them."""

    policy: AccessPolicy | None
    session: Any | None
    user: str | None
    csrf: str
    now: datetime
    request_id: str | None

    @property
    def launch_patient(self) -> str | None:
        """The launch patient as CareCoord knows them (the policy maps a pulled patient's id)."""
        if self.session is None:
            return None
        if self.policy is not None and self.policy.patient:
            return self.policy.patient
        return getattr(self.session, "patient", None)

    @property
    def banner(self) -> bool:
        """Show our patient banner unless an EHR session says it shows its own."""
        if self.session is None:
            return True
        return bool(getattr(self.session, "need_patient_banner", True))


async def screen_context(request: Request) -> ScreenContext:
    """The context of ``request``; raises ``Unauthorized`` (401) without a token or session."""
    state: WebState = request.app.state.web
    policy = await request_policy(request)
    source = getattr(request.app.state, "session_source", None)
    session = None
    if source is not None and "authorization" not in request.headers:
        session = await source(request)
    user = None
    if policy is not None and policy.agent.kind == "user":
        user = user_reference(policy.agent.who)  # mapped to our id when pulled from the EHR
    if user is None and session is not None:
        user = user_reference(getattr(session, "fhir_user", None))
    cookie = request.cookies.get(SESSION_COOKIE, "")
    return ScreenContext(
        policy=policy,
        session=session,
        user=user,
        csrf=csrf_token(state.secret, cookie) if cookie else "",
        now=state.clock(),
        request_id=request.scope.get("state", {}).get("request_id"),
    )
