"""Edge-to-cloud bridges: store-and-forward to an upstream RocketMQ, and commands back down.

Declared in config as ``[bridges.<name>]`` tables (see docs/bridge.md):

* forward: chosen local topics (and MQTT topic filters, matched on ``originMqttTopic``) are sent to
  an upstream RocketMQ reached through its remoting NameServer, each local queue in order, at least
  once; the position per (topic, queue) is the committed offset of the local consumer group
  ``rocketlite-bridge-<name>`` (durable in the store), so a restart resumes where it stopped.
* reverse: upstream topics are pulled with an upstream consumer group (offsets kept upstream) and
  published locally, where MQTT subscribers and every other protocol see them.

:mod:`rocketlite.bridge.config` is pure (parsing, queue mapping, message translation);
:mod:`rocketlite.bridge.upstream` is the Trio remoting client; :mod:`rocketlite.bridge.service`
runs the bridges inside the app's nursery.
"""

from rocketlite.bridge.config import BridgeConfig, parse_bridges

__all__ = ["BridgeConfig", "parse_bridges"]
