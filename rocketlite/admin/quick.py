"""``rocketlite produce`` and ``rocketlite consume``: quick checks from the shell over remoting.

    rocketlite produce -n 127.0.0.1:9876 -t orders -c 1000 -k 'order-{i}' -b '{"n": {i}}'
    rocketlite consume -n 127.0.0.1:9876 -t orders -g checker -c 1000

They speak the remoting protocol (like every RocketMQ 4.x client), so they also work against
Apache RocketMQ. Long runs draw a progress bar on stderr when it is a terminal (or --progress).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from typing import Any, TextIO

from rocketlite.admin.client import RemotingClient, RemotingError
from rocketlite.admin.cli import DEFAULT_NAMESRV
from rocketlite.protocols.remoting.codec import (
    RequestCode,
    ResponseCode,
    decode_records,
    encode_json_body,
    encode_properties,
)


class Progress:
    """A one-line progress bar on a terminal; silent elsewhere unless forced."""

    def __init__(self, total: int | None, label: str, *, enabled: bool | None = None, stream: TextIO = sys.stderr):
        self.total = total
        self.label = label
        self.stream = stream
        self.enabled = stream.isatty() if enabled is None else enabled
        self.start = time.monotonic()
        self.last_draw = 0.0
        self.done = 0

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and (now - self.last_draw > 0.1 or (self.total and self.done >= self.total)):
            self.last_draw = now
            self.draw(now)

    def draw(self, now: float) -> None:
        elapsed = max(now - self.start, 1e-6)
        rate = self.done / elapsed
        if self.total:
            frac = min(1.0, self.done / self.total)
            width = 30
            fill = int(frac * width)
            bar = "#" * fill + "." * (width - fill)
            eta = (self.total - self.done) / rate if rate > 0 else 0
            text = f"\r{self.label} [{bar}] {self.done}/{self.total} {rate:,.0f} msg/s eta {eta:,.0f}s "
        else:
            text = f"\r{self.label} {self.done} messages {rate:,.0f} msg/s "
        self.stream.write(text)
        self.stream.flush()

    def finish(self) -> float:
        elapsed = time.monotonic() - self.start
        if self.enabled:
            self.draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()
        return elapsed


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--namesrvAddr", help=f"NameServer host:port (default $NAMESRV_ADDR or {DEFAULT_NAMESRV})")
    p.add_argument("-t", "--topic", required=True)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    p.add_argument("--progress", action="store_true", default=None, help="draw a progress bar even when not a tty")
    p.add_argument("--json", action="store_true", help="print one JSON object per message / result")


def _fmt(template: str, i: int) -> str:
    return template.replace("{i}", str(i))


def _brokers(c: RemotingClient, topic: str) -> list[tuple[str, str, int, int]]:
    queues = c.topic_queues(topic)
    if not queues:
        raise RemotingError(ResponseCode.TOPIC_NOT_EXIST, f"no route for topic {topic}", RequestCode.GET_ROUTEINFO_BY_TOPIC)
    return queues


def cmd_produce(args: argparse.Namespace) -> int:
    namesrv = args.namesrvAddr or os.environ.get("NAMESRV_ADDR") or DEFAULT_NAMESRV
    body_template = args.body if args.body is not None else ("x" * args.size if args.size else "hello {i}")
    out = sys.stdout
    try:
        with RemotingClient(namesrv, timeout=args.timeout) as c:
            targets = [(b, addr, q) for b, addr, _r, w in _brokers(c, args.topic) for q in range(w)]
            progress = Progress(args.count if args.count > 1 else None, "produce", enabled=args.progress
                                if args.progress else (None if args.count > 1 else False))
            pid = os.getpid()
            for i in range(args.count):
                bname, addr, qid = targets[i % len(targets)]
                props = {"UNIQ_KEY": uuid.uuid4().hex.upper(), "WAIT": "true"}
                if args.keys:
                    props["KEYS"] = _fmt(args.keys, i)
                if args.tags:
                    props["TAGS"] = args.tags
                for kv in args.property or []:
                    k, _, v = kv.partition("=")
                    props[k] = _fmt(v, i)
                resp = c.invoke(addr, RequestCode.SEND_MESSAGE, {
                    "producerGroup": args.group, "topic": args.topic, "defaultTopic": "TBW102",
                    "defaultTopicQueueNums": 4, "queueId": qid, "sysFlag": 0, "bornTimestamp": int(time.time() * 1000),
                    "flag": 0, "properties": encode_properties(props), "reconsumeTimes": 0, "unitMode": "false",
                    "batch": "false"}, _fmt(body_template, i).encode())
                if args.json:
                    out.write(json.dumps({"msgId": props["UNIQ_KEY"], "offsetMsgId": resp.ext.get("msgId"),
                                          "topic": args.topic, "brokerName": bname,
                                          "queueId": int(resp.ext.get("queueId", qid)),
                                          "queueOffset": int(resp.ext.get("queueOffset", -1))}) + "\n")
                elif args.count == 1:
                    out.write(f"SendResult [sendStatus=SEND_OK, msgId={props['UNIQ_KEY']}, "
                              f"offsetMsgId={resp.ext.get('msgId')}, messageQueue=MessageQueue [topic={args.topic}, "
                              f"brokerName={bname}, queueId={resp.ext.get('queueId', qid)}], "
                              f"queueOffset={resp.ext.get('queueOffset')}]\n")
                progress.update()
            elapsed = progress.finish()
            if args.count > 1 and not args.json:
                out.write(f"sent {args.count} messages to {args.topic} in {elapsed:.2f} s "
                          f"({args.count / max(elapsed, 1e-6):,.0f} msg/s, pid {pid})\n")
    except RemotingError as exc:
        sys.stderr.write(f"produce failed: {exc}\n")
        return 1
    except OSError as exc:
        sys.stderr.write(f"produce failed: cannot reach {namesrv}: {exc}\n")
        return 1
    return 0


def _heartbeat(c: RemotingClient, addr: str, client_id: str, group: str, topic: str) -> None:
    body = {"clientID": client_id, "producerDataSet": [], "consumerDataSet": [{
        "groupName": group, "consumeType": "CONSUME_ACTIVELY", "messageModel": "CLUSTERING",
        "consumeFromWhere": "CONSUME_FROM_FIRST_OFFSET", "unitMode": False,
        "subscriptionDataSet": [{"topic": topic, "subString": "*", "tagsSet": [], "codeSet": [], "subVersion": 0,
                                 "expressionType": "TAG", "classFilterMode": False}]}]}
    c.invoke(addr, RequestCode.HEART_BEAT, body=encode_json_body(body))


def cmd_consume(args: argparse.Namespace) -> int:
    namesrv = args.namesrvAddr or os.environ.get("NAMESRV_ADDR") or DEFAULT_NAMESRV
    out = sys.stdout
    client_id = f"127.0.0.1@rocketlite-consume-{os.getpid()}"
    got = 0
    try:
        with RemotingClient(namesrv, timeout=max(args.timeout, 3.0)) as c:
            queues = [(b, addr, q) for b, addr, r, _w in _brokers(c, args.topic) for q in range(r)]
            for addr in {a for _, a, _ in queues}:
                _heartbeat(c, addr, client_id, args.group, args.topic)
            offsets: dict[tuple[str, int], int] = {}
            for _b, addr, q in queues:
                committed = c.consumer_offset(addr, args.group, args.topic, q)
                if args.from_where == "beginning" or (committed is None and args.from_where == "committed"):
                    offsets[(addr, q)] = c.min_offset(addr, args.topic, q)
                elif args.from_where == "end":
                    offsets[(addr, q)] = c.max_offset(addr, args.topic, q)
                else:
                    offsets[(addr, q)] = committed or 0
            progress = Progress(args.count or None, "consume", enabled=args.progress)
            idle_since = time.monotonic()
            last_beat = time.monotonic()
            while not args.count or got < args.count:
                round_got = 0
                for bname, addr, q in queues:
                    if args.count and got >= args.count:
                        break
                    off = offsets[(addr, q)]
                    want = min(32, args.count - got) if args.count else 32
                    resp = c.invoke(addr, RequestCode.PULL_MESSAGE, {
                        "consumerGroup": args.group, "topic": args.topic, "queueId": q, "queueOffset": off,
                        "maxMsgNums": want, "sysFlag": 0x4, "commitOffset": 0, "suspendTimeoutMillis": 0,
                        "subscription": "*", "subVersion": 0, "expressionType": "TAG"}, check=False)
                    if "nextBeginOffset" in resp.ext:
                        nxt = int(resp.ext["nextBeginOffset"])
                    else:
                        nxt = off
                    if resp.code == ResponseCode.SUCCESS and resp.body:
                        found = decode_records(resp.body)
                        recs = found[:want]
                        if len(recs) < len(found):
                            nxt = recs[-1].queue_offset + 1
                        for r in recs:
                            got += 1
                            round_got += 1
                            _print_record(out, r, args)
                            progress.update()
                    offsets[(addr, q)] = nxt
                    if nxt != off:
                        c.update_consumer_offset(addr, args.group, args.topic, q, nxt)
                if round_got:
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since > args.idle:
                    break
                else:
                    time.sleep(0.1)
                if time.monotonic() - last_beat > 20:
                    for addr in {a for _, a, _ in queues}:
                        _heartbeat(c, addr, client_id, args.group, args.topic)
                    last_beat = time.monotonic()
            elapsed = progress.finish()
            for addr in {a for _, a, _ in queues}:
                c.invoke(addr, RequestCode.UNREGISTER_CLIENT, {"clientID": client_id, "consumerGroup": args.group},
                         check=False)
    except RemotingError as exc:
        sys.stderr.write(f"consume failed: {exc}\n")
        return 1
    except OSError as exc:
        sys.stderr.write(f"consume failed: cannot reach {namesrv}: {exc}\n")
        return 1
    if not args.json:
        sys.stderr.write(f"consumed {got} messages from {args.topic} as {args.group} in {elapsed:.2f} s\n")
    return 0 if not args.count or got >= args.count else 2


def _print_record(out: TextIO, r: Any, args: argparse.Namespace) -> None:
    if args.print == "none":
        return
    try:
        body: str = r.body.decode("utf-8")
    except UnicodeDecodeError:
        body = r.body.hex()
    if args.json:
        out.write(json.dumps({"msgId": r.properties.get("UNIQ_KEY") or r.msg_id, "topic": r.topic,
                              "queueId": r.queue_id, "queueOffset": r.queue_offset,
                              "tags": r.properties.get("TAGS", ""), "keys": r.properties.get("KEYS", ""),
                              "storeTimestamp": r.store_timestamp, "body": body}) + "\n")
    elif args.print == "full":
        out.write(f"[{r.topic}/{r.queue_id}@{r.queue_offset}] id={r.properties.get('UNIQ_KEY', r.msg_id)} "
                  f"keys={r.properties.get('KEYS', '')} tags={r.properties.get('TAGS', '')} {body}\n")
    else:
        out.write(body + "\n")


def register_produce(subparsers: Any) -> None:
    p = subparsers.add_parser("produce", help="send messages over remoting (quick check)",
                              description="Send messages over the remoting protocol. {i} in --body/--keys is the index.")
    _common(p)
    p.add_argument("-c", "--count", type=int, default=1)
    p.add_argument("-b", "--body", help="message body (default 'hello {i}')")
    p.add_argument("-s", "--size", type=int, default=0, help="body of this many bytes instead")
    p.add_argument("-k", "--keys", help="message keys (space separated), e.g. 'order-{i}'")
    p.add_argument("--tags", default="", help="message tag")
    p.add_argument("-p", "--property", action="append", metavar="K=V", help="user property (repeatable)")
    p.add_argument("-g", "--group", default="rocketlite_cli_producer", help="producer group")
    p.set_defaults(func=cmd_produce)


def register_consume(subparsers: Any) -> None:
    p = subparsers.add_parser("consume", help="pull messages over remoting and commit offsets (quick check)",
                              description="Pull messages of a topic as a consumer group and commit its offsets.")
    _common(p)
    p.add_argument("-g", "--group", default="rocketlite_cli_consumer", help="consumer group")
    p.add_argument("-c", "--count", type=int, default=0, help="stop after this many (default: when idle)")
    p.add_argument("--from", dest="from_where", choices=["committed", "beginning", "end"], default="committed",
                   help="where to start: the group's committed offset (default), the beginning or the end")
    p.add_argument("--idle", type=float, default=3.0, help="stop after this many seconds without messages")
    p.add_argument("--print", choices=["body", "full", "none"], default="body")
    p.set_defaults(func=cmd_consume)
