"""The guide's scenario in Flask: consumer alex/123456, and GET /v1/json behind basic-auth.

Run it with ``flask --app examples/flask/app.py run`` (see README.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask

from consumer_auth.contrib.flask import ConsumerAuth, current_consumer

app = Flask(__name__)
app.config["CONSUMER_AUTH"] = Path(__file__).with_name("gateway.yaml")
auth = ConsumerAuth(app)

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
def json_document() -> dict[str, Any]:
    """The guide's route: the gateway's ``json`` route lets only consumers reach this view."""
    return SLIDESHOW


@app.get("/v1/whoami")
@auth.required
def whoami() -> dict[str, str]:
    """A view guarded by itself (no gateway route covers it)."""
    return {"consumer": current_consumer.username}
