"""Durable job queue / outbox in the same database as the data (ADR 0009).

A service enqueues side effects (EHR push, automation run, notification) with :func:`enqueue` in
the same transaction as the resources that cause them; a :class:`Worker` claims due jobs under a
lease and runs the handler registered for their kind. Delivery is at-least-once: handlers must be
idempotent. Failures are retried with exponential backoff and full jitter up to a cap, then the
job is dead-lettered with its reason (``last_error``: exception type and message, so handler
messages must never carry patient data).

Errors::

    JobError                  base of the package's exceptions
    ├── RetryLater(delay)     raised by a handler: try again later (the delay, or backoff)
    ├── Fatal                 raised by a handler: dead-letter now, no more attempts
    ├── InvalidJob            (also ValueError) enqueue got a bad kind, key, time or count
    └── RegistryError         a handler kind is invalid or registered twice

Any other exception a handler raises is a retry.
"""

from __future__ import annotations

from carecoord.jobs.claim import ClaimedJob
from carecoord.jobs.clock import Clock, utc_now
from carecoord.jobs.errors import Fatal, InvalidJob, JobError, RegistryError, RetryLater
from carecoord.jobs.queue import (
    DEFAULT_MAX_ATTEMPTS,
    JobInfo,
    JobSpec,
    enqueue,
    enqueue_many,
    get_job,
    list_dead,
    list_jobs,
    purge_done,
    retry_dead,
)
from carecoord.jobs.registry import (
    HANDLER_MODULES,
    Handler,
    JobContext,
    Registry,
    default_registry,
    handler,
    import_handler_modules,
)
from carecoord.jobs.status import QueueCounts, QueueStats, stats
from carecoord.jobs.worker import Outcome, Worker, backoff_delay, run_workers

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "HANDLER_MODULES",
    "ClaimedJob",
    "Clock",
    "Fatal",
    "Handler",
    "InvalidJob",
    "JobContext",
    "JobError",
    "JobInfo",
    "JobSpec",
    "Outcome",
    "QueueCounts",
    "QueueStats",
    "Registry",
    "RegistryError",
    "RetryLater",
    "Worker",
    "backoff_delay",
    "default_registry",
    "enqueue",
    "enqueue_many",
    "get_job",
    "handler",
    "import_handler_modules",
    "list_dead",
    "list_jobs",
    "purge_done",
    "retry_dead",
    "run_workers",
    "stats",
    "utc_now",
]
