"""Which topics/groups a remoting request touches, for the ACL (pure: codes and ext fields only)."""

from __future__ import annotations

import json
from typing import Mapping

from rocketlite.protocols.remoting.codec import RequestCode as RC
from rocketlite.security.acl import PUB, SUB

ADMIN_CODES = {
    RC.UPDATE_AND_CREATE_TOPIC, RC.DELETE_TOPIC_IN_BROKER, RC.DELETE_TOPIC_IN_NAMESRV,
    RC.UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, RC.DELETE_SUBSCRIPTIONGROUP, RC.UPDATE_BROKER_CONFIG,
}
# requests that only need a valid signature (routes, cluster info, offsets by timestamp, ...)


def resources(code: int, ext: Mapping[str, str], body: bytes) -> list[tuple[str, str, str]]:
    """(kind, name, action) triples the request needs: kind is topic, group or admin."""
    g = ext.get
    if code in ADMIN_CODES:
        return [("admin", f"request code {code}", "")]
    if code in (RC.SEND_MESSAGE, RC.SEND_MESSAGE_V2, RC.SEND_BATCH_MESSAGE):
        return [("topic", g("b") or g("topic") or "", PUB)]
    if code == RC.CONSUMER_SEND_MSG_BACK:
        return [("group", g("group") or "", SUB)]
    if code in (RC.PULL_MESSAGE, RC.QUERY_CONSUMER_OFFSET, RC.UPDATE_CONSUMER_OFFSET, RC.POP_MESSAGE,
                RC.PEEK_MESSAGE, RC.ACK_MESSAGE, RC.CHANGE_MESSAGE_INVISIBLETIME):
        return [("topic", g("topic") or "", SUB), ("group", g("consumerGroup") or "", SUB)]
    if code in (RC.QUERY_MESSAGE, RC.VIEW_MESSAGE_BY_ID):
        return [("topic", g("topic") or "", SUB)]
    if code in (RC.GET_CONSUMER_LIST_BY_GROUP, RC.UNREGISTER_CLIENT):
        return [("group", g("consumerGroup") or "", SUB)]
    if code == RC.HEART_BEAT:
        out: list[tuple[str, str, str]] = []
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            return out
        for c in data.get("consumerDataSet") or [] if isinstance(data, dict) else []:
            if not isinstance(c, dict):
                continue
            out.append(("group", str(c.get("groupName") or ""), SUB))
            for s in c.get("subscriptionDataSet") or []:
                if isinstance(s, dict):
                    out.append(("topic", str(s.get("topic") or ""), SUB))
        return out
    return []


def check(acl: object, code: int, ext: Mapping[str, str], body: bytes) -> str | None:
    """None when the request may run, else the reason (sent back with code NO_PERMISSION)."""
    from rocketlite.security.acl import Acl, AuthError, Denied

    assert isinstance(acl, Acl)
    try:
        acc = acl.verify_remoting(ext, body)
        acl.authorize(acc, resources(code, ext, body))
    except (AuthError, Denied) as exc:
        return str(exc)
    return None
