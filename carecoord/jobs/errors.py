"""Errors and handler signals of the job queue (the tree is drawn in the package docstring)."""

from __future__ import annotations

from datetime import timedelta

__all__ = ["Fatal", "InvalidJob", "JobError", "RegistryError", "RetryLater"]


class JobError(Exception):
    """Base of the job queue's exceptions."""


class RetryLater(JobError):
    """Raised by a handler: run the job again after ``delay`` (default: the worker's backoff).

    The attempt counts towards ``max_attempts``. Use it for a ``Retry-After`` or a resource that
    is not there yet. The message is stored as the job's ``last_error``: never put patient data
    in it.
    """

    def __init__(
        self, delay: float | timedelta | None = None, message: str = "retry requested"
    ) -> None:
        super().__init__(message)
        if isinstance(delay, timedelta):
            delay = delay.total_seconds()
        if delay is not None and delay < 0:
            raise ValueError("RetryLater delay must not be negative")
        self.delay: float | None = delay


class Fatal(JobError):
    """Raised by a handler: the job can never succeed; move it to the dead letters now.

    The message is stored as the job's ``last_error``: never put patient data in it.
    """


class InvalidJob(JobError, ValueError):
    """``enqueue`` was given an invalid kind, key, connection, time or attempt count."""


class RegistryError(JobError):
    """A handler kind is invalid or registered twice."""
