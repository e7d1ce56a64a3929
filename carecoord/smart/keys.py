"""The service's signing keys (RS384 and ES384) and the public JWKS that EHRs fetch.

Layout of ``settings.effective_keys_dir`` (folder 0700, files 0600)::

    keys.json     the manifest: every key's kid, alg, status and public JWK
    {kid}.pem     the private key of each active key (PKCS#8)

``kid`` is the key's RFC 7638 thumbprint. Rotation makes a new active key per algorithm and
retires the old one: its private key is deleted at once, its public key stays in the JWKS for a
grace period so that EHRs holding a cached JWKS keep validating assertions signed just before.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from joserfc import jwk
from joserfc.jwk import ECKey, RSAKey

from carecoord.smart.connections import SigningAlg
from carecoord.smart.errors import KeyStoreError

__all__ = [
    "ALGORITHMS",
    "DEFAULT_GRACE_SECONDS",
    "KeyInfo",
    "KeyStore",
    "SigningKey",
]

log = logging.getLogger("carecoord.smart.keys")

ALGORITHMS: tuple[SigningAlg, ...] = ("RS384", "ES384")
#: How long a retired public key stays in the JWKS after a rotation.
DEFAULT_GRACE_SECONDS = 7 * 24 * 3600
RSA_BITS = 2048
_MANIFEST = "keys.json"

PrivateKey = RSAKey | ECKey


@dataclass(frozen=True)
class KeyInfo:
    """One key of the manifest (no private material)."""

    kid: str
    alg: SigningAlg
    status: Literal["active", "retired"]
    created_at: int
    public: dict[str, Any]
    retired_at: int | None = None
    #: When a retired key leaves the JWKS (end of its grace period).
    expires_at: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "kid": self.kid,
            "alg": self.alg,
            "status": self.status,
            "created_at": self.created_at,
            "retired_at": self.retired_at,
            "expires_at": self.expires_at,
            "public": self.public,
        }

    def expired(self, now: float) -> bool:
        """A retired key past its grace period."""
        return self.status == "retired" and (self.expires_at or 0) <= now


@dataclass(frozen=True)
class SigningKey:
    """An active private key, ready to sign."""

    kid: str
    alg: SigningAlg
    key: PrivateKey


def _new_key(alg: SigningAlg) -> PrivateKey:
    if alg == "RS384":
        return RSAKey.generate_key(RSA_BITS, private=True)
    return ECKey.generate_key("P-384", private=True)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


class KeyStore:
    """Our private keys on disk and the public JWKS; re-reads the manifest when it changes."""

    def __init__(self, directory: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self._clock = clock
        self._stamp: tuple[int, int] | None = None
        self._infos: list[KeyInfo] = []
        self._private: dict[str, SigningKey] = {}

    # -- reading ---------------------------------------------------------------------------------

    @property
    def _manifest(self) -> Path:
        return self.directory / _MANIFEST

    def keys(self) -> list[KeyInfo]:
        """Every key in the manifest, active first."""
        self._refresh()
        return sorted(self._infos, key=lambda k: (k.status != "active", k.alg, -k.created_at))

    def _refresh(self) -> None:
        try:
            st = self._manifest.stat()
        except FileNotFoundError:
            self._stamp, self._infos, self._private = None, [], {}
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        try:
            data = json.loads(self._manifest.read_text(encoding="utf-8"))
            infos = [
                KeyInfo(
                    kid=str(item["kid"]),
                    alg=cast(SigningAlg, item["alg"]),
                    status=item["status"],
                    created_at=int(item["created_at"]),
                    public=dict(item["public"]),
                    retired_at=item.get("retired_at"),
                    expires_at=item.get("expires_at"),
                )
                for item in data["keys"]
            ]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise KeyStoreError(f"{self._manifest}: unreadable key manifest") from exc
        self._stamp, self._infos, self._private = stamp, infos, {}

    def signing_key(self, alg: SigningAlg) -> SigningKey:
        """The active key for ``alg``; :class:`KeyStoreError` if there is none."""
        self._refresh()
        cached = self._private.get(alg)
        if cached is not None:
            return cached
        active = [k for k in self._infos if k.alg == alg and k.status == "active"]
        if not active:
            raise KeyStoreError(
                f"no active {alg} signing key in {self.directory}: run `carecoord keys generate`"
            )
        info = max(active, key=lambda k: k.created_at)
        path = self.directory / f"{info.kid}.pem"
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                log.warning("private key %s is readable by others (mode %o)", path.name, mode)
            key = jwk.import_key(path.read_bytes(), "RSA" if alg == "RS384" else "EC")
        except (OSError, ValueError) as exc:
            raise KeyStoreError(f"{path}: the private key cannot be read") from exc
        if not isinstance(key, RSAKey | ECKey) or key.thumbprint() != info.kid:
            raise KeyStoreError(f"{path}: the key does not match its kid")
        signing = SigningKey(kid=info.kid, alg=alg, key=key)
        self._private[alg] = signing
        return signing

    def jwks(self) -> dict[str, Any]:
        """The public JWKS: active keys and retired keys still within their grace period."""
        now = int(self._clock())
        keys = []
        for info in self.keys():
            if info.expired(now):
                continue
            keys.append({**info.public, "kid": info.kid, "alg": info.alg, "use": "sig"})
        return {"keys": keys}

    # -- writing ---------------------------------------------------------------------------------

    def _save(self, infos: Iterable[KeyInfo]) -> None:
        tmp = self.directory / f".{_MANIFEST}.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        body = json.dumps({"keys": [i.as_json() for i in infos]}, indent=2) + "\n"
        _write_private(tmp, body.encode())
        os.replace(tmp, self._manifest)
        self._stamp = None

    def _prepare_dir(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _create(self, alg: SigningAlg) -> KeyInfo:
        key = _new_key(alg)
        kid = key.thumbprint()
        _write_private(self.directory / f"{kid}.pem", key.as_pem(private=True))
        return KeyInfo(
            kid=kid,
            alg=alg,
            status="active",
            created_at=int(self._clock()),
            public=dict(key.as_dict(private=False)),
        )

    def generate(self, algs: Iterable[SigningAlg] = ALGORITHMS) -> list[KeyInfo]:
        """Create an active key for each algorithm that has none; returns the new keys."""
        self._prepare_dir()
        self._refresh()
        infos = list(self._infos)
        created = [
            self._create(alg)
            for alg in algs
            if not any(k.alg == alg and k.status == "active" for k in infos)
        ]
        if created:
            self._save([*infos, *created])
        return created

    def rotate(
        self, *, grace_seconds: int = DEFAULT_GRACE_SECONDS, algs: Iterable[SigningAlg] = ALGORITHMS
    ) -> list[KeyInfo]:
        """New active keys; the old ones are retired (public key kept ``grace_seconds``).

        Retired keys whose grace period is over are dropped from the manifest.
        """
        self._prepare_dir()
        self._refresh()
        now = int(self._clock())
        wanted = set(algs)
        kept: list[KeyInfo] = []
        retired_private: list[Path] = []
        for info in self._infos:
            if info.status == "active" and info.alg in wanted:
                retired_private.append(self.directory / f"{info.kid}.pem")
                info = KeyInfo(
                    kid=info.kid,
                    alg=info.alg,
                    status="retired",
                    created_at=info.created_at,
                    public=info.public,
                    retired_at=now,
                    expires_at=now + grace_seconds,
                )
            if info.expired(now):
                continue
            kept.append(info)
        created = [self._create(alg) for alg in ALGORITHMS if alg in wanted]
        self._save([*kept, *created])
        for path in retired_private:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        return created
