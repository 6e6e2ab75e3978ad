"""Django admin's consumer pages in a real Chromium (Playwright on the system's browser): sign in, list,
open a consumer, and the screenshots of ``docs/django.md``; no page the browser received holds a hash."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from django.contrib.auth.models import User
from django.test import override_settings

from browser import screenshot
from consumer_auth.contrib.django.conf import conf
from consumer_auth.contrib.django.models import BasicAuthCredential, Consumer
from consumer_auth.passwords import apr1_hash
from django_db import sqlite_db  # noqa: F401 - the fixture
from proxy_servers import WSGIServer
from test_django_admin_store import MIDDLEWARE, store_setting

if TYPE_CHECKING:
    from playwright.sync_api import Page


@pytest.fixture(autouse=True, scope="module")
def _orm_beside_playwright() -> Iterator[None]:
    """Playwright's sync API keeps an event loop in this thread, which Django's ORM takes for an async
    context; the ORM calls of this module are plain synchronous test code (Django's documented switch)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        yield


def test_the_admin_in_chromium_and_its_screenshot(sqlite_db: str, page: Page) -> None:  # noqa: F811
    from django.contrib.staticfiles.handlers import StaticFilesHandler
    from django.core.handlers.wsgi import WSGIHandler

    alex = Consumer.objects.create(
        name="alex", custom_id="c-42", labels={"team": "billing"}, desc="The guide's consumer"
    )
    for ident, username in (("alex-1", "alex"), ("alex-2024", "alex-rotated")):
        login = BasicAuthCredential(consumer=alex, ident=ident, username=username)
        login.set_password("123456")
        login.save()
    BasicAuthCredential.objects.create(
        consumer=alex, ident="legacy", username="alex-old", password_hash=apr1_hash("x")
    )
    jack = Consumer.objects.create(name="jack", custom_id="c-7")
    jack_login = BasicAuthCredential(consumer=jack, ident="jack-1", username="jack2019")
    jack_login.set_password("654321")
    jack_login.save()
    Consumer.objects.create(name="guest", desc="anonymous_consumer of the public routes")
    User.objects.filter(username="admin").delete()
    User.objects.create_superuser("admin", password="admin-password-for-the-test")
    # A fixed "modified" (update() leaves auto_now alone), so that the screenshots change only with the pages.
    Consumer.objects.update(modified=datetime.datetime(2026, 1, 5, 9, 30, tzinfo=datetime.UTC))
    hashes = list(BasicAuthCredential.objects.values_list("password_hash", flat=True))
    with override_settings(
        ROOT_URLCONF="test_django_admin_store", MIDDLEWARE=MIDDLEWARE, CONSUMER_AUTH=store_setting(60)
    ):
        server = WSGIServer(StaticFilesHandler(WSGIHandler()))
        try:
            base = f"http://127.0.0.1:{server.port}"
            page.goto(f"{base}/admin/login/?next=/admin/consumer_auth/consumer/")
            page.fill("#id_username", "admin")
            page.fill("#id_password", "admin-password-for-the-test")
            page.click("input[type=submit]")
            page.wait_for_selector("#result_list")
            assert page.locator("#result_list tbody tr").count() == 3
            screenshot(page, "django-admin-consumers", folder="images")
            shown = [page.content()]
            page.click("text=alex")
            page.wait_for_selector("#credentials-group")
            assert page.locator("#credentials-group tbody tr.has_original").count() == 3
            shot = screenshot(page, "django-admin-consumer", folder="images")
            shown.append(page.content())
            page.goto(f"{base}/admin/consumer_auth/basicauthcredential/")
            shown.append(page.content())
            for html in shown:
                assert "$argon2" not in html
                assert "$apr1$" not in html
                for stored in hashes:
                    assert stored not in html
            assert '<span class="password-format">argon2id</span>' in shown[1]
        finally:
            server.stop()
            conf.reset()
    assert shot.stat().st_size > 10_000  # docs/images/ with make screenshots, else a temporary folder
