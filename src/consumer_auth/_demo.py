"""``consumer-auth demo``: the guide's scenario, with a stand-in for httpbin as the upstream."""

from __future__ import annotations

import asyncio
import json
import shlex
import socket
from collections.abc import Iterable, MutableMapping
from typing import Any

from ._limits import ServerLimits

__all__ = [
    "CURLS",
    "SLIDESHOW",
    "StandIn",
    "curl_commands",
    "guide_config",
    "guide_requests",
    "stand_in_upstream",
    "usage",
]

SLIDESHOW = (
    json.dumps(
        {
            "slideshow": {
                "author": "Yours Truly",
                "date": "date of publication",
                "slides": [
                    {"title": "Wake up to WonderWidgets!", "type": "all"},
                    {
                        "items": ["Why <em>WonderWidgets</em> are great", "Who <em>buys</em> WonderWidgets"],
                        "title": "Overview",
                        "type": "all",
                    },
                ],
                "title": "Sample Slide Show",
            }
        },
        indent=2,
        separators=(", ", ": "),  # httpbin's own spacing: its /json body is exactly these 429 bytes
    )
    + "\n"
).encode()
"""httpbin's ``/json`` document, byte for byte as httpbin serves it (429 bytes, as in the guide)."""


def guide_config(upstream: str) -> dict[str, Any]:
    """The guide's configuration: consumer alex / 123456, service ``basic-auth-app`` (``/v1``,
    ``example.com``), route ``json`` (``GET /json``, basic-auth), forwarding to ``upstream``."""
    return {
        "profile": "classic",
        "consumers": [
            {"username": "alex", "plugins": {"basic-auth": {"username": "alex", "password": "123456"}}},
        ],
        "services": [
            {
                "id": "basic-auth-app",
                "name": "basic-auth-app",
                "path_prefix": "/v1",
                "hosts": ["example.com"],
                "upstream": upstream,
            }
        ],
        "routes": [
            {
                "id": "json",
                "name": "json",
                "service_id": "basic-auth-app",
                "uri": "/json",
                "methods": ["GET"],
                "plugins": {"basic-auth": {"hide_credentials": False}},
            }
        ],
    }


Request = tuple[str, str, str, str]
"""One request to try: curl options, the status, the body and a header it answers with."""


def guide_requests(login: str, password: str, realm: str, answer: str) -> tuple[Request, ...]:
    """The guide's four requests against a basic-auth route, as the classic profile answers them.

    Args:
        login: A credential username that exists; ``password`` is its password (or a placeholder).
        realm: The route's realm (``.`` when unset, under the classic profile).
        answer: What the route answers once authenticated (its upstream's answer).
    """
    return (
        (
            "",
            "401",
            '{"message":"Missing authorization in request"}',
            f"WWW-Authenticate: Basic realm='{realm}'",
        ),
        (f"-u {shlex.quote(f'{login}:{password}')} ", "200", answer, ""),
        ("-u wrong-user:wrong-password ", "401", '{"message":"Invalid user key in authorization"}', ""),
        (f"-u {shlex.quote(f'{login}:wrong-password')} ", "401", '{"message":"Password is error"}', ""),
    )


CURLS = guide_requests("alex", "123456", ".", "httpbin's /json slideshow (429 bytes of application/json)")
"""The guide's four requests: curl options, the status, the body and a header they answer with."""


def curl_commands(gateway: str, host: str | None, path: str, requests: Iterable[Request]) -> list[str]:
    """The lines that show each request as a ``curl`` command, followed by what it should answer."""
    lines = []
    host_option = f"-H {shlex.quote(f'Host: {host}')} " if host else ""
    for options, status, body, header in requests:
        lines.append(f"curl -i {host_option}{options}{gateway}{path}")
        lines.append(f"  => {status} {body}" + (f"  ({header})" if header else ""))
    return lines


def usage(gateway: str, upstream: str) -> str:
    """What the demo prints: the scenario, the four ``curl`` commands and what each should answer."""
    lines = [
        "consumer-auth demo: the guide's scenario (Use Basic Auth to Protect Your APIs)",
        "  consumer alex (basic-auth alex / 123456)",
        "  service basic-auth-app: path prefix /v1, host example.com",
        "  route json: GET /json, basic-auth",
        f"  gateway  {gateway}",
        f"  upstream {upstream} (a stand-in for httpbin serving /json)",
        "",
        "Try:",
        "",
    ]
    lines += ["  " + line for line in curl_commands(gateway, "example.com", "/v1/json", CURLS)]
    lines += ["", "Press Ctrl+C to stop."]
    return "\n".join(lines)


_JSON_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(SLIDESHOW)).encode()),
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-credentials", b"true"),
]
_NOT_FOUND = b"404: Not Found"


async def _httpbin(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    """The stand-in's ASGI app: ``GET /json`` is the slideshow, anything else 404."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] != "http":
        return
    if scope["path"] == "/json" and scope["method"] in ("GET", "HEAD"):
        status, headers, body = 200, _JSON_HEADERS, SLIDESHOW
    else:
        status, body = 404, _NOT_FOUND
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"14")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class StandIn:
    """The stand-in httpbin, served by the project's own server front on the running loop."""

    def __init__(self, sock: socket.socket) -> None:
        from ._runner import Server

        self.server = Server(_httpbin, ServerLimits(), announce=False, quiet=True)
        self.sock = sock
        self.task: asyncio.Task[bool] | None = None

    async def start(self) -> None:
        self.task = asyncio.ensure_future(self.server.serve([self.sock], signals=False))
        while not self.server.started and not self.task.done():
            await asyncio.sleep(0.01)

    async def aclose(self) -> None:
        """Stop serving (requests in flight finish first)."""
        self.server.stop()
        if self.task is not None:
            await self.task


async def stand_in_upstream() -> tuple[StandIn, str]:
    """Start the stand-in httpbin on 127.0.0.1 (an ephemeral port); the running server and its URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    stand_in = StandIn(sock)
    await stand_in.start()
    return stand_in, f"http://127.0.0.1:{sock.getsockname()[1]}"
