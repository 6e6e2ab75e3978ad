"""``consumer-auth consumers add|list|remove|passwd`` and ``consumer-auth admin``: a store from the shell.

Passwords are read from the terminal (asked twice) or as one line of standard input, never from the
command line (where ``ps`` would show them); they are stored as argon2id hashes and never printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any, TextIO

from consumer_auth._prompt import read_password
from consumer_auth.errors import ConfigError, StoreError
from consumer_auth.sansio.consumers import check_login
from consumer_auth.store import Resource, WritableStore, open_store, redact

__all__ = ["ADMIN_KEY_ENV", "add_commands"]

ADMIN_KEY_ENV = "CONSUMER_AUTH_ADMIN_KEY"
"""The environment variable ``consumer-auth admin`` reads its key from (a key on the command line would
show in ``ps``)."""


class _Refused(Exception):
    """A command cannot do what was asked; the message says why (exit status 1)."""


def _fail(message: str) -> int:
    print(f"consumer-auth: error: {message}", file=sys.stderr)
    return 1


def _password(stdin: TextIO) -> str:
    try:
        return read_password(stdin)
    except ValueError as error:
        raise _Refused(str(error)) from None


def _writable(url: str, *, create: bool = False) -> WritableStore:
    store = open_store(url, create=create)
    if not isinstance(store, WritableStore):
        store.close()
        raise _Refused(f"{url} is a configuration file: edit it (gateways reload it when it changes)")
    return store


def _login_of(resource: Resource) -> str | None:
    plugins = resource.document.get("plugins")
    basic = plugins.get("basic-auth") if isinstance(plugins, dict) else None
    login = basic.get("username") if isinstance(basic, dict) else None
    return login if isinstance(login, str) else None


def _with_password(document: dict[str, Any], login: str, password: str) -> dict[str, Any]:
    return {
        **document,
        "plugins": {**document.get("plugins", {}), "basic-auth": {"username": login, "password": password}},
    }


def _add(store: WritableStore, args: argparse.Namespace, stdin: TextIO, out: TextIO) -> None:
    name: str = args.name
    login = check_login(args.login or name, "plugins.basic-auth.username")  # before it names the credential
    ident: str = args.credential_id or login
    labels: dict[str, str] = {}
    for label in args.label or ():
        key, equals, value = label.partition("=")
        if not key or not equals:
            raise _Refused(f"--label {label!r}: expected KEY=VALUE")
        labels[key] = value
    existing = store.get_resource("consumers", name)
    if store.get_resource("credentials", f"{name}/{ident}") is not None:
        raise _Refused(f"consumer {name!r} already has credential {ident!r}: use 'consumers passwd'")
    if existing is not None and (args.desc is not None or labels):
        raise _Refused(f"consumer {name!r} exists: --desc and --label only apply to a new consumer")
    password = _password(stdin)
    writes: list[tuple[str, str, dict[str, Any]]] = []
    if existing is None:
        document: dict[str, Any] = {}
        if args.desc is not None:
            document["desc"] = args.desc
        if labels:
            document["labels"] = labels
        writes.append(("consumers", name, document))
    writes.append(("credentials", f"{name}/{ident}", _with_password({}, login, password)))
    store.put_resources(writes)  # the consumer and its credential, or neither
    what = "added" if existing is None else "given a new credential"
    print(f"consumer {name!r} {what}: login {login!r}, credential id {ident!r}", file=out)


def _list(store: WritableStore, args: argparse.Namespace, stdin: TextIO, out: TextIO) -> None:
    credentials: dict[str, list[Resource]] = {}
    for resource in store.list_resources("credentials"):
        credentials.setdefault(resource.key.partition("/")[0], []).append(resource)
    consumers = store.list_resources("consumers")
    if args.json:
        listed = [
            {
                **redact(consumer.document),
                "credentials": [redact(c.document) for c in credentials.get(consumer.key, [])],
            }
            for consumer in consumers
        ]
        print(json.dumps(listed, indent=2, ensure_ascii=False), file=out)
        return
    rows = [("CONSUMER", "CREDENTIAL ID", "LOGIN", "CUSTOM ID")]
    for consumer in consumers:
        labels = consumer.document.get("labels")
        custom_id = str(labels.get("custom_id", "")) if isinstance(labels, dict) else ""
        inline = _login_of(consumer)
        if inline is not None:
            rows.append((consumer.key, "-", inline, custom_id))
        for credential in credentials.get(consumer.key, []):
            rows.append(
                (consumer.key, credential.key.partition("/")[2], _login_of(credential) or "-", custom_id)
            )
        if inline is None and consumer.key not in credentials:
            rows.append((consumer.key, "-", "-", custom_id))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip(), file=out
        )


def _remove(store: WritableStore, args: argparse.Namespace, stdin: TextIO, out: TextIO) -> None:
    if args.credential_id is not None:
        if not store.delete_resource("credentials", f"{args.name}/{args.credential_id}"):
            raise _Refused(f"consumer {args.name!r} has no credential {args.credential_id!r}")
        print(f"credential {args.credential_id!r} of consumer {args.name!r} removed", file=out)
        return
    if not store.delete_resource("consumers", args.name):
        raise _Refused(f"no consumer named {args.name!r}")
    print(f"consumer {args.name!r} removed", file=out)


def _passwd(store: WritableStore, args: argparse.Namespace, stdin: TextIO, out: TextIO) -> None:
    name: str = args.name
    consumer = store.get_resource("consumers", name)
    if consumer is None:
        raise _Refused(f"no consumer named {name!r}")
    owned = store.list_resources("credentials", name)
    if args.credential_id is not None:
        owned = [c for c in owned if c.key == f"{name}/{args.credential_id}"]
        if not owned:
            raise _Refused(f"consumer {name!r} has no credential {args.credential_id!r}")
    inline = _login_of(consumer) if args.credential_id is None else None
    targets = len(owned) + (inline is not None)
    if targets == 0:
        raise _Refused(f"consumer {name!r} has no basic-auth credential: use 'consumers add'")
    if targets > 1:
        ids = ", ".join(c.key.partition("/")[2] for c in owned)
        raise _Refused(f"consumer {name!r} has several credentials ({ids}): choose one with --credential-id")
    password = _password(stdin)
    if owned:
        credential = owned[0]
        login = _login_of(credential) or name
        store.put_resource(
            "credentials", credential.key, _with_password(dict(credential.document), login, password)
        )
        print(
            f"password of consumer {name!r}, credential {credential.key.partition('/')[2]!r} changed",
            file=out,
        )
    else:
        store.put_resource(
            "consumers", name, _with_password(dict(consumer.document), inline or name, password)
        )
        print(f"password of consumer {name!r} changed", file=out)


Action = Callable[[WritableStore, argparse.Namespace, TextIO, TextIO], None]


def _consumers(args: argparse.Namespace, stdin: TextIO = sys.stdin, out: TextIO = sys.stdout) -> int:
    action: Action = args.action
    try:
        store = _writable(args.store, create=action is _add)  # only `add` may start a new SQLite file
        try:
            action(store, args, stdin, out)
        finally:
            store.close()
    except (_Refused, ConfigError, StoreError) as error:
        return _fail(str(error))
    return 0


def admin(args: argparse.Namespace) -> int:
    """Serve the Admin API, with the console at ``/ui/``, on its own listener until SIGTERM or SIGINT."""
    try:
        import httptools  # noqa: F401 - the server front

        if args.console:
            import jinja2  # noqa: F401 - the console's templates
    except ModuleNotFoundError as error:
        return _fail(f"this command needs {error.name}: pip install 'consumer-auth[server]'")

    from consumer_auth.admin import AdminAPI
    from consumer_auth.console import Console

    key = os.environ.get(ADMIN_KEY_ENV, "")
    if not key:
        return _fail(f"set the admin key in the {ADMIN_KEY_ENV} environment variable")
    try:
        store = _writable(args.store, create=True)  # the Admin API may fill a new store
        store.revision()  # reachable, tables in place
    except (_Refused, ConfigError, StoreError) as error:
        return _fail(str(error))
    import logging.config

    from consumer_auth._limits import ServerLimits
    from consumer_auth._logging import logging_config
    from consumer_auth._runner import TrustForwarded, bind, run
    from consumer_auth.sansio._trust import TrustedProxies

    try:
        trusted = TrustedProxies(args.trusted_proxy or [])
    except ConfigError as error:
        store.close()
        return _fail(f"--trusted-proxy: {error.reason}")
    api = AdminAPI(store, admin_key=key)
    app: Any = Console(api, gateway_url=args.gateway_url) if args.console else api
    if trusted:  # the access log shows the peer; X-Forwarded-For only from the proxies named
        app = TrustForwarded(app, trusted)
    sock = bind(args.host, args.port)
    if isinstance(sock, str):
        store.close()
        return _fail(sock)
    logging.config.dictConfig(logging_config(args.log_level, access_log=True))
    # serve's head limits, timeouts and per-client connection cap (docs/security.md)
    run(app, [sock], ServerLimits(), access_log=True)
    store.close()
    return 0


def add_commands(commands: Any) -> None:
    """Add ``consumers`` and ``admin`` to the ``consumer-auth`` sub-command parsers."""
    from consumer_auth._args import command, port_number

    consumers = command(
        commands,
        "consumers",
        "add, list, remove consumers or change passwords in a store",
        "Manage the consumers of a SQLite or PostgreSQL store that gateways follow. Passwords are read "
        "from the terminal (asked twice) or one line of standard input, and stored as argon2id hashes. "
        "Only `add` starts a new SQLite file.",
        """
