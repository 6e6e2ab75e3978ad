"""A real browser for tests: headless Chromium from the system's packages, driven by Playwright.

Playwright's own browser download cannot work on machines without a network, so the browser is the
system's Chromium (Debian's ``chromium`` package; ``make test`` installs it when it is missing). Without
Playwright or Chromium the tests that use :func:`page` skip with the reason, and fail instead under
``CONSUMER_AUTH_REQUIRE_SERVICES=1`` (CI), as the PostgreSQL and Redis tests do.

``conftest.py`` registers this module as a pytest plugin, so any test can ask for ``page``: one browser
per test module, a fresh context (cookies, storage) and page per test.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from support import service_unavailable

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page, ViewportSize

__all__ = ["CHROMIUM", "DOCS", "UPDATE_ENV", "BrowserLog", "browser", "log_of", "page", "screenshot"]

CHROMIUM = Path(os.environ.get("CONSUMER_AUTH_CHROMIUM", "/usr/bin/chromium"))
"""The browser executable (override with ``CONSUMER_AUTH_CHROMIUM``)."""

DOCS = Path(__file__).resolve().parent.parent / "docs"

VIEWPORT: ViewportSize = {"width": 1280, "height": 800}


@dataclass
class BrowserLog:
    """What the page reported while a test ran: console messages and failed requests."""

    messages: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def policy_violations(self) -> list[str]:
        """Messages about something the Content-Security-Policy blocked."""
        return [m for m in self.messages if "Content Security Policy" in m or "Refused to" in m]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless system Chromium for the whole test module."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        service_unavailable("Playwright", "pip install playwright (in the dev extra)")
    if not CHROMIUM.exists():
        service_unavailable("Chromium", f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        except Error as error:
            service_unavailable("Chromium", f"{CHROMIUM} did not start: {str(error).splitlines()[0]}")
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A page in a fresh browser context (no cookies); ``page.log`` is its :class:`BrowserLog`."""
    context = browser.new_context(viewport=VIEWPORT, locale="en-US")
    opened = context.new_page()
    log = BrowserLog()

    def on_console(message: ConsoleMessage) -> None:
        log.messages.append(f"{message.type}: {message.text}")

    opened.on("console", on_console)
    opened.on("requestfailed", lambda request: log.failed.append(request.url))
    opened.log = log  # type: ignore[attr-defined]
    opened.set_default_timeout(30_000)
    try:
        yield opened
    finally:
        context.close()


def log_of(page: Page) -> BrowserLog:
    """The :class:`BrowserLog` of a page made by the :func:`page` fixture."""
    log: BrowserLog = page.log  # type: ignore[attr-defined]
    return log


UPDATE_ENV = "CONSUMER_AUTH_UPDATE_SCREENSHOTS"
"""Set to ``1`` (``make screenshots``) to write screenshots into ``docs/``; otherwise they go to a temporary
folder, so that running the tests leaves the work tree as it was."""


def screenshot(page: Page, name: str, folder: str = "console") -> Path:
    """Take a full-page screenshot ``<folder>/<name>.png``: under ``docs/`` with
    ``CONSUMER_AUTH_UPDATE_SCREENSHOTS=1``, else in a temporary folder. Returns its path."""
    root = (
        DOCS
        if os.environ.get(UPDATE_ENV) == "1"
        else Path(tempfile.gettempdir()) / "consumer-auth-screenshots"
    )
    target = root / folder / f"{name}.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target), full_page=True, animations="disabled", caret="hide")
    return target
