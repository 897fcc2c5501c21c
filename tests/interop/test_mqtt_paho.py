"""paho-mqtt (3.1.1 and 5) against a real rocketlite process."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.interop.mqtt_support import CLIENTS, mqtt_server, prefix, run  # noqa: F401
from tests.support.server import RocketliteProcess

pytestmark = pytest.mark.interop
SCRIPT = str(CLIENTS / "paho_scenarios.py")


def scenario(srv: RocketliteProcess, version: int, name: str, pfx: str) -> str:
    host, port = srv.addr("mqtt")
    return run([sys.executable, SCRIPT, host, str(port), str(version), name, pfx])


@pytest.mark.parametrize("version", [4, 5])
@pytest.mark.parametrize("name", ["roundtrip", "retained", "persist", "wildcards", "shared"])
def test_paho(mqtt_server, version, name):  # noqa: F811
    scenario(mqtt_server, version, name, prefix())


@pytest.mark.parametrize("version", [4, 5])
def test_paho_will_on_abrupt_disconnect(mqtt_server, version):  # noqa: F811
    host, port = mqtt_server.addr("mqtt")
    pfx = prefix()
    watch = subprocess.Popen([sys.executable, SCRIPT, host, str(port), str(version), "will_watch", pfx],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert watch.stdout is not None
    assert watch.stdout.readline().strip() == "SUBSCRIBED"
    holder = subprocess.Popen([sys.executable, SCRIPT, host, str(port), str(version), "will_holder", pfx],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    try:
        assert holder.stdout.readline().strip() == "CONNECTED"
    finally:
        holder.kill()  # abrupt: no DISCONNECT
        holder.wait()
    out, err = watch.communicate(timeout=20)
    assert watch.returncode == 0 and "OK" in out, err[-2000:]


@pytest.mark.parametrize("version", [4, 5])
def test_paho_persistent_session_across_restart(tmp_path, version):
    with RocketliteProcess(tmp_path / "data") as srv:
        pfx = prefix()
        scenario(srv, version, "persist_subscribe", pfx)
        scenario(srv, version, "persist_publish", pfx)
        srv.restart()
        scenario(srv, version, "persist_receive", pfx)
