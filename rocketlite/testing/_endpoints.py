"""Where clients connect: endpoint helpers shared by every test-double flavour."""

from __future__ import annotations


class EndpointUnavailable(RuntimeError):
    """The broker has no listener for that protocol (not enabled, or not built in this version)."""


class Endpoints:
    """Endpoint helpers over ``addresses`` (front-end name -> (host, port), as in the READY line)."""

    def __init__(self, addresses: dict[str, tuple[str, int]], websocket_path: str = "/mqtt") -> None:
        self.addresses = addresses
        self.websocket_path = websocket_path

    def __repr__(self) -> str:
        where = " ".join(f"{k}={h}:{p}" for k, (h, p) in self.addresses.items()) or "not running"
        return f"<{type(self).__name__} {where}>"

    def address(self, protocol: str) -> tuple[str, int]:
        """``(host, port)`` of a front-end, or :class:`EndpointUnavailable` saying what is running."""
        try:
            return self.addresses[protocol]
        except KeyError:
            running = ", ".join(sorted(self.addresses)) or "none"
            raise EndpointUnavailable(
                f"rocketlite has no {protocol} listener here (running: {running}). Either this rocketlite "
                f"version does not include the {protocol} front-end yet, or it was not enabled "
                f"(protocols=... / --rocketlite-protocols)."
            ) from None

    def endpoint(self, protocol: str) -> str:
        host, port = self.address(protocol)
        return f"{host}:{port}"

    @property
    def namesrv_addr(self) -> str:
        """``"127.0.0.1:port"`` for RocketMQ remoting clients (``setNamesrvAddr``, ``NAMESRV_ADDR``)."""
        return self.endpoint("remoting")

    @property
    def broker_addr(self) -> str:
        """``"127.0.0.1:port"`` of the remoting Broker role (what routes point at)."""
        return self.endpoint("broker")

    @property
    def grpc_endpoint(self) -> str:
        """``"127.0.0.1:port"`` for RocketMQ 5 gRPC clients (``ClientConfiguration`` endpoints)."""
        return self.endpoint("grpc")

    @property
    def mqtt_host(self) -> str:
        return self.address("mqtt")[0]

    @property
    def mqtt_port(self) -> int:
        return self.address("mqtt")[1]

    @property
    def http_url(self) -> str:
        return f"http://{self.endpoint('http')}"

    @property
    def mqtt_ws_url(self) -> str:
        """``ws://127.0.0.1:<http port>/mqtt``: MQTT over WebSocket (needs the mqtt and http front-ends)."""
        self.address("mqtt")
        return f"ws://{self.endpoint('http')}{self.websocket_path}"
