"""Retry and dead-letter topics (RocketMQ ``%RETRY%<group>`` / ``%DLQ%<group>``).

Public API (reached through :class:`~rocketlite.core.broker.Broker`)
------------------------------------------------------------------
* ``await broker.send_back(group, msg_or_commit_offset, delay_level=0, max_reconsume_times=None,
  origin_topic="", origin_msg_id="") -> SendResult`` (remoting CONSUMER_SEND_MSG_BACK):
  re-stores the consumed message with ``reconsume_times + 1`` to ``%RETRY%<group>`` (1 queue,
  auto-created) after a delay (``delay_level`` > 0: that level; 0: level ``3 + reconsume_times``;
  so 10 s, 30 s, 1 m, ...), or to ``%DLQ%<group>`` when ``reconsume_times >= max`` (argument, else
  the group's ``max_reconsume_times``, default 16) or ``delay_level < 0``. The copy keeps body,
  flag, properties (unique id included), sys flag, born time/host; ``RETRY_TOPIC`` = original
  topic and ``ORIGIN_MESSAGE_ID`` are set when absent. Raises ``NotFound`` when the commit offset
  is gone. The SendResult's topic is the retry or DLQ topic.
* ``await broker.forward_to_dlq(group, msg) -> SendResult``: store a copy in ``%DLQ%<group>``.
* ``retry_topic(group)``, ``dlq_topic(group)``: the names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rocketlite.core.errors import NotFound
from rocketlite.core.message import PROP_ORIGIN_MSG_ID, PROP_RETRY_TOPIC, Message, SendResult
from rocketlite.core.timers import delay_level_ms

if TYPE_CHECKING:  # pragma: no cover
    from rocketlite.core.broker import Broker

RETRY_PREFIX = "%RETRY%"
DLQ_PREFIX = "%DLQ%"
PROP_DLQ_ORIGIN_TOPIC = "DLQ_ORIGIN_TOPIC"
PROP_DLQ_ORIGIN_MSG_ID = "DLQ_ORIGIN_MESSAGE_ID"


def retry_topic(group: str) -> str:
    return RETRY_PREFIX + group


def dlq_topic(group: str) -> str:
    return DLQ_PREFIX + group


def original_topic(msg: Message) -> str:
    """The topic a consumer subscribed to, for a message read from a retry topic."""
    if msg.topic.startswith(RETRY_PREFIX):
        return msg.properties.get(PROP_RETRY_TOPIC, msg.topic)
    return msg.topic


def _clean(msg: Message) -> Message:
    out = msg.copy(queue_id=0, queue_offset=-1, commit_offset=-1)
    return out


def dead_letter_copy(group: str, msg: Message) -> Message:
    """The copy of ``msg`` that goes to ``%DLQ%<group>`` (queue 0), origin kept in properties."""
    dead = _clean(msg)
    dead.topic = dlq_topic(group)
    dead.properties.setdefault(PROP_DLQ_ORIGIN_TOPIC, original_topic(msg))
    dead.properties.setdefault(PROP_RETRY_TOPIC, original_topic(msg))
    if msg.unique_id:
        dead.properties.setdefault(PROP_DLQ_ORIGIN_MSG_ID, msg.unique_id)
    return dead


async def forward_to_dlq(broker: "Broker", group: str, msg: Message) -> SendResult:
    await broker.get_or_create_topic(dlq_topic(group), queues=1)
    (res,) = await broker._store_batch([dead_letter_copy(group, msg)], route=False)
    return res


async def send_back(
    broker: "Broker",
    group: str,
    msg_or_offset: Message | int,
    delay_level: int = 0,
    max_reconsume_times: int | None = None,
    origin_topic: str = "",
    origin_msg_id: str = "",
) -> SendResult:
    if isinstance(msg_or_offset, Message):
        msg = msg_or_offset
    else:
        found = await broker.get_message(int(msg_or_offset))
        if found is None:
            raise NotFound(f"look message by offset failed, {msg_or_offset}")
        msg = found
    gc = await broker.get_or_create_group(group)
    limit = max_reconsume_times if max_reconsume_times is not None else gc.max_reconsume_times
    new = _clean(msg)
    props = new.properties
    if PROP_RETRY_TOPIC not in props:
        props[PROP_RETRY_TOPIC] = origin_topic or msg.topic
    if PROP_ORIGIN_MSG_ID not in props:
        props[PROP_ORIGIN_MSG_ID] = origin_msg_id or msg.unique_id
    current = msg.reconsume_times
    new.reconsume_times = current + 1
    if current >= limit or delay_level < 0:
        return await forward_to_dlq(broker, group, new)
    name = retry_topic(group)
    await broker.get_or_create_topic(name, queues=gc.retry_queues or 1)
    level = delay_level if delay_level > 0 else 3 + current
    level = min(level, len(broker.delay_levels_ms))
    new.topic = name
    at = broker.now_ms() + delay_level_ms(level, broker.delay_levels_ms)
    (res,) = await broker._store_batch([new], route=False, deliver_at=at)
    return res
