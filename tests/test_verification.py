"""The verification cache inside the gateway, the rehash hook, and the bounded verification pools.

Nothing here is timed: the tests count verifications and watch concurrency with events.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import argon2
import pytest

import configs
from consumer_auth import (
    Allow,
    BasicAuthPlugin,
    ConfigError,
    Consumer,
    Gateway,
    Pending,
    Reject,
    RequestFacts,
    Route,
)
from consumer_auth._verify import LANES, ThreadedVerifier, lane_of
from consumer_auth.asgi import VerificationPool
from consumer_auth.sansio.consumers import BasicAuthCredential
from consumer_auth.sansio.decision import Decision
from consumer_auth.sansio.passwords import Apr1Password, PasswordVerifier, apr1_hash, verifier_from_hash
from support import basic, call_asgi, echo_asgi, echo_wsgi, wsgi_call

APR1_123456 = "$apr1$70iJyua7$gMCnDoXYSPfM9sURRcgI3."
WEAK_ARGON = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


class Counting:
    """Wraps a verifier and counts real verifications."""

    def __init__(self, inner: PasswordVerifier) -> None:
        self.inner = inner
        self.slow = inner.slow
        self.calls = 0

    @property
    def identity(self) -> bytes:
        return self.inner.identity

    def verify(self, password: str) -> bool:
        self.calls += 1
        return self.inner.verify(password)

    def decoy(self) -> PasswordVerifier:
        return self.inner.decoy()

    def needs_rehash(self) -> bool:
        return self.inner.needs_rehash()


def counted(consumer: Consumer) -> Counting:
    credential = consumer.credentials[0]
    wrapper = Counting(credential.verifier)
    credential.verifier = wrapper  # type: ignore[assignment]
    return wrapper


def make_gateway(*consumers: Consumer, **options: Any) -> Gateway:
    return Gateway(consumers=consumers, routes=[Route("/*", plugins=[BasicAuthPlugin()])], **options)


def facts(login: str, password: str) -> RequestFacts:
    return RequestFacts("GET", "/x", None, (basic(login, password),))


def message(decision: Decision) -> str:
    assert isinstance(decision, Reject), decision
    return decision.body.decode()


WRONG = '{"message":"Password is error"}\n'


def test_a_repeated_right_password_is_answered_from_the_cache_on_the_callers_thread() -> None:
    alex = Consumer("alex", password_hash=APR1_123456)
    verifier = counted(alex)
    gateway = make_gateway(alex)
    first = gateway.decide(facts("alex", "123456"))
    assert isinstance(first, Pending)
    assert first.slow
    assert first.login == "alex"
    assert isinstance(first.run(), Allow)
    for _ in range(3):
        again = gateway.decide(facts("alex", "123456"))
        assert isinstance(again, Allow)
        assert again.consumer is alex
    assert verifier.calls == 1


def test_a_wrong_password_is_never_answered_from_the_cache() -> None:
    alex = Consumer("alex", password_hash=APR1_123456)
    verifier = counted(alex)
    gateway = make_gateway(alex)
    assert isinstance(gateway.decide_now(facts("alex", "123456")), Allow)
    for attempt in ("1234567", "12345", "123456 ", "wrong"):
        pending = gateway.decide(facts("alex", attempt))
        assert isinstance(pending, Pending)  # always the real hash
        assert message(pending.run()) == WRONG
    assert verifier.calls == 5
    assert len(gateway.verification_cache) == 1  # failures are never remembered


def test_failures_are_never_cached_as_successes() -> None:
    alex = Consumer("alex", password_hash=APR1_123456)
    gateway = make_gateway(alex)
    for _ in range(3):
        assert message(gateway.decide_now(facts("alex", "nope"))) == WRONG
    assert len(gateway.verification_cache) == 0
    assert isinstance(gateway.decide_now(facts("alex", "123456")), Allow)


def test_a_changed_password_is_never_served_from_an_old_success() -> None:
    gateway = make_gateway(Consumer("alex", password_hash=APR1_123456))
    assert isinstance(gateway.decide_now(facts("alex", "123456")), Allow)
    assert isinstance(gateway.decide(facts("alex", "123456")), Allow)  # cached
    gateway.replace_consumers([Consumer("alex", password_hash=apr1_hash("new-secret"))])
    old = gateway.decide(facts("alex", "123456"))
    assert isinstance(old, Pending), "the old success must not answer for the new hash"
    assert message(old.run()) == WRONG
    assert isinstance(gateway.decide_now(facts("alex", "new-secret")), Allow)


def test_a_change_to_a_clear_password_or_a_removed_credential_takes_effect_at_once() -> None:
    gateway = make_gateway(Consumer("alex", password_hash=APR1_123456), Consumer("bob", password="x"))
    assert isinstance(gateway.decide_now(facts("alex", "123456")), Allow)
    gateway.replace_consumers([Consumer("alex", password="other"), Consumer("bob", password="x")])
    assert message(gateway.decide_now(facts("alex", "123456"))) == WRONG
    gateway.replace_consumers([Consumer("bob", password="x")])
    assert "Invalid user key" in message(gateway.decide_now(facts("alex", "123456")))


def test_a_credential_moved_to_another_consumer_authenticates_as_the_new_owner() -> None:
    gateway = make_gateway(Consumer("alex", password_hash=APR1_123456))
    assert isinstance(gateway.decide_now(facts("alex", "123456")), Allow)
    owner = Consumer("team", credentials=[BasicAuthCredential("alex", password_hash=APR1_123456)])
    gateway.replace_consumers([owner])
    decision = gateway.decide(facts("alex", "123456"))
    assert isinstance(decision, Allow)
    assert decision.consumer is owner


def test_a_success_verified_while_the_password_changed_cannot_answer_for_the_new_one() -> None:
    alex = Consumer("alex", password_hash=APR1_123456)
    gateway = make_gateway(alex)
    pending = gateway.decide(facts("alex", "123456"))
    assert isinstance(pending, Pending)
    gateway.replace_consumers([Consumer("alex", password_hash=apr1_hash("new-secret"))])
    assert isinstance(pending.run(), Allow)  # decided against the set it started with
    assert isinstance(gateway.decide(facts("alex", "123456")), Pending)
    assert message(gateway.decide_now(facts("alex", "123456"))) == WRONG


def test_cache_disabled_verifies_every_time() -> None:
    alex = Consumer("alex", password_hash=APR1_123456)
    verifier = counted(alex)
    gateway = make_gateway(alex, cache_size=0)
    for _ in range(3):
        decision = gateway.decide(facts("alex", "123456"))
        assert isinstance(decision, Pending)
        assert isinstance(decision.run(), Allow)
    assert verifier.calls == 3


def test_cheap_forms_are_decided_without_a_pending() -> None:
    gateway = make_gateway(
        Consumer("plain", password="123456"),
        Consumer("sha", password_hash="{SHA}fEqNCco3Yq9h5ZUglD3CZJT4lBs="),
    )
    assert isinstance(gateway.decide(facts("plain", "123456")), Allow)
    assert isinstance(gateway.decide(facts("sha", "123456")), Allow)
    assert message(gateway.decide(facts("sha", "x"))) == WRONG  # type: ignore[arg-type]


def test_unknown_users_run_a_decoy_of_the_common_slow_kind() -> None:
    gateway = make_gateway(
        Consumer("plain", password="x"),
        Consumer("a", password_hash=apr1_hash("1")),
        Consumer("b", password_hash=apr1_hash("2")),
        Consumer("c", password_hash=WEAK_ARGON.hash("3")),
    )
    pending = gateway.decide(facts("nobody", "123456"))
    assert isinstance(pending, Pending)
    assert pending.login == "nobody"
    assert "Invalid user key" in message(pending.run())
    assert isinstance(gateway._state.consumers.decoy, Apr1Password)


def test_an_empty_password_costs_nothing_and_never_authenticates() -> None:
    gateway = make_gateway(Consumer("alex", password_hash=APR1_123456))
    assert message(gateway.decide(facts("alex", ""))) == WRONG  # type: ignore[arg-type]
    assert "Invalid user key" in message(gateway.decide(facts("nobody", "")))  # type: ignore[arg-type]


# -- the rehash hook ---------------------------------------------------------------------------------


@pytest.fixture
def rehashed() -> list[tuple[str, str, str]]:
    calls: list[tuple[str, str, str]] = []
    return calls


def recorder(calls: list[tuple[str, str, str]]) -> Callable[[Consumer, BasicAuthCredential, str], None]:
    def hook(consumer: Consumer, credential: BasicAuthCredential, new_hash: str) -> None:
        calls.append((consumer.username, credential.username, new_hash))

    return hook


@pytest.mark.parametrize(
    "stored",
    [
        pytest.param(APR1_123456, id="apr1"),
        pytest.param("{SHA}fEqNCco3Yq9h5ZUglD3CZJT4lBs=", id="sha"),
        pytest.param(WEAK_ARGON.hash("123456"), id="argon2-weak-parameters"),
    ],
)
def test_rehash_hook_gets_a_fresh_argon2id_hash_once(
    stored: str, rehashed: list[tuple[str, str, str]]
) -> None:
    gateway = make_gateway(Consumer("alex", password_hash=stored), on_rehash=recorder(rehashed))
    first = gateway.decide(facts("alex", "123456"))
    assert isinstance(first, Pending), "the rehash is computed off the caller's thread"
    assert isinstance(first.run(), Allow)
    for _ in range(2):
        assert isinstance(gateway.decide_now(facts("alex", "123456")), Allow)
    assert message(gateway.decide_now(facts("alex", "wrong"))) == WRONG
    assert len(rehashed) == 1
    consumer, login, new_hash = rehashed[0]
    assert (consumer, login) == ("alex", "alex")
    upgraded = verifier_from_hash(new_hash)
    assert new_hash.startswith("$argon2id$")
    assert upgraded.verify("123456")
    assert not upgraded.needs_rehash()


def test_rehash_hook_for_clear_passwords_and_not_after_failures(rehashed: list[tuple[str, str, str]]) -> None:
    gateway = make_gateway(Consumer("alex", password="123456"), on_rehash=recorder(rehashed))
    assert message(gateway.decide_now(facts("alex", "wrong"))) == WRONG
    assert rehashed == []
    assert isinstance(gateway.decide(facts("alex", "123456")), Pending)
    assert isinstance(gateway.decide_now(facts("alex", "123456")), Allow)
    assert isinstance(gateway.decide(facts("alex", "123456")), Allow)  # reported: cheap again
    assert len(rehashed) == 1


def test_no_rehash_for_a_current_argon2id_hash(rehashed: list[tuple[str, str, str]]) -> None:
    gateway = make_gateway(
        Consumer("alex", password_hash=argon2.PasswordHasher().hash("123456")), on_rehash=recorder(rehashed)
    )
    assert isinstance(gateway.decide_now(facts("alex", "123456")), Allow)
    assert rehashed == []


def test_a_failing_rehash_hook_is_logged_and_the_request_still_passes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(consumer: Consumer, credential: BasicAuthCredential, new_hash: str) -> None:
        raise RuntimeError("store is down")

    gateway = make_gateway(Consumer("alex", password_hash=APR1_123456), on_rehash=broken)
    with caplog.at_level(logging.ERROR, logger="consumer_auth"):
        assert isinstance(gateway.decide_now(facts("alex", "123456")), Allow)
    assert "on_rehash failed for consumer 'alex'" in caplog.text
    assert "123456" not in caplog.text.replace("'alex'", "")


def test_a_failing_sqlalchemy_rehash_hook_does_not_log_the_new_hash(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A store hook on a real SQLAlchemy engine whose statement fails: SQLAlchemy's message lists the
    statement's parameters, the fresh argon2id hash among them; none of it reaches the log."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'users.db'}")
    given: list[str] = []

    def save(consumer: Consumer, credential: BasicAuthCredential, new_hash: str) -> None:
        given.append(new_hash)
        with engine.begin() as connection:  # no such table: OperationalError with the parameters
            connection.execute(
                sqlalchemy.text("UPDATE users SET hash = :hash WHERE login = :login"),
                {"hash": new_hash, "login": credential.username},
            )

    gateway = make_gateway(Consumer("alex", password_hash=APR1_123456), on_rehash=save)
    with caplog.at_level(logging.DEBUG):
        assert isinstance(gateway.decide_now(facts("alex", "123456")), Allow)
    engine.dispose()
    (new_hash,) = given
    # What the message would have been: the hash is in it.
    with pytest.raises(sqlalchemy.exc.OperationalError) as raised, engine.begin() as connection:
        connection.execute(sqlalchemy.text("UPDATE users SET hash = :hash"), {"hash": new_hash})
    engine.dispose()
    assert new_hash in str(raised.value)
    assert "on_rehash failed for consumer 'alex': sqlalchemy.exc.OperationalError" in caplog.text
    assert new_hash not in caplog.text
    assert "$argon2id$" not in caplog.text


# -- the pools -----------------------------------------------------------------------------------------


def logins_in_distinct_lanes(count: int) -> list[str]:
    found: dict[int, str] = {}
    index = 0
    while len(found) < count:
        found.setdefault(lane_of(f"user{index}"), f"user{index}")
        index += 1
    return list(found.values())


class Gate:
    """Pending runs that block until released, recording how many run at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.started: list[str] = []

    def pending(self, login: str, block: bool = True) -> Pending:
        def run() -> Decision:
            with self.lock:
                self.running += 1
                self.peak = max(self.peak, self.running)
                self.started.append(login)
            if block:
                assert self.release.wait(10)
            with self.lock:
                self.running -= 1
            return Allow(None)

        return Pending(True, run, login)


