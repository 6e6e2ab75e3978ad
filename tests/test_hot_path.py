"""The compiled hot path decides exactly as the full pipeline: same decisions, request for request.

A route whose only plugin is ``basic-auth`` answers through its shortcut (a fast header decode, a memo
of verified ``Authorization`` values); these tests run the same requests through a twin gateway whose
shortcuts are switched off, and through the header rules written out in full.
"""

from __future__ import annotations

import base64
import binascii
import re

from hypothesis import given, settings
from hypothesis import strategies as st

import configs
from consumer_auth import Allow, Consumer, Gateway, Pending, RequestFacts, Route
from consumer_auth.sansio.credentials import BasicCredentials, ParseFailure, parse_authorization
from consumer_auth.sansio.decision import Decision
from consumer_auth.sansio.plugins import BasicAuthPlugin
from support import basic
from test_fuzz import CONFIG_NAMES, TARGETS, Draws, _authorization, decode_request

_SETTINGS = settings(max_examples=1_500, derandomize=True, database=None, deadline=None)
_BASIC = re.compile(r"[Bb][Aa][Ss][Ii][Cc] +([A-Za-z0-9+/]+={0,2})")


def reference_parse(values: list[str]) -> BasicCredentials | ParseFailure:
    """The header rules of ``consumer_auth.sansio.credentials``, without its quick path."""
    if not values:
        return ParseFailure.MISSING
    if len(values) > 1:
        return ParseFailure.INVALID
    match = _BASIC.fullmatch(values[0].strip(" \t"))
    if match is None:
        return ParseFailure.INVALID
    unpadded = match.group(1).rstrip("=")
    if len(unpadded) % 4 == 1:
        return ParseFailure.INVALID
    try:
        raw = binascii.a2b_base64(unpadded + "=" * (-len(unpadded) % 4), strict_mode=True)
    except binascii.Error:
        return ParseFailure.INVALID
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    username, colon, password = text.partition(":")
    return BasicCredentials(username, password) if colon else ParseFailure.INVALID


@_SETTINGS
@given(st.binary(max_size=64))
def test_the_quick_header_decode_reads_as_the_rules(data: bytes) -> None:
    draws = Draws(data)
    values = [_authorization(draws, TARGETS[CONFIG_NAMES[0]].logins) for _ in range(draws.byte() % 3)]
    assert parse_authorization(values) == reference_parse(values)


@_SETTINGS
@given(st.text(max_size=30), st.binary(max_size=30))
def test_the_quick_header_decode_reads_any_basic_value_as_the_rules(prefix: str, raw: bytes) -> None:
    for value in ("Basic " + prefix, "Basic " + base64.b64encode(raw).decode() + prefix):
        assert parse_authorization([value]) == reference_parse([value])


def _outcome(decision: Decision | Pending) -> object:
    if isinstance(decision, Pending):
        decision = decision.run()
    if isinstance(decision, Allow):
        consumer = decision.consumer.username if decision.consumer is not None else None
        credential = decision.credential.username if decision.credential is not None else None
        return ("allow", consumer, credential, decision.identity_headers, decision.hide_credentials)
    return ("reject", decision.status, decision.headers, decision.body)


def _twins(name: str) -> tuple[Gateway, Gateway]:
    quick = Gateway.from_dict(configs.CONFIGS[name])
    full = Gateway.from_dict(configs.CONFIGS[name])
    for route in full.compiled_routes:
        route.pipeline.shortcut = None
    return quick, full


TWINS = {name: _twins(name) for name in CONFIG_NAMES}


def test_the_configurations_take_the_shortcut() -> None:
    quick = [route for gateway, _ in TWINS.values() for route in gateway.compiled_routes]
    assert sum(route.pipeline.shortcut is not None for route in quick) >= 5  # the comparison is not vacuous


@_SETTINGS
@given(st.binary(min_size=8, max_size=200))
def test_the_shortcut_decides_as_the_pipeline(data: bytes) -> None:
    request = decode_request(data)
    quick, full = TWINS[request.config]
    path = request.path.partition("?")[0]
    facts = RequestFacts(
        request.method,
        path,
        next((v for n, v in request.headers if n == "Host"), None),
        tuple(v for n, v in request.headers if n == "Authorization"),
        "127.0.0.1",
    )
    for _ in range(2):  # the second time from the memo
        assert _outcome(quick.decide(facts)) == _outcome(full.decide(facts))


def test_the_memo_forgets_with_the_consumer_set() -> None:
    gateway = Gateway(
        consumers=[Consumer("alex", password="123456")], routes=[Route("/x", plugins=[BasicAuthPlugin()])]
    )
    facts = RequestFacts("GET", "/x", None, (basic("alex", "123456"),))
    assert isinstance(gateway.decide_now(facts), Allow)
    assert isinstance(gateway.decide_now(facts), Allow)  # remembered
    gateway.replace_consumers([Consumer("alex", password="changed")])
    assert gateway.decide_now(facts).body == b'{"message":"Password is error"}\n'  # type: ignore[union-attr]
