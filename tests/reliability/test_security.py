"""Authentication and authorization ([security] enabled): signatures, permissions, MQTT login and topic
ACLs, admin token; real clients authenticate with the right credentials and fail with the wrong ones."""

from __future__ import annotations

import json
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path

import paho.mqtt.client as paho
import pytest
import trio

from rocketlite.protocols.remoting.client import RemotingClient
from rocketlite.security.acl import (
    Acl,
    Account,
    AuthError,
    Denied,
    filter_covers,
    grpc_signature,
    load_acl,
    parse_perm,
    remoting_signature,
)
from tests.support.interop import INTEROP, venv_python
from tests.support.server import RocketliteProcess

HERE = Path(__file__).resolve().parent
ACL_TOML = """
[[accounts]]
access_key = "admin"
secret_key = "admin-secret"
admin = true

[[accounts]]
access_key = "app"
secret_key = "app-secret"
default_topic_perm = "DENY"
default_group_perm = "DENY"
topics = { AuthOrders = "PUB|SUB", AuthAudit = "PUB" }
groups = { GID_auth = "SUB" }

[[mqtt_users]]
username = "sensor"
password = "s3cret"
publish = ["sensors/%u/#"]
subscribe = ["sensors/#", "commands/%u"]
"""


# -- pure ACL ---------------------------------------------------------------------------------------

def test_remoting_signature_matches_what_the_cpp_client_sends():
    # captured from librocketmq (REMOTING.md 7.2): empty AccessKey, i.e. HMAC with an empty secret
    ext = {"AccessKey": "", "OnsChannel": "ALIYUN", "Signature": "LpWowXG6j/bZI2+LoLEz+I+/d1g=", "topic": "RocketliteTest"}
    assert remoting_signature(ext, b"", "") == ext["Signature"]


def test_acl_verifies_signatures_and_permissions():
    acl = load_acl(__import__("tomllib").loads(ACL_TOML))
    ext = {"AccessKey": "app", "b": "AuthOrders", "a": "PID"}
    ext["Signature"] = remoting_signature(ext, b"body", "app-secret")
    acc = acl.verify_remoting(ext, b"body")
    acl.authorize(acc, [("topic", "AuthOrders", "PUB"), ("topic", "AuthAudit", "PUB"), ("group", "GID_auth", "SUB")])
    with pytest.raises(AuthError):
        acl.verify_remoting(ext, b"tampered")
    with pytest.raises(AuthError):
        acl.verify_remoting({**ext, "AccessKey": "nobody"}, b"body")
    for res in (("topic", "AuthAudit", "SUB"), ("topic", "Other", "PUB"), ("group", "G2", "SUB"), ("admin", "x", ""),
                ("topic", "%RETRY%G2", "PUB")):
        with pytest.raises(Denied):
            acl.authorize(acc, [res])
    acl.authorize(acc, [("topic", "%RETRY%GID_auth", "PUB")])  # retry topics follow the group
    dt = "20261122T050453Z"
    md = {"x-mq-date-time": dt,
          "authorization": f"MQv2-HMAC-SHA1 Credential=app, SignedHeaders=x-mq-date-time, "
                           f"Signature={grpc_signature(dt, 'app-secret').lower()}"}
    assert acl.verify_grpc(md).access_key == "app"
    with pytest.raises(AuthError):
        acl.verify_grpc({**md, "x-mq-date-time": "20261122T050454Z"})
    with pytest.raises(AuthError):
        acl.verify_grpc({"x-mq-date-time": dt})


def test_mqtt_users_and_topic_filters():
    acl = load_acl(__import__("tomllib").loads(ACL_TOML))
    u = acl.mqtt_login("sensor", b"s3cret")
    with pytest.raises(AuthError):
        acl.mqtt_login("sensor", b"wrong")
    with pytest.raises(AuthError):
        acl.mqtt_login(None, None)
    assert acl.mqtt_may(u, "sensors/sensor/temp", "PUB")
    assert not acl.mqtt_may(u, "sensors/other/temp", "PUB")
    assert acl.mqtt_may(u, "sensors/+/temp", "SUB") and acl.mqtt_may(u, "commands/sensor", "SUB")
    assert not acl.mqtt_may(u, "#", "SUB") and not acl.mqtt_may(u, "commands/+", "SUB")
    assert filter_covers("#", "a/b") and not filter_covers("#", "$SYS/x") and not filter_covers("a/+", "a/#")
    assert parse_perm("DENY") == frozenset() and parse_perm("PUB|SUB") == {"PUB", "SUB"}
    assert Acl([Account("k", "s", admin=True)]).account("k").admin


