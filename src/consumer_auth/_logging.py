"""The logging setup of the servers (``serve``, ``demo``, ``admin``): events to stderr, access lines to stdout."""

from __future__ import annotations

import logging
from typing import Any

from .errors import UpstreamAbortedError

__all__ = ["DropUpstreamAborted", "logging_config"]


class DropUpstreamAborted(logging.Filter):
    """Keep the server from logging a traceback for :class:`UpstreamAbortedError`: the proxy has logged
    the fault on one line already."""

    def filter(self, record: logging.LogRecord) -> bool:
        info = record.exc_info
        return not (info and isinstance(info[1], UpstreamAbortedError))


def logging_config(level: str, access_log: bool, auth_log: bool = False) -> dict[str, Any]:
    """The logging setup of ``serve`` and ``demo``: events to stderr, one access line per request to stdout.

    The gateway's own record of each decision (``consumer_auth.auth``) goes to stderr only with
    ``auth_log``: the access line already has the route, consumer and status.
    """
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"upstream_aborted": {"()": DropUpstreamAborted}},
        "formatters": {
            "event": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
            "access": {"format": "%(asctime)s %(message)s"},
        },
        "handlers": {
            "event": {
                "class": "logging.StreamHandler",
                "formatter": "event",
                "stream": "ext://sys.stderr",
                "filters": ["upstream_aborted"],
            },
            "access": {"class": "logging.StreamHandler", "formatter": "access", "stream": "ext://sys.stdout"},
        },
        "loggers": {
            "uvicorn": {"handlers": ["event"], "level": level.upper(), "propagate": False},
            "consumer_auth": {"handlers": ["event"], "level": level.upper(), "propagate": False},
            "consumer_auth.access": {
                "handlers": ["access"],
                "level": "INFO" if access_log else "WARNING",
                "propagate": False,
            },
            "consumer_auth.auth": {"level": "INFO" if auth_log else "WARNING"},
        },
    }
