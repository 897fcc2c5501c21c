"""``rocketlite admin <verb>``: the mqadmin verbs people use most, over the remoting protocol.

Each verb takes mqadmin's option letters (-n namesrv, -t topic, -g group, -c cluster, -b broker,
...) and prints a table shaped like mqadmin's, so scripts and habits carry over. Only request
codes that Apache RocketMQ's NameServer and Broker also answer are used, so the same command works
against a real RocketMQ cluster (see docs/operations.md for the few differences).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
from typing import Any, Callable, TextIO

from rocketlite.admin.client import (
    INVOKE_BROKER_TO_RESET_OFFSET,
    RemotingClient,
    RemotingError,
    now_ms,
)
from rocketlite.protocols.remoting.codec import (
    RequestCode,
    ResponseCode,
    StoredRecord,
    decode_records,
    parse_offset_msg_id,
)

DEFAULT_NAMESRV = "127.0.0.1:9876"
Verb = Callable[[RemotingClient, argparse.Namespace, TextIO], int]
VERBS: dict[str, tuple[str, Verb, Callable[[argparse.ArgumentParser], None]]] = {}


def verb(name: str, help_text: str, args: Callable[[argparse.ArgumentParser], None]) -> Callable[[Verb], Verb]:
    def deco(fn: Verb) -> Verb:
        VERBS[name] = (help_text, fn, args)
        return fn

    return deco


def human_time(ms: int) -> str:
    """mqadmin's timeMillisToHumanString2: local time, ``yyyy-MM-dd HH:mm:ss,SSS``."""
    if ms <= 0:
        return "-"
    t = _dt.datetime.fromtimestamp(ms / 1000)
    return t.strftime("%Y-%m-%d %H:%M:%S,") + f"{t.microsecond // 1000:03d}"


def parse_time(text: str) -> int:
    """``now``, epoch milliseconds, or mqadmin's ``yyyy-MM-dd#HH:mm:ss:SSS`` (local time)."""
    text = text.strip()
    if text.lower() == "now":
        return now_ms()
    if text.lstrip("-").isdigit():
        return int(text)
    for fmt in ("%Y-%m-%d#%H:%M:%S:%f", "%Y-%m-%d#%H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"):
        try:
            return int(_dt.datetime.strptime(text, fmt).timestamp() * 1000)
        except ValueError:
            continue
    raise SystemExit(f"cannot parse time {text!r}: use now, epoch ms or yyyy-MM-dd#HH:mm:ss:SSS")


def perm_text(perm: int) -> str:
    return ("R" if perm & 4 else "-") + ("W" if perm & 2 else "-") + ("X" if perm & 1 else "-")


def target_brokers(c: RemotingClient, args: argparse.Namespace) -> list[tuple[str, str, str]]:
    """-b address, else every master of -c cluster (or of every cluster)."""
    if getattr(args, "brokerAddr", None):
        return [("", "", args.brokerAddr)]
    found = c.brokers(getattr(args, "clusterName", None))
    if not found:
        raise SystemExit("no broker found (check -n / -c)")
    return found


# -- topics -------------------------------------------------------------------------------------


def _update_topic_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-t", "--topic", required=True)
    p.add_argument("-b", "--brokerAddr", help="create on this broker only")
    p.add_argument("-c", "--clusterName", help="create on every master of this cluster")
    p.add_argument("-r", "--readQueueNums", type=int, default=8)
    p.add_argument("-w", "--writeQueueNums", type=int, default=8)
    p.add_argument("-p", "--perm", type=int, default=6, help="6 = read+write, 4 = read, 2 = write")
    p.add_argument("-o", "--order", choices=["true", "false"], default="false")


@verb("updateTopic", "Update or create topic", _update_topic_args)
def update_topic(c: RemotingClient, args: argparse.Namespace, out: TextIO) -> int:
    ext = {"topic": args.topic, "defaultTopic": "TBW102", "readQueueNums": args.readQueueNums,
           "writeQueueNums": args.writeQueueNums, "perm": args.perm, "topicFilterType": "SINGLE_TAG",
           "topicSysFlag": 0, "order": args.order}
    for _, _, addr in target_brokers(c, args):
        c.invoke(addr, RequestCode.UPDATE_AND_CREATE_TOPIC, ext)
        out.write(f"create topic to {addr} success.\n")
    out.write(f"TopicConfig [topicName={args.topic}, readQueueNums={args.readQueueNums}, "
              f"writeQueueNums={args.writeQueueNums}, perm={perm_text(args.perm)}, topicFilterType=SINGLE_TAG, "
              f"topicSysFlag=0, order={args.order}, attributes={{}}]\n")
    return 0


