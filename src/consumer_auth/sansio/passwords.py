"""Password verifiers for every stored form, and the verification cache.

This module is long because each stored form's verifier, decoy and rehash rule belong together with the
table below, and the cache keys on the verifiers.

Stored forms (``password_hash``, chosen by prefix in :func:`verifier_from_hash`):

======================  ==========================================  =====  ==============
form                    written by                                  slow   needs rehash
======================  ==========================================  =====  ==============
``$argon2id$...``       ``consumer-auth hash-password``              yes    if its parameters are not the defaults
``$2a$``/``$2b$``/``$2y$``  ``htpasswd -B``, most bcrypt libraries    yes    always
``$apr1$...``           ``htpasswd -m`` (htpasswd's default)         yes    always
``$5$``/``$6$...``      ``openssl passwd -5/-6``, ``mkpasswd``        yes    always
``{SHA}...``            ``htpasswd -s``                             no     always
``{PLAIN}...``          nginx's plain-text scheme                    no     always
clear ``password``      the configuration itself                    no     always
======================  ==========================================  =====  ==============

Every verifier answers :meth:`PasswordVerifier.verify` in time that does not depend on how much of the
password was right, and can make a *decoy* of the same cost, which the credential index runs for unknown
usernames so that they cost the same as a wrong password. An empty password never verifies.

A :class:`VerificationCache` remembers recent *successful* slow verifications under a MAC with a
random per-cache key, so a repeated right password costs microseconds; ``docs/passwords.md`` gives its
threat model.

Security note: a plaintext password lives in process memory as a SHA-256 digest only; comparing digests
with :func:`hmac.compare_digest` also hides the password's length.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import struct
import threading
import time
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, ClassVar, Protocol

import argon2
from argon2.exceptions import Argon2Error, InvalidHashError

from consumer_auth.errors import ConfigError

if TYPE_CHECKING:
    from types import ModuleType

__all__ = [
    "ARGON2_BOUNDS",
    "Apr1Password",
    "Argon2Password",
    "BcryptPassword",
    "PasswordVerifier",
    "PlaintextPassword",
    "Sha1Password",
    "ShaCryptPassword",
    "VerificationCache",
    "apr1_hash",
    "hash_password",
    "sha_crypt_hash",
    "verifier_from_hash",
]

_HASHER = argon2.PasswordHasher()


def _bytes(password: str) -> bytes:
    # surrogatepass: a password decoded with errors never makes encoding raise on the request path.
    return password.encode("utf-8", "surrogatepass")


class PasswordVerifier(Protocol):
    """What a credential needs from its stored password."""

    slow: ClassVar[bool]
    """True when :meth:`verify` is expensive enough that an event loop must not run it inline, and worth
    remembering in a :class:`VerificationCache`."""

    @property
    def identity(self) -> bytes:
        """Bytes that differ whenever the stored password differs (for a hash: the hash itself).

        They key the verification cache, so a changed password never meets an old success.
        """
        ...

    def verify(self, password: str) -> bool:
        """Whether ``password`` is the right one (never for an empty password)."""
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
        self._digest = hashlib.sha256(_bytes(password)).digest()

    @property
    def identity(self) -> bytes:
        return self._digest

    def verify(self, password: str) -> bool:
        given = hashlib.sha256(_bytes(password)).digest()
        return hmac.compare_digest(given, self._digest) and bool(password)

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


class _Encoded:
    """Shared behaviour of the verifiers that keep an encoded hash string."""

    __slots__ = ("_hash",)
    _hash: str

    @property
    def identity(self) -> bytes:
        return self._hash.encode("ascii")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(<hidden>)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Encoded) and type(other) is type(self) and self._hash == other._hash

    def __hash__(self) -> int:
        return hash(self._hash)


ARGON2_BOUNDS = {
    "salt_len": (8, 1024),
    "hash_len": (4, 1024),
    "time_cost": (1, 16),
    "memory_cost": (8, 262_144),
    "parallelism": (1, 16),
}
"""What a stored argon2 hash may use, as ``(least, most)``: salt and hash length in bytes, passes,
memory in KiB (at most 256 MiB), lanes. Outside them a hash is refused at load (``docs/passwords.md``)."""


def _check_argon2(parameters: argon2.Parameters) -> None:
    for name, (least, most) in ARGON2_BOUNDS.items():
        value = getattr(parameters, name)
        if not least <= value <= most:
            raise ConfigError(
                "password_hash", f"not a usable argon2 hash: {name} {value} is outside {least}-{most}"
            )
    if parameters.memory_cost < 8 * parameters.parallelism:
        raise ConfigError("password_hash", "not a usable argon2 hash: memory_cost is under 8 KiB per lane")


class Argon2Password(_Encoded):
    """An argon2 hash (``$argon2id$...``), as written by ``consumer-auth hash-password``.

    Raises:
        ConfigError: at ``password_hash`` when the hash is malformed or its parameters are outside
            :data:`ARGON2_BOUNDS` (the hash is never part of the message).
    """

    slow: ClassVar[bool] = True
    __slots__ = ("_outdated",)

    def __init__(self, encoded: str) -> None:
        try:
            parameters = argon2.extract_parameters(encoded)
            self._outdated = _HASHER.check_needs_rehash(encoded)
        except (InvalidHashError, ValueError):
            raise ConfigError("password_hash", "not a valid argon2 hash") from None
        _check_argon2(parameters)
        self._hash = encoded

    def verify(self, password: str) -> bool:
        if not password:
            return False
        try:
            return _HASHER.verify(self._hash, _bytes(password))
        except (Argon2Error, InvalidHashError, ValueError):
            return False

    def decoy(self) -> PasswordVerifier:
        # The gateway's own parameters, never a stored hash's: whoever writes a hash must not choose
        # what every unknown username costs.
        return _argon2_decoy()

    def needs_rehash(self) -> bool:
        return self._outdated


@lru_cache(maxsize=1)
def _argon2_decoy() -> Argon2Password:
    """An argon2id hash of a random password with :func:`hash_password`'s parameters (made once)."""
    return Argon2Password(_HASHER.hash(secrets.token_urlsafe(16)))


