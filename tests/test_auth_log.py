"""Structured auth logs: one record per decision, with codes and names only, never a secret."""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any

import pytest

from consumer_auth import (
    BasicAuthCredential,
    ConfigError,
    Consumer,
    Gateway,
    Pending,
    RedisFailureStore,
    RequestFacts,
)
from consumer_auth.config import parse_config
from consumer_auth.sansio.credentials import parse_authorization
from consumer_auth.sansio.passwords import hash_password
from support import basic, call_asgi, echo_asgi, echo_wsgi, wsgi_call

SECRET = "Tr0ub4dor&3-zebra-9f2c"
"""A password (and, typed by mistake, a username) that must never be logged."""
STORED = "correct-horse-battery-staple"
"""A configured password, in clear."""
STORED_HASH = hash_password("argon-secret-7d1e")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


NEEDLES = [
    SECRET,
    STORED,
    "argon-secret-7d1e",
    STORED_HASH,
    STORED_HASH.rsplit("$", 1)[-1],  # the hash's digest part alone
    _b64(SECRET),
    _b64("alex:" + SECRET),
    _b64(SECRET + ":" + SECRET),
    _b64("carol:" + STORED),
    _b64("dave:argon-secret-7d1e"),
    "do-not-log-me",
]


def document(**top: Any) -> dict[str, Any]:
    return {
        "consumers": [
            {"username": "alex", "plugins": {"basic-auth": {"username": "alex", "password": "123456"}}},
            {"username": "carol", "plugins": {"basic-auth": {"username": "carol", "password": STORED}}},
            {
                "username": "dave",
                "plugins": {"basic-auth": {"username": "dave", "password_hash": STORED_HASH}},
            },
            {"username": "guest"},
        ],
        "routes": [
            {"id": "login", "uri": "/login", "plugins": {"basic-auth": {"brute_force": {"max_failures": 3}}}},
            {"id": "anon", "uri": "/anon", "plugins": {"basic-auth": {"anonymous_consumer": "guest"}}},
            {
                "id": "carol-only",
                "uri": "/carol-only",
                "plugins": {"basic-auth": {}, "consumer-restriction": {"whitelist": ["carol"]}},
            },
            {"id": "open", "uri": "/open"},
            {"uri": "/unnamed", "plugins": {"basic-auth": {}}},
        ],
        **top,
    }


def facts(path: str, *authorization: str, client: str = "192.0.2.10") -> RequestFacts:
    return RequestFacts("GET", path, "example.com", authorization, client, ("203.0.113.66",))


