"""The service's secret key and encryption at rest for tokens (Fernet: AES-128-CBC + HMAC-SHA256).

The key comes from ``CARECOORD_SECRET_KEY`` (or the config file); without one, a random key is
generated once into ``data_dir/secret.key`` with mode 0600 and reused on every start. Purpose-bound
sub-keys are derived with HKDF, so one secret never serves two uses directly.
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from carecoord.settings import ConfigError, Settings

__all__ = ["DecryptionError", "Encryptor", "derive_key", "load_secret_key"]


class DecryptionError(Exception):
    """A ciphertext was not made with this service's key (or was altered)."""


def _key_file(settings: Settings) -> Path:
    return settings.data_dir / "secret.key"


def load_secret_key(settings: Settings) -> bytes:
    """The configured secret, or the one in ``data_dir/secret.key`` (created on first use)."""
    if settings.secret_key is not None:
        value = settings.secret_key.get_secret_value().encode()
        if len(value) < 32:
            raise ConfigError("secret_key: must be at least 32 characters")
        return value
    path = _key_file(settings)
    if path.exists():
        value = path.read_bytes().strip()
        if len(value) < 32:
            raise ConfigError(f"{path}: the secret key file is shorter than 32 characters")
        return value
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48).encode()
    # O_EXCL: two processes starting together must not write two different keys.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load_secret_key(settings)
    with os.fdopen(fd, "wb") as fh:
        fh.write(value + b"\n")
    return value


def derive_key(secret: bytes, purpose: str, length: int = 32) -> bytes:
    """A sub-key for one purpose (e.g. ``"token-encryption"``, ``"session-cookie"``)."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=purpose.encode()).derive(
        secret
    )


class Encryptor:
    """Encrypts short secrets (access and refresh tokens, PKCE verifiers) for storage."""

    def __init__(self, secret: bytes, purpose: str = "token-encryption") -> None:
        self._fernet = Fernet(base64.urlsafe_b64encode(derive_key(secret, purpose)))

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._fernet.decrypt(ciphertext.encode()).decode()
        except InvalidToken as exc:
            raise DecryptionError("ciphertext does not match this service's secret key") from exc
