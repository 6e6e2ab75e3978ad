"""The ``consumer-auth`` command: ``serve``, ``check``, ``hash-password``, ``import-htpasswd``, ``demo``,
``consumers`` and ``admin`` (``docs/cli.md``, ``docs/deployment.md``, ``docs/admin-api.md``).

Exit status: 0 on success, 1 when the configuration (or the password given) is refused, 2 for a usage
mistake. ``serve`` and ``demo`` need the ``server`` extra (uvicorn with uvloop and httptools; aiohttp for
the demo's upstream).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from consumer_auth import _store_cli, htpasswd
from consumer_auth._limits import ServerLimits
from consumer_auth._prompt import read_password
from consumer_auth.config import load_file, parse_config
from consumer_auth.errors import ConfigError, StoreError, UpstreamAbortedError
from consumer_auth.gateway import Gateway
from consumer_auth.passwords import Argon2Password, hash_password

if TYPE_CHECKING:
    from consumer_auth.proxy.asgi import ASGIProxy

__all__ = ["main"]

_WORKER_ENV = "CONSUMER_AUTH_SERVE"
"""How ``serve --workers N`` tells its worker processes what to serve (JSON: config path, upstream, store)."""


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


def _fail(message: str) -> int:
    print(f"consumer-auth: error: {message}", file=sys.stderr)
    return 1


def _gateway(config: str | None, store: str | None) -> Gateway:
    """Routes and settings from ``config``, consumers from ``store`` (followed), or everything from either."""
    if config is None:
        if store is None:
            raise ConfigError("", "give --config, --store, or both")
        return Gateway.from_store(store)
    return Gateway.from_file(config, store=store)


def _limits(config: str | None, store: str | None) -> ServerLimits:
    """The ``server:`` limits: from the configuration file, or from a store that is one."""
    source = config if config is not None else store
    if source is None or not source.lower().endswith((".yaml", ".yml", ".json", ".toml")):
        return ServerLimits()
    return parse_config(load_file(source)).server


def _proxy(
    config: str | None, upstream: str | None, store: str | None = None
) -> tuple[ASGIProxy, ServerLimits]:
    """The forwarding app, and the ``server:`` limits to serve it with."""
    limits = _limits(config, store)
    gateway = _gateway(config, store)
    try:
        return gateway.asgi_proxy(upstream=upstream, max_body_bytes=limits.max_body_bytes), limits
    except BaseException:
        gateway.close()
        raise


def worker_app() -> ASGIProxy:
    """The app of one ``serve --workers N`` worker process (a uvicorn factory)."""
    from consumer_auth._server import uvicorn_options

    options = json.loads(os.environ[_WORKER_ENV])
    proxy, limits = _proxy(options["config"], options["upstream"], options.get("store"))
    uvicorn_options(limits)  # the worker's own protocol class gets the limits (see _server)
    return proxy


def _uvicorn_options(args: argparse.Namespace, limits: ServerLimits) -> dict[str, Any]:
    from consumer_auth._server import uvicorn_options

    return {
        "host": args.host,
        "port": args.port,
        "loop": "auto",  # uvloop when installed (the server extra installs it)
        # httptools, with size limits, timeouts and strict framing (docs/security.md)
        **uvicorn_options(limits),
        "lifespan": "on",
        "log_config": logging_config(args.log_level, args.access_log, getattr(args, "auth_log", False)),
        "log_level": args.log_level,
        "access_log": False,  # the proxy writes its own line, with the route and consumer
        "proxy_headers": False,  # X-Forwarded-* from clients are not believed (docs/proxy.md)
        "server_header": False,
        "date_header": True,
        "timeout_graceful_shutdown": args.graceful_timeout,
    }


def _exit_quietly(signum: int, frame: object) -> None:
    """After a graceful shutdown on SIGTERM/SIGINT, exit with status 0 (uvicorn re-raises the signal)."""
    raise SystemExit(0)


def _server_extra_missing() -> str | None:
    """Why ``serve``/``demo`` cannot run here, if they cannot."""
    try:
        import aiohttp  # noqa: F401
        import httptools  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as error:
        return f"this command needs {error.name}: pip install 'consumer-auth[server]'"
    return None


def serve(args: argparse.Namespace) -> int:
    """Run the forwarding gateway on uvicorn until SIGTERM or SIGINT, then finish in-flight requests."""
    missing = _server_extra_missing()
    if missing is not None:
        return _fail(missing)
    import uvicorn

    config = str(Path(args.config).resolve()) if args.config is not None else None
    try:
        proxy, limits = _proxy(config, args.upstream, args.store)  # validate before any worker starts
    except (ConfigError, StoreError) as error:
        return _fail(str(error))
    options = _uvicorn_options(args, limits)
    signal.signal(signal.SIGTERM, _exit_quietly)
    signal.signal(signal.SIGINT, _exit_quietly)
    if args.workers == 1:
        uvicorn.run(proxy, **options)
    else:
        proxy.gateway.close()  # each worker follows the store itself
        os.environ[_WORKER_ENV] = json.dumps(
            {"config": config, "upstream": args.upstream, "store": args.store}
        )
        uvicorn.run("consumer_auth.cli:worker_app", factory=True, workers=args.workers, **options)
    return 0


def check(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Validate a configuration file; print ``OK`` and a summary, or the error naming its place."""
    out = out or sys.stdout
    try:
        gateway = Gateway.from_file(args.config)
    except ConfigError as error:
        return _fail(str(error))

    def count(n: int, word: str) -> str:
        return f"{n} {word}{'' if n == 1 else 's'}"

    print(
        f"OK: {count(len(gateway.consumers), 'consumer')}, {count(len(gateway.services), 'service')}, "
        f"{count(len(gateway.routes), 'route')} (profile {gateway.profile.value})",
        file=out,
    )
    argon2_logins = any(
        isinstance(credential.verifier, Argon2Password)
        for consumer in gateway.consumers
        for credential in consumer.credentials
    )
    for route in gateway.compiled_routes:
        if argon2_logins and route.auth is not None and route.auth.brute_force is None:
            named = f" {route.id!r}" if route.id else ""
            print(
                f"warning: routes[{route.order}]{named} checks argon2 passwords without brute_force limits: "
                "an internet-facing route wants brute_force with count_by: [client] (docs/security.md)",
                file=out,
            )
        if route.upstream is None:
            named = f" {route.id!r}" if route.id else ""
            print(
                f"note: routes[{route.order}]{named} has no upstream: "
                "`consumer-auth serve` then needs --upstream",
                file=out,
            )
    return 0


