"""The guide's scenario in FastAPI: consumer alex/123456, and GET /v1/json behind basic-auth.

Run it with ``uvicorn main:app --app-dir examples/fastapi`` (see README.md); ``/docs`` shows the lock
on both endpoints, and its "Authorize" button takes alex's credentials.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI

from consumer_auth import Consumer
from consumer_auth.contrib.fastapi import install, require_consumer

GATEWAY: dict[str, Any] = {
    "consumers": [
        {"username": "alex", "plugins": {"basic-auth": {"username": "alex", "password": "123456"}}},
    ],
    # The app serves /v1/json itself, and paths without a route (/docs, /v1/whoami) reach it too.
    "services": [{"id": "basic-auth-app", "path_prefix": "/v1", "strip_path_prefix": False}],
    "routes": [
        {
            "id": "json",
            "service_id": "basic-auth-app",
            "uri": "/json",
            "methods": ["GET", "HEAD"],  # HEAD: implied by GET with "unmatched: pass"; listed to say so
            "plugins": {"basic-auth": {"hide_credentials": False}},
        }
    ],
    "unmatched": "pass",
}

app = FastAPI(title="consumer_auth example")
install(app, GATEWAY)

SLIDESHOW: dict[str, Any] = {
    "slideshow": {
        "author": "Yours Truly",
        "date": "date of publication",
        "slides": [
            {"title": "Wake up to WonderWidgets!", "type": "all"},
            {
                "items": ["Why <em>WonderWidgets</em> are great", "Who <em>buys</em> WonderWidgets"],
                "title": "Overview",
                "type": "all",
            },
        ],
        "title": "Sample Slide Show",
    }
}


@app.get("/v1/json")
async def json_document(consumer: Annotated[Consumer, Depends(require_consumer)]) -> dict[str, Any]:
    """The guide's route: the gateway authenticated the request; the dependency hands over the consumer."""
    return SLIDESHOW


@app.get("/v1/whoami")
async def whoami(consumer: Annotated[Consumer, Depends(require_consumer)]) -> dict[str, str]:
    """No gateway route covers this path: the dependency authenticates the request itself."""
    return {"consumer": consumer.username}