# (request, outcome, reason, status, route, consumer, failure)
ROWS = [
    pytest.param(
        facts("/login"),
        "reject",
        "missing_authorization",
        401,
        "login",
        None,
        "missing_authorization",
        id="missing",
    ),
    pytest.param(
        facts("/login", "Bearer " + SECRET),
        "reject",
        "invalid_authorization",
        401,
        "login",
        None,
        "invalid_authorization",
        id="other-scheme",
    ),
    pytest.param(
        facts("/login", "Basic " + _b64(SECRET)),
        "reject",
        "invalid_authorization",
        401,
        "login",
        None,
        "invalid_authorization",
        id="no-colon",
    ),
    pytest.param(
        facts("/login", "Basic " + SECRET),
        "reject",
        "invalid_authorization",
        401,
        "login",
        None,
        "invalid_authorization",
        id="bad-base64",
    ),
    pytest.param(
        facts("/login", basic("alex", SECRET), basic("alex", SECRET)),
        "reject",
        "invalid_authorization",
        401,
        "login",
        None,
        "invalid_authorization",
        id="two-headers",
    ),
    pytest.param(
        facts("/login", basic(SECRET, SECRET)),
        "reject",
        "unknown_username",
        401,
        "login",
        None,
        "unknown_username",
        id="unknown-username",
    ),
    pytest.param(
        facts("/login", basic("alex", SECRET)),
        "reject",
        "wrong_password",
        401,
        "login",
        "alex",
        "wrong_password",
        id="wrong-password",
    ),
    pytest.param(
        facts("/login", basic("dave", SECRET)),
        "reject",
        "wrong_password",
        401,
        "login",
        "dave",
        "wrong_password",
        id="wrong-password-argon2",
    ),
    pytest.param(
        facts("/unnamed", basic("alex", SECRET)),
        "reject",
        "wrong_password",
        401,
        "routes[4]",
        "alex",
        "wrong_password",
        id="route-without-id",
    ),
    pytest.param(
        facts("/anon", basic("alex", SECRET)),
        "allow",
        "anonymous",
        None,
        "anon",
        "guest",
        "wrong_password",
        id="anonymous-after-wrong-password",
    ),
    pytest.param(
        facts("/anon", "Basic " + SECRET),
        "allow",
        "anonymous",
        None,
        "anon",
        "guest",
        "invalid_authorization",
        id="anonymous-after-invalid",
    ),
    pytest.param(
        facts("/carol-only", basic("alex", "123456")),
        "reject",
        "consumer_forbidden",
        403,
        "carol-only",
        "alex",
        None,
        id="restriction",
    ),
    pytest.param(
        facts("/carol-only", basic("carol", STORED)),
        "allow",
        "authenticated",
        None,
        "carol-only",
        "carol",
        None,
        id="authenticated",
    ),
    pytest.param(
        facts("/login", basic("dave", "argon-secret-7d1e")),
        "allow",
        "authenticated",
        None,
        "login",
        "dave",
        None,
        id="authenticated-argon2",
    ),
    pytest.param(
        facts("/open", basic("alex", SECRET)),
        "allow",
        "no_auth",
        None,
        "open",
        None,
        None,
        id="no-auth-route",
    ),
    pytest.param(
        facts("/nowhere", basic("alex", SECRET)), "reject", "no_route", 404, None, None, None, id="no-route"
    ),
]