# bcrypt: "$2b$" + two-digit cost + "$" + 22 characters of salt + 31 of hash, in bcrypt's base64.
_BCRYPT = re.compile(r"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}")
_BCRYPT_MAX_BYTES = 72
_BCRYPT_MAX_COST = 16  # 2**16 rounds, seconds per check: the decoy of unknown usernames costs the same


def _bcrypt_module() -> ModuleType:
    try:
        import bcrypt
    except ImportError:
        raise ConfigError(
            "password_hash",
            "bcrypt hashes need the 'bcrypt' package (pip install 'consumer-auth[bcrypt]')",
        ) from None
    return bcrypt


class BcryptPassword(_Encoded):
    """A bcrypt hash (``$2a$``, ``$2b$`` or ``$2y$``), as ``htpasswd -B`` writes it.

    Needs the optional ``bcrypt`` package (``pip install 'consumer-auth[bcrypt]'``). As every bcrypt
    implementation does, only the first 72 bytes of a password count.
    """

    slow: ClassVar[bool] = True
    __slots__ = ("_bcrypt", "_cost")

    def __init__(self, encoded: str) -> None:
        match = _BCRYPT.fullmatch(encoded)
        if match is None:
            raise ConfigError("password_hash", "not a valid bcrypt hash")
        if not 4 <= int(match.group(1)) <= _BCRYPT_MAX_COST:
            raise ConfigError(
                "password_hash", f"not a usable bcrypt hash: its cost is outside 4-{_BCRYPT_MAX_COST}"
            )
        self._bcrypt = _bcrypt_module()
        self._cost = int(match.group(1))
        self._hash = encoded

    def verify(self, password: str) -> bool:
        if not password:
            return False
        try:
            return bool(self._bcrypt.checkpw(_bytes(password)[:_BCRYPT_MAX_BYTES], self._hash.encode()))
        except ValueError:  # a NUL byte in the password, for instance
            return False

    def decoy(self) -> PasswordVerifier:
        return _bcrypt_decoy(self._cost)

    def needs_rehash(self) -> bool:
        return True


@lru_cache(maxsize=8)
def _bcrypt_decoy(cost: int) -> BcryptPassword:
    bcrypt = _bcrypt_module()
    encoded = bcrypt.hashpw(secrets.token_urlsafe(16).encode(), bcrypt.gensalt(cost)).decode()
    return BcryptPassword(encoded)


