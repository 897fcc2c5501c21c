"""Authentication and authorization, protocol-free (no I/O framework, no sockets).

Off unless ``[security] enabled = true``. Then every RocketMQ client must sign its requests with an
AccessKey/SecretKey pair from the ACL file, MQTT clients must log in with a username/password from it,
and each account's topic and group permissions are checked.

Signatures (what the unmodified clients already send):

* remoting (RocketMQ 4.x ``AclClientRPCHook`` and the C++ client): ``Signature`` ext field =
  base64(HMAC-SHA1(secret, the values of every other ext field, in key order, concatenated, then the
  body)); ``AccessKey`` names the account (``OnsChannel``/``SecurityToken`` take part as ordinary fields).
* gRPC (RocketMQ 5 clients): ``authorization: MQv2-HMAC-SHA1 Credential=<ak>, SignedHeaders=x-mq-date-time,
  Signature=<hex>`` where Signature = hex(HMAC-SHA1(secret, value of ``x-mq-date-time``)).

ACL file (TOML), see docs/security.md::

    [[accounts]]
    access_key = "admin"; secret_key = "..."; admin = true
    [[accounts]]
    access_key = "app"; secret_key = "..."
    default_topic_perm = "DENY"        # PUB, SUB, PUB|SUB or DENY for topics not listed
    default_group_perm = "SUB"
    topics = { Orders = "PUB|SUB", Audit = "PUB" }
    groups = { billing = "SUB" }
    [[mqtt_users]]
    username = "sensor-1"; password = "..."
    publish = ["sensors/sensor-1/#"]; subscribe = ["commands/sensor-1/#"]
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import tomllib
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

PUB, SUB = "PUB", "SUB"
RETRY_PREFIX = "%RETRY%"
DLQ_PREFIX = "%DLQ%"

log = logging.getLogger("rocketlite.security")


class AuthError(Exception):
    """The caller is not who it claims (unknown key, bad signature, bad password)."""


class Denied(Exception):
    """The caller is known but lacks the permission."""


def parse_perm(text: str) -> frozenset[str]:
    parts = {p.strip().upper() for p in str(text).replace(",", "|").split("|") if p.strip()}
    if parts <= {"DENY", ""}:
        return frozenset()
    bad = parts - {PUB, SUB}
    if bad:
        raise ValueError(f"unknown permission {sorted(bad)} (use PUB, SUB, PUB|SUB or DENY)")
    return frozenset(parts)


@dataclass
class Account:
    access_key: str
    secret_key: str
    admin: bool = False
    default_topic_perm: frozenset[str] = frozenset({PUB, SUB})
    default_group_perm: frozenset[str] = frozenset({SUB})
    topics: dict[str, frozenset[str]] = field(default_factory=dict)
    groups: dict[str, frozenset[str]] = field(default_factory=dict)

    def may_topic(self, topic: str, action: str) -> bool:
        if self.admin:
            return True
        if topic.startswith(RETRY_PREFIX) or topic.startswith(DLQ_PREFIX):  # retry/DLQ follow the group
            return self.may_group(topic.split("%", 2)[2])
        return action in self.topics.get(topic, self.default_topic_perm)

    def may_group(self, group: str) -> bool:
        if self.admin:
            return True
        return SUB in self.groups.get(group, self.default_group_perm)


@dataclass
class MqttUser:
    username: str
    password: str
    publish: list[str] = field(default_factory=lambda: ["#"])
    subscribe: list[str] = field(default_factory=lambda: ["#"])


def filter_covers(acl_filter: str, topic: str) -> bool:
    """Does ACL filter ``acl_filter`` (MQTT wildcards) cover topic name or filter ``topic``?

    For a subscription the requested filter must be inside the ACL filter: ``+`` in the request
    needs ``+`` or ``#`` in the ACL, ``#`` needs ``#``. ``%u`` in the ACL stands for the user name
    (substituted by the caller)."""
    a, t = acl_filter.split("/"), topic.split("/")
    for i, part in enumerate(a):
        if part == "#":
            return not (i == 0 and t and t[0].startswith("$"))
        if i >= len(t):
            return False
        if part == "+":
            if t[i] == "#" or (i == 0 and t[i].startswith("$")):
                return False
            continue
        if part != t[i]:
            return False
    return len(a) == len(t)


def remoting_signature(ext: Mapping[str, str], body: bytes, secret: str) -> str:
    content = "".join(str(ext[k]) for k in sorted(ext) if k != "Signature").encode() + (body or b"")
    return base64.b64encode(hmac.new(secret.encode(), content, hashlib.sha1).digest()).decode()


def grpc_signature(date_time: str, secret: str) -> str:
    return hmac.new(secret.encode(), date_time.encode(), hashlib.sha1).hexdigest().upper()


def parse_grpc_authorization(value: str) -> dict[str, str]:
    """``MQv2-HMAC-SHA1 Credential=ak, SignedHeaders=x-mq-date-time, Signature=hex`` -> fields."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme != "MQv2-HMAC-SHA1":
        raise AuthError(f"unsupported authorization scheme {scheme[:40]!r}")
    out = {}
    for part in rest.split(","):
        k, _, v = part.strip().partition("=")
        out[k.strip()] = v.strip()
    return out


