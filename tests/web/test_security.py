"""Security headers, embeddable cookies and CSRF tokens."""

from __future__ import annotations

from carecoord.web.security import (
    content_security_policy,
    csrf_token,
    embedding_cookie,
    is_cross_site,
    same_origin,
    valid_csrf,
)


def test_csp_allows_nothing_inline_and_names_the_ehr_as_frame_ancestor() -> None:
    csp = content_security_policy(["https://ehr.example.org"])
    assert "script-src 'self';" in csp and "style-src 'self';" in csp
    assert "unsafe" not in csp
    assert csp.endswith("frame-ancestors 'self' https://ehr.example.org")
    assert content_security_policy([]).endswith("frame-ancestors 'self'")


def test_session_and_launch_cookies_become_partitioned_cross_site_cookies() -> None:
    header = b"carecoord_session=abc; HttpOnly; Max-Age=60; Path=/; SameSite=lax"
    out = embedding_cookie(header)
    assert out.startswith(b"carecoord_session=abc; HttpOnly; Max-Age=60; Path=/")
    assert out.endswith(b"; SameSite=None; Secure; Partitioned")
    assert b"lax" not in out
    assert embedding_cookie(b"carecoord_launch=x; Path=/; SameSite=lax").endswith(b"Partitioned")
    other = b"someone_else=1; SameSite=lax"
    assert embedding_cookie(other) == other


def test_cross_site_is_decided_on_the_registrable_domain() -> None:
    assert not is_cross_site("https://ehr.example.org", "cc.example.org")
    assert is_cross_site("https://ehr.hospital.org", "cc.example.org")
    assert is_cross_site("http://localhost:8001", "127.0.0.1")
    assert is_cross_site("https://ehr.example.org", None)


def test_csrf_tokens_are_bound_to_the_session_and_the_secret() -> None:
    secret = b"k" * 32
    token = csrf_token(secret, "session-a")
    assert valid_csrf(secret, "session-a", token)
    assert not valid_csrf(secret, "session-b", token)
    assert not valid_csrf(b"x" * 32, "session-a", token)
    assert not valid_csrf(secret, None, token)
    assert not valid_csrf(secret, "session-a", None)


def test_same_origin() -> None:
    assert same_origin("http://127.0.0.1:8000", "http://127.0.0.1:8000")
    assert not same_origin("http://evil.example", "http://127.0.0.1:8000")
    assert same_origin(None, "http://127.0.0.1:8000")
