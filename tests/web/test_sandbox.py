"""The sandbox EHR's OAuth request adapters."""

from __future__ import annotations

import httpx

from carecoord.web.sandbox import _json_request


def test_a_json_bodied_request_carries_its_fields() -> None:
    request = httpx.Request(
        "POST", "http://ehr.test/oauth/register", json={"client_name": "CareCoord"}
    )
    adapted = _json_request(request)
    assert adapted.method == "POST" and adapted.uri == "http://ehr.test/oauth/register"
    assert adapted.payload.data == {"client_name": "CareCoord"}


def test_a_body_that_is_not_a_json_object_reads_as_empty() -> None:
    for content in (b"not json", b"[1, 2]", b""):
        request = httpx.Request("POST", "http://ehr.test/oauth/register", content=content)
        assert _json_request(request).payload.data == {}
