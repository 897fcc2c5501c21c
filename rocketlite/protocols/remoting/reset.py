"""Offset resets over remoting: INVOKE_BROKER_TO_RESET_OFFSET (222) in, RESET_CONSUMER_CLIENT_OFFSET
(220) out, and the pending-reset answers that move running consumers which ignore 220.

Installed on a :class:`~rocketlite.protocols.remoting.handlers.RemotingService` by ``install``
(no I/O, no trio, like the handlers). It adds the 222 handler, registers a listener for
``broker.reset_offsets`` (whoever calls it: this handler, the HTTP admin API, a test) and wraps
three handlers:

* HEART_BEAT: remembers each client's language, which decides the 220 body layout;
* PULL_MESSAGE: while the core holds a pending reset for (group, topic, queue) (see
  rocketlite/core/offset_reset.py), a pull at any other offset is answered PULL_OFFSET_MOVED
  with ``nextBeginOffset`` = the target (RocketMQ 5.x's server-side reset answers the same), and
  a pull parked before the reset that returns afterwards gets that answer instead of the old
  messages. The first pull takes the pending reset. The pull's piggy-backed commit is ignored
  while a reset is pending;
* UPDATE_CONSUMER_OFFSET: ignored (answered SUCCESS) while a reset of that queue is pending, so
  a running consumer does not write its old position back over the reset.

Wire facts (Apache RocketMQ ``Broker2Client.resetOffset``, ``AdminBrokerProcessor.resetOffset``;
rocketmq-client-cpp ``ClientRemotingProcessor::resetOffset``):

* 222 ext: ``topic``, ``group``, ``timestamp`` (ms; -1 = the queues' maximum), ``isForce``
  (false: a queue only moves back, never forward), 5.x ``queueId`` (-1 = all) and ``offset``.
  Unknown topic: TOPIC_NOT_EXIST. No consumer of the group online: CONSUMER_NOT_ONLINE (206) with
  nothing changed; the admin tool then commits the offsets itself (mqadmin and ``rocketlite
  admin resetOffsetByTime`` do). Else SUCCESS with a ResetOffsetBody of what was applied.
* ResetOffsetBody as fastjson writes it: ``{"offsetTable":{{"brokerName":..,"queueId":..,
  "topic":..}:offset,...}}``: object keys, not standard JSON; Java clients parse it with fastjson.
  The C++ client parses standard JSON and reads ``offsetTable`` as an array of
  ``{"brokerName","queueId","topic","offset"}`` (the broker's ResetOffsetBodyForC).
* 220 (oneway) ext ``topic``, ``group``, ``timestamp``, ``isForce``; body a ResetOffsetBody.
  Java clients drop the queue's buffered messages and continue from the new offsets.

Which clients get 220: every remoting consumer of the group subscribed to the topic, except
C++ clients (language ``CPP``): librocketmq 1.x/2.x marks the queue's pull request dropped and
keeps it in its table (by the source, replaced only after 120 s idle); with librocketmq 2.1 a 220
stopped consumption of the reset queues for the 7 minutes watched. Without 220 they follow the pending reset at their next
pull at once (their OFFSET_ILLEGAL handling continues from ``nextBeginOffset``). ali-ons has no
220 handler and also follows the pending reset. See docs/remoting.md.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from rocketlite.core.errors import BadRequest
from rocketlite.protocols.remoting.codec import FLAG_ONEWAY, RemotingCommand, decode_json_body, ext_bool
from rocketlite.protocols.remoting.codec import RequestCode as RC
from rocketlite.protocols.remoting.codec import ResponseCode as R

if TYPE_CHECKING:  # pragma: no cover
    from rocketlite.protocols.remoting.handlers import RemotingService, Session

log = logging.getLogger("rocketlite.remoting")

RESET_CONSUMER_CLIENT_OFFSET = 220
INVOKE_BROKER_TO_RESET_OFFSET = 222
PROTOCOL = "remoting"
# languages that are not sent 220 (see the module docstring); they follow the pending reset
NO_NOTIFY_LANGUAGES = frozenset({"CPP"})


def encode_reset_body(broker_name: str, topic: str, offsets: dict[int, int]) -> bytes:
    """A ResetOffsetBody the way fastjson writes it (Java clients, admin tools)."""
    items = []
    for q, off in sorted(offsets.items()):
        key = f'{{"brokerName":{json.dumps(broker_name)},"queueId":{int(q)},"topic":{json.dumps(topic)}}}'
        items.append(f"{key}:{int(off)}")
    return ('{"offsetTable":{' + ",".join(items) + "}}").encode()


def encode_reset_body_c(broker_name: str, topic: str, offsets: dict[int, int]) -> bytes:
    """The C++ layout (ResetOffsetBodyForC): standard JSON, an array of queues with offsets."""
    table = [{"brokerName": broker_name, "offset": int(off), "queueId": q, "topic": topic}
             for q, off in sorted(offsets.items())]
    return json.dumps({"offsetTable": table}, separators=(",", ":")).encode()


class RemotingResets:
    """The 222 handler, the 220 pushes and the pending-reset wrappers of one RemotingService."""

    def __init__(self, service: RemotingService) -> None:
        self.service = service
        self.broker = service.broker
        self.languages: dict[str, str] = {}  # client id -> language of its last heartbeat
        self._heartbeat = service.handlers[RC.HEART_BEAT]
        self._pull = service.handlers[RC.PULL_MESSAGE]
        self._update_offset = service.handlers[RC.UPDATE_CONSUMER_OFFSET]
        service.handlers[RC.HEART_BEAT] = self.heartbeat
        service.handlers[RC.PULL_MESSAGE] = self.pull_message
        service.handlers[RC.UPDATE_CONSUMER_OFFSET] = self.update_consumer_offset
        service.handlers[INVOKE_BROKER_TO_RESET_OFFSET] = self.invoke_reset
        self.broker.resets.listeners.append(self.notify)

    # -- 222 -----------------------------------------------------------------------------------
    async def invoke_reset(self, session: Session, cmd: RemotingCommand) -> RemotingCommand:
        ext = cmd.ext
        topic, group = ext.get("topic") or "", ext.get("group") or ""
        if not topic or not group:
            raise BadRequest("topic and group are required")
        b = self.broker
        if topic not in b.topics:
            return cmd.response(R.TOPIC_NOT_EXIST,
                                remark=f"[reset-offset] reset offset failed, no topic in this broker. topic={topic}")
        timestamp = int(ext.get("timestamp") or -1)
        force = ext_bool(ext.get("isForce"), False)
        queue_id = int(ext.get("queueId") or -1)
        offset = ext.get("offset")
        if not b.consumers_of(group):
            return cmd.response(R.CONSUMER_NOT_ONLINE, remark=(
                f"Consumer not online, so can not reset offset, Group: {group} Topic: {topic} Timestamp: {timestamp}"))
        if queue_id >= 0 and offset not in (None, "", "-1"):
            off = int(offset)  # type: ignore[arg-type]
            lo, hi = b.min_offset(topic, queue_id), b.max_offset(topic, queue_id)
            if off < lo or off > hi:
                return cmd.response(R.SYSTEM_ERROR,
                                    remark=f"Target offset {off} not in consume queue range [{lo}-{hi}]")
            targets = {queue_id: off}
        else:
            targets = await b.resets.targets_for_time(topic, timestamp, queue_id if queue_id >= 0 else None)
        if not force:  # only move back
            for q, off in list(targets.items()):
                cur = b.query_offset(group, topic, q)
                if cur is not None and cur < off:
                    targets[q] = cur
        applied = await b.reset_offsets(group, topic, targets)
        log.info("remoting: %s reset %s on %s to %s", session.peer, group, topic, applied)
        return cmd.response(body=encode_reset_body(b.settings.broker_name, topic, applied))

    # -- 220 -----------------------------------------------------------------------------------
    def notify(self, group: str, topic: str, offsets: dict[int, int]) -> None:
        """Tell the group's remoting consumers of ``topic`` (a listener of broker.reset_offsets)."""
        name = self.broker.settings.broker_name
        bodies: dict[bool, bytes] = {}
        ext = {"topic": topic, "group": group, "timestamp": str(self.broker.now_ms()), "isForce": "true"}
        for c in self.broker.consumers_of(group):
            if c.protocol != PROTOCOL or c.session is None or (c.subscriptions and topic not in c.subscriptions):
                continue
            lang = self.languages.get(c.client_id, "JAVA")
            if lang in NO_NOTIFY_LANGUAGES:
                continue
            c_layout = lang == "CPP"
            body = bodies.get(c_layout)
            if body is None:
                body = bodies[c_layout] = (encode_reset_body_c if c_layout else encode_reset_body)(name, topic, offsets)
            c.session.send_soon(RemotingCommand(code=RESET_CONSUMER_CLIENT_OFFSET, flag=FLAG_ONEWAY, ext=dict(ext),
                                                body=body))

    # -- wrapped handlers ----------------------------------------------------------------------
    async def heartbeat(self, session: Session, cmd: RemotingCommand) -> RemotingCommand | None:
        resp = await self._heartbeat(session, cmd)
        try:
            data: Any = decode_json_body(cmd.body) or {}
            cid = str(data.get("clientID") or data.get("clientId") or "")
        except (ValueError, AttributeError):
            cid = ""
        if cid and self.languages.get(cid) != cmd.language:
            self.languages[cid] = cmd.language
            if len(self.languages) > 2 * sum(len(m) for m in self.broker.clients.values()) + 64:
                online = {c for m in self.broker.clients.values() for c in m}
                online.update(c for m in self.broker.producers.values() for c in m)
                self.languages = {k: v for k, v in self.languages.items() if k in online}
        return resp

    async def pull_message(self, session: Session, cmd: RemotingCommand) -> RemotingCommand | None:
        resets = self.broker.resets
        ext = cmd.ext
        try:
            key = (ext["consumerGroup"], ext["topic"], int(ext["queueId"]))
            offset = int(ext["queueOffset"])
        except (KeyError, ValueError):
            return await self._pull(session, cmd)  # the handler reports what is missing
        target = resets.take(*key)
        if target is not None:
            if offset != target:
                return self._moved(cmd, key[1], key[2], target)
            flag = ext.get("sysFlag")
            if flag and flag.lstrip("-").isdigit() and int(flag) & 1:  # no piggy-backed commit of the old position
                cmd.ext = {**ext, "sysFlag": str(int(flag) & ~1)}
        resp = await self._pull(session, cmd)
        late = resets.take(*key)  # a reset while this pull was parked
        if late is not None and late != offset:
            return self._moved(cmd, key[1], key[2], late)
        return resp

    def _moved(self, cmd: RemotingCommand, topic: str, queue_id: int, target: int) -> RemotingCommand:
        b = self.broker
        return cmd.response(R.PULL_OFFSET_MOVED, remark="OFFSET_RESET", ext={
            "suggestWhichBrokerId": 0, "nextBeginOffset": target,
            "minOffset": b.min_offset(topic, queue_id), "maxOffset": b.max_offset(topic, queue_id)})

    async def update_consumer_offset(self, session: Session, cmd: RemotingCommand) -> RemotingCommand | None:
        ext = cmd.ext
        try:
            pending = self.broker.resets.pending(ext["consumerGroup"], ext["topic"], int(ext["queueId"]))
        except (KeyError, ValueError):
            pending = None
        if pending is not None:
            return cmd.response(remark="Offset has been previously reset")
        return await self._update_offset(session, cmd)


def install(service: RemotingService) -> RemotingResets:
    return RemotingResets(service)