def _topic_list_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--clusterModel", action="store_true", help="print cluster and consumer groups too")


@verb("topicList", "Fetch all topic list from name server", _topic_list_args)
def topic_list(c: RemotingClient, args: argparse.Namespace, out: TextIO) -> int:
    topics = c.topic_list()
    if not args.clusterModel:
        for t in topics:
            out.write(t + "\n")
        return 0
    clusters = sorted({cl for cl, _, _ in c.brokers()}) or [""]
    out.write("%-20s  %-48s  %-48s\n" % ("#Cluster Name", "#Topic", "#Consumer Group"))
    for t in topics:
        if t.startswith(("%RETRY%", "%DLQ%")):
            continue
        out.write("%-20s  %-48s  %-48s\n" % (clusters[0], t, ""))
    return 0


def _topic_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-t", "--topic", required=True)


@verb("topicStatus", "Examine topic Status info", _topic_args)
def topic_status(c: RemotingClient, args: argparse.Namespace, out: TextIO) -> int:
    out.write("%-32s  %-4s  %-20s  %-20s    %s\n" % ("#Broker Name", "#QID", "#Min Offset", "#Max Offset",
                                                     "#Last Updated"))
    for bname, addr, read, _write in c.topic_queues(args.topic):
        for q in range(read):
            hi = c.max_offset(addr, args.topic, q)
            lo = c.min_offset(addr, args.topic, q)
            last = c.last_store_time(addr, args.topic, q, hi)
            out.write("%-32s  %-4d  %-20d  %-20d    %s\n" % (bname, q, lo, hi, human_time(last) if last else ""))
    return 0


def _delete_topic_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-t", "--topic", required=True)
    p.add_argument("-c", "--clusterName", help="delete from every master of this cluster")


@verb("deleteTopic", "Delete topic from broker and NameServer.", _delete_topic_args)
def delete_topic(c: RemotingClient, args: argparse.Namespace, out: TextIO) -> int:
    brokers = target_brokers(c, args)
    for _, _, addr in brokers:
        c.invoke(addr, RequestCode.DELETE_TOPIC_IN_BROKER, {"topic": args.topic})
    cluster = args.clusterName or (brokers[0][0] if brokers else "")
    out.write(f"delete topic [{args.topic}] from cluster [{cluster}] success.\n")
    c.invoke(c.namesrv, RequestCode.DELETE_TOPIC_IN_NAMESRV, {"topic": args.topic})
    out.write(f"delete topic [{args.topic}] from NameServer success.\n")
    return 0


# -- consumers ----------------------------------------------------------------------------------


def group_rows(c: RemotingClient, group: str, topics: list[str]) -> list[dict[str, Any]]:
    rows = []
    for t in topics:
        for bname, addr, read, _ in c.topic_queues(t):
            offsets = [(q, c.consumer_offset(addr, group, t, q)) for q in range(read)]
            if all(o is None for _, o in offsets):
                continue
            for q, off in offsets:
                hi = c.max_offset(addr, t, q)
                cur = off if off is not None and off >= 0 else 0
                last = c.last_store_time(addr, t, q, cur) if cur > 0 else 0
                rows.append({"topic": t, "broker": bname, "qid": q, "broker_offset": hi, "consumer_offset": cur,
                             "diff": max(0, hi - cur), "last": last})
    return rows


def group_topics(c: RemotingClient, args: argparse.Namespace, group: str) -> list[str]:
    if getattr(args, "topic", None):
        return [args.topic]
    retry = f"%RETRY%{group}"
    return [t for t in c.topic_list() if not t.startswith(("%RETRY%", "%DLQ%", "rmq_sys_", "RMQ_SYS_")) or t == retry]


def _progress_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-g", "--groupName", help="consumer group (without it: every group)")
    p.add_argument("-t", "--topic", help="only this topic (default: every topic the group has offsets for)")
    p.add_argument("-s", "--showClientIP", action="store_true", help="add the client IP column (N/A here)")


