"""The console: the guide's web UI at ``/ui/``, beside the Admin API of ``consumer-auth admin``.

This module is long because every page is a method of one :class:`Console` (its sessions, Admin API and
templates); the forms' fields and conversions live in ``_forms.py``, the sessions in ``_sessions.py``.

Server-rendered pages (Jinja2, no JavaScript) to sign in with the admin key and to list, create,
edit and delete services, routes, consumers with their credentials, and consumer groups; on a route, a
service or a consumer group,
"Add plugin" → Authentication → Basic Auth (StripCredentials = ``hide_credentials``, realm,
anonymous consumer) or Security → Consumer Restriction. Every change goes through the
:class:`~consumer_auth.admin.AdminAPI`'s own operations to its store, validated exactly as an Admin API
call or a configuration file is, so a ``consumer-auth serve`` following that store applies it as it
applies any other write. See ``docs/console.md``.

Security note: a session is a random token in an ``HttpOnly``, ``SameSite=Strict`` cookie (``Secure``
over TLS) that names a session in this process's memory; every form carries the session's CSRF token;
wrong admin keys are limited per client address; every page is sent with a strict
``Content-Security-Policy``, ``X-Frame-Options: DENY`` and ``Cache-Control: no-store``. A password is
only ever read from a form and stored as its argon2id hash; neither is ever part of a page.
"""

from __future__ import annotations

import asyncio
import math
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote

from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.http import dump_cookie, parse_cookie
from werkzeug.routing import Map, RequestRedirect, Rule

from consumer_auth._demo import Request as TryRequest
from consumer_auth._demo import curl_commands, guide_requests
from consumer_auth.errors import ConfigError, StoreError, StoreUnavailableError
from consumer_auth.sansio.plugins import BasicAuthPlugin, Profile
from consumer_auth.sansio.routing import compile_route

from ._forms import (
    CONSUMER,
    CONSUMER_GROUP,
    CREDENTIAL,
    METHODS,
    PLUGIN_FORMS,
    ROUTE,
    SERVICE,
    Form,
    FormError,
    errors_by_field,
)
from ._sessions import Session, Sessions, SignInLimiter, same_token

if TYPE_CHECKING:
    from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, HTTPScope, Scope
    from jinja2 import Environment

    from consumer_auth.admin import AdminAPI
    from consumer_auth.store import Resource

__all__ = ["Console"]

PREFIX = "/ui"
SESSION_COOKIE = "consumer_auth_console"
SIGN_IN_COOKIE = "consumer_auth_console_sign_in"
_MAX_FORM = 65_536

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
"""Only the console's own stylesheet and images load; no script at all; forms post only to itself."""

_SECURITY_HEADERS = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
)

_STATIC = {"console.css": "text/css; charset=utf-8"}


@dataclass(frozen=True)
class Section:
    """One kind of resource with its pages: list, new, edit, delete."""

    kind: str
    title: str
    singular: str
    form: Form
    key_field: str
    plugins: bool = False
    authentication: bool = True
    """Whether its plugins may authenticate (``basic-auth``): not on a consumer group."""


SECTIONS = {
    section.kind: section
    for section in (
        Section("services", "Services", "service", SERVICE, "id", plugins=True),
        Section("routes", "Routes", "route", ROUTE, "id", plugins=True),
        Section("consumers", "Consumers", "consumer", CONSUMER, "username"),
        Section(
            "consumer_groups",
            "Consumer groups",
            "consumer group",
            CONSUMER_GROUP,
            "id",
            plugins=True,
            authentication=False,
        ),
    )
}
"""The console's sections, in navigation order."""

_KINDS = "any(" + ",".join(SECTIONS) + ")"
_WITH_PLUGINS = "any(" + ",".join(kind for kind, s in SECTIONS.items() if s.plugins) + ")"
_READ_WRITE = ["GET", "POST"]

