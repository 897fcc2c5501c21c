"""The web console in headless Chromium (Debian's chromium, driven by Playwright), end to end.

Create a topic in the browser, send messages with a real RocketMQ client (librocketmq, PyPI
``rocketmq`` 0.4.4), find one by key in the message browser, and watch a consumer group's lag
drop while a real push consumer catches up. MQTT sessions and retained messages come from paho.

Screenshots go to $ROCKETLITE_SCREENSHOTS (docs/screenshots/ when refreshing the docs) or tmp.
Install: .ci/install-browser.sh (chromium + playwright) and .ci/install-remoting.sh (client).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.support.interop import require, venv_python
from tests.support.server import RocketliteProcess

HERE = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TOPIC = "browser_orders"
GROUP = "browser_billing"
N = 20


def api(srv: RocketliteProcess, method: str, path: str, body: Any = None) -> Any:
    host, port = srv.addr("http")
    req = urllib.request.Request(f"http://{host}:{port}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def client(py: Path, mode: str, srv: RocketliteProcess, **cfg: Any) -> subprocess.Popen[str]:
    conf = {"nameSrv": srv.endpoint("remoting"), "topic": TOPIC, "timeoutS": 90, **cfg}
    return subprocess.Popen([str(py), str(HERE / "rmq_client.py"), mode, json.dumps(conf)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True)


def read_event(proc: subprocess.Popen[str], event: str) -> dict[str, Any]:
    assert proc.stdout is not None
    for line in proc.stdout:
        rec = json.loads(line)
        if rec["event"] == event:
            return rec
        if rec["event"] in ("error", "timeout"):
            raise AssertionError(f"client failed: {rec}")
    raise AssertionError(f"client exited (code {proc.wait()}) before {event}")


def shot(page: Any, path: Path) -> None:
    page.evaluate("document.querySelector('#toast').classList.add('hidden')")  # no stale notice in the picture
    page.screenshot(path=str(path))


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    d = Path(os.environ.get("ROCKETLITE_SCREENSHOTS") or tmp_path)
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture
def env() -> Iterator[tuple[Any, RocketliteProcess]]:
    """A page in headless Chromium and a rocketlite process, started side by side."""
    require(CHROMIUM, "Debian chromium (.ci/install-browser.sh)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require("/nonexistent/playwright", "playwright for Python (.ci/install-browser.sh)")
        raise
    srv = RocketliteProcess(ephemeral=True)
    starting = threading.Thread(target=srv.start)
    starting.start()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 760})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.set_default_timeout(30_000)
            starting.join()
            assert srv.addresses, "rocketlite did not start"
            try:
                yield page, srv
            finally:
                browser.close()
            assert not errors, errors
    finally:
        starting.join()
        srv.stop()


def test_console_topic_messages_and_lag(env: tuple[Any, RocketliteProcess], shots: Path) -> None:
    py = venv_python("rocketmq044")
    page, srv = env
    host, port = srv.addr("http")
    base = f"http://{host}:{port}/?refresh=400"

    # 1. create the topic in the browser
    page.goto(base + "#topics")
    page.fill("#topic-name", TOPIC)
    page.fill("#topic-queues", "2")
    page.click("#topic-create")
    page.wait_for_selector(f'tr[data-topic="{TOPIC}"]')
    assert api(srv, "GET", f"/api/topics/{TOPIC}")["write_queues"] == 2

    # 2. a real RocketMQ producer sends N messages with keys
    prod = client(py, "produce", srv, group="browser_producer", n=N)
    ids = read_event(prod, "produced")["ids"]
    prod.wait(10)
    assert len(ids) == N
    total = api(srv, "GET", f"/api/topics/{TOPIC}")["messages"]  # N, or N + a send retried by the client
    assert total >= N
    page.wait_for_function(
        f"""() => document.querySelector('tr[data-topic="{TOPIC}"] .messages')?.textContent === '{total}'""")
    page.click(f'tr[data-topic="{TOPIC}"] td')
    page.wait_for_selector("#topic-detail:not(.hidden)")
    shot(page, shots / "console-topics.png")

    # 3. find a message by key in the message browser
    page.goto(base + "#messages")
    page.fill("#msg-topic", TOPIC)
    page.fill("#msg-key", "order-7")
    page.click("#msg-search")
    page.click("#msg-results tbody tr[data-index] td")
    page.wait_for_selector("#msg-detail:not(.hidden)")
    body = page.text_content("#msg-body") or ""
    assert '"order": 7' in body
    assert "order-7" in (page.text_content("#msg-detail") or "")
    shot(page, shots / "console-message.png")

    # 4. a consumer group with a backlog: lag N, then a real push consumer catches up
    api(srv, "POST", f"/api/groups/{GROUP}/offsets", {"topic": TOPIC, "to": "earliest"})
    page.goto(base + "#groups")
    page.wait_for_selector(f'tr[data-group="{GROUP}"]')
    page.click(f'tr[data-group="{GROUP}"] td')
    page.wait_for_function(f"() => document.querySelector('#group-lag')?.textContent === '{total}'")
    shot(page, shots / "console-group-lag-before.png")
    cons = client(py, "consume", srv, group=GROUP, n=total, delayS=0.05, holdS=60)
    try:
        read_event(cons, "started")
        seen = page.evaluate(
            """async (n) => {
                const seen = [];
                const deadline = Date.now() + 40000;  // librocketmq persists offsets every 5 s; slow CI
                while (Date.now() < deadline) {
                    const v = Number((document.querySelector('#group-lag')?.textContent ?? 'x').replace(/,/g, ''));
                    if (!Number.isNaN(v) && (!seen.length || seen[seen.length - 1] !== v)) seen.push(v);
                    if (v === 0) break;
                    await new Promise((r) => setTimeout(r, 100));
                }
                return seen;
            }""", total)
        assert seen[0] == total and seen[-1] == 0, seen
        assert seen == sorted(seen, reverse=True), seen  # the lag only goes down
        page.wait_for_selector("#group-queues .queue-lag")
        shot(page, shots / "console-group-lag-after.png")
        assert api(srv, "GET", f"/api/groups/{GROUP}")["lag"] == 0

        # the message's delivery state now says consumed for the group
        page.goto(base + "#messages")
        page.evaluate("""() => {  // forget the earlier search, so what follows is the new answer
            document.querySelector('#msg-results tbody').innerHTML = '';
            document.querySelector('#msg-detail').classList.add('hidden');
        }""")
        page.fill("#msg-key", "order-7")
        page.click("#msg-search")
        page.click("#msg-results tbody tr[data-index] td")
        page.wait_for_function(
            f"() => document.querySelector('#msg-delivery')?.textContent.includes('{GROUP}: CONSUMED')")
    finally:
        cons.kill()
        cons.wait()

    # 5. MQTT: a persistent session and a retained message (paho-mqtt)
    mqtt = pytest.importorskip("paho.mqtt.client")
    if "mqtt" in srv.addresses:
        mh, mp = srv.addr("mqtt")
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="lamp-controller", clean_session=False)
        c.connect(mh, mp)
        c.loop_start()
        try:
            c.subscribe("browser/lamp/#", qos=1)
            c.publish("browser/lamp/kitchen", b"on", qos=1, retain=True).wait_for_publish(5)
            page.goto(base + "#mqtt")
            page.wait_for_selector("#mqtt-retained")
            page.wait_for_function("() => document.querySelector('#mqtt-clients')?.textContent.includes('lamp-controller')")
            page.wait_for_function(
                "() => document.querySelector('#mqtt-retained')?.textContent.includes('browser/lamp/kitchen')")
            shot(page, shots / "console-mqtt.png")
        finally:
            c.loop_stop()
            c.disconnect()
