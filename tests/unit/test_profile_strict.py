"""`rocketlite serve --profile strict`: authentication on, no auto-created topics, admin token required."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.server import RocketliteProcess


def test_strict_profile_process(tmp_path: Path) -> None:
    mqtt = pytest.importorskip("paho.mqtt.client")
    with RocketliteProcess(tmp_path / "d", extra_args=["--profile", "strict", "--set", "security.access_key=ak",
                                                          "--set", "security.secret_key=sk-secret"]) as srv:
        host, port = srv.addr("http")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://{host}:{port}/api/topics", timeout=10)
        assert err.value.code == 401
        # an MQTT client without credentials is refused at CONNECT (CONNACK "not authorized")
        import queue

        results: "queue.Queue[object]" = queue.Queue()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="anon", protocol=mqtt.MQTTv311)
        c.on_connect = lambda _c, _u, _f, rc, _p: results.put(rc)
        mhost, mport = srv.addr("mqtt")
        c.connect(mhost, mport)
        c.loop_start()
        try:
            rc = results.get(timeout=10)
        finally:
            c.loop_stop()
        assert rc.is_failure, f"an anonymous MQTT client was let in under the strict profile: {rc}"


def test_strict_profile_without_accounts_refuses_to_start(tmp_path: Path) -> None:
    srv = RocketliteProcess(tmp_path / "d", extra_args=["--profile", "strict"])
    with pytest.raises(RuntimeError, match="exited"):
        srv.start()
