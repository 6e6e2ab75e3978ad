"""The README's two-line wrap, for FastAPI: every path behind HTTP Basic, with nothing else to set up.

``protect`` returns a new ASGI app (the middleware) around ``app``: keep ``app`` for FastAPI's own API
(``@app.get``) and serve ``application``::

    uvicorn protect_app:application --app-dir examples/fastapi

``make test`` type-checks this file with ``mypy --strict`` and sends it the guide's requests.
"""

from __future__ import annotations

from fastapi import FastAPI

from consumer_auth import BasicAuthPlugin, Consumer, Gateway, Route, protect

app = FastAPI(title="consumer_auth protect() example")


@app.get("/v1/json")
async def json_document() -> dict[str, str]:
    """Reached only with alex's credentials."""
    return {"title": "Sample Slide Show"}


application = protect(app, consumers=[Consumer("alex", password="123456")])  # serve `application`

# The same with a gateway of your own (routes, services, several plugins): `gateway.asgi(app)`.
gateway = Gateway(
    consumers=[Consumer("alex", password="123456")],
    routes=[Route("/v1/*", plugins=[BasicAuthPlugin()])],
)
guarded = gateway.asgi(FastAPI())