class Acl:
    def __init__(self, accounts: Iterable[Account] = (), mqtt_users: Iterable[MqttUser] = (),
                 *, mqtt_anonymous: bool = False) -> None:
        self.accounts = {a.access_key: a for a in accounts}
        self.mqtt_users = {u.username: u for u in mqtt_users}
        self.mqtt_anonymous = mqtt_anonymous

    # -- RocketMQ --------------------------------------------------------------------------------
    def account(self, access_key: str) -> Account:
        acc = self.accounts.get(access_key or "")
        if acc is None or not access_key:
            raise AuthError(f"No acl config for AccessKey {access_key!r}" if access_key else "AccessKey is missing")
        return acc

    def verify_remoting(self, ext: Mapping[str, str], body: bytes) -> Account:
        acc = self.account(ext.get("AccessKey", ""))
        given = ext.get("Signature", "")
        if not given or not hmac.compare_digest(given.encode(), remoting_signature(ext, body, acc.secret_key).encode()):
            raise AuthError(f"signature check failed for AccessKey {acc.access_key!r}")
        return acc

    def verify_grpc(self, metadata: Mapping[str, str]) -> Account:
        auth = metadata.get("authorization", "")
        if not auth:
            raise AuthError("authorization header is missing")
        f = parse_grpc_authorization(auth)
        acc = self.account(f.get("Credential", "").split("/", 1)[0])
        if f.get("SignedHeaders", "").lower() != "x-mq-date-time":
            raise AuthError("SignedHeaders must be x-mq-date-time")
        want = grpc_signature(metadata.get("x-mq-date-time", ""), acc.secret_key)
        if not hmac.compare_digest(f.get("Signature", "").upper().encode(), want.encode()):
            raise AuthError(f"signature check failed for AccessKey {acc.access_key!r}")
        return acc

    @staticmethod
    def authorize(acc: Account, resources: Iterable[tuple[str, str, str]]) -> None:
        """``resources``: (kind, name, action) with kind topic/group/admin; raises :class:`Denied`."""
        for kind, name, action in resources:
            if kind == "admin":
                if not acc.admin:
                    raise Denied(f"AccessKey {acc.access_key!r} is not an admin ({name})")
            elif kind == "topic":
                if name and not acc.may_topic(name, action):
                    raise Denied(f"AccessKey {acc.access_key!r} has no {action} permission on topic {name!r}")
            elif kind == "group":
                if name and not acc.may_group(name):
                    raise Denied(f"AccessKey {acc.access_key!r} has no permission on group {name!r}")

    # -- MQTT ------------------------------------------------------------------------------------
    def mqtt_login(self, username: str | None, password: bytes | None) -> MqttUser | None:
        """The user, or None for an anonymous login when allowed; raises :class:`AuthError`."""
        if not username:
            if self.mqtt_anonymous:
                return None
            raise AuthError("username required")
        u = self.mqtt_users.get(username)
        if u is None or password is None or not hmac.compare_digest(password, u.password.encode()):
            raise AuthError("bad user name or password")
        return u

    def mqtt_may(self, user: MqttUser | None, topic: str, action: str) -> bool:
        if user is None:
            return self.mqtt_anonymous
        filters = user.publish if action == PUB else user.subscribe
        return any(filter_covers(f.replace("%u", user.username), topic) for f in filters)


def load_acl(data: Mapping[str, Any]) -> Acl:
    accounts = []
    for a in data.get("accounts", []):
        accounts.append(Account(
            access_key=str(a["access_key"]), secret_key=str(a["secret_key"]), admin=bool(a.get("admin", False)),
            default_topic_perm=parse_perm(a.get("default_topic_perm", "PUB|SUB")),
            default_group_perm=parse_perm(a.get("default_group_perm", "SUB")),
            topics={str(k): parse_perm(v) for k, v in dict(a.get("topics", {})).items()},
            groups={str(k): parse_perm(v) for k, v in dict(a.get("groups", {})).items()},
        ))
    users = [MqttUser(str(u["username"]), str(u["password"]), list(u.get("publish", ["#"])),
                      list(u.get("subscribe", ["#"]))) for u in data.get("mqtt_users", [])]
    return Acl(accounts, users, mqtt_anonymous=bool(data.get("mqtt_anonymous", False)))


def acl_from_settings(settings: Any) -> Acl | None:
    """The process's ACL (None when security is off). ``settings``: rocketlite.config.Settings."""
    if not settings.get("security", "enabled", False):
        return None
    path = str(settings.get("security", "acl_file", "") or "")
    data: dict[str, Any] = {}
    if path:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    ak = str(settings.get("security", "access_key", "") or "")
    if ak:  # a single admin account from the config itself
        data.setdefault("accounts", []).append({"access_key": ak, "admin": True,
                                                "secret_key": str(settings.get("security", "secret_key", ""))})
    if not settings.get("http", "admin_token", ""):
        log.warning("security.enabled is true but http.admin_token is empty: the admin API is open")
    if not data.get("accounts") and not data.get("mqtt_users"):
        raise ValueError("security.enabled is true but no accounts: set security.acl_file or security.access_key")
    return load_acl(data)


def get_acl(ctx: Any) -> Acl | None:
    """The shared ACL of a front-end context (built once, kept in ``ctx.services['acl']``)."""
    if "acl" not in ctx.services:
        ctx.services["acl"] = acl_from_settings(ctx.settings)
    return ctx.services["acl"]  # type: ignore[no-any-return]
