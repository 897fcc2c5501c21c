"""The opt-in test-control endpoint: reset, seed, send, peek and receive over HTTP/JSON.

A rocketlite started for tests in another process or a container (``rocketlite serve
--ephemeral --set testing.enabled=true``) exposes these so the pytest plugin (and Java/Go
tests, with any HTTP client) can give every test an empty broker:

========  ==============  ===============================================================
POST      /reset          empty everything (same as the in-process ``reset()``)
POST      /seed           body: a seed document (topics, groups, messages) as JSON
POST      /send           body: {"topic", "body" or "body_b64", "tags", "keys", "properties",
                          "queue_id", "delay_ms", "deliver_at_ms", "delay_level", "message_group"}
GET       /peek           ?topic=T[&queue_id=N][&max_count=N]: messages without consuming
POST      /receive        body: {"topic", "group", "max_count", "timeout"} (seconds)
GET       /state          topics, groups, offsets, recent messages (``?recent=N``); ``text`` is
                          the same as the failure report of the pytest plugin
POST      /advertise      body: {"host", "port"}: the broker address remoting routes name (a
                          container's mapped host and port; like UPDATE_BROKER_CONFIG)
GET       /               what this is, and the listeners
========  ==============  ===============================================================

It is **off by default** and has no authentication: never enable it on a broker holding data
you care about. It listens on ``server.host`` and ``testing.port`` (its own port, shown in the
READY line as ``testing=HOST:PORT``). HTTP/1.1 is spoken through h11 (sans-IO); requests are
limited to 16 MiB.
"""

from __future__ import annotations

import base64
import json
import logging
from functools import partial
from typing import Any
from urllib.parse import parse_qs, urlsplit

import h11
import trio

from rocketlite import __version__
from rocketlite.core.errors import BadRequest
from rocketlite.frontends import FrontEndContext
from rocketlite.testing import _ops
from rocketlite.testing._wire import message_to_json, send_result_to_json, snapshot_to_json

log = logging.getLogger("rocketlite.testing.control")

MAX_BODY = 16 * 1024 * 1024
MAX_RECEIVE_TIMEOUT = 300.0
SEND_OPTIONS = {"tags", "keys", "properties", "queue_id", "delay_ms", "deliver_at_ms", "delay_level", "message_group"}


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Control:
    def __init__(self, ctx: FrontEndContext) -> None:
        self.ctx = ctx
        self.broker = ctx.broker

    async def dispatch(self, method: str, target: str, body: bytes) -> Any:
        parts = urlsplit(target)
        path = parts.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        doc: Any = None
        if method == "POST" and body:
            try:
                doc = json.loads(body)
            except ValueError as exc:
                raise HttpError(400, f"request body is not JSON: {exc}") from None
        routes = {
            ("GET", "/"): self.index,
            ("GET", "/state"): self.state,
            ("POST", "/reset"): self.reset,
            ("POST", "/seed"): self.seed,
            ("POST", "/send"): self.send,
            ("GET", "/peek"): self.peek,
            ("POST", "/receive"): self.receive,
            ("POST", "/advertise"): self.advertise,
        }
        handler = routes.get((method, path))
        if handler is None:
            if any(p == path for _, p in routes):
                raise HttpError(405, f"{method} not allowed on {path}")
            raise HttpError(404, f"no such path {path}; try GET /")
        return await handler(query, doc)

    async def index(self, query: dict[str, str], doc: Any) -> Any:
        remoting = self.ctx.services.get("remoting")
        adv = getattr(getattr(remoting, "service", None), "adv", None)
        return {
            "rocketlite_testing": __version__,
            "listeners": {k: f"{h}:{p}" for k, (h, p) in self.ctx.addresses.items()},
            # the remoting roles' bound ports (nameserver, broker, vip) and the advertised broker address
            "remoting_ports": dict(getattr(remoting, "ports", {}) or {}),
            "remoting_advertised": getattr(adv, "addr", None),
            "paths": ["POST /reset", "POST /seed", "POST /send", "GET /peek", "POST /receive", "GET /state",
                      "POST /advertise"],
        }

    async def state(self, query: dict[str, str], doc: Any) -> Any:
        return snapshot_to_json(await _ops.snapshot(self.broker, recent=_int(query, "recent", 20)))

    async def reset(self, query: dict[str, str], doc: Any) -> Any:
        await _ops.reset(self.broker, self.ctx.services)
        return {"ok": True}

    async def seed(self, query: dict[str, str], doc: Any) -> Any:
        if not isinstance(doc, dict):
            raise HttpError(400, "POST /seed wants a JSON object with topics, groups, messages")
        return await _ops.seed(self.broker, doc)

    async def send(self, query: dict[str, str], doc: Any) -> Any:
        if not isinstance(doc, dict) or "topic" not in doc:
            raise HttpError(400, "POST /send wants a JSON object with at least a topic")
        if "body_b64" in doc:
            body: bytes | str = base64.b64decode(doc["body_b64"])
        else:
            body = str(doc.get("body", ""))
        bad = set(doc) - SEND_OPTIONS - {"topic", "body", "body_b64"}
        if bad:
            raise HttpError(400, f"POST /send: unknown field(s) {sorted(bad)}")
        options = {k: v for k, v in doc.items() if k in SEND_OPTIONS}
        return send_result_to_json(await _ops.send(self.broker, str(doc["topic"]), body, **options))

    async def peek(self, query: dict[str, str], doc: Any) -> Any:
        topic = query.get("topic")
        if not topic:
            raise HttpError(400, "GET /peek needs ?topic=")
        qid = query.get("queue_id")
        msgs = await _ops.peek(
            self.broker, topic, int(qid) if qid not in (None, "") else None, _int(query, "max_count", 1000)
        )
        return {"messages": [message_to_json(m) for m in msgs]}

    async def receive(self, query: dict[str, str], doc: Any) -> Any:
        from rocketlite.testing._inprocess import receive

        if not isinstance(doc, dict) or "topic" not in doc:
            raise HttpError(400, "POST /receive wants a JSON object with at least a topic")
        timeout = min(float(doc.get("timeout", 5.0)), MAX_RECEIVE_TIMEOUT)
        msgs = await receive(
            self.broker,
            str(doc["topic"]),
            group=str(doc.get("group", _ops.DEFAULT_GROUP)),
            max_count=int(doc.get("max_count", 1)),
            timeout=timeout,
        )
        return {"messages": [message_to_json(m) for m in msgs]}


    async def advertise(self, query: dict[str, str], doc: Any) -> Any:
        """Tell remoting clients where the broker is (a container's mapped host and port)."""
        if not isinstance(doc, dict) or not (doc.get("host") or doc.get("port")):
            raise HttpError(400, 'POST /advertise wants {"host": "...", "port": N}')
        remoting = self.ctx.services.get("remoting")
        adv = getattr(getattr(remoting, "service", None), "adv", None)
        if adv is None:
            raise HttpError(409, "the remoting front-end is not running here; nothing to advertise")
        if doc.get("host"):
            host = str(doc["host"])
            adv.host = host
            if host.count(".") == 3 and all(p.isdigit() for p in host.split(".")):
                adv.store_ip = host
        if doc.get("port"):
            port = int(doc["port"])
            if not 0 < port < 65536:
                raise HttpError(400, f"port out of range: {port}")
            adv.port = port
        log.info("test-control: remoting routes now point at %s", adv.addr)
        return {"remoting_broker": adv.addr}


