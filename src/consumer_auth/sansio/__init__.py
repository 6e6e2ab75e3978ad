"""The sans-IO core: request facts in, a decision out — no sockets, no event loop, no framework.

Modules here (and the core modules they build on: :mod:`~consumer_auth.decision`,
:mod:`~consumer_auth.credentials`, :mod:`~consumer_auth.passwords`, :mod:`~consumer_auth.consumers`,
:mod:`~consumer_auth.routing`, :mod:`~consumer_auth.plugins`) never import an adapter, a proxy, a store,
a server or the CLI; ``tests/test_layers.py`` walks the imports to keep it so.

- :mod:`.plugin`: the plugin interface (name, priority, schema, phases) and the registry;
- :mod:`.pipeline`: a route's plugins compiled into one ordered pipeline, and its run;
- :mod:`.gateway`: match a route, run its pipeline, return the decision;
- :mod:`.log`: the decision log.
"""
