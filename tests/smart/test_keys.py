"""Our signing keys: files and modes, RFC 7638 kids, rotation with grace, the JWKS route."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import respx
from fastapi.testclient import TestClient
from joserfc.jwk import import_key

from carecoord.smart.errors import KeyStoreError
from carecoord.smart.keys import KeyStore


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_generate_writes_private_keys_readable_only_by_the_owner(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys")
    created = store.generate()
    assert sorted(k.alg for k in created) == ["ES384", "RS384"]
    assert _mode(tmp_path / "keys") == 0o700
    for path in (tmp_path / "keys").iterdir():
        assert _mode(path) == 0o600, path.name
    for info in created:
        key = import_key(info.public)
        assert key.thumbprint() == info.kid  # RFC 7638
        assert (tmp_path / "keys" / f"{info.kid}.pem").exists()
    assert store.generate() == []  # existing keys are kept


def test_jwks_has_only_public_parts(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys")
    store.generate()
    jwks = store.jwks()
    assert {k["alg"] for k in jwks["keys"]} == {"RS384", "ES384"}
    for key in jwks["keys"]:
        assert key["use"] == "sig" and key["kid"]
        assert "d" not in key and "p" not in key


def test_rotation_keeps_the_old_public_key_for_the_grace_period(tmp_path: Path) -> None:
    now = [1_000_000.0]
    store = KeyStore(tmp_path / "keys", clock=lambda: now[0])
    store.generate()
    old = store.signing_key("RS384")
    store.rotate(grace_seconds=3600)
    new = store.signing_key("RS384")
    assert new.kid != old.kid
    assert not (tmp_path / "keys" / f"{old.kid}.pem").exists()  # the old private key is gone
    kids = {k["kid"] for k in store.jwks()["keys"]}
    assert old.kid in kids and new.kid in kids and len(kids) == 4
    now[0] += 3601
    kids = {k["kid"] for k in store.jwks()["keys"]}
    assert old.kid not in kids and new.kid in kids
    store.rotate(grace_seconds=60)  # rotating again drops expired keys from the manifest
    manifest = json.loads((tmp_path / "keys" / "keys.json").read_text())
    assert old.kid not in {k["kid"] for k in manifest["keys"]}


def test_a_running_service_sees_a_rotation(tmp_path: Path) -> None:
    service = KeyStore(tmp_path / "keys")
    KeyStore(tmp_path / "keys").generate()
    before = service.signing_key("ES384").kid
    KeyStore(tmp_path / "keys").rotate()
    assert service.signing_key("ES384").kid != before


def test_missing_or_broken_keys_are_clear_errors(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys")
    with pytest.raises(KeyStoreError, match="carecoord keys generate"):
        store.signing_key("RS384")
    assert store.jwks() == {"keys": []}
    store.generate(["RS384"])
    kid = store.signing_key("RS384").kid
    fresh = KeyStore(tmp_path / "keys")
    (tmp_path / "keys" / f"{kid}.pem").write_bytes(b"garbage")
    with pytest.raises(KeyStoreError, match="cannot be read"):
        fresh.signing_key("RS384")
    (tmp_path / "keys" / "keys.json").write_text("{")
    with pytest.raises(KeyStoreError, match="manifest"):
        KeyStore(tmp_path / "keys").keys()


def test_jwks_route(browser: TestClient, keystore: KeyStore, ehr_http: respx.MockRouter) -> None:
    response = browser.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.json() == keystore.jwks()
    assert "max-age" in response.headers["cache-control"]
