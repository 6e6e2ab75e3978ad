"""Before/after in one process: two source trees loaded side by side, alternated 500 calls at a time.

    ../.venv/bin/python paired.py BASE_SRC [AFTER_SRC]     # e.g. BASE_SRC from `git archive main src`

Each tree's ``consumer_auth`` is copied under another name (``ca_base``, ``ca_new``) into a temporary
directory, so both run in the same process, on the same heap, alternating every 500 calls for 200 rounds:
a busy machine slows both alike. Prints, per case, the medians and the median of the paired ratios.
The console is left out (not needed here).
"""

import base64
import importlib
import pathlib
import re
import shutil
import statistics
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
root = pathlib.Path(tempfile.mkdtemp(prefix="paired-"))
trees = (sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else str(HERE.parent / "src"))
for alias, tree in zip(("ca_base", "ca_new"), trees, strict=True):
    src = pathlib.Path(tree) / "consumer_auth"
    shutil.copytree(
        src, root / alias, ignore=shutil.ignore_patterns("__pycache__", "console", "static", "templates")
    )
    for f in (root / alias).rglob("*.py"):
        t = f.read_text()
        f.write_text(
            re.sub(
                r"\bconsumer_auth(?=[.\s])(?!\.(auth|consumer|gateway|access|proxy|store|verify)\b[\"'])",
                alias,
                t,
            )
        )
sys.path.insert(0, str(root))
ALEX = "Basic " + base64.b64encode(b"alex:123456").decode()
CONFIG = {
    "unmatched": "reject",
    "consumers": [
        {"username": "alex", "plugins": {"basic-auth": {"username": "alex", "password": "123456"}}}
    ],
    "services": [{"id": "app", "path_prefix": "/v1"}],
    "routes": [
        {
            "id": "json",
            "service_id": "app",
            "uri": "/json",
            "methods": ["GET"],
            "plugins": {"basic-auth": {}},
        },
        {"id": "files", "service_id": "app", "uri": "/files/*", "plugins": {"basic-auth": {}}},
        {"id": "pub", "uri": "/pub/*"},
    ],
}


def env(path):
    return {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "HTTP_HOST": "example.com",
        "HTTP_AUTHORIZATION": ALEX,
        "REMOTE_ADDR": "127.0.0.1",
        "SCRIPT_NAME": "",
        "wsgi.url_scheme": "http",
    }


def bare(environ, start_response):
    start_response("200 OK", [])
    return [b"ok"]


def sr(status, headers, exc=None):
    pass


timers = {}
for alias in ("ca_base", "ca_new"):
    m = importlib.import_module(alias)
    g = m.Gateway.from_dict(CONFIG)
    app = g.wsgi(bare)
    D = m.RequestFacts  # exported by every version (its module moved to sansio/)
    for case, path, auth in (
        ("decide exact /v1/json", "/v1/json", (ALEX,)),
        ("decide prefix /v1/files/a/b.txt", "/v1/files/a/b.txt", (ALEX,)),
        ("decide public /pub/a/b", "/pub/a/b", ()),
    ):
        facts = D("GET", path, "example.com", auth)
        timers.setdefault(case, {})[alias] = lambda f=facts, d=g.decide_now: d(f)
    for case, path in (
        ("wsgi middleware /v1/json", "/v1/json"),
        ("wsgi middleware /v1/files/a/b.txt", "/v1/files/a/b.txt"),
    ):
        e = env(path)
        timers.setdefault(case, {})[alias] = lambda e=e, a=app: a(dict(e), sr)
N, ROUNDS = 500, 200
for case, pair in timers.items():
    ratios, times = [], {"ca_base": [], "ca_new": []}
    for r in range(ROUNDS):
        order = ("ca_base", "ca_new") if r % 2 == 0 else ("ca_new", "ca_base")
        took = {}
        for alias in order:
            f = pair[alias]
            s = time.perf_counter()
            for _ in range(N):
                f()
            took[alias] = (time.perf_counter() - s) / N
        times["ca_base"].append(took["ca_base"])
        times["ca_new"].append(took["ca_new"])
        ratios.append(took["ca_new"] / took["ca_base"])
    b, n = statistics.median(times["ca_base"]), statistics.median(times["ca_new"])
    print(
        f"{case:36s} before {b * 1e6:6.2f} µs  after {n * 1e6:6.2f} µs  median paired ratio {statistics.median(ratios):.3f}×"
    )