def _int(query: dict[str, str], name: str, default: int) -> int:
    try:
        return int(query.get(name, default))
    except ValueError:
        raise HttpError(400, f"?{name}= must be an integer") from None


async def _respond(stream: trio.SocketStream, conn: h11.Connection, status: int, payload: Any) -> None:
    data = json.dumps(payload).encode()
    headers = [("content-type", "application/json"), ("content-length", str(len(data)))]
    await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers)))
    await stream.send_all(conn.send(h11.Data(data=data)))
    await stream.send_all(conn.send(h11.EndOfMessage()))


async def handle_connection(control: Control, stream: trio.SocketStream) -> None:
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            request: h11.Request | None = None
            body = bytearray()
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    conn.receive_data(data)
                    continue
                if isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > MAX_BODY:
                        await _respond(stream, conn, 413, {"error": f"request body over {MAX_BODY} bytes"})
                        return
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                    return
            assert request is not None
            method = request.method.decode()
            target = request.target.decode()
            try:
                status, payload = 200, await control.dispatch(method, target, bytes(body))
            except HttpError as exc:
                status, payload = exc.status, {"error": str(exc)}
            except (BadRequest, ValueError, KeyError, TypeError) as exc:
                status, payload = 400, {"error": f"{type(exc).__name__}: {exc}"}
            except Exception as exc:  # a bug: report it, keep serving
                log.exception("test-control %s %s failed", method, target)
                status, payload = 500, {"error": f"{type(exc).__name__}: {exc}"}
            await _respond(stream, conn, status, payload)
            if conn.our_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
    except h11.RemoteProtocolError as exc:
        try:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                await _respond(stream, conn, 400, {"error": f"bad HTTP request: {exc}"})
        except (h11.LocalProtocolError, trio.BrokenResourceError):
            pass
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await stream.aclose()


class ControlFrontEnd:
    """Front-end ``testing``: the control endpoint above, enabled by ``testing.enabled = true``."""

    name = "testing"

    async def serve(self, ctx: FrontEndContext, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        host = ctx.settings.host
        port = int(ctx.settings.get("testing", "port", 9877))
        listeners = await trio.open_tcp_listeners(port, host=host)
        bound = listeners[0].socket.getsockname()[1]
        log.warning("test-control endpoint enabled on %s:%s (reset/seed without authentication)", host, bound)
        control = Control(ctx)
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(trio.serve_listeners, partial(handle_connection, control), listeners))
            task_status.started((host, bound))
