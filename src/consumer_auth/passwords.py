"""Password verifiers: plaintext (constant time) and argon2id hashes.

Every verifier answers :meth:`PasswordVerifier.verify` in time that does not depend on how much of the
password was right, and can make a *decoy* of the same cost, which the credential index runs for unknown
usernames so that they cost the same as a wrong password.

Security note: a plaintext password lives in process memory as a SHA-256 digest only; comparing digests
with :func:`hmac.compare_digest` also hides the password's length.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from functools import lru_cache
from typing import ClassVar, Protocol

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

from .errors import ConfigError

__all__ = [
    "Argon2Password",
    "PasswordVerifier",
    "PlaintextPassword",
    "hash_password",
    "verifier_from_hash",
]

_HASHER = argon2.PasswordHasher()


class PasswordVerifier(Protocol):
    """What a credential needs from its stored password."""

    slow: ClassVar[bool]
    """True when :meth:`verify` is expensive enough that an event loop must not run it inline."""

    def verify(self, password: str) -> bool:
        """Whether ``password`` is the right one."""
        ...

    def decoy(self) -> PasswordVerifier:
        """A verifier of the same cost that no password matches (for unknown usernames)."""
        ...

    def needs_rehash(self) -> bool:
        """Whether the stored form should be replaced by a fresh argon2id hash after a success."""
        ...


class PlaintextPassword:
    """A password given in clear in the configuration, compared in constant time."""

    slow: ClassVar[bool] = False
    __slots__ = ("_digest",)

    def __init__(self, password: str) -> None:
        if not isinstance(password, str) or not password:
            raise ConfigError("password", "expected a non-empty string")
        self._digest = hashlib.sha256(password.encode("utf-8")).digest()

    def verify(self, password: str) -> bool:
        given = hashlib.sha256(password.encode("utf-8", "surrogatepass")).digest()
        return hmac.compare_digest(given, self._digest)

    def decoy(self) -> PasswordVerifier:
        return PlaintextPassword(secrets.token_urlsafe(16))

    def needs_rehash(self) -> bool:
        return True

    def __repr__(self) -> str:
        return "PlaintextPassword(<hidden>)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PlaintextPassword) and hmac.compare_digest(self._digest, other._digest)

    def __hash__(self) -> int:
        return hash(self._digest)


class Argon2Password:
    """An argon2 hash (``$argon2id$...``), as written by ``consumer-auth hash-password``."""

    slow: ClassVar[bool] = True
    __slots__ = ("_hash", "_parameters")

    def __init__(self, encoded: str) -> None:
        try:
            self._parameters = argon2.extract_parameters(encoded)
        except (InvalidHashError, ValueError):
            raise ConfigError("password_hash", "not a valid argon2 hash") from None
        self._hash = encoded

    def verify(self, password: str) -> bool:
        try:
            return _HASHER.verify(self._hash, password.encode("utf-8", "surrogatepass"))
        except (VerificationError, InvalidHashError, ValueError):
            return False

    def decoy(self) -> PasswordVerifier:
        p = self._parameters
        return _argon2_decoy(
            p.type, p.version, p.salt_len, p.hash_len, p.time_cost, p.memory_cost, p.parallelism
        )

    def needs_rehash(self) -> bool:
        return _HASHER.check_needs_rehash(self._hash)

    def __repr__(self) -> str:
        return "Argon2Password(<hidden>)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Argon2Password) and self._hash == other._hash

    def __hash__(self) -> int:
        return hash(self._hash)


@lru_cache(maxsize=16)
def _argon2_decoy(
    kind: argon2.Type,
    version: int,
    salt_len: int,
    hash_len: int,
    time_cost: int,
    memory_cost: int,
    parallelism: int,
) -> Argon2Password:
    """An argon2 hash of a random password with these parameters (made once per parameter set)."""
    parameters = argon2.Parameters(kind, version, salt_len, hash_len, time_cost, memory_cost, parallelism)
    hasher = argon2.PasswordHasher.from_parameters(parameters)
    return Argon2Password(hasher.hash(secrets.token_urlsafe(16)))


def verifier_from_hash(encoded: str) -> PasswordVerifier:
    """Build the verifier for a stored hash, chosen by its prefix.

    Raises:
        ConfigError: at ``password_hash`` when the hash is not in a supported format (the hash itself is
            never part of the message).
    """
    if not isinstance(encoded, str) or not encoded:
        raise ConfigError("password_hash", "expected a non-empty string")
    if encoded.startswith(("$argon2id$", "$argon2i$", "$argon2d$")):
        return Argon2Password(encoded)
    raise ConfigError("password_hash", "unsupported hash format (expected $argon2id$...)")


def hash_password(password: str) -> str:
    """Hash a password with argon2id and the library's default parameters.

    Example:
        >>> hash_password("123456").startswith("$argon2id$")
        True
    """
    if not password:
        raise ValueError("an empty password never authenticates")
    return _HASHER.hash(password)
