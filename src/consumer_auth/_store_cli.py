"""``consumer-auth consumers add|list|edit|remove|passwd``, ``consumer-auth consumer-groups
add|list|remove`` and ``consumer-auth admin``: a store from the shell.

Passwords are read from the terminal (asked twice) or as one line of standard input, never from the
command line (where ``ps`` would show them); they are stored as argon2id hashes and never printed.

This module is long because every store sub-command's parser sits next to the function that runs it, as
in ``cli.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from consumer_auth._prompt import read_password
from consumer_auth.config import load_file
from consumer_auth.errors import ConfigError, StoreError
from consumer_auth.sansio.consumers import check_group_id, check_login
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


def _labels(args: argparse.Namespace) -> dict[str, str]:
    labels: dict[str, str] = {}
    for label in args.label or ():
        key, equals, value = label.partition("=")
        if not key or not equals:
            raise _Refused(f"--label {label!r}: expected KEY=VALUE")
        labels[key] = value
    return labels


def _group_option(store: WritableStore, group: str | None) -> None:
    """Refuse ``--group`` naming no group of the store before a password is asked for."""
    if group is not None:
        check_group_id(group, "--group")
        if store.get_resource("consumer_groups", group) is None:
            raise _Refused(
                f"--group {group!r}: no consumer group with that id (add it with 'consumer-groups add')"
            )


def _add(store: WritableStore, args: argparse.Namespace, stdin: TextIO, out: TextIO) -> None:
    name: str = args.name
    login = check_login(args.login or name, "plugins.basic-auth.username")  # before it names the credential
    ident: str = args.credential_id or login
    labels = _labels(args)
    existing = store.get_resource("consumers", name)
    if store.get_resource("credentials", f"{name}/{ident}") is not None:
        raise _Refused(f"consumer {name!r} already has credential {ident!r}: use 'consumers passwd'")
    if existing is not None and (args.desc is not None or labels or args.group is not None):
        raise _Refused(
            f"consumer {name!r} exists: --desc, --label and --group only apply to a new consumer "
            "(use 'consumers edit')"
        )
    _group_option(store, args.group)
    password = _password(stdin)
    writes: list[tuple[str, str, dict[str, Any]]] = []
    if existing is None:
        document: dict[str, Any] = {}
        if args.desc is not None:
            document["desc"] = args.desc
        if labels:
            document["labels"] = labels
        if args.group is not None:
            document["group_id"] = args.group
        writes.append(("consumers", name, document))
    writes.append(("credentials", f"{name}/{ident}", _with_password({}, login, password)))
    store.put_resources(writes)  # the consumer and its credential, or neither
    what = "added" if existing is None else "given a new credential"
    group = f", group {args.group!r}" if args.group is not None and existing is None else ""
    print(f"consumer {name!r} {what}: login {login!r}, credential id {ident!r}{group}", file=out)


def _edit(store: WritableStore, args: argparse.Namespace, stdin: TextIO, out: TextIO) -> None:
    name: str = args.name
    consumer = store.get_resource("consumers", name)
    if consumer is None:
        raise _Refused(f"no consumer named {name!r}")
    if args.group is None and not args.no_group and args.desc is None:
        raise _Refused("nothing to change: give --group ID, --no-group or --desc TEXT")
    _group_option(store, args.group)
    document = dict(consumer.document)
    if args.group is not None:
        document["group_id"] = args.group
    elif args.no_group:
        document.pop("group_id", None)
    if args.desc is not None:
        document["desc"] = args.desc
    store.put_resource("consumers", name, document)  # the stored hash is kept as it is
    group = document.get("group_id")
    print(f"consumer {name!r} changed: {f'group {group!r}' if group else 'in no group'}", file=out)


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
    groups = {consumer.key: consumer.document.get("group_id") for consumer in consumers}
    grouped = any(isinstance(group, str) for group in groups.values())  # a GROUP column only then
    rows = [("CONSUMER", "CREDENTIAL ID", "LOGIN", "CUSTOM ID", *(("GROUP",) if grouped else ()))]
    for consumer in consumers:
        labels = consumer.document.get("labels")
        custom_id = str(labels.get("custom_id", "")) if isinstance(labels, dict) else ""
        group = groups[consumer.key]
        extra = (group if isinstance(group, str) else "-",) if grouped else ()
        inline = _login_of(consumer)
        if inline is not None:
            rows.append((consumer.key, "-", inline, custom_id, *extra))
        for credential in credentials.get(consumer.key, []):
            rows.append(
                (
                    consumer.key,
                    credential.key.partition("/")[2],
                    _login_of(credential) or "-",
                    custom_id,
                    *extra,
                )
            )
        if inline is None and consumer.key not in credentials:
            rows.append((consumer.key, "-", "-", custom_id, *extra))
    _table(rows, out)


def _table(rows: Sequence[tuple[str, ...]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
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


def _group_add(store: WritableStore, args: argparse.Namespace, stdin: TextIO, out: TextIO) -> None:
    ident = check_group_id(args.id, "id")
    document: dict[str, Any] = {}
    if args.desc is not None:
        document["desc"] = args.desc
    labels = _labels(args)
    if labels:
        document["labels"] = labels
    if args.plugins is not None:
        plugins = json.load(stdin) if args.plugins == "-" else load_file(args.plugins)
        if not isinstance(plugins, dict):
            raise _Refused(f"--plugins {args.plugins}: expected a mapping of plugin names to their settings")
        document["plugins"] = plugins
    _, created = store.put_resource("consumer_groups", ident, document)
    names = ", ".join(document.get("plugins", {})) or "no plugins"
    print(f"consumer group {ident!r} {'added' if created else 'replaced'} ({names})", file=out)


def _group_list(store: WritableStore, args: argparse.Namespace, stdin: TextIO, out: TextIO) -> None:
    groups = store.list_resources("consumer_groups")
    members: dict[str, int] = {}
    for consumer in store.list_resources("consumers"):
        group = consumer.document.get("group_id")
        if isinstance(group, str):
            members[group] = members.get(group, 0) + 1
    if args.json:
        print(json.dumps([group.document for group in groups], indent=2, ensure_ascii=False), file=out)
        return
    rows = [("GROUP", "CONSUMERS", "PLUGINS", "DESC")]
    for group in groups:
        plugins = group.document.get("plugins")
        names = ", ".join(plugins) if isinstance(plugins, dict) and plugins else "-"
        desc = group.document.get("desc")
        rows.append((group.key, str(members.get(group.key, 0)), names, desc if isinstance(desc, str) else ""))
    _table(rows, out)


def _group_remove(store: WritableStore, args: argparse.Namespace, stdin: TextIO, out: TextIO) -> None:
    if not store.delete_resource("consumer_groups", args.id):
        raise _Refused(f"no consumer group with id {args.id!r}")
    print(f"consumer group {args.id!r} removed", file=out)


Action = Callable[[WritableStore, argparse.Namespace, TextIO, TextIO], None]


def _consumers(args: argparse.Namespace, stdin: TextIO = sys.stdin, out: TextIO = sys.stdout) -> int:
    action: Action = args.action
    try:
        # only `add` may start a new SQLite file
        store = _writable(args.store, create=action in (_add, _group_add))
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
    """Add ``consumers``, ``consumer-groups`` and ``admin`` to the ``consumer-auth`` sub-command parsers."""
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
consumer-auth consumers add jack --group free --store sqlite:///consumers.db
consumer-auth consumers list --store postgresql://gateway@db/gateway
consumer-auth consumers passwd alex --store sqlite:///consumers.db
""",
    )
    actions = consumers.add_subparsers(dest="action_name", required=True, metavar="ACTION")

    def action(name: str, run: Action, help: str, within: Any = actions) -> argparse.ArgumentParser:  # noqa: A002 - argparse's word
        parser: argparse.ArgumentParser = within.add_parser(
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
    add.add_argument("--group", metavar="ID", help="the consumer group of a new consumer")

    edit = action("edit", _edit, "change a consumer's group or description (its credentials stay)")
    edit.add_argument("name", help="the consumer's name")
    which = edit.add_mutually_exclusive_group()
    which.add_argument("--group", metavar="ID", help="put the consumer in this consumer group")
    which.add_argument("--no-group", action="store_true", help="take the consumer out of its group")
    edit.add_argument("--desc", help="a new description")

    listing = action("list", _list, "list consumers, their credential ids and logins (never a secret)")
    listing.add_argument("--json", action="store_true", help="print JSON documents instead of a table")

    remove = action("remove", _remove, "remove a consumer with its credentials, or one credential")
    remove.add_argument("name", help="the consumer's name")
    remove.add_argument("--credential-id", help="remove only this credential")

    passwd = action("passwd", _passwd, "change a password (read from the terminal or stdin)")
    passwd.add_argument("name", help="the consumer's name")
    passwd.add_argument("--credential-id", help="which credential, when the consumer has several")

    groups = command(
        commands,
        "consumer-groups",
        "add, list or remove consumer groups in a store",
        "Manage the consumer groups of a SQLite or PostgreSQL store: a group's plugins apply to every "
        "consumer in it (a consumer's own plugin of the same name wins; the group's wins over a route's "
        "and a service's). Put consumers in a group with `consumers add --group` or `consumers edit`.",
        """
consumer-auth consumer-groups add free --desc "free tier" --plugins free.yaml --store sqlite:///consumers.db
consumer-auth consumer-groups list --store sqlite:///consumers.db
consumer-auth consumer-groups remove free --store sqlite:///consumers.db
""",
    )
    group_actions = groups.add_subparsers(dest="action_name", required=True, metavar="ACTION")
    group_add = action("add", _group_add, "add a consumer group, or replace one", group_actions)
    group_add.add_argument("id", help="the group's id (1-64 letters, digits, '_', '-', '.')")
    group_add.add_argument("--desc", help="a description")
    group_add.add_argument("--label", action="append", metavar="KEY=VALUE", help="a label (repeatable)")
    group_add.add_argument(
        "--plugins",
        metavar="FILE",
        help="a YAML, JSON or TOML file mapping plugin names to their settings ('-': JSON on stdin)",
    )
    group_list = action(
        "list", _group_list, "list consumer groups, their plugins and member counts", group_actions
    )
    group_list.add_argument("--json", action="store_true", help="print JSON documents instead of a table")
    group_remove = action(
        "remove", _group_remove, "remove a consumer group (refused while a consumer is in it)", group_actions
    )
    group_remove.add_argument("id", help="the group's id")

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
