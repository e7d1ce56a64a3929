"""A circuit breaker per EHR connection: closed, open (fail fast), half-open (one probe).

It opens after ``failures`` consecutive temporary failures (timeouts, connection errors, 429,
5xx). While open every request fails at once with :class:`CircuitOpen`; after ``cooldown``
seconds one request goes through as a probe: its success closes the circuit, its failure opens it
for another cool-down. Any answer that is not a temporary failure (even a 404) counts as a success:
the EHR is up. The state can be saved and restored so that separate processes (the worker, the
``sync run`` command) do not hammer an EHR that another one just found down.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from carecoord.sync.errors import CircuitOpen

__all__ = ["CircuitBreaker", "CircuitSnapshot", "CircuitState"]


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass(frozen=True, slots=True)
class CircuitSnapshot:
    """What is saved: the state, the failures counted, and when the circuit last opened."""

    state: CircuitState
    failures: int = 0
    opened_at: float | None = None


class CircuitBreaker:
    """The breaker of one connection (one event loop; no locking needed)."""

    def __init__(
        self,
        name: str,
        *,
        failures: int = 5,
        cooldown: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if failures < 1 or cooldown < 0:
            raise ValueError("failures must be at least 1 and cooldown not negative")
        self.name = name
        self.threshold = failures
        self.cooldown = cooldown
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> CircuitState:
        if self._opened_at is None:
            return CircuitState.CLOSED
        if self._clock() >= self._opened_at + self.cooldown:
            return CircuitState.HALF_OPEN
        return CircuitState.OPEN

    @property
    def failures(self) -> int:
        return self._failures

    def remaining(self) -> float:
        """Seconds until a probe may go (0 when closed or half-open)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self.cooldown - self._clock())

    def before(self) -> None:
        """Let a request through, or raise :class:`CircuitOpen`."""
        state = self.state
        if state is CircuitState.CLOSED:
            return
        if state is CircuitState.HALF_OPEN and not self._probing:
            self._probing = True  # this request is the probe
            return
        wait = self.remaining() or 1.0
        raise CircuitOpen(
            f"EHR '{self.name}': circuit open after {self._failures} consecutive failures; "
            f"next try in {wait:.0f} s",
            retry_after=wait,
        )

    def success(self) -> None:
        """The EHR answered: close the circuit."""
        self._failures = 0
        self._opened_at = None
        self._probing = False

    def failure(self) -> None:
        """A temporary failure: count it; open (again) at the threshold or after a probe."""
        self._failures += 1
        if self._probing or self._opened_at is not None or self._failures >= self.threshold:
            self._opened_at = self._clock()
        self._probing = False

    def release(self) -> None:
        """A request ended without a verdict (cancelled): let another one probe."""
        self._probing = False

    def snapshot(self) -> CircuitSnapshot:
        return CircuitSnapshot(self.state, self._failures, self._opened_at)

    def restore(self, snapshot: CircuitSnapshot) -> None:
        """Take over a saved state (a half-open one probes again)."""
        self._failures = snapshot.failures
        self._opened_at = None if snapshot.state is CircuitState.CLOSED else snapshot.opened_at
        self._probing = False
