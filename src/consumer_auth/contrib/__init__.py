"""Framework integrations, each imported only by its own dotted path.

``consumer_auth.contrib.flask``, ``consumer_auth.contrib.django``, ``consumer_auth.contrib.starlette`` and
``consumer_auth.contrib.fastapi`` translate between a framework and the core; none of them holds auth
policy. Importing ``consumer_auth`` never imports a framework.
"""
