"""HL7 v2 ADT feed: reading frames, checking and mapping ADT events to FHIR, acknowledgements.

Everything particular to HL7 v2 lives here: character sets and line endings, code tables, the
identifier systems of assigning authorities, timestamps without a zone, ERR layouts per version.
The service side (event records, transactions, the MLLP listener) is :mod:`carecoord.events`.

Errors::

    Hl7v2Error (AE 207)                 a message CareCoord does not take as sent; no patient data
    ├── MessageRejected (AR)            not for this receiver
    │   ├── UnsupportedMessageType      AR 200 (type) / 201 (trigger event)
    │   └── UnsupportedVersion          AR 203
    ├── MessageInvalid (AE)             the content is wrong
    │   ├── Unparseable                 AE 100: no MSH first, broken structure, two messages
    │   ├── MissingField                AE 101: MSH-10, PID, PID-3, PV1, PV1-19 ...
    │   └── BadValue                    AE 102 (bad date) / 103 (table value)
    └── ProcessingFailed (AE)           valid, but could not be applied: 207, 205 (ambiguous id)
    FeedConfigError (ValueError)        the feed configuration file is invalid
"""

from integrations.hl7v2.ack import build_ack, new_control_id
from integrations.hl7v2.adt import (
    DELETE,
    SUPPORTED_EVENTS,
    AdtMessage,
    Visit,
    check_header,
    read_adt,
)
from integrations.hl7v2.config import SUPPORTED_VERSIONS, Authority, FeedConfig, load_feed_config
from integrations.hl7v2.errors import (
    BadValue,
    ErrorLocation,
    FeedConfigError,
    Hl7v2Error,
    MessageInvalid,
    MessageRejected,
    MissingField,
    ProcessingFailed,
    Unparseable,
    UnsupportedMessageType,
    UnsupportedVersion,
)
from integrations.hl7v2.mapping import encounter_resource, identifier_query, patient_resource
from integrations.hl7v2.reading import Header, ParsedMessage, decode, parse_message
from integrations.hl7v2.timestamps import fhir_date, fhir_datetime, parse_timestamp

__all__ = [
    "DELETE",
    "SUPPORTED_EVENTS",
    "SUPPORTED_VERSIONS",
    "AdtMessage",
    "Authority",
    "BadValue",
    "ErrorLocation",
    "FeedConfig",
    "FeedConfigError",
    "Header",
    "Hl7v2Error",
    "MessageInvalid",
    "MessageRejected",
    "MissingField",
    "ParsedMessage",
    "ProcessingFailed",
    "Unparseable",
    "UnsupportedMessageType",
    "UnsupportedVersion",
    "Visit",
    "build_ack",
    "check_header",
    "decode",
    "encounter_resource",
    "fhir_date",
    "fhir_datetime",
    "identifier_query",
    "load_feed_config",
    "new_control_id",
    "parse_message",
    "parse_timestamp",
    "patient_resource",
    "read_adt",
]
