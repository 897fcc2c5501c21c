"""pytest plugin (entry point ``pytest11: rocketlite``): a broker per session, empty for every test.

Fixtures
    ``rocketlite_server``  session: the in-process broker (background thread), or the external one.
    ``rocketlite``         function: the same broker, reset (and seeded) before the test; blocking API.
    ``rocketlite_trio``    function, async: a fresh broker inside the test's own Trio run, so
                           pytest-trio's ``autojump_clock`` drives its delays and timeouts.

Options (command line, ``ini`` key, or environment)
    ``--rocketlite-external=SPEC`` / ``rocketlite_external`` / ``ROCKETLITE_EXTERNAL``: use a broker
    that is already running (a READY line, ``HOST:PORTS`` ...), reset through its test-control port.
    ``--rocketlite-protocols=remoting,grpc,mqtt,http`` / ``rocketlite_protocols``: front-ends of the
    in-process broker (default: all of them).
    ``rocketlite_seed`` (ini): a TOML seed file applied after every reset.

Marker
    ``@pytest.mark.rocketlite(seed={...} | "file.toml", in_process_only=True, protocols=(...))``.

This module is imported by *every* pytest run where rocketlite is installed, so it imports
nothing heavy at module level: the broker code is imported inside the fixtures.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import pytest

ENV_EXTERNAL = "ROCKETLITE_EXTERNAL"
_HANDLE = pytest.StashKey[Any]()
_TEXT = pytest.StashKey[str]()
_warned_no_control: list[bool] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("rocketlite", "rocketlite test broker")
    group.addoption(
        "--rocketlite-external",
        dest="rocketlite_external",
        default=None,
        metavar="SPEC",
        help="run rocketlite fixtures against an already running broker: its READY line, "
        "'HOST:remoting=9876,...,testing=9877', 'HOST:PORT,PORT,...' or 'HOST' (env ROCKETLITE_EXTERNAL)",
    )
    group.addoption(
        "--rocketlite-protocols",
        dest="rocketlite_protocols",
        default=None,
        metavar="LIST",
        help="front-ends of the in-process broker, comma separated (default: all)",
    )
    parser.addini("rocketlite_external", "external rocketlite spec (see --rocketlite-external)", default="")
    parser.addini("rocketlite_protocols", "front-ends of the in-process rocketlite (comma separated)", default="")
    parser.addini("rocketlite_seed", "seed file (TOML) applied after every reset of the rocketlite fixture", default="")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "rocketlite(seed=None, in_process_only=False, protocols=None): seed the rocketlite fixtures for this "
        "test (a dict or a TOML file); in_process_only skips the test when an external broker is used; "
        "protocols chooses the front-ends of rocketlite_trio's per-test broker",
    )


def external_spec(config: pytest.Config) -> str | None:
    spec = config.getoption("rocketlite_external", None) or os.environ.get(ENV_EXTERNAL) or config.getini(
        "rocketlite_external"
    )
    return str(spec).strip() or None


def protocols(config: pytest.Config) -> tuple[str, ...] | None:
    value = config.getoption("rocketlite_protocols", None) or config.getini("rocketlite_protocols")
    if not value:
        return None
    return tuple(p.strip() for p in str(value).replace(" ", ",").split(",") if p.strip())


def _marker(item: pytest.Item) -> pytest.Mark | None:
    return item.get_closest_marker("rocketlite")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not external_spec(config):
        return
    skip = pytest.mark.skip(
        reason="needs the in-process rocketlite (its clock or internals), but an external broker is configured"
    )
    for item in items:
        mark = _marker(item)
        if mark is not None and mark.kwargs.get("in_process_only"):
            item.add_marker(skip)


def _seeds(request: pytest.FixtureRequest) -> list[Any]:
    seeds: list[Any] = []
    ini_seed = request.config.getini("rocketlite_seed")
    if ini_seed:
        path = Path(ini_seed)
        if not path.is_absolute():
            path = Path(request.config.rootpath) / path
        seeds.append(path)
    mark = _marker(request.node)  # type: ignore[arg-type]
    if mark is not None and mark.kwargs.get("seed") is not None:
        seeds.append(mark.kwargs["seed"])
    return seeds


def _make_external(config: pytest.Config, spec: str) -> Any:
    from rocketlite.testing._external import ExternalRocketlite

    return ExternalRocketlite(spec).start()


@pytest.fixture(scope="session")
def rocketlite_server(pytestconfig: pytest.Config) -> Iterator[Any]:
    """The session's broker: in-process on random ports, or the external one if configured."""
    spec = external_spec(pytestconfig)
    if spec:
        if hasattr(pytestconfig, "workerinput"):  # this process is a pytest-xdist worker
            warnings.warn(
                "several pytest-xdist workers share one external rocketlite: a reset in one worker empties "
                "the broker under the others' tests. Run external-broker tests with -p no:xdist (or -n 0), "
                "or give each worker its own broker.",
                stacklevel=2,
            )
        yield _make_external(pytestconfig, spec)
        return
    from rocketlite.testing._inprocess import RocketliteServer

    server = RocketliteServer(protocols=protocols(pytestconfig)).start()
    try:
        yield server
    finally:
        server.stop()


