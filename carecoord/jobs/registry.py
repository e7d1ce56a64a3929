"""Handlers by job kind: ``@handler("kind")`` or ``Registry.register(kind, fn)``.

A handler is ``fn(payload, ctx) -> None`` (or an ``async def``); delivery is at-least-once, so
every handler must be idempotent: write resources with fixed ids or conditional creates on a
deterministic identifier, push to EHRs conditionally. Exception messages become the job's
``last_error``: never put patient data in them.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Engine

from carecoord.jobs.errors import RegistryError

__all__ = [
    "HANDLER_MODULES",
    "Handler",
    "JobContext",
    "Registry",
    "default_registry",
    "handler",
    "import_handler_modules",
    "is_valid_kind",
]

#: Modules that register handlers on :data:`default_registry` when imported; ``carecoord worker``
#: imports them (features add theirs here, e.g. ``"carecoord.sync.handlers"``).
HANDLER_MODULES: Final[tuple[str, ...]] = ("carecoord.sync.autoregister", "carecoord.autoregister")

_KIND = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


def is_valid_kind(kind: str) -> bool:
    """Letters, digits and ``_ . : -``, starting with a letter or digit, at most 64."""
    return _KIND.fullmatch(kind) is not None


@dataclass(frozen=True, slots=True)
class JobContext:
    """What a handler knows about the job it runs."""

    job_id: int
    kind: str
    attempt: int  # 1 for the first run
    max_attempts: int
    key: str | None
    connection: str | None
    created_at: datetime
    worker_id: str
    engine: Engine
    clock: Callable[[], datetime]
    _extend: Callable[[float | None], bool] = field(repr=False)
    _stopping: Callable[[], bool] = field(repr=False)

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt >= self.max_attempts

    @property
    def stopping(self) -> bool:
        """The worker was asked to stop: a long handler may end early and ``RetryLater``."""
        return self._stopping()

    def extend_lease(self, seconds: float | None = None) -> bool:
        """Keep the job for ``seconds`` more (default: the worker's lease) from now.

        False when the lease was already lost (another worker may be running the job): the
        handler should stop without further side effects.
        """
        return self._extend(seconds)


Handler = Callable[[dict[str, Any], JobContext], Awaitable[None] | None]


class Registry:
    """Handlers by job kind; a worker claims only the kinds its registry knows."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, kind: str, fn: Handler) -> Handler:
        """Register ``fn`` for ``kind`` (letters, digits, ``_ . : -``; at most 64)."""
        if not is_valid_kind(kind):
            raise RegistryError(f"invalid job kind {kind!r}")
        if kind in self._handlers and self._handlers[kind] is not fn:
            raise RegistryError(f"a handler for {kind!r} is already registered")
        self._handlers[kind] = fn
        return fn

    def handler(self, kind: str) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`register`."""

        def decorate(fn: Handler) -> Handler:
            return self.register(kind, fn)

        return decorate

    def get(self, kind: str) -> Handler | None:
        return self._handlers.get(kind)

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(sorted(self._handlers))

    def __contains__(self, kind: object) -> bool:
        return kind in self._handlers

    def __iter__(self) -> Iterator[str]:
        return iter(self.kinds)

    def __len__(self) -> int:
        return len(self._handlers)


#: The registry ``@handler`` fills and ``carecoord worker`` runs.
default_registry: Final = Registry()


def handler(kind: str) -> Callable[[Handler], Handler]:
    """Register the decorated function on :data:`default_registry` for ``kind``."""
    return default_registry.handler(kind)


def import_handler_modules(extra: Iterable[str] = ()) -> None:
    """Import :data:`HANDLER_MODULES` and ``extra`` so that their handlers register."""
    for name in (*HANDLER_MODULES, *extra):
        importlib.import_module(name)
