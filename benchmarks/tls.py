"""``consumer-auth serve`` over TLS: HTTP/1.1 and HTTP/2 (ALPN ``h2``) against clear-text HTTP/1.1, with h2load.

One ``serve`` worker in front of a one-worker nginx answering ``ok``; the guide's kind of route (basic-auth,
clear-text credential). h2load (Debian's ``nghttp2-client``) drives every variant the same way: 32
connections on 2 threads, ``-m`` streams in flight per connection (1 for HTTP/1.1: no pipelining). When
hypercorn is installed, the same proxy app on hypercorn (h11 and h2, the same ``h2`` library) is measured
too: the other way ``serve`` could have had HTTP/2.

Run: ``cd benchmarks && ../.venv/bin/python tls.py [--quick]`` (installs nginx and h2load with apt-get
when missing, as root).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import interleaved, machine, median
from proxy import AUTHORIZATION, PASSWORD, UPSTREAM_BODY, free_port, nginx, stop, wait_for


def ensure_tools() -> None:
    missing = [
        package
        for tool, package in (("nginx", "nginx"), ("h2load", "nghttp2-client"))
        if not shutil.which(tool)
    ]
    if missing:
        environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
            check=True,
            env=environment,
        )


def certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1", "-days", "1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def config(directory: Path, upstream: int, tls: tuple[Path, Path] | None) -> Path:
    document: dict[str, object] = {
        "consumers": [
            {"username": "alex", "plugins": {"basic-auth": {"username": "alex", "password": PASSWORD}}}
        ],
        "services": [{"id": "bench", "upstream": f"http://127.0.0.1:{upstream}"}],
        "routes": [{"uri": "/*", "service_id": "bench", "plugins": {"basic-auth": {}}}],
    }
    if tls is not None:
        document["server"] = {"ssl_certfile": str(tls[0]), "ssl_keyfile": str(tls[1])}
    path = directory / f"serve-{'tls' if tls else 'plain'}.json"
    path.write_text(json.dumps(document))
    return path


def serve(path: Path, port: int) -> subprocess.Popen[bytes]:
    command = [str(Path(sys.executable).with_name("consumer-auth")), "serve", "--config", str(path),
               "--port", str(port), "--no-access-log", "--log-level", "warning"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(port, process, "consumer-auth serve")
    return process


HYPERCORN_APP = """\
import json, os
from consumer_auth import Gateway
app = Gateway.from_file(os.environ["BENCH_CONFIG"]).asgi_proxy()
"""


def hypercorn(directory: Path, path: Path, port: int, tls: tuple[Path, Path]) -> subprocess.Popen[bytes]:
    (directory / "hypercorn_app.py").write_text(HYPERCORN_APP)
    command = [str(Path(sys.executable).with_name("hypercorn")), "hypercorn_app:app", "--bind", f"127.0.0.1:{port}",
               "--certfile", str(tls[0]), "--keyfile", str(tls[1]), "--workers", "1", "--log-level", "warning"]  # fmt: skip
    environment = {**os.environ, "BENCH_CONFIG": str(path), "PYTHONPATH": str(directory)}
    process = subprocess.Popen(
        command, cwd=directory, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_for(port, process, "hypercorn")
    return process


def h2load(url: str, requests: int, *, http1: bool, streams: int = 1) -> float:
    """Requests per second; every answer must be a 2xx."""
    command = [
        "h2load",
        "-n",
        str(requests),
        "-c",
        "32",
        "-t",
        "2",
        "-m",
        str(streams),
        "-H",
        f"authorization: {AUTHORIZATION}",
    ]
    if http1:
        command.append("--h1")
    done = subprocess.run([*command, url], capture_output=True, text=True, check=True)
    statuses = re.search(r"status codes: (\d+) 2xx", done.stdout)
    if statuses is None or int(statuses.group(1)) != requests:
        raise RuntimeError(f"h2load saw failed requests on {url}:\n{done.stdout}")
    found = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", done.stdout)
    if found is None:
        raise RuntimeError(f"unexpected h2load output:\n{done.stdout}")
    return float(found.group(1))


def main() -> int:
    quick = "--quick" in sys.argv
    requests, rounds = (5000, 2) if quick else (30000, 3)
    ensure_tools()
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="consumer-auth-tls-bench-") as temp:
        directory = Path(temp)
        tls = certificate(directory)
        ports = {name: free_port() for name in ("upstream", "plain", "tls", "hypercorn")}
        try:
            processes.append(
                nginx(directory, "upstream", ports["upstream"], ports["upstream"], UPSTREAM_BODY)
            )
            processes.append(serve(config(directory, ports["upstream"], None), ports["plain"]))
            tls_config = config(directory, ports["upstream"], tls)
            processes.append(serve(tls_config, ports["tls"]))
            variants = {
                "serve, HTTP/1.1, clear text": lambda: h2load(f"http://127.0.0.1:{ports['plain']}/", requests, http1=True),
                "serve, HTTP/1.1 over TLS": lambda: h2load(f"https://127.0.0.1:{ports['tls']}/", requests, http1=True),
                "serve, HTTP/2 (1 stream per connection)": lambda: h2load(f"https://127.0.0.1:{ports['tls']}/", requests, http1=False),
                "serve, HTTP/2 (10 streams per connection)": lambda: h2load(f"https://127.0.0.1:{ports['tls']}/", requests, http1=False, streams=10),
            }  # fmt: skip
            if shutil.which(str(Path(sys.executable).with_name("hypercorn"))):
                processes.append(hypercorn(directory, tls_config, ports["hypercorn"], tls))
                url = f"https://127.0.0.1:{ports['hypercorn']}/"
                variants |= {
                    "hypercorn, HTTP/2 (1 stream per connection)": lambda: h2load(url, requests, http1=False),
                    "hypercorn, HTTP/2 (10 streams per connection)": lambda: h2load(url, requests, http1=False, streams=10),
                }  # fmt: skip
            for measure in variants.values():
                measure()  # warm up
            samples = interleaved(variants, rounds)
        finally:
            stop(processes)
    base = median(samples["serve, HTTP/1.1, clear text"])
    print(f"{machine()}; h2load -n {requests} -c 32 -t 2, {rounds} interleaved rounds, medians\n")
    print("| front | requests/s (each round) | median | vs clear-text HTTP/1.1 |")
    print("|---|---|---|---|")
    for name, values in samples.items():
        rounds_text = " · ".join(f"{value:,.0f}" for value in values)
        print(f"| {name} | {rounds_text} | {median(values):,.0f} | {median(values) / base:.2f}× |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
