"""The console in a real browser: the guide end to end by clicks, against real ``consumer-auth admin``
and ``consumer-auth serve`` processes following one SQLite store; its security in the same browser.

The screenshots of ``docs/console.md`` are taken here.
"""

from __future__ import annotations

import asyncio
import re
import shlex
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from browser import log_of, screenshot
from consumer_auth import _demo
from consumer_auth.console import CONTENT_SECURITY_POLICY
from consumer_auth.store import SQLStore
from proxy_servers import CONSUMER_AUTH, Process

if TYPE_CHECKING:
    from playwright._impl._api_structures import SetCookieParam
    from playwright.sync_api import Page, Response, Route

KEY = "console-admin-key"
PASSWORD = "123456"


@contextmanager
def httpbin_stand_in() -> Iterator[str]:
    """The demo's stand-in for httpbin (``/json``), on its own event loop in a thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    stand_in, url = asyncio.run_coroutine_threadsafe(_demo.stand_in_upstream(), loop).result(30)
    try:
        yield url
    finally:
        asyncio.run_coroutine_threadsafe(stand_in.aclose(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


@dataclass
class Setup:
    console: str
    gateway: str
    upstream: str
    store: str
    serve: Process


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """``serve --store`` and ``admin --store`` (the console) on one SQLite file, and the upstream."""
    store = f"sqlite:///{tmp_path_factory.mktemp('console') / 'consumers.db'}"
    created = SQLStore(store)  # an empty store, as `admin` makes it: `serve` never starts one itself
    created.revision()
    created.close()
    with httpbin_stand_in() as upstream:
        serve = Process([CONSUMER_AUTH, "serve", "--store", store, "--port", "0", "--no-access-log"])
        try:
            gateway = f"http://127.0.0.1:{serve.uvicorn_port()}"
            admin = Process(
                [CONSUMER_AUTH, "admin", "--store", store, "--port", "0", "--gateway-url", gateway],
                env={"CONSUMER_AUTH_ADMIN_KEY": KEY},
            )
            try:
                yield Setup(f"http://127.0.0.1:{admin.uvicorn_port()}/ui/", gateway, upstream, store, serve)
            finally:
                admin.kill()
        finally:
            serve.kill()


def sign_in(page: Page, setup: Setup, key: str = KEY) -> Response | None:
    page.goto(setup.console)
    page.get_by_label("Admin key", exact=True).fill(key)
    with page.expect_navigation() as navigation:
        page.get_by_role("button", name="Sign in").click()
    return navigation.value


def record_pages(page: Page) -> list[tuple[str, str]]:
    """Pass every request of the page through, keeping the URL and text of each HTML answer."""
    pages: list[tuple[str, str]] = []

    def through(route: Route) -> None:
        answer = route.fetch(max_redirects=0)
        if answer.headers.get("content-type", "").startswith("text/html"):
            pages.append((route.request.url, answer.text()))
        route.fulfill(response=answer)

    page.route("**/*", through)
    return pages


def expected_answers(try_it: str, gateway: str) -> list[tuple[list[str], int, bytes, str]]:
    """The route page's "Try it" block as (curl arguments, status, body, header) rows."""
    lines = try_it.strip().splitlines()
    rows = []
    for command, answer in zip(lines[::2], lines[1::2], strict=True):
        match = re.fullmatch(r"\s*=> (\d{3}) (.*?)(?:  \((.*)\))?", answer)
        assert match, answer
        status, body, header = match.groups()
        expected = _demo.SLIDESHOW if body == "the upstream's answer" else (body + "\n").encode()
        rows.append((shlex.split(command.replace("PASSWORD", PASSWORD)), int(status), expected, header or ""))
        assert gateway in command, command
    return rows


def run_curl(arguments: list[str]) -> httpx.Response:
    """What ``curl -i -H ... -u ... URL`` sends, sent with httpx."""
    assert arguments[:2] == ["curl", "-i"], arguments
    headers: dict[str, str] = {}
    auth: tuple[str, str] | None = None
    rest = arguments[2:]
    while len(rest) > 1:
        option, value, rest = rest[0], rest[1], rest[2:]
        if option == "-H":
            name, _, header = value.partition(": ")
            headers[name] = header
        elif option == "-u":
            user, _, secret = value.partition(":")
            auth = (user, secret)
        else:
            raise AssertionError(f"unexpected curl option {option}")
    return httpx.get(rest[0], headers=headers, auth=auth, timeout=30)