# APR1-MD5, Apache's variant of the FreeBSD MD5-crypt: "$apr1$" + salt (1-8 characters) + "$" + 22
# characters. The algorithm is public (Apache's apr_md5.c documents it); this is a fresh implementation.
_APR1 = re.compile(r"\$apr1\$([^$:\n]{1,8})\$([./0-9A-Za-z]{22})")
_ITOA64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_APR1_MAGIC = b"$apr1$"


def _to64(value: int, count: int) -> str:
    out = []
    for _ in range(count):
        out.append(_ITOA64[value & 0x3F])
        value >>= 6
    return "".join(out)


def _apr1_digest(password: bytes, salt: bytes) -> str:
    md5 = hashlib.md5
    alternate = md5(password + salt + password).digest()
    context = [password, _APR1_MAGIC, salt]
    for left in range(len(password), 0, -16):
        context.append(alternate[: min(16, left)])
    bits = len(password)
    while bits:
        context.append(b"\0" if bits & 1 else password[:1])
        bits >>= 1
    final = md5(b"".join(context)).digest()
    for round_ in range(1000):
        step = password if round_ & 1 else final
        if round_ % 3:
            step += salt
        if round_ % 7:
            step += password
        step += final if round_ & 1 else password
        final = md5(step).digest()
    text = "".join(
        _to64((final[a] << 16) | (final[b] << 8) | final[c], 4)
        for a, b, c in ((0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5))
    )
    return text + _to64(final[11], 2)


def apr1_hash(password: str, salt: str | None = None) -> str:
    """Hash a password as ``htpasswd -m`` does (``$apr1$``). For tests and migrations only.

    APR1-MD5 is weak by today's standards; prefer :func:`hash_password` (argon2id) for anything new.

    Example:
        >>> apr1_hash("123456", "70iJyua7")
        '$apr1$70iJyua7$gMCnDoXYSPfM9sURRcgI3.'
    """
    if salt is None:
        salt = "".join(secrets.choice(_ITOA64) for _ in range(8))
    if not re.fullmatch(r"[./0-9A-Za-z]{1,8}", salt):
        raise ValueError("an APR1 salt is 1-8 characters of [./0-9A-Za-z]")
    return f"$apr1${salt}${_apr1_digest(_bytes(password), salt.encode())}"


class Apr1Password(_Encoded):
    """An APR1-MD5 hash (``$apr1$``), the default of Apache's ``htpasswd``.

    It runs 1,000 rounds of MD5 (about a millisecond), so it counts as slow: off the event loop, and
    cached. Weak against offline guessing: a success always asks for a rehash.
    """

    slow: ClassVar[bool] = True
    __slots__ = ("_digest", "_salt")

    def __init__(self, encoded: str) -> None:
        match = _APR1.fullmatch(encoded)
        if match is None:
            raise ConfigError("password_hash", "not a valid $apr1$ hash")
        self._salt = match.group(1).encode("utf-8")
        self._digest = match.group(2)
        self._hash = encoded

    def verify(self, password: str) -> bool:
        computed = _apr1_digest(_bytes(password), self._salt)
        return hmac.compare_digest(computed, self._digest) and bool(password)

    def decoy(self) -> PasswordVerifier:
        return Apr1Password(apr1_hash(secrets.token_urlsafe(16)))

    def needs_rehash(self) -> bool:
        return True


