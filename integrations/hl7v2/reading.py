"""Reading a frame: character set, segment separators, python-hl7 parsing, typed field access.

Feed quirks handled here: segments ended by ``\\n`` or ``\\r\\n`` instead of ``\\r``, the character
set declared in MSH-18 (or not declared and not ASCII), HL7 "null" values (``""``).
"""

from __future__ import annotations

import codecs
import logging
import re
from dataclasses import dataclass
from typing import Any, Literal

import hl7  # type: ignore[import-untyped]
import hl7.containers  # type: ignore[import-untyped]
import hl7.util  # type: ignore[import-untyped]

from integrations.hl7v2.errors import ErrorLocation, Unparseable

__all__ = [
    "HL7_NULL",
    "MESSAGE_TYPES",
    "TRIGGER",
    "VERSION",
    "Header",
    "ParsedMessage",
    "Segment",
    "decode",
    "loggable_code",
    "parse_message",
]

HL7_NULL = '""'


# python-hl7 logs whole field values (patient data) when it meets an escape sequence it does not
# know, under loggers named after its source files: silence them.
# A filter, not ``disabled``: logging.config.dictConfig (uvicorn's, for one) re-enables loggers.
def _drop(_: logging.LogRecord) -> bool:
    return False


for _module in (hl7.util, hl7.containers):
    _logger = logging.getLogger(_module.__file__)
    _logger.disabled = True
    _logger.addFilter(_drop)

# MSH-18 character set names (table 0211) -> Python codecs.
_CHARSETS = {
    "ASCII": "ascii",
    "8859/1": "latin-1",
    "8859/2": "iso8859-2",
    "8859/5": "iso8859-5",
    "8859/7": "iso8859-7",
    "8859/9": "iso8859-9",
    "8859/15": "iso8859-15",
    "UNICODE UTF-8": "utf-8",
    "UNICODE": "utf-8",
    "UTF-8": "utf-8",
    "WINDOWS-1252": "cp1252",
}
_LINE_BREAKS = re.compile(r"\r\n|\n\r|\n|\r")
_TABLE_0076 = (
    "ACK ADR ADT BAR CRM CSU DFT DOC DSR EAC EAN EAR MDM MFD MFK MFN MFQ MFR OMB OMD OMG OMI OML "
    "OMN OMP OMS ORA ORB ORD ORF ORG ORI ORL ORM ORN ORP ORR ORS ORU OSQ OSR OUL PEX PGL PIN PMU "
    "PPG PPP PPR PPT PPV PRR PTR QBP QCK QCN QRY QSB QVR RAR RAS RCI RCL RDE RDR RDS RDY REF RER "
    "RGR RGV ROR RPA RPI RPL RPR RQA RQC RQI RQP RRA RRD RRE RRG RRI RSP RTB SIU SPQ SQM SQR SRM "
    "SRR SSR SSU STC SUR TBR TCU UDM VXQ VXR VXU VXX"
)
#: HL7 table 0076 message types (the ones a sender may plausibly put on an ADT port).
MESSAGE_TYPES = frozenset(_TABLE_0076.split())
TRIGGER = re.compile(r"[A-Z][0-9]{2}")
VERSION = re.compile(r"[0-9]{1,2}(\.[0-9]{1,2}){0,2}")

FieldState = Literal["absent", "null", "value"]


def _declared_charset(raw: bytes) -> str | None:
    if not raw.startswith(b"MSH") or len(raw) < 4:
        return None
    header = _LINE_BREAKS.split(raw[:4096].decode("latin-1"), maxsplit=1)[0]
    fields = header.split(header[3])
    name = fields[17].split("~")[0].strip().upper() if len(fields) > 17 else ""
    return _CHARSETS.get(name)


def loggable_code(value: str, pattern: re.Pattern[str] | frozenset[str]) -> str:
    """``value`` when it is a known message type (or matches a trigger or version pattern), else
    a placeholder: refusals echo it in the ACK, the event record and the log, where a value from a
    shifted MSH (a name, an id) must not go."""
    if not value:
        return "(empty)"
    known = value in pattern if isinstance(pattern, frozenset) else pattern.fullmatch(value)
    return value if known else "(not a code)"