# -- a strict process --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def strict(tmp_path_factory):
    d = tmp_path_factory.mktemp("strict")
    (d / "acl.toml").write_text(ACL_TOML)
    srv = RocketliteProcess(d / "data", extra_args=[
        "--set", "security.enabled=true", "--set", f"security.acl_file={d / 'acl.toml'}",
        "--set", "http.admin_token=tok-123"])
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def signed_send(srv, topic, ak, sk, body=b"hello"):
    async def main():
        async with RemotingClient.connect(*srv.addr("remoting")) as c:
            cmd = c.command(310, {"a": "PID", "b": topic, "c": "TBW102", "d": 4, "e": 0, "f": 0, "g": 0, "h": 0,
                                  "i": "", "j": 0, "k": False}, body)
            if ak is not None:
                cmd.ext["AccessKey"] = ak
                cmd.ext["OnsChannel"] = "ALIYUN"
                cmd.ext["Signature"] = remoting_signature(cmd.ext, body, sk)
            return await c.roundtrip(cmd, timeout=10)

    return trio.run(main)


def test_strict_remoting_requires_valid_signature_and_permission(strict):
    assert signed_send(strict, "AuthOrders", "app", "app-secret").code == 0
    assert signed_send(strict, "Anything", "admin", "admin-secret").code == 0
    for topic, ak, sk in [("AuthOrders", None, None), ("AuthOrders", "app", "wrong"), ("AuthOrders", "ghost", "x"),
                          ("Forbidden", "app", "app-secret")]:
        r = signed_send(strict, topic, ak, sk)
        assert r.code == 16, (topic, ak, r.code, r.remark)  # NO_PERMISSION


def mqtt_connect(srv, user, pw, version=paho.MQTTv311):
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"auth-{user}-{pw}", protocol=version)
    if user is not None:
        c.username_pw_set(user, pw)
    result: list = []
    ev = threading.Event()

    def on_connect(client, userdata, flags, rc, props=None):
        result.append(rc)
        ev.set()

    c.on_connect = on_connect
    c.connect(*srv.addr("mqtt"), keepalive=30)
    c.loop_start()
    assert ev.wait(10)
    return c, result[0]


def test_strict_mqtt_login_and_topic_acl(strict):
    for user, pw in [("sensor", "bad"), (None, None), ("ghost", "x")]:
        c, rc = mqtt_connect(strict, user, pw)
        c.loop_stop()
        assert rc.is_failure and rc.value in (4, 5, 0x86, 0x87), rc
    c, rc = mqtt_connect(strict, "sensor", "s3cret", paho.MQTTv5)
    try:
        assert not rc.is_failure
        got = []
        subacks: list = []
        done = threading.Event()
        c.on_subscribe = lambda cl, u, mid, codes, props: (subacks.append(codes), done.set())
        c.on_message = lambda cl, u, m: got.append(m.topic)
        c.subscribe([("sensors/#", 1), ("#", 1)])
        assert done.wait(10)
        codes = subacks[0]
        assert not codes[0].is_failure and codes[1].is_failure and codes[1].value == 0x87, codes
        ok = c.publish("sensors/sensor/temp", b"21", qos=1)
        ok.wait_for_publish(10)
        acks = []
        c.on_publish = lambda cl, u, mid, rc, props: acks.append((mid, rc))
        bad = c.publish("sensors/other/temp", b"x", qos=1)
        bad.wait_for_publish(10)
        assert any(mid == bad.mid and rc.value == 0x87 for mid, rc in acks), acks
    finally:
        c.disconnect()
        c.loop_stop()


def test_strict_admin_api_needs_the_token(strict):
    url = f"http://{strict.endpoint('http')}/api/topics"
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url, timeout=10)
    assert e.value.code == 401
    req = urllib.request.Request(url, headers={"Authorization": "Bearer tok-123"})
    assert urllib.request.urlopen(req, timeout=10).status == 200


# -- real clients ------------------------------------------------------------------------------------

def run_json(cmd, timeout=40, env=None):
    p = subprocess.run([str(x) for x in cmd], capture_output=True, text=True, timeout=timeout, env=env)
    lines = [x for x in p.stdout.splitlines() if x.startswith("{")]
    assert lines, f"no result: {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"
    return json.loads(lines[-1])


