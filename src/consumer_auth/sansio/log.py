"""Decision logging: one record per decision on the ``consumer_auth.auth`` logger (level INFO).

Attributes of each record: ``outcome`` (``allow`` / ``reject``), ``reason`` (a stable code), ``status``,
``route``, ``consumer``, ``client`` and ``failure``. Every value comes from the configuration or is a
code: never a password, an ``Authorization`` value, a hash or a username a client typed (see
``docs/security.md``). Logging is off unless the logger is enabled for INFO; the pipeline asks once per
request.
"""

from __future__ import annotations

import logging

from consumer_auth.sansio.decision import Decision, MatchedRoute, Reject

__all__ = ["LOGGER", "decision_reason", "log_decision", "route_label"]

LOGGER = logging.getLogger("consumer_auth.auth")
"""One INFO record per decision (see the module docstring for its attributes)."""


def route_label(route: MatchedRoute | None) -> str | None:
    """How a route is named in logs: its id, else ``routes[i]``; ``guard`` for a per-view guard."""
    if route is None:
        return None
    if route.id:
        return route.id
    return f"routes[{route.order}]" if route.order >= 0 else "guard"


def decision_reason(decision: Decision) -> str:
    """The stable reason code of a decision: a rejection's own, else how the request was allowed
    (``authenticated``, ``anonymous``, ``no_auth`` on a route without authentication, ``unmatched``
    for a request passed on under ``unmatched: pass``)."""
    if isinstance(decision, Reject):
        return decision.reason
    if decision.route is None:
        return "unmatched"
    if decision.consumer is None:
        return "no_auth"
    if decision.credential is None:
        return "anonymous"
    return "authenticated"


def log_decision(
    route: MatchedRoute | None,
    decision: Decision,
    client: str | None,
    *,
    consumer: str | None = None,
    failure: str | None = None,
    allowed: str | None = None,
) -> None:
    """Write the one record of a decision.

    ``consumer`` names the consumer of a rejection (the one authenticated, or the one whose credential
    username was tried); ``allowed`` is the reason of an allowed decision when it cannot be told from the
    decision itself; ``failure`` the credential failure behind an anonymous consumer or a rejection.
    """
    if isinstance(decision, Reject):
        verdict, reason, status = "reject", decision.reason, decision.status
    else:
        verdict, status = "allow", None
        consumer = decision.consumer.username if decision.consumer is not None else None
        reason = allowed if allowed is not None else decision_reason(decision)
    name = route_label(route)
    LOGGER.info(
        "%s %s route=%s consumer=%s client=%s",
        verdict,
        reason,
        name,
        consumer,
        client,
        extra={
            "outcome": verdict,
            "reason": reason,
            "status": status,
            "route": name,
            "consumer": consumer,
            "client": client,
            "failure": failure,
        },
    )
