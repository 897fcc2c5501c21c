"""The pytest plugin used exactly as a user would: a test file in a temp dir, run with pytest.

The same user test file runs against the in-process broker and against a real rocketlite
process (``--rocketlite-external``), where the mock-clock test is skipped by its marker.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.support.server import RocketliteProcess

USER_TESTS = '''
import time

import pytest
import trio


def test_send_and_peek(rocketlite):
    assert rocketlite.peek("orders") == []
    result = rocketlite.send("orders", b"hello", keys=["order-1"], tags="created")
    (msg,) = rocketlite.peek("orders")
    assert msg.body == b"hello" and msg.keys == "order-1" and msg.tags == "created"
    assert msg.unique_id == result.unique_id
    assert rocketlite.peek("orders") == [msg]          # peeking consumes nothing


def test_each_test_starts_empty(rocketlite):
    assert rocketlite.peek("orders") == []
    user_topics = {n for n, t in rocketlite.snapshot().topics.items() if not t["system"]}
    assert user_topics == {"inventory"}                        # only what rocketlite_seed puts there


def test_receive_commits_the_group_offset(rocketlite):
    rocketlite.send("orders", "a")
    rocketlite.send("orders", "b")
    got = rocketlite.receive("orders", group="billing", max_count=10)
    assert sorted(m.body for m in got) == [b"a", b"b"]
    assert rocketlite.receive("orders", group="billing", timeout=0.1) == []
    assert len(rocketlite.receive("orders", group="shipping", max_count=10)) == 2


@pytest.mark.rocketlite(seed={"topics": {"payments": {"queues": 8}}, "groups": {"ledger": {}}})
def test_marker_seed(rocketlite):
    snap = rocketlite.snapshot()
    assert snap.topics["payments"]["queues"] == 8
    assert "ledger" in snap.groups


def test_ini_seed_file(rocketlite):
    (msg,) = rocketlite.peek("inventory")
    assert msg.body == b"seeded"


def test_endpoints(rocketlite):
    assert rocketlite.http_url.startswith("http://")
    for name in ("namesrv_addr", "grpc_endpoint", "mqtt_host"):
        try:
            value = getattr(rocketlite, name)
        except RuntimeError as exc:        # front-end not in this build: a clear message
            assert "listener" in str(exc)
        else:
            assert value


async def test_trio_flavour(rocketlite_trio):
    await rocketlite_trio.send("orders", b"from trio")
    (msg,) = await rocketlite_trio.receive("orders", timeout=5)
    assert msg.body == b"from trio"


# protocols=(): this test talks to the broker directly, so no network front-ends are needed
@pytest.mark.rocketlite(in_process_only=True, protocols=())
async def test_one_hour_delay_takes_no_wall_time(rocketlite_trio, autojump_clock):
    wall, clock = time.monotonic(), trio.current_time()
    await rocketlite_trio.send("orders", b"in an hour", delay_ms=3_600_000)
    assert await rocketlite_trio.peek("orders") == []          # not delivered yet
    (msg,) = await rocketlite_trio.receive("orders", timeout=2 * 3600)
    assert msg.body == b"in an hour"
    assert trio.current_time() - clock >= 3600                 # an hour of broker time...
    assert time.monotonic() - wall < 1.0                        # ...in under a second
'''

INI = """
[pytest]
trio_mode = true
rocketlite_seed = seed.toml
"""

SEED = """
[topics.inventory]
queues = 2

[[messages]]
topic = "inventory"
body = "seeded"
"""


def _write_project(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makefile(".toml", seed=SEED)
    pytester.makepyfile(test_user=USER_TESTS)


def test_plugin_in_process(pytester: pytest.Pytester) -> None:
    _write_project(pytester)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-v")
    result.assert_outcomes(passed=8)


@pytest.mark.timeout(120)
def test_plugin_against_external_process(pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory) -> None:
    _write_project(pytester)
    srv = RocketliteProcess(ephemeral=True, extra_args=["--set", "testing.enabled=true", "--set", "testing.port=0"])
    with srv:
        assert "testing=" in srv.ready_line
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-v", "-rs", f"--rocketlite-external={srv.ready_line}")
        result.assert_outcomes(passed=7, skipped=1)
        result.stdout.fnmatch_lines(["SKIPPED*test_user.py:*needs the in-process rocketlite*"])
        # a second run sees a fresh broker: the fixture resets through the control endpoint
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--rocketlite-external={srv.ready_line}")
        result.assert_outcomes(passed=7, skipped=1)


def test_external_without_control_endpoint_warns(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_x="""
        def test_endpoints_only(rocketlite):
            assert rocketlite.http_url
        """
    )
    with RocketliteProcess(ephemeral=True) as srv:
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:trio", f"--rocketlite-external={srv.ready_line}")
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(["*no test-control endpoint*NOT*isolated*"])


def test_failure_report_shows_what_the_broker_saw(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makepyfile(
        test_fail="""
        def test_sync(rocketlite):
            rocketlite.send("payments", "charge 42", keys="invoice-7")
            rocketlite.receive("payments", group="billing")
            assert False, "the service never answered"

        async def test_trio(rocketlite_trio):
            await rocketlite_trio.send("audit", "trio-side")
            assert False

        def test_passing(rocketlite):
            rocketlite.send("payments", "fine")

        def test_without_broker():
            assert False, "no broker here"
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=3, passed=1)
    out = result.stdout.str()
    assert out.count("what the broker saw") == 2, out  # not for the passing test, not without the fixture
    result.stdout.fnmatch_lines(
        [
            "*rocketlite: what the broker saw (in-process rocketlite)*",
            "topics (1):",
            "  payments: 4 queues, 1 messages*",
            "groups (1):",
            "  billing: 0 consumer(s) []; payments[[]*]=1",
            "recent messages (1, newest last):",
            "  payments[[]*]@0 keys='invoice-7' id=* body='charge 42'",
        ]
    )
    result.stdout.fnmatch_lines(["*rocketlite: what the broker saw*", "*audit*", "*body='trio-side'*"])


def test_bad_external_spec_is_a_clear_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_x(rocketlite):\n    pass\n")
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "no:trio", "--rocketlite-external=localhost:notaport"
    )
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*cannot read rocketlite external spec*"])


def test_importing_the_plugin_is_cheap() -> None:
    code = textwrap.dedent(
        """
        import sys, time
        t = time.perf_counter()
        import rocketlite.testing.plugin, rocketlite.testing
        took = time.perf_counter() - t
        heavy = [m for m in ("trio", "hypercorn", "lmdb", "h11", "rocketlite.app") if m in sys.modules]
        print(heavy, took)
        assert not heavy, heavy
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("[]")
