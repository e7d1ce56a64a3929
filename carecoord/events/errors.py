"""Errors of event intake (the tree is drawn in :mod:`carecoord.events`)."""

from __future__ import annotations

__all__ = ["EventError", "EventNotStored"]


class EventError(Exception):
    """Base of the errors of event intake."""


class EventNotStored(EventError):
    """An event could not be stored, not even as rejected: it must not be acknowledged."""