def test_asgi_pool_runs_one_verification_per_login_and_lets_other_logins_through() -> None:
    pool = VerificationPool(workers=2, nice=0)
    gate = Gate()
    flooded, other = logins_in_distinct_lanes(2)

    async def scenario() -> None:
        flood = [asyncio.create_task(pool.run(gate.pending(flooded))) for _ in range(6)]
        await asyncio.sleep(0)
        try:
            # The other login gets the second worker although six flood checks came first.
            result = await asyncio.wait_for(pool.run(gate.pending(other, block=False)), 10)
            assert isinstance(result, Allow)
            assert gate.started.count(flooded) == 1, "one check per login at a time"
        finally:
            gate.release.set()
        await asyncio.gather(*flood)

    asyncio.run(scenario())
    assert gate.peak <= 2
    pool.shutdown()


def test_asgi_pool_bounds_concurrency_to_its_workers() -> None:
    pool = VerificationPool(workers=2, nice=0)
    gate = Gate()
    logins = logins_in_distinct_lanes(8)

    async def scenario() -> None:
        tasks = [asyncio.create_task(pool.run(gate.pending(login))) for login in logins]
        while len(gate.started) < 2:
            await asyncio.sleep(0.01)
        assert gate.running == 2
        gate.release.set()
        await asyncio.gather(*tasks)

    asyncio.run(scenario())
    assert gate.peak == 2
    assert len(gate.started) == 8
    pool.shutdown()


