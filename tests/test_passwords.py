"""Stored password formats with known vectors, malformed hashes, and the verification cache.

The htpasswd vectors were made with Apache's ``htpasswd`` 2.4 (``-m`` APR1, ``-s`` SHA-1, ``-B`` bcrypt)
and pasted here, so the tests need no htpasswd installed. The ``$2a$`` vectors are the classic
OpenBSD/John-the-Ripper ones. The SHA-crypt vectors were made with ``openssl passwd -5``/``-6``
(OpenSSL 3.0) and, for ``rounds=``, glibc's ``crypt()``; two are the published ones of the algorithm.
"""

from __future__ import annotations

import argon2
import pytest

from consumer_auth import ConfigError, Gateway
from consumer_auth.sansio.passwords import (
    Apr1Password,
    Argon2Password,
    BcryptPassword,
    PlaintextPassword,
    Sha1Password,
    ShaCryptPassword,
    VerificationCache,
    apr1_hash,
    hash_password,
    sha_crypt_hash,
    verifier_from_hash,
)

COLON = "pässwörd:with colon"
LONG = "a" * 100
PASSPHRASE = "correct horse battery staple, a passphrase longer than sixty-four bytes in all!!"

# fmt: off
VECTORS = [
    pytest.param("$apr1$70iJyua7$gMCnDoXYSPfM9sURRcgI3.", "123456", Apr1Password, id="apr1"),
    pytest.param("$apr1$ndYSUuDi$gCmri1duRbALexCsnc69Q0", "123456", Apr1Password, id="apr1-other-salt"),
    pytest.param("$apr1$vLu8IP2u$m600NW9LqWRD.xHGnZcIS0", COLON, Apr1Password, id="apr1-utf8-colon"),
    pytest.param("$apr1$CcgnmhAb$y8PvqOZ33yrJroRULv3Gk1", "a-rather-long-password-that-goes-well-beyond-sixteen-bytes-of-md5-output", Apr1Password, id="apr1-long"),
    pytest.param("$apr1$OASJbfhE$KgLxIVomW/UkvngPRCTIA.", LONG, Apr1Password, id="apr1-100-bytes"),
    pytest.param("$apr1$aHVJR7uB$TuW4PrMPyU3xyNyL2RSw61", "ünï", Apr1Password, id="apr1-unicode"),
    pytest.param("$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5", "Hello world!", ShaCryptPassword, id="sha256-crypt-published"),
    pytest.param("$5$8tkPvr4tqmngHXXY$7ff2pBj6FGzNlBuFiFsFR9T7YauocPbeFBFuDBOJKy5", "123456", ShaCryptPassword, id="sha256-crypt"),
    pytest.param("$5$hPrbEFW4N4tgBA9Q$v.gTKnvymfBD6kMqlt9tc/Ci4iVEhahzl6Gp2tbZq47", PASSPHRASE, ShaCryptPassword, id="sha256-crypt-long"),
    pytest.param("$5$mgVIP3VRY58UDc$eRI6zO2AUU/930jsNzkxg7.yyuzx57us7ncuuj5xKG1", "pässwörd€", ShaCryptPassword, id="sha256-crypt-utf8-short-salt"),
    pytest.param("$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA", "Hello world!", ShaCryptPassword, id="sha256-crypt-rounds"),
    pytest.param("$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1", "Hello world!", ShaCryptPassword, id="sha512-crypt-published"),
    pytest.param("$6$ugsjr7t2KvEybH4s$Oxr6Kh.XJ9cCMugW.OshO4wkKorPWXwOYGSg.UZc0O3qn5rqEdmTZG8hjs5ywfCKSC/jccKeA78kJzjmtUW8L.", "123456", ShaCryptPassword, id="sha512-crypt"),
    pytest.param("$6$myQchK1TaB3bpHX$jksK0LmKoQXp21XCN5nW5di/90.n9.ABi0J5v9lztwzir4PXYKMehAF7V9bepaEh4ecTYu.mCeraRRnSK4UvZ0", PASSPHRASE, ShaCryptPassword, id="sha512-crypt-long"),
    pytest.param("$6$RrOFbXM78VU49AE1$rJlNnCwXbWzFcTmm7Eas1jo/j0dAI61pEvix0ZkrIz9wth5ZTMv2bRIUUoyiRM..4jt9foVYljbzGXcDnwwtR.", "pässwörd€", ShaCryptPassword, id="sha512-crypt-utf8"),
    pytest.param("$6$ab$jnZj29NS/hK2GaouP6AGMIBwD6owZFRejcn9QRdlwSjZaVr.fR9dH2TXrKL/PaacUXwtGfI.4O9zxvy2k6fbE1", "x", ShaCryptPassword, id="sha512-crypt-one-character"),
    pytest.param("$6$rounds=1400$anotherlongsalts$5FGyu8c4BZDX4wJgs0Un26YOw2XibT5eTkHF1I1aP3QqStoJI9BHD2YPJYsAjEePVGUyBjdZxcNqMWlrrbIOC.", "Hello world!", ShaCryptPassword, id="sha512-crypt-rounds"),
    pytest.param("{PLAIN}123456", "123456", PlaintextPassword, id="nginx-plain"),
    pytest.param("{SHA}fEqNCco3Yq9h5ZUglD3CZJT4lBs=", "123456", Sha1Password, id="sha"),
    pytest.param("{SHA}RQRO0i/ARBGVPhWCuk1XtFj3OEU=", COLON, Sha1Password, id="sha-utf8-colon"),
    pytest.param("{SHA}FG8R/ry6NO0ND4gk1NihsjyEgMc=", "ünï", Sha1Password, id="sha-unicode"),
    pytest.param("$2y$05$e9ENqlaIJqas5L4yTVt3MOCFk3.0Gt25/tj9OSsiCombZUauYCrsq", "123456", BcryptPassword, id="bcrypt-2y"),
    pytest.param("$2y$04$Jn63W2ROais7khDhtWjudOkBOeFimGJOuJibTcIY86FKKRhJmpOly", COLON, BcryptPassword, id="bcrypt-2y-utf8-colon"),
    pytest.param("$2y$04$r4uhS3rlHnbrkQsdFTT0aOc2WSx8GHcC6iGFSK5EnTnlgQ6Fyy9wa", LONG, BcryptPassword, id="bcrypt-2y-over-72-bytes"),
    pytest.param("$2b$04$lP0ATNxytcULHAZ5aJOqSu7mrN5GHGcGVwvPZ/vxOniX.Yx.Nm3he", "123456", BcryptPassword, id="bcrypt-2b"),
    pytest.param("$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW", "U*U", BcryptPassword, id="bcrypt-2a"),
    pytest.param("$2a$05$CCCCCCCCCCCCCCCCCCCCC.VGOzA784oUp/Z0DY336zx7pLYAy0lwK", "U*U*", BcryptPassword, id="bcrypt-2a-other"),
    pytest.param("$argon2id$v=19$m=8,t=1,p=1$XL5aManShZg7cV4AyX44wA$yQvJuC4VD2eQB3q/qDgmFgIf1v6mHpB/8fPYWulrmZI", "123456", Argon2Password, id="argon2id"),
    pytest.param("$argon2i$v=19$m=8,t=1,p=1$ZDpd+ex2brRPIEZHJoT9tw$zqj+qZp6Is5kB9sFjTgnA0B8X1iyOu2swen1aXQgnvk", "123456", Argon2Password, id="argon2i"),
]
# fmt: on


