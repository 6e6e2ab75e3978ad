"""``consumer-auth serve --workers N``: worker processes on one shared listening socket.

The parent binds the socket, starts ``N`` workers that inherit it (each runs its own event loop and its
own copy of the gateway), and then only supervises: SIGTERM and SIGINT are passed on to every worker,
which finishes its requests in flight and exits, then the parent exits 0; SIGHUP is passed on to every
worker, whose watchers read the configuration again; a worker that dies is replaced (at most once a
second, so a worker that cannot start does not spin).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence

__all__ = ["Supervisor"]

LOGGER = logging.getLogger("consumer_auth.server")

_RESTART_EVERY = 1.0


class Supervisor:
    """Run ``workers`` copies of ``command``, each inheriting the descriptors ``fds``.

    Args:
        command: The worker's command line (``sys.executable`` and its arguments).
        env: The workers' environment.
        fds: Descriptors the workers inherit (the listening sockets).
        workers: How many run at once.
        stop_timeout: Seconds a worker may take to stop after SIGTERM before it is killed.
    """

    def __init__(
        self,
        command: Sequence[str],
        env: dict[str, str],
        fds: Sequence[int],
        workers: int,
        stop_timeout: float,
    ) -> None:
        self.command = list(command)
        self.env = env
        self.fds = tuple(fds)
        self.count = workers
        self.stop_timeout = stop_timeout
        self.processes: list[subprocess.Popen[bytes]] = []
        self._stopping = False
        self._wake = threading.Event()

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.command, env=self.env, pass_fds=self.fds)  # noqa: S603 - our own

    def _signal(self, signum: int) -> None:
        for process in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signum)

    def run(self) -> None:
        """Start the workers and supervise them until SIGTERM or SIGINT; return once all have stopped."""

        def stop(signum: int, frame: object) -> None:
            self._stopping = True
            self._wake.set()

        def forward(signum: int, frame: object) -> None:
            self._signal(signal.SIGHUP)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, forward)
        LOGGER.info("Started parent process [%d]", os.getpid())
        self.processes = [self._spawn() for _ in range(self.count)]
        last_restart = 0.0
        while not self._stopping:
            self._wake.wait(0.5)
            if self._stopping:
                break
            for index, process in enumerate(self.processes):
                status = process.poll()
                if status is None:
                    continue
                wait = last_restart + _RESTART_EVERY - time.monotonic()
                if wait > 0:
                    self._wake.wait(wait)
                    if self._stopping:
                        break
                LOGGER.warning(
                    "worker process [%d] ended with status %d: starting another", process.pid, status
                )
                self.processes[index] = self._spawn()
                last_restart = time.monotonic()
        LOGGER.info("Stopping parent process [%d]", os.getpid())
        self._signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for process in self.processes:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
