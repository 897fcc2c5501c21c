"""A tiny Prometheus registry: counters and histograms updated on the hot path, gauges by callback.

Front-ends report what only they know (connections, messages and bytes per protocol)::

    from rocketlite.metrics import METRICS

    METRICS.connection_opened("mqtt")            # ... and connection_closed("mqtt") in a finally
    METRICS.messages_in("mqtt", topic, count=1, nbytes=len(body))
    METRICS.messages_out("remoting", topic, count=len(msgs), nbytes=total)
    METRICS.inc("rocketlite_mqtt_publishes_total", {"qos": "1"})   # any ad-hoc counter
    METRICS.observe("rocketlite_store_commit_seconds", {}, elapsed)  # histograms declared below

    remove = METRICS.add_collector(lambda: [("rocketlite_mqtt_sessions", {}, len(sessions))])
    # ... call remove() when the front-end stops

Updating a counter is one dict lookup and one addition (no locks: everything runs on one
Trio thread). Gauges that the broker can compute itself (lag, store size, clients per group) are
computed at scrape time by the HTTP front-end (rocketlite/protocols/http/app.py), not stored.

:meth:`Registry.render` writes the Prometheus text exposition format (version 0.0.4).
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Mapping

LabelKey = tuple[tuple[str, str], ...]
Sample = tuple[str, Mapping[str, str], float]
Collector = Callable[[], Iterable[Sample]]

# Seconds; fits an LMDB commit (tens of microseconds) up to a slow fsync.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)

# name -> (type, help). Names not declared here are still accepted (counters by default).
DECLARED: dict[str, tuple[str, str]] = {
    "rocketlite_messages_in_total": ("counter", "Messages received from producers, by protocol and topic."),
    "rocketlite_bytes_in_total": ("counter", "Message body bytes received from producers, by protocol and topic."),
    "rocketlite_messages_out_total": ("counter", "Messages delivered to consumers, by protocol and topic."),
    "rocketlite_bytes_out_total": ("counter", "Message body bytes delivered to consumers, by protocol and topic."),
    "rocketlite_connections_opened_total": ("counter", "Client connections accepted, by protocol."),
    "rocketlite_connections": ("gauge", "Client connections open now, by protocol."),
    "rocketlite_store_commit_batch_size": ("histogram", "Write batches merged into one store commit (group commit)."),
    "rocketlite_store_commit_seconds": ("histogram", "Latency of one store commit, fsync included when sync."),
}


def _key(labels: Mapping[str, str] | None) -> LabelKey:
    if not labels:
        return ()
    if len(labels) == 1:
        ((k, v),) = labels.items()
        return ((k, str(v)),)
    return tuple(sorted((k, str(v)) for k, v in labels.items()))


def label_key(**labels: str) -> LabelKey:
    """A reusable label key for :meth:`Registry.inc_key` (e.g. made once per connection)."""
    return _key(labels)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt_labels(key: Iterable[tuple[str, str]]) -> str:
    parts = [f'{k}="{_escape(v)}"' for k, v in key]
    return "{" + ",".join(parts) + "}" if parts else ""


def _fmt_value(v: float) -> str:
    if v == math.inf:
        return "+Inf"
    if v == -math.inf:
        return "-Inf"
    if v != v:
        return "NaN"
    if float(v).is_integer() and abs(v) < 1e15:
        return str(int(v))
    return repr(float(v))


class _Histogram:
    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.sum += value
        self.count += 1
        for i, b in enumerate(self.bounds):
            if value <= b:
                self.counts[i] += 1
                break


class Registry:
    """Counters, gauges set by hand, histograms and scrape-time collectors."""

    def __init__(self) -> None:
        self.counters: dict[str, dict[LabelKey, float]] = {}
        self.gauges: dict[str, dict[LabelKey, float]] = {}
        self.histograms: dict[str, dict[LabelKey, _Histogram]] = {}
        self.buckets: dict[str, tuple[float, ...]] = {
            "rocketlite_store_commit_batch_size": SIZE_BUCKETS,
            "rocketlite_store_commit_seconds": LATENCY_BUCKETS,
        }
        self.help: dict[str, tuple[str, str]] = dict(DECLARED)
        self._collectors: list[Collector] = []
        self._pt_keys: dict[tuple[str, str], LabelKey] = {}

    # -- declaring ------------------------------------------------------------------------------
    def describe(self, name: str, kind: str, help_text: str, buckets: tuple[float, ...] | None = None) -> None:
        """Give a metric a type and help line (optional; and bucket bounds for a histogram)."""
        self.help[name] = (kind, help_text)
        if buckets is not None:
            self.buckets[name] = tuple(sorted(buckets))

    # -- hot path -------------------------------------------------------------------------------
    def inc(self, name: str, labels: Mapping[str, str] | None = None, n: float = 1) -> None:
        series = self.counters.get(name)
        if series is None:
            series = self.counters[name] = {}
        key = _key(labels)
        series[key] = series.get(key, 0) + n

    def inc_key(self, name: str, key: LabelKey, n: float = 1) -> None:
        """``inc`` with a label key made once by :func:`label_key` (the cheapest update)."""
        series = self.counters.get(name)
        if series is None:
            series = self.counters[name] = {}
        series[key] = series.get(key, 0) + n

    def set(self, name: str, labels: Mapping[str, str] | None, value: float) -> None:
        self.gauges.setdefault(name, {})[_key(labels)] = value

    def add(self, name: str, labels: Mapping[str, str] | None, delta: float) -> None:
        series = self.gauges.setdefault(name, {})
        key = _key(labels)
        series[key] = series.get(key, 0) + delta

    def observe(self, name: str, labels: Mapping[str, str] | None, value: float) -> None:
        series = self.histograms.get(name)
        if series is None:
            series = self.histograms[name] = {}
        key = _key(labels)
        h = series.get(key)
        if h is None:
            h = series[key] = _Histogram(self.buckets.get(name, LATENCY_BUCKETS))
        h.observe(value)

    # -- conveniences for front-ends -------------------------------------------------------------
    def _pt_key(self, protocol: str, topic: str) -> LabelKey:
        key = self._pt_keys.get((protocol, topic))
        if key is None:
            if len(self._pt_keys) > 100_000:
                self._pt_keys.clear()
            key = self._pt_keys[(protocol, topic)] = (("protocol", protocol), ("topic", topic))
        return key

    def messages_in(self, protocol: str, topic: str, count: int = 1, nbytes: int = 0) -> None:
        key = self._pt_key(protocol, topic)
        self.inc_key("rocketlite_messages_in_total", key, count)
        self.inc_key("rocketlite_bytes_in_total", key, nbytes)

    def messages_out(self, protocol: str, topic: str, count: int = 1, nbytes: int = 0) -> None:
        key = self._pt_key(protocol, topic)
        self.inc_key("rocketlite_messages_out_total", key, count)
        self.inc_key("rocketlite_bytes_out_total", key, nbytes)

    def connection_opened(self, protocol: str) -> None:
        self.inc("rocketlite_connections_opened_total", {"protocol": protocol})
        self.add("rocketlite_connections", {"protocol": protocol}, 1)

    def connection_closed(self, protocol: str) -> None:
        self.add("rocketlite_connections", {"protocol": protocol}, -1)

    # -- scrape time ----------------------------------------------------------------------------
    def add_collector(self, fn: Collector) -> Callable[[], None]:
        """Register ``fn() -> [(name, labels, value), ...]`` called at every scrape (gauges).

        Returns a function that unregisters it.
        """
        self._collectors.append(fn)

        def remove() -> None:
            try:
                self._collectors.remove(fn)
            except ValueError:
                pass

        return remove

    def reset(self) -> None:
        """Forget every value (tests); declarations and collectors stay."""
        self.counters.clear()
        self.gauges.clear()
        self.histograms.clear()

    def collect(self, extra: Iterable[Sample] = ()) -> dict[str, dict[LabelKey, float]]:
        """Gauge samples from collectors and ``extra`` (the broker-derived ones), by name."""
        out: dict[str, dict[LabelKey, float]] = {}
        samples: list[Sample] = list(extra)
        for fn in list(self._collectors):
            try:
                samples.extend(fn())
            except Exception:  # a broken collector must not break the scrape
                continue
        for name, labels, value in samples:
            out.setdefault(name, {})[_key(labels)] = float(value)
        return out

    def render(self, extra: Iterable[Sample] = ()) -> str:
        lines: list[str] = []
        emitted: set[str] = set()

        def header(name: str, default_kind: str) -> None:
            kind, help_text = self.help.get(name, (default_kind, name.replace("_", " ")))
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            emitted.add(name)

        for name in sorted(self.counters):
            header(name, "counter")
            for key, v in sorted(self.counters[name].items()):
                lines.append(f"{name}{_fmt_labels(key)} {_fmt_value(v)}")
        gauges: dict[str, dict[LabelKey, float]] = {n: dict(s) for n, s in self.gauges.items()}
        for name, series in self.collect(extra).items():
            gauges.setdefault(name, {}).update(series)
        for name in sorted(gauges):
            if name in emitted:
                continue
            header(name, "gauge")
            for key, v in sorted(gauges[name].items()):
                lines.append(f"{name}{_fmt_labels(key)} {_fmt_value(v)}")
        hist_names = set(self.histograms) | {n for n, (k, _) in self.help.items() if k == "histogram"}
        for name in sorted(hist_names):
            if name in emitted:
                continue
            header(name, "histogram")
            series = self.histograms.get(name) or {(): _Histogram(self.buckets.get(name, LATENCY_BUCKETS))}
            for key, h in sorted(series.items()):
                cum = 0
                for bound, c in zip(h.bounds, h.counts):
                    cum += c
                    lines.append(f"{name}_bucket{_fmt_labels((*key, ('le', _fmt_value(bound))))} {cum}")
                lines.append(f"{name}_bucket{_fmt_labels((*key, ('le', '+Inf')))} {h.count}")
                lines.append(f"{name}_sum{_fmt_labels(key)} {_fmt_value(h.sum)}")
                lines.append(f"{name}_count{_fmt_labels(key)} {h.count}")
        return "\n".join(lines) + "\n"


METRICS = Registry()