@pytest.mark.parametrize(("stored", "password", "kind"), VECTORS)
def test_known_vectors(stored: str, password: str, kind: type) -> None:
    verifier = verifier_from_hash(stored)
    assert type(verifier) is kind
    assert verifier.verify(password)
    assert not verifier.verify("x" + password)
    if kind is not BcryptPassword or len(password.encode()) < 72:  # bcrypt ignores bytes after 72
        assert not verifier.verify(password + "x")
        assert not verifier.verify(password[:-1])
    assert not verifier.verify("")
    assert verifier.needs_rehash()  # none of these is argon2id with the default parameters
    decoy = verifier.decoy()
    assert type(decoy) is kind
    assert decoy.slow == verifier.slow
    assert not decoy.verify(password)
    assert stored not in repr(verifier)


def test_apr1_hash_reproduces_htpasswd() -> None:
    assert apr1_hash("123456", "70iJyua7") == "$apr1$70iJyua7$gMCnDoXYSPfM9sURRcgI3."
    assert apr1_hash(COLON, "vLu8IP2u") == "$apr1$vLu8IP2u$m600NW9LqWRD.xHGnZcIS0"
    assert apr1_hash("", "2bo1ycbU") == "$apr1$2bo1ycbU$S/CyIk6OjcyFFhv9xMpOL."  # htpasswd -nbm carol ''
    made = apr1_hash("secret")
    assert Apr1Password(made).verify("secret")
    with pytest.raises(ValueError, match="salt"):
        apr1_hash("x", "bad$salt")


