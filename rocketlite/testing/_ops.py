"""What every test-double flavour does to a broker: reset, peek, send, receive, seed, describe.

These are plain ``async`` functions over a :class:`~rocketlite.core.broker.Broker` and the
front-end context; the in-process handles call them in the broker's own Trio run, and the opt-in
control endpoint (:mod:`rocketlite.testing.control`) calls them for an external process.
Nothing here imports trio, so the same code serves both.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, Mapping

from rocketlite.core.broker import Broker
from rocketlite.core.message import (
    PROP_DELAY_LEVEL,
    PROP_DELIVER_TIME_MS,
    PROP_KEYS,
    PROP_MESSAGE_GROUP,
    PROP_TAGS,
    Message,
    SendResult,
)

#: Key in ``ctx.services`` under which front-ends register extra reset work: a list of
#: ``async def hook() -> None`` called after ``broker.reset()`` (MQTT sessions, retained, ...).
RESET_HOOKS = "reset_hooks"

DEFAULT_GROUP = "rocketlite-test"

TOPIC_KEYS = {"queues", "read_queues", "write_queues", "perm", "message_type", "order", "attributes"}
GROUP_KEYS = {"max_reconsume_times", "consume_orderly", "retry_queues", "attributes"}
MESSAGE_KEYS = {"topic", "body", "tags", "keys", "properties", "queue_id", "delay_ms", "message_group"}


class SeedError(ValueError):
    """A seed document names something rocketlite does not know (the message says what)."""


def reset_hooks(services: dict[str, Any]) -> list[Callable[[], Awaitable[None]]]:
    hooks: list[Callable[[], Awaitable[None]]] = services.setdefault(RESET_HOOKS, [])
    return hooks


async def reset(broker: Broker, services: dict[str, Any]) -> None:
    """Empty everything: the core's state, then whatever front-ends registered as reset hooks."""
    await broker.reset()
    for hook in list(reset_hooks(services)):
        await hook()


def make_message(
    topic: str,
    body: bytes | str,
    *,
    tags: str = "",
    keys: str | Iterable[str] = "",
    properties: Mapping[str, str] | None = None,
    queue_id: int = -1,
    delay_ms: float | None = None,
    deliver_at_ms: int | None = None,
    delay_level: int | None = None,
    message_group: str | None = None,
    now_ms: int = 0,
) -> Message:
    if isinstance(body, str):
        body = body.encode()
    if not isinstance(keys, str):
        keys = " ".join(keys)
    props = {str(k): str(v) for k, v in (properties or {}).items()}
    if tags:
        props[PROP_TAGS] = tags
    if keys:
        props[PROP_KEYS] = keys
    if message_group:
        props[PROP_MESSAGE_GROUP] = message_group
    if delay_ms is not None:
        deliver_at_ms = int(now_ms + delay_ms)
    if deliver_at_ms is not None:
        props[PROP_DELIVER_TIME_MS] = str(int(deliver_at_ms))
    if delay_level is not None:
        props[PROP_DELAY_LEVEL] = str(int(delay_level))
    return Message(topic=topic, body=bytes(body), queue_id=queue_id, tags=tags, keys=keys, properties=props)


async def send(broker: Broker, topic: str, body: bytes | str, **options: Any) -> SendResult:
    msg = make_message(topic, body, now_ms=broker.now_ms(), **options)
    (result,) = await broker.send([msg])
    return result


def queue_ids(broker: Broker, topic: str) -> list[int]:
    tc = broker.topics.get(topic)
    if tc is None:
        return []
    return list(range(max(tc.read_queues, tc.write_queues)))


async def peek(broker: Broker, topic: str, queue_id: int | None = None, max_count: int = 1000) -> list[Message]:
    """Messages of ``topic`` (all queues, or one), oldest first, without committing any offset."""
    out: list[Message] = []
    qids = [queue_id] if queue_id is not None else queue_ids(broker, topic)
    for qid in qids:
        # the oldest max_count of every queue, merged below: the overall oldest are among them
        got = 0
        offset = broker.min_offset(topic, qid)
        while got < max_count and offset < broker.max_offset(topic, qid):
            res = await broker.pull(topic, qid, offset, min(256, max_count - got), wait_ms=0)
            if res.next_offset <= offset:
                break
            out.extend(res.messages)
            got += len(res.messages)
            offset = res.next_offset
    out.sort(key=lambda m: (m.store_timestamp, m.commit_offset))
    return out[:max_count]