# SHA-crypt, "$5$" (SHA-256) and "$6$" (SHA-512), as Ulrich Drepper published it ("Unix crypt using
# SHA-256 and SHA-512") and glibc, `openssl passwd -5/-6` and `mkpasswd` write it: an optional
# "rounds=N$" (glibc takes 1000-999999999, default 5000), a salt of up to 16 characters, "$", the encoded
# digest. Rounds are bounded here at 1,000,000 (about a second per check in this pure-Python
# implementation): the decoy of unknown usernames costs what a stored hash costs, so a writer must not
# be able to choose minutes per request.
# A fresh implementation (the standard library's `crypt` is deprecated and libc-dependent), checked
# against vectors from `openssl passwd` and glibc in tests/test_passwords.py.
_SHA_CRYPT = re.compile(r"\$([56])\$(?:rounds=([0-9]{1,9})\$)?([^$:\n]{0,16})\$([./0-9A-Za-z]+)")
_SHA_CRYPT_DEFAULT_ROUNDS = 5000
_SHA_CRYPT_ROUNDS = range(1000, 1_000_001)
_SHA_CRYPT_LENGTH = {"5": 43, "6": 86}
# The order in which the digest's bytes are encoded, three at a time, then the leftover ones.
_SHA_CRYPT_ORDER = {
    "5": (
        (0, 10, 20), (21, 1, 11), (12, 22, 2), (3, 13, 23), (24, 4, 14),
        (15, 25, 5), (6, 16, 26), (27, 7, 17), (18, 28, 8), (9, 19, 29),
    ),
    "6": (
        (0, 21, 42), (22, 43, 1), (44, 2, 23), (3, 24, 45), (25, 46, 4), (47, 5, 26), (6, 27, 48),
        (28, 49, 7), (50, 8, 29), (9, 30, 51), (31, 52, 10), (53, 11, 32), (12, 33, 54), (34, 55, 13),
        (56, 14, 35), (15, 36, 57), (37, 58, 16), (59, 17, 38), (18, 39, 60), (40, 61, 19), (62, 20, 41),
    ),
}  # fmt: skip


