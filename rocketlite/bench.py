"""``rocketlite bench <what>``: benchmarks that print a table (they are not timed tests).

Each benchmark is a ``module:function`` taking the remaining command-line arguments and
returning an exit code; the module is imported only when that benchmark runs, so adding one
costs nothing at start-up. Benchmarks of protocol front-ends live in their own packages under
the conventional name ``rocketlite.protocols.<name>.bench:main``; those whose module is not there
yet are simply not offered. To add another, add a row to ``BENCHMARKS``.

``rocketlite bench storage`` (defined here) measures appends/s through the ``Store`` interface
(LMDB sync and async, and memory), optionally through ``Broker.send``, the time until
``rocketlite serve`` prints READY, and the idle RSS of that process.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

# name -> ("module:function", one-line description)
BENCHMARKS: dict[str, tuple[str, str]] = {
    "storage": ("rocketlite.bench:storage_main", "store appends/s (LMDB sync/async, memory), time-to-READY, idle RSS"),
    "remoting": ("rocketlite.protocols.remoting.bench:main", "RocketMQ remoting front-end"),
    "grpc": ("rocketlite.protocols.grpc.bench:main", "RocketMQ 5 gRPC front-end"),
    "mqtt": ("rocketlite.protocols.mqtt.bench:main", "MQTT front-end"),
}


def _available(target: str) -> bool:
    module = target.partition(":")[0]
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _load(target: str) -> Callable[[list[str]], int]:
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr)  # type: ignore[no-any-return]


def register(sub: Any) -> None:
    """Add the ``bench`` verb to the ``rocketlite`` command's subparsers."""
    names = [n for n, (target, _) in BENCHMARKS.items() if _available(target)]
    p = sub.add_parser(
        "bench",
        help="run a benchmark and print a table",
        description="Benchmarks: " + "; ".join(f"{n}: {BENCHMARKS[n][1]}" for n in names)
        + ". Pass --help after the name for its options.",
    )
    p.add_argument("what", choices=names, help="which benchmark")
    p.add_argument("options", nargs=argparse.REMAINDER, help="options of that benchmark")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    return int(_load(BENCHMARKS[args.what][0])(list(args.options)) or 0)


# -- storage -----------------------------------------------------------------------------------


