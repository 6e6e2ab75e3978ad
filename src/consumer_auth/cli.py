"""The ``consumer-auth`` command: ``serve``, ``check``, ``hash-password``, ``import-htpasswd``, ``demo``,
``consumers`` and ``admin`` (``docs/cli.md``, ``docs/deployment.md``, ``docs/admin-api.md``).

Exit status: 0 on success, 1 when the configuration (or the password given) is refused, 2 for a usage
mistake. ``serve``, ``demo`` and ``admin`` need the ``server`` extra (httptools, h2, websockets, uvloop:
the project's own server front, ``_server.py`` and ``_runner.py``).

This module is long because each sub-command's parser sits next to the function that runs it; the store
and admin commands are in ``_store_cli.py``, the argparse helpers in ``_args.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging.config
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from consumer_auth import _serve_metrics, _store_cli, htpasswd
from consumer_auth._args import BadValue, command, port_number
from consumer_auth._limits import ServerLimits
from consumer_auth._logging import logging_config
from consumer_auth._prompt import read_password
from consumer_auth._words import counted
from consumer_auth.config import load_file, parse_config
from consumer_auth.errors import ConfigError, StoreError
from consumer_auth.gateway import Gateway
from consumer_auth.sansio.passwords import Argon2Password, hash_password
from consumer_auth.sansio.plugins import BasicAuthPlugin
from consumer_auth.store import FileStore, StoreWatcher
from consumer_auth.store.watcher import logger as store_logger

if TYPE_CHECKING:
    from consumer_auth.proxy.asgi import ASGIProxy

__all__ = ["main"]

_ON_SIGHUP_ONLY = threading.TIMEOUT_MAX
"""The poll interval of ``serve``'s ``--config`` file: read again when SIGHUP wakes its watcher, not by the clock."""

_WORKER_ENV = "CONSUMER_AUTH_SERVE"
"""How ``serve --workers N`` tells its worker processes what to serve (JSON: config path, upstream, store,
log options and the descriptor of the shared socket)."""

_WORKER = "import sys; from consumer_auth.cli import worker_main; sys.exit(worker_main())"
"""The command line (after ``python -c``) of one ``serve --workers N`` worker process."""


def _fail(message: str) -> int:
    print(f"consumer-auth: error: {message}", file=sys.stderr)
    return 1


def _gateway(config: str | None, store: str | None) -> tuple[Gateway, list[StoreWatcher]]:
    """Routes and settings from ``config``, consumers from ``store`` (followed), or everything from either;
    and the watchers that SIGHUP wakes.

    ``--store`` is followed as it changes; the ``--config`` file is read again when its watcher is woken
    (SIGHUP), as nginx does with its configuration.
    """
    if config is None:
        if store is None:
            raise ConfigError("", "give --config, --store, or both")
        gateway = Gateway.from_store(store)
    elif store is None:
        gateway = Gateway.from_store(FileStore(config, poll_interval=_ON_SIGHUP_ONLY))
    else:
        gateway = Gateway.from_file(config, store=store)
        routes_file = FileStore(config, poll_interval=_ON_SIGHUP_ONLY, consumers=False)
        routes = StoreWatcher(gateway, routes_file, routes=True, consumers=False)
        try:
            routes.start()
        except BaseException:
            gateway.close()
            raise
        return gateway, [watcher for watcher in (gateway.watcher, routes) if watcher is not None]
    return gateway, [watcher for watcher in (gateway.watcher,) if watcher is not None]


def _reload_on_sighup(watchers: list[StoreWatcher]) -> None:
    """SIGHUP: check the configuration file and the store now (in their watchers' threads); a bad file
    is logged there and the last good configuration stays."""

    def reload(signum: int, frame: object) -> None:
        store_logger.info("SIGHUP: reading the configuration again")
        for watcher in watchers:
            watcher.wake()

    signal.signal(signal.SIGHUP, reload)


def _limits(config: str | None, store: str | None) -> ServerLimits:
    """The ``server:`` limits: from the configuration file, or from a store that is one."""
    source = config if config is not None else store
    if source is None or not source.lower().endswith((".yaml", ".yml", ".json", ".toml")):
        return ServerLimits()
    return parse_config(load_file(source)).server


