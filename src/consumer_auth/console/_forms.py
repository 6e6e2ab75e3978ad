"""The console's forms: which fields each page edits, and form values ⇄ stored documents (sans-IO).

This module is long because the forms of every kind of resource share one field model and one pair of
conversions.

A field names the place of the document it edits (``plugins.basic-auth.realm``), the same place a
:class:`~consumer_auth.ConfigError` names, so an error is shown next to the field it is about. A form
only changes the places of its own fields: everything else of a stored document (other plugins,
health checks, a password hash) is kept as it was.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from consumer_auth.errors import ConfigError

__all__ = [
    "BASIC_AUTH",
    "CONSUMER",
    "CONSUMER_GROUP",
    "CONSUMER_RESTRICTION",
    "CREDENTIAL",
    "METHODS",
    "PLUGIN_FORMS",
    "ROUTE",
    "SERVICE",
    "Field",
    "FormError",
    "Form",
    "errors_by_field",
]

METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS")

Values = Mapping[str, Sequence[str]]
"""A posted form: each field name with every value sent for it."""


class FormError(Exception):
    """A value the form itself cannot turn into a document (not JSON where JSON was needed)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.error = ConfigError(path, reason)


@dataclass(frozen=True)
class Field:
    """One input of a form.

    ``widget`` says how the value is read and shown: ``text``, ``number``, ``checkbox`` (always
    stored, true or false), ``lines`` (a list, one item per line or comma), ``methods`` (checkboxes),
    ``select`` (one of ``choices``, a list the page supplies), ``uris`` (``uri`` for one, ``uris`` for
    more), ``upstream`` (a URL, or an APISIX upstream object as JSON), ``labels`` (``key=value`` lines),
    ``password`` (never shown; left empty, the stored hash is kept).
    """

    name: str
    label: str
    path: str
    widget: str = "text"
    help: str = ""
    default: bool = False
    choices: str = ""
    also: tuple[str, ...] = ()
    """Other places whose errors belong to this field (``uris`` for ``uri``, ``password_hash``)."""

    @property
    def places(self) -> tuple[str, ...]:
        """Every document place this field answers for."""
        return (self.path, *self.also)


def _steps(path: str) -> list[str]:
    return path.split(".")


def _get(document: Mapping[str, Any], path: str) -> Any:
    value: Any = document
    for step in _steps(path):
        if not isinstance(value, Mapping) or step not in value:
            return None
        value = value[step]
    return value


