"""``rocketlite admin`` verbs and ``rocketlite produce``/``consume`` against a real rocketlite process."""

from __future__ import annotations

import json
import re
import urllib.request
from typing import Any, Iterator

import pytest

from rocketlite.admin.cli import parse_time
from rocketlite.admin.quick import Progress
from rocketlite.cli import main
from tests.support.server import RocketliteProcess


@pytest.fixture(scope="module")
def srv() -> Iterator[RocketliteProcess]:
    pytest.importorskip("rocketlite.protocols.remoting.server")
    with RocketliteProcess(ephemeral=True) as p:
        if "remoting" not in p.addresses:
            pytest.skip("remoting front-end not available")
        yield p


def run(capsys: pytest.CaptureFixture[str], srv: RocketliteProcess, *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    verb = argv[0]
    ns = ["-n", srv.endpoint("remoting")]
    args = [*argv[:2], *ns, *argv[2:]] if verb == "admin" else [verb, *ns, *argv[1:]]
    code = main(list(args))
    return code, capsys.readouterr().out


def api(srv: RocketliteProcess, path: str) -> Any:
    host, port = srv.addr("http")
    with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=10) as r:
        return json.loads(r.read())


def table(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines() if line.strip() and not line.startswith("#")]


def test_topic_verbs(capsys: pytest.CaptureFixture[str], srv: RocketliteProcess) -> None:
    code, out = run(capsys, srv, "admin", "updateTopic", "-t", "adm_orders", "-r", "3", "-w", "3")
    assert code == 0
    assert re.search(r"create topic to 127\.0\.0\.1:\d+ success\.", out)
    assert "TopicConfig [topicName=adm_orders, readQueueNums=3, writeQueueNums=3, perm=RW-" in out
    code, out = run(capsys, srv, "admin", "topicList")
    assert code == 0 and "adm_orders" in out.split()
    code, out = run(capsys, srv, "produce", "-t", "adm_orders", "-c", "7", "-k", "ord-{i}", "--tags", "TagA")
    assert code == 0 and "sent 7 messages" in out
    code, out = run(capsys, srv, "admin", "topicStatus", "-t", "adm_orders")
    assert out.splitlines()[0].split()[:4] == ["#Broker", "Name", "#QID", "#Min"]
    rows = table(out)
    assert [int(r[1]) for r in rows] == [0, 1, 2]
    assert sum(int(r[3]) for r in rows) == 7
    code, out = run(capsys, srv, "admin", "deleteTopic", "-t", "adm_orders")
    assert code == 0 and "delete topic [adm_orders] from NameServer success." in out
    code, out = run(capsys, srv, "admin", "topicList")
    assert "adm_orders" not in out.split()


