"""Django integration: an installable app with a sync- and async-capable middleware.

Add the app and the middleware, and configure the gateway in settings::

    INSTALLED_APPS = [..., "consumer_auth.contrib.django"]
    MIDDLEWARE = [
        "django.middleware.security.SecurityMiddleware",
        "consumer_auth.contrib.django.middleware.ConsumerAuthMiddleware",
        ...,
    ]
    CONSUMER_AUTH = BASE_DIR / "gateway.yaml"   # or a configuration mapping, or a Gateway

Then ``request.consumer`` is the authenticated :class:`~consumer_auth.Consumer` (or ``None``), and
``consumer_auth.contrib.django.decorators.consumer_required`` guards single views. ``manage.py check``
reports a bad configuration under the ids ``consumer_auth.E001`` ... (see :mod:`.checks`).
"""