def decode(raw: bytes, charset: str | None = None) -> tuple[str, str]:
    """The text of a frame and the codec it was read with.

    ``charset`` (configured) wins; else MSH-18; else UTF-8; else Latin-1 (which reads any bytes).
    """
    candidates = [c for c in (charset, _declared_charset(raw.lstrip())) if c]
    for codec in [*candidates, "utf-8", "latin-1"]:
        try:
            return raw.decode(codec), codecs.lookup(codec).name
        except UnicodeDecodeError:
            continue
    raise AssertionError("latin-1 decodes any bytes")  # pragma: no cover


class Segment:
    """One parsed segment with 1-based field numbers as in the standard (MSH-1 is the separator).

    Values are unescaped; a missing field, repetition or component reads as ``""``.
    """

    def __init__(self, raw: Any, sequence: int = 1) -> None:
        self._raw = raw
        self.name: str = str(raw[0][0])
        self.sequence = sequence

    def where(self, field: int | None = None, component: int | None = None) -> ErrorLocation:
        return ErrorLocation(self.name, field, component, self.sequence)

    def text(self, field: int) -> str:
        """The field as sent (escaped, with its separators)."""
        return str(self._raw(field)) if 0 < field < len(self._raw) else ""

    def state(self, field: int) -> FieldState:
        """``absent`` (empty: no change), ``null`` (``""``: delete the value) or ``value``."""
        text = self.text(field).strip()
        if not text:
            return "absent"
        return "null" if text == HL7_NULL else "value"

    def repetitions(self, field: int) -> int:
        if not self.text(field):
            return 0
        value = self._raw(field)
        return len(value) if value and isinstance(value[0], hl7.Repetition) else 1

    def get(self, field: int, rep: int = 1, component: int = 1, sub: int = 1) -> str:
        """One value, unescaped and stripped; ``""`` when absent or HL7 null."""
        if not 0 < field < len(self._raw):
            return ""
        try:
            value = str(self._raw.extract_field(1, field, rep, component, sub)).strip()
        except (IndexError, TypeError):
            return ""
        return "" if value == HL7_NULL else value


@dataclass(frozen=True, slots=True)
class Header:
    """The MSH fields that decide how a message is handled (no patient data)."""

    sending_application: str
    sending_facility: str  # MSH-4 as sent (all components)
    facility_namespace: str  # MSH-4.1
    message_code: str
    trigger: str
    version: str
    control_id: str

    @property
    def kind(self) -> str:
        """``ADT^A01``; ``unknown`` when MSH-9 holds no known type (it may then hold other data)."""
        if self.message_code not in MESSAGE_TYPES:
            return "unknown"
        if self.trigger and not TRIGGER.fullmatch(self.trigger):
            return self.message_code
        return f"{self.message_code}^{self.trigger}" if self.trigger else self.message_code


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    """A parsed message: python-hl7's tree, its header and the codec of the frame."""

    message: Any  # hl7.Message
    header: Header
    codec: str

    def segments(self, name: str) -> list[Segment]:
        found = [seg for seg in self.message if str(seg[0][0]) == name]
        return [Segment(seg, i) for i, seg in enumerate(found, start=1)]

    def segment(self, name: str) -> Segment | None:
        found = self.segments(name)
        return found[0] if found else None


def parse_message(raw: bytes, charset: str | None = None) -> ParsedMessage:
    """Decode and parse one frame; :class:`Unparseable` when it is not one HL7 v2 message."""
    text, codec = decode(raw, charset)
    text = _LINE_BREAKS.sub("\r", text.strip())
    if not text.startswith("MSH") or len(text) < 8 or text[3] in "\r^~\\&" or text[3].isalnum():
        raise Unparseable("The frame does not begin with an MSH segment")
    try:
        message = hl7.parse(text)
    except Exception as exc:  # python-hl7 raises several types; their text can hold data
        raise Unparseable(
            f"The message cannot be parsed ({type(exc).__name__})", location=ErrorLocation("MSH")
        ) from None
    names = [str(seg[0][0]) for seg in message]
    if names.count("MSH") != 1:
        raise Unparseable("One message per frame is expected", location=ErrorLocation("MSH"))
    for name in names:
        if not re.fullmatch(r"[A-Z][A-Z0-9]{2}", name):
            raise Unparseable("A segment has no valid segment id")
    msh = Segment(message[0])
    header = Header(
        sending_application=msh.get(3),
        sending_facility=msh.text(4),
        facility_namespace=msh.get(4),
        message_code=msh.get(9, 1, 1).upper(),
        trigger=msh.get(9, 1, 2).upper(),
        version=msh.get(12, 1, 1),
        control_id=msh.get(10),
    )
    return ParsedMessage(message, header, codec)