def test_messages_offsets_and_consumer_progress(capsys: pytest.CaptureFixture[str], srv: RocketliteProcess) -> None:
    run(capsys, srv, "admin", "updateTopic", "-t", "adm_msgs", "-r", "2", "-w", "2")
    code, out = run(capsys, srv, "produce", "-t", "adm_msgs", "-c", "10", "-k", "k-{i}", "-b", "body-{i}", "--json")
    sent = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(sent) == 10
    code, out = run(capsys, srv, "admin", "queryMsgByKey", "-t", "adm_msgs", "-k", "k-4")
    assert out.splitlines()[0].split() == ["#Message", "ID", "#QID", "#Offset"]
    rows = table(out)
    assert len(rows) == 1 and rows[0][0] == sent[4]["msgId"]
    for mid in (sent[4]["msgId"], sent[4]["offsetMsgId"]):  # unique id and offset message id
        code, out = run(capsys, srv, "admin", "queryMsgById", "-i", mid)
        assert code == 0, out
        fields = dict(re.findall(r"^(.+?:)\s+(.*)$", out, re.M))
        assert fields["Topic:"] == "adm_msgs" and fields["Keys:"] == "[k-4]" and fields["Message Body:"] == "body-4"
    code, out = run(capsys, srv, "admin", "queryMsgById", "-i", "0123456789ABCDEF", "-t", "adm_msgs")
    assert code == 1 and "not found" in out

    # a group starting from the beginning: lag 10, then a consumer takes 6
    code, out = run(capsys, srv, "admin", "resetOffsetByTime", "-g", "adm_g", "-t", "adm_msgs", "-s", "0")
    assert code == 0 and [r[-1] for r in table(out)[1:]] == ["0", "0"]
    code, out = run(capsys, srv, "admin", "consumerProgress", "-g", "adm_g")
    assert "Consume Diff Total: 10" in out
    code, out = run(capsys, srv, "consume", "-t", "adm_msgs", "-g", "adm_g", "-c", "6", "--json")
    got = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(got) == 6 and all(g["body"].startswith("body-") for g in got)
    code, out = run(capsys, srv, "admin", "consumerProgress", "-g", "adm_g")
    assert "Consume Diff Total: 4" in out
    rows = [r for r in table(out) if r and r[0] == "adm_msgs"]
    assert sum(int(r[5]) for r in rows) == 4 and {r[2] for r in rows} == {"0", "1"}
    code, out = run(capsys, srv, "admin", "consumerProgress", "-g", "adm_g", "-s")
    assert "#Client IP" in out.splitlines()[0] and "Consume Diff Total: 4" in out
    assert api(srv, "/api/groups/adm_g")["lag"] == 4
    # the rest with the default idle stop, then reset to "now": nothing left
    code, out = run(capsys, srv, "consume", "-t", "adm_msgs", "-g", "adm_g", "--idle", "0.3", "--print", "none")
    assert code == 0
    assert api(srv, "/api/groups/adm_g")["lag"] == 0
    run(capsys, srv, "admin", "resetOffsetByTime", "-g", "adm_g", "-t", "adm_msgs", "-s", "0")
    assert api(srv, "/api/groups/adm_g")["lag"] == 10
    run(capsys, srv, "admin", "resetOffsetByTime", "-g", "adm_g", "-t", "adm_msgs", "-s", "now")
    assert api(srv, "/api/groups/adm_g")["lag"] == 0


def test_cluster_and_broker_config(capsys: pytest.CaptureFixture[str], srv: RocketliteProcess) -> None:
    code, out = run(capsys, srv, "admin", "clusterList")
    assert code == 0
    rows = table(out)
    broker_port = srv.addr("broker")[1] if "broker" in srv.addresses else None
    assert rows and rows[0][0] == "DefaultCluster" and rows[0][1] == "rocketlite" and rows[0][2] == "0"
    if broker_port:
        assert rows[0][3].endswith(f":{broker_port}")
    addr = rows[0][3]
    code, out = run(capsys, srv, "admin", "updateBrokerConfig", "-k", "brokerIP1", "-v", "127.0.0.1")
    assert code == 0 and out.strip() == f"update broker config success, {addr}"


def test_errors_are_reported(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["admin", "topicList", "-n", "127.0.0.1:1", "--timeout", "2"])
    assert code == 1
    assert "cannot reach 127.0.0.1:1" in capsys.readouterr().err


def test_parse_time_and_progress() -> None:
    assert parse_time("1700000000000") == 1700000000000
    assert parse_time("2024-01-02#03:04:05:678") % 1000 == 678
    with pytest.raises(SystemExit):
        parse_time("yesterday-ish")

    class Tty:
        def __init__(self) -> None:
            self.text = ""

        def isatty(self) -> bool:
            return True

        def write(self, s: str) -> None:
            self.text += s

        def flush(self) -> None:
            pass

    out = Tty()
    p = Progress(10, "produce", stream=out)  # type: ignore[arg-type]
    for _ in range(10):
        p.update()
    p.finish()
    assert "[##############################] 10/10" in out.text and out.text.endswith("\n")
