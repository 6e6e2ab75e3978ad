"""Proxy throughput: ``consumer-auth serve`` vs nginx, Caddy and HAProxy, with ``wrk -c32``.

Every front runs one worker process (Caddy with ``GOMAXPROCS=1``, HAProxy with ``nbthread 1``) in front of
the same upstream (a one-worker nginx answering ``ok``), with keep-alive connections to it, and is measured
interleaved round by round with the others:

- clear-text credentials: nginx (a ``{PLAIN}`` htpasswd line), HAProxy (``http-request auth`` with an
  ``insecure-password`` userlist) and ``consumer-auth serve`` (a ``password`` in its config);
- hashes: nginx with a bcrypt htpasswd line (cost 5, what ``htpasswd -B`` writes), Caddy's ``basic_auth``
  with the same bcrypt hash, and ``consumer-auth serve`` with an argon2id hash (library defaults) and its
  verification cache;
- ``consumer-auth serve --workers 2`` with clear text, to show how it scales on the machine's cores (which
  it shares with wrk and the upstream).

nginx and wrk come from Debian's packages, as do Caddy and HAProxy; the script installs them with apt-get
when they are missing (as root). Without nginx or wrk it skips the benchmark with a note; without Caddy or
HAProxy, just their rows.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import Result, Target, interleaved, median

from consumer_auth import hash_password

PASSWORD = "123456"
AUTHORIZATION = "Basic " + base64.b64encode(f"alex:{PASSWORD}".encode()).decode()


def install(names: list[str]) -> str | None:
    """Install Debian packages that are missing; say why not when impossible."""
    missing = [name for name in names if shutil.which(name) is None]
    if not missing:
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return f"{', '.join(missing)} not installed (install the Debian packages, or run as root)"
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=False, env=environment)
    done = subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], check=False, env=environment
    )
    if done.returncode != 0 or any(shutil.which(name) is None for name in missing):
        return f"apt-get could not install {', '.join(missing)}"
    return None


def ensure_tools() -> str | None:
    """Install nginx and wrk when missing; say why not when impossible."""
    return install(["nginx", "wrk"])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """Terminate every process, then wait for each (killing one that takes over 10 s)."""
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def wait_for(port: int, process: subprocess.Popen[bytes], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on port {port}")


NGINX = """\
worker_processes 1;
daemon off;
pid {dir}/{name}.pid;
error_log {dir}/{name}.error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/{name}.body;
    proxy_temp_path {dir}/{name}.proxy;
    fastcgi_temp_path {dir}/{name}.fastcgi;
    uwsgi_temp_path {dir}/{name}.uwsgi;
    scgi_temp_path {dir}/{name}.scgi;
    upstream backend {{ server 127.0.0.1:{upstream}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        {body}
    }}
}}
"""

UPSTREAM_BODY = 'location / { return 200 "ok\\n"; }'
FRONT_BODY = """location / {{
            auth_basic "bench";
            auth_basic_user_file {htpasswd};
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}"""


def nginx(directory: Path, name: str, port: int, upstream: int, body: str) -> subprocess.Popen[bytes]:
    config = directory / f"{name}.conf"
    config.write_text(NGINX.format(dir=directory, name=name, port=port, upstream=upstream, body=body))
    process = subprocess.Popen(["nginx", "-p", str(directory), "-c", str(config)], stderr=subprocess.DEVNULL)
    wait_for(port, process, f"nginx ({name})")
    return process


def caddy(directory: Path, port: int, upstream: int, bcrypt_hash: str) -> subprocess.Popen[bytes]:
    """Caddy's ``basic_auth`` (bcrypt, as Caddy stores it: base64 of the hash) + ``reverse_proxy``, on one
    OS thread for Go code (``GOMAXPROCS=1``), its admin endpoint off. JSON config, so every Caddy 2 reads it."""
    password = base64.b64encode(bcrypt_hash.encode()).decode()
    document = {
        "admin": {"disabled": True},
        "logging": {"logs": {"default": {"level": "ERROR"}}},
        "apps": {
            "http": {
                "servers": {
                    "bench": {
                        "listen": [f"127.0.0.1:{port}"],
                        "automatic_https": {"disable": True},
                        "routes": [
                            {
                                "handle": [
                                    {
                                        "handler": "authentication",
                                        "providers": {
                                            "http_basic": {
                                                "hash": {"algorithm": "bcrypt"},
                                                "accounts": [{"username": "alex", "password": password}],
                                            }
                                        },
                                    },
                                    {
                                        "handler": "reverse_proxy",
                                        "upstreams": [{"dial": f"127.0.0.1:{upstream}"}],
                                    },
                                ]
                            }
                        ],
                    }
                }
            }
        },
    }
    config = directory / "caddy.json"
    config.write_text(json.dumps(document))
    environment = {
        **os.environ,
        "GOMAXPROCS": "1",
        "XDG_DATA_HOME": str(directory),
        "XDG_CONFIG_HOME": str(directory),
    }
    process = subprocess.Popen(
        ["caddy", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=environment,
    )
    wait_for(port, process, "caddy")
    return process


HAPROXY = """\
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
userlist bench
    user alex insecure-password {password}
frontend front
    bind 127.0.0.1:{port}
    http-request auth realm bench unless {{ http_auth(bench) }}
    default_backend upstream
backend upstream
    http-reuse always
    server upstream 127.0.0.1:{upstream}
"""


def haproxy(directory: Path, port: int, upstream: int) -> subprocess.Popen[bytes]:
    """HAProxy's ``http-request auth`` with an ``insecure-password`` userlist, one thread."""
    config = directory / "haproxy.cfg"
    config.write_text(HAPROXY.format(password=PASSWORD, port=port, upstream=upstream))
    process = subprocess.Popen(
        ["haproxy", "-db", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_for(port, process, "haproxy")
    return process


def consumer_auth(
    directory: Path, name: str, port: int, upstream: int, consumer: dict[str, str], workers: int = 1
) -> subprocess.Popen[bytes]:
    config = directory / f"{name}.json"
    document = {
        "consumers": [{"username": "alex", "plugins": {"basic-auth": {"username": "alex", **consumer}}}],
        "services": [{"id": "bench", "upstream": f"http://127.0.0.1:{upstream}"}],
        "routes": [{"uri": "/*", "service_id": "bench", "plugins": {"basic-auth": {}}}],
    }
    config.write_text(json.dumps(document))
    command = [
        str(Path(sys.executable).with_name("consumer-auth")), "serve", "--config", str(config),
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
        "--no-access-log",  # as nginx runs with access_log off
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(port, process, f"consumer-auth serve ({name})")
    return process


def wrk(port: int, seconds: int) -> float:
    """Requests per second over ``seconds`` with 32 connections; every answer must be a 200."""
    done = subprocess.run(
        ["wrk", "-t2", "-c32", f"-d{seconds}s", "-H", f"Authorization: {AUTHORIZATION}", f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    if "Non-2xx or 3xx responses" in done.stdout:
        raise RuntimeError(f"wrk saw failed requests on port {port}:\n{done.stdout}")
    found = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    if found is None:
        raise RuntimeError(f"unexpected wrk output:\n{done.stdout}")
    return float(found.group(1))


def serve_available() -> bool:
    executable = Path(sys.executable).with_name("consumer-auth")
    if not executable.exists():
        return False
    done = subprocess.run([str(executable), "serve", "--help"], capture_output=True, text=True, check=False)
    return done.returncode == 0


def run(quick: bool = False) -> Result:
    seconds, rounds = (3, 2) if quick else (10, 3)
    result = Result(
        "Proxy throughput against nginx, Caddy and HAProxy",
        f"`wrk -t2 -c32 -d{seconds}s` with valid credentials, {rounds} interleaved rounds, medians; one worker "
        "process (or thread) on each side unless the row says otherwise; the same one-worker nginx upstream "
        f"answering `ok`; {os.cpu_count()} CPUs shared by wrk, the front and the upstream.",
        header=["front", "credentials", "requests/s", "consumer-auth serve / this front"],
    )
    why_not = ensure_tools()
    if why_not is None and not serve_available():
        why_not = "`consumer-auth serve` is not available in this build"
    if why_not is not None:
        result.notes.append(f"Not run: {why_not}.")
        return result
    import bcrypt

    anchors = {"caddy": install(["caddy"]), "haproxy": install(["haproxy"])}
    for name, missing in anchors.items():
        if missing is not None:
            result.notes.append(f"The {name} row not run: {missing}.")
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="consumer-auth-bench-") as temp:
        directory = Path(temp)
        os.chmod(directory, 0o755)  # noqa: S103 - nginx workers (user nobody) read the htpasswd files
        plain_file, bcrypt_file = directory / "plain.htpasswd", directory / "bcrypt.htpasswd"
        plain_file.write_text(f"alex:{{PLAIN}}{PASSWORD}\n")
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(5)).decode()
        bcrypt_file.write_text(f"alex:{hashed.replace('$2b$', '$2y$', 1)}\n")
        fronts = ["nginx-plain", "nginx-bcrypt", "ours-plain", "ours-argon2", "ours-plain-2"]
        fronts += [name for name in ("caddy", "haproxy") if anchors[name] is None]
        ports = {name: free_port() for name in ("upstream", *fronts)}
        try:
            up = ports["upstream"]
            processes.append(nginx(directory, "upstream", up, up, UPSTREAM_BODY))
            processes.append(
                nginx(directory, "plain", ports["nginx-plain"], up, FRONT_BODY.format(htpasswd=plain_file))
            )
            processes.append(
                nginx(directory, "bcrypt", ports["nginx-bcrypt"], up, FRONT_BODY.format(htpasswd=bcrypt_file))
            )
            processes.append(
                consumer_auth(directory, "plain", ports["ours-plain"], up, {"password": PASSWORD})
            )
            processes.append(
                consumer_auth(
                    directory, "argon2", ports["ours-argon2"], up, {"password_hash": hash_password(PASSWORD)}
                )
            )
            processes.append(
                consumer_auth(
                    directory, "plain-2", ports["ours-plain-2"], up, {"password": PASSWORD}, workers=2
                )
            )
            if "caddy" in ports:
                processes.append(caddy(directory, ports["caddy"], up, hashed))
            if "haproxy" in ports:
                processes.append(haproxy(directory, ports["haproxy"], up))
            for name in fronts:
                wrk(ports[name], 1)  # warm up: connections, and the argon2id verification cache
            samples = interleaved({name: (lambda p=ports[name]: wrk(p, seconds)) for name in fronts}, rounds)
        finally:
            stop(processes)
    rates = {name: median(values) for name, values in samples.items()}
    plain, argon2 = rates["ours-plain"], rates["ours-argon2"]
    rows = [
        ("nginx `auth_basic` + `proxy_pass`", "clear text (`{PLAIN}`)", "nginx-plain", plain),
        ("HAProxy `http-request auth`", "clear text (`insecure-password`)", "haproxy", plain),
        ("nginx `auth_basic` + `proxy_pass`", "bcrypt cost 5", "nginx-bcrypt", argon2),
        ("Caddy `basic_auth` + `reverse_proxy`", "bcrypt cost 5", "caddy", argon2),
        ("`consumer-auth serve`", "clear text", "ours-plain", plain),
        ("`consumer-auth serve`", "argon2id, warm verification cache", "ours-argon2", argon2),
        ("`consumer-auth serve --workers 2`", "clear text", "ours-plain-2", plain),
    ]
    for front, credentials, name, ours in rows:
        if name not in rates:
            continue
        ratio = "" if name.startswith("ours") else f"{ours / rates[name]:.2f}×"
        result.table.append([front, credentials, f"{rates[name]:,.0f}", ratio])
    scaling = rates["ours-plain-2"] / plain
    result.notes.append(
        f"`--workers 2` vs `--workers 1` (clear text): {scaling:.2f}× on {os.cpu_count()} CPUs, which wrk "
        "(two threads) and the upstream share with the gateway's workers."
    )
    result.notes.append(
        "Where `serve`'s time goes (a third in the kernel's two loopback writes, the rest Python spread thin "
        "over the front, the proxy and the decision): [proxy.md](proxy.md#profile-of-one-request-through-serve)."
    )
    result.targets += [
        Target("proxy, clear text, vs nginx", plain / rates["nginx-plain"], 0.35, ">="),
        Target("proxy, argon2id vs nginx bcrypt", argon2 / rates["nginx-bcrypt"], 15, ">="),
    ]
    return result


if __name__ == "__main__":
    outcome = run(quick="--quick" in sys.argv)
    for line in outcome.table:
        print(*line, sep="\t")
    for note in outcome.notes:
        print(note)
    for target in outcome.targets:
        print(target.describe())