def _with_tls(limits: ServerLimits, certfile: str | None, keyfile: str | None) -> ServerLimits:
    """The limits with the certificate options of the command line, which win over the ``server:`` ones.

    Raises:
        ConfigError: at ``--ssl-certfile`` when the files cannot be used.
    """
    if certfile is None and keyfile is None:
        return limits
    try:
        return dataclasses.replace(limits, ssl_certfile=certfile, ssl_keyfile=keyfile)
    except ConfigError as error:
        raise ConfigError("--" + error.path.replace("_", "-"), error.reason) from None


def _proxy(
    config: str | None,
    upstream: str | None,
    store: str | None = None,
    tls: tuple[str | None, str | None] = (None, None),
) -> tuple[ASGIProxy, ServerLimits, list[StoreWatcher]]:
    """The forwarding app, the ``server:`` limits (and certificate) to serve it with, and the watchers
    SIGHUP wakes."""
    limits = _with_tls(_limits(config, store), *tls)
    gateway, watchers = _gateway(config, store)
    try:
        return gateway.asgi_proxy(upstream=upstream, max_body_bytes=limits.max_body_bytes), limits, watchers
    except BaseException:
        for watcher in watchers:
            watcher.stop()
        raise


def worker_app() -> tuple[ASGIProxy, ServerLimits]:
    """The app of one ``serve --workers N`` worker process, and its limits."""
    options = json.loads(os.environ[_WORKER_ENV])
    tls = (options.get("ssl_certfile"), options.get("ssl_keyfile"))
    proxy, limits, watchers = _proxy(options["config"], options["upstream"], options.get("store"), tls)
    if options.get("metrics"):
        _serve_metrics.instrument(proxy)
    _reload_on_sighup(watchers)  # the parent passes SIGHUP on to every worker (see _supervisor)
    return proxy, limits


def worker_main() -> int:
    """One ``serve --workers N`` worker process: serve on the socket the parent shares until SIGTERM."""
    from consumer_auth._runner import run

    options = json.loads(os.environ[_WORKER_ENV])
    logging.config.dictConfig(
        logging_config(options["log_level"], options["access_log"], options["auth_log"])
    )
    sock = socket.socket(fileno=options["fd"])
    try:
        proxy, limits = worker_app()
    except (ConfigError, StoreError) as error:
        return _fail(str(error))
    started = run(proxy, [sock], limits, graceful_timeout=options["graceful_timeout"], announce=False)
    return 0 if started else 1


def _log_setup(args: argparse.Namespace) -> None:
    """Events to stderr, access lines to stdout (``--log-level``, ``--access-log``, ``--auth-log``)."""
    logging.config.dictConfig(
        logging_config(args.log_level, args.access_log, getattr(args, "auth_log", False))
    )


def _exit_quietly(signum: int, frame: object) -> None:
    """SIGTERM/SIGINT before the server runs (it handles them itself then): exit with status 0."""
    raise SystemExit(0)


def _server_extra_missing() -> str | None:
    """Why ``serve``/``demo`` cannot run here, if they cannot."""
    try:
        import h2  # noqa: F401
        import httptools  # noqa: F401
        import websockets  # noqa: F401
    except ImportError as error:
        return f"this command needs {error.name}: pip install 'consumer-auth[server]'"
    return None


def serve(args: argparse.Namespace) -> int:
    """Run the forwarding gateway until SIGTERM or SIGINT, then finish in-flight requests."""
    missing = _server_extra_missing()
    if missing is not None:
        return _fail(missing)
    from consumer_auth._runner import address_text, bind, run

    config = str(Path(args.config).resolve()) if args.config is not None else None
    try:  # checked here, before any worker starts
        tls = (args.ssl_certfile, args.ssl_keyfile)
        proxy, limits, watchers = _proxy(config, args.upstream, args.store, tls)
    except (ConfigError, StoreError) as error:
        return _fail(str(error))
    sock = bind(args.host, args.port)
    if isinstance(sock, str):
        for watcher in watchers:
            watcher.stop()
        return _fail(sock)
    listener = _serve_metrics.start(args.metrics, args.workers, proxy)
    if isinstance(listener, str):
        for watcher in watchers:
            watcher.stop()
        sock.close()
        return _fail(listener)
    _log_setup(args)
    signal.signal(signal.SIGTERM, _exit_quietly)
    signal.signal(signal.SIGINT, _exit_quietly)
    if args.workers == 1:
        _reload_on_sighup(watchers)
        started = run(proxy, [sock], limits, graceful_timeout=args.graceful_timeout)
        return 0 if started else 1  # not started: the log says why (the app's startup failed, ...)
    for watcher in watchers:  # each worker follows its configuration and store itself
        watcher.stop()
    sock.listen(2048)  # connections queue from now on, while the workers start
    sock.set_inheritable(True)
    os.environ[_WORKER_ENV] = json.dumps(
        {
            "config": config,
            "upstream": args.upstream,
            "store": args.store,
            "ssl_certfile": args.ssl_certfile,
            "ssl_keyfile": args.ssl_keyfile,
            "fd": sock.fileno(),
            "log_level": args.log_level,
            "access_log": args.access_log,
            "auth_log": args.auth_log,
            "graceful_timeout": args.graceful_timeout,
            "metrics": args.metrics is not None,
        }
    )
    scheme = "https" if limits.tls else "http"
    logging.getLogger("consumer_auth.server").info(
        "consumer-auth running on %s (Press CTRL+C to quit)", address_text(sock, scheme)
    )
    _supervise(args.workers, sock, args.graceful_timeout)
    return 0


