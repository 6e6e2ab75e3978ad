"""``consumer-auth demo``: the guide's scenario, with a stand-in for httpbin as the upstream."""

from __future__ import annotations

import json
import socket
from typing import Any

from aiohttp import web

__all__ = ["CURLS", "SLIDESHOW", "guide_config", "stand_in_upstream", "usage"]

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


CURLS = (
    ("", "401", '{"message":"Missing authorization in request"}', "WWW-Authenticate: Basic realm='.'"),
    ("-u alex:123456 ", "200", "httpbin's /json slideshow (429 bytes of application/json)", ""),
    ("-u wrong-user:wrong-password ", "401", '{"message":"Invalid user key in authorization"}', ""),
    ("-u alex:wrong-password ", "401", '{"message":"Password is error"}', ""),
)
"""The guide's four requests: curl options, the status, the body and a header they answer with."""


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
    for options, status, body, header in CURLS:
        lines.append(f"  curl -i -H 'Host: example.com' {options}{gateway}/v1/json")
        lines.append(f"    => {status} {body}" + (f"  ({header})" if header else ""))
    lines += ["", "Press Ctrl+C to stop."]
    return "\n".join(lines)


async def _json(request: web.Request) -> web.Response:
    return web.Response(
        body=SLIDESHOW,
        content_type="application/json",
        headers={"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Credentials": "true"},
    )


async def stand_in_upstream() -> tuple[web.AppRunner, str]:
    """Start the stand-in httpbin on 127.0.0.1 (an ephemeral port); its runner and URL."""
    app = web.Application()
    app.router.add_get("/json", _json)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    site = web.SockSite(runner, sock)
    await site.start()
    return runner, f"http://127.0.0.1:{sock.getsockname()[1]}"
