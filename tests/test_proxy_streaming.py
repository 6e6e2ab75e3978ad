"""Bodies stream through both proxies: memory does not grow with body size (SPEC §5).

Each proxy runs in its own process (``consumer-auth serve`` for ASGI, werkzeug for WSGI) so that its
peak resident memory can be read from ``/proc``. A warm-up transfer first lets every buffer reach its
working size; a body of ``SIZE`` bytes then may raise the peak by at most ``GROWTH`` — an eighth of the
body. A proxy that held the body (or any large part of it) would exceed that many times over.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from proxy_servers import (
    CONSUMER_AUTH,
    Process,
    UpstreamServer,
    download_source,
    pattern,
    start_upstream,
    upload_sink,
)

SIZE = 192 * 1024 * 1024
GROWTH = SIZE // 8
WARM_UP = 8 * 1024 * 1024
MAIN = Path(__file__).with_name("wsgi_proxy_main.py")


@cache
def digest(size: int) -> str:
    hashed = hashlib.sha256()
    for piece in pattern(size):
        hashed.update(piece)
    return hashed.hexdigest()


@pytest.fixture(scope="module")
def sink() -> UpstreamServer:
    return start_upstream(upload_sink, "sink")


@pytest.fixture(scope="module")
def source() -> UpstreamServer:
    return start_upstream(download_source, "source")


@pytest.fixture(params=["asgi", "wsgi"], ids=lambda kind: f"{kind}-proxy")
def proxy(
    request: pytest.FixtureRequest, sink: UpstreamServer, source: UpstreamServer, tmp_path: Path
) -> Iterator[tuple[Process, int]]:
    """A proxy process: ``/up`` forwards to the sink, ``/down`` to the source."""
    config = {
        "routes": [
            {"uri": "/up", "methods": ["POST"], "upstream": sink.url},
            {"uri": "/down", "methods": ["GET"], "upstream": source.url},
        ]
    }
    path = tmp_path / "proxy.json"
    path.write_text(json.dumps(config))
    if request.param == "asgi":
        process = Process([CONSUMER_AUTH, "serve", "--config", str(path), "--port", "0", "--no-access-log"])
        port = process.uvicorn_port()
    else:
        process = Process([sys.executable, str(MAIN), str(path)])
        port = int(process.wait_for(r"^\d+$", process.stdout).group(0))
    yield process, port
    process.terminate()


def upload(port: int, size: int, *, chunked: bool) -> dict[str, object]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        headers = {} if chunked else {"Content-Length": str(size)}
        connection.request("POST", "/up", body=pattern(size), headers=headers, encode_chunked=chunked)
        response = connection.getresponse()
        assert response.status == 200
        answer: dict[str, object] = json.loads(response.read())
        return answer
    finally:
        connection.close()


def download(port: int, size: int, *, chunked: bool) -> str:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("GET", f"/down?size={size}&chunked={int(chunked)}")
        response = connection.getresponse()
        assert response.status == 200
        hashed = hashlib.sha256()
        received = 0
        while chunk := response.read(65536):
            hashed.update(chunk)
            received += len(chunk)
        assert received == size
        return hashed.hexdigest()
    finally:
        connection.close()


def test_upload_streams_with_bounded_memory(proxy: tuple[Process, int]) -> None:
    process, port = proxy
    assert upload(port, WARM_UP, chunked=True) == {"received": WARM_UP, "sha256": digest(WARM_UP)}
    assert upload(port, WARM_UP, chunked=False) == {"received": WARM_UP, "sha256": digest(WARM_UP)}
    _, before = process.memory()
    assert upload(port, SIZE, chunked=False) == {"received": SIZE, "sha256": digest(SIZE)}
    _, after = process.memory()
    assert after - before < GROWTH, (
        f"peak memory grew by {(after - before) >> 20} MiB for a {SIZE >> 20} MiB body"
    )


def test_download_streams_with_bounded_memory(proxy: tuple[Process, int]) -> None:
    process, port = proxy
    assert download(port, WARM_UP, chunked=False) == digest(WARM_UP)
    assert download(port, WARM_UP, chunked=True) == digest(WARM_UP)
    _, before = process.memory()
    assert download(port, SIZE, chunked=True) == digest(SIZE)
    _, after = process.memory()
    assert after - before < GROWTH, (
        f"peak memory grew by {(after - before) >> 20} MiB for a {SIZE >> 20} MiB body"
    )
