"""Named gateway configurations the conformance table runs against (the SPEC §6 schema)."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

from consumer_auth import Gateway

# The user plugins of docs/plugins.md, importable by their dotted path as a user's own module would be.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples" / "plugins"))

GUIDE: dict[str, Any] = {
    "profile": "classic",
    "consumers": [
        {"username": "alex", "plugins": {"basic-auth": {"username": "alex", "password": "123456"}}},
    ],
    "services": [
        {
            "id": "basic-auth-app",
            "name": "basic-auth-app",
            "path_prefix": "/v1",
            "hosts": ["example.com"],
            "upstream": "http://127.0.0.1:9001",
        }
    ],
    "routes": [
        {
            "id": "json",
            "name": "json",
            "service_id": "basic-auth-app",
            "uri": "/json",
            "methods": ["GET"],
            "plugins": {"basic-auth": {"hide_credentials": False}},
        }
    ],
}


def _with(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    document = copy.deepcopy(base)
    document.update(changes)
    return document


_FOO = [{"username": "foo", "plugins": {"basic-auth": {"username": "foo", "password": "bar"}}}]

# APISIX t/plugin/basic-auth.t: consumer foo/bar, /hello guarded, /echo with hide_credentials on and off.
APISIX_BASIC_AUTH: dict[str, Any] = {
    "consumers": _FOO,
    "routes": [
        {"uri": "/hello", "plugins": {"basic-auth": {}}},
        {"uri": "/echo-hidden", "plugins": {"basic-auth": {"hide_credentials": True}}},
        {"uri": "/echo-shown", "plugins": {"basic-auth": {"hide_credentials": False}}},
        {"uri": "/realm", "plugins": {"basic-auth": {"realm": "secure-zone"}}},
        {"uri": "/get-only", "methods": ["GET"], "plugins": {"basic-auth": {}}},
    ],
}

_JACKS = [
    {"username": "jack1", "plugins": {"basic-auth": {"username": "jack2019", "password": "123456"}}},
    {"username": "jack2", "plugins": {"basic-auth": {"username": "jack2020", "password": "123456"}}},
]

# APISIX t/plugin/consumer-restriction.t (type consumer_name).
RESTRICTION: dict[str, Any] = {
    "consumers": _JACKS,
    "routes": [
        {"uri": "/white", "plugins": {"basic-auth": {}, "consumer-restriction": {"whitelist": ["jack1"]}}},
        {
            "uri": "/black",
            "plugins": {
                "basic-auth": {},
                "consumer-restriction": {"blacklist": ["jack1"], "rejected_msg": "request is forbidden"},
            },
        },
        {"uri": "/white-only", "plugins": {"consumer-restriction": {"whitelist": ["jack1"]}}},
        {"uri": "/black-only", "plugins": {"consumer-restriction": {"blacklist": ["jack1"]}}},
        {
            "uri": "/post-only",
            "plugins": {
                "basic-auth": {},
                "consumer-restriction": {"allowed_by_methods": [{"user": "jack1", "methods": ["POST"]}]},
            },
        },
        {
            "uri": "/post-get",
            "plugins": {
                "basic-auth": {},
                "consumer-restriction": {
                    "allowed_by_methods": [{"user": "jack1", "methods": ["POST", "GET"]}]
                },
            },
        },
        {
            "uri": "/black-methods",
            "plugins": {
                "basic-auth": {},
                "consumer-restriction": {
                    "blacklist": ["jack1"],
                    "allowed_by_methods": [{"user": "jack1", "methods": ["POST", "GET"]}],
                },
            },
        },
        {
            "uri": "/white-methods",
            "plugins": {
                "basic-auth": {},
                "consumer-restriction": {
                    "whitelist": ["jack1"],
                    "allowed_by_methods": [{"user": "jack1", "methods": ["POST"]}],
                },
            },
        },
        {
            "uri": "/teapot",
            "plugins": {
                "basic-auth": {},
                "consumer-restriction": {
                    "whitelist": ["jack2"],
                    "rejected_code": 418,
                    "rejected_msg": "no tea",
                },
            },
        },
        {"uri": "/open"},
    ],
}


def _tagged(uri: str | list[str], tag: str, **route: Any) -> dict[str, Any]:
    """A route that answers 403 with its own tag as the message, so a test can see which route matched."""
    return {
        ("uris" if isinstance(uri, list) else "uri"): uri,
        **route,
        "plugins": {
            "basic-auth": {"anonymous_consumer": "guest"},
            "consumer-restriction": {"whitelist": ["nobody"], "rejected_msg": tag},
        },
    }


# SPEC §4: exact vs prefix, longest prefix, priority, methods, hosts and wildcards, services.
ROUTING: dict[str, Any] = {
    "consumers": [{"username": "guest"}],
    "services": [
        {"id": "api", "path_prefix": "/api", "hosts": ["api.example.com"]},
        {"id": "anyhost", "path_prefix": "/svc/"},
    ],
    "routes": [
        _tagged("/json", "exact-json"),
        _tagged("/json/*", "prefix-json"),
        _tagged("/json/deep/*", "prefix-json-deep"),
        _tagged("/prio", "prio-low", priority=1),
        _tagged("/prio", "prio-high", priority=10),
        _tagged("/prio", "prio-post", priority=100, methods=["POST"]),
        _tagged("/tie", "tie-first"),
        _tagged("/tie", "tie-second"),
        _tagged("/hosted", "hosted-exact", hosts=["example.com"]),
        _tagged("/hosted", "hosted-wild", hosts=["*.example.com"]),
        _tagged("/methods", "methods-get", methods=["GET", "HEAD"]),
        _tagged("/items", "api-items", service_id="api"),
        _tagged("/items", "api-items-override", service_id="api", hosts=["other.test"]),
        _tagged("/*", "anyhost-all", service_id="anyhost"),
        _tagged(["/many-a", "/many-b/*"], "uris"),
    ],
}

# SPEC §2.3 and §2.4: identity headers, credential ids, custom ids, the anonymous consumer.
IDENTITY: dict[str, Any] = {
    "consumers": [
        {
            "username": "jack1",
            "labels": {"custom_id": "cust-42"},
            "credentials": [
                {
                    "id": "cred-1",
                    "plugins": {"basic-auth": {"username": "jack2019", "password": "p:ss:word"}},
                },
                {"id": "cred-2", "plugins": {"basic-auth": {"username": "jack-new", "password": "rotated"}}},
            ],
        },
        {"username": "guest", "labels": {"custom_id": "anon"}},
        {"username": "plain", "plugins": {"basic-auth": {"username": "plain", "password": "pw"}}},
        {"username": "umlaut", "plugins": {"basic-auth": {"username": "jürgen", "password": "pässword"}}},
    ],
    "routes": [
        {"uri": "/id", "plugins": {"basic-auth": {}}},
        {"uri": "/anon", "plugins": {"basic-auth": {"anonymous_consumer": "guest"}}},
        {
            "uri": "/anon-restricted",
            "plugins": {
                "basic-auth": {"anonymous_consumer": "guest"},
                "consumer-restriction": {"whitelist": ["jack1"]},
            },
        },
        {"uri": "/open"},
    ],
}

# SPEC §2.1 case 3: a consumer exists, but none has a basic-auth credential.
NO_CREDENTIALS: dict[str, Any] = {
    "consumers": [{"username": "lonely"}],
    "routes": [{"uri": "/hello", "plugins": {"basic-auth": {}}}],
}

# Stored hashes of every supported format (vectors made with Apache's htpasswd and argon2-cffi).
HASHES_PASSWORD = "123456"
HASHES: dict[str, Any] = {
    "consumers": [
        {
            "username": username,
            "plugins": {"basic-auth": {"username": username, "password_hash": stored}},
        }
        for username, stored in (
            (
                "argon",
                "$argon2id$v=19$m=8,t=1,p=1$XL5aManShZg7cV4AyX44wA$yQvJuC4VD2eQB3q/qDgmFgIf1v6mHpB/8fPYWulrmZI",
            ),
            ("bcrypt", "$2y$05$e9ENqlaIJqas5L4yTVt3MOCFk3.0Gt25/tj9OSsiCombZUauYCrsq"),
            ("apr1", "$apr1$70iJyua7$gMCnDoXYSPfM9sURRcgI3."),
            ("sha", "{SHA}fEqNCco3Yq9h5ZUglD3CZJT4lBs="),
        )
    ],
    "routes": [{"uri": "/hashed", "plugins": {"basic-auth": {}}}],
}

# docs/plugins.md: a plugin by dotted path on a route, a registered one on a consumer and on a service.
# Not in CONFIGS (its 400 is no SPEC answer): tests/test_user_plugins.py adds it while it runs.
USER_PLUGINS: dict[str, Any] = {
    "consumers": [
        {
            "username": "alex",
            "plugins": {
                "basic-auth": {"username": "alex", "password": "123456"},
                "add-response-header": {"header": "X-Plan", "value": "gold"},
            },
        },
        {"username": "bob", "plugins": {"basic-auth": {"username": "bob", "password": "654321"}}},
    ],
    "services": [
        {
            "id": "tenants",
            "upstream": "http://127.0.0.1:1",
            "plugins": {"add-response-header": {"header": "X-Plan", "value": "free"}},
        }
    ],
    "routes": [
        {
            "uri": "/tenant",
            "service_id": "tenants",
            "plugins": {
                "basic-auth": {},
                "example_plugins:RequireHeader": {"header": "X-Tenant", "values": ["acme"]},
            },
        }
    ],
}

# SPEC §8: a public prefix beside guarded ones, a route on one host, one on GET only, an anonymous one.
_ALEX = GUIDE["consumers"][0]
PATHS: dict[str, Any] = {
    "consumers": [_ALEX, {"username": "guest"}],
    "routes": [
        {"id": "pub", "uri": "/v1/pub/*"},
        {"id": "admin", "uris": ["/v1/admin", "/v1/admin/*"], "plugins": {"basic-auth": {}}},
        {
            "id": "hosted",
            "uri": "/v1/hosted/*",
            "hosts": ["example.com"],
            "plugins": {"basic-auth": {}},
        },
        {"id": "get-only", "uri": "/v1/get-only", "methods": ["GET"], "plugins": {"basic-auth": {}}},
        {"id": "anon", "uri": "/v1/anon", "plugins": {"basic-auth": {"anonymous_consumer": "guest"}}},
    ],
}

# Item 11 of the path work: a stripped service prefix under unmatched: pass (the app's view is /json).
MOUNTED: dict[str, Any] = {
    "consumers": [_ALEX],
    "unmatched": "pass",
    "services": [{"id": "app", "path_prefix": "/v1", "upstream": "http://127.0.0.1:9001"}],
    "routes": [{"id": "json", "service_id": "app", "uri": "/json", "plugins": {"basic-auth": {}}}],
}


def _deny(tag: str, **restriction: Any) -> dict[str, Any]:
    """A ``consumer-restriction`` that rejects everyone with ``tag`` (so a test sees whose plugin ran)."""
    return {"consumer-restriction": {"whitelist": ["nobody"], "rejected_msg": tag, **restriction}}


def _login(name: str, **consumer: Any) -> dict[str, Any]:
    """A consumer logging in as ``name`` with password ``name``."""
    return {"username": name, "plugins": {"basic-auth": {"username": name, "password": name}}, **consumer}


# SPEC §9 and §10: plugins from a consumer group, between the route and the consumer; restriction by group.
GROUPS: dict[str, Any] = {
    "consumer_groups": [
        {"id": "free", "desc": "the free tier", "labels": {"tier": "free"}, "plugins": _deny("group free")},
        {"id": "vip", "plugins": {"consumer-restriction": {"whitelist": ["dave"]}}},
        {"id": "open"},
        {"id": "paid", "plugins": {}},
    ],
    "consumers": [
        _login("alex", group_id="free"),
        _login("bob"),
        {
            **_login("carol", group_id="free"),
            "plugins": {**_login("carol")["plugins"], **_deny("consumer carol")},
        },
        _login("dave", group_id="vip"),
        _login("erin", group_id="open"),
        _login("frank", group_id="paid"),
        {"username": "guest", "group_id": "free"},
    ],
    "services": [
        {
            "id": "svc",
            "path_prefix": "/svc",
            "upstream": "http://127.0.0.1:9001",
            "plugins": _deny("service"),
        },
    ],
    "routes": [
        {"uri": "/x", "service_id": "svc", "plugins": {"basic-auth": {}}},
        {"uri": "/route", "plugins": {"basic-auth": {}, **_deny("route")}},
        {"uri": "/plain", "plugins": {"basic-auth": {}}},
        {"uri": "/anon", "plugins": {"basic-auth": {"anonymous_consumer": "guest"}}},
        {
            "uri": "/by-group",
            "plugins": {
                "basic-auth": {},
                "consumer-restriction": {"type": "consumer_group_id", "whitelist": ["open"]},
            },
        },
        {
            "uri": "/not-paid",
            "plugins": {
                "basic-auth": {},
                "consumer-restriction": {"type": "consumer_group_id", "blacklist": ["paid"]},
            },
        },
        {
            "uri": "/unguarded-by-group",
            "plugins": {"consumer-restriction": {"type": "consumer_group_id", "whitelist": ["open"]}},
        },
    ],
}

CONFIGS: dict[str, dict[str, Any]] = {
    "guide": GUIDE,
    "guide-apisix3": _with(GUIDE, profile="apisix-3"),
    "apisix": APISIX_BASIC_AUTH,
    "apisix-3": _with(APISIX_BASIC_AUTH, profile="apisix-3"),
    "restriction": RESTRICTION,
    "routing": ROUTING,
    "identity": IDENTITY,
    "identity-apisix3": _with(IDENTITY, profile="apisix-3"),
    "no-credentials": NO_CREDENTIALS,
    "no-credentials-apisix3": _with(NO_CREDENTIALS, profile="apisix-3"),
    "unmatched-pass": _with(APISIX_BASIC_AUTH, unmatched="pass"),
    "hashes": HASHES,
    "hashes-apisix3": _with(HASHES, profile="apisix-3"),
    "paths": PATHS,
    "paths-pass": _with(PATHS, unmatched="pass"),
    "paths-folded": _with(PATHS, unmatched="pass", path_matching={"case_insensitive": True}),
    "mounted": MOUNTED,
    "groups": GROUPS,
}

_built: dict[str, Gateway] = {}


def gateway(name: str) -> Gateway:
    """The gateway for a named configuration (built once per test session)."""
    if name not in _built:
        _built[name] = Gateway.from_dict(CONFIGS[name])
    return _built[name]
