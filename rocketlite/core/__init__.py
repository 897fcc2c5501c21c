"""The protocol-free domain: messages, topics and queues, the Broker service.

Nothing in this package imports trio, lmdb, hypercorn or any protocol module (an
import-linter contract in pyproject.toml and tests/unit/test_layering.py guard it).
Time, events and background waiting come through :class:`rocketlite.core.runtime.Runtime`.
"""

from rocketlite.core.message import Message, SendResult, tag_hash
from rocketlite.core.broker import Broker, BrokerSettings, PullResult, PullStatus

__all__ = ["Broker", "BrokerSettings", "Message", "PullResult", "PullStatus", "SendResult", "tag_hash"]