consumer-auth consumers add alex --store sqlite:///consumers.db
consumer-auth consumers list --store postgresql://gateway@db/gateway
consumer-auth consumers passwd alex --store sqlite:///consumers.db
""",
    )
    actions = consumers.add_subparsers(dest="action_name", required=True, metavar="ACTION")

    def action(name: str, run: Action, help: str) -> argparse.ArgumentParser:  # noqa: A002 - argparse's word
        parser: argparse.ArgumentParser = actions.add_parser(
            name, help=help, description=help[:1].upper() + help[1:] + "."
        )
        parser.add_argument(
            "--store",
            required=True,
            metavar="URL",
            help="sqlite:///FILE or postgresql://HOST/DB[?schema=NAME]",
        )
        parser.set_defaults(run=_consumers, action=run)
        return parser

    add = action("add", _add, "add a consumer, or a credential to one (password from the terminal or stdin)")
    add.add_argument("name", help="the consumer's name")
    add.add_argument("--login", help="the basic-auth username (default: the consumer's name)")
    add.add_argument(
        "--credential-id", help="the credential's id, sent as X-Credential-Identifier (default: the login)"
    )
    add.add_argument("--desc", help="a description of a new consumer")
    add.add_argument(
        "--label", action="append", metavar="KEY=VALUE", help="a label of a new consumer (custom_id=...)"
    )

    listing = action("list", _list, "list consumers, their credential ids and logins (never a secret)")
    listing.add_argument("--json", action="store_true", help="print JSON documents instead of a table")

    remove = action("remove", _remove, "remove a consumer with its credentials, or one credential")
    remove.add_argument("name", help="the consumer's name")
    remove.add_argument("--credential-id", help="remove only this credential")

    passwd = action("passwd", _passwd, "change a password (read from the terminal or stdin)")
    passwd.add_argument("name", help="the consumer's name")
    passwd.add_argument("--credential-id", help="which credential, when the consumer has several")

    admin_command = command(
        commands,
        "admin",
        f"serve the Admin API and the web console on their own listener (key from ${ADMIN_KEY_ENV})",
        "Serve the APISIX-compatible Admin API (/apisix/admin/consumers, routes, services) and the web "
        f"console (/ui/) for a SQL store; requests need the key of ${ADMIN_KEY_ENV}.",
        f"{ADMIN_KEY_ENV}=$(cat /etc/consumer-auth/admin-key) consumer-auth admin --store sqlite:///consumers.db",
    )
    admin_command.add_argument(
        "--store", required=True, metavar="URL", help="sqlite:///FILE or postgresql://HOST/DB[?schema=NAME]"
    )
    admin_command.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    admin_command.add_argument(
        "--port", type=port_number, default=9180, help="port to listen on (default 9180)"
    )
    admin_command.add_argument(
        "--log-level", default="info", choices=("critical", "error", "warning", "info", "debug")
    )
    admin_command.add_argument(
        "--trusted-proxy",
        action="append",
        metavar="ADDRESS",
        help="a proxy in front of the Admin API whose X-Forwarded-For the access log believes "
        "(repeatable; default: none, the peer address is logged)",
    )
    admin_command.add_argument(
        "--console",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="serve the web console at /ui/ (default on; docs/console.md)",
    )
    admin_command.add_argument(
        "--gateway-url",
        default="http://127.0.0.1:9080",
        metavar="URL",
        help="where the gateway following this store answers, for the console's curl commands "
        "(default http://127.0.0.1:9080)",
    )
    admin_command.set_defaults(run=admin)