def _reset_sync(server: Any) -> None:
    if getattr(server, "external", False) and not server.has_control:
        if not _warned_no_control:
            _warned_no_control.append(True)
            warnings.warn(
                "the external rocketlite has no test-control endpoint (testing=HOST:PORT), so tests are NOT "
                "isolated: state carries over between tests. See docs/testing.md.",
                stacklevel=2,
            )
        return
    server.reset()


@pytest.fixture
def rocketlite(rocketlite_server: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """The session broker, emptied (and seeded) for this test. Blocking methods: send, peek,
    receive, seed, reset, describe; endpoints: namesrv_addr, grpc_endpoint, mqtt_host/mqtt_port,
    mqtt_ws_url, http_url."""
    _reset_sync(rocketlite_server)
    for s in _seeds(request):
        rocketlite_server.seed(s)
    request.node.stash[_HANDLE] = rocketlite_server
    yield rocketlite_server


@pytest.fixture
async def rocketlite_trio(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A broker in this test's Trio run (needs pytest-trio); with ``autojump_clock`` its delays,
    timeouts and backoffs take no wall time. Same methods as ``rocketlite``, awaited."""
    import trio

    config = request.config
    seeds = _seeds(request)
    spec = external_spec(config)
    if spec:
        from rocketlite.testing._external import AsyncExternal

        ext = AsyncExternal(_make_external(config, spec))
        _reset_sync(ext.sync)
        for s in seeds:
            await ext.seed(s)
        request.node.stash[_HANDLE] = ext.sync
        yield ext
        return
    from rocketlite.testing._inprocess import open_broker

    mark = _marker(request.node)  # type: ignore[arg-type]
    chosen = protocols(config)
    if mark is not None and mark.kwargs.get("protocols") is not None:
        chosen = tuple(mark.kwargs["protocols"])
    async with open_broker(protocols=chosen) as rl:
        for s in seeds:
            await rl.seed(s)
        try:
            yield rl
        finally:
            # The failure report is written after pytest-trio has torn this broker down, so keep
            # what it saw now (shielded: teardown may run under cancellation when the test failed).
            with trio.CancelScope(shield=True):
                with trio.move_on_after(5):
                    try:
                        request.node.stash[_TEXT] = await rl.describe()
                    except Exception as exc:  # never let the report break the teardown
                        request.node.stash[_TEXT] = f"(could not describe the broker: {exc!r})"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    text = item.stash.get(_TEXT, None)
    handle = item.stash.get(_HANDLE, None)
    if text is None and handle is not None:
        try:
            text = handle.describe()
        except Exception as exc:  # the broker may be what broke; say so instead of failing the report
            text = f"(could not describe the broker: {exc!r})"
    if text is not None:
        where = "external rocketlite " + str(getattr(handle, "spec", "")) if getattr(handle, "external", False) else "in-process rocketlite"
        report.sections.append((f"rocketlite: what the broker saw ({where})", text))