def test_the_guide_by_clicks_then_serve_answers_its_curl_commands(page: Page, setup: Setup) -> None:
    pages = record_pages(page)

    page.goto(setup.console)
    assert page.url.endswith("/ui/login")
    screenshot(page, "sign-in")
    sign_in(page, setup)
    assert page.url.endswith("/ui/services/")

    # Service basic-auth-app: prefix /v1, host example.com, the upstream.
    page.get_by_role("link", name="Create service").click()
    page.get_by_label("ID", exact=True).fill("basic-auth-app")
    page.get_by_label("Name", exact=True).fill("basic-auth-app")
    page.get_by_label("Path prefix", exact=True).fill("/v1")
    page.get_by_label("Hosts", exact=True).fill("example.com")
    page.get_by_label("Upstream", exact=True).fill(setup.upstream)
    screenshot(page, "service-new")
    page.get_by_role("button", name="Create").click()
    page.get_by_text("The service 'basic-auth-app' is created.").wait_for()

    # Route json: GET /json in that service.
    page.get_by_role("navigation").get_by_role("link", name="Routes").click()
    page.get_by_role("link", name="Create route").click()
    page.get_by_label("ID", exact=True).fill("json")
    page.get_by_label("Name", exact=True).fill("json")
    page.get_by_label("Path", exact=True).fill("/json")
    page.get_by_label("GET", exact=True).check()
    page.get_by_label("Service", exact=True).select_option("basic-auth-app")
    page.get_by_role("button", name="Create").click()
    page.get_by_text("The route 'json' is created.").wait_for()

    # Add Plugin → Authentication → Basic Auth, StripCredentials left unchecked as in the guide.
    page.get_by_role("link", name="Add plugin").click()
    screenshot(page, "add-plugin")
    page.get_by_role("link", name="Basic Auth").click()
    assert not page.get_by_label("StripCredentials", exact=True).is_checked()
    screenshot(page, "basic-auth")
    page.get_by_role("button", name="Add Basic Auth").click()
    page.get_by_text("Basic Auth is saved on the route 'json'.").wait_for()

    # Consumer alex with basic-auth alex / 123456.
    page.get_by_role("navigation").get_by_role("link", name="Consumers").click()
    page.get_by_role("link", name="Create consumer").click()
    page.get_by_label("Username", exact=True).fill("alex")
    page.get_by_label("Basic Auth username", exact=True).fill("alex")
    page.get_by_label("Basic Auth password", exact=True).fill(PASSWORD)
    last_click = time.time()
    page.get_by_role("button", name="Create").click()
    page.get_by_text("The consumer 'alex' is created.").wait_for()
    answered = time.time()  # the page after the write: the store has it
    assert page.get_by_label("Basic Auth password", exact=True).input_value() == ""
    screenshot(page, "consumer")

    # The route page prints the guide's curl commands; the gateway answers each exactly.
    page.goto(setup.console + "routes/json")
    try_it = page.locator("#try-it").inner_text()
    screenshot(page, "route")
    rows = expected_answers(try_it, setup.gateway)
    assert [status for _, status, _, _ in rows] == [401, 200, 401, 401]
    # serve logs (with its clock, to the millisecond) when it puts a new store revision in force.
    line = setup.serve.wait_for(r"^(\S+ \S+) INFO .* in force \(1 consumer,", setup.serve.stderr).group(1)
    in_force = datetime.strptime(line, "%Y-%m-%d %H:%M:%S,%f").timestamp()
    print(
        f"serve put alex in force {in_force - last_click:.2f} s after the last click "
        f"({in_force - answered:+.2f} s from the console's answer)"
    )
    for arguments, status, body, header in rows:
        answer = run_curl(arguments)
        assert (answer.status_code, answer.content) == (status, body), arguments
        if header:
            name, _, value = header.partition(": ")
            assert answer.headers[name] == value
        else:
            assert "www-authenticate" not in answer.headers

    page.get_by_role("navigation").get_by_role("link", name="Services").click()
    screenshot(page, "services")
    page.get_by_role("navigation").get_by_role("link", name="Routes").click()
    screenshot(page, "routes")

    # No page the browser received holds the password or a hash.
    assert len(pages) >= 10
    for address, text in pages:
        assert PASSWORD not in text, address
        assert "$argon2" not in text, address
        assert "password_hash" not in text, address
    assert log_of(page).policy_violations() == []


