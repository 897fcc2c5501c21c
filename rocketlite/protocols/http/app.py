"""The operations app on the HTTP port: JSON admin API (/api/...), /metrics and the web console (/).

``build_app(ctx)`` returns a plain ASGI callable; rocketlite/protocols/http/server.py hands it
every request other than /health, /ready and WebSocket routes. Everything goes through
``ctx.broker``; nothing here touches storage except ``store.stats()`` for metrics.

The API is described by an OpenAPI 3 document at /api/openapi.json (see openapi.py). When the
setting ``http.admin_token`` is non-empty, every /api/ path but the OpenAPI document requires
``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qs

from rocketlite import __version__
from rocketlite.core.broker import Broker, ClientInfo
from rocketlite.core.errors import BadRequest, BrokerError, NotFound, TopicNotFound
from rocketlite.core.message import (
    PROP_ORIGIN_MSG_ID,
    PROP_RETRY_TOPIC,
    PROP_UNIQ_KEY,
    Message,
    message_fields,
)
from rocketlite.frontends import FrontEndContext
from rocketlite.metrics import METRICS, Registry, Sample, label_key

log = logging.getLogger("rocketlite.http")

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_BODY = 8 * 1024 * 1024
PREVIEW_BYTES = 4096
Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


class HttpError(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.extra = extra


class Request:
    """One admin API request (a plain class: a dataclass costs ~2 M instructions at import)."""

    __slots__ = ("method", "path", "query", "headers", "body", "params")

    def __init__(self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes,
                 params: dict[str, str] | None = None) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.params: dict[str, str] = {} if params is None else params

    def json(self) -> dict[str, Any]:
        if not self.body.strip():
            return {}
        try:
            data = json.loads(self.body)
        except ValueError as exc:
            raise HttpError(400, f"request body is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise HttpError(400, "request body must be a JSON object")
        return data

    def qint(self, name: str, default: int | None = None) -> int | None:
        v = self.query.get(name)
        if v is None or v == "":
            return default
        try:
            return int(v)
        except ValueError:
            raise HttpError(400, f"query parameter {name} must be an integer") from None


class Response:
    __slots__ = ("status", "body", "content_type", "headers")

    def __init__(self, status: int = 200, body: bytes = b"", content_type: str = "application/json",
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers: list[tuple[bytes, bytes]] = [] if headers is None else headers


def json_response(data: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(data, default=str).encode())


# -- JSON shapes --------------------------------------------------------------------------------


def body_fields(body: bytes, full: bool = False) -> dict[str, Any]:
    head = body if full else body[:PREVIEW_BYTES]
    try:
        text: str | None = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # a preview cut in the middle of a character is still text
        cut = len(body) > len(head) and exc.start >= len(head) - 3 and exc.start > 0
        text = head[: exc.start].decode() if cut else None
    out: dict[str, Any] = {
        "body_size": len(body),
        "body_text": text,
        "body_truncated": len(body) > len(head),
    }
    if text is None or full:
        out["body_base64"] = base64.b64encode(head).decode()
    return out


def delivery_state(broker: Broker, m: Message) -> list[dict[str, Any]]:
    """Per consumer group: consumed (committed offset beyond it) or pending."""
    out = []
    for group in sorted(broker.groups_consuming(m.topic)):
        committed = broker.query_offset(group, m.topic, m.queue_id)
        if committed is None:
            state = "NOT_CONSUMED_YET"
        elif committed > m.queue_offset:
            state = "CONSUMED"
        else:
            state = "NOT_CONSUMED_YET"
        out.append({"group": group, "state": state, "consumer_offset": committed})
    return out


def message_json(broker: Broker, m: Message, *, full_body: bool = False) -> dict[str, Any]:
    return {
        "unique_id": m.unique_id,
        **message_fields(m),
        **body_fields(m.body, full_body),
        "delivery": delivery_state(broker, m),
    }


def client_json(c: ClientInfo) -> dict[str, Any]:
    return {
        "client_id": c.client_id,
        "group": c.group,
        "role": c.role,
        "protocol": c.protocol,
        "consume_type": c.consume_type,
        "message_model": c.message_model,
        "orderly": c.orderly,
        "last_seen_ms": c.last_seen_ms,
        "subscriptions": {t: s.expression for t, s in c.subscriptions.items()},
    }


def queue_stats(broker: Broker, topic: str) -> list[dict[str, Any]]:
    return [
        {"queue_id": q, "min_offset": broker.min_offset(topic, q), "max_offset": broker.max_offset(topic, q)}
        for q in broker.topic_queue_ids(topic)
    ]


def topic_json(broker: Broker, name: str, *, detail: bool = False) -> dict[str, Any]:
    tc = broker.topics[name]
    queues = queue_stats(broker, name)
    out: dict[str, Any] = {
        "name": tc.name,
        "read_queues": tc.read_queues,
        "write_queues": tc.write_queues,
        "perm": tc.perm,
        "message_type": tc.message_type,
        "order": tc.order,
        "system": tc.system,
        "attributes": dict(tc.attributes),
        "messages": sum(q["max_offset"] - q["min_offset"] for q in queues),
        "appended": sum(q["max_offset"] for q in queues),
    }
    if detail:
        out["queues"] = queues
        out["groups"] = sorted(broker.groups_consuming(name))
    return out


def all_groups(broker: Broker) -> list[str]:
    names = set(broker.groups) | set(broker.clients)
    for t in list(broker.topics):
        names |= broker.groups_consuming(t)
    return sorted(n for n in names if n)


def group_topics(broker: Broker, group: str) -> list[str]:
    topics = {t for (t, _q) in broker.group_offsets(group)}
    for c in broker.consumers_of(group):
        topics |= set(c.subscriptions)
    return sorted(t for t in topics if t in broker.topics)


def group_progress(broker: Broker, group: str) -> list[dict[str, Any]]:
    offsets = broker.group_offsets(group)
    out = []
    for topic in group_topics(broker, group):
        queues = []
        for q in broker.topic_queue_ids(topic):
            hi = broker.max_offset(topic, q)
            lo = broker.min_offset(topic, q)
            committed = offsets.get((topic, q))
            lag = max(0, hi - (committed if committed is not None else lo))
            queues.append({"queue_id": q, "broker_offset": hi, "min_offset": lo,
                           "consumer_offset": committed, "lag": lag})
        entry: dict[str, Any] = {"topic": topic, "lag": sum(x["lag"] for x in queues), "queues": queues}
        pops = getattr(broker, "pops", None)
        if pops is not None and hasattr(pops, "inflight"):
            try:  # POP / gRPC simple consumers: messages handed out and not yet acknowledged
                entry["pop_inflight"] = len(pops.inflight(group, topic))
            except Exception:
                pass
        out.append(entry)
    return out


def group_summary(broker: Broker, group: str) -> dict[str, Any]:
    progress = group_progress(broker, group)
    gc = broker.groups.get(group)
    return {
        "name": group,
        "declared": gc is not None,
        "clients": len(broker.consumers_of(group)),
        "topics": [p["topic"] for p in progress],
        "lag": sum(p["lag"] for p in progress),
    }


# -- MQTT (whatever the MQTT front-end shares in ctx.services["mqtt"]) ---------------------------


def _call_or_value(obj: Any, *names: str) -> Any:
    for name in names:
        v = getattr(obj, name, None)
        if v is None and isinstance(obj, dict):
            v = obj.get(name)
        if v is None:
            continue
        if callable(v):
            try:
                v = v()
            except TypeError:
                continue
        return v
    return None


def _jsonable(items: Any) -> list[Any]:
    if items is None:
        return []
    if isinstance(items, dict):
        items = [{"id": k, **v} if isinstance(v, dict) else {"id": k, "value": str(v)} for k, v in items.items()]
    out = []
    for it in items:
        if isinstance(it, (dict, str, int, float)):
            out.append(it)
        elif hasattr(it, "__dataclass_fields__"):
            out.append({k: getattr(it, k) for k in it.__dataclass_fields__ if not k.startswith("_")})
        else:
            out.append(str(it))
    return json.loads(json.dumps(out, default=lambda o: o.hex() if isinstance(o, bytes) else str(o)))


MQTT_VERSIONS = {3: "3.1", 4: "3.1.1", 5: "5.0"}


def _preview(payload: Any, limit: int = 120) -> str:
    if not isinstance(payload, (bytes, bytearray)):
        return str(payload)[:limit]
    try:
        text = bytes(payload[:limit]).decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + bytes(payload[: limit // 2]).hex()
    return text + ("…" if len(payload) > limit else "")


def _manager_snapshot(svc: Any) -> dict[str, Any]:
    """Read an MQTT manager shaped like rocketlite.protocols.mqtt.manager.MqttManager."""
    online = dict(getattr(svc, "online", {}) or {})
    sessions = dict(getattr(svc, "sessions", {}) or {})
    clients = []
    for cid, conn in sorted(online.items()):
        sess = getattr(conn, "session", None) or sessions.get(cid)
        clients.append({
            "client_id": cid,
            "peer": str(getattr(conn, "peer", "")),
            "protocol": "MQTT " + MQTT_VERSIONS.get(int(getattr(conn, "version", 0) or 0), "?"),
            "keep_alive": int(getattr(sess, "keep_alive", 0) or 0),
            "subscriptions": len(getattr(sess, "subscriptions", {}) or {}),
        })
    out_sessions = []
    offline_since = dict(getattr(svc, "offline_since", {}) or {})
    for cid, sess in sorted(sessions.items()):
        subs = getattr(sess, "subscriptions", {}) or {}
        out_sessions.append({
            "client_id": cid,
            "connected": cid in online,
            "subscriptions": [f"{flt} (QoS {getattr(o, 'qos', 0)})" for flt, o in sorted(subs.items())],
            "inflight": len(getattr(sess, "inflight", {}) or {}),
            "queued": len(getattr(sess, "queue", ()) or ()),
            "expiry_interval": int(getattr(sess, "expiry_interval", 0) or 0),
            "offline_since_ms": offline_since.get(cid),
        })
    retained = []
    for topic, d in sorted((getattr(svc, "retained", {}) or {}).items()):
        payload = getattr(d, "payload", b"")
        retained.append({"topic": topic, "qos": int(getattr(d, "qos", 0) or 0),
                         "size": len(payload) if isinstance(payload, (bytes, bytearray)) else None,
                         "payload": _preview(payload)})
    return {"available": True, "clients": clients, "sessions": out_sessions, "retained": retained,
            "stats": dict(getattr(svc, "stats", {}) or {})}


def mqtt_snapshot(ctx: FrontEndContext) -> dict[str, Any]:
    svc = ctx.services.get("mqtt")
    if svc is None:
        return {"available": False, "clients": [], "sessions": [], "retained": []}
    snap = _call_or_value(svc, "admin_snapshot")
    if isinstance(snap, dict):
        return {"available": True, **{k: _jsonable(snap.get(k)) for k in ("clients", "sessions", "retained")}}
    if isinstance(getattr(svc, "sessions", None), dict) and hasattr(svc, "online"):
        return _manager_snapshot(svc)
    return {
        "available": True,
        "clients": _jsonable(_call_or_value(svc, "admin_clients", "clients")),
        "sessions": _jsonable(_call_or_value(svc, "admin_sessions", "sessions")),
        "retained": _jsonable(_call_or_value(svc, "admin_retained", "retained")),
    }


# -- metrics derived from the broker at scrape time ----------------------------------------------

STORE_COUNTERS = {"commits", "fsyncs", "writes", "appends"}


def data_dir_bytes(path: str | None) -> int | None:
    if not path or not os.path.isdir(path):
        return None
    total = 0
    for entry in os.scandir(path):
        if entry.is_file():
            total += entry.stat().st_size
    return total


def broker_samples(ctx: FrontEndContext, started: float) -> list[Sample]:
    b = ctx.broker
    out: list[Sample] = [
        ("rocketlite_info", {"version": __version__, "broker": b.settings.broker_name}, 1),
        ("rocketlite_uptime_seconds", {}, round(time.monotonic() - started, 3)),
    ]
    for name in b.topics:
        msgs = appended = 0
        for q in b.topic_queue_ids(name):
            hi = b.max_offset(name, q)
            appended += hi
            msgs += hi - b.min_offset(name, q)
        out.append(("rocketlite_topic_messages", {"topic": name}, msgs))
        out.append(("rocketlite_topic_appended_total", {"topic": name}, appended))
    for group in all_groups(b):
        for p in group_progress(b, group):
            out.append(("rocketlite_consumer_lag", {"group": group, "topic": p["topic"]}, p["lag"]))
            if "pop_inflight" in p:
                out.append(("rocketlite_pop_inflight", {"group": group, "topic": p["topic"]}, p["pop_inflight"]))
        out.append(("rocketlite_group_consumers", {"group": group}, len(b.consumers_of(group))))
    by_proto: dict[tuple[str, str], int] = {}
    for registry in (b.clients, b.producers):
        for members in registry.values():
            for c in members.values():
                k = (c.role, c.protocol or "unknown")
                by_proto[k] = by_proto.get(k, 0) + 1
    for (role, proto), n in by_proto.items():
        out.append(("rocketlite_clients", {"role": role, "protocol": proto}, n))
    try:
        stats = b.store.stats()
    except Exception:
        stats = {}
    for k, v in stats.items():
        if not isinstance(v, (int, float)):
            continue
        key = re.sub(r"[^a-zA-Z0-9_]", "_", str(k))
        name = f"rocketlite_store_{key}_total" if key in STORE_COUNTERS else f"rocketlite_store_{key}"
        out.append((name, {}, v))
    size = data_dir_bytes(ctx.settings.data_dir)
    if size is not None:
        out.append(("rocketlite_store_file_bytes", {}, size))
    if "rocketlite_mqtt_sessions" not in METRICS.gauges and ctx.services.get("mqtt") is not None:
        snap = mqtt_snapshot(ctx)
        out.append(("rocketlite_mqtt_sessions", {}, len(snap["sessions"])))
        out.append(("rocketlite_mqtt_clients", {}, len(snap["clients"])))
        out.append(("rocketlite_mqtt_retained", {}, len(snap["retained"])))
        for k, v in (snap.get("stats") or {}).items():
            if isinstance(v, (int, float)):
                out.append((f"rocketlite_mqtt_{re.sub(r'[^a-zA-Z0-9_]', '_', str(k))}_total", {}, v))
    return out


def describe_broker_metrics(reg: Registry) -> None:
    for name, kind, text in (
        ("rocketlite_info", "gauge", "Build and broker name."),
        ("rocketlite_uptime_seconds", "gauge", "Seconds since the HTTP front-end started."),
        ("rocketlite_topic_messages", "gauge", "Messages stored now per topic (all queues, after retention)."),
        ("rocketlite_topic_appended_total", "counter", "Messages ever appended per topic (sum of max queue offsets)."),
        ("rocketlite_consumer_lag", "gauge", "Messages not yet consumed per group and topic (max offset - committed)."),
        ("rocketlite_group_consumers", "gauge", "Consumers online per group."),
        ("rocketlite_pop_inflight", "gauge", "POP / simple consumers: messages handed out and not yet acknowledged."),
        ("rocketlite_clients", "gauge", "Registered clients by role and protocol."),
        ("rocketlite_store_messages", "gauge", "Messages in the commit log."),
        ("rocketlite_store_bytes", "gauge", "Message bytes in the commit log."),
        ("rocketlite_store_commits_total", "counter", "Store transactions committed."),
        ("rocketlite_store_fsyncs_total", "counter", "fsync calls on the store."),
        ("rocketlite_store_file_bytes", "gauge", "Size of the files in the data directory."),
        ("rocketlite_mqtt_sessions", "gauge", "MQTT sessions (connected and persistent)."),
        ("rocketlite_mqtt_clients", "gauge", "MQTT clients connected."),
        ("rocketlite_mqtt_retained", "gauge", "MQTT retained messages."),
        ("rocketlite_mqtt_received_total", "counter", "MQTT PUBLISH packets received from clients."),
        ("rocketlite_mqtt_sent_total", "counter", "MQTT PUBLISH packets sent to clients."),
        ("rocketlite_mqtt_connects_total", "counter", "MQTT CONNECTs accepted."),
        ("rocketlite_mqtt_dropped_total", "counter", "MQTT deliveries dropped (queue full / expired)."),
        ("rocketlite_stored_bytes_total", "counter", "Message body bytes committed per topic (all protocols)."),
        ("rocketlite_stored_messages_total", "counter", "Messages committed per topic (all protocols)."),
    ):
        if name not in reg.help:
            reg.describe(name, kind, text)


# -- the app ------------------------------------------------------------------------------------

Handler = Callable[[Request], Awaitable[Response]]


class OpsApp:
    def __init__(self, ctx: FrontEndContext) -> None:
        self.ctx = ctx
        self.broker = ctx.broker
        self.started = time.monotonic()
        self.routes: list[tuple[str, list[str], Handler]] = []
        self.token = str(ctx.settings.get("http", "admin_token", "") or "")
        self._topic_keys: dict[str, Any] = {}
        describe_broker_metrics(METRICS)
        ctx.services.setdefault("metrics", METRICS)
        self.broker.write_listeners.append(self._count_stored)
        r = self.route
        r("GET", "/api/openapi.json", self.openapi)
        r("GET", "/api/cluster", self.cluster)
        r("GET", "/api/topics", self.list_topics)
        r("POST", "/api/topics", self.create_topic)
        r("GET", "/api/topics/{name}", self.get_topic)
        r("PUT", "/api/topics/{name}", self.update_topic)
        r("PATCH", "/api/topics/{name}", self.update_topic)
        r("DELETE", "/api/topics/{name}", self.delete_topic)
        r("POST", "/api/topics/{name}/purge", self.purge_topic)
        r("GET", "/api/groups", self.list_groups)
        r("GET", "/api/groups/{name}", self.get_group)
        r("DELETE", "/api/groups/{name}", self.delete_group)
        r("POST", "/api/groups/{name}/offsets", self.reset_offsets)
        r("GET", "/api/clients", self.list_clients)
        r("GET", "/api/messages", self.find_messages)
        r("POST", "/api/messages", self.send_message)
        r("GET", "/api/messages/{id}", self.get_message)
        r("POST", "/api/messages/{id}/resend", self.resend_message)
        r("GET", "/api/mqtt", self.mqtt)
        r("GET", "/metrics", self.metrics)

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        """``pattern``: path segments, ``{name}`` matching one non-empty segment (no regex: compiling
        twenty of them was a fifth of the start-up work after imports)."""
        self.routes.append((method, pattern.split("/"), handler))

    @staticmethod
    def match_route(parts: list[str], segments: list[str]) -> dict[str, str] | None:
        if len(parts) != len(segments):
            return None
        params: dict[str, str] = {}
        for want, got in zip(parts, segments):
            if want.startswith("{") and want.endswith("}"):
                if not got:
                    return None
                params[want[1:-1]] = got
            elif want != got:
                return None
        return params

    def _count_stored(self, msgs: list[Message]) -> None:
        """Write listener (hot path): per topic, messages and bytes committed."""
        keys = self._topic_keys
        if len(msgs) == 1:
            m = msgs[0]
            key = keys.get(m.topic)
            if key is None:
                key = keys[m.topic] = label_key(topic=m.topic)
            METRICS.inc_key("rocketlite_stored_messages_total", key, 1)
            METRICS.inc_key("rocketlite_stored_bytes_total", key, len(m.body))
            return
        per_topic: dict[str, list[int]] = {}
        for m in msgs:
            acc = per_topic.get(m.topic)
            if acc is None:
                acc = per_topic[m.topic] = [0, 0]
            acc[0] += 1
            acc[1] += len(m.body)
        for topic, (n, nbytes) in per_topic.items():
            key = keys.get(topic)
            if key is None:
                key = keys[topic] = label_key(topic=topic)
            METRICS.inc_key("rocketlite_stored_messages_total", key, n)
            METRICS.inc_key("rocketlite_stored_bytes_total", key, nbytes)

    # -- ASGI ---------------------------------------------------------------------------------
    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        try:
            resp = await self.dispatch(scope, receive)
        except HttpError as exc:
            resp = json_response({"error": str(exc), **exc.extra}, exc.status)
        except TopicNotFound as exc:
            resp = json_response({"error": str(exc), "code": exc.code}, 404)
        except NotFound as exc:
            resp = json_response({"error": str(exc), "code": exc.code}, 404)
        except BadRequest as exc:
            resp = json_response({"error": str(exc), "code": exc.code}, 400)
        except BrokerError as exc:
            resp = json_response({"error": str(exc), "code": exc.code}, 409)
        except ValueError as exc:  # a number or base64 field that does not parse
            resp = json_response({"error": f"bad request: {exc}", "code": "BAD_REQUEST"}, 400)
        except Exception as exc:  # never let one request take the server down
            log.exception("admin request failed: %s %s", scope.get("method"), scope.get("path"))
            resp = json_response({"error": f"internal error: {exc.__class__.__name__}: {exc}"}, 500)
        headers = [(b"content-type", resp.content_type.encode()),
                   (b"content-length", str(len(resp.body)).encode()),
                   (b"cache-control", b"no-store"), *resp.headers]
        await send({"type": "http.response.start", "status": resp.status, "headers": headers})
        await send({"type": "http.response.body",
                    "body": b"" if scope.get("method") == "HEAD" else resp.body})

    async def dispatch(self, scope: dict[str, Any], receive: Receive) -> Response:
        method = scope.get("method", "GET").upper()
        path = scope.get("path", "/")
        if method in ("GET", "HEAD") and not path.startswith("/api/") and path != "/metrics":
            return self.static(path)
        body = b""
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":  # never act on a cut-off request
                raise HttpError(400, "the request body ended early (disconnect or malformed framing)")
            body += msg.get("body", b"")
            if len(body) > MAX_BODY:
                raise HttpError(413, "request body too large")
            if not msg.get("more_body"):
                break
        qs = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        req = Request(method if method != "HEAD" else "GET", path, {k: v[-1] for k, v in qs.items()}, headers, body)
        allowed: list[str] = []
        segments = path.split("/")
        for m, parts, handler in self.routes:
            match = self.match_route(parts, segments)
            if match is None:
                continue
            if m != req.method:
                allowed.append(m)
                continue
            from urllib.parse import unquote

            req.params = {k: unquote(v) for k, v in match.items()}
            if path.startswith("/api/") and path != "/api/openapi.json":
                self.check_token(req)
            return await handler(req)
        if allowed:
            raise HttpError(405, f"method {method} not allowed", allow=allowed)
        raise HttpError(404, "not found", path=path)

    def check_token(self, req: Request) -> None:
        if not self.token:
            return
        auth = req.headers.get("authorization", "")
        scheme, _, given = auth.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            raise HttpError(401, "admin token required (Authorization: Bearer <token>)")

    def static(self, path: str) -> Response:
        if path in ("/", "/index.html", "/console", "/console/"):
            name = "index.html"
        elif path.startswith("/static/"):
            name = path[len("/static/"):]
        elif path == "/favicon.ico":
            name = "favicon.svg"
        else:
            raise HttpError(404, "not found", path=path)
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name.startswith("."):
            raise HttpError(404, "not found", path=path)
        f = STATIC_DIR / name
        if not f.is_file():
            raise HttpError(404, "not found", path=path)
        import mimetypes

        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if name.endswith(".js"):
            ctype = "text/javascript"
        if ctype.startswith("text/") or ctype.endswith(("javascript", "json", "svg+xml")):
            ctype += "; charset=utf-8"
        return Response(200, f.read_bytes(), ctype)

    # -- handlers -----------------------------------------------------------------------------
    async def openapi(self, req: Request) -> Response:
        from rocketlite.protocols.http.openapi import openapi_document

        return json_response(openapi_document())

    async def metrics(self, req: Request) -> Response:
        text = METRICS.render(broker_samples(self.ctx, self.started))
        return Response(200, text.encode(), "text/plain; version=0.0.4; charset=utf-8")

    async def cluster(self, req: Request) -> Response:
        b = self.broker
        try:
            stats = b.store.stats()
        except Exception:
            stats = {}
        return json_response({
            "version": __version__,
            "broker_name": b.settings.broker_name,
            "cluster_name": b.settings.cluster_name,
            "addresses": {k: f"{h}:{p}" for k, (h, p) in self.ctx.addresses.items()},
            "ready": self.ctx.ready,
            "uptime_seconds": round(time.monotonic() - self.started, 3),
            "now_ms": b.now_ms(),
            "data_dir": self.ctx.settings.data_dir,
            "store": stats,
            "topics": len(b.topics),
            "groups": len(all_groups(b)),
            "auto_create_topics": b.settings.auto_create_topics,
            "features": {"purge": True, "send_back": hasattr(b, "send_back"),
                         "mqtt": self.ctx.services.get("mqtt") is not None},
        })

    async def list_topics(self, req: Request) -> Response:
        system = req.query.get("system", "false").lower() in ("1", "true", "yes")
        names = [n for n in self.broker.topic_names()
                 if system or not (self.broker.topics[n].system or n.startswith(("%RETRY%", "%DLQ%")))]
        return json_response({"topics": [topic_json(self.broker, n) for n in names]})

    def _topic_args(self, data: dict[str, Any]) -> dict[str, Any]:
        args: dict[str, Any] = {}
        for key in ("queues", "read_queues", "write_queues", "perm"):
            if data.get(key) is not None:
                try:
                    args[key] = int(data[key])
                except (TypeError, ValueError):
                    raise HttpError(400, f"{key} must be an integer") from None
        if data.get("message_type"):
            args["message_type"] = str(data["message_type"]).upper()
        if data.get("order") is not None:
            args["order"] = bool(data["order"])
        if isinstance(data.get("attributes"), dict):
            args["attributes"] = {str(k): str(v) for k, v in data["attributes"].items()}
        return args

    async def create_topic(self, req: Request) -> Response:
        data = req.json()
        name = str(data.get("name") or "")
        if not name:
            raise HttpError(400, "name is required")
        existed = name in self.broker.topics
        tc = await self.broker.create_topic(name, **self._topic_args(data))
        log.info("admin: %s topic %s (%d/%d queues)", "updated" if existed else "created", name,
                 tc.read_queues, tc.write_queues)
        return json_response(topic_json(self.broker, name, detail=True), 200 if existed else 201)

    def _topic(self, req: Request) -> str:
        name = req.params["name"]
        if name not in self.broker.topics:
            raise HttpError(404, f"topic {name} does not exist")
        return name

    async def get_topic(self, req: Request) -> Response:
        return json_response(topic_json(self.broker, self._topic(req), detail=True))

    async def update_topic(self, req: Request) -> Response:
        name = self._topic(req)
        tc = self.broker.topics[name]
        data = req.json()
        args = {"read_queues": tc.read_queues, "write_queues": tc.write_queues, "perm": tc.perm,
                "order": tc.order, **self._topic_args(data)}
        if "queues" in args:
            args["read_queues"] = args["write_queues"] = args.pop("queues")
        await self.broker.create_topic(name, **args)
        log.info("admin: updated topic %s", name)
        return json_response(topic_json(self.broker, name, detail=True))

    async def delete_topic(self, req: Request) -> Response:
        name = self._topic(req)
        await self.broker.delete_topic(name)
        log.info("admin: deleted topic %s", name)
        return json_response({"deleted": name})

    async def purge_topic(self, req: Request) -> Response:
        name = self._topic(req)
        result = await self.broker.purge_topic(name)
        log.info("admin: purged topic %s (%d messages)", name, result["messages"])
        return json_response({"purged": name, "queues": result["queues"], "messages": result["messages"]})

    async def list_groups(self, req: Request) -> Response:
        return json_response({"groups": [group_summary(self.broker, g) for g in all_groups(self.broker)]})

    def _group(self, req: Request) -> str:
        name = req.params["name"]
        if name not in all_groups(self.broker):
            raise HttpError(404, f"group {name} does not exist")
        return name

    async def get_group(self, req: Request) -> Response:
        name = self._group(req)
        gc = self.broker.groups.get(name)
        progress = group_progress(self.broker, name)
        return json_response({
            "name": name,
            "config": gc.to_record() if gc else None,
            "clients": [client_json(c) for c in self.broker.consumers_of(name)],
            "lag": sum(p["lag"] for p in progress),
            "topics": progress,
        })

    async def delete_group(self, req: Request) -> Response:
        name = self._group(req)
        await self.broker.delete_group(name)
        log.info("admin: deleted group %s", name)
        return json_response({"deleted": name})

    async def reset_offsets(self, req: Request) -> Response:
        group = req.params["name"]
        data = req.json()
        b = self.broker
        topic = str(data.get("topic") or "")
        topics = [topic] if topic else group_topics(b, group)
        for t in topics:
            if t not in b.topics:
                raise HttpError(404, f"topic {t} does not exist")
        if not topics:
            raise HttpError(400, "topic is required (the group has no known topics)")
        queue = data.get("queue_id")
        modes = [k for k in ("offset", "timestamp_ms", "to") if data.get(k) is not None]
        if len(modes) != 1:
            raise HttpError(400, "give exactly one of offset, timestamp_ms or to ('earliest'|'latest')")
        mode = modes[0]
        result = []
        for t in topics:
            # the core commits, moves a POP group's position and tells running consumers
            # (remoting: RESET_CONSUMER_CLIENT_OFFSET and the pending reset; see offset_reset.py)
            targets: dict[int, int] = {}
            for q in b.topic_queue_ids(t):
                if queue is not None and int(queue) != q:
                    continue
                if mode == "offset":
                    targets[q] = int(data["offset"])
                elif mode == "timestamp_ms":
                    targets[q] = await b.search_offset(t, q, int(data["timestamp_ms"]))
                elif str(data["to"]).lower() in ("earliest", "first", "min"):
                    targets[q] = b.min_offset(t, q)
                elif str(data["to"]).lower() in ("latest", "last", "max"):
                    targets[q] = b.max_offset(t, q)
                else:
                    raise HttpError(400, "to must be 'earliest' or 'latest'")
            old = {q: b.query_offset(group, t, q) for q in targets}
            applied = await b.reset_offsets(group, t, targets)
            for q, target in applied.items():
                result.append({"topic": t, "queue_id": q, "old_offset": old[q], "new_offset": target})
        log.info("admin: reset offsets of %s on %s (%s)", group, ",".join(topics), mode)
        return json_response({"group": group, "queues": result})

    async def list_clients(self, req: Request) -> Response:
        b = self.broker
        consumers = [client_json(c) for members in b.clients.values() for c in members.values()]
        producers = [client_json(c) for members in b.producers.values() for c in members.values()]
        return json_response({"consumers": consumers, "producers": producers})

    async def find_messages(self, req: Request) -> Response:
        b = self.broker
        topic = req.query.get("topic", "")
        key = req.query.get("key", "")
        msg_id = req.query.get("id", "")
        count = max(1, min(int(req.qint("count", 32) or 32), 256))
        if msg_id:
            m = await b.query_by_id(msg_id)
            msgs = [m] if m is not None and (not topic or m.topic == topic) else []
        elif key:
            msgs = await b.query_by_key(topic, key, count)
        elif topic:
            if topic not in b.topics:
                raise HttpError(404, f"topic {topic} does not exist")
            queue = req.qint("queue_id")
            offset = req.qint("offset")
            if queue is not None:
                start = offset if offset is not None else max(b.min_offset(topic, queue),
                                                              b.max_offset(topic, queue) - count)
                msgs = (await b.pull(topic, queue, start, count)).messages
            else:  # the newest messages across queues
                msgs = []
                for q in b.topic_queue_ids(topic):
                    start = max(b.min_offset(topic, q), b.max_offset(topic, q) - count)
                    msgs.extend((await b.pull(topic, q, start, count)).messages)
                msgs.sort(key=lambda m: (m.store_timestamp, m.commit_offset), reverse=True)
                msgs = msgs[:count]
        else:
            raise HttpError(400, "give id, key (optionally with topic) or topic (optionally queue_id and offset)")
        return json_response({"messages": [message_json(b, m) for m in msgs]})

    async def get_message(self, req: Request) -> Response:
        m = await self.broker.query_by_id(req.params["id"])
        if m is None:
            raise HttpError(404, f"message {req.params['id']} not found")
        return json_response(message_json(self.broker, m, full_body=req.query.get("body") == "full"))

    async def send_message(self, req: Request) -> Response:
        data = req.json()
        topic = str(data.get("topic") or "")
        if not topic:
            raise HttpError(400, "topic is required")
        if "body_base64" in data:
            body = base64.b64decode(str(data["body_base64"]))
        else:
            body = str(data.get("body", "")).encode()
        props = {str(k): str(v) for k, v in (data.get("properties") or {}).items()}
        msg = Message(topic=topic, body=body, tags=str(data.get("tags") or ""), keys=str(data.get("keys") or ""),
                      properties=props, born_host="http")
        if msg.tags:
            msg.properties.setdefault("TAGS", msg.tags)
        if msg.keys:
            msg.properties.setdefault("KEYS", msg.keys)
        (res,) = await self.broker.send([msg])
        METRICS.messages_in("http", topic, 1, len(body))
        return json_response({"unique_id": res.unique_id, "topic": res.topic, "queue_id": res.queue_id,
                              "queue_offset": res.queue_offset}, 201)

    async def resend_message(self, req: Request) -> Response:
        b = self.broker
        group = str(req.json().get("group") or "")
        if not group:
            raise HttpError(400, "group is required")
        m = await b.query_by_id(req.params["id"])
        if m is None:
            raise HttpError(404, f"message {req.params['id']} not found")
        send_back = getattr(b, "send_back", None)
        if send_back is not None:
            try:  # delay level 1 (1 s): an operator's resend should arrive now, not after a backoff
                result = await send_back(group, m, delay_level=1)
            except TypeError:
                result = await send_back(group, m)
            how = "send_back"
            new_id = getattr(result, "unique_id", None)
        else:
            retry_topic = f"%RETRY%{group}"
            await b.get_or_create_topic(retry_topic, queues=1)
            props = dict(m.properties)
            props.pop(PROP_UNIQ_KEY, None)
            props.setdefault(PROP_RETRY_TOPIC, m.topic)
            props.setdefault(PROP_ORIGIN_MSG_ID, m.unique_id)
            copy = Message(topic=retry_topic, body=m.body, tags=m.tags, keys=m.keys, properties=props,
                           flag=m.flag, born_timestamp=m.born_timestamp, born_host=m.born_host,
                           reconsume_times=m.reconsume_times)
            (res,) = await b.send([copy])
            how = "retry_topic"
            new_id = res.unique_id
        log.info("admin: resent %s to group %s (%s)", m.unique_id, group, how)
        return json_response({"resent": m.unique_id, "group": group, "method": how, "new_id": new_id})

    async def mqtt(self, req: Request) -> Response:
        return json_response(mqtt_snapshot(self.ctx))


def build_app(ctx: FrontEndContext) -> Callable[[dict[str, Any], Receive, Send], Awaitable[None]]:
    return OpsApp(ctx)
