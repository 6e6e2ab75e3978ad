"""The sans-IO core: request facts in, a decision out — no sockets, no event loop, no framework.

Nothing here imports an adapter, a proxy, a store, a server or the CLI (only :mod:`consumer_auth.errors`
from outside); ``tests/test_layers.py`` walks every import, ``TYPE_CHECKING`` ones included, to keep it so.
The adapters (:mod:`consumer_auth.wsgi`, :mod:`consumer_auth.asgi`, :mod:`consumer_auth.proxy`) and the
runtime (:class:`consumer_auth.Gateway`, configuration files, stores, servers, the CLI) build on it.

- :mod:`.decision`: the values crossing the boundary — ``RequestFacts`` in; ``Allow``, ``Reject``, ``Pending`` out;
- :mod:`.credentials`: the ``Authorization`` header → credentials, or why not;
- :mod:`.passwords`: verifiers for every stored form, and the verification cache;
- :mod:`.consumers`: consumers, credentials and their index;
- :mod:`.routing`: routes, services, the route index; :mod:`.upstream`: upstream settings (values only);
- :mod:`.plugin`: the plugin interface (name, priority, schema, phases) and the registry;
- :mod:`.plugins`: the built-in plugins, ``basic-auth`` (with its brute-force limits) and
  ``consumer-restriction``; :mod:`.failures`: where failure counts live (the protocol, in memory);
- :mod:`.pipeline`: a route's plugins compiled into one ordered pipeline, and its run;
- :mod:`.gateway`: match a route, run its pipeline, return the decision; :mod:`.log`: the decision log.
"""
