"""A trivial ASGI app answering ``ok`` (the bare-front benchmark of ``front.py``); run directly, it is served
by the project's own front on the port given: ``python benchmarks/_ok_app.py PORT``."""

from __future__ import annotations

import sys
from typing import Any

_HEADERS = [(b"content-type", b"text/plain"), (b"content-length", b"3")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": b"ok\n"})


if __name__ == "__main__":
    from consumer_auth._limits import ServerLimits
    from consumer_auth._runner import bind, run

    sock = bind("127.0.0.1", int(sys.argv[1]))
    assert not isinstance(sock, str), sock
    run(app, [sock], ServerLimits())
