"""One abusive client against a real ``consumer-auth serve``: before and after the per-client bounds.

Two scenarios, each run against two configurations, interleaved round by round (A, B, A, B, ...):

- **login starvation**: an argon2id consumer (library defaults: 64 MiB, 3 passes, 4 lanes; the
  verification cache off, so every login really verifies), no ``brute_force``. ``FLOOD`` connections
  from 127.0.0.2 send ``Authorization: Basic ghost<random>:x`` as fast as they are answered; after
  ``RAMP`` seconds the real user logs in from 127.0.0.1 and the time to its 200 is recorded. "before"
  is ``verification: {max_pending: 1000000, max_pending_per_client: 1000000}`` (nothing refused, as
  before the bounds existed), "after" the defaults. The baseline is the same login with no flood.
- **connection hold**: ``HOLD`` idle TCP connections from 127.0.0.2, reopened as the server closes
  them (after ``REOPEN`` s: a refused connection is not retried in a tight loop, which would measure a
  connection-rate flood instead), for ``HOLD_SECONDS``; meanwhile a client on 127.0.0.1 sends one request
  every 0.25 s. "before" is ``server: {max_connections_per_client: 1000, first_byte_timeout: 10}`` (one
  client may take all of ``max_connections``; silent connections last the header timeout), "after" the
  defaults (a tenth; 5 s).

The abusive client runs in a process of its own at the lowest CPU priority (``nice`` 19), the server and
the measuring client at the normal one, so that on one machine the abuser stands for a client elsewhere.

Run: ``cd benchmarks && ../.venv/bin/python abuse.py [--rounds N] [--only logins|connections]`` (the
results go in ``docs/security.md``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from consumer_auth import hash_password

FLOOD_ADDRESS, USER_ADDRESS = "127.0.0.2", "127.0.0.1"
RAMP, FLOOD_SECONDS = 3.0, 8.0
HOLD, HOLD_SECONDS, REOPEN = 1100, 12.0, 1.0
PASSWORD = "wonderland"
_PORT = re.compile(r"running on https?://[^ ]+:(\d+)")


class Serve:
    """``consumer-auth serve`` on a free port, with ``document`` as its configuration."""

    def __init__(self, document: dict[str, Any]) -> None:
        self._dir = tempfile.TemporaryDirectory()
        config = Path(self._dir.name) / "gateway.yaml"
        config.write_text(yaml.safe_dump(document))
        command = Path(sys.executable).with_name("consumer-auth")
        self.proc = subprocess.Popen(
            [
                str(command),
                "serve",
                "--config",
                str(config),
                "--port",
                "0",
                "--no-access-log",
                "--graceful-timeout",
                "1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            found = _PORT.search(line)
            if found:
                self.port = int(found.group(1))
                break
        else:
            raise RuntimeError("serve did not start")
        # Keep reading its log: a full pipe would block the server, not the abuse.
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._dir.cleanup()


async def get(port: int, authorization: str | None, source: str, timeout: float = 120) -> int:
    """One ``GET /json`` on a new connection; its status (0 when the connection failed)."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0)), timeout
        )
    except (OSError, TimeoutError):
        return 0
    try:
        auth = f"Authorization: {authorization}\r\n" if authorization else ""
        writer.write(f"GET /json HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n".encode())
        line = await asyncio.wait_for(reader.readline(), timeout)
        await asyncio.wait_for(reader.read(), timeout)
        return int(line.split()[1]) if line else 0
    except (OSError, TimeoutError, ValueError, IndexError):
        return 0
    finally:
        writer.close()


def basic(login: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode()


# -- login starvation --------------------------------------------------------------------------------


def argon2_config(upstream: str, unbounded: bool) -> dict[str, Any]:
    document: dict[str, Any] = {
        "verification_cache": {"max_entries": 0},
        "consumers": [
            {
                "username": "alice",
                "plugins": {"basic-auth": {"username": "alice", "password_hash": hash_password(PASSWORD)}},
            }
        ],
        "routes": [{"uri": "/*", "upstream": upstream, "plugins": {"basic-auth": {}}}],
    }
    if unbounded:
        document["verification"] = {"max_pending": 1_000_000, "max_pending_per_client": 1_000_000}
    return document


def abuser(kind: str, port: int, count: int, seconds: float) -> subprocess.Popen[str]:
    """The abusive client in a process of its own, at the lowest CPU priority, so that on one machine it
    stands for a client elsewhere: it neither starves the measuring client nor is starved by it."""
    command = [sys.executable, __file__, "--child", kind, str(port), str(count), str(seconds)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True, preexec_fn=lambda: os.nice(19))  # noqa: PLW1509


def abuser_statuses(process: subprocess.Popen[str]) -> Counter[int]:
    out, _ = process.communicate(timeout=300)
    return Counter({int(status): n for status, n in json.loads(out).items()})


async def flood_child(port: int, count: int, seconds: float) -> Counter[int]:
    """``count`` connections sending made-up usernames as fast as they are answered, for ``seconds``."""
    statuses: Counter[int] = Counter()
    deadline = time.monotonic() + seconds

    async def flooder() -> None:
        while time.monotonic() < deadline:
            statuses[await get(port, basic(f"ghost{secrets.token_hex(6)}", "x"), FLOOD_ADDRESS)] += 1

    await asyncio.gather(*(flooder() for _ in range(count)))
    return statuses


async def hold_child(port: int, count: int, seconds: float) -> Counter[int]:
    """``count`` idle connections, each reopened ``REOPEN`` s after the server closes it, for ``seconds``."""
    closed: Counter[int] = Counter()
    deadline = time.monotonic() + seconds

    async def holder() -> None:
        while time.monotonic() < deadline:
            try:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, local_addr=(FLOOD_ADDRESS, 0)
                )
            except OSError:
                await asyncio.sleep(REOPEN)
                continue
            try:
                answer = await asyncio.wait_for(reader.read(), max(0.01, deadline - time.monotonic()))
                closed[503 if answer.startswith(b"HTTP/1.1 503") else 0] += 1
            except (TimeoutError, OSError):
                pass
            finally:
                writer.close()
            await asyncio.sleep(REOPEN)  # reopened once the server closed it, without spinning

    await asyncio.gather(*(holder() for _ in range(count)))
    return closed