@pytest.mark.interop
@pytest.mark.parametrize("venv", ["rocketmq044", "rocketmq-cpp21"])
def test_real_cpp_client_authenticates(strict, venv, tmp_path):
    py = venv_python(venv)
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    good = run_json([py, HERE / "auth_clients" / "cpp_auth.py", strict.endpoint("remoting"), "AuthOrders", "app",
                     "app-secret"], env=env)
    assert good["ok"], good
    bad = run_json([py, HERE / "auth_clients" / "cpp_auth.py", strict.endpoint("remoting"), "AuthOrders", "app",
                    "wrong-secret"], env=env)
    assert not bad["ok"], bad
    # the route query is refused first, so librocketmq reports its usual "No route info" (or NO_PERMISSION)
    assert any(w in bad["error"].lower() for w in ("no route info", "16", "permission", "signature")), bad


@pytest.mark.interop
def test_real_grpc_python_client_authenticates(strict, tmp_path):
    py = venv_python("grpc-python")
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    script = HERE / "auth_clients" / "grpc_auth.py"
    good = run_json([py, script, strict.endpoint("grpc"), "AuthOrders", "GID_auth", "app", "app-secret"], env=env)
    assert good["ok"], good
    bad = run_json([py, script, strict.endpoint("grpc"), "AuthOrders", "GID_auth", "app", "wrong"], env=env)
    assert not bad["ok"], bad
    forbidden = run_json([py, script, strict.endpoint("grpc"), "AuthAudit", "GID_auth", "app", "app-secret"], env=env)
    assert not forbidden["ok"], forbidden  # may publish to AuthAudit, not subscribe
    print("grpc wrong secret:", bad["error"][:300], "| no permission:", forbidden["error"][:300])


@pytest.mark.interop
def test_real_mosquitto_clients_authenticate(strict):
    mosq = "/usr/bin/mosquitto_pub"
    if not Path(mosq).exists():
        pytest.skip("mosquitto clients not installed")
    host, port = strict.addr("mqtt")
    ok = subprocess.run([mosq, "-h", host, "-p", str(port), "-u", "sensor", "-P", "s3cret", "-q", "1",
                         "-t", "sensors/sensor/x", "-m", "1"], capture_output=True, text=True, timeout=20)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([mosq, "-h", host, "-p", str(port), "-u", "sensor", "-P", "nope", "-q", "1",
                          "-t", "sensors/sensor/x", "-m", "1"], capture_output=True, text=True, timeout=20)
    print("mosquitto_pub wrong password:", bad.stderr.strip())
    assert bad.returncode != 0 and ("not authori" in bad.stderr.lower() or "bad user" in bad.stderr.lower()
                                    or "password" in bad.stderr.lower()), bad.stderr




@pytest.mark.interop
def test_real_alions_client_authenticates(strict, tmp_path):
    from tests.support.interop import require

    modules = require(INTEROP / "node" / "remoting" / "node_modules" / "ali-ons", "npm ali-ons 3.12.0").parent
    node = require("node", "node")
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin:/usr/local/bin", "ALIONS_MODULES": str(modules)}
    script = HERE / "auth_clients" / "alions_auth.js"
    good = run_json([node, script, strict.endpoint("remoting"), "AuthOrders", "app", "app-secret"], env=env)
    assert good["ok"], good
    bad = run_json([node, script, strict.endpoint("remoting"), "AuthOrders", "app", "wrong"], env=env)
    assert not bad["ok"], bad
    forbidden = run_json([node, script, strict.endpoint("remoting"), "Elsewhere", "app", "app-secret"], env=env)
    assert not forbidden["ok"], forbidden
    print("ali-ons wrong secret:", bad["error"], "| no permission:", forbidden["error"])


@pytest.mark.interop
def test_real_grpc_node_client_authenticates(strict, tmp_path):
    from tests.interop.grpc_support import node_grpc_dir
    from tests.support.interop import require

    node = require("node", "node")
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin:/usr/local/bin", "NODE_PATH": str(node_grpc_dir() / "node_modules")}
    script = HERE / "auth_clients" / "grpc_auth.js"
    good = run_json([node, script, strict.endpoint("grpc"), "AuthOrders", "app", "app-secret"], env=env)
    assert good["ok"], good
    bad = run_json([node, script, strict.endpoint("grpc"), "AuthOrders", "app", "wrong"], env=env)
    assert not bad["ok"], bad
    forbidden = run_json([node, script, strict.endpoint("grpc"), "Elsewhere", "app", "app-secret"], env=env)
    assert not forbidden["ok"], forbidden
    print("node grpc wrong secret:", bad["error"][:300], "| no permission:", forbidden["error"][:300])