def test_sha_crypt_hash_reproduces_openssl_and_glibc() -> None:
    assert sha_crypt_hash("123456", "6", "ugsjr7t2KvEybH4s") == (
        "$6$ugsjr7t2KvEybH4s$Oxr6Kh.XJ9cCMugW.OshO4wkKorPWXwOYGSg.UZc0O3qn5rqEdmTZG8hjs5ywfCKSC/jccKeA78kJzjmtUW8L."
    )
    assert sha_crypt_hash("Hello world!", "5", "saltstringsaltst", rounds=10000) == (
        "$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA"
    )
    made = sha_crypt_hash("secret", "5")
    assert made.startswith("$5$")
    assert ShaCryptPassword(made).verify("secret")
    with pytest.raises(ValueError, match="salt"):
        sha_crypt_hash("x", "6", "bad$salt")
    with pytest.raises(ValueError, match="rounds"):
        sha_crypt_hash("x", "6", rounds=999)


def test_empty_password_never_verifies_even_if_the_hash_is_of_the_empty_string() -> None:
    assert not verifier_from_hash("$apr1$2bo1ycbU$S/CyIk6OjcyFFhv9xMpOL.").verify("")
    assert not verifier_from_hash("{SHA}2jmj7l5rSw0yVb/vlWAYkK/YBwk=").verify("")


def test_bcrypt_counts_only_the_first_72_bytes_as_htpasswd_does() -> None:
    verifier = verifier_from_hash("$2y$04$r4uhS3rlHnbrkQsdFTT0aOc2WSx8GHcC6iGFSK5EnTnlgQ6Fyy9wa")
    assert verifier.verify("a" * 72 + "anything")
    assert not verifier.verify("a" * 71)
    assert not verifier.verify("123\x00456")  # a NUL byte is a wrong password, not an error


def test_argon2_needs_rehash_only_with_outdated_parameters() -> None:
    assert not verifier_from_hash(hash_password("123456")).needs_rehash()
    weak = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("123456")
    assert verifier_from_hash(weak).needs_rehash()
    assert PlaintextPassword("123456").needs_rehash()


SECRET_PART = "c2VjcmV0LXNhbHQ"