@verb("consumerProgress", "Query consumer's progress, speed", _progress_args)
def consumer_progress(c: RemotingClient, args: argparse.Namespace, out: TextIO) -> int:
    if args.groupName:
        rows = group_rows(c, args.groupName, group_topics(c, args, args.groupName))
        # the column layout of mqadmin 5.x (-s adds the client IP)
        head = ["#Topic", "#Broker Name", "#QID", "#Broker Offset", "#Consumer Offset"]
        if args.showClientIP:
            head.append("#Client IP")
        out.write("%-64s  %-32s  %-4s  %-20s  %-20s  " % tuple(head[:5])
                  + ("%-20s " % head[5] if args.showClientIP else "")
                  + "%-20s %-20s%s\n" % ("#Diff", "#Inflight", "#LastTime"))
        for r in rows:
            out.write("%-64s  %-32s  %-4d  %-20d  %-20d  " % (
                r["topic"], r["broker"], r["qid"], r["broker_offset"], r["consumer_offset"])
                + ("%-20s " % "N/A" if args.showClientIP else "")
                + "%-20d %-20d%s\n" % (r["diff"], 0, human_time(r["last"])))
        out.write("\nConsume TPS: %.2f\n" % 0.0)
        out.write("Consume Diff Total: %d\n" % sum(r["diff"] for r in rows))
        out.write("Consume Inflight Total: %d\n" % 0)
        return 0
    groups: set[str] = set()
    addrs = [addr for _, _, addr in c.brokers()]
    for addr in addrs:
        groups.update(c.subscription_groups(addr))
    topics = group_topics(c, args, "")
    out.write("%-64s  %-6s  %-24s %-5s  %-14s  %-7s  %s\n" % (
        "#Group", "#Count", "#Version", "#Type", "#Model", "#TPS", "#Diff Total"))
    for g in sorted(groups):
        if g.startswith(("CID_RMQ_SYS_", "TOOLS_CONSUMER")):
            continue
        count = max((len(c.consumer_ids(a, g)) for a in addrs), default=0)
        diff = sum(r["diff"] for r in group_rows(c, g, topics))
        out.write("%-64s  %-6d  %-24s %-5s  %-14s  %-7.0f  %d\n" % (
            g, count, "OFFLINE" if not count else "-", "-", "-", 0, diff))
    return 0


def _reset_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-g", "--group", required=True)
    p.add_argument("-t", "--topic", required=True)
    p.add_argument("-s", "--timestamp", required=True, help="now, epoch ms, or yyyy-MM-dd#HH:mm:ss:SSS")
    p.add_argument("-f", "--force", choices=["true", "false"], default="true")
    p.add_argument("-c", "--cplus", action="store_true", help="accepted for compatibility")


@verb("resetOffsetByTime", "Reset consumer offset by timestamp(without client restart).", _reset_args)
def reset_offset_by_time(c: RemotingClient, args: argparse.Namespace, out: TextIO) -> int:
    ts = parse_time(args.timestamp)
    out.write(f"rollback consumer offset by specified group={args.group}, topic={args.topic}, "
              f"force={args.force}, timestamp(string)={args.timestamp}, timestamp(long)={ts}\n")
    out.write("%-40s  %-40s  %-40s\n" % ("#brokerName", "#queueId", "#offset"))
    for bname, addr, read, _ in c.topic_queues(args.topic):
        # The broker-side reset also tells online clients (rocketlite and Apache RocketMQ answer it).
        # No consumer online (CONSUMER_NOT_ONLINE) or an old broker: set the committed offsets
        # directly, as mqadmin does.
        resp = c.invoke(addr, INVOKE_BROKER_TO_RESET_OFFSET, {
            "topic": args.topic, "group": args.group, "timestamp": ts, "isForce": args.force}, check=False)
        if resp.code == ResponseCode.SUCCESS:
            table = _reset_table(resp.body)
            for q in range(read):
                out.write("%-40s  %-40d  %-40s\n" % (bname, q, table.get(q, "-")))
            continue
        if resp.code not in (ResponseCode.REQUEST_CODE_NOT_SUPPORTED, ResponseCode.CONSUMER_NOT_ONLINE,
                             ResponseCode.SYSTEM_ERROR):
            raise RemotingError(resp.code, resp.remark, INVOKE_BROKER_TO_RESET_OFFSET)
        for q in range(read):
            target = c.search_offset(addr, args.topic, q, ts)
            cur = c.consumer_offset(addr, args.group, args.topic, q)
            if args.force == "false" and cur is not None and cur < target:
                target = cur
            c.update_consumer_offset(addr, args.group, args.topic, q, target)
            out.write("%-40s  %-40d  %-40d\n" % (bname, q, target))
    return 0


