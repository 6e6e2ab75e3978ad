"""Serve ``gateway.wsgi_proxy()`` on werkzeug's threaded server in its own process (for memory tests).

Usage: ``python wsgi_proxy_main.py CONFIG.json``; prints the port it listens on (127.0.0.1, ephemeral),
then serves until SIGTERM.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

from werkzeug.serving import WSGIRequestHandler, make_server

from consumer_auth import Gateway


class _Quiet(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


def main() -> None:
    config = json.loads(Path(sys.argv[1]).read_text())
    proxy = Gateway.from_dict(config).wsgi_proxy()
    server = make_server("127.0.0.1", 0, proxy, threaded=True, request_handler=_Quiet)

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    print(server.server_port, flush=True)
    try:
        server.serve_forever(0.05)
    finally:
        server.server_close()
        proxy.close()


if __name__ == "__main__":
    main()