# fmt: off
ARGON2 = "$argon2id$v=19$m=%d,t=%d,p=%d$%s$%s"
ARGON2_SALT = "c29tZXNhbHRzb21lc2FsdA"  # 16 bytes
ARGON2_HASH = "U2VjcmV0SGFzaFBhcnRTZWNyZXRIYXNoUGFydA"  # 28 bytes: never in a message
MALFORMED = [
    pytest.param("$apr1$" + SECRET_PART + "$toolong", "not a valid $apr1$ hash", id="apr1-salt-too-long"),
    pytest.param("$apr1$abc$" + SECRET_PART, "not a valid $apr1$ hash", id="apr1-digest-wrong-length"),
    pytest.param("{SHA}" + SECRET_PART, "not a valid {SHA} hash", id="sha-not-20-bytes"),
    pytest.param("{SHA}" + SECRET_PART + "!!", "not a valid {SHA} hash", id="sha-not-base64"),
    pytest.param("{SHA}ünï" + SECRET_PART, "not a valid {SHA} hash", id="sha-not-ascii"),
    pytest.param("$2y$05$" + SECRET_PART, "not a valid bcrypt hash", id="bcrypt-short"),
    pytest.param("$2y$99$e9ENqlaIJqas5L4yTVt3MOCFk3.0Gt25/tj9OSsiCombZUauYCrsq", "cost is outside 4-16", id="bcrypt-cost-out-of-range"),
    pytest.param("$2y$17$e9ENqlaIJqas5L4yTVt3MOCFk3.0Gt25/tj9OSsiCombZUauYCrsq", "cost is outside 4-16", id="bcrypt-cost-too-slow"),
    pytest.param(ARGON2 % (65536, 3, 4, "c2hvcnQ", ARGON2_HASH), "salt_len 5 is outside 8-1024", id="argon2-short-salt"),
    pytest.param(ARGON2 % (65536, 3, 4, ARGON2_SALT, "aGFz"), "hash_len 3 is outside 4-1024", id="argon2-short-hash"),
    pytest.param(ARGON2 % (4194304, 3, 4, ARGON2_SALT, ARGON2_HASH), "memory_cost 4194304 is outside 8-262144", id="argon2-4-gib"),
    pytest.param(ARGON2 % (65536, 100, 4, ARGON2_SALT, ARGON2_HASH), "time_cost 100 is outside 1-16", id="argon2-100-passes"),
    pytest.param(ARGON2 % (65536, 3, 64, ARGON2_SALT, ARGON2_HASH), "parallelism 64 is outside 1-16", id="argon2-64-lanes"),
    pytest.param(ARGON2 % (16, 3, 4, ARGON2_SALT, ARGON2_HASH), "under 8 KiB per lane", id="argon2-memory-per-lane"),
    pytest.param("$argon2id$v=19$" + SECRET_PART, "not a valid argon2 hash", id="argon2-truncated"),
    pytest.param("$6$" + SECRET_PART + "$abc", "not a valid $5$/$6$ SHA-crypt hash", id="sha512-crypt-digest-short"),
    pytest.param("$5$" + SECRET_PART + "$" + "a" * 86, "not a valid $5$/$6$ SHA-crypt hash", id="sha256-crypt-digest-long"),
    pytest.param("$6$" + SECRET_PART + "toolong$" + "a" * 86, "not a valid $5$/$6$ SHA-crypt hash", id="sha512-crypt-salt-too-long"),
    pytest.param("$6$rounds=999$" + SECRET_PART + "$" + "a" * 86, "not a valid $5$/$6$ SHA-crypt hash", id="sha512-crypt-too-few-rounds"),
    pytest.param("$6$rounds=1000001$" + SECRET_PART + "$" + "a" * 86, "not a valid $5$/$6$ SHA-crypt hash", id="sha512-crypt-too-many-rounds"),
    pytest.param("$6$rounds=x$" + SECRET_PART + "$" + "a" * 86, "not a valid $5$/$6$ SHA-crypt hash", id="sha512-crypt-rounds-not-a-number"),
    pytest.param("{PLAIN}", "an empty {PLAIN} password", id="plain-empty"),
    pytest.param("TJ91b34u7uQk2" + SECRET_PART, "unsupported hash format", id="des-crypt"),
    pytest.param("$1$" + SECRET_PART + "$abc", "unsupported hash format", id="md5-crypt-not-apr1"),
]
# fmt: on


