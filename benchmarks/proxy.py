"""Proxy throughput: ``consumer-auth serve`` vs nginx ``auth_basic`` + ``proxy_pass``, with ``wrk -c32``.

Both sides run one worker process in front of the same upstream (a one-worker nginx answering ``ok``),
with keep-alive connections to it. Two pairings, measured interleaved round by round:

- clear-text credentials on both sides (nginx ``{PLAIN}`` htpasswd line; a ``password`` in our config);
- hashes on both sides: nginx with a bcrypt htpasswd line (cost 5, what ``htpasswd -B`` writes), and
  ``consumer-auth`` with an argon2id hash (library defaults) and its verification cache.

nginx and wrk come from Debian's packages; the script installs them with apt-get when they are missing
(as root), and skips this benchmark with a note otherwise.
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


def ensure_tools() -> str | None:
    """Install nginx and wrk from Debian's packages when missing; say why not when impossible."""
    missing = [name for name in ("nginx", "wrk") if shutil.which(name) is None]
    if not missing:
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return f"{', '.join(missing)} not installed (install the Debian packages, or run as root)"
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=False, env=environment)
    done = subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], check=False, env=environment
    )
    if done.returncode != 0:
        return f"apt-get could not install {', '.join(missing)}"
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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


def consumer_auth(
    directory: Path, name: str, port: int, upstream: int, consumer: dict[str, str]
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
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
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
        "Proxy throughput against nginx",
        f"`wrk -t2 -c32 -d{seconds}s` with valid credentials, {rounds} interleaved rounds, medians; one worker "
        "process on each side; the same one-worker nginx upstream answering `ok`.",
        header=["credentials", "nginx (req/s)", "consumer-auth serve (req/s)", "consumer-auth / nginx"],
    )
    why_not = ensure_tools()
    if why_not is None and not serve_available():
        why_not = "`consumer-auth serve` is not available in this build"
    if why_not is not None:
        result.notes.append(f"Not run: {why_not}.")
        return result
    import bcrypt

    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="consumer-auth-bench-") as temp:
        directory = Path(temp)
        os.chmod(directory, 0o755)  # noqa: S103 - nginx workers (user nobody) read the htpasswd files
        plain_file, bcrypt_file = directory / "plain.htpasswd", directory / "bcrypt.htpasswd"
        plain_file.write_text(f"alex:{{PLAIN}}{PASSWORD}\n")
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(5)).decode().replace("$2b$", "$2y$", 1)
        bcrypt_file.write_text(f"alex:{hashed}\n")
        ports = {
            name: free_port()
            for name in ("upstream", "nginx-plain", "nginx-bcrypt", "ours-plain", "ours-argon2")
        }
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
            for name in ports:
                if name != "upstream":
                    wrk(ports[name], 1)  # warm up: connections, and the argon2id verification cache
            samples = interleaved(
                {
                    name: (lambda p=port: wrk(p, seconds))
                    for name, port in ports.items()
                    if name != "upstream"
                },
                rounds,
            )
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
    rates = {name: median(values) for name, values in samples.items()}
    plain_ratio = rates["ours-plain"] / rates["nginx-plain"]
    hashed_ratio = rates["ours-argon2"] / rates["nginx-bcrypt"]
    result.table.append(
        ["clear text", f"{rates['nginx-plain']:,.0f}", f"{rates['ours-plain']:,.0f}", f"{plain_ratio:.2f}×"]
    )
    result.table.append(
        [
            "hashed (nginx bcrypt cost 5 / argon2id, warm cache)",
            f"{rates['nginx-bcrypt']:,.0f}",
            f"{rates['ours-argon2']:,.0f}",
            f"{hashed_ratio:.2f}×",
        ]
    )
    result.targets += [
        Target("proxy, clear text, vs nginx", plain_ratio, 0.25, ">="),
        Target("proxy, argon2id vs nginx bcrypt", hashed_ratio, 10, ">="),
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