def _cpu_s() -> float:
    """CPU seconds (user + system, all threads) of this process so far."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def _append_case(store: Any, size: int, writers: int, duration: float, via_broker: bool) -> dict[str, Any]:
    import trio

    from rocketlite.core.message import PROP_UNIQ_KEY, Message, new_unique_id
    from rocketlite.storage.base import WriteBatch

    body = os.urandom(size)
    count = 0
    latencies: list[float] = []
    broker = None
    perf = time.perf_counter
    stop = perf() + duration

    async def store_writer(n: int) -> None:
        nonlocal count
        qid = n % 8
        write = store.write
        while True:
            t = perf()
            if t >= stop:
                return
            m = Message(topic="BenchTopic", body=body, queue_id=qid, tags="TagA", born_host="127.0.0.1:40000",
                        born_timestamp=1, store_timestamp=2, properties={PROP_UNIQ_KEY: new_unique_id(1)})
            await write(WriteBatch([m]))
            latencies.append(perf() - t)
            count += 1

    async def broker_writer(n: int) -> None:
        nonlocal count
        assert broker is not None
        while True:
            t = perf()
            if t >= stop:
                return
            await broker.send([Message(topic="BenchTopic", body=body, tags="TagA", born_host="127.0.0.1:40000")])
            latencies.append(perf() - t)
            count += 1

    c0 = store.stats().get("commits", 0)
    cpu0 = _cpu_s()
    t0 = perf()
    async with trio.open_nursery() as nursery:
        if via_broker:
            from rocketlite.core.broker import Broker, BrokerSettings
            from rocketlite.runtime import TrioRuntime

            broker = Broker(store, TrioRuntime(nursery), BrokerSettings(default_queue_count=8))
            await broker.start()
            t0 = perf()
            stop = t0 + duration
        for n in range(writers):
            nursery.start_soon(broker_writer if via_broker else store_writer, n)
    elapsed = perf() - t0
    cpu = _cpu_s() - cpu0
    commits = store.stats().get("commits", 0) - c0
    return {
        "rate": count / elapsed if elapsed > 0 else 0.0,
        "per_cpu_s": count / cpu if cpu > 0 else 0.0,
        "count": count,
        "p50_ms": _percentile(latencies, 0.5) * 1000,
        "p99_ms": _percentile(latencies, 0.99) * 1000,
        "group": count / commits if commits else float("nan"),
    }


class _FloorStore:
    """``--stores floor``: the least any group-committing store does per write() on the Trio thread.

    It encodes the record (the real codec), parks the caller, and a leader wakes the whole group
    after the same two gathering checkpoints LmdbStore uses; no offsets, no index, no LMDB, no
    thread. With the bench's own per-append work (a fresh Message, a unique id, a WriteBatch) its
    rate is the ceiling of one-message-per-write() appends in CPython + Trio on this machine."""

    def __init__(self) -> None:
        self._queue: list[Any] = []
        self._leading = False
        self._groups = 0

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def stats(self) -> dict[str, int]:
        return {"commits": self._groups}

    async def write(self, batch: Any) -> list[Any]:
        import trio

        from rocketlite.storage.records import encode_message

        for m in batch.messages:
            encode_message(m)
        task = trio.lowlevel.current_task()
        if self._leading:
            self._queue.append(task)
            await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)
            return []
        self._leading = True
        await trio.lowlevel.checkpoint()
        await trio.lowlevel.checkpoint()
        group, self._queue = self._queue, []
        self._leading = False
        self._groups += 1
        for t in group:
            trio.lowlevel.reschedule(t)
        return []


def _bench_appends(opts: argparse.Namespace, root: str) -> list[dict[str, Any]]:
    import trio

    from rocketlite.storage.lmdb_store import LmdbStore
    from rocketlite.storage.memory import MemoryStore

    rows: list[dict[str, Any]] = []
    cases = [(kind, size, w) for kind in opts.stores for size in opts.sizes for w in opts.writers]
    if opts.broker:
        cases += [("broker/" + kind, size, w) for kind in opts.stores if kind != "floor"  # floor: no store
                  for size in opts.sizes[:1] for w in (64,)]

    async def one(kind: str, size: int, writers: int, n: int) -> dict[str, Any]:
        via_broker = kind.startswith("broker/")
        base = kind.split("/")[-1]
        if base == "memory":
            store: Any = MemoryStore()
        elif base == "floor":
            store = _FloorStore()
        else:
            store = LmdbStore(os.path.join(root, f"case{n}"), flush=base.split("-")[1], map_size_mb=opts.map_size_mb)
        await store.open()
        try:
            # a short warm-up, then the measured run
            await _append_case(store, size, min(writers, 16), min(0.2, opts.duration / 5), False)
            return await _append_case(store, size, writers, opts.duration, via_broker)
        finally:
            await store.close()

    for n, (kind, size, writers) in enumerate(cases):
        r = trio.run(one, kind, size, writers, n)
        row = {"store": kind, "size": size, "writers": writers, **r}
        rows.append(row)
        if not opts.json:
            print(f"  {kind:<18} {size:>6} {writers:>7} {r['rate']:>11,.0f} {r['per_cpu_s']:>11,.0f}"
                  f" {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['group']:>9.1f}", flush=True)
    return rows


def proc_rss_kb(pid: int) -> int:
    """Resident set size of a process in KiB (0 when it cannot be read)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far (0.0 when it cannot be read)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def spawn_serve(args: list[str], *, timeout: float = 30.0) -> tuple[subprocess.Popen[bytes], dict[str, str], float]:
    """Start ``rocketlite serve --host 127.0.0.1 --log-level warning *args`` and wait for its READY line.

    Returns the process, its listeners by name (``{"remoting": "127.0.0.1:41234", ...}``) and the
    seconds from spawn to READY. A process that prints no READY line in ``timeout`` is killed.
    """
    import selectors

    cmd = [sys.executable, "-m", "rocketlite", "serve", "--host", "127.0.0.1", "--log-level", "warning", *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
    assert proc.stdout is not None
    buf = b""
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while b"\n" not in buf:
                left = t0 + timeout - time.perf_counter()
                if left <= 0 or not sel.select(left):
                    raise TimeoutError(f"no READY line in {timeout:.0f} s: {buf!r}")
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    raise RuntimeError(f"rocketlite exited with {proc.wait()} before READY: {buf!r}")
                buf += chunk
    except BaseException:
        stop_serve(proc)
        raise
    ready = time.perf_counter() - t0
    line = buf.split(b"\n", 1)[0].decode()
    if not line.startswith("READY"):
        stop_serve(proc)
        raise RuntimeError(f"rocketlite did not start: {line!r}")
    return proc, dict(part.split("=", 1) for part in line.split()[1:]), ready


def stop_serve(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; closes its stdout."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


FREE_PORTS = [arg for name in ("remoting", "broker", "grpc", "mqtt", "http") for arg in (f"--{name}-port", "0")]


def _serve_once(data_dir: str | None, idle_s: float) -> tuple[float, float, int, str]:
    store = ["--data-dir", data_dir] if data_dir else ["--ephemeral"]
    proc, addresses, ready = spawn_serve([*FREE_PORTS, *store])
    try:
        ready_cpu = proc_cpu_s(proc.pid)
        time.sleep(idle_s)
        rss = proc_rss_kb(proc.pid)
        return ready, ready_cpu, rss, "READY " + " ".join(f"{k}={v}" for k, v in addresses.items())
    finally:
        stop_serve(proc)


def storage_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="rocketlite bench storage", description=storage_main.__doc__)
    p.add_argument("--duration", type=float, default=1.0, help="seconds per case (default 1)")
    p.add_argument("--sizes", default="100,1024", help="message body sizes in bytes (default 100,1024)")
    p.add_argument("--writers", default="1,16,64,256", help="concurrent writers (default 1,16,64,256)")
    p.add_argument("--stores", default="lmdb-async,lmdb-sync",
                   help="any of lmdb-async, lmdb-sync, memory, floor (default lmdb-async,lmdb-sync); floor: "
                        "no store at all, only encode + park + group wake-up (the CPython + Trio ceiling)")
    p.add_argument("--broker", action="store_true", help="also measure Broker.send with 64 writers (core overhead)")
    p.add_argument("--no-process", action="store_true", help="skip time-to-READY and idle RSS")
    p.add_argument("--process-runs", type=int, default=3, help="serve start-ups per variant (default 3)")
    p.add_argument("--idle", type=float, default=1.0, help="seconds to wait before reading idle RSS")
    p.add_argument("--map-size-mb", type=int, default=4096)
    p.add_argument("--dir", help="where to create the LMDB environments (default: a temporary directory)")
    p.add_argument("--quick", action="store_true", help="0.3 s per case, 1 serve start-up")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    opts = p.parse_args(argv)
    opts.sizes = [int(x) for x in opts.sizes.split(",") if x]
    opts.writers = [int(x) for x in opts.writers.split(",") if x]
    opts.stores = [x for x in opts.stores.split(",") if x]
    if opts.quick:
        opts.duration = min(opts.duration, 0.3)
        opts.process_runs = 1
    for kind in opts.stores:
        if kind not in ("lmdb-async", "lmdb-sync", "memory", "floor"):
            p.error(f"unknown store {kind!r}")

    out: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "loadavg_before": os.getloadavg()[0],
        "python": sys.version.split()[0],
    }
    with tempfile.TemporaryDirectory(prefix="rocketlite-bench-", dir=opts.dir) as root:
        if not opts.json:
            print(f"rocketlite bench storage: {out['cpus']} CPUs, load average {out['loadavg_before']:.2f}, "
                  f"{opts.duration:g} s per case, one message per write() call")
            print(f"  {'store':<18} {'body B':>6} {'writers':>7} {'appends/s':>11} {'per CPU-s':>11}"
                  f" {'p50 ms':>8} {'p99 ms':>8} {'msgs/txn':>9}")
        out["appends"] = _bench_appends(opts, root)
        if not opts.no_process:
            procs = []
            if not opts.json:
                print(f"\n  {'rocketlite serve':<20} {'READY s (best)':>14} {'READY s (median)':>16} {'CPU s to READY':>14}"
                      f" {'idle RSS MB':>12}")
            for label, data in (("--ephemeral", None), ("--data-dir (LMDB)", "serve")):
                readies, cpus, rsses = [], [], []
                for i in range(opts.process_runs):
                    d = os.path.join(root, f"{data}{i}") if data else None
                    ready, cpu, rss, line = _serve_once(d, opts.idle)
                    readies.append(ready)
                    cpus.append(cpu)
                    rsses.append(rss)
                row = {"variant": label, "ready_best_s": min(readies), "ready_median_s": statistics.median(readies),
                       "ready_cpu_s": min(cpus), "idle_rss_mb": max(rsses) / 1024, "ready_line": line}
                procs.append(row)
                if not opts.json:
                    print(f"  {label:<20} {row['ready_best_s']:>14.3f} {row['ready_median_s']:>16.3f}"
                          f" {row['ready_cpu_s']:>14.2f} {row['idle_rss_mb']:>12.1f}", flush=True)
            out["serve"] = procs
    out["loadavg_after"] = os.getloadavg()[0]
    if opts.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"\nload average after: {out['loadavg_after']:.2f} (figures from a busy machine are lower bounds)")
        print("targets on 2 cores: >= 100k appends/s async and >= 20k/s sync with 64 writers, READY < 0.3 s, "
              "idle RSS < 60 MB")
    return 0


storage_main.__doc__ = (
    "Appends/s through the Store interface (one message per write() call from N concurrent tasks, "
    "so group commit is what is measured), optionally via Broker.send, plus time-to-READY and idle RSS "
    "of `rocketlite serve`."
)
