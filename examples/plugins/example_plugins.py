"""Two user plugins: one that requires a request header, one that adds a response header.

Used by docs/plugins.md (which shows this file) and tests/test_user_plugins.py (which runs it in every
mode, from Python and from a YAML configuration).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from consumer_auth import ConfigError, Plugin, PluginRequest, Reject, json_reject, register_plugin


@dataclass(frozen=True)
class RequireHeader(Plugin):
    """Answer 400 to a request without ``header`` (or whose value is not one of ``values``).

    Its phase is ``rewrite``, before authentication: a request without the header never costs a
    password check.
    """

    name: ClassVar[str] = "require-header"
    priority: ClassVar[int] = 2600

    header: str
    values: tuple[str, ...] | None = None
    rejected_code: int = 400
    _rejection: Reject = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.header, str) or not self.header:
            raise ConfigError("header", "expected a header name")
        if self.values is not None:
            if not isinstance(self.values, list | tuple) or not all(isinstance(v, str) for v in self.values):
                raise ConfigError("values", "expected a list of strings")
            object.__setattr__(self, "values", tuple(self.values))
        if not isinstance(self.rejected_code, int) or not 400 <= self.rejected_code <= 499:
            raise ConfigError("rejected_code", "expected a 4xx status")
        message = f"Missing or invalid {self.header} header"
        object.__setattr__(
            self, "_rejection", json_reject(self.rejected_code, "message", message, reason="header_required")
        )

    def rewrite(self, request: PluginRequest) -> Reject | None:
        value = request.header(self.header)
        if value is None or (self.values is not None and value not in self.values):
            return self._rejection
        return None


@register_plugin
@dataclass(frozen=True)
class AddResponseHeader(Plugin):
    """Add one header to the answer of every allowed request (on a route, a service or a consumer)."""

    name: ClassVar[str] = "add-response-header"
    priority: ClassVar[int] = 100

    header: str
    value: str

    def __post_init__(self) -> None:
        for field_name in ("header", "value"):
            if not isinstance(getattr(self, field_name), str) or not getattr(self, field_name):
                raise ConfigError(field_name, "expected a non-empty string")

    def response(self, request: PluginRequest) -> None:
        request.response_headers.append((self.header, self.value))