def test_a_validation_error_is_shown_next_to_its_field_naming_the_config_place(
    page: Page, setup: Setup
) -> None:
    sign_in(page, setup)
    page.goto(setup.console + "routes/new")
    page.get_by_label("ID", exact=True).fill("private")
    page.get_by_label("Path", exact=True).fill("/private")
    page.get_by_role("button", name="Create").click()
    page.get_by_role("link", name="Add plugin").click()
    page.get_by_role("link", name="Basic Auth").click()
    page.get_by_label("StripCredentials", exact=True).check()
    page.get_by_label("Realm", exact=True).fill('my "realm"')
    page.get_by_role("button", name="Add Basic Auth").click()

    field = page.locator('.field[data-path="plugins.basic-auth.realm"]')
    assert field.locator(".error").inner_text() == (
        "plugins.basic-auth.realm: expected 1-128 printable ASCII characters without '\"' or '\\', "
        "got 'my \"realm\"'"
    )
    assert page.get_by_label("Realm", exact=True).input_value() == 'my "realm"'  # what was typed stays
    assert page.get_by_label("StripCredentials", exact=True).is_checked()
    screenshot(page, "validation-error")
    listed = httpx.get(
        setup.console.replace("/ui/", "/apisix/admin/routes/private"), headers={"X-API-KEY": KEY}, timeout=30
    ).json()
    assert "plugins" not in listed["value"]  # nothing was saved

    # A refused consumer form does not send the typed password back.
    page.goto(setup.console + "consumers/new")
    page.get_by_label("Username", exact=True).fill("jack")
    page.get_by_label("Labels", exact=True).fill("not a label")
    page.get_by_label("Basic Auth username", exact=True).fill("jack")
    page.get_by_label("Basic Auth password", exact=True).fill("typed-Secret-42")
    page.get_by_role("button", name="Create").click()
    assert page.locator('.field[data-path="labels"] .error').inner_text().startswith("labels: expected")
    assert "typed-Secret-42" not in page.content()


def test_a_form_without_its_csrf_token_is_refused(page: Page, setup: Setup) -> None:
    sign_in(page, setup)
    page.goto(setup.console + "consumers/new")
    action = setup.console + "consumers/new"
    token = page.locator('input[name="csrf_token"]').first.input_value()
    forms: list[dict[str, str | float | bool]] = [
        {"username": "mallory"},
        {"username": "mallory", "csrf_token": token[::-1]},
    ]
    for form in forms:
        refused = page.request.post(action, form=form, max_redirects=0)
        assert refused.status == 403
        assert "security token" in refused.text()
    assert (
        httpx.get(
            setup.console.replace("/ui/", "/apisix/admin/consumers/mallory"),
            headers={"X-API-KEY": KEY},
            timeout=30,
        ).status_code
        == 404
    )
    accepted = page.request.post(action, form={"username": "mallory", "csrf_token": token}, max_redirects=0)
    assert accepted.status == 303


def test_a_wrong_admin_key_does_not_sign_in(page: Page, setup: Setup) -> None:
    answer = sign_in(page, setup, key="not-the-key")
    assert answer is not None
    assert answer.status == 401
    assert page.get_by_role("alert").inner_text() == "That is not the admin key."
    assert page.url.endswith("/ui/login")
    page.goto(setup.console + "services/")
    assert page.url.endswith("/ui/login")


def test_every_page_sends_the_policy_and_works_under_it(page: Page, setup: Setup) -> None:
    first = page.goto(setup.console + "login")
    assert first is not None
    assert first.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert first.headers["x-frame-options"] == "DENY"
    sign_in(page, setup)
    for path in ("services/", "routes/", "consumers/", "services/new", "routes/new"):
        shown = page.goto(setup.console + path)
        assert shown is not None
        assert shown.status == 200
        assert shown.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        # The stylesheet loaded (same origin): the header bar has its colour.
        colour = page.locator("header.top").evaluate("e => getComputedStyle(e).backgroundColor")
        assert colour == "rgb(22, 32, 46)"
    assert log_of(page).policy_violations() == []
    assert log_of(page).failed == []

    # The session cookie is HttpOnly and SameSite=Strict; signing out ends the session.
    cookie = next(c for c in page.context.cookies() if c["name"] == "consumer_auth_console")
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Strict", "/ui/")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/ui/login")
    replayed: SetCookieParam = {
        "name": cookie["name"],
        "value": cookie["value"],
        "domain": cookie["domain"],
        "path": cookie["path"],
    }
    page.context.add_cookies([replayed])  # the old token is refused even if replayed
    page.goto(setup.console + "services/")
    assert page.url.endswith("/ui/login")


def test_the_wheel_ships_the_console_assets(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(tmp_path),
            str(root),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("consumer_auth-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {name for name in names if name.startswith("consumer_auth/console/")}
    templates = root / "src" / "consumer_auth" / "console"
    expected = {
        str(path.relative_to(templates.parent.parent))
        for path in [*templates.glob("templates/*.html"), *templates.glob("static/*")]
    }
    assert expected <= shipped
    assert "consumer_auth/console/static/console.css" in shipped
