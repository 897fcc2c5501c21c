"""Which topics/groups a RocketMQ 5 gRPC request touches, for the ACL (pure: protobuf messages only)."""

from __future__ import annotations

from typing import Any, Mapping

from rocketlite.security.acl import PUB, SUB, Acl, AuthError, Denied

UNAUTHORIZED = 40100  # apache.rocketmq.v2.Code
FORBIDDEN = 40300


def resources(req: Any) -> list[tuple[str, str, str]]:
    name = type(req).__name__
    if name == "SendMessageRequest":
        return [("topic", m.topic.name, PUB) for m in req.messages]
    if name in ("EndTransactionRequest", "RecallMessageRequest"):
        return [("topic", req.topic.name, PUB)]
    if name in ("QueryRouteRequest", "NotifyClientTerminationRequest", "HeartbeatRequest"):
        return []
    out: list[tuple[str, str, str]] = []
    for field, value in req.ListFields():
        if field.name == "group":
            out.append(("group", value.name, SUB))
        elif field.name == "topic":
            out.append(("topic", value.name, SUB))
        elif field.name == "message_queue":
            out.append(("topic", value.topic.name, SUB))
    return out


def check(acl: Acl, metadata: Mapping[str, str], req: Any | None) -> tuple[int, str] | None:
    """None when allowed, else (RocketMQ status code, message) for the response's ``status``."""
    try:
        acc = acl.verify_grpc(metadata)
        if req is not None:
            acl.authorize(acc, resources(req))
    except AuthError as exc:
        return UNAUTHORIZED, str(exc)
    except Denied as exc:
        return FORBIDDEN, str(exc)
    return None


class _Replay:
    """A call whose first request message was already read (for the check): hands it out again."""

    def __init__(self, call: Any, payload: bytes) -> None:
        self.__dict__["_call"] = call
        self.__dict__["_payload"] = payload

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_call"], name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.__dict__["_call"], name, value)

    async def recv(self) -> bytes | None:
        p = self.__dict__["_payload"]
        if p is not None:
            self.__dict__["_payload"] = None
            return p  # type: ignore[no-any-return]
        return await self.__dict__["_call"].recv()  # type: ignore[no-any-return]

    async def recv_one(self) -> bytes:
        p = self.__dict__["_payload"]
        if p is not None:
            self.__dict__["_payload"] = None
            return p  # type: ignore[no-any-return]
        return await self.__dict__["_call"].recv_one()  # type: ignore[no-any-return]


def guard_handlers(handlers: dict[str, Any], acl: Acl | None, pb: Any) -> dict[str, Any]:
    """Wrap the service's method table so every call is authenticated (and authorized) first.

    ``pb``: the generated messaging module (request/response classes by name). A refused unary or
    server-streaming call gets its normal response with ``status`` UNAUTHORIZED/FORBIDDEN (what the
    RocketMQ proxy answers); a refused Telemetry stream ends with gRPC status 16 UNAUTHENTICATED.
    """
    if acl is None:
        return handlers
    out: dict[str, Any] = {}
    for path, handler in handlers.items():
        method = path.rsplit("/", 1)[-1]
        req_cls = getattr(pb, method + "Request", None)
        resp_cls = getattr(pb, method + "Response", None)
        out[path] = _guard(handler, acl, req_cls, resp_cls)
    return out


def _guard(handler: Any, acl: Acl, req_cls: Any, resp_cls: Any) -> Any:
    async def guarded(call: Any) -> None:
        if req_cls is None or resp_cls is None:  # streaming both ways (Telemetry): headers only
            denied = check(acl, call.metadata, None)
            if denied is not None:
                call.finish(16, f"{denied[0]} {denied[1]}")
                return
            await handler(call)
            return
        payload = await call.recv_one()
        req = req_cls()
        try:
            req.ParseFromString(payload)
        except Exception:  # noqa: BLE001 - the handler answers malformed requests its own way
            req = None
        denied = check(acl, call.metadata, req)
        if denied is not None:
            resp = resp_cls()
            resp.status.code, resp.status.message = denied
            await call.reply(resp.SerializeToString())
            return
        await handler(_Replay(call, payload))

    return guarded