def _reset_table(body: bytes) -> dict[int, int]:
    """queueId -> offset from a ResetOffsetBody (keys are MessageQueue objects in fastjson)."""
    import re

    out: dict[int, int] = {}
    text = body.decode("utf-8", "replace")
    for m in re.finditer(r'"queueId"\s*:\s*(\d+)[^}]*}\s*:\s*(-?\d+)', text):
        out[int(m.group(1))] = int(m.group(2))
    return out


# -- messages -----------------------------------------------------------------------------------


def print_message(r: StoredRecord, out: TextIO, unique_id: str = "") -> None:
    props = dict(r.properties)
    uid = unique_id or props.get("UNIQ_KEY", "")
    rows = [
        ("OffsetID:", r.msg_id),
        ("MsgId:", uid),
        ("Topic:", r.topic),
        ("Tags:", f"[{props.get('TAGS', '')}]"),
        ("Keys:", f"[{props.get('KEYS', '')}]"),
        ("Queue ID:", str(r.queue_id)),
        ("Queue Offset:", str(r.queue_offset)),
        ("CommitLog Offset:", str(r.physical_offset)),
        ("Reconsume Times:", str(r.reconsume_times)),
        ("Born Timestamp:", human_time(r.born_timestamp)),
        ("Store Timestamp:", human_time(r.store_timestamp)),
        ("Born Host:", r.born_host),
        ("Store Host:", r.store_host),
        ("System Flag:", str(r.sys_flag)),
        ("Properties:", json.dumps(props, ensure_ascii=False)),
    ]
    for k, v in rows:
        out.write("%-20s %s\n" % (k, v))
    try:
        body = r.body.decode("utf-8")
    except UnicodeDecodeError:
        body = "(binary) " + r.body[:256].hex()
    if len(body) > 4096:
        body = body[:4096] + "..."
    out.write("%-20s %s\n" % ("Message Body:", body))


def query_unique(c: RemotingClient, topic: str, uid: str) -> list[StoredRecord]:
    found: list[StoredRecord] = []
    for _bname, addr, _, _ in c.topic_queues(topic):
        resp = c.invoke(addr, RequestCode.QUERY_MESSAGE, {
            "topic": topic, "key": uid, "maxNum": 32, "beginTimestamp": 0, "endTimestamp": 2**62,
            "_UNIQUE_KEY_QUERY": "true"}, check=False)
        if resp.code == ResponseCode.SUCCESS and resp.body:
            found.extend(r for r in decode_records(resp.body) if r.properties.get("UNIQ_KEY") == uid)
    return found


def _by_id_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-i", "--msgId", required=True, help="unique message id (UNIQ_KEY) or offset message id")
    p.add_argument("-t", "--topic", help="topic (speeds up a unique-id lookup; default: every topic)")


@verb("queryMsgById", "Query Message by Id", _by_id_args)
def query_msg_by_id(c: RemotingClient, args: argparse.Namespace, out: TextIO) -> int:
    records: list[StoredRecord] = []
    for mid in [x.strip() for x in args.msgId.split(",") if x.strip()]:
        topics = [args.topic] if args.topic else [t for t in c.topic_list() if not t.startswith("rmq_sys_")][:500]
        hits: list[StoredRecord] = []
        for t in topics:
            hits = query_unique(c, t, mid)
            if hits:
                break
        if not hits:  # an offset message id: store host + commit log offset
            try:
                host, port, offset = parse_offset_msg_id(mid)
            except ValueError:
                host, port, offset = "", 0, -1
            if offset >= 0:
                resp = c.invoke(f"{host}:{port}", RequestCode.VIEW_MESSAGE_BY_ID, {"offset": offset}, check=False) \
                    if _reachable(c, host, port) else None
                if resp is not None and resp.code == ResponseCode.SUCCESS and resp.body:
                    hits = decode_records(resp.body)
        if not hits:
            out.write(f"CODE: {ResponseCode.QUERY_NOT_FOUND}  DESC: message {mid} not found\n")
            return 1
        records.extend(hits[-1:])
    for r in records:
        print_message(r, out)
    return 0


def _reachable(c: RemotingClient, host: str, port: int) -> bool:
    try:
        c._conn(f"{host}:{port}")
        return True
    except OSError:
        return False


def _by_key_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-t", "--topic", required=True)
    p.add_argument("-k", "--msgKey", required=True)
    p.add_argument("-b", "--beginTimestamp", type=int, default=0)
    p.add_argument("-e", "--endTimestamp", type=int, default=2**62)
    p.add_argument("-m", "--maxNum", type=int, default=64)


