"""Debian mosquitto-clients (mosquitto_pub / mosquitto_sub, MQTT 3.1.1 and 5) against rocketlite."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.interop.mqtt_support import mqtt_server, prefix  # noqa: F401
from tests.support.interop import require
from tests.support.server import RocketliteProcess

pytestmark = pytest.mark.interop
VERSIONS = ["mqttv311", "mqttv5"]


def tools() -> tuple[str, str]:
    return str(require("mosquitto_pub", "mosquitto-clients")), str(require("mosquitto_sub", "mosquitto-clients"))


def pub(srv: RocketliteProcess, version: str, *args: str) -> None:
    host, port = srv.addr("mqtt")
    p = subprocess.run([tools()[0], "-h", host, "-p", str(port), "-V", version, *args],
                       capture_output=True, text=True, timeout=15)
    assert p.returncode == 0, p.stderr


class Sub:
    """mosquitto_sub in the background, started once its SUBACK arrived (debug output)."""

    def __init__(self, srv: RocketliteProcess, version: str, *args: str) -> None:
        host, port = srv.addr("mqtt")
        self.proc = subprocess.Popen(["stdbuf", "-oL", tools()[1], "-h", host, "-p", str(port), "-V", version, "-d", "-W", "15", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.lines: list[str] = []
        for line in self.proc.stdout:
            if "SUBACK" in line:
                return
            self.lines.append(line)
        raise AssertionError(f"mosquitto_sub never subscribed: {self.lines} {self.proc.stderr.read()}")  # type: ignore[union-attr]

    def messages(self) -> list[str]:
        out, err = self.proc.communicate(timeout=20)
        assert self.proc.returncode == 0, err
        return [ln for ln in out.splitlines() if ln and not ln.startswith(("Client ", "Subscribed "))]


@pytest.mark.parametrize("version", VERSIONS)
def test_qos_round_trips(mqtt_server, version):  # noqa: F811
    p = prefix()
    sub = Sub(mqtt_server, version, "-t", f"{p}/#", "-q", "2", "-C", "3", "-v")
    for q in (0, 1, 2):
        pub(mqtt_server, version, "-t", f"{p}/q{q}", "-q", str(q), "-m", f"m{q}")
    assert sorted(sub.messages()) == [f"{p}/q0 m0", f"{p}/q1 m1", f"{p}/q2 m2"]


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_and_wildcards(mqtt_server, version):  # noqa: F811
    p = prefix()
    pub(mqtt_server, version, "-t", f"{p}/r/x", "-q", "1", "-r", "-m", "kept")
    host, port = mqtt_server.addr("mqtt")
    out = subprocess.run([tools()[1], "-h", host, "-p", str(port), "-V", version, "-t", f"{p}/+/x", "-C", "1",
                          "-W", "10", "-F", "%t %p %r"], capture_output=True, text=True, timeout=15)
    assert out.stdout.strip() == f"{p}/r/x kept 1", out
    pub(mqtt_server, version, "-t", f"{p}/r/x", "-q", "1", "-r", "-n")  # clear
    sub = Sub(mqtt_server, version, "-t", f"{p}/+/x", "-t", f"{p}/a/#", "-C", "2", "-v")
    for t in ("r/x", "b/y", "a/b/c"):
        pub(mqtt_server, version, "-t", f"{p}/{t}", "-q", "1", "-m", t)
    assert sorted(sub.messages()) == [f"{p}/a/b/c a/b/c", f"{p}/r/x r/x"]


@pytest.mark.parametrize("version", VERSIONS)
def test_persistent_session_and_will(mqtt_server, version):  # noqa: F811
    p = prefix()
    host, port = mqtt_server.addr("mqtt")
    extra = ["-x", "600"] if version == "mqttv5" else []
    # subscribe with a persistent session, go away, messages queue, come back
    subprocess.run([tools()[1], "-h", host, "-p", str(port), "-V", version, "-c", "-i", f"{p}-durable", *extra,
                    "-t", f"{p}/d/#", "-q", "1", "-E"], check=True, timeout=15)
    for i in range(3):
        pub(mqtt_server, version, "-t", f"{p}/d/{i}", "-q", "1", "-m", f"offline{i}")
    out = subprocess.run([tools()[1], "-h", host, "-p", str(port), "-V", version, "-c", "-i", f"{p}-durable", *extra,
                          "-t", f"{p}/d/#", "-q", "1", "-C", "3", "-W", "10"], capture_output=True, text=True, timeout=15)
    assert out.stdout.split() == ["offline0", "offline1", "offline2"], out
    # a will, published when the publisher is killed without DISCONNECT
    sub = Sub(mqtt_server, version, "-t", f"{p}/will", "-q", "1", "-C", "1", "-v")
    holder = subprocess.Popen([tools()[0], "-h", host, "-p", str(port), "-V", version, "-t", f"{p}/x", "-l",
                               "--will-topic", f"{p}/will", "--will-payload", "gone", "--will-qos", "1"],
                              stdin=subprocess.PIPE, text=True)
    assert holder.stdin is not None
    holder.stdin.write("hello\n")
    holder.stdin.flush()
    time.sleep(0.5)  # let it connect and publish (nothing to wait on: it prints nothing)
    holder.kill()
    holder.wait()
    assert sub.messages() == [f"{p}/will gone"]
