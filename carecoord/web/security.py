"""Browser-facing protections: security headers with a strict CSP and configurable
``frame-ancestors``, CSRF tokens bound to the session, and session cookies that work inside a
cross-site EHR iframe."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from carecoord.smart.launch import LAUNCH_COOKIE
from carecoord.smart.sessions import SESSION_COOKIE

__all__ = [
    "CSRF_FIELD",
    "CSRF_HEADER",
    "SecurityHeaders",
    "content_security_policy",
    "csrf_token",
    "embedding_cookie",
    "is_cross_site",
    "same_origin",
    "valid_csrf",
]

CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
_COOKIES = (SESSION_COOKIE.encode(), LAUNCH_COOKIE.encode())


def content_security_policy(frame_ancestors: Sequence[str]) -> str:
    """No inline script or style, nothing from elsewhere; embeddable only by the given origins."""
    ancestors = " ".join(("'self'", *frame_ancestors))
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; "
        f"frame-ancestors {ancestors}"
    )


def _site(host: str) -> str:
    # Registrable domain, approximated by the last two labels (no public-suffix list offline);
    # an IP address or a single label is its own site.
    parts = host.lower().strip("[]").split(".")
    if host.replace(".", "").isdigit() or ":" in host or len(parts) < 2:
        return host.lower()
    return ".".join(parts[-2:])


def is_cross_site(origin: str, own_host: str | None) -> bool:
    """Whether ``origin`` is on another site than ``own_host`` (scheme ignored)."""
    host = urlsplit(origin).hostname or ""
    return not own_host or _site(host) != _site(own_host)


def embedding_cookie(header: bytes) -> bytes:
    """A ``Set-Cookie`` value of our session or launch cookie made usable in a cross-site iframe:
    ``SameSite=None; Secure; Partitioned`` (CHIPS: the cookie is kept per embedding site)."""
    name = header.split(b"=", 1)[0].strip()
    if name not in _COOKIES:
        return header
    attrs = [
        a
        for a in header.split(b";")
        if a.strip().lower().split(b"=")[0] not in (b"samesite", b"secure", b"partitioned")
    ]
    return b";".join([*attrs, b" SameSite=None", b" Secure", b" Partitioned"])


class SecurityHeaders:
    """Pure ASGI middleware: CSP and friends on HTML pages; embeddable session cookies."""

    def __init__(
        self, app: ASGIApp, *, frame_ancestors: Sequence[str], embed_cookies: bool
    ) -> None:
        self.app = app
        self.csp = content_security_policy(frame_ancestors).encode()
        self.frame_ancestors = tuple(frame_ancestors)
        self.embed_cookies = embed_cookies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                kind = next((v for k, v in headers if k.lower() == b"content-type"), b"")
                if kind.startswith(b"text/html") or kind.startswith(b"image/svg"):
                    headers.append((b"content-security-policy", self.csp))
                    if not self.frame_ancestors:
                        headers.append((b"x-frame-options", b"SAMEORIGIN"))
                    headers.append((b"x-content-type-options", b"nosniff"))
                    headers.append((b"referrer-policy", b"no-referrer"))
                    headers.append((b"permissions-policy", b"camera=(), microphone=()"))
                if self.embed_cookies:
                    headers = [
                        (k, embedding_cookie(v) if k.lower() == b"set-cookie" else v)
                        for k, v in headers
                    ]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def csrf_token(secret: bytes, session_cookie: str) -> str:
    """The CSRF token of a session: an HMAC of its cookie value (double submit, signed)."""
    digest = hmac.new(secret, b"csrf\x1f" + session_cookie.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def valid_csrf(secret: bytes, session_cookie: str | None, token: str | None) -> bool:
    """Whether ``token`` is the CSRF token of the session behind ``session_cookie``."""
    if not session_cookie or not token:
        return False
    return hmac.compare_digest(csrf_token(secret, session_cookie), token)


def same_origin(origin: str | None, own: str) -> bool:
    """Whether an ``Origin`` header (absent is allowed: same-origin GET forms omit it in old
    browsers) names our own origin."""
    if origin is None:
        return True
    return origin.rstrip("/") == own.rstrip("/")