def _repeat(block: bytes, length: int) -> bytes:
    return (block * (length // len(block) + 1))[:length]


def _sha_crypt_digest(password: bytes, salt: bytes, variant: str, rounds: int) -> str:
    new = hashlib.sha256 if variant == "5" else hashlib.sha512
    alternate = new(password + salt + password).digest()
    context = new(password + salt + _repeat(alternate, len(password)))
    length = len(password)
    while length:
        context.update(alternate if length & 1 else password)
        length >>= 1
    current = context.digest()
    p_bytes = _repeat(new(password * len(password)).digest(), len(password))
    s_bytes = _repeat(new(salt * (16 + current[0])).digest(), len(salt))
    for round_ in range(rounds):
        context = new(p_bytes if round_ & 1 else current)
        if round_ % 3:
            context.update(s_bytes)
        if round_ % 7:
            context.update(p_bytes)
        context.update(current if round_ & 1 else p_bytes)
        current = context.digest()
    text = "".join(
        _to64((current[a] << 16) | (current[b] << 8) | current[c], 4) for a, b, c in _SHA_CRYPT_ORDER[variant]
    )
    if variant == "5":
        return text + _to64((current[31] << 8) | current[30], 3)
    return text + _to64(current[63], 2)


def sha_crypt_hash(
    password: str, variant: str = "6", salt: str | None = None, rounds: int | None = None
) -> str:
    """Hash a password as ``openssl passwd -6`` (``variant="6"``, SHA-512) or ``-5`` (SHA-256) does.
    For tests and migrations only: prefer :func:`hash_password` (argon2id) for anything new.

    Example:
        >>> sha_crypt_hash("Hello world!", "6", "saltstring")[:40]
        '$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8'
    """
    if variant not in _SHA_CRYPT_LENGTH:
        raise ValueError("variant is '5' (SHA-256) or '6' (SHA-512)")
    if salt is None:
        salt = "".join(secrets.choice(_ITOA64) for _ in range(16))
    if not re.fullmatch(r"[./0-9A-Za-z]{1,16}", salt):
        raise ValueError("a SHA-crypt salt is 1-16 characters of [./0-9A-Za-z]")
    if rounds is not None and rounds not in _SHA_CRYPT_ROUNDS:
        raise ValueError("SHA-crypt rounds are 1000 to 1000000")
    prefix = f"${variant}$" + (f"rounds={rounds}$" if rounds is not None else "")
    digest = _sha_crypt_digest(
        _bytes(password), salt.encode(), variant, _SHA_CRYPT_DEFAULT_ROUNDS if rounds is None else rounds
    )
    return f"{prefix}{salt}${digest}"


class ShaCryptPassword(_Encoded):
    """A SHA-crypt hash: ``$6$`` (SHA-512) or ``$5$`` (SHA-256), as ``openssl passwd -6``/``-5``,
    ``mkpasswd`` and ``/etc/shadow`` write it, and as nginx accepts in its ``auth_basic_user_file``.

    It runs ``rounds`` hash rounds (5,000 by default: tens of milliseconds here), so it counts as slow:
    off the event loop, and cached. A success always asks for a rehash to argon2id.
    """

    slow: ClassVar[bool] = True
    __slots__ = ("_digest", "_rounds", "_salt", "_variant")

    def __init__(self, encoded: str) -> None:
        match = _SHA_CRYPT.fullmatch(encoded)
        given = match.group(2) if match is not None else None
        rounds = int(given) if given is not None else _SHA_CRYPT_DEFAULT_ROUNDS
        if (
            match is None
            or len(match.group(4)) != _SHA_CRYPT_LENGTH[match.group(1)]
            or rounds not in _SHA_CRYPT_ROUNDS
        ):
            raise ConfigError(
                "password_hash", "not a valid $5$/$6$ SHA-crypt hash (rounds 1000-1000000, salt up to 16)"
            )
        self._variant = match.group(1)
        self._rounds = rounds
        self._salt = match.group(3).encode("utf-8")
        self._digest = match.group(4)
        self._hash = encoded

    def verify(self, password: str) -> bool:
        computed = _sha_crypt_digest(_bytes(password), self._salt, self._variant, self._rounds)
        return hmac.compare_digest(computed, self._digest) and bool(password)

    def decoy(self) -> PasswordVerifier:
        rounds = None if self._rounds == _SHA_CRYPT_DEFAULT_ROUNDS else self._rounds
        return ShaCryptPassword(sha_crypt_hash(secrets.token_urlsafe(16), self._variant, rounds=rounds))

    def needs_rehash(self) -> bool:
        return True


class Sha1Password(_Encoded):
    """An unsalted SHA-1 hash (``{SHA}`` + base64), as ``htpasswd -s`` writes it.

    Fast, and weak against offline guessing: it is accepted so that htpasswd files carry over, and a
    success always asks for a rehash.
    """

    slow: ClassVar[bool] = False
    __slots__ = ("_digest",)

    def __init__(self, encoded: str) -> None:
        try:
            digest = binascii.a2b_base64(encoded[len("{SHA}") :], strict_mode=True)
        except ValueError:  # binascii.Error, or text that is not ASCII
            digest = b""
        if len(digest) != 20:  # SHA-1 digest size
            raise ConfigError("password_hash", "not a valid {SHA} hash (base64 of a 20-byte SHA-1 digest)")
        self._digest = digest
        self._hash = encoded

    def verify(self, password: str) -> bool:
        given = hashlib.sha1(_bytes(password)).digest()  # noqa: S324 - the stored form is SHA-1
        return hmac.compare_digest(given, self._digest) and bool(password)

    def decoy(self) -> PasswordVerifier:
        return Sha1Password("{SHA}" + base64.b64encode(secrets.token_bytes(20)).decode())

    def needs_rehash(self) -> bool:
        return True


def _plain_scheme(encoded: str) -> PasswordVerifier:
    # RFC 2307's "{PLAIN}" scheme, as nginx's auth_basic_user_file accepts it: the password in clear.
    password = encoded[len("{PLAIN}") :]
    if not password:
        raise ConfigError("password_hash", "an empty {PLAIN} password never authenticates")
    return PlaintextPassword(password)


_FORMATS: tuple[tuple[tuple[str, ...], Callable[[str], PasswordVerifier]], ...] = (
    (("$argon2id$", "$argon2i$", "$argon2d$"), Argon2Password),
    (("$2a$", "$2b$", "$2y$"), BcryptPassword),
    (("$apr1$",), Apr1Password),
    (("$5$", "$6$"), ShaCryptPassword),
    (("{SHA}",), Sha1Password),
    (("{PLAIN}",), _plain_scheme),
)


def verifier_from_hash(encoded: str) -> PasswordVerifier:
    """Build the verifier for a stored hash, chosen by its prefix.

    Accepts argon2 (``$argon2id$``), bcrypt (``$2a$``/``$2b$``/``$2y$``, needs the ``bcrypt`` extra),
    APR1-MD5 (``$apr1$``), SHA-crypt (``$5$``/``$6$``) and SHA-1 (``{SHA}``) hashes, and nginx's
    ``{PLAIN}`` scheme (the password in clear, kept as a :class:`PlaintextPassword`).

    Raises:
        ConfigError: at ``password_hash`` when the hash is malformed or not in a supported format (the
            hash itself is never part of the message).
    """
    if not isinstance(encoded, str) or not encoded:
        raise ConfigError("password_hash", "expected a non-empty string")
    for prefixes, build in _FORMATS:
        if encoded.startswith(prefixes):
            return build(encoded)
    raise ConfigError(
        "password_hash",
        "unsupported hash format (expected $argon2id$, $2b$/$2y$ bcrypt, $apr1$, $5$/$6$, {SHA} or {PLAIN})",
    )


def hash_password(password: str) -> str:
    """Hash a password with argon2id and the library's default parameters.

    Example:
        >>> hash_password("123456").startswith("$argon2id$")
        True
    """
    if not password:
        raise ValueError("an empty password never authenticates")
    return _HASHER.hash(password)


_LENGTHS = struct.Struct(">II")  # lengths first: the fields of a cache key can never run into each other


class VerificationCache:
    """Remembers recent *successful* slow verifications, so a repeated right password costs microseconds.

    An entry is ``MAC(key, login, stored hash, password)`` → expiry time, where the MAC is keyed BLAKE2b
    (RFC 7693's keyed mode, a MAC by design, three times faster than HMAC-SHA256 here) and ``key`` is 32
    random bytes made with the cache and never stored, shown or shared. So:

    - nothing in the cache can be tested against a password guess without the key;
    - an entry names the exact stored hash it was verified against: once a credential's password changes,
      its old successes can never match again (no invalidation step to forget);
    - only successes are ever stored; a wrong password always runs the real hash.

    The cache is bounded (``max_entries``, oldest first out) and every entry expires ``ttl`` seconds after
    its verification. It is safe to share between threads. See ``docs/passwords.md`` for the threat model.

    Args:
        max_entries: At most this many remembered successes; ``0`` disables the cache.
        ttl: Seconds a success is remembered.
        clock: A monotonic clock in seconds (for tests).

    Example:
        >>> cache = VerificationCache(max_entries=100, ttl=30)
        >>> verifier = Apr1Password(apr1_hash("123456"))
        >>> key = cache.key("alex", verifier, "123456")
        >>> cache.hit(key)
        False
        >>> cache.remember(key)
        >>> cache.hit(key)
        True
    """

    __slots__ = ("_clock", "_entries", "_key", "_lock", "max_entries", "ttl")

    def __init__(
        self, max_entries: int = 10_000, ttl: float = 60.0, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 0:
            raise ConfigError("max_entries", f"expected an integer >= 0, got {max_entries!r}")
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl < float("inf"):
            raise ConfigError("ttl", f"expected a positive number of seconds, got {ttl!r}")
        self.max_entries = max_entries
        self.ttl = float(ttl)
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._entries: dict[bytes, float] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """Whether the cache remembers anything at all."""
        return self.max_entries > 0

    def key(self, login: str, verifier: PasswordVerifier, password: str) -> bytes:
        """The entry key of one (credential username, stored password, presented password)."""
        name, stored = _bytes(login), verifier.identity
        message = b"".join((_LENGTHS.pack(len(name), len(stored)), name, stored, _bytes(password)))
        return hashlib.blake2b(message, key=self._key, digest_size=32).digest()

    def hit(self, key: bytes) -> bool:
        """Whether this exact verification succeeded within the last ``ttl`` seconds."""
        expires = self._entries.get(key)
        if expires is None:
            return False
        if expires > self._clock():
            return True
        with self._lock:
            if self._entries.get(key) == expires:
                del self._entries[key]
        return False

    def remember(self, key: bytes) -> None:
        """Record a success (call only after a real verification said yes)."""
        if self.max_entries <= 0:
            return
        with self._lock:
            entries = self._entries
            entries.pop(key, None)
            while len(entries) >= self.max_entries:
                del entries[next(iter(entries))]  # the oldest: insertion order is expiry order
            entries[key] = self._clock() + self.ttl

    def clear(self) -> None:
        """Forget every remembered success."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"VerificationCache(max_entries={self.max_entries}, ttl={self.ttl:g}, size={len(self)})"
