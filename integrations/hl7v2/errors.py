"""Errors of the HL7 v2 feed, each with the acknowledgement it earns (HL7 tables 0008 and 0357)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BadValue",
    "ErrorLocation",
    "FeedConfigError",
    "Hl7v2Error",
    "MessageInvalid",
    "MessageRejected",
    "MissingField",
    "ProcessingFailed",
    "Unparseable",
    "UnsupportedMessageType",
    "UnsupportedVersion",
]


@dataclass(frozen=True, slots=True)
class ErrorLocation:
    """Where an error is: segment, its sequence in the message, field and component (1-based)."""

    segment: str
    field: int | None = None
    component: int | None = None
    sequence: int = 1

    def __str__(self) -> str:
        text = self.segment if self.field is None else f"{self.segment}-{self.field}"
        return text if self.component is None else f"{text}.{self.component}"


class Hl7v2Error(Exception):
    """A message CareCoord does not take as sent.

    The message text is short and never holds patient data: it goes into the error ACK, the
    inbound event's ``error`` column and the log.
    """

    ack_code = "AE"
    #: HL7 table 0357 (message error condition codes).
    error_code = 207
    error_text = "Application internal error"

    def __init__(self, message: str, *, location: ErrorLocation | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.location = location


class MessageRejected(Hl7v2Error):
    """Not for this receiver (type, event or version): the ACK is an application reject (AR)."""

    ack_code = "AR"


class UnsupportedMessageType(MessageRejected):
    """MSH-9 names a message type or trigger event the feed does not take."""

    error_code = 200
    error_text = "Unsupported message type"

    def __init__(
        self, message: str, *, location: ErrorLocation | None = None, event: bool = False
    ) -> None:
        super().__init__(message, location=location)
        if event:
            self.error_code = 201
            self.error_text = "Unsupported event code"


class UnsupportedVersion(MessageRejected):
    """MSH-12 names an HL7 version the feed does not take."""

    error_code = 203
    error_text = "Unsupported version id"


class MessageInvalid(Hl7v2Error):
    """The content is wrong: the ACK is an application error (AE)."""


class Unparseable(MessageInvalid):
    """Not an HL7 v2 message: no MSH first, a broken structure, several messages in one frame."""

    error_code = 100
    error_text = "Segment sequence error"


class MissingField(MessageInvalid):
    """A field or segment the mapping needs is empty or missing."""

    error_code = 101
    error_text = "Required field missing"


class BadValue(MessageInvalid):
    """A value of the wrong form (a bad date) or not in its table."""

    error_code = 102
    error_text = "Data type error"

    def __init__(
        self, message: str, *, location: ErrorLocation | None = None, table: bool = False
    ) -> None:
        super().__init__(message, location=location)
        if table:
            self.error_code = 103
            self.error_text = "Table value not found"


class ProcessingFailed(Hl7v2Error):
    """A valid message CareCoord could not apply (AE 207; 205 when an identifier is ambiguous)."""

    def __init__(
        self, message: str, *, location: ErrorLocation | None = None, duplicate: bool = False
    ) -> None:
        super().__init__(message, location=location)
        if duplicate:
            self.error_code = 205
            self.error_text = "Duplicate key identifier"


class FeedConfigError(ValueError):
    """The feed configuration file is invalid; the message names the file and the field."""
