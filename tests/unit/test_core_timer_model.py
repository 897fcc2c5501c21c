"""Randomised timers: each delayed message arrives once, never early, recalled ones never; restarts included."""

from __future__ import annotations

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from rocketlite.core.message import PROP_DELAY_LEVEL, PROP_DELIVER_TIME_MS, Message
from rocketlite.runtime import TrioRuntime
from rocketlite.storage.memory import MemoryStore
from tests.unit.test_core_features import drain, running

ops = st.lists(
    st.one_of(
        st.tuples(st.just("at"), st.integers(-5_000, 200_000)),
        st.tuples(st.just("level"), st.integers(-1, 16)),  # up to 30 min
        st.tuples(st.just("recall"), st.integers(0, 30)),
        st.tuples(st.just("sleep"), st.integers(0, 120_000)),
        st.just(("restart",)),
    ),
    max_size=30,
)


async def scenario(script: list[tuple]) -> None:
    store, rt = MemoryStore(), TrioRuntime()
    sent: dict[bytes, tuple[int, str]] = {}  # body -> (earliest ms, recall handle)
    recalled: set[bytes] = set()
    i = 0
    pos = 0
    while pos <= len(script):
        async with running(store, rt) as b:
            while pos < len(script):
                op = script[pos]
                pos += 1
                if op[0] == "restart":
                    break
                now = b.now_ms()
                if op[0] in ("at", "level"):
                    body = f"m{i}".encode()
                    i += 1
                    if op[0] == "at":
                        props, due = {PROP_DELIVER_TIME_MS: str(now + op[1])}, now + op[1]
                    else:
                        from rocketlite.core.timers import delay_level_ms

                        props = {PROP_DELAY_LEVEL: str(op[1])}
                        due = now + (delay_level_ms(op[1]) if op[1] > 0 else 0)
                    (r,) = await b.send([Message("T", body, properties=props)])
                    sent[body] = (due, r.recall_handle)
                elif op[0] == "recall" and sent:
                    body = sorted(sent)[op[1] % len(sent)]
                    if await b.recall(sent[body][1]):
                        recalled.add(body)
                elif op[0] == "sleep":
                    await trio.sleep(op[1] / 1000)
            else:
                pos += 1  # script done: let everything come due
                await trio.sleep(2000)
                got = await drain(b, "T")
                bodies = [m.body for m in got]
                assert len(bodies) == len(set(bodies)), "delivered twice"
                assert set(bodies) == set(sent) - recalled
                for m in got:
                    assert m.store_timestamp >= sent[m.body][0], "delivered early"
                assert len(b.timers) == 0


@settings(max_examples=40, deadline=None)
@given(ops)
def test_timer_model(script: list[tuple]) -> None:
    trio.run(scenario, script, clock=trio.testing.MockClock(autojump_threshold=0))
