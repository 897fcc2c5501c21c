"""The official PyPI rocketmq-python-client 5.1.2 against a real rocketlite process."""

from __future__ import annotations

from pathlib import Path

import pytest

from rocketlite.protocols.grpc.tls import self_signed_pem
from tests.interop.grpc_support import event, run_scenario
from tests.support.server import RocketliteProcess

pytestmark = pytest.mark.interop


def test_producer_and_simple_consumer(rocketlite_process: RocketliteProcess, tmp_path: Path) -> None:
    ev = run_scenario("python", rocketlite_process, "simple", "PySimple", "py-simple", "5", home=tmp_path)
    got = event(ev, "received")
    assert sorted(got["bodies"]) == [f"hello-{i}" for i in range(5)]
    assert all(p.get("n") for p in got["props"]) and set(got["attempts"]) == {1}


def test_producer_and_simple_consumer_over_tls(tmp_path: Path) -> None:
    """TLS and plaintext share the port; the client trusts our certificate through grpc's roots override."""
    cert, key = self_signed_pem()
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    args = ["--set", f"grpc.tls_cert_file={tmp_path / 'cert.pem'}", "--set", f"grpc.tls_key_file={tmp_path / 'key.pem'}"]
    with RocketliteProcess(tmp_path / "data", extra_args=args) as srv:
        ev = run_scenario(
            "python", srv, "simple", "PySimpleTls", "py-simple-tls", "2", "1", home=tmp_path / "home",
            env={"GRPC_DEFAULT_SSL_ROOTS_FILE_PATH": str(tmp_path / "cert.pem")},
        )
    assert len(event(ev, "received")["ids"]) == 2