@verb("queryMsgByKey", "Query Message by Key", _by_key_args)
def query_msg_by_key(c: RemotingClient, args: argparse.Namespace, out: TextIO) -> int:
    out.write("%-50s %4s %40s\n" % ("#Message ID", "#QID", "#Offset"))
    for _bname, addr, _, _ in c.topic_queues(args.topic):
        resp = c.invoke(addr, RequestCode.QUERY_MESSAGE, {
            "topic": args.topic, "key": args.msgKey, "maxNum": args.maxNum,
            "beginTimestamp": args.beginTimestamp, "endTimestamp": args.endTimestamp}, check=False)
        if resp.code != ResponseCode.SUCCESS or not resp.body:
            continue
        for r in decode_records(resp.body):
            keys = r.properties.get("KEYS", "").split(" ")
            if args.msgKey not in keys and r.properties.get("UNIQ_KEY") != args.msgKey:
                continue
            out.write("%-50s %4d %40d\n" % (r.properties.get("UNIQ_KEY") or r.msg_id, r.queue_id, r.queue_offset))
    return 0


# -- cluster ------------------------------------------------------------------------------------


def _cluster_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--clusterName")


@verb("clusterList", "List cluster infos", _cluster_args)
def cluster_list(c: RemotingClient, args: argparse.Namespace, out: TextIO) -> int:
    fmt = "%-22s  %-22s  %-4s  %-22s %-16s  %16s  %16s  %-12s  %-8s\n"
    out.write(fmt % ("#Cluster Name", "#Broker Name", "#BID", "#Addr", "#Version", "#InTotalToday",
                     "#OutTotalToday", "#PCWait(ms)", "#Hour"))
    for cluster, bname, addr in c.brokers(args.clusterName):
        info = c.runtime_info(addr)
        version = info.get("brokerVersionDesc") or info.get("brokerVersion") or "-"
        in_total = info.get("msgPutTotalTodayNow") or info.get("messages") or "-"
        out_total = info.get("msgGetTotalTodayNow") or "-"
        out.write(fmt % (cluster, bname, "0", addr, version, in_total, out_total,
                         info.get("pageCacheLockTimeMills", "0"), "0.00"))
    return 0


def _broker_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-b", "--brokerAddr", help="update this broker only")
    p.add_argument("-c", "--clusterName", help="update every master of this cluster")
    p.add_argument("-k", "--key", required=True)
    p.add_argument("-v", "--value", required=True)


@verb("updateBrokerConfig", "Update broker's config", _broker_config_args)
def update_broker_config(c: RemotingClient, args: argparse.Namespace, out: TextIO) -> int:
    body = f"{args.key}={args.value}\n".encode()
    for _, _, addr in target_brokers(c, args):
        c.invoke(addr, RequestCode.UPDATE_BROKER_CONFIG, body=body)
        out.write(f"update broker config success, {addr}\n")
    return 0


# -- argparse glue ------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    _help, fn, _ = VERBS[args.admin_verb]
    namesrv = args.namesrvAddr or os.environ.get("NAMESRV_ADDR") or DEFAULT_NAMESRV
    try:
        with RemotingClient(namesrv, timeout=args.timeout) as client:
            return fn(client, args, sys.stdout)
    except RemotingError as exc:
        sys.stderr.write(f"{args.admin_verb} command failed: {exc}\n")
        return 1
    except BrokenPipeError:  # output piped into head & co.
        return 0
    except OSError as exc:
        sys.stderr.write(f"{args.admin_verb} command failed: cannot reach {namesrv}: {exc}\n")
        return 1


def register(subparsers: Any) -> None:
    admin = subparsers.add_parser(
        "admin", help="mqadmin-style verbs over the remoting protocol (also work against Apache RocketMQ)",
        description="mqadmin-style administration over the RocketMQ remoting protocol.")
    verbs = admin.add_subparsers(dest="admin_verb", metavar="VERB")
    verbs.required = True
    for name, (help_text, _fn, add_args) in VERBS.items():
        p = verbs.add_parser(name, help=help_text, description=help_text)
        p.add_argument("-n", "--namesrvAddr", help=f"NameServer host:port (default $NAMESRV_ADDR or {DEFAULT_NAMESRV})")
        p.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
        add_args(p)
        p.set_defaults(func=run)
