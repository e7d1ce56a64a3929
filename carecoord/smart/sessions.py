"""User sessions opened by a SMART launch: the session table, the cookie, and
:func:`current_session`, the object the access policy of our API is built from.

The cookie holds a random 256-bit id; the database holds only its SHA-256. Access and refresh
tokens are encrypted at rest; a refresh replaces them in one conditional UPDATE (``token_version``)
so that two processes refreshing at once never keep a stale, rotated refresh token.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fastapi import Request
from pydantic import BaseModel, ConfigDict
from sqlalchemy import Engine, delete, insert, select, update
from starlette.concurrency import run_in_threadpool

from carecoord.smart.tables import smart_sessions
from carecoord.smart.tokens import TokenResponse

if TYPE_CHECKING:
    from carecoord.smart.runtime import SmartRuntime

__all__ = [
    "SESSION_COOKIE",
    "SessionStore",
    "StoredTokens",
    "UserSession",
    "current_session",
    "current_session_sync",
    "hash_secret",
]

SESSION_COOKIE = "carecoord_session"


def hash_secret(value: str) -> str:
    """SHA-256 hex of a bearer secret (session id, state, browser id) for storage and lookup."""
    return hashlib.sha256(value.encode()).hexdigest()


class UserSession(BaseModel):
    """Who is signed in through which EHR, in which context, with which granted scopes."""

    model_config = ConfigDict(frozen=True)

    id: str  # the session's database key (a hash; not the cookie value)
    connection: str
    scope: str
    patient: str | None
    encounter: str | None
    fhir_context: tuple[dict[str, Any], ...]
    need_patient_banner: bool
    fhir_user: str | None
    expires_at: datetime

    @property
    def scopes(self) -> frozenset[str]:
        """The granted scopes, one per item."""
        return frozenset(self.scope.split())


@dataclass(frozen=True)
class StoredTokens:
    """A session's tokens, decrypted (never log this)."""

    access_token: str
    refresh_token: str | None
    expires_at: int | None
    version: int

    def __repr__(self) -> str:
        return f"StoredTokens(expires_at={self.expires_at}, version={self.version})"


def _session(row: Any) -> UserSession:
    return UserSession(
        id=row.id_hash,
        connection=row.connection,
        scope=row.scope,
        patient=row.patient,
        encounter=row.encounter,
        fhir_context=tuple(json.loads(row.fhir_context)),
        need_patient_banner=bool(row.need_patient_banner),
        fhir_user=row.fhir_user,
        expires_at=datetime.fromtimestamp(row.expires_at, UTC),
    )


class SessionStore:
    """Sessions in the database (synchronous; call from a worker thread in async code)."""

    def __init__(self, runtime: SmartRuntime) -> None:
        self._runtime = runtime

    @property
    def _engine(self) -> Engine:
        return self._runtime.engine

    def _now(self) -> int:
        return int(self._runtime.clock())

    def _token_expiry(self, token: TokenResponse, now: int) -> int | None:
        return None if token.expires_in is None else now + token.expires_in

    def create(
        self,
        *,
        connection: str,
        token: TokenResponse,
        scope: str,
        fhir_user: str | None,
    ) -> tuple[str, UserSession]:
        """Open a session; returns the cookie value and the session."""
        raw_id = secrets.token_urlsafe(32)
        now = self._now()
        enc = self._runtime.token_encryptor
        refresh = token.refresh_token.get_secret_value() if token.refresh_token else None
        values = {
            "id_hash": hash_secret(raw_id),
            "connection": connection,
            "scope": scope,
            "patient": token.patient,
            "encounter": token.encounter,
            "fhir_context": json.dumps(token.fhir_context),
            "need_patient_banner": token.need_patient_banner,
            "fhir_user": fhir_user,
            "access_token_enc": enc.encrypt(token.access_token.get_secret_value()),
            "refresh_token_enc": enc.encrypt(refresh) if refresh else None,
            "token_expires_at": self._token_expiry(token, now),
            "token_version": 0,
            "created_at": now,
            "expires_at": now + self._runtime.settings.session_ttl_seconds,
        }
        with self._engine.begin() as conn:
            conn.execute(delete(smart_sessions).where(smart_sessions.c.expires_at <= now))
            conn.execute(insert(smart_sessions).values(**values))
            row = conn.execute(
                select(smart_sessions).where(smart_sessions.c.id_hash == values["id_hash"])
            ).one()
        return raw_id, _session(row)

    def get(self, raw_id: str) -> UserSession | None:
        """The live session behind a cookie value, or None."""
        if not raw_id or len(raw_id) > 128:
            return None
        with self._engine.connect() as conn:
            row = conn.execute(
                select(smart_sessions).where(smart_sessions.c.id_hash == hash_secret(raw_id))
            ).one_or_none()
        if row is None or row.expires_at <= self._now():
            return None
        return _session(row)

    def tokens(self, session_id: str) -> StoredTokens | None:
        """The tokens of the session whose database key is ``session_id``."""
        with self._engine.connect() as conn:
            row = conn.execute(
                select(
                    smart_sessions.c.access_token_enc,
                    smart_sessions.c.refresh_token_enc,
                    smart_sessions.c.token_expires_at,
                    smart_sessions.c.token_version,
                ).where(smart_sessions.c.id_hash == session_id)
            ).one_or_none()
        if row is None:
            return None
        enc = self._runtime.token_encryptor
        return StoredTokens(
            access_token=enc.decrypt(row.access_token_enc),
            refresh_token=enc.decrypt(row.refresh_token_enc) if row.refresh_token_enc else None,
            expires_at=row.token_expires_at,
            version=row.token_version,
        )

    def replace_tokens(self, session_id: str, version: int, token: TokenResponse) -> bool:
        """Store refreshed tokens if nobody else did since ``version``; a rotated refresh token
        replaces the old one, an absent one keeps it. Returns whether this update won."""
        enc = self._runtime.token_encryptor
        values: dict[str, Any] = {
            "access_token_enc": enc.encrypt(token.access_token.get_secret_value()),
            "token_expires_at": self._token_expiry(token, self._now()),
            "token_version": version + 1,
        }
        if token.refresh_token is not None:
            values["refresh_token_enc"] = enc.encrypt(token.refresh_token.get_secret_value())
        if token.scope:
            values["scope"] = token.scope
        with self._engine.begin() as conn:
            result = conn.execute(
                update(smart_sessions)
                .where(
                    smart_sessions.c.id_hash == session_id,
                    smart_sessions.c.token_version == version,
                )
                .values(**values)
            )
        return result.rowcount == 1

    def delete(self, session_id: str) -> None:
        """End a session (by its database key)."""
        with self._engine.begin() as conn:
            conn.execute(delete(smart_sessions).where(smart_sessions.c.id_hash == session_id))


def _runtime(request: Request) -> SmartRuntime | None:
    return getattr(request.app.state, "smart", None)


def current_session_sync(request: Request) -> UserSession | None:
    """The request's session (blocking database read; for sync code and worker threads)."""
    runtime = _runtime(request)
    raw_id = request.cookies.get(SESSION_COOKIE)
    if runtime is None or not raw_id:
        return None
    return SessionStore(runtime).get(raw_id)


async def current_session(request: Request) -> UserSession | None:
    """The request's session from its cookie, or None (no cookie, unknown or expired)."""
    if _runtime(request) is None or not request.cookies.get(SESSION_COOKIE):
        return None
    return await run_in_threadpool(current_session_sync, request)
