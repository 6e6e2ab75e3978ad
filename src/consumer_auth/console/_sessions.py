"""Console sign-in: server-side sessions, their CSRF tokens, and the limit on wrong admin keys."""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from consumer_auth.failures import MemoryFailureStore
from consumer_auth.plugins.brute_force import BruteForce, client_subject

__all__ = ["SIGN_IN_LIMITS", "Session", "Sessions", "SignInLimiter", "same_token"]

IDLE_TIMEOUT = 3600.0
"""A session unused for this long (seconds) is signed out."""

MAX_AGE = 12 * 3600.0
"""A session lasts at most this long (seconds), however busy."""

MAX_SESSIONS = 1000
"""Sessions kept at most; past it the least recently used is signed out."""

SIGN_IN_LIMITS = BruteForce(max_failures=5, window=60, lockout=60, count_by=("client",))
"""Wrong admin keys a client address may try: 5 within a minute, then a minute locked out."""


def same_token(given: str | None, expected: str) -> bool:
    """Whether a token sent by a browser is ``expected`` (constant time; ``None`` never is)."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


@dataclass
class Session:
    """One signed-in browser: its CSRF token and a message to show once on the next page."""

    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    started: float = 0.0
    used: float = 0.0
    flash: str | None = None


class Sessions:
    """Signed-in browsers by their cookie's random token, in this process's memory.

    Sessions end at sign-out, after :data:`IDLE_TIMEOUT` idle, after :data:`MAX_AGE`, and when the
    process restarts. Nothing in the cookie is derived from the admin key.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def start(self) -> tuple[str, Session]:
        """A new session and the token its cookie carries."""
        now = self._clock()
        token = secrets.token_urlsafe(32)
        session = Session(started=now, used=now)
        with self._lock:
            self._sessions[token] = session
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        return token, session

    def get(self, token: str | None) -> Session | None:
        """The live session of a cookie's token, or ``None``."""
        if not token:
            return None
        now = self._clock()
        with self._lock:
            session = self._sessions.get(token)
            if session is None:
                return None
            if now - session.used > IDLE_TIMEOUT or now - session.started > MAX_AGE:
                del self._sessions[token]
                return None
            session.used = now
            self._sessions.move_to_end(token)
            return session

    def end(self, token: str | None) -> None:
        """Sign a session out."""
        if token:
            with self._lock:
                self._sessions.pop(token, None)


class SignInLimiter:
    """Counts wrong admin keys by client address (an IPv6 client by its /64), as brute-force limits do."""

    def __init__(self, limits: BruteForce = SIGN_IN_LIMITS) -> None:
        self.limits = limits
        self._failures = MemoryFailureStore(max_entries=10_000)

    @staticmethod
    def _keys(client: str | None) -> tuple[str, ...]:
        return (f"console-sign-in:{client_subject(client or 'unknown')}",)

    def retry_after(self, client: str | None) -> float:
        """Seconds until this client may try again; ``0`` when it may now."""
        return self._failures.retry_after(self._keys(client))

    def failed(self, client: str | None) -> None:
        """Count one wrong key from this client."""
        self._failures.add_failure(self._keys(client), self.limits)