@pytest.mark.parametrize(("stored", "reason"), MALFORMED)
def test_malformed_hash_is_a_config_error_at_password_hash_without_the_hash(stored: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        verifier_from_hash(stored)
    assert caught.value.path == "password_hash"
    assert reason in caught.value.reason
    assert SECRET_PART not in str(caught.value)
    assert ARGON2_HASH not in str(caught.value)


def test_a_short_argon2_salt_is_a_config_error_at_its_place_not_a_hashing_error() -> None:
    stored = ARGON2 % (65536, 3, 4, "c2hvcnQ", ARGON2_HASH)
    document = {
        "consumers": [
            {"username": "a", "plugins": {"basic-auth": {"username": "a", "password_hash": stored}}}
        ]
    }
    with pytest.raises(ConfigError) as caught:
        Gateway.from_dict(document)
    assert caught.value.path == "consumers[0].plugins.basic-auth.password_hash"
    assert ARGON2_HASH not in str(caught.value)


def test_the_argon2_decoy_has_the_gateways_parameters_not_the_stored_ones() -> None:
    cheap = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("123456")
    decoy = Argon2Password(cheap).decoy()
    own = argon2.PasswordHasher()
    parameters = argon2.extract_parameters(decoy.identity.decode())
    assert (parameters.time_cost, parameters.memory_cost, parameters.parallelism) == (
        own.time_cost,
        own.memory_cost,
        own.parallelism,
    )


def test_malformed_hash_in_a_config_names_its_place() -> None:
    document = {
        "consumers": [
            {"username": "ok", "plugins": {"basic-auth": {"username": "ok", "password": "x"}}},
            {
                "username": "bad",
                "plugins": {"basic-auth": {"username": "bad", "password_hash": "{SHA}" + SECRET_PART}},
            },
        ]
    }
    with pytest.raises(ConfigError) as caught:
        Gateway.from_dict(document)
    assert str(caught.value).startswith(
        "consumers[1].plugins.basic-auth.password_hash: not a valid {SHA} hash"
    )
    assert SECRET_PART not in str(caught.value)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


APR1 = Apr1Password("$apr1$70iJyua7$gMCnDoXYSPfM9sURRcgI3.")
APR1_OTHER = Apr1Password("$apr1$ndYSUuDi$gCmri1duRbALexCsnc69Q0")  # the same password, another salt


def test_cache_key_binds_login_stored_hash_and_password() -> None:
    cache = VerificationCache()
    key = cache.key("alex", APR1, "123456")
    assert len(key) == 32
    assert key == cache.key("alex", APR1, "123456")
    others = {
        cache.key("alex", APR1, "1234567"),
        cache.key("alex2", APR1, "123456"),
        cache.key("alex", APR1_OTHER, "123456"),
        # length-prefixed fields: moving bytes from one field to the next changes the key
        cache.key("alex1", Apr1Password("$apr1$70iJyua7$gMCnDoXYSPfM9sURRcgI3."), "23456"),
    }
    assert key not in others
    assert len(others) == 4
    # another cache (another process) has another key: entries mean nothing outside their cache
    assert VerificationCache().key("alex", APR1, "123456") != key


def test_cache_remembers_expires_and_forgets() -> None:
    clock = FakeClock()
    cache = VerificationCache(max_entries=10, ttl=30, clock=clock)
    key = cache.key("alex", APR1, "123456")
    assert not cache.hit(key)
    cache.remember(key)
    assert cache.hit(key)
    assert len(cache) == 1
    clock.now += 29.9
    assert cache.hit(key)
    clock.now += 0.2
    assert not cache.hit(key)
    assert len(cache) == 0  # an expired entry is dropped when seen
    cache.remember(key)
    cache.clear()
    assert not cache.hit(key)


def test_cache_is_bounded_oldest_out() -> None:
    clock = FakeClock()
    cache = VerificationCache(max_entries=3, ttl=60, clock=clock)
    keys = [cache.key(f"user{i}", APR1, "123456") for i in range(5)]
    for key in keys:
        clock.now += 1
        cache.remember(key)
    assert len(cache) == 3
    assert [cache.hit(k) for k in keys] == [False, False, True, True, True]
    cache.remember(keys[2])  # a renewed entry moves to the back
    cache.remember(keys[0])
    assert [cache.hit(k) for k in keys] == [True, False, True, False, True]


def test_cache_disabled_remembers_nothing() -> None:
    cache = VerificationCache(max_entries=0)
    key = cache.key("alex", APR1, "123456")
    cache.remember(key)
    assert not cache.enabled
    assert not cache.hit(key)
    assert len(cache) == 0


def test_cache_repr_shows_no_entries() -> None:
    cache = VerificationCache(max_entries=5, ttl=10)
    key = cache.key("alex", APR1, "123456")
    cache.remember(key)
    assert repr(cache) == "VerificationCache(max_entries=5, ttl=10, size=1)"
    assert key.hex() not in repr(cache)


@pytest.mark.parametrize(
    ("size", "ttl", "message"),
    [
        pytest.param(-1, 60, "verification_cache.max_entries: expected an integer >= 0", id="negative-size"),
        pytest.param(10, 0, "verification_cache.ttl: expected a positive number", id="zero-ttl"),
        pytest.param(10, "1m", "verification_cache.ttl: expected a number", id="ttl-text"),
        pytest.param(True, 60, "verification_cache.max_entries: expected an integer", id="size-bool"),
    ],
)
def test_cache_settings_in_config_are_validated(size: object, ttl: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.", 1)):
        Gateway.from_dict({"verification_cache": {"max_entries": size, "ttl": ttl}})


def test_cache_settings_reach_the_gateway() -> None:
    gateway = Gateway.from_dict({"verification_cache": {"max_entries": 7, "ttl": 5}})
    assert (gateway.verification_cache.max_entries, gateway.verification_cache.ttl) == (7, 5.0)
    with pytest.raises(ConfigError, match=r"^verification_cache\.ttl: "):
        Gateway(cache_ttl=-1)
    with pytest.raises(ConfigError, match=r"^verification_cache\.unknown: unknown key"):
        Gateway.from_dict({"verification_cache": {"unknown": 1}})