def _bool(v: Any, where: str) -> bool:
    if isinstance(v, bool):
        return v
    raise SeedError(f"{where} must be true or false, not {v!r}")


def load_seed(spec: Mapping[str, Any] | str | os.PathLike[str]) -> dict[str, Any]:
    """A seed document from a dict, or from a TOML (or JSON) file path."""
    if isinstance(spec, Mapping):
        return dict(spec)
    path = Path(spec)
    data = path.read_bytes()
    if path.suffix == ".json":
        import json

        loaded = json.loads(data)
    else:
        loaded = tomllib.loads(data.decode())
    if not isinstance(loaded, dict):
        raise SeedError(f"{path}: a seed document is a table with topics, groups and messages")
    return loaded


def _norm_named(value: Any, what: str) -> dict[str, dict[str, Any]]:
    """``{"a": {...}}``, ``["a", "b"]`` or ``[{"name": "a", ...}]`` -> ``{"a": {...}}``."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        out = {}
        for name, opts in value.items():
            if opts is None:
                opts = {}
            if not isinstance(opts, Mapping):
                raise SeedError(f"{what} {name!r}: options must be a table, not {opts!r}")
            out[str(name)] = dict(opts)
        return out
    if isinstance(value, (list, tuple)):
        out = {}
        for item in value:
            if isinstance(item, str):
                out[item] = {}
            elif isinstance(item, Mapping) and "name" in item:
                opts = dict(item)
                out[str(opts.pop("name"))] = opts
            else:
                raise SeedError(f"{what}: each entry is a name or a table with a name, not {item!r}")
        return out
    raise SeedError(f"{what} must be a table or a list, not {value!r}")


async def seed(broker: Broker, spec: Mapping[str, Any] | str | os.PathLike[str]) -> dict[str, int]:
    """Create topics and groups, and send messages, from a seed document.

    ``{"topics": {"orders": {"queues": 8}}, "groups": {"billing": {"max_reconsume_times": 3}},
    "messages": [{"topic": "orders", "body": "hello", "tags": "new"}]}``. Everything is checked
    before anything is created, so a typo fails the test instead of seeding half a broker.
    """
    doc = load_seed(spec)
    unknown = set(doc) - {"topics", "groups", "messages"}
    if unknown:
        raise SeedError(f"seed: unknown section(s) {sorted(unknown)}; use topics, groups, messages")
    topics = _norm_named(doc.get("topics"), "topic")
    groups = _norm_named(doc.get("groups"), "group")
    messages = doc.get("messages") or []
    if not isinstance(messages, list):
        raise SeedError("seed: messages must be a list of tables")
    for name, opts in topics.items():
        bad = set(opts) - TOPIC_KEYS
        if bad:
            raise SeedError(f"topic {name!r}: unknown option(s) {sorted(bad)}; known: {sorted(TOPIC_KEYS)}")
        broker.validate_topic_name(name)
        if "order" in opts:
            _bool(opts["order"], f"topic {name!r} order")
    for name, opts in groups.items():
        bad = set(opts) - GROUP_KEYS
        if bad:
            raise SeedError(f"group {name!r}: unknown option(s) {sorted(bad)}; known: {sorted(GROUP_KEYS)}")
        if "consume_orderly" in opts:
            _bool(opts["consume_orderly"], f"group {name!r} consume_orderly")
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or "topic" not in m or "body" not in m:
            raise SeedError(f"seed message #{i}: needs at least topic and body, got {m!r}")
        bad = set(m) - MESSAGE_KEYS
        if bad:
            raise SeedError(f"seed message #{i}: unknown key(s) {sorted(bad)}; known: {sorted(MESSAGE_KEYS)}")
        broker.validate_topic_name(str(m["topic"]))
    for name, opts in topics.items():
        await broker.create_topic(name, **opts)
    for name, opts in groups.items():
        await broker.create_group(name, **opts)
    for m in messages:
        m = dict(m)
        await send(broker, m.pop("topic"), m.pop("body"), **m)
    return {"topics": len(topics), "groups": len(groups), "messages": len(messages)}


@dataclass
class Snapshot:
    """What the broker saw, for failure reports and ``describe()``."""

    topics: dict[str, dict[str, Any]]
    groups: dict[str, dict[str, Any]]
    recent: list[Message]
    #: delayed messages not yet delivered: {"topic", "deliver_at_ms", "msg_id"}
    scheduled: list[dict[str, Any]] = field(default_factory=list)
    #: the broker's clock when the snapshot was taken (epoch ms)
    now_ms: int = 0

    def format(self, *, body_limit: int = 120) -> str:
        lines = []
        user_topics = {k: v for k, v in self.topics.items() if not v.get("system")}
        lines.append(f"topics ({len(user_topics)}):")
        for name, t in sorted(user_topics.items()):
            lines.append(f"  {name}: {t['queues']} queues, {t['messages']} messages, max offsets {t['max_offsets']}")
        if not user_topics:
            lines.append("  (none)")
        lines.append(f"groups ({len(self.groups)}):")
        for name, g in sorted(self.groups.items()):
            offs = ", ".join(f"{t}[{q}]={o}" for (t, q), o in sorted(g["offsets"].items())) or "no committed offsets"
            lines.append(f"  {name}: {len(g['consumers'])} consumer(s) {g['consumers']}; {offs}")
        if not self.groups:
            lines.append("  (none)")
        lines.append(f"recent messages ({len(self.recent)}, newest last):")
        for m in self.recent:
            body = m.body[:body_limit]
            try:
                shown = repr(body.decode())
            except UnicodeDecodeError:
                shown = f"<{len(m.body)} bytes>"
            if len(m.body) > body_limit:
                shown += f"... ({len(m.body)} bytes)"
            extra = "".join(
                f" {k}={v!r}" for k, v in (("tags", m.tags), ("keys", m.keys)) if v
            )
            lines.append(f"  {m.topic}[{m.queue_id}]@{m.queue_offset}{extra} id={m.unique_id} body={shown}")
        if not self.recent:
            lines.append("  (none)")
        if self.scheduled:
            lines.append(f"delayed messages not yet delivered ({len(self.scheduled)}, first 10):")
            for t in self.scheduled[:10]:
                at = int(t["deliver_at_ms"])
                when = datetime.fromtimestamp(at / 1000, timezone.utc).isoformat(timespec="milliseconds")
                due = f" (in {(at - self.now_ms) / 1000:.1f} s)" if self.now_ms else ""
                lines.append(f"  {t['topic']} at {when}{due} id={t['msg_id']}")
        return "\n".join(lines)


async def snapshot(broker: Broker, *, recent: int = 20) -> Snapshot:
    topics: dict[str, dict[str, Any]] = {}
    tail: list[Message] = []
    for name in sorted(broker.topics):
        tc = broker.topics[name]
        qids = queue_ids(broker, name)
        maxes = {q: broker.max_offset(name, q) for q in qids}
        mins = {q: broker.min_offset(name, q) for q in qids}
        topics[name] = {
            "queues": tc.write_queues,
            "messages": sum(maxes[q] - mins[q] for q in qids),
            "max_offsets": [maxes[q] for q in qids],
            "system": tc.system,
        }
        if tc.system:
            continue
        for q in qids:
            start = max(mins[q], maxes[q] - recent)
            if start < maxes[q]:
                res = await broker.pull(name, q, start, recent, wait_ms=0)
                tail.extend(res.messages)
    tail.sort(key=lambda m: (m.store_timestamp, m.commit_offset))
    names = set(broker.groups) | set(broker.clients)
    groups: dict[str, dict[str, Any]] = {}
    for g in sorted(names):
        groups[g] = {
            "consumers": [c.client_id for c in broker.consumers_of(g)],
            "offsets": broker.group_offsets(g),
        }
    scheduled = []
    timers = getattr(broker, "timers", None)
    if timers is not None and hasattr(timers, "pending"):
        for e in timers.pending()[:100]:
            scheduled.append({"topic": e.topic, "deliver_at_ms": e.deliver_at, "msg_id": e.uid})
    return Snapshot(topics, groups, tail[-recent:], scheduled, broker.now_ms())