def test_a_cancelled_request_keeps_its_lane_until_the_thread_is_done() -> None:
    pool = VerificationPool(workers=2, nice=0)
    gate = Gate()

    async def scenario() -> None:
        first = asyncio.create_task(pool.run(gate.pending("mallory")))
        while not gate.started:
            await asyncio.sleep(0.01)
        first.cancel()
        second = asyncio.create_task(pool.run(gate.pending("mallory", block=False)))
        await asyncio.sleep(0.05)
        assert gate.started == ["mallory"], "the lane is still busy with the cancelled request's thread"
        gate.release.set()
        assert isinstance(await asyncio.wait_for(second, 10), Allow)

    asyncio.run(scenario())
    pool.shutdown()


def test_concurrent_first_logins_verify_once() -> None:
    alex = Consumer("alex", password_hash=APR1_123456)
    verifier = counted(alex)
    app = make_gateway(alex).asgi(echo_asgi)

    async def scenario() -> list[int]:
        replies = await asyncio.gather(
            *(call_asgi(app, "GET", "/x", [("Authorization", basic("alex", "123456"))]) for _ in range(8))
        )
        return [reply.status for reply in replies]

    assert asyncio.run(scenario()) == [200] * 8
    assert verifier.calls == 1, "the requests that waited in alex's lane found the success in the cache"