def hash_password_command(
    args: argparse.Namespace, stdin: TextIO = sys.stdin, out: TextIO = sys.stdout
) -> int:
    """Print an argon2id hash of a password read from the terminal (asked twice) or one line of stdin."""
    try:
        password = read_password(stdin)
        print(hash_password(password), file=out)
    except ValueError as error:
        return _fail(str(error))
    return 0


def demo(args: argparse.Namespace) -> int:
    """Serve the guide's scenario in front of a built-in stand-in for httpbin, printing what to try."""
    missing = _server_extra_missing()
    if missing is not None:
        return _fail(missing)
    import uvicorn

    from consumer_auth import _demo

    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as error:
        sock.close()
        return _fail(f"cannot listen on {args.host}:{args.port} ({error.strerror}); try --port")
    sock.listen(2048)  # connections queue from now on: the printed commands work as soon as they show
    port = sock.getsockname()[1]
    host = f"[{args.host}]" if ":" in args.host else args.host

    async def run() -> None:
        runner, upstream = await _demo.stand_in_upstream()
        try:
            proxy = Gateway.from_dict(_demo.guide_config(upstream)).asgi_proxy()
            options = _uvicorn_options(args, ServerLimits())
            del options["host"], options["port"]
            server = uvicorn.Server(uvicorn.Config(proxy, **options))
            print(_demo.usage(f"http://{host}:{port}", upstream), flush=True)
            await server.serve(sockets=[sock])
        finally:
            await runner.cleanup()

    signal.signal(signal.SIGTERM, _exit_quietly)
    signal.signal(signal.SIGINT, _exit_quietly)
    asyncio.run(run())
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="consumer-auth",
        description="APISIX-style Consumer + Basic Auth gateway.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def server_options(command: argparse.ArgumentParser, host: str, port: int) -> None:
        command.add_argument("--host", default=host, help=f"address to listen on (default {host})")
        command.add_argument("--port", type=int, default=port, help=f"port to listen on (default {port})")
        command.add_argument(
            "--log-level",
            default="info",
            choices=("critical", "error", "warning", "info", "debug"),
            help="level of the event log on stderr (default info)",
        )
        command.add_argument(
            "--access-log",
            action=argparse.BooleanOptionalAction,
            default=True,
            help="one line per request on stdout (default on; never a credential or query string)",
        )
        command.add_argument(
            "--graceful-timeout",
            type=float,
            default=30.0,
            metavar="SECONDS",
            help="on SIGTERM, how long in-flight requests may take to finish (default 30)",
        )

    serve_command = commands.add_parser("serve", help="run the forwarding gateway")
    serve_command.add_argument(
        "--config",
        metavar="FILE",
        help="YAML, JSON or TOML configuration (routes and settings, with --store)",
    )
    serve_command.add_argument(
        "--store",
        metavar="URL",
        help="take consumers (and, without --config, routes) from a store, followed live: "
        "sqlite:///FILE, postgresql://HOST/DB[?schema=NAME], or a config file to reload on change",
    )
    serve_command.add_argument(
        "--upstream", metavar="URL", help="default upstream for routes without one (and for unmatched: pass)"
    )
    serve_command.add_argument(
        "--workers", type=int, default=1, metavar="N", help="worker processes (default 1)"
    )
    serve_command.add_argument(
        "--auth-log",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="one line per authentication decision on stderr, with its reason code (default off)",
    )
    server_options(serve_command, "127.0.0.1", 9080)
    serve_command.set_defaults(run=serve)

    check_command = commands.add_parser("check", help="validate a configuration file")
    check_command.add_argument(
        "--config", required=True, metavar="FILE", help="YAML, JSON or TOML configuration"
    )
    check_command.set_defaults(run=check)

    hash_command = commands.add_parser(
        "hash-password", help="print an argon2id hash of a password read from the terminal or stdin"
    )
    hash_command.set_defaults(run=hash_password_command)

    import_command = commands.add_parser(
        "import-htpasswd", help="print the consumers of an htpasswd file as configuration (hashes kept)"
    )
    htpasswd.add_arguments(import_command)
    import_command.set_defaults(run=htpasswd.run)

    demo_command = commands.add_parser("demo", help="serve the guide's scenario with a built-in upstream")
    server_options(demo_command, "127.0.0.1", 9080)
    demo_command.set_defaults(run=demo)

    _store_cli.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if getattr(args, "workers", 1) < 1:
        parser.error("--workers must be at least 1")
    if args.command == "serve" and args.config is None and args.store is None:
        parser.error("serve needs --config, --store, or both")
    status: int = args.run(args)
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