async def starvation_round(port: int, flood: int) -> tuple[float, Counter[int]]:
    """The real user's login time under a flood of ``flood`` connections (``inf`` when it got no 200
    within two minutes), and the flood's statuses."""
    process = abuser("flood", port, flood, FLOOD_SECONDS) if flood else None
    await asyncio.sleep(RAMP if flood else 0)
    started = time.perf_counter()
    status = await get(port, basic("alice", PASSWORD), USER_ADDRESS)
    elapsed = time.perf_counter() - started if status == 200 else float("inf")
    return elapsed, abuser_statuses(process) if process is not None else Counter()


# -- connection hold -----------------------------------------------------------------------------------


async def hold_round(port: int) -> tuple[Counter[int], list[float]]:
    """The other client's statuses and latencies while one address holds ``HOLD`` connections."""
    process = abuser("hold", port, HOLD, HOLD_SECONDS + 2.0)
    await asyncio.sleep(2.0)  # all connections opened
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    deadline = time.monotonic() + HOLD_SECONDS
    while time.monotonic() < deadline:
        started = time.perf_counter()
        statuses[await get(port, basic("alex", "123456"), USER_ADDRESS, timeout=30)] += 1
        latencies.append(time.perf_counter() - started)
        await asyncio.sleep(0.25)
    abuser_statuses(process)
    return statuses, latencies


def hold_config(upstream: str, unbounded: bool) -> dict[str, Any]:
    document: dict[str, Any] = {
        "consumers": [
            {"username": "alex", "plugins": {"basic-auth": {"username": "alex", "password": "123456"}}}
        ],
        "routes": [{"uri": "/*", "upstream": upstream, "plugins": {"basic-auth": {}}}],
    }
    if unbounded:
        document["server"] = {"max_connections_per_client": 1000, "first_byte_timeout": 10}
    return document


# -- the upstream -------------------------------------------------------------------------------------


async def upstream_server() -> tuple[asyncio.AbstractServer, str]:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    break
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


async def main(rounds: int, floods: list[int], scenarios: list[str]) -> None:
    upstream, url = await upstream_server()
    if "logins" in scenarios:
        await logins(url, rounds, floods)
    if "connections" in scenarios:
        await connections(url, rounds)
    upstream.close()


async def logins(url: str, rounds: int, floods: list[int]) -> None:
    load = os.getloadavg()[0]
    print(
        f"# {os.cpu_count()} CPUs, load average {load:.1f}, {rounds} rounds, flood {FLOOD_SECONDS:g} s, ramp {RAMP:g} s\n"
    )
    times: dict[tuple[str, int], list[float]] = {}
    flood_statuses: dict[tuple[str, int], Counter[int]] = {}
    for _ in range(rounds):
        for variant in ("before", "after"):
            serve = Serve(argon2_config(url, unbounded=variant == "before"))
            try:
                for flood in [0, *floods]:
                    elapsed, statuses = await starvation_round(serve.port, flood)
                    print(
                        f"{variant} flood={flood}: {elapsed * 1000:.0f} ms {dict(statuses)}", file=sys.stderr
                    )
                    times.setdefault((variant, flood), []).append(elapsed)
                    flood_statuses.setdefault((variant, flood), Counter()).update(statuses)
            finally:
                serve.stop()
    print("| configuration | flood connections | real user's first login (median) | flood answers |")
    print("|---|---|---|---|")
    for variant in ("before", "after"):
        for flood in [0, *floods]:
            found = times[(variant, flood)]
            answers = (
                ", ".join(f"{n}x {s}" for s, n in sorted(flood_statuses[(variant, flood)].items())) or "-"
            )
            print(
                f"| {variant} | {flood} | {statistics.median(found) * 1000:.0f} ms ({', '.join(f'{t * 1000:.0f}' for t in found)}) | {answers} |"
            )


async def connections(url: str, rounds: int) -> None:
    print(
        f"\n{HOLD} connections held from one address for {HOLD_SECONDS:g} s, reopened {REOPEN:g} s after a close\n"
    )
    print("| configuration | other client's answers | latency median / max |")
    print("|---|---|---|")
    for _ in range(rounds):
        for variant in ("before", "after"):
            serve = Serve(hold_config(url, unbounded=variant == "before"))
            try:
                statuses, latencies = await hold_round(serve.port)
            finally:
                serve.stop()
            answers = ", ".join(f"{n}x {s}" for s, n in sorted(statuses.items()))
            print(
                f"| {variant} | {answers} | {statistics.median(latencies) * 1000:.1f} / {max(latencies) * 1000:.1f} ms |"
            )


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        kind, child_port, child_count, child_seconds = sys.argv[2:]
        child = flood_child if kind == "flood" else hold_child
        found = asyncio.run(child(int(child_port), int(child_count), float(child_seconds)))
        print(json.dumps(found))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--floods", type=int, nargs="+", default=[30, 100])
    parser.add_argument("--only", choices=("logins", "connections"), help="run one scenario only")
    options = parser.parse_args()
    chosen = [options.only] if options.only else ["logins", "connections"]
    asyncio.run(main(options.rounds, options.floods, chosen))