def test_threaded_verifier_bounds_concurrency_and_serializes_a_login() -> None:
    verifier = ThreadedVerifier(workers=2)
    gate = Gate()
    logins = logins_in_distinct_lanes(4) + ["user-same"] * 3
    threads = [threading.Thread(target=verifier.run, args=(gate.pending(login),)) for login in logins]
    for thread in threads:
        thread.start()
    gate.release.wait(0.2)  # let them pile up
    assert gate.running <= 2
    gate.release.set()
    for thread in threads:
        thread.join(10)
    assert gate.peak <= 2
    assert len(gate.started) == 7


def test_lanes_spread_logins() -> None:
    assert len({lane_of(f"user{i}") for i in range(1000)}) == LANES


# -- every mode: hashed credentials answer exactly as clear ones ---------------------------------------


@pytest.mark.parametrize("login", ["argon", "bcrypt", "apr1", "sha"])
@pytest.mark.parametrize("config", ["hashes", "hashes-apisix3"])
def test_hashed_credentials_in_every_mode(mode: Any, config: str, login: str) -> None:
    right = [("Authorization", basic(login, configs.HASHES_PASSWORD))]
    for _ in range(2):  # the second time from the cache
        reply = mode.request(config, "GET", "/hashed", right)
        assert reply.status == 200
        assert reply.seen()["consumer"] == login
    wrong = mode.request(config, "GET", "/hashed", [("Authorization", basic(login, "1234567"))])
    unknown = mode.request(config, "GET", "/hashed", [("Authorization", basic(login + "x", "123456"))])
    if config == "hashes":
        assert (wrong.status, wrong.body) == (401, WRONG.encode())
        assert unknown.body == b'{"message":"Invalid user key in authorization"}\n'
    else:
        assert (wrong.status, wrong.body) == (401, b'{"message":"Invalid user authorization"}\n')
        assert wrong.headers["www-authenticate"] == 'Basic realm="basic"'
        assert unknown.body == wrong.body


