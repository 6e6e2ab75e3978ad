"""A gateway process following a store, for the multi-process tests.

``python store_server.py STORE_URL ADMIN_KEY`` serves, on two ephemeral loopback ports, the echo app
behind a gateway attached to the store (route ``/json`` guarded by basic-auth) and the Admin API on the
same store. It prints ``gateway=PORT admin=PORT`` on one line once both listen, and logs the store's
events to stderr.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys

import uvicorn

from consumer_auth import BasicAuthPlugin, Gateway, Route
from consumer_auth.admin import AdminAPI
from consumer_auth.store import SQLStore
from support import echo_asgi


def _listen() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


async def main(url: str, admin_key: str) -> None:
    gateway = Gateway(routes=[Route("/json", plugins=[BasicAuthPlugin()])])
    watcher = gateway.attach(SQLStore(url))
    admin = AdminAPI(SQLStore(url), admin_key=admin_key, on_change=watcher.wake)
    sockets = _listen(), _listen()
    servers = [
        uvicorn.Server(uvicorn.Config(app, log_config=None, log_level="warning", lifespan="off"))
        for app in (gateway.asgi(echo_asgi), admin)
    ]
    print(f"gateway={sockets[0].getsockname()[1]} admin={sockets[1].getsockname()[1]}", flush=True)
    await asyncio.gather(
        *(server.serve(sockets=[sock]) for server, sock in zip(servers, sockets, strict=True))
    )


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")
    asyncio.run(main(sys.argv[1], sys.argv[2]))
