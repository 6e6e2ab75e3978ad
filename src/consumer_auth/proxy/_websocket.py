"""Websocket forwarding for the ASGI proxy (routes with ``enable_websocket: true``).

The handshake has been decided like any request before this module is reached (a refused one got the
gateway's answer through the ASGI ``websocket.http.response`` extension). The upstream side is a client
connection of the ``websockets`` library (the implementation uvicorn serves websockets with), opened to
the node the balancer picks, with the request's forwarded headers; then messages flow both ways until
either side closes, and the close code goes on to the other side.

Limits: a message is at most :data:`MAX_MESSAGE` bytes each way (uvicorn's default ``ws_max_size`` on
the client side); both sides are pinged every 20 seconds and a side that does not answer within 20
seconds is closed (1011), which is also how a dead idle connection ends. The upstream handshake must
complete within the upstream's ``connect`` timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from consumer_auth.asgi import send_reject
from consumer_auth.sansio.decision import Allow, Reject, encode_headers
from consumer_auth.sansio.upstream import Upstream, UpstreamNode

from ._common import Exchange, log_fault, tls_for
from ._health import Health, Outcome
from ._plan import BAD_GATEWAY, GATEWAY_TIMEOUT, UpstreamRequest, response_headers

if TYPE_CHECKING:
    from asgiref.typing import ASGIReceiveCallable, ASGIReceiveEvent, ASGISendCallable, WebSocketScope

__all__ = ["MAX_MESSAGE", "forward_websocket"]

MAX_MESSAGE = 16 * 1024 * 1024
"""The largest message forwarded, either way (larger closes the connection with 1009)."""

_PING_SECONDS = 20.0
# Close codes that are never sent in a close frame (RFC 6455 §7.4.1): what the other side gets instead.
_NOT_SENT = {1005: 1000, 1006: 1011, 1015: 1011}
# The websocket client sends its own handshake headers; the response's own are not the client's either.
_OWN_HEADERS = (b"sec-websocket-",)
_NOT_RELAYED = frozenset({b"date", b"server", b"content-length"})


def _own(name: bytes) -> bool:
    return name.startswith(_OWN_HEADERS)


async def forward_websocket(
    scope: WebSocketScope,
    receive: ASGIReceiveCallable,
    send: ASGISendCallable,
    *,
    upstream: Upstream,
    nodes: tuple[UpstreamNode, ...],
    request: UpstreamRequest,
    decision: Allow,
    exchange: Exchange,
    health: Health,
) -> None:
    """Open the websocket to the first node that accepts it, then relay messages until either side closes."""
    connected = await receive()
    if connected["type"] != "websocket.connect":
        exchange.status = 499
        return

    async def replay() -> ASGIReceiveEvent:
        return connected

    async def refuse(answer: Reject) -> None:
        exchange.status = answer.status
        exchange.sent = len(answer.body)
        await send_reject(scope, replay, send, answer)

    headers = [
        (name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers if not _own(name)
    ]
    subprotocols: Any = list(scope.get("subprotocols") or ()) or None
    fault = BAD_GATEWAY
    checked = upstream.checks is not None
    for node in nodes:
        exchange.node = node
        server_name, context = tls_for(upstream, node)
        scheme = "wss" if context is not None else "ws"
        uri = f"{scheme}://{request.host(upstream, node).decode('latin-1')}{request.target.decode('ascii')}"
        tls: dict[str, Any] = {"ssl": context, "server_hostname": server_name} if context is not None else {}
        try:
            websocket = await connect(
                uri,
                host=node.host.strip("[]"),
                port=node.port,
                additional_headers=headers,
                subprotocols=subprotocols,
                user_agent_header=None,
                proxy=None,
                open_timeout=upstream.timeout.connect,
                ping_interval=_PING_SECONDS,
                ping_timeout=_PING_SECONDS,
                max_size=MAX_MESSAGE,
                **tls,
            )
        except InvalidStatus as refused:
            # The upstream answered the handshake with something else than 101: that answer is the client's.
            response = refused.response
            if checked:
                health.report_status(upstream, node, response.status_code)
            await _relay_refusal(scope, send, response, exchange)
            return
        except TimeoutError as error:
            fault = GATEWAY_TIMEOUT
            log_fault("upstream websocket handshake timeout", decision, node, error)
            if checked:
                health.report_fault(upstream, node, Outcome.TIMEOUT)
            continue
        except (OSError, InvalidHandshake, InvalidURI) as error:
            fault = BAD_GATEWAY
            log_fault("upstream websocket handshake failed", decision, node, error)
            if checked and isinstance(error, OSError):
                health.report_fault(upstream, node, Outcome.TCP_FAILURE)
            if isinstance(error, OSError):
                continue
            break
        await _relay(websocket, scope, receive, send, exchange)
        return
    await refuse(fault)


async def _relay_refusal(
    scope: WebSocketScope, send: ASGISendCallable, response: Any, exchange: Exchange
) -> None:
    exchange.status = response.status_code
    if "websocket.http.response" not in (scope.get("extensions") or {}):
        await send({"type": "websocket.close", "code": 1008, "reason": ""})
        return
    raw = encode_headers(response.headers.raw_items())
    headers = [
        (name, value) for name, value in response_headers(raw) if not _own(name) and name not in _NOT_RELAYED
    ]
    body = response.body or b""
    exchange.sent = len(body)
    await send({"type": "websocket.http.response.start", "status": response.status_code, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": body, "more_body": False})


async def _relay(
    websocket: ClientConnection,
    scope: WebSocketScope,
    receive: ASGIReceiveCallable,
    send: ASGISendCallable,
    exchange: Exchange,
) -> None:
    handshake = websocket.response
    raw = encode_headers(handshake.headers.raw_items() if handshake is not None else ())
    accept_headers = [
        (name, value) for name, value in response_headers(raw) if not _own(name) and name not in _NOT_RELAYED
    ]
    await send({"type": "websocket.accept", "subprotocol": websocket.subprotocol, "headers": accept_headers})
    exchange.status = 101

    async def client_to_upstream() -> None:
        while True:
            message = await receive()
            if message["type"] == "websocket.receive":
                text = message.get("text")
                await websocket.send(text if text is not None else message.get("bytes") or b"")
            elif message["type"] == "websocket.disconnect":
                code = message.get("code", 1000)
                await websocket.close(_NOT_SENT.get(code, code))
                return

    async def upstream_to_client() -> None:
        with contextlib.suppress(ConnectionClosed):
            async for data in websocket:
                if isinstance(data, str):
                    exchange.sent += len(data)
                    await send({"type": "websocket.send", "text": data, "bytes": None})
                else:
                    exchange.sent += len(data)
                    await send({"type": "websocket.send", "bytes": data, "text": None})
        received = websocket.protocol.close_rcvd
        code = received.code if received is not None else 1011
        await send(
            {
                "type": "websocket.close",
                "code": _NOT_SENT.get(code, code),
                "reason": received.reason if received else "",
            }
        )

    inbound = asyncio.ensure_future(client_to_upstream())
    outbound = asyncio.ensure_future(upstream_to_client())
    try:
        await asyncio.wait((inbound, outbound), return_when=asyncio.FIRST_COMPLETED)
        if inbound.done() and not outbound.done() and isinstance(inbound.exception(), ConnectionClosed):
            # The upstream closed while a message went to it: the other task passes its close on.
            await asyncio.wait((outbound,), timeout=_PING_SECONDS)
        for task in (inbound, outbound):
            if task.done() and not task.cancelled():
                error = task.exception()
                if error is not None and not isinstance(error, ConnectionClosed | OSError):
                    raise error
    finally:
        for task in (inbound, outbound):
            task.cancel()
        await asyncio.gather(inbound, outbound, return_exceptions=True)
        await websocket.close()