def test_wsgi_and_asgi_adapters_verify_slow_hashes_through_their_pools() -> None:
    alex = Consumer("alex", password_hash=APR1_123456)
    verifier = counted(alex)
    gateway = make_gateway(alex)
    header = [("Authorization", basic("alex", "123456"))]
    assert wsgi_call(gateway.wsgi(echo_wsgi), "GET", "/x", header).status == 200
    assert asyncio.run(call_asgi(gateway.asgi(echo_asgi), "GET", "/x", header)).status == 200
    assert verifier.calls == 1


# --- admission: pending slow verifications are bounded per client and in all ----------------------

BUSY_BODY = b'{"error_msg":"503 Service Unavailable"}\n'


def from_client(login: str, password: str, client: str) -> RequestFacts:
    return RequestFacts("GET", "/x", None, (basic(login, password),), client=client)


def busy(decision: object) -> bool:
    if not isinstance(decision, Reject):
        return False
    assert decision.status == 503
    assert decision.body == BUSY_BODY
    assert ("Retry-After", "1") in decision.headers
    return True


@pytest.mark.parametrize("brute_force", [False, True], ids=["plain-route", "brute-force-route"])
def test_pending_verifications_are_bounded_per_client_decoys_included(brute_force: bool) -> None:
    plugin = BasicAuthPlugin(brute_force={"max_failures": 1000}) if brute_force else BasicAuthPlugin()
    gateway = Gateway(
        consumers=[Consumer("alex", password_hash=apr1_hash("123456"))],
        routes=[Route("/*", plugins=[plugin])],
        verification_limits={"max_pending_per_client": 3, "max_pending": 10},
        cache_size=0,
    )
    held = [gateway.decide(from_client(f"ghost{i}", "x", "192.0.2.7")) for i in range(3)]
    assert all(isinstance(p, Pending) for p in held)
    assert busy(gateway.decide(from_client("ghost-more", "x", "192.0.2.7")))
    assert busy(gateway.decide(from_client("alex", "123456", "192.0.2.7")))  # the same client, any login
    # another client is not held up by the first one's flood
    other = gateway.decide(from_client("alex", "123456", "192.0.2.8"))
    assert isinstance(other, Pending)
    assert isinstance(other.run(), Allow)
    # IPv6 clients count by their /64
    v6 = [gateway.decide(from_client(f"g{i}", "x", f"2001:db8:0:1::{i + 1}")) for i in range(3)]
    assert all(isinstance(p, Pending) for p in v6)
    assert busy(gateway.decide(from_client("g", "x", "2001:db8:0:1:ffff::1")))
    # a finished verification gives its place back
    first = held.pop()
    assert isinstance(first, Pending)
    assert "Invalid user key" in message(first.run())
    assert isinstance(gateway.decide(from_client("ghost-again", "x", "192.0.2.7")), Pending)


