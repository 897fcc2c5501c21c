"""Run the Eclipse Paho MQTT interoperability suite (eclipse/paho.mqtt.testing, not part of this repo)
against rocketlite and, for comparison, mosquitto: each test in its own process with a timeout.

    python benchmarks/mqtt_paho_suite.py --suite /path/to/paho.mqtt.testing/interoperability

Starts rocketlite (ephemeral, free ports) and mosquitto (Debian, 127.0.0.1 only, when installed),
prints one line per test and the pass counts. rocketlite is started with
``--set mqtt.deny_subscribe=test/nosubscribe`` (the ACL test_subscribe_failure expects) and
``--set mqtt.max_keep_alive=60`` (test_server_keep_alive).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.server import RocketliteProcess  # noqa: E402

RUNNER = r'''
import importlib, sys, unittest, logging
sys.path.insert(0, sys.argv[1])
mod = importlib.import_module(sys.argv[2])
mod.host = "127.0.0.1"; mod.port = int(sys.argv[3])
mod.topics = ("TopicA", "TopicA/B", "Topic/C", "TopicA/C", "/TopicA")
mod.wildtopics = ("TopicA/+", "+/C", "#", "/#", "/+", "+/+", "TopicA/#")
mod.nosubscribe_topics = ("test/nosubscribe",)
mod.topic_prefix = ""
logging.getLogger().setLevel(logging.ERROR)
suite = unittest.TestLoader().loadTestsFromName("Test." + sys.argv[4], mod)
r = unittest.TextTestRunner(verbosity=0).run(suite)
sys.exit(0 if r.wasSuccessful() else 1)
'''


def tests_of(path: Path) -> list[str]:
    out = []
    for line in path.read_text().splitlines():
        s = line.strip()
        if s.startswith("def test") and line.startswith("    "):
            out.append(s[4:s.index("(")])
    return out


def run_suite(suite: Path, port: int, timeout: float) -> dict[str, bool]:
    results = {}
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(RUNNER)
        runner = f.name
    for module in ("client_test", "client_test5"):
        for name in tests_of(suite / f"{module}.py"):
            try:
                p = subprocess.run([sys.executable, runner, str(suite), module, str(port), name],
                                   capture_output=True, text=True, timeout=timeout, cwd=suite)
                ok = p.returncode == 0
            except subprocess.TimeoutExpired:
                ok = False
            results[f"{module}.{name}"] = ok
            print(f"  {module}.{name}: {'pass' if ok else 'FAIL'}", file=sys.stderr, flush=True)
    os.unlink(runner)
    return results


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", required=True, type=Path, help="paho.mqtt.testing/interoperability")
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--no-mosquitto", action="store_true")
    args = ap.parse_args()
    table: dict[str, dict[str, bool]] = {}
    with RocketliteProcess(extra_args=["--set", "mqtt.deny_subscribe=test/nosubscribe",
                                       "--set", "mqtt.max_keep_alive=60"]) as srv:
        table["rocketlite"] = run_suite(args.suite, srv.addr("mqtt")[1], args.timeout)
    mosq = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
    if mosq and not args.no_mosquitto:
        port = free_port()
        with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as f:
            f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
            conf = f.name
        proc = subprocess.Popen([mosq, "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        try:
            table["mosquitto"] = run_suite(args.suite, port, args.timeout)
        finally:
            proc.terminate()
            proc.wait()
            os.unlink(conf)
    names = list(next(iter(table.values())))
    print(f"{'test':55s} " + " ".join(f"{b:>10s}" for b in table))
    for n in names:
        print(f"{n:55s} " + " ".join(f"{'pass' if table[b][n] else 'FAIL':>10s}" for b in table))
    for b, res in table.items():
        v3 = [ok for n, ok in res.items() if n.startswith("client_test.")]
        v5 = [ok for n, ok in res.items() if n.startswith("client_test5.")]
        print(f"{b}: 3.1.1 {sum(v3)}/{len(v3)}, 5.0 {sum(v5)}/{len(v5)}, total {sum(v3) + sum(v5)}/{len(v3) + len(v5)}")


if __name__ == "__main__":
    main()
