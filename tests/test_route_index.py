"""The route index against a plain list scan of the SPEC §4 rules, on generated route sets."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from consumer_auth import Route
from consumer_auth.sansio.plugins import Profile
from consumer_auth.sansio.routing import CompiledRoute, RouteIndex, compile_route, normalize_path

SEGMENTS = st.sampled_from(["a", "ab", "b", "json", "js", "v1", ""])
PATHS = st.lists(SEGMENTS, min_size=0, max_size=4).map(lambda parts: "/" + "/".join(parts))
URIS = st.one_of(PATHS, PATHS.map(lambda p: p + "*"), PATHS.map(lambda p: p.rstrip("/") + "/*"))
ROUTES = st.lists(
    st.tuples(URIS, st.integers(0, 2), st.sampled_from([None, ("GET",), ("POST",)])), min_size=1, max_size=12
)


def reference(routes: list[CompiledRoute], paths: list[str], method: str, path: str) -> CompiledRoute | None:
    """Exact beats prefix; a longer prefix beats a shorter; then higher priority; then configuration order."""
    path = normalize_path(path)
    best: tuple[int, int, int, int] | None = None
    found = None
    for route, uri in zip(routes, paths, strict=True):
        if uri.endswith("*"):
            if not path.startswith(uri[:-1]):
                continue
            rank = (1, -len(uri), -route.route.priority, route.order)
        elif uri == path:
            rank = (0, 0, -route.route.priority, route.order)
        else:
            continue
        if not route.accepts(method, None):
            continue
        if best is None or rank < best:
            best, found = rank, route
    return found


@settings(max_examples=300, deadline=None)
@given(
    ROUTES,
    st.lists(PATHS.map(lambda p: p + "x") | PATHS, min_size=1, max_size=6),
    st.sampled_from(["GET", "POST"]),
)
def test_index_agrees_with_a_list_scan(
    spec: list[tuple[str, int, tuple[str, ...] | None]], requests: list[str], method: str
) -> None:
    compiled = [
        compile_route(Route(uri, priority=priority, methods=methods), None, order, Profile.CLASSIC)
        for order, (uri, priority, methods) in enumerate(spec)
    ]
    index = RouteIndex(compiled)
    routes = [route for route, _ in compiled]
    paths = [path for _, (path,) in compiled]
    for request in requests:
        assert index.match(method, request, None) is reference(routes, paths, method, request), request


def test_a_prefix_inside_a_segment() -> None:
    compiled = [
        compile_route(Route(uri, id=uri), None, order, Profile.CLASSIC)
        for order, uri in enumerate(["/js*", "/json*", "/json/*", "/*"])
    ]
    index = RouteIndex(compiled)
    assert {p: index.match("GET", p, None).id for p in ["/jsx", "/jsonp", "/json", "/json/a", "/x"]} == {  # type: ignore[union-attr]
        "/jsx": "/js*",
        "/jsonp": "/json*",
        "/json": "/json*",
        "/json/a": "/json/*",
        "/x": "/*",
    }
