"""Password hashing with Argon2id, and verification that takes the same time for unknown users."""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError


class PasswordHashing:
    """Argon2id hashing (RFC 9106) with the cost chosen in ``[auth]``.

    Hashing costs tens of milliseconds by design: callers on the reactor run it in a thread.
    """

    def __init__(self, time_cost: int = 2, memory_cost: int = 19456, parallelism: int = 1) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism
        )
        # Verified against when the login is unknown, so that an unknown user costs the same
        # time as a wrong password and logins cannot be enumerated by timing.
        self._decoy = self._hasher.hash(secrets.token_hex(16))

    @classmethod
    def from_config(cls, auth) -> PasswordHashing:
        """From ``[auth]`` (its memory cost is in bytes; Argon2 counts KiB)."""
        return cls(auth.argon2_time_cost, auth.argon2_memory_cost // 1024, auth.argon2_parallelism)

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, stored_hash: str | None, password: str) -> bool:
        try:
            return self._hasher.verify(stored_hash or self._decoy, password) and stored_hash is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False


def random_password(length: int = 20) -> str:
    """A password for generated accounts (the first administrator)."""
    alphabet = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return "".join(secrets.choice(alphabet) for _ in range(length))