_URLS = Map(
    [
        Rule(f"{PREFIX}/", endpoint="home"),
        Rule(f"{PREFIX}/login", endpoint="login", methods=_READ_WRITE),
        Rule(f"{PREFIX}/logout", endpoint="logout", methods=["POST"]),
        Rule(f"{PREFIX}/static/<name>", endpoint="static"),
        Rule(f"{PREFIX}/<{_KINDS}:kind>/", endpoint="listing"),
        Rule(f"{PREFIX}/<{_KINDS}:kind>/new", endpoint="create", methods=_READ_WRITE),
        Rule(f"{PREFIX}/<{_KINDS}:kind>/<key>", endpoint="edit", methods=_READ_WRITE),
        Rule(f"{PREFIX}/<{_KINDS}:kind>/<key>/delete", endpoint="delete", methods=_READ_WRITE),
        Rule(f"{PREFIX}/<{_WITH_PLUGINS}:kind>/<key>/plugins/", endpoint="add_plugin"),
        Rule(
            f"{PREFIX}/<{_WITH_PLUGINS}:kind>/<key>/plugins/<plugin>", endpoint="plugin", methods=_READ_WRITE
        ),
        Rule(
            f"{PREFIX}/<{_WITH_PLUGINS}:kind>/<key>/plugins/<plugin>/delete",
            endpoint="plugin_delete",
            methods=_READ_WRITE,
        ),
        Rule(f"{PREFIX}/consumers/<key>/credentials/new", endpoint="credential_create", methods=_READ_WRITE),
        Rule(f"{PREFIX}/consumers/<key>/credentials/<ident>", endpoint="credential", methods=_READ_WRITE),
        Rule(
            f"{PREFIX}/consumers/<key>/credentials/<ident>/delete",
            endpoint="credential_delete",
            methods=_READ_WRITE,
        ),
    ],
    strict_slashes=True,
    merge_slashes=False,
)


def url(*parts: str) -> str:
    """A console path from its parts, each quoted (``url("routes", "json")`` → ``/ui/routes/json``)."""
    return "/".join([PREFIX, *(quote(part, safe="") for part in parts)])


