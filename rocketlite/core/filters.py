"""Subscription expressions: RocketMQ tag expressions (``*``, ``a || b``).

SQL92 property filters plug in through the same :class:`Filter` shape (``match_index`` for the
cheap consume-queue check by tag hash, ``match`` for the full message).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rocketlite.core.message import Message, tag_hash


class Filter:
    """Accepts everything."""

    def match_index(self, tag_code: int) -> bool:
        return True

    def match(self, msg: Message) -> bool:
        return True


MATCH_ALL = Filter()


@dataclass(slots=True)
class TagFilter(Filter):
    tags: frozenset[str]
    codes: frozenset[int] = field(default=frozenset())

    @classmethod
    def parse(cls, expression: str | None) -> Filter:
        expr = (expression or "").strip()
        if not expr or expr == "*":
            return MATCH_ALL
        tags = frozenset(t.strip() for t in expr.split("||") if t.strip())
        if not tags or "*" in tags:
            return MATCH_ALL
        return cls(tags, frozenset(tag_hash(t) for t in tags))

    def match_index(self, tag_code: int) -> bool:
        return tag_code in self.codes

    def match(self, msg: Message) -> bool:
        return msg.tags in self.tags


@dataclass(slots=True)
class Subscription:
    """One consumer group's subscription to one topic."""

    topic: str
    expression: str = "*"
    type: str = "TAG"  # TAG or SQL92
    filter: Filter = MATCH_ALL

    @classmethod
    def make(cls, topic: str, expression: str = "*", type: str = "TAG") -> "Subscription":
        if type.upper() == "SQL92":
            try:
                from rocketlite.core.sql92 import SqlFilter  # optional module
            except ImportError:  # pragma: no cover - until SQL92 lands
                return cls(topic, expression, "SQL92", MATCH_ALL)
            return cls(topic, expression, "SQL92", SqlFilter.parse(expression))
        return cls(topic, expression, "TAG", TagFilter.parse(expression))