class Records:
    """Every record of every logger, at every level, written during the test."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self._caplog = caplog

    @property
    def all(self) -> list[logging.LogRecord]:
        return self._caplog.records

    @property
    def decisions(self) -> list[Any]:
        """The decision records (``Any``: their fields are attributes set through ``extra``)."""
        return [record for record in self.all if record.name == "consumer_auth.auth"]


@pytest.fixture
def records(caplog: pytest.LogCaptureFixture) -> Records:
    caplog.set_level(logging.DEBUG)
    return Records(caplog)


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for needle in NEEDLES:
            assert needle not in text, f"{needle!r} leaked into {text!r}"


def assert_records_clean(records: list[logging.LogRecord]) -> None:
    formatter = logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s")
    for record in records:
        assert_no_secret(
            record.getMessage(), formatter.format(record), repr(record.__dict__), repr(record.args)
        )


@pytest.mark.parametrize(
    ("request_facts", "outcome", "reason", "status", "route", "consumer", "failure"), ROWS
)
def test_one_clean_record_per_decision(
    records: Records,
    request_facts: RequestFacts,
    outcome: str,
    reason: str,
    status: int | None,
    route: str | None,
    consumer: str | None,
    failure: str | None,
) -> None:
    gateway = Gateway.from_dict(document())
    decision = gateway.decide_now(request_facts)
    (record,) = records.decisions
    assert record.levelno == logging.INFO
    fields = {
        key: getattr(record, key) for key in ("outcome", "reason", "status", "route", "consumer", "client")
    }
    assert fields == {
        "outcome": outcome,
        "reason": reason,
        "status": status,
        "route": route,
        "consumer": consumer,
        "client": "192.0.2.10",  # X-Forwarded-For from an untrusted peer is not believed
    }
    assert record.failure == failure
    assert record.getMessage() == f"{outcome} {reason} route={route} consumer={consumer} client=192.0.2.10"
    assert_records_clean(records.all)
    assert_no_secret(repr(request_facts), repr(decision), repr(gateway.decide(request_facts)))


def test_no_credentials_configured_and_missing_anonymous_consumer(records: Records) -> None:
    lonely = Gateway.from_dict(
        {"consumers": [{"username": "x"}], "routes": [{"uri": "/", "plugins": {"basic-auth": {}}}]}
    )
    lonely.decide_now(facts("/", basic("alex", SECRET)))
    gateway = Gateway.from_dict(document())
    gateway.replace_consumers([c for c in gateway.consumers if c.username != "guest"])
    gateway.decide_now(facts("/anon", basic("alex", SECRET)))
    assert [(r.reason, r.status) for r in records.decisions] == [
        ("no_credentials_configured", 401),
        ("anonymous_consumer_missing", 401),
    ]
    assert_records_clean(records.all)


def test_lockouts_are_logged_without_the_username_typed(records: Records) -> None:
    gateway = Gateway.from_dict(document(trusted_proxies=["192.0.2.0/24"]))
    for _ in range(3):
        gateway.decide_now(facts("/login", basic(SECRET, SECRET)))
    locked = gateway.decide_now(facts("/login", basic("alex", "123456")))
    assert locked.status == 429  # type: ignore[union-attr]
    lockouts = [r for r in records.all if r.name == "consumer_auth.brute_force"]
    assert [r.getMessage() for r in lockouts] == [
        "locked out an unknown username for 300s after 3 failed attempts within 60s",
        "locked out client 203.0.113.66 for 300s after 3 failed attempts within 60s",
    ]
    assert all(r.levelno == logging.WARNING for r in lockouts)
    last = records.decisions[-1]
    assert (last.reason, last.status, last.client, last.consumer) == (
        "too_many_failures",
        429,
        "203.0.113.66",
        "alex",
    )
    assert len(records.decisions) == 4
    assert_records_clean(records.all)


def test_a_redis_outage_is_logged_without_the_url_password(records: Records) -> None:
    gateway = Gateway.from_dict(document())
    gateway.brute_force_store = RedisFailureStore("redis://:do-not-log-me@127.0.0.1:1/0", timeout=0.2)
    gateway.decide_now(facts("/login", basic("alex", SECRET)))
    assert any(r.name == "consumer_auth.brute_force" and r.levelno == logging.WARNING for r in records.all)
    assert_records_clean(records.all)
    assert_no_secret(repr(gateway.brute_force_store))


def test_adapters_write_exactly_one_record_per_request(records: Records) -> None:
    gateway = Gateway.from_dict(document())
    headers = [("Authorization", basic("alex", SECRET)), ("Host", "example.com")]
    assert wsgi_call(gateway.wsgi(echo_wsgi), "GET", "/login", headers).status == 401
    assert asyncio.run(call_asgi(gateway.asgi(echo_asgi), "GET", "/login", headers)).status == 401
    good = [("Authorization", basic("dave", "argon-secret-7d1e"))]
    assert (
        asyncio.run(call_asgi(gateway.asgi(echo_asgi), "GET", "/login", good)).status == 200
    )  # off the loop
    assert wsgi_call(gateway.wsgi(echo_wsgi), "GET", "/open", []).status == 200
    assert [(r.reason, r.client) for r in records.decisions] == [
        ("wrong_password", "127.0.0.1"),
        ("wrong_password", "127.0.0.1"),
        ("authenticated", "127.0.0.1"),
        ("no_auth", "127.0.0.1"),
    ]
    assert_records_clean(records.all)


def test_nothing_is_logged_when_the_logger_is_off(caplog: pytest.LogCaptureFixture) -> None:
    gateway = Gateway.from_dict(document())
    with caplog.at_level(logging.WARNING, logger="consumer_auth.auth"):
        gateway.decide_now(facts("/login", basic("alex", SECRET)))
    assert [r for r in caplog.records if r.name == "consumer_auth.auth"] == []


def test_reprs_and_config_errors_hide_secrets() -> None:
    config = parse_config(document())
    gateway = Gateway.from_config(config)
    texts = [
        repr(config),
        repr(gateway.consumers),
        repr(gateway.routes),
        repr(BasicAuthCredential("alex", SECRET)),
        repr(BasicAuthCredential("dave", password_hash=STORED_HASH)),
        repr(Consumer("alex", password=SECRET)),
        repr(parse_authorization([basic("alex", SECRET)])),
        repr(facts("/login", basic("alex", SECRET))),
        repr(gateway.decide(facts("/login", basic("carol", STORED)))),
        repr(gateway.decide_now(facts("/login", basic("carol", STORED)))),
        repr(gateway.brute_force_store),
    ]
    for bad in (
        {"username": "alex", "password": 123456},
        {"username": "alex", "password_hash": SECRET},
        {"username": "alex", "password": SECRET, "password_hash": STORED_HASH},
        {"username": "alex", "password": SECRET, "extra": SECRET},
    ):
        with pytest.raises(ConfigError) as caught:
            Gateway.from_dict({"consumers": [{"username": "alex", "plugins": {"basic-auth": bad}}]})
        texts.append(str(caught.value))
    assert_no_secret(*texts)


def test_per_view_guards_log_their_decisions(records: Records) -> None:
    from consumer_auth import BasicAuthPlugin, ConsumerRestrictionPlugin

    gateway = Gateway.from_dict(document())
    guard = gateway.guard(BasicAuthPlugin(), ConsumerRestrictionPlugin(whitelist=("carol",)))
    guard.decide_now(facts("/", basic("alex", SECRET)))
    alex = next(c for c in gateway.consumers if c.username == "alex")
    guard.decide_now(facts("/"), consumer=alex)  # already authenticated by a gateway route
    carol = next(c for c in gateway.consumers if c.username == "carol")
    guard.decide_now(facts("/"), consumer=carol)
    assert [(r.route, r.outcome, r.reason, r.consumer) for r in records.decisions] == [
        ("guard", "reject", "wrong_password", "alex"),
        ("guard", "reject", "consumer_forbidden", "alex"),
        ("guard", "allow", "already_authenticated", "carol"),
    ]
    assert_records_clean(records.all)


def test_a_pending_check_hides_the_login_a_client_typed() -> None:
    gateway = Gateway.from_dict(document())
    pending = gateway.decide(facts("/unnamed", basic(SECRET, SECRET)))  # an unknown login: a slow decoy
    assert isinstance(pending, Pending)
    assert pending.login == SECRET  # adapters still get it
    assert_no_secret(repr(pending))


ZONED = [
    "fe80::1%do-not-log-me",
    "fe80::1%25do-not-log-me",
    "[fe80::1%do-not-log-me]:443",
    "fe80::1%do-not-log-me\x1b[31m",
]


@pytest.mark.parametrize("forwarded", ZONED)
def test_a_zone_id_in_x_forwarded_for_is_not_an_address(forwarded: str) -> None:
    trusted = Gateway.from_dict(document(trusted_proxies=["127.0.0.1"]))
    facts = RequestFacts("GET", "/login", client="127.0.0.1", forwarded_for=(f"203.0.113.9, {forwarded}",))
    # The walk stops at the entry that is not an address: the last trusted hop is the client.
    assert trusted.client_address(facts) == "127.0.0.1"


def test_serve_writes_no_client_text_from_x_forwarded_for_into_auth_log_lines(tmp_path: Any) -> None:
    """Over a real ``consumer-auth serve --auth-log`` behind a trusted proxy (this test, on loopback)."""
    import yaml

    from proxy_servers import CONSUMER_AUTH, Process, request, start_upstream

    upstream = start_upstream(name="zone-upstream")
    config = tmp_path / "gateway.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                **document(trusted_proxies=["127.0.0.1"]),
                "routes": [{"uri": "/*", "upstream": upstream.url, "plugins": {"basic-auth": {}}}],
            }
        )
    )
    process = Process(
        [CONSUMER_AUTH, "serve", "--config", str(config), "--port", "0", "--no-access-log", "--auth-log"]
    )
    try:
        port = process.uvicorn_port()
        sent = ZONED[:3]  # an escape character never gets past the server's header parser (400)
        for count, forwarded in enumerate(sent, 1):
            reply = request(
                port, "GET", "/x", [("X-Forwarded-For", forwarded), ("Authorization", basic("alex", "no"))]
            )
            assert reply.status == 401
            process.wait_for(r"reject wrong_password", process.stderr, count=count)
        lines = [line for line in process.stderr if "wrong_password" in line]
        assert len(lines) == len(sent)
        assert all(line.endswith("client=127.0.0.1") for line in lines), lines
        assert not any("do-not-log-me" in line for line in process.stderr)
    finally:
        assert process.terminate() == 0
