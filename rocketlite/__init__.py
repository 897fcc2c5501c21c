"""rocketlite: one small Trio process that real RocketMQ and MQTT clients talk to."""

__version__ = "0.1.0"
