"""The ``consumer-restriction`` plugin: allow or deny consumers by name or by group, after authentication."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from consumer_auth.sansio._methods import HTTP_METHODS
from consumer_auth.sansio._validate import (
    expect_choice,
    expect_int,
    expect_list,
    expect_mapping,
    expect_str,
    expect_str_list,
    fail,
    reject_unknown,
)
from consumer_auth.sansio.consumers import Consumer
from consumer_auth.sansio.decision import Reject, json_reject
from consumer_auth.sansio.plugin import Environment, Plugin

if TYPE_CHECKING:
    from consumer_auth.sansio.plugin import PluginRequest

__all__ = ["ConsumerRestrictionPlugin", "RestrictionCheck"]


@dataclass(frozen=True, slots=True)
class ConsumerRestrictionPlugin(Plugin):
    """Restrict a route or service to some consumers (``whitelist``) or exclude some (``blacklist``).

    Runs after authentication. A request without a consumer (no auth plugin on the route) gets 401
    ``Missing authentication or identity verification.``. With ``type="consumer_group_id"`` the lists
    hold consumer group ids instead of names; a consumer in no group then gets APISIX's 401
    ``The request is rejected, please check the consumer_group_id for this request``.

    As in APISIX, the blacklist is checked first, then the whitelist; a consumer on the whitelist skips
    ``allowed_by_methods``, and a consumer without an entry there is not limited by it.

    Args:
        whitelist: Consumer names allowed; every other consumer is rejected.
        blacklist: Consumer names rejected. At least one of ``whitelist``, ``blacklist`` and
            ``allowed_by_methods`` is required.
        allowed_by_methods: ``[{"user": name, "methods": [...]}]``: the methods each named consumer may use.
        rejected_code: Status of a rejection (default 403).
        rejected_msg: Message of a rejection (default ``The <type> is forbidden.``:
            ``The consumer_name is forbidden.``, or ``The consumer_group_id is forbidden.``).
        type: What is matched: ``consumer_name`` (the default) or ``consumer_group_id`` (the consumer's
            :class:`~consumer_auth.ConsumerGroup`; in ``allowed_by_methods``, ``user`` is then a group id).

    Example:
        >>> ConsumerRestrictionPlugin(whitelist=["alex"]).whitelist
        ('alex',)
    """

    name: ClassVar[str] = "consumer-restriction"
    priority: ClassVar[int] = 2400

    whitelist: tuple[str, ...] | None = None
    blacklist: tuple[str, ...] | None = None
    allowed_by_methods: tuple[tuple[str, tuple[str, ...]], ...] | None = None
    rejected_code: int = 403
    rejected_msg: str | None = None  # set to ``The <type> is forbidden.`` when not given
    type: str = "consumer_name"

    def __post_init__(self) -> None:
        if self.whitelist is None and self.blacklist is None and self.allowed_by_methods is None:
            fail("whitelist", "one of 'whitelist', 'blacklist' and 'allowed_by_methods' is required")
        if self.whitelist is not None:
            object.__setattr__(self, "whitelist", expect_str_list(self.whitelist, "whitelist"))
        if self.blacklist is not None:
            object.__setattr__(self, "blacklist", expect_str_list(self.blacklist, "blacklist"))
        if self.allowed_by_methods is not None:
            object.__setattr__(self, "allowed_by_methods", _methods_by_user(self.allowed_by_methods))
        expect_int(self.rejected_code, "rejected_code", minimum=200, maximum=599)
        expect_choice(self.type, "type", ("consumer_name", "consumer_group_id"))
        if self.rejected_msg is None:
            object.__setattr__(self, "rejected_msg", f"The {self.type} is forbidden.")
        expect_str(self.rejected_msg, "rejected_msg")

    @classmethod
    def from_config(cls, value: object) -> ConsumerRestrictionPlugin:
        """Build from a configuration mapping (errors are relative to the plugin)."""
        config = expect_mapping(value, "")
        reject_unknown(
            config,
            (
                "whitelist",
                "blacklist",
                "allowed_by_methods",
                "rejected_code",
                "rejected_msg",
                "type",
            ),
            "",
        )
        if "rejected_msg" in config:
            expect_str(config["rejected_msg"], "rejected_msg")  # null is no message, as before
        return cls(**config)

    def compile(self, environment: Environment | None = None) -> RestrictionCheck:
        """Precompute this plugin's responses."""
        return RestrictionCheck(self)


def _methods_by_user(value: object) -> tuple[tuple[str, tuple[str, ...]], ...]:
    entries: list[tuple[str, tuple[str, ...]]] = []
    for index, item in enumerate(expect_list(value, "allowed_by_methods")):
        if isinstance(item, tuple) and len(item) == 2:
            item = {"user": item[0], "methods": item[1]}
        where = f"allowed_by_methods[{index}]"
        entry = expect_mapping(item, where)
        reject_unknown(entry, ("user", "methods"), where)
        user = expect_str(entry.get("user"), f"{where}.user")
        methods = expect_str_list(entry.get("methods"), f"{where}.methods")
        for position, method in enumerate(methods):
            expect_choice(method, f"{where}.methods[{position}]", sorted(HTTP_METHODS))
        entries.append((user, methods))
    return tuple(entries)


class RestrictionCheck(Plugin):
    """A compiled ``consumer-restriction`` plugin (its ``access`` phase)."""

    __slots__ = ("_allowed", "_by_group", "_denied", "_methods", "_no_consumer", "_no_group", "_rejected")

    name: ClassVar[str] = ConsumerRestrictionPlugin.name
    priority: ClassVar[int] = ConsumerRestrictionPlugin.priority

    def __init__(self, plugin: ConsumerRestrictionPlugin) -> None:
        self._allowed = frozenset(plugin.whitelist) if plugin.whitelist is not None else None
        self._denied = frozenset(plugin.blacklist or ())
        self._methods: dict[str, frozenset[str]] = {}
        for user, methods in plugin.allowed_by_methods or ():
            self._methods.setdefault(user, frozenset(methods))  # the first entry for a user counts
        self._rejected = json_reject(
            plugin.rejected_code, "message", plugin.rejected_msg or "", reason="consumer_forbidden"
        )
        self._no_consumer = json_reject(
            401, "message", "Missing authentication or identity verification.", reason="no_consumer"
        )
        self._by_group = plugin.type == "consumer_group_id"
        self._no_group = json_reject(
            401,
            "message",
            "The request is rejected, please check the consumer_group_id for this request",
            reason="no_consumer_group",
        )

    def access(self, request: PluginRequest) -> Reject | None:
        """Reject a request whose consumer (or lack of one) the lists do not allow."""
        return self.check(request.consumer, request.facts.method)

    def check(self, consumer: Consumer | None, method: str) -> Reject | None:
        """The rejection for this consumer and method, or ``None`` to let it through."""
        if consumer is None:
            return self._no_consumer
        if self._by_group:
            group = consumer.group_id
            if group is None:
                return self._no_group
            name = group
        else:
            name = consumer.username
        if name in self._denied:
            return self._rejected
        if self._allowed is not None:
            if name in self._allowed:
                return None
            return self._rejected
        allowed_methods = self._methods.get(name)
        if allowed_methods is not None and method not in allowed_methods:
            return self._rejected
        return None
