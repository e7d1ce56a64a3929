"""Acknowledgements (original mode): AA, AE or AR with MSA and an ERR segment, built by python-hl7.

``Message.create_ack`` builds the MSH and MSA from the received message; when its MSH is too broken
for that (or there is no message at all), a minimal ACK from CareCoord's own header is sent with
whatever control id could be read. ERR uses the layout of the message's version: ERR-1 (ELD) up to
2.4, ERR-2/3/4 (location, HL7 error code from table 0357, severity) from 2.5.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import hl7  # type: ignore[import-untyped]

from integrations.hl7v2.errors import Hl7v2Error
from integrations.hl7v2.reading import ParsedMessage

__all__ = ["APPLICATION", "build_ack", "new_control_id"]

#: MSH-3/MSH-4 of a minimal ACK (when the received MSH cannot name the receiver).
APPLICATION = "CARECOORD"


def new_control_id() -> str:
    """A fresh 20-character message control id for an ACK."""
    return uuid.uuid4().hex[:20].upper()


def _timestamp(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y%m%d%H%M%S+0000")


def _minimal(code: str, control_id: str, version: str, now: datetime) -> Any:
    text = (
        f"MSH|^~\\&|{APPLICATION}|{APPLICATION}|||{_timestamp(now)}||ACK|{new_control_id()}|P|"
        f"{version}\rMSA|{code}"
    )
    ack = hl7.parse(text)
    ack.segment("MSA").assign_field(control_id, 2)
    return ack


def _from_message(message: Any, code: str, now: datetime) -> Any:
    msh = message.segment("MSH")
    # create_ack reads MSH-1 to MSH-12 and MSH-9.2: pad a short header with empty fields.
    while len(msh) <= 12:
        msh.append(msh.create_field([""]))
    ack = message.create_ack(code, message_id=new_control_id())
    ack.segment("MSH").assign_field(_timestamp(now), 7)
    return ack


def _version_at_least_25(version: str) -> bool:
    try:
        parts = tuple(int(p) for p in version.split(".")[:2])
    except ValueError:
        return True
    return parts >= (2, 5)


def _err_segment(ack: Any, error: Hl7v2Error, version: str) -> Any:
    err = ack.create_segment([ack.create_field(["ERR"])])
    where = error.location
    if _version_at_least_25(version):
        if where is not None:
            parts = [where.segment, str(where.sequence)]
            if where.field is not None:
                parts += [str(where.field), "1"]
                if where.component is not None:
                    parts.append(str(where.component))
            for i, part in enumerate(parts, start=1):
                err.assign_field(part, 2, 1, i)
        for i, part in enumerate((str(error.error_code), error.error_text, "HL70357"), start=1):
            err.assign_field(part, 3, 1, i)
        err.assign_field("E", 4)
        err.assign_field(ack.escape(error.message), 8)  # ERR-8 user message
    else:
        if where is not None:
            err.assign_field(where.segment, 1, 1, 1)
            err.assign_field(str(where.sequence), 1, 1, 2)
            if where.field is not None:
                err.assign_field(str(where.field), 1, 1, 3)
        for i, part in enumerate((str(error.error_code), error.error_text, "HL70357"), start=1):
            err.assign_field(part, 1, 1, 4, i)
    return err


def build_ack(
    parsed: ParsedMessage | None,
    code: str,
    *,
    now: datetime,
    error: Hl7v2Error | None = None,
    control_id: str = "",
    version: str = "2.5",
) -> bytes:
    """The ACK bytes (in the frame's character set) for ``parsed`` or, without it, a minimal one.

    ``error`` adds MSA-3 (text) and ERR; its text carries no patient data.
    """
    codec = parsed.codec if parsed is not None else "ascii"
    if parsed is not None:
        version = parsed.header.version or version
        control_id = parsed.header.control_id or control_id
        try:
            ack = _from_message(parsed.message, code, now)
        except Exception:  # a header too broken for create_ack: answer with our own
            ack = _minimal(code, control_id, version, now)
    else:
        ack = _minimal(code, control_id, version, now)
    if error is not None:
        msa = ack.segment("MSA")
        msa.assign_field(ack.escape(error.message), 3)
        ack.append(_err_segment(ack, error, version))
    return str(ack).encode(codec, errors="replace")