def _set(document: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = _steps(path)
    target = document
    for step in parents:
        child = target.get(step)
        if not isinstance(child, dict):
            child = target[step] = {}
        target = child
    target[last] = value


def _remove(document: dict[str, Any], path: str) -> None:
    *parents, last = _steps(path)
    target: Any = document
    for step in parents:
        target = target.get(step) if isinstance(target, dict) else None
    if isinstance(target, dict):
        target.pop(last, None)


def _one(values: Values, name: str) -> str:
    given = values.get(name, ())
    return given[0] if given else ""


def _items(text: str) -> list[str]:
    return [item.strip() for line in text.splitlines() for item in line.split(",") if item.strip()]


@dataclass(frozen=True)
class Form:
    """The fields of one page, and how they read from and write into a document."""

    fields: tuple[Field, ...]

    def shown(self, document: Mapping[str, Any] | None) -> dict[str, Any]:
        """The value of each field for a page showing ``document`` (``None``: a new resource)."""
        shown: dict[str, Any] = {}
        for field in self.fields:
            value = _get(document, field.path) if document is not None else None
            shown[field.name] = self._show(field, value, document)
        return shown

    @staticmethod
    def _show(field: Field, value: Any, document: Mapping[str, Any] | None) -> Any:
        widget = field.widget
        if widget == "password":
            return ""  # never shown, not even a hash
        if widget == "checkbox":
            return field.default if value is None else value is True
        if widget == "methods":
            return list(value) if isinstance(value, list) else []
        if widget == "uris":
            many = _get(document, "uris") if document is not None else None
            listed = many if isinstance(many, list) else ([value] if value is not None else [])
            return "\n".join(str(item) for item in listed)
        if value is None:
            return ""
        if widget == "lines":
            return "\n".join(str(item) for item in value) if isinstance(value, list) else str(value)
        if widget == "labels":
            if isinstance(value, Mapping):
                return "\n".join(f"{key}={item}" for key, item in value.items())
            return json.dumps(value)
        if widget == "upstream" and not isinstance(value, str):
            return json.dumps(value, indent=2)
        return str(value)

    def posted(self, values: Values) -> dict[str, Any]:
        """What a posted form shows again after a refusal (passwords left out)."""
        shown: dict[str, Any] = {}
        for field in self.fields:
            if field.widget == "password":
                shown[field.name] = ""
            elif field.widget == "checkbox":
                shown[field.name] = bool(_one(values, field.name))
            elif field.widget == "methods":
                shown[field.name] = [m for m in values.get(field.name, ()) if m in METHODS]
            else:
                shown[field.name] = _one(values, field.name)
        return shown

    def apply(self, values: Values, document: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``document`` (or a new one) with every field of this form set from ``values``.

        An empty field removes its place (the default applies). A password left empty keeps the
        stored hash; a new one replaces it (the store hashes it).

        Raises:
            FormError: a value this form cannot read (an upstream that is neither a URL nor JSON).
        """
        result = copy.deepcopy(dict(document or {}))
        for field in self.fields:
            self._apply(field, values, result)
        return result

    @staticmethod
    def _apply(field: Field, values: Values, document: dict[str, Any]) -> None:
        widget, path = field.widget, field.path
        text = _one(values, field.name)
        if widget == "checkbox":
            _set(document, path, bool(text))
            return
        if widget == "methods":
            chosen = [m for m in values.get(field.name, ()) if m]
            if chosen:
                _set(document, path, chosen)
            else:
                _remove(document, path)
            return
        if widget == "password":
            if text:
                _set(document, path, text)
                _remove(document, path.rpartition(".")[0] + ".password_hash")
            return
        if widget == "uris":
            listed = _items(text)
            _remove(document, "uri")
            _remove(document, "uris")
            if len(listed) == 1:
                _set(document, "uri", listed[0])
            elif listed:
                _set(document, "uris", listed)
            return
        text = text.strip()
        if not text:
            _remove(document, path)
            return
        if widget == "lines":
            _set(document, path, _items(text))
        elif widget == "number":
            try:
                _set(document, path, int(text))
            except ValueError:
                _set(document, path, text)  # the schema names it: "expected an integer, got 'x'"
        elif widget == "labels":
            labels: dict[str, str] = {}
            for line in text.splitlines():
                if not line.strip():
                    continue
                key, equals, value = line.partition("=")
                if not equals or not key.strip():
                    raise FormError(path, f"expected one key=value per line, got {line.strip()!r}")
                labels[key.strip()] = value.strip()
            _set(document, path, labels)
        elif widget == "upstream" and text.startswith("{"):
            try:
                _set(document, path, json.loads(text))
            except json.JSONDecodeError as error:
                raise FormError(path, f"not valid JSON: {error.msg} at line {error.lineno}") from None
            except (ValueError, RecursionError):  # nested past the parser's stack, a number too long
                raise FormError(path, "not JSON the console can read") from None
        else:
            _set(document, path, text)


def errors_by_field(error: ConfigError, form: Form, *, within: str = "") -> tuple[dict[str, str], list[str]]:
    """Where to show an error: ``({field name: message}, [messages for the top of the form])``.

    ``within`` is how the store names the resource in errors about the whole content
    (``routes/json``); it is taken off first, so the place is the one the form's fields name.
    """
    path = error.path
    if within and (path == within or path.startswith(within + ".")):
        path = path[len(within) + 1 :]
    shown = f"{path}: {error.reason}" if path else error.reason
    best: Field | None = None
    closest = -1
    for field in form.fields:
        for place in field.places:
            if (path == place or path.startswith((place + ".", place + "["))) and len(place) > closest:
                best, closest = field, len(place)
    if best is None:
        return {}, [str(error) if path != error.path else shown]
    return {best.name: shown}, []


_ID_HELP = "1-64 letters, digits, '_', '-' or '.'"

SERVICE = Form(
    (
        Field("id", "ID", "id", help=_ID_HELP),
        Field("name", "Name", "name"),
        Field("desc", "Description", "desc"),
        Field("path_prefix", "Path prefix", "path_prefix", help="e.g. /v1: a route's uri is joined to it"),
        Field(
            "strip_path_prefix",
            "Strip the path prefix before forwarding",
            "strip_path_prefix",
            "checkbox",
            default=True,
        ),
        Field("hosts", "Hosts", "hosts", "lines", help="one per line; *.example.com for its subdomains"),
        Field(
            "upstream",
            "Upstream",
            "upstream",
            "upstream",
            help="a URL (http://127.0.0.1:9001), or an APISIX upstream object as JSON",
        ),
    )
)

ROUTE = Form(
    (
        Field("id", "ID", "id", help=_ID_HELP),
        Field("name", "Name", "name"),
        Field("desc", "Description", "desc"),
        Field(
            "uri",
            "Path",
            "uri",
            "uris",
            help="/json matches exactly, /json/* everything below; one per line for several",
            also=("uris",),
        ),
        Field("methods", "Methods", "methods", "methods", help="none checked: every method"),
        Field("hosts", "Hosts", "hosts", "lines", help="one per line; empty: the service's hosts"),
        Field("priority", "Priority", "priority", "number", help="higher wins among equal matches"),
        Field("service_id", "Service", "service_id", "select", choices="services"),
        Field(
            "upstream",
            "Upstream",
            "upstream",
            "upstream",
            help="empty: the service's; a URL, or an APISIX upstream object as JSON",
        ),
    )
)

CONSUMER = Form(
    (
        Field("username", "Username", "username", help="the consumer's name"),
        Field("desc", "Description", "desc"),
        Field(
            "labels",
            "Labels",
            "labels",
            "labels",
            help="key=value, one per line (custom_id=... is sent upstream)",
        ),
        Field(
            "group_id",
            "Consumer group",
            "group_id",
            "select",
            choices="consumer_groups",
            help="its plugins apply to this consumer (a plugin of the consumer's own of the same name wins)",
        ),
        Field(
            "login",
            "Basic Auth username",
            "plugins.basic-auth.username",
            help="what the client logs in with; empty (with no password): no Basic Auth on the consumer",
            also=("plugins.basic-auth", "plugins"),
        ),
        Field(
            "password",
            "Basic Auth password",
            "plugins.basic-auth.password",
            "password",
            help="hashed with argon2id on save and never shown again; empty keeps the current one",
            also=("plugins.basic-auth.password_hash",),
        ),
    )
)

CONSUMER_GROUP = Form(
    (
        Field("id", "ID", "id", help=_ID_HELP + "; consumers name it as their group"),
        Field("desc", "Description", "desc"),
        Field("labels", "Labels", "labels", "labels", help="key=value, one per line"),
    )
)

CREDENTIAL = Form(
    (
        Field("id", "Credential ID", "id", help=_ID_HELP + "; sent upstream as X-Credential-Identifier"),
        Field("desc", "Description", "desc"),
        Field(
            "login",
            "Basic Auth username",
            "plugins.basic-auth.username",
            also=("plugins.basic-auth", "plugins"),
        ),
        Field(
            "password",
            "Basic Auth password",
            "plugins.basic-auth.password",
            "password",
            help="hashed with argon2id on save and never shown again; empty keeps the current one",
            also=("plugins.basic-auth.password_hash",),
        ),
    )
)

BASIC_AUTH = Form(
    (
        Field(
            "hide_credentials",
            "StripCredentials",
            "plugins.basic-auth.hide_credentials",
            "checkbox",
            help="hide_credentials: remove the Authorization header before the upstream sees it",
        ),
        Field(
            "realm",
            "Realm",
            "plugins.basic-auth.realm",
            help="sent in WWW-Authenticate; empty: '.' (classic profile) or 'basic' (apisix-3)",
        ),
        Field(
            "anonymous_consumer",
            "Anonymous consumer",
            "plugins.basic-auth.anonymous_consumer",
            "select",
            choices="consumers",
            help="let requests without valid credentials through as this consumer",
        ),
    )
)

CONSUMER_RESTRICTION = Form(
    (
        Field(
            "whitelist",
            "Allowed consumers (whitelist)",
            "plugins.consumer-restriction.whitelist",
            "lines",
            help="one consumer name per line; every other consumer is rejected",
            also=("plugins.consumer-restriction",),
        ),
        Field(
            "blacklist",
            "Rejected consumers (blacklist)",
            "plugins.consumer-restriction.blacklist",
            "lines",
            help="one consumer name per line",
        ),
        Field(
            "rejected_code",
            "Rejection status",
            "plugins.consumer-restriction.rejected_code",
            "number",
            help="default 403",
        ),
        Field(
            "rejected_msg",
            "Rejection message",
            "plugins.consumer-restriction.rejected_msg",
            help="default: The consumer_name is forbidden.",
        ),
    )
)


@dataclass(frozen=True)
class PluginForm:
    """A plugin the console can add to a route or a service, under its category."""

    name: str
    title: str
    category: str
    summary: str
    form: Form
    authenticates: bool = False
    """Whether it finds the consumer: then it cannot sit on a consumer group (whose plugins run after)."""


PLUGIN_FORMS = {
    plugin.name: plugin
    for plugin in (
        PluginForm(
            "basic-auth",
            "Basic Auth",
            "Authentication",
            "Require a consumer's username and password (HTTP Basic, RFC 7617)",
            BASIC_AUTH,
            authenticates=True,
        ),
        PluginForm(
            "consumer-restriction",
            "Consumer Restriction",
            "Security",
            "Allow or reject consumers by name (or by consumer group), after authentication",
            CONSUMER_RESTRICTION,
        ),
    )
}
"""The plugins of the "Add plugin" page, by name (in the order shown)."""
