"""Sealing session backups: AES-256-GCM with a key derived from ``ENCRYPTION_KEY`` by scrypt.

Layout of a sealed backup::

    b"WAB2" | salt (16) | nonce (12) | ciphertext + GCM tag (16)

The salt is drawn once per worker process and stored in every backup, so a
restoring worker derives the same key from its ``ENCRYPTION_KEY`` (scrypt is
slow on purpose: ENCRYPTION_KEY may be a passphrase; derived keys are cached per
salt). The header, the session id and the backup's version (its object name, which
carries the time it was written) are authenticated as associated data: a flipped
bit, a wrong key, a backup moved to another session's name, or an old backup copied
under a newer version's name is refused and never loaded. ``b"WAB1"`` backups (made
before versions were bound) authenticate the session id only; the caller decides
whether it still accepts them. Without ``ENCRYPTION_KEY`` backups are stored as
``b"WAB0" | tar`` and the manifest's SHA-256 guards against corruption only.
"""

from __future__ import annotations

import os
import threading

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

MAGIC_SEALED = b"WAB2"
MAGIC_SEALED_V1 = b"WAB1"
MAGIC_PLAIN = b"WAB0"
SALT_LEN = 16
NONCE_LEN = 12
HEADER_LEN = len(MAGIC_SEALED) + SALT_LEN + NONCE_LEN
# scrypt cost: 2**15 * 8 * 128 bytes = 32 MiB and ~0.1 s; derived once per salt.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1


class BackupRefused(Exception):
    """A backup that must not be loaded: wrong key, tampered, corrupt, or not what we expect."""


class BackupCipher:
    """Seals and opens backups with one ENCRYPTION_KEY (or none)."""

    def __init__(self, encryption_key: str | None) -> None:
        self._secret = encryption_key.encode() if encryption_key else None
        self._salt = os.urandom(SALT_LEN)
        self._keys: dict[bytes, bytes] = {}
        self._lock = threading.Lock()

    @property
    def encrypting(self) -> bool:
        return self._secret is not None

    def _key(self, salt: bytes) -> bytes:
        assert self._secret is not None
        with self._lock:
            key = self._keys.get(salt)
            if key is None:
                key = Scrypt(salt=salt, length=32, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P).derive(self._secret)
                self._keys[salt] = key
            return key

    def seal(self, plain: bytes, session_id: str, version: str) -> bytes:
        """The stored form of ``version`` of a backup of ``session_id`` (blocking: call in a thread)."""
        if self._secret is None:
            return MAGIC_PLAIN + plain
        nonce = os.urandom(NONCE_LEN)
        header = MAGIC_SEALED + self._salt + nonce
        sealed = AESGCM(self._key(self._salt)).encrypt(nonce, plain, _bound(header, session_id, version))
        return header + sealed

    @staticmethod
    def binds_version(blob: bytes) -> bool:
        """Whether a stored backup authenticates its version (False for the older WAB1 format)."""
        return not blob.startswith(MAGIC_SEALED_V1)

    def open(self, blob: bytes, session_id: str, version: str) -> bytes:
        """The archive inside a stored backup; raises BackupRefused when it must not be loaded."""
        if blob.startswith(MAGIC_PLAIN):
            if self._secret is not None:
                # A plain backup where encryption is configured could be a planted one: refuse it.
                raise BackupRefused("the backup is not encrypted but ENCRYPTION_KEY is set; refusing to load it")
            return blob[len(MAGIC_PLAIN) :]
        legacy = blob.startswith(MAGIC_SEALED_V1)
        if not (legacy or blob.startswith(MAGIC_SEALED)) or len(blob) < HEADER_LEN + 16:
            raise BackupRefused("the backup is not in a known format (corrupt or not a backup)")
        if self._secret is None:
            raise BackupRefused("the backup is encrypted; set ENCRYPTION_KEY to the key it was made with")
        header = blob[:HEADER_LEN]
        salt = header[len(MAGIC_SEALED) : len(MAGIC_SEALED) + SALT_LEN]
        nonce = header[len(MAGIC_SEALED) + SALT_LEN :]
        bound = header + session_id.encode() if legacy else _bound(header, session_id, version)
        try:
            return AESGCM(self._key(salt)).decrypt(nonce, blob[HEADER_LEN:], bound)
        except InvalidTag:
            raise BackupRefused(
                "the backup failed authentication: wrong ENCRYPTION_KEY, or it was tampered with"
            ) from None


def _bound(header: bytes, session_id: str, version: str) -> bytes:
    """The associated data of a sealed backup: its header, session and version (NUL-separated)."""
    return header + session_id.encode() + b"\0" + version.encode()