class _Done(Exception):
    """A finished answer, raised from inside a handler."""

    def __init__(self, status: int, body: bytes = b"", headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
        self.status = status
        self.body = body
        self.headers = list(headers)


class _Missing(Exception):
    """What a page is about does not exist (a 404 page, with the navigation)."""


def _redirect(location: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> _Done:
    return _Done(303, b"", [(b"location", location.encode()), *headers])


@dataclass
class _Request:
    method: str
    path: str
    secure: bool
    client: str | None
    cookies: Mapping[str, str]
    form: Mapping[str, list[str]] = field(default_factory=dict)
    token: str | None = None
    session: Session | None = None

    def value(self, name: str) -> str:
        given = self.form.get(name, ())
        return given[0] if given else ""


def _login_of(document: Mapping[str, Any]) -> str | None:
    plugins = document.get("plugins")
    basic = plugins.get("basic-auth") if isinstance(plugins, Mapping) else None
    login = basic.get("username") if isinstance(basic, Mapping) else None
    return login if isinstance(login, str) else None


def _without_empty_basic_auth(document: dict[str, Any], password_given: bool) -> dict[str, Any]:
    """A consumer whose Basic Auth username was cleared (and no password given) loses Basic Auth."""
    plugins = document.get("plugins")
    basic = plugins.get("basic-auth") if isinstance(plugins, dict) else None
    if (
        isinstance(plugins, dict)
        and isinstance(basic, dict)
        and "username" not in basic
        and not password_given
    ):
        del plugins["basic-auth"]
        if not plugins:
            del document["plugins"]
    return document


class Console:
    """The web console (an ASGI 3 app): ``/ui/`` pages, every other path to the Admin API.

    Args:
        admin: The Admin API whose key signs in and whose operations every change goes through.
        gateway_url: Where the gateway that follows the same store answers, for the ``curl``
            commands of a route's "Try it" (default ``serve``'s ``http://127.0.0.1:9080``).

    Example::

        admin = AdminAPI(SQLStore("sqlite:///consumers.db"), admin_key=os.environ["ADMIN_KEY"])
        uvicorn.run(Console(admin), host="127.0.0.1", port=9180)  # open http://127.0.0.1:9180/ui/
    """

    def __init__(self, admin: AdminAPI, *, gateway_url: str = "http://127.0.0.1:9080") -> None:
        self.admin = admin
        self.gateway_url = gateway_url.rstrip("/")
        self.sessions = Sessions()
        self.limiter = SignInLimiter()
        self._templates = _environment()
        self._static = {name: (resources.files(__name__) / "static" / name).read_bytes() for name in _STATIC}
        self._urls = _URLS.bind("console")

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] != "http" or not (scope["path"] == PREFIX or scope["path"].startswith(PREFIX + "/")):
            await self.admin(scope, receive, send)
            return
        try:
            answer = await self._answer(scope, receive)
        except _Done as done:
            answer = done
        headers = [*answer.headers, *_SECURITY_HEADERS, (b"content-length", str(len(answer.body)).encode())]
        if not any(name == b"cache-control" for name, _ in headers):
            headers.append((b"cache-control", b"no-store"))
        await send(
            {"type": "http.response.start", "status": answer.status, "headers": headers, "trailers": False}
        )
        body = b"" if scope["method"] == "HEAD" else answer.body
        await send({"type": "http.response.body", "body": body, "more_body": False})

    # -- plumbing ------------------------------------------------------------------------------------

    async def _answer(self, scope: HTTPScope, receive: ASGIReceiveCallable) -> _Done:
        try:
            endpoint, arguments = self._urls.match(scope["path"], scope["method"])
        except RequestRedirect:
            raise _redirect(scope["path"] + "/") from None
        except MethodNotAllowed as error:
            allowed = ", ".join(error.valid_methods or ())
            raise _Done(405, b"method not allowed\n", [(b"allow", allowed.encode())]) from None
        except NotFound:
            raise self._page(
                404, "message.html", None, title="Not found", text="There is no such page."
            ) from None
        if endpoint == "static":
            return self._static_file(arguments["name"])
        cookies = parse_cookie(
            b"; ".join(value for name, value in scope["headers"] if name == b"cookie").decode("latin-1")
        )
        client = scope.get("client")
        request = _Request(
            scope["method"],
            scope["path"],
            scope.get("scheme") == "https",
            client[0] if client else None,
            {key: cookies[key] for key in cookies},
        )
        if request.method == "POST":
            request.form = await self._form(scope, receive)
        if endpoint != "login":
            request.token = request.cookies.get(SESSION_COOKIE)
            request.session = self.sessions.get(request.token)
            if request.session is None:
                raise _redirect(url("login"))
            if request.method == "POST" and not same_token(
                request.form.get("csrf_token", [None])[0], request.session.csrf
            ):
                raise self._page(
                    403,
                    "message.html",
                    request,
                    title="Refused",
                    text="This form's security token is missing or out of date. Go back, reload the page "
                    "and send it again.",
                )
        handler: Callable[..., Awaitable[_Done]] = getattr(self, f"_{endpoint}")
        try:
            return await handler(request, **arguments)
        except _Missing as missing:
            return self._page(404, "message.html", request, title="Not found", text=str(missing))
        except StoreUnavailableError:
            return self._page(
                503,
                "message.html",
                request,
                title="Store unavailable",
                text="The store is unavailable; try again.",
            )
        except StoreError:
            return self._page(
                500,
                "message.html",
                request,
                title="Store failure",
                text="The store failed; see the server log.",
            )

    @staticmethod
    async def _form(scope: HTTPScope, receive: ASGIReceiveCallable) -> dict[str, list[str]]:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise _Done(400, b"the client went away\n")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > _MAX_FORM:
                raise _Done(413, b"form too large\n")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        content_type = next((v for n, v in scope["headers"] if n == b"content-type"), b"")
        if content_type.split(b";")[0].strip().lower() != b"application/x-www-form-urlencoded":
            raise _Done(415, b"expected a form (application/x-www-form-urlencoded)\n")
        try:
            return parse_qs(
                b"".join(chunks).decode("utf-8"),
                keep_blank_values=True,
                strict_parsing=False,
                max_num_fields=200,
            )
        except (UnicodeDecodeError, ValueError):
            raise _Done(400, b"malformed form\n") from None

    def _static_file(self, name: str) -> _Done:
        if name not in _STATIC:
            raise _Done(404, b"not found\n")
        return _Done(
            200,
            self._static[name],
            [(b"content-type", _STATIC[name].encode()), (b"cache-control", b"max-age=3600")],
        )

    def _page(
        self,
        status: int,
        template: str,
        request: _Request | None,
        headers: Sequence[tuple[bytes, bytes]] = (),
        **context: Any,
    ) -> _Done:
        session = request.session if request is not None else None
        flash = None
        if session is not None:
            flash, session.flash = session.flash, None
        html = self._templates.get_template(template).render(
            sections=SECTIONS.values(),
            session=session,
            flash=flash,
            url=url,
            current=request.path if request is not None else "",
            **context,
        )
        return _Done(status, html.encode(), [(b"content-type", b"text/html; charset=utf-8"), *headers])

    @staticmethod
    def _done(request: _Request, message: str, location: str) -> _Done:
        assert request.session is not None  # noqa: S101 - every handler after sign-in has one
        request.session.flash = message
        return _redirect(location)

    def _cookie(self, request: _Request, name: str, value: str, max_age: int) -> tuple[bytes, bytes]:
        text = dump_cookie(
            name,
            value,
            max_age=max_age,
            path=PREFIX + "/",
            secure=request.secure,
            httponly=True,
            samesite="Strict",
        )
        return (b"set-cookie", text.encode("latin-1"))

    async def _resource(self, kind: str, key: str) -> Resource:
        found = await self.admin.get_resource(kind, key)
        if found is None:
            raise _Missing(f"There is no {kind[:-1]} {key!r}.")
        return found

    async def _choices(self) -> dict[str, list[str]]:
        services, consumers, groups = await asyncio.gather(
            self.admin.list_resources("services"),
            self.admin.list_resources("consumers"),
            self.admin.list_resources("consumer_groups"),
        )
        return {
            "services": [r.key for r in services],
            "consumers": [r.key for r in consumers],
            "consumer_groups": [r.key for r in groups],
        }

    # -- sign-in -------------------------------------------------------------------------------------

    async def _home(self, request: _Request) -> _Done:
        return _redirect(url(next(iter(SECTIONS)), ""))

    async def _login(self, request: _Request) -> _Done:
        if request.method != "POST":
            if self.sessions.get(request.cookies.get(SESSION_COOKIE)) is not None:
                return _redirect(url(""))
            return self._sign_in_page(request, 200)
        if not same_token(
            request.value("csrf_token") or None, request.cookies.get(SIGN_IN_COOKIE, "") or "\0"
        ):
            return self._sign_in_page(
                request, 403, "This form's security token is missing or out of date; try again."
            )
        wait = self.limiter.retry_after(request.client)
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            return self._sign_in_page(
                request,
                429,
                f"Too many wrong keys from your address: try again in {seconds} s.",
                [(b"retry-after", str(seconds).encode())],
            )
        if not self.admin.is_admin_key(request.value("admin_key").encode()):
            self.limiter.failed(request.client)
            return self._sign_in_page(request, 401, "That is not the admin key.")
        self.sessions.end(request.cookies.get(SESSION_COOKIE))
        token, _session = self.sessions.start()
        return _redirect(
            url(""),
            [
                self._cookie(request, SESSION_COOKIE, token, max_age=12 * 3600),
                self._cookie(request, SIGN_IN_COOKIE, "", max_age=0),
            ],
        )

    def _sign_in_page(
        self, request: _Request, status: int, error: str = "", headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> _Done:
        token = secrets.token_urlsafe(32)
        return self._page(
            status,
            "login.html",
            None,
            [*headers, self._cookie(request, SIGN_IN_COOKIE, token, max_age=3600)],
            sign_in_token=token,
            error=error,
        )

    async def _logout(self, request: _Request) -> _Done:
        self.sessions.end(request.token)
        return _redirect(url("login"), [self._cookie(request, SESSION_COOKIE, "", max_age=0)])

    # -- services, routes, consumers -------------------------------------------------------------------

    async def _listing(self, request: _Request, kind: str) -> _Done:
        found = await self.admin.list_resources(kind)
        logins: dict[str, list[str]] = {}
        members: dict[str, int] = {}
        if kind == "consumer_groups":
            for consumer in await self.admin.list_resources("consumers"):
                group = consumer.document.get("group_id")
                if isinstance(group, str):
                    members[group] = members.get(group, 0) + 1
        if kind == "consumers":
            for resource in found:
                own = _login_of(resource.document)
                logins[resource.key] = [own] if own else []
            for credential in await self.admin.list_resources("credentials"):
                owner = credential.key.partition("/")[0]
                login = _login_of(credential.document)
                if login:
                    logins.setdefault(owner, []).append(login)
        return self._page(
            200, "list.html", request, section=SECTIONS[kind], resources=found, logins=logins, members=members
        )

    async def _create(self, request: _Request, kind: str) -> _Done:
        section = SECTIONS[kind]
        choices = await self._choices()
        if request.method != "POST":
            return await self._edit_page(request, section, None, section.form.shown(None), choices)
        key = request.value(section.key_field).strip()
        values = {**request.form, section.key_field: [key]}
        errors: dict[str, str] = {}
        if not key:
            errors[section.key_field] = f"{section.key_field}: required"
        elif await self.admin.get_resource(kind, key) is not None:
            errors[section.key_field] = f"{section.key_field}: a {section.singular} {key!r} exists already"
        if errors:
            return await self._edit_page(
                request, section, None, section.form.posted(values), choices, errors, status=400
            )
        return await self._save(request, section, key, None, values, choices)

    async def _edit(self, request: _Request, kind: str, key: str) -> _Done:
        section = SECTIONS[kind]
        resource = await self._resource(kind, key)
        choices = await self._choices()
        if request.method != "POST":
            return await self._edit_page(
                request, section, resource, section.form.shown(resource.document), choices
            )
        values = {**request.form, section.key_field: [key]}
        return await self._save(request, section, key, resource, values, choices)

    async def _save(
        self,
        request: _Request,
        section: Section,
        key: str,
        resource: Resource | None,
        values: Mapping[str, list[str]],
        choices: dict[str, list[str]],
    ) -> _Done:
        try:
            document = section.form.apply(values, resource.document if resource is not None else None)
            if section.kind == "consumers":
                document = _without_empty_basic_auth(document, bool(request.value("password")))
            _, created = await self.admin.put_resource(section.kind, key, document)
        except (ConfigError, FormError) as raised:
            error = raised.error if isinstance(raised, FormError) else raised
            errors, general = errors_by_field(error, section.form, within=f"{section.kind}/{key}")
            return await self._edit_page(
                request, section, resource, section.form.posted(values), choices, errors, general, status=400
            )
        verb = "created" if created else "saved"
        return self._done(request, f"The {section.singular} {key!r} is {verb}.", url(section.kind, key))

    async def _edit_page(
        self,
        request: _Request,
        section: Section,
        resource: Resource | None,
        values: Mapping[str, Any],
        choices: dict[str, list[str]],
        errors: Mapping[str, str] | None = None,
        general: Sequence[str] = (),
        *,
        status: int = 200,
    ) -> _Done:
        details = await self._detail_context(section, resource) if resource is not None else {}
        return self._page(
            status,
            "edit.html",
            request,
            section=section,
            resource=resource,
            form=section.form,
            values=values,
            choices=choices,
            errors=errors or {},
            general=general,
            action=url(section.kind, resource.key) if resource is not None else url(section.kind, "new"),
            plugins=PLUGIN_FORMS,
            **details,
        )

    async def _delete(self, request: _Request, kind: str, key: str) -> _Done:
        section = SECTIONS[kind]
        await self._resource(kind, key)
        what = f"the {section.singular} {key!r}" + (" with its credentials" if kind == "consumers" else "")
        if request.method == "POST":
            try:
                await self.admin.delete_resource(kind, key)
            except ConfigError as error:
                return self._confirm(request, what, url(kind, key, "delete"), url(kind, key), str(error), 400)
            return self._done(request, f"Deleted {what}.", url(kind, ""))
        return self._confirm(request, what, url(kind, key, "delete"), url(kind, key))

    def _confirm(
        self, request: _Request, what: str, action: str, back: str, error: str = "", status: int = 200
    ) -> _Done:
        return self._page(status, "confirm.html", request, what=what, action=action, back=back, error=error)

    # -- pages of one route, service or consumer ------------------------------------------------------------

    async def _detail_context(self, section: Section, resource: Resource) -> dict[str, Any]:
        context: dict[str, Any] = {}
        plugins = resource.document.get("plugins")
        context["configured"] = sorted(plugins) if isinstance(plugins, Mapping) else []
        if section.kind == "consumers":
            context["credentials"] = await self.admin.list_resources("credentials", resource.key)
        if section.kind == "consumer_groups":
            context["members"] = [
                consumer.key
                for consumer in await self.admin.list_resources("consumers")
                if consumer.document.get("group_id") == resource.key
            ]
        if section.kind == "routes":
            context["try_it"] = await self._try_it(resource)
        return context

    async def _try_it(self, resource: Resource) -> dict[str, Any] | None:
        """The guide's ``curl`` commands for this route, as ``consumer-auth demo`` prints them."""
        try:
            snapshot = await asyncio.to_thread(self.admin.store.load)
        except (ConfigError, StoreError):
            return None
        route = next((r for r in snapshot.routes if r.id == resource.key), None)
        if route is None:
            return None
        service = next((s for s in snapshot.services if s.id == route.service_id), None)
        compiled, paths = compile_route(route, service, 0, Profile.CLASSIC)
        path = paths[0]
        if path.endswith("/*"):
            path = path[:-1]
        hosts = (
            compiled.route.hosts if compiled.route.hosts is not None else (service.hosts if service else None)
        )
        host = hosts[0] if hosts else None
        if host is not None and host.startswith("*."):
            host = "www" + host[1:]
        plugin = next(
            (
                p
                for p in (*route.plugins, *(service.plugins if service else ()))
                if isinstance(p, BasicAuthPlugin)
            ),
            None,
        )
        answer = "the upstream's answer"
        requests: tuple[TryRequest, ...]
        login = None
        if plugin is None:
            requests = (("", "200", answer + " (no authentication on this route)", ""),)
        else:
            login = next(
                (c.credentials[0].username for c in snapshot.consumers if c.credentials),
                None,
            )
            requests = guide_requests(login or "USERNAME", "PASSWORD", plugin.realm or ".", answer)
            if plugin.anonymous_consumer is not None:
                anonymous = f"{answer}, as consumer {plugin.anonymous_consumer!r}"
                requests = tuple(
                    (options, "200", body if status == "200" else anonymous, "")
                    for options, status, body, _header in requests
                )
        return {
            "lines": curl_commands(self.gateway_url, host, path, requests),
            "login": login,
            "authenticated": plugin is not None,
        }

    # -- plugins of a route or a service -----------------------------------------------------------------

    async def _add_plugin(self, request: _Request, kind: str, key: str) -> _Done:
        resource = await self._resource(kind, key)
        plugins = resource.document.get("plugins")
        configured = sorted(plugins) if isinstance(plugins, Mapping) else []
        categories: dict[str, list[Any]] = {}
        for plugin in PLUGIN_FORMS.values():
            if SECTIONS[kind].authentication or not plugin.authenticates:
                categories.setdefault(plugin.category, []).append(plugin)
        return self._page(
            200,
            "add_plugin.html",
            request,
            section=SECTIONS[kind],
            resource=resource,
            categories=categories,
            configured=configured,
        )

    def _plugin_form(self, plugin: str, section: Section) -> Any:
        found = PLUGIN_FORMS.get(plugin)
        if found is None:
            raise _Missing(f"The console has no form for {plugin!r}.")
        if found.authenticates and not section.authentication:
            raise _Missing(
                f"A {section.singular}'s plugins run after authentication: {found.title} cannot be one."
            )
        return found

    async def _plugin(self, request: _Request, kind: str, key: str, plugin: str) -> _Done:
        section = SECTIONS[kind]
        chosen = self._plugin_form(plugin, section)
        resource = await self._resource(kind, key)
        choices = await self._choices()
        values: Mapping[str, Any] = chosen.form.shown(resource.document)
        errors: Mapping[str, str] = {}
        general: list[str] = []
        status = 200
        if request.method == "POST":
            document = dict(resource.document)
            plugins = document["plugins"] = dict(document.get("plugins") or {})
            plugins[plugin] = dict(plugins.get(plugin) or {})
            try:
                document = chosen.form.apply(request.form, document)
                await self.admin.put_resource(kind, key, document)
            except (ConfigError, FormError) as raised:
                error = raised.error if isinstance(raised, FormError) else raised
                errors, general = errors_by_field(error, chosen.form, within=f"{kind}/{key}")
                values, status = chosen.form.posted(request.form), 400
            else:
                return self._done(
                    request, f"{chosen.title} is saved on the {section.singular} {key!r}.", url(kind, key)
                )
        return self._page(
            status,
            "plugin.html",
            request,
            section=section,
            resource=resource,
            plugin=chosen,
            form=chosen.form,
            values=values,
            choices=choices,
            errors=errors,
            general=general,
            action=url(kind, key, "plugins", plugin),
            exists=plugin in (resource.document.get("plugins") or {}),
        )

    async def _plugin_delete(self, request: _Request, kind: str, key: str, plugin: str) -> _Done:
        section = SECTIONS[kind]
        chosen = self._plugin_form(plugin, section)
        resource = await self._resource(kind, key)
        what = f"{chosen.title} of the {section.singular} {key!r}"
        action, back = url(kind, key, "plugins", plugin, "delete"), url(kind, key)
        if request.method == "POST":
            document = dict(resource.document)
            plugins = dict(document.get("plugins") or {})
            plugins.pop(plugin, None)
            document["plugins"] = plugins
            if not plugins:
                del document["plugins"]
            try:
                await self.admin.put_resource(kind, key, document)
            except ConfigError as error:
                return self._confirm(request, what, action, back, str(error), 400)
            return self._done(request, f"Removed {what}.", back)
        return self._confirm(request, what, action, back)

    # -- credentials of a consumer -----------------------------------------------------------------------

    async def _credential_create(self, request: _Request, key: str) -> _Done:
        consumer = await self._resource("consumers", key)
        if request.method != "POST":
            return self._credential_page(request, consumer, None, CREDENTIAL.shown(None))
        ident = request.value("id").strip()
        values = {**request.form, "id": [ident]}
        if ident and await self.admin.get_resource("credentials", f"{key}/{ident}") is not None:
            errors = {"id": f"id: the consumer {key!r} has a credential {ident!r} already"}
            return self._credential_page(
                request, consumer, None, CREDENTIAL.posted(values), errors, status=400
            )
        return await self._credential_save(request, consumer, ident, None, values)

    async def _credential(self, request: _Request, key: str, ident: str) -> _Done:
        consumer = await self._resource("consumers", key)
        credential = await self._resource("credentials", f"{key}/{ident}")
        if request.method != "POST":
            return self._credential_page(request, consumer, credential, CREDENTIAL.shown(credential.document))
        values = {**request.form, "id": [ident]}
        return await self._credential_save(request, consumer, ident, credential, values)

    async def _credential_save(
        self,
        request: _Request,
        consumer: Resource,
        ident: str,
        credential: Resource | None,
        values: Mapping[str, list[str]],
    ) -> _Done:
        within = f"consumers/{consumer.key}/credentials/{ident}"
        try:
            document = CREDENTIAL.apply(values, credential.document if credential is not None else None)
            document = _without_empty_basic_auth(document, bool(request.value("password")))
            _, created = await self.admin.put_resource("credentials", f"{consumer.key}/{ident}", document)
        except (ConfigError, FormError) as raised:
            error = raised.error if isinstance(raised, FormError) else raised
            errors, general = errors_by_field(error, CREDENTIAL, within=within)
            return self._credential_page(
                request, consumer, credential, CREDENTIAL.posted(values), errors, general, status=400
            )
        verb = "added" if created else "saved"
        return self._done(
            request,
            f"The credential {ident!r} of {consumer.key!r} is {verb}.",
            url("consumers", consumer.key),
        )

    def _credential_page(
        self,
        request: _Request,
        consumer: Resource,
        credential: Resource | None,
        values: Mapping[str, Any],
        errors: Mapping[str, str] | None = None,
        general: Sequence[str] = (),
        *,
        status: int = 200,
    ) -> _Done:
        ident = credential.key.partition("/")[2] if credential is not None else None
        return self._page(
            status,
            "credential.html",
            request,
            consumer=consumer,
            credential=credential,
            ident=ident,
            form=CREDENTIAL,
            values=values,
            choices={},
            errors=errors or {},
            general=general,
            action=url("consumers", consumer.key, "credentials", ident or "new"),
        )

    async def _credential_delete(self, request: _Request, key: str, ident: str) -> _Done:
        await self._resource("credentials", f"{key}/{ident}")
        what = f"the credential {ident!r} of the consumer {key!r}"
        action, back = url("consumers", key, "credentials", ident, "delete"), url("consumers", key)
        if request.method == "POST":
            try:
                await self.admin.delete_resource("credentials", f"{key}/{ident}")
            except ConfigError as error:
                return self._confirm(request, what, action, back, str(error), 400)
            return self._done(request, f"Deleted {what}.", back)
        return self._confirm(request, what, action, back)


def _environment() -> Environment:
    try:
        from jinja2 import Environment, PackageLoader, StrictUndefined
    except ModuleNotFoundError as error:  # pragma: no cover - the server extra installs it
        raise ModuleNotFoundError(
            "the console needs Jinja2: pip install 'consumer-auth[server]'", name=error.name
        ) from None
    environment = Environment(
        loader=PackageLoader("consumer_auth.console", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.globals["form_methods"] = METHODS
    return environment