def test_pending_verifications_are_bounded_in_all() -> None:
    gateway = make_gateway(
        Consumer("alex", password_hash=apr1_hash("123456")),
        verification_limits={"max_pending_per_client": 4, "max_pending": 5},
    )
    held = [gateway.decide(from_client("ghost", "x", f"192.0.2.{i}")) for i in range(5)]
    assert all(isinstance(p, Pending) for p in held)
    assert busy(gateway.decide(from_client("alex", "123456", "198.51.100.1")))
    held.clear()  # decisions dropped without running give their places back
    assert isinstance(gateway.decide(from_client("alex", "123456", "198.51.100.1")), Pending)


def test_a_burst_for_one_login_from_one_client_shares_one_place() -> None:
    gateway = make_gateway(
        Consumer("alex", password_hash=apr1_hash("123456")),
        verification_limits={"max_pending_per_client": 1, "max_pending": 1},
        cache_size=0,
    )
    burst = [gateway.decide(from_client("alex", "123456", "192.0.2.1")) for _ in range(8)]
    assert all(isinstance(p, Pending) for p in burst)  # a browser's parallel first requests
    assert busy(gateway.decide(from_client("ghost", "x", "192.0.2.1")))  # another login: no place
    for pending in burst:
        assert isinstance(pending, Pending)
        assert isinstance(pending.run(), Allow)
    assert isinstance(gateway.decide(from_client("ghost", "x", "192.0.2.1")), Pending)


def test_cheap_checks_and_cached_successes_are_never_refused() -> None:
    gateway = make_gateway(
        Consumer("plain", password="123456"),
        Consumer("alex", password_hash=apr1_hash("123456")),
        verification_limits={"max_pending_per_client": 1, "max_pending": 1},
    )
    warm = gateway.decide(from_client("alex", "123456", "192.0.2.1"))
    assert isinstance(warm, Pending)
    assert isinstance(warm.run(), Allow)
    held = gateway.decide(from_client("ghost", "x", "192.0.2.1"))
    assert isinstance(held, Pending)
    assert isinstance(gateway.decide(from_client("alex", "123456", "192.0.2.1")), Allow)  # cached
    assert isinstance(gateway.decide(from_client("plain", "123456", "192.0.2.1")), Allow)
    assert busy(gateway.decide(from_client("ghost2", "x", "192.0.2.1")))


@pytest.mark.parametrize(
    ("section", "message_text"),
    [
        pytest.param(
            {"max_pending": 0}, "verification.max_pending: expected an integer >= 1, got 0", id="zero"
        ),
        pytest.param(
            {"max_pending_per_client": "4"},
            "verification.max_pending_per_client: expected an integer, got '4'",
            id="type",
        ),
        pytest.param(
            {"max_queued": 4},
            "verification.max_queued: unknown key (expected one of: max_pending, max_pending_per_client)",
            id="unknown",
        ),
    ],
)
def test_verification_section_errors_name_the_place(section: dict[str, Any], message_text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Gateway.from_dict({"verification": section})
    assert str(caught.value) == message_text


def test_verification_section_sets_the_bounds() -> None:
    gateway = Gateway.from_dict({"verification": {"max_pending": 7, "max_pending_per_client": 2}})
    assert (gateway.verification_limits.max_pending, gateway.verification_limits.max_pending_per_client) == (
        7,
        2,
    )
    assert Gateway().verification_limits.max_pending_per_client == 4
