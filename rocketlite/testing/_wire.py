"""JSON shapes of messages and snapshots on the test-control endpoint (no trio here)."""

from __future__ import annotations

import base64
from typing import Any

from rocketlite.core.message import Message, SendResult, message_fields
from rocketlite.testing import _ops


def message_to_json(m: Message) -> dict[str, Any]:
    out: dict[str, Any] = {
        **message_fields(m),
        "msg_id": m.unique_id,
        "body_b64": base64.b64encode(m.body).decode(),
    }
    try:
        out["body"] = m.body.decode()
    except UnicodeDecodeError:
        pass
    return out


def message_from_json(d: dict[str, Any]) -> Message:
    return Message(
        topic=d["topic"],
        body=base64.b64decode(d["body_b64"]),
        queue_id=int(d.get("queue_id", -1)),
        tags=d.get("tags", ""),
        keys=d.get("keys", ""),
        properties=dict(d.get("properties") or {}),
        flag=int(d.get("flag", 0)),
        sys_flag=int(d.get("sys_flag", 0)),
        born_timestamp=int(d.get("born_timestamp", 0)),
        born_host=d.get("born_host", ""),
        store_timestamp=int(d.get("store_timestamp", 0)),
        reconsume_times=int(d.get("reconsume_times", 0)),
        queue_offset=int(d.get("queue_offset", -1)),
        commit_offset=int(d.get("commit_offset", -1)),
    )


def send_result_to_json(r: SendResult) -> dict[str, Any]:
    return {
        "topic": r.topic,
        "queue_id": r.queue_id,
        "queue_offset": r.queue_offset,
        "commit_offset": r.commit_offset,
        "msg_id": r.unique_id,
        "transaction_id": r.transaction_id,
    }


def snapshot_to_json(s: _ops.Snapshot) -> dict[str, Any]:
    return {
        "topics": s.topics,
        "groups": {
            g: {"consumers": v["consumers"], "offsets": [[t, q, o] for (t, q), o in sorted(v["offsets"].items())]}
            for g, v in s.groups.items()
        },
        "recent": [message_to_json(m) for m in s.recent],
        "scheduled": s.scheduled,
        "now_ms": s.now_ms,
        "text": s.format(),
    }


def snapshot_from_json(d: dict[str, Any]) -> _ops.Snapshot:
    groups = {
        g: {"consumers": v["consumers"], "offsets": {(t, int(q)): int(o) for t, q, o in v["offsets"]}}
        for g, v in d.get("groups", {}).items()
    }
    return _ops.Snapshot(d.get("topics", {}), groups, [message_from_json(m) for m in d.get("recent", [])],
        list(d.get("scheduled", [])),
        int(d.get("now_ms", 0)),
    )