def _supervise(workers: int, sock: socket.socket, graceful_timeout: float) -> None:
    """Run ``workers`` worker processes on ``sock`` until SIGTERM or SIGINT. SIGHUP is passed on to every
    worker, whose watchers read the configuration again (replacing workers instead would stop serving
    when a replacement starts on a bad file); a worker that dies is replaced."""
    from consumer_auth._supervisor import Supervisor

    command = [sys.executable, "-c", _WORKER]
    Supervisor(command, dict(os.environ), [sock.fileno()], workers, graceful_timeout + 5).run()


def check(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Validate a configuration file; print ``OK`` and a summary, or the error naming its place."""
    out = out or sys.stdout
    try:
        gateway = Gateway.from_file(args.config)
    except ConfigError as error:
        return _fail(str(error))
    groups = gateway.consumer_groups
    in_groups = f" ({counted(len(groups), 'consumer group')})" if groups else ""  # as before without
    print(
        f"OK: {counted(len(gateway.consumers), 'consumer')}{in_groups}, "
        f"{counted(len(gateway.services), 'service')}, "
        f"{counted(len(gateway.routes), 'route')} (profile {gateway.profile.value})",
        file=out,
    )
    argon2_logins = any(
        isinstance(credential.verifier, Argon2Password)
        for consumer in gateway.consumers
        for credential in consumer.credentials
    )
    for route in gateway.compiled_routes:
        named = f"routes[{route.order}]" + (f" {route.id!r}" if route.id else "")
        if gateway.unmatched == "pass":  # SPEC §8: these requests are not passed, whatever the app does
            if route.exact_hosts is not None:
                print(
                    f"warning: {named} has hosts under unmatched: pass: requests for its paths on other "
                    "hosts are answered 404 Route Not Found, not passed on (a client chooses its Host)",
                    file=out,
                )
            if route.route.methods is not None:
                print(
                    f"warning: {named} has methods under unmatched: pass: requests for its paths with "
                    "other methods are answered 404 Route Not Found, not passed on",
                    file=out,
                )
        basic_auth = route.plugins.get("basic-auth")
        if argon2_logins and isinstance(basic_auth, BasicAuthPlugin) and basic_auth.brute_force is None:
            print(
                f"warning: {named} checks argon2 passwords without brute_force limits: "
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
    from consumer_auth import _demo
    from consumer_auth._runner import Server, bind, new_event_loop

    sock = bind(args.host, args.port)
    if isinstance(sock, str):
        return _fail(sock)
    sock.listen(2048)  # connections queue from now on: the printed commands work as soon as they show
    port = sock.getsockname()[1]
    host = f"[{args.host}]" if ":" in args.host else args.host

    async def run() -> None:
        stand_in, upstream = await _demo.stand_in_upstream()
        try:
            proxy = Gateway.from_dict(_demo.guide_config(upstream)).asgi_proxy()
            server = Server(proxy, ServerLimits(), graceful_timeout=args.graceful_timeout)
            print(_demo.usage(f"http://{host}:{port}", upstream), flush=True)
            await server.serve([sock])
        finally:
            await stand_in.aclose()

    _log_setup(args)
    signal.signal(signal.SIGTERM, _exit_quietly)
    signal.signal(signal.SIGINT, _exit_quietly)
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(run())
    return 0


def _parser() -> argparse.ArgumentParser:
    from consumer_auth import __version__

    parser = argparse.ArgumentParser(
        prog="consumer-auth",
        description="APISIX-style Consumer + Basic Auth gateway. "
        "`consumer-auth COMMAND --help` describes each command, with examples.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def server_options(command: argparse.ArgumentParser, host: str, port: int) -> None:
        command.add_argument("--host", default=host, help=f"address to listen on (default {host})")
        command.add_argument(
            "--port",
            type=port_number,
            default=port,
            help=f"port to listen on, 0 for any free one (default {port})",
        )
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

    serve_command = command(
        commands,
        "serve",
        "run the forwarding gateway",
        "Run the forwarding gateway: requests the routes allow go to their upstream. The --store "
        "is followed as it changes; on SIGHUP the --config file is read again (a bad one is logged and the "
        "last good configuration stays). SIGTERM or Ctrl+C finish the requests in flight, then exit 0.",
        """
consumer-auth serve --config gateway.yaml
consumer-auth serve --config routes.yaml --store sqlite:////var/lib/consumer-auth/consumers.db --workers 4
consumer-auth serve --store gateway.yaml --upstream http://127.0.0.1:8000 --port 8080
consumer-auth serve --config gateway.yaml --workers 4 --metrics 127.0.0.1:9091
kill -HUP PID    # read gateway.yaml again
""",
    )
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
    serve_command.add_argument(
        "--ssl-certfile",
        metavar="FILE",
        help="serve HTTPS (HTTP/1.1 and HTTP/2) with this PEM certificate chain (with --ssl-keyfile)",
    )
    serve_command.add_argument("--ssl-keyfile", metavar="FILE", help="the PEM private key of --ssl-certfile")
    serve_command.add_argument(
        "--metrics",
        type=_serve_metrics.address,
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics, every worker counted (docs/metrics.md)",
    )
    server_options(serve_command, "127.0.0.1", 9080)
    serve_command.set_defaults(run=serve)

    check_command = command(
        commands,
        "check",
        "validate a configuration file",
        "Validate a YAML, JSON or TOML configuration as the gateway would; print a summary, or the "
        "mistake with its place (exit status 1).",
        "consumer-auth check --config gateway.yaml",
    )
    check_command.add_argument(
        "--config", required=True, metavar="FILE", help="YAML, JSON or TOML configuration"
    )
    check_command.set_defaults(run=check)

    hash_command = command(
        commands,
        "hash-password",
        "print an argon2id hash of a password read from the terminal or stdin",
        "Print an argon2id hash for password_hash: in a configuration. The password is asked twice on a "
        "terminal, or read as one line of standard input; never from the command line.",
        """
consumer-auth hash-password
printf '%s\\n' "$PASSWORD" | consumer-auth hash-password
""",
    )
    hash_command.set_defaults(run=hash_password_command)

    import_command = command(
        commands,
        "import-htpasswd",
        "print the consumers of an htpasswd file as configuration (hashes kept)",
        "Print the users of an Apache or nginx htpasswd file as a consumers: document (a configuration "
        "file of its own), each keeping its hash: $apr1$, bcrypt, {SHA}, $5$/$6$ SHA-crypt, {PLAIN}.",
        """
consumer-auth import-htpasswd /etc/nginx/.htpasswd > consumers.yaml
consumer-auth import-htpasswd users.htpasswd --format json --skip-unsupported
""",
    )
    htpasswd.add_arguments(import_command)
    import_command.set_defaults(run=htpasswd.run)

    demo_command = command(
        commands,
        "demo",
        "serve the guide's scenario with a built-in upstream",
        "Serve the guide's scenario (consumer alex / 123456, GET /v1/json on host example.com) in front of "
        "a built-in stand-in for httpbin, and print the curl commands to try.",
        """
consumer-auth demo
consumer-auth demo --port 8080
""",
    )
    server_options(demo_command, "127.0.0.1", 9080)
    demo_command.set_defaults(run=demo)

    _store_cli.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except BadValue as error:
        return _fail(str(error))
    if getattr(args, "workers", 1) < 1:
        parser.error("--workers must be at least 1")
    if args.command == "serve" and args.config is None and args.store is None:
        parser.error("serve needs --config, --store, or both")
    if args.command == "serve" and (args.ssl_certfile is None) != (args.ssl_keyfile is None):
        parser.error("--ssl-certfile and --ssl-keyfile go together")
    status: int = args.run(args)
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
