"""Topic filters: a subscription trie for ``+`` and ``#``, ``$`` rules and shared subscriptions.

Pure data structure, no I/O. A filter is stored under a *key* (the subscribing client id, or for
a shared subscription ``$share/<group>/<filter>`` the tuple ``(group, client id)``) with any value
(the subscription options). ``match(topic)`` returns every ``(key, value)`` whose filter matches,
following MQTT 4.7: ``+`` matches one level, ``#`` the parent and any number of levels below,
and topics starting with ``$`` are not matched by filters starting with a wildcard.
"""

from __future__ import annotations

from typing import Any, Hashable, Iterator


def split_shared(flt: str) -> tuple[str | None, str]:
    """``$share/g/a/b`` -> ("g", "a/b"); anything else -> (None, flt). Raises ValueError if malformed."""
    if not flt.startswith("$share/"):
        return None, flt
    rest = flt[7:]
    group, sep, real = rest.partition("/")
    if not group or not sep or not real or "+" in group or "#" in group:
        raise ValueError("malformed shared subscription")
    return group, real


def topic_matches(flt: str, topic: str) -> bool:
    """Does one filter match one topic name (without the trie)?"""
    if topic.startswith("$") and flt[:1] in ("+", "#"):
        return False
    fl = flt.split("/")
    tl = topic.split("/")
    for i, f in enumerate(fl):
        if f == "#":
            return True
        if i >= len(tl):
            return False
        if f != "+" and f != tl[i]:
            return False
    return len(fl) == len(tl)


class _Node:
    __slots__ = ("children", "subs")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.subs: dict[Hashable, Any] = {}


class SubscriptionTrie:
    def __init__(self, cache_size: int = 4096) -> None:
        self._root = _Node()
        self._cache: dict[str, list[tuple[Hashable, Any]]] = {}
        self._cache_size = cache_size
        self.count = 0

    def add(self, flt: str, key: Hashable, value: Any) -> bool:
        """Add or replace; True if it is new."""
        node = self._root
        for level in flt.split("/"):
            nxt = node.children.get(level)
            if nxt is None:
                nxt = node.children[level] = _Node()
            node = nxt
        new = key not in node.subs
        node.subs[key] = value
        if new:
            self.count += 1
        self._cache.clear()
        return new

    def remove(self, flt: str, key: Hashable) -> bool:
        path = [self._root]
        levels = flt.split("/")
        node = self._root
        for level in levels:
            nxt = node.children.get(level)
            if nxt is None:
                return False
            node = nxt
            path.append(node)
        if key not in node.subs:
            return False
        del node.subs[key]
        self.count -= 1
        # prune empty nodes
        for i in range(len(levels), 0, -1):
            n = path[i]
            if n.subs or n.children:
                break
            del path[i - 1].children[levels[i - 1]]
        self._cache.clear()
        return True

    def clear(self) -> None:
        self._root = _Node()
        self._cache.clear()
        self.count = 0

    def match(self, topic: str) -> list[tuple[Hashable, Any]]:
        hit = self._cache.get(topic)
        if hit is not None:
            return hit
        out: list[tuple[Hashable, Any]] = []
        levels = topic.split("/")
        self._walk(self._root, levels, 0, out, topic.startswith("$"))
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[topic] = out
        return out

    def _walk(self, node: _Node, levels: list[str], i: int, out: list[tuple[Hashable, Any]], dollar: bool) -> None:
        if i == len(levels):
            if node.subs:
                out.extend(node.subs.items())
            h = node.children.get("#")
            if h is not None and h.subs:
                out.extend(h.subs.items())
            return
        children = node.children
        c = children.get(levels[i])
        if c is not None:
            self._walk(c, levels, i + 1, out, dollar)
        if i == 0 and dollar:
            return
        c = children.get("+")
        if c is not None:
            self._walk(c, levels, i + 1, out, dollar)
        c = children.get("#")
        if c is not None and c.subs:
            out.extend(c.subs.items())

    def items(self) -> Iterator[tuple[str, Hashable, Any]]:
        stack: list[tuple[str, _Node]] = [("", self._root)]
        while stack:
            prefix, node = stack.pop()
            for key, value in node.subs.items():
                yield prefix, key, value
            for level, child in node.children.items():
                stack.append((f"{prefix}/{level}" if prefix or node is not self._root else level, child))
