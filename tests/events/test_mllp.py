"""The MLLP listener over real sockets on 127.0.0.1: ACKs after commit, bad frames stop nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from hl7.mllp import open_hl7_connection  # type: ignore[import-untyped]
from sqlalchemy import Engine, func, select

from carecoord.events import AdtIntake, EventNotStored, EventStatus, list_events
from carecoord.events import adt as adt_module
from carecoord.events.mllp import MllpListener, unframe
from carecoord.fhir.store import FhirStore
from carecoord.fhir.tables import resources
from tests.events.messages import admit, adt, discharge

TIMEOUT = 10


def listener_for(intake: AdtIntake, **kw: Any) -> MllpListener:
    return MllpListener(
        lambda raw: intake.handle(raw).ack, too_large=intake.too_large, port=0, **kw
    )


def run(listener: MllpListener, client: Callable[[int], Awaitable[None]]) -> None:
    async def main() -> None:
        async with listener:
            await asyncio.wait_for(client(listener.port), TIMEOUT)

    asyncio.run(main())


class Peer:
    """A sending system: one MLLP connection (python-hl7's client streams)."""

    def __init__(self, reader: Any, writer: Any) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> Peer:
        return cls(*await open_hl7_connection("127.0.0.1", port))

    async def send(self, raw: bytes) -> dict[str, list[str]]:
        self.writer.writeblock(raw)
        await self.writer.drain()
        return await self.ack()

    async def send_bytes(self, data: bytes) -> dict[str, list[str]]:
        self.writer.write(data)
        await self.writer.drain()
        return await self.ack()

    async def ack(self) -> dict[str, list[str]]:
        block: bytes = await self.reader.readblock()
        return {seg[:3]: seg.split("|") for seg in block.decode().split("\r") if seg}

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def stored(store: FhirStore, res_type: str) -> list[dict[str, Any]]:
    page = store.search(store.parse(res_type, [("_count", "100")]))
    return [orjson.loads(content) for _, _, content in page.matches]


def resource_count(engine: Engine) -> int:
    """Resources, not counting the AuditEvents of the ADT writes."""
    with engine.connect() as conn:
        query = select(func.count()).select_from(resources)
        return int(conn.execute(query.where(resources.c.res_type != "AuditEvent")).scalar_one())


def second_patient(event: str, control_id: str, **pv1: str) -> bytes:
    return adt(
        event,
        control_id,
        pid={3: "MRN777^^^GENHOSP^MR", 5: "ROE^RICHARD", 8: "M", 7: "19511231"},
        pv1={19: "V0002^^^GENHOSP^VN", **{k: v for k, v in pv1.items()}},
    )


def test_messages_on_one_connection_and_two_connections_at_once(
    intake: AdtIntake, store: FhirStore, engine: Engine
) -> None:
    async def first(port: int) -> None:
        peer = await Peer.connect(port)
        for raw, control_id in [
            (admit(), "A01-0001"),
            (discharge(), "A03-0001"),
            (adt("A08", "A08-0001", pid={11: "9 ELM RD^^URBANA^IL^61801^USA^H"}), "A08-0001"),
        ]:
            ack = await peer.send(raw)
            assert ack["MSA"][1:3] == ["AA", control_id]
        await peer.close()

    async def second(port: int) -> None:
        peer = await Peer.connect(port)
        ack = await peer.send(second_patient("A01", "P2-A01"))
        assert ack["MSA"][1:3] == ["AA", "P2-A01"]
        ack = await peer.send(
            adt(
                "A03",
                "P2-A03",
                pid={3: "MRN777^^^GENHOSP^MR", 5: "ROE^RICHARD"},
                pv1={19: "V0002^^^GENHOSP^VN", 45: "20240117090000"},
            )
        )
        assert ack["MSA"][1:3] == ["AA", "P2-A03"]
        await peer.close()

    async def both(port: int) -> None:
        await asyncio.gather(first(port), second(port))

    run(listener_for(intake), both)
    encounters = stored(store, "Encounter")
    assert sorted(e["identifier"][0]["value"] for e in encounters) == ["V0001", "V0002"]
    assert {e["status"] for e in encounters} == {"finished"}
    patients = stored(store, "Patient")
    assert len(patients) == 2
    first_patient = next(p for p in patients if p["identifier"][0]["value"] == "MRN12345")
    assert first_patient["address"][0]["city"] == "URBANA"
    assert [e.status for e in list_events(engine)] == [EventStatus.PROCESSED] * 5


def test_a_bad_frame_gets_an_error_ack_and_the_next_message_still_works(
    intake: AdtIntake, store: FhirStore, engine: Engine
) -> None:
    async def client(port: int) -> None:
        peer = await Peer.connect(port)
        ack = await peer.send(b"\x00garbage, not HL7\xff")
        assert ack["MSA"][1] == "AE"
        assert ack["ERR"][3].startswith("100^")
        ack = await peer.send_bytes(b"no start block at all\x1c\r")  # broken MLLP framing
        assert ack["MSA"][1] == "AE"
        ack = await peer.send(adt("A99", "A99-1"))
        assert ack["MSA"][1:3] == ["AR", "A99-1"]
        ack = await peer.send_bytes(b"\r\n" + b"\x0b" + admit() + b"\x1c\r")  # whitespace first
        assert ack["MSA"][1:3] == ["AA", "A01-0001"]
        await peer.close()

    run(listener_for(intake), client)
    events = list_events(engine)
    assert [e.status for e in events] == [EventStatus.REJECTED] * 3 + [EventStatus.PROCESSED]
    assert events[0].payload == b"\x00garbage, not HL7\xff"
    assert events[1].payload == b"no start block at all"
    assert len(stored(store, "Encounter")) == 1


def test_a_failed_write_is_never_acknowledged_aa(
    intake: AdtIntake, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = adt_module.encounter_resource

    def crash(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("simulated failure inside the transaction")

    async def client(port: int) -> None:
        peer = await Peer.connect(port)
        monkeypatch.setattr(adt_module, "encounter_resource", crash)
        ack = await peer.send(admit())
        assert ack["MSA"][1:3] == ["AE", "A01-0001"]
        assert resource_count(engine) == 0  # no orphan Patient
        assert [e.status for e in list_events(engine)] == [EventStatus.ERROR]
        monkeypatch.setattr(adt_module, "encounter_resource", real)
        ack = await peer.send(admit())  # the sender tries again on the same connection
        assert ack["MSA"][1:3] == ["AA", "A01-0001"]
        await peer.close()

    run(listener_for(intake), client)
    assert resource_count(engine) == 2
    assert [e.status for e in list_events(engine)] == [EventStatus.PROCESSED]


def test_an_event_that_cannot_be_stored_closes_only_its_connection(
    intake: AdtIntake, engine: Engine
) -> None:
    def handle(raw: bytes) -> bytes:
        if b"UNSTORABLE" in raw:
            raise EventNotStored("database down")
        return intake.handle(raw).ack

    async def client(port: int) -> None:
        other = await Peer.connect(port)
        peer = await Peer.connect(port)
        peer.writer.writeblock(adt("A01", "UNSTORABLE"))
        await peer.writer.drain()
        with pytest.raises(asyncio.IncompleteReadError):  # closed, no ACK
            await peer.reader.readblock()
        ack = await other.send(admit())
        assert ack["MSA"][1:3] == ["AA", "A01-0001"]
        again = await Peer.connect(port)
        ack = await again.send(discharge())
        assert ack["MSA"][1:3] == ["AA", "A03-0001"]
        for p in (other, again):
            await p.close()

    run(MllpListener(handle, too_large=intake.too_large, port=0), client)
    assert len(list_events(engine)) == 2


def test_an_oversized_frame_is_refused_and_its_connection_closed(intake: AdtIntake) -> None:
    async def client(port: int) -> None:
        peer = await Peer.connect(port)
        ack = await peer.send(admit() + b"NTE|1||" + b"x" * 4096 + b"\r")
        assert ack["MSA"][1] == "AE"
        with pytest.raises(asyncio.IncompleteReadError):
            await peer.reader.readblock()
        peer = await Peer.connect(port)
        ack = await peer.send(admit())
        assert ack["MSA"][1] == "AA"
        await peer.close()

    run(listener_for(intake, max_frame_bytes=2048), client)


def test_unframe() -> None:
    assert unframe(b"\x0bMSH|x\x1c\r") == b"MSH|x"
    assert unframe(b"\r\n\x0bMSH|x\x1c\r") == b"MSH|x"
    assert unframe(b"junk\x0bMSH|x\x1c\r") == b"junk\x0bMSH|x"
    assert unframe(b"junk\x1c\r") == b"junk"


def test_one_message_delivered_on_two_connections_at_once_is_stored_once(
    intake: AdtIntake, store: FhirStore, engine: Engine
) -> None:
    async def deliver(port: int) -> list[str]:
        peer = await Peer.connect(port)
        ack = await peer.send(admit())
        await peer.close()
        return ack["MSA"][1:3]

    async def client(port: int) -> None:
        acks = await asyncio.gather(*(deliver(port) for _ in range(4)))
        assert acks == [["AA", "A01-0001"]] * 4

    run(listener_for(intake), client)
    assert len(list_events(engine)) == 1
    assert resource_count(engine) == 2
    (encounter,) = stored(store, "Encounter")
    assert encounter["meta"]["versionId"] == "1"
