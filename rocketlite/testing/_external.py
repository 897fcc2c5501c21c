"""Pointing the same tests at a rocketlite in another process or container.

The endpoints come from a spec (``--rocketlite-external`` / ``ROCKETLITE_EXTERNAL``); reset,
seed, send, peek and receive go through the opt-in test-control endpoint
(:mod:`rocketlite.testing.control`, ``testing=HOST:PORT`` in the READY line). Without it the
endpoints still work but those calls raise :class:`ControlUnavailable`.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Mapping

from rocketlite.core.message import Message, SendResult
from rocketlite.testing import _ops
from rocketlite.testing._endpoints import Endpoints
from rocketlite.testing._wire import message_from_json, snapshot_from_json

#: Positional order for ``HOST:PORT,PORT,...`` and the ports assumed for a bare ``HOST``.
DEFAULT_PORTS: dict[str, int] = {"remoting": 9876, "grpc": 8081, "mqtt": 1883, "http": 8080, "testing": 9877}

SPEC_HELP = (
    "use the READY line ('READY remoting=127.0.0.1:9876 grpc=127.0.0.1:8081 ... testing=127.0.0.1:9877'), "
    "'HOST:remoting=9876,grpc=8081,mqtt=1883,http=8080,testing=9877', "
    "'HOST:9876,8081,1883,8080,9877' (remoting, grpc, mqtt, http, testing), or a bare 'HOST' for the default ports"
)


class ControlUnavailable(RuntimeError):
    """The external broker has no test-control endpoint, so reset/seed/peek cannot reach it."""


def parse_external(spec: str) -> dict[str, tuple[str, int]]:
    """Listener addresses from an external-broker spec (see :data:`SPEC_HELP`)."""
    text = spec.strip()
    if text.startswith("READY"):
        text = text[len("READY") :]
    items = [p for p in text.replace(",", " ").split() if p]
    if not items:
        raise ValueError(f"empty rocketlite external spec; {SPEC_HELP}")
    out: dict[str, tuple[str, int]] = {}
    try:
        if all("=" in p for p in items) and all(":" in p.partition("=")[2] for p in items):
            for p in items:
                name, _, hostport = p.partition("=")
                host, _, port = hostport.rpartition(":")
                out[name] = (host, int(port))
            return out
        host, sep, rest = items[0].partition(":")
        tail = ([rest] if rest else []) + items[1:]
        if not sep and len(items) == 1:
            return {name: (host, port) for name, port in DEFAULT_PORTS.items()}
        names = list(DEFAULT_PORTS)
        for i, p in enumerate(tail):
            if "=" in p:
                name, _, port = p.partition("=")
                out[name] = (host, int(port))
            else:
                if i >= len(names):
                    raise ValueError("too many ports")
                out[names[i]] = (host, int(p))
    except ValueError as exc:
        raise ValueError(f"cannot read rocketlite external spec {spec!r} ({exc}); {SPEC_HELP}") from None
    if not out:
        raise ValueError(f"no ports in rocketlite external spec {spec!r}; {SPEC_HELP}")
    return out


class ExternalRocketlite(Endpoints):
    """The same blocking surface as :class:`~rocketlite.testing.RocketliteServer`, for a broker elsewhere."""

    external = True

    def __init__(self, spec: str | Mapping[str, tuple[str, int]], *, timeout: float = 30.0) -> None:
        addresses = parse_external(spec) if isinstance(spec, str) else dict(spec)
        self.spec = spec
        self.timeout = timeout
        super().__init__(addresses)

    # lifecycle: nothing to start, but check that something listens
    def start(self) -> "ExternalRocketlite":
        errors = []
        for name, (host, port) in self.addresses.items():
            try:
                with socket.create_connection((host, port), timeout=5):
                    return self
            except OSError as exc:
                errors.append(f"{name}={host}:{port}: {exc}")
        raise ConnectionError("no external rocketlite answers at " + "; ".join(errors))

    def stop(self) -> None:
        return None

    def __enter__(self) -> "ExternalRocketlite":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def has_control(self) -> bool:
        return "testing" in self.addresses

    @property
    def control_url(self) -> str:
        if not self.has_control:
            raise ControlUnavailable(
                "the external rocketlite has no test-control endpoint, so reset/seed/send/peek/receive cannot "
                "reach it. Start it with `rocketlite serve --ephemeral --set testing.enabled=true` (or "
                "ROCKETLITE_TESTING_ENABLED=true) and pass its READY line, including testing=HOST:PORT, as "
                "--rocketlite-external."
            )
        return f"http://{self.endpoint('testing')}"

    def _request(self, method: str, path: str, doc: Any = None, timeout: float | None = None) -> Any:
        data = None if doc is None else json.dumps(doc).encode()
        req = urllib.request.Request(self.control_url + path, data=data, method=method)
        if data is not None:
            req.add_header("content-type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read()).get("error", "")
            except ValueError:
                detail = ""
            if exc.code == 400:
                raise ValueError(f"rocketlite {method} {path}: {detail}") from None
            raise RuntimeError(f"rocketlite {method} {path}: HTTP {exc.code} {detail}") from None

    def reset(self) -> None:
        self._request("POST", "/reset")

    def seed(self, spec: Mapping[str, Any] | str | os.PathLike[str]) -> dict[str, int]:
        result: dict[str, int] = self._request("POST", "/seed", _ops.load_seed(spec))
        return result

    def send(self, topic: str, body: bytes | str = b"", **options: Any) -> SendResult:
        import base64

        if isinstance(body, str):
            body = body.encode()
        if "keys" in options and not isinstance(options["keys"], str):
            options["keys"] = " ".join(options["keys"])
        doc = {"topic": topic, "body_b64": base64.b64encode(body).decode(), **options}
        r = self._request("POST", "/send", doc)
        return SendResult(
            topic=r["topic"], queue_id=r["queue_id"], queue_offset=r["queue_offset"],
            commit_offset=r["commit_offset"], unique_id=r["msg_id"], transaction_id=r.get("transaction_id", ""),
        )

    def peek(self, topic: str, queue_id: int | None = None, max_count: int = 1000) -> list[Message]:
        q = {"topic": topic, "max_count": max_count}
        if queue_id is not None:
            q["queue_id"] = queue_id
        r = self._request("GET", "/peek?" + urllib.parse.urlencode(q))
        return [message_from_json(m) for m in r["messages"]]

    def receive(
        self, topic: str, *, group: str = _ops.DEFAULT_GROUP, max_count: int = 1, timeout: float = 5.0
    ) -> list[Message]:
        doc = {"topic": topic, "group": group, "max_count": max_count, "timeout": timeout}
        r = self._request("POST", "/receive", doc, timeout=timeout + self.timeout)
        return [message_from_json(m) for m in r["messages"]]

    def advertise(self, host: str | None = None, port: int | None = None) -> str:
        """Point remoting routes at ``host:port`` (a container's mapped address); returns the new address."""
        r = self._request("POST", "/advertise", {"host": host, "port": port})
        return str(r["remoting_broker"])

    def snapshot(self, recent: int = 20) -> _ops.Snapshot:
        return snapshot_from_json(self._request("GET", f"/state?recent={int(recent)}"))

    def describe(self, recent: int = 20) -> str:
        return self.snapshot(recent).format()


class AsyncExternal(Endpoints):
    """:class:`ExternalRocketlite` with the ``await``-able surface of the Trio handle."""

    external = True

    def __init__(self, sync: ExternalRocketlite) -> None:
        self.sync = sync
        super().__init__(sync.addresses, sync.websocket_path)

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        import functools

        import trio

        return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))

    async def reset(self) -> None:
        await self._run(self.sync.reset)

    async def seed(self, spec: Mapping[str, Any] | str | os.PathLike[str]) -> dict[str, int]:
        result: dict[str, int] = await self._run(self.sync.seed, spec)
        return result

    async def send(self, topic: str, body: bytes | str = b"", **options: Any) -> SendResult:
        result: SendResult = await self._run(self.sync.send, topic, body, **options)
        return result

    async def peek(self, topic: str, queue_id: int | None = None, max_count: int = 1000) -> list[Message]:
        result: list[Message] = await self._run(self.sync.peek, topic, queue_id, max_count)
        return result

    async def receive(
        self, topic: str, *, group: str = _ops.DEFAULT_GROUP, max_count: int = 1, timeout: float = 5.0
    ) -> list[Message]:
        result: list[Message] = await self._run(
            self.sync.receive, topic, group=group, max_count=max_count, timeout=timeout
        )
        return result

    async def snapshot(self, recent: int = 20) -> _ops.Snapshot:
        result: _ops.Snapshot = await self._run(self.sync.snapshot, recent)
        return result

    async def describe(self, recent: int = 20) -> str:
        result: str = await self._run(self.sync.describe, recent)
        return result
