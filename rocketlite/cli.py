"""The ``rocketlite`` command: ``serve`` (the default), ``bench``, and what other modules add."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any, Callable

from rocketlite import __version__

# Extra verbs: name -> (module:function that adds arguments to a subparser, module:function to run).
# Modules that are not there yet are skipped, so verbs can land independently.
EXTRA_VERBS: dict[str, str] = {
    "bench": "rocketlite.bench:register",
    "admin": "rocketlite.admin.cli:register",
    "produce": "rocketlite.admin.quick:register_produce",
    "consume": "rocketlite.admin.quick:register_consume",
}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup_logging(level: str, fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))


def add_serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML file with overrides of config/rocketlite.toml")
    p.add_argument("--profile", choices=["default", "strict"],
                   help="strict: authentication on, no auto-created topics, admin token required")
    p.add_argument("--data-dir", help="directory of the LMDB environment (default ./rocketlite-data)")
    p.add_argument("--host", help="listen address of every front-end")
    p.add_argument("--advertised-host", help="address clients are told to connect to (routes)")
    p.add_argument("--remoting-port", type=int, help="RocketMQ remoting NameServer port (0 = any free port)")
    p.add_argument("--broker-port", type=int, help="RocketMQ remoting Broker port (0 = any free port)")
    p.add_argument("--grpc-port", type=int, help="RocketMQ 5 gRPC proxy port (0 = any free port)")
    p.add_argument("--mqtt-port", type=int, help="MQTT TCP port (0 = any free port)")
    p.add_argument("--http-port", type=int, help="HTTP admin/metrics/WebSocket port (0 = any free port)")
    p.add_argument("--flush", choices=["sync", "async"], help="acknowledge after fsync (sync) or after commit (async)")
    p.add_argument("--ephemeral", action="store_true", default=None, help="memory store, nothing on disk")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", choices=["text", "json"])
    p.add_argument("--disable", action="append", default=[], metavar="FRONTEND",
                   help="turn a front-end off (remoting, grpc, mqtt, http); repeatable")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="any other setting")


def settings_from_args(args: argparse.Namespace) -> Any:
    from rocketlite.config import build_settings

    overrides = {
        name: getattr(args, name, None)
        for name in (
            "data_dir", "host", "advertised_host", "remoting_port", "broker_port", "grpc_port",
            "mqtt_port", "http_port", "flush", "ephemeral", "log_level", "log_format",
        )
    }
    s = build_settings(config_file=args.config, overrides=overrides, sets=args.set, profile=args.profile)
    for name in args.disable:
        s.set(name, "enabled", False)
    return s


def cmd_serve(args: argparse.Namespace) -> int:
    import trio

    from rocketlite.app import App, broker_settings

    t0 = time.monotonic()
    settings = settings_from_args(args)
    try:
        broker_settings(settings)  # values checked before anything starts
    except (ValueError, TypeError) as exc:
        sys.stderr.write(f"rocketlite: error: [broker] {exc}\n")
        return 2
    setup_logging(str(settings.get("server", "log_level")), str(settings.get("server", "log_format")))
    log = logging.getLogger("rocketlite")

    async def main() -> None:
        app = App(settings, handle_signals=True)
        async with trio.open_nursery() as nursery:
            await nursery.start(app.run)
            sys.stdout.write(app.ready_line() + "\n")
            sys.stdout.flush()
            if settings.generated_admin_token:
                log.warning("profile strict: admin API token (set http.admin_token to choose one): %s",
                            settings.get("http", "admin_token"))
            where = settings.data_dir or "memory (ephemeral)"
            log.info("rocketlite %s ready in %.0f ms, data: %s", __version__, (time.monotonic() - t0) * 1000, where)

    try:
        trio.run(main)
    except KeyboardInterrupt:
        pass
    log.info("rocketlite stopped")
    return 0


def _load(target: str) -> Callable[..., Any] | None:
    import importlib

    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            return None
        raise
    return getattr(module, attr)  # type: ignore[no-any-return]


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with ``verb``, only that verb's module is imported (``serve`` imports
    none of the EXTRA_VERBS modules: the admin client, bench helpers etc. cost start-up time)."""
    parser = argparse.ArgumentParser(prog="rocketlite", description="A one-process RocketMQ + MQTT broker.")
    parser.add_argument("--version", action="version", version=f"rocketlite {__version__}")
    sub = parser.add_subparsers(dest="verb")
    serve = sub.add_parser("serve", help="run the broker (the default)")
    add_serve_args(serve)
    serve.set_defaults(func=cmd_serve)
    for name, target in EXTRA_VERBS.items():
        if verb is not None and name != verb:
            continue
        register = _load(target)
        if register is not None:
            register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbs = {"serve", *(n for n in EXTRA_VERBS)}
    if not argv or (argv[0] not in verbs and argv[0] not in ("-h", "--help", "--version")):
        argv = ["serve", *argv]
    parser = build_parser(argv[0] if argv[0] in verbs else None)
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
