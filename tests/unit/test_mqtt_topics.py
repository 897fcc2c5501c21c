"""Subscription trie: wildcards, $ rules, shared subscriptions, against a brute-force matcher."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rocketlite.protocols.mqtt.topics import SubscriptionTrie, split_shared, topic_matches


@pytest.mark.parametrize("flt,topic,ok", [
    ("a/b", "a/b", True), ("a/+", "a/b", True), ("a/+", "a/b/c", False), ("a/#", "a", True),
    ("a/#", "a/b/c", True), ("#", "a/b", True), ("+/+", "/a", True), ("/+", "/a", True), ("+", "/a", False),
    ("#", "$SYS/x", False), ("+/x", "$SYS/x", False), ("$SYS/#", "$SYS/x", True), ("a/+/c", "a//c", True),
])
def test_topic_matches(flt, topic, ok):
    assert topic_matches(flt, topic) is ok
    t = SubscriptionTrie()
    t.add(flt, "k", 1)
    assert (t.match(topic) == [("k", 1)]) is ok


def test_shared_parsing():
    assert split_shared("$share/g/a/#") == ("g", "a/#")
    assert split_shared("a/b") == (None, "a/b")
    for bad in ("$share/g", "$share//a", "$share/g+/a"):
        with pytest.raises(ValueError):
            split_shared(bad)


def test_remove_prunes_and_invalidates_cache():
    t = SubscriptionTrie()
    t.add("a/+", "x", 1)
    t.add("a/#", "y", 2)
    assert sorted(t.match("a/b")) == [("x", 1), ("y", 2)]
    assert t.remove("a/+", "x") and not t.remove("a/+", "x")
    assert t.match("a/b") == [("y", 2)]
    t.remove("a/#", "y")
    assert t.count == 0 and t.match("a/b") == []
    assert list(t.items()) == []


levels = st.sampled_from(["a", "b", "", "$x"])
topics = st.lists(levels, min_size=1, max_size=4).map("/".join)
filters = st.lists(st.sampled_from(["a", "b", "", "+", "$x"]), min_size=1, max_size=4).flatmap(
    lambda ls: st.sampled_from(["/".join(ls), "/".join(ls + ["#"])]))


@settings(max_examples=120, deadline=None)
@given(st.lists(filters, max_size=8, unique=True), st.lists(topics, max_size=5))
def test_trie_agrees_with_brute_force(flts, tps):
    t = SubscriptionTrie()
    for i, f in enumerate(flts):
        t.add(f, i, f)
    for topic in tps:
        want = sorted(i for i, f in enumerate(flts) if topic_matches(f, topic))
        assert sorted(k for k, _ in t.match(topic)) == want
