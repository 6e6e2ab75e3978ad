"""The WSGI adapter: translate ``environ`` to request facts and a decision back to WSGI."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ._paths import cut_fragment
from ._verify import threaded_verifier
from .decision import IDENTITY_HEADERS, Allow, Pending, Reject, RequestFacts
from .routing import normalize_path

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from .gateway import Gateway

__all__ = ["CONSUMER_KEY", "GatewayMiddleware", "apply_allow", "apply_identity", "facts_from_environ"]

CONSUMER_KEY = "consumer_auth.consumer"
"""Where the authenticated :class:`~consumer_auth.Consumer` is put in the WSGI environ (and ASGI scope)."""

_IDENTITY_KEYS = tuple("HTTP_" + name.upper().replace("-", "_") for name in IDENTITY_HEADERS)
_ENVIRON_KEYS = dict(zip(IDENTITY_HEADERS, _IDENTITY_KEYS, strict=True))


def _text(native: str) -> str:
    """A WSGI "native string" (bytes as latin-1) as the UTF-8 text the client meant."""
    try:
        return native.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return native


def _native(text: str) -> str:
    return text.encode("utf-8").decode("latin-1")


def facts_from_environ(environ: WSGIEnvironment) -> RequestFacts:
    """The request facts of a WSGI request (the path is ``PATH_INFO``, below any ``SCRIPT_NAME``).

    The path is read as routers read it: ``/`` + a ``PATH_INFO`` that lacks it, without a fragment the
    server left in it, normalized (see :func:`~consumer_auth.routing.normalize_path`).
    """
    host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME")
    authorization = environ.get("HTTP_AUTHORIZATION")
    forwarded_for = environ.get("HTTP_X_FORWARDED_FOR")
    path = _text(environ.get("PATH_INFO", "") or "/")
    if "#" in path:  # a server may have left the fragment in the path (SPEC §8)
        path = cut_fragment(path, environ.get("RAW_URI") or environ.get("REQUEST_URI"))
    return RequestFacts(
        environ.get("REQUEST_METHOD", "GET").upper(),
        normalize_path(path),
        host,
        (authorization,) if authorization is not None else (),
        environ.get("REMOTE_ADDR") or None,
        (forwarded_for,) if forwarded_for is not None else (),
    )


def apply_identity(environ: WSGIEnvironment, decision: Allow) -> None:
    """The header half of :func:`apply_allow`: identity headers, hidden credentials, the consumer.

    Client copies of the identity headers are always removed; the gateway's are set; ``Authorization``
    goes when credentials are hidden; the consumer is put under :data:`CONSUMER_KEY`. Also works on a
    mapping shaped like an environ (Django's ``request.META``).
    """
    for key in _IDENTITY_KEYS:
        environ.pop(key, None)
    for name, value in decision.identity_headers:
        environ[_ENVIRON_KEYS.get(name) or "HTTP_" + name.upper().replace("-", "_")] = value
    if decision.hide_credentials:
        environ.pop("HTTP_AUTHORIZATION", None)
    if decision.consumer is not None:
        environ[CONSUMER_KEY] = decision.consumer


def apply_allow(environ: WSGIEnvironment, facts: RequestFacts, decision: Allow) -> None:
    """Change ``environ`` in place as the decision says, before the app sees it.

    :func:`apply_identity`, then the path: the app sees the normalized path that was authorized, and the
    service prefix moves from ``PATH_INFO`` to ``SCRIPT_NAME``.
    """
    apply_identity(environ, decision)
    path = facts.path
    if _native(path) != environ.get("PATH_INFO"):
        environ["PATH_INFO"] = _native(path)  # the app sees the path that was authorized
    prefix = decision.strip_prefix
    if prefix and path.startswith(prefix):
        environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + _native(prefix)
        environ["PATH_INFO"] = _native(path[len(prefix) :])


class GatewayMiddleware:
    """WSGI middleware that lets a request reach ``app`` only when the gateway allows it.

    Usually made with :meth:`Gateway.wsgi`. A rejection is answered here with the exact status,
    headers and body of the SPEC; ``app`` is never called for it. Slow hashes are verified in the
    request's thread, at most a few at once and one per login lane (``consumer_auth._verify``).
    """

    def __init__(self, app: WSGIApplication, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        facts = facts_from_environ(environ)
        decision = self.gateway.decide(facts)
        if isinstance(decision, Pending):
            decision = threaded_verifier().run(decision)
        if isinstance(decision, Reject):
            start_response(decision.status_line, list(decision.wsgi_headers))
            return [] if facts.method == "HEAD" else [decision.body]
        apply_allow(environ, facts, decision)
        return self.app(environ, start_response)
