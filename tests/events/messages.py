"""Realistic ADT messages for the tests, built field by field (numbers as in the standard)."""

from __future__ import annotations

MSH_DEFAULTS = {
    3: "EPICADT",
    4: "GENHOSP",
    5: "CARECOORD",
    6: "CC",
    7: "20240115103000",
    11: "P",
    12: "2.5.1",
}

PID_DEFAULTS = {
    1: "1",
    3: "MRN12345^^^GENHOSP^MR~123-45-6789^^^SSA^SS",
    5: "DOE^JOHN^QUINCY^JR^^^L~DOE^JOHNNY^^^^^N",
    7: "19800412",
    8: "M",
    11: "123 MAIN ST^APT 4B^SPRINGFIELD^IL^62701^USA^H",
    13: "(217)555-0101^PRN^PH~^NET^Internet^john.doe@example.org~^PRN^CP^^1^217^5550123",
    15: "EN",
    16: "M",
}

PV1_DEFAULTS = {
    1: "1",
    2: "I",
    3: "4N^401^B^GENHOSP",
    4: "E",
    7: "1234567890^WELBY^MARCUS^A^^DR^MD^^NPI^^^^NPI",
    10: "MED",
    19: "V0001^^^GENHOSP^VN",
    44: "20240115100000",
}


def segment(name: str, fields: dict[int, str]) -> str:
    last = max(fields, default=0)
    if name == "MSH":
        return "MSH|^~\\&|" + "|".join(fields.get(i, "") for i in range(3, last + 1))
    return name + "|" + "|".join(fields.get(i, "") for i in range(1, last + 1))


def adt(
    event: str,
    control_id: str = "MSG00001",
    *,
    msh: dict[int, str] | None = None,
    evn: dict[int, str] | None = None,
    pid: dict[int, str] | None = None,
    pv1: dict[int, str] | None = None,
    separator: str = "\r",
) -> bytes:
    """An ADT message; ``msh``/``pid``/``pv1`` override fields of the defaults ("" clears)."""
    msh_fields = {**MSH_DEFAULTS, 9: f"ADT^{event}^ADT_A01", 10: control_id, **(msh or {})}
    evn_fields = {1: event, 2: "20240115103000", 6: "20240115102500", **(evn or {})}
    segments = [
        segment("MSH", msh_fields),
        segment("EVN", evn_fields),
        segment("PID", {**PID_DEFAULTS, **(pid or {})}),
        segment("PV1", {**PV1_DEFAULTS, **(pv1 or {})}),
    ]
    return (separator.join(segments) + separator).encode()


def admit(control_id: str = "A01-0001") -> bytes:
    return adt("A01", control_id)


def discharge(control_id: str = "A03-0001") -> bytes:
    return adt(
        "A03",
        control_id,
        evn={2: "20240118141500", 6: "20240118140000"},
        pv1={36: "01", 45: "20240118140000"},
    )
