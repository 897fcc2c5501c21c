"""SQL92 property filters: RocketMQ's subset, three-valued logic, bounded parser, fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rocketlite.core.errors import BadRequest
from rocketlite.core.filters import Subscription
from rocketlite.core.message import Message
from rocketlite.core.sql92 import MAX_DEPTH, SqlFilter

PROPS = {"a": "5", "b": "x", "c": "2.5", "flag": "true", "neg": "-3", "s": "hello world", "q": "it's"}


@pytest.mark.parametrize(
    "expr, expected",
    [
        ("a = 5", True),
        ("a = 6", False),
        ("a <> 6", True),
        ("a != 5", False),
        ("a > 4", True),
        ("a >= 5", True),
        ("a < 5", False),
        ("a <= 5.0", True),
        ("c > 2", True),
        ("c < 2.6", True),
        ("neg < -2", True),
        ("neg = -3", True),
        ("a BETWEEN 1 AND 5", True),
        ("a BETWEEN 6 AND 9", False),
        ("a NOT BETWEEN 6 AND 9", True),
        ("b = 'x'", True),
        ("b = 'y'", False),
        ("b <> 'y'", True),
        ("b IN ('x', 'y')", True),
        ("b IN ('y', 'z')", False),
        ("b NOT IN ('y', 'z')", True),
        ("a IN ('5')", True),
        ("missing IS NULL", True),
        ("a IS NULL", False),
        ("a IS NOT NULL", True),
        ("missing = 1", False),
        ("NOT (missing = 1)", False),  # unknown stays unknown
        ("missing = 1 OR a = 5", True),
        ("missing = 1 AND a = 5", False),
        ("NOT (missing = 1 AND a = 6)", True),  # unknown AND false = false
        ("flag = TRUE", True),
        ("flag = FALSE", False),
        ("flag", True),
        ("TRUE", True),
        ("FALSE OR a = 5", True),
        ("b > 1", False),  # not a number: unknown
        ("(a = 5 OR b = 'z') AND c BETWEEN 2 AND 3", True),
        ("a = 5 and b = 'x' or not c > 1", True),
        ("s CONTAINS 'lo w'", True),
        ("s STARTSWITH 'hello'", True),
        ("s ENDSWITH 'x'", False),
        ("s NOT CONTAINS 'zz'", True),
        ("q = 'it''s'", True),
        ("TAGS = 'TagA'", True),
        ("KEYS IN ('k1')", True),
        ("a BETWEEN 1 AND 5 AND b = 'x'", True),
    ],
)
def test_cases(expr: str, expected: bool) -> None:
    msg = Message("T", b"", tags="TagA", keys="k1", properties=dict(PROPS))
    assert SqlFilter.parse(expr).match(msg) is expected


@pytest.mark.parametrize(
    "expr",
    ["", "a =", "a = = 1", "(a = 1", "a = 1)", "a IN ()", "a BETWEEN 1", "a IS 1", "'x", "a # 1", "a = 1 AND",
     "NOT", "a NOT = 1", "a - 1", "s CONTAINS 1", "x" * 5000],
)
def test_syntax_errors(expr: str) -> None:
    with pytest.raises(BadRequest):
        SqlFilter.parse(expr)


def test_nesting_is_bounded() -> None:
    SqlFilter.parse("(" * 30 + "a = 1" + ")" * 30)
    with pytest.raises(BadRequest):
        SqlFilter.parse("(" * (MAX_DEPTH + 5) + "a = 1" + ")" * (MAX_DEPTH + 5))
    with pytest.raises(BadRequest):
        SqlFilter.parse("NOT " * (MAX_DEPTH + 5) + "a = 1")


def test_long_chains_evaluate_without_recursion() -> None:
    expr = " OR ".join(f"a={i}" for i in range(400))
    f = SqlFilter.parse(expr)
    assert f.evaluate({"a": "399"}) and not f.evaluate({"a": "400"})


def test_subscription_uses_sql92() -> None:
    sub = Subscription.make("T", "a > 1", "SQL92")
    assert isinstance(sub.filter, SqlFilter)
    assert sub.filter.match(Message("T", b"", properties={"a": "2"}))
    assert not sub.filter.match(Message("T", b"", properties={"a": "0"}))


_atoms = st.sampled_from(
    ["a", "b", "c", "missing", "1", "-2", "2.5", "'x'", "'it''s'", "TRUE", "FALSE", "NULL", "(", ")", "=", "<>",
     ">", ">=", "<", "<=", "AND", "OR", "NOT", "BETWEEN", "IN", "IS", ",", "CONTAINS", "-", "!="]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_atoms, max_size=40))
def test_fuzz_token_soup(parts: list[str]) -> None:
    try:
        f = SqlFilter.parse(" ".join(parts))
    except BadRequest:
        return
    assert f.evaluate(PROPS) in (True, False)
    assert f.evaluate({}) in (True, False)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_arbitrary_text(text: str) -> None:
    try:
        f = SqlFilter.parse(text)
    except BadRequest:
        return
    assert f.evaluate(PROPS) in (True, False)


_ops = st.sampled_from(["=", "<>", ">", ">=", "<", "<="])
_lits = st.one_of(st.integers(-1000, 1000).map(str), st.sampled_from(["'x'", "'5'", "TRUE"]))


@st.composite
def _expr(draw: st.DrawFn, depth: int = 0) -> str:
    if depth > 4 or draw(st.booleans()):
        return f"{draw(st.sampled_from(['a', 'b', 'c', 'missing']))} {draw(_ops)} {draw(_lits)}"
    op = draw(st.sampled_from(["AND", "OR", "NOT"]))
    if op == "NOT":
        return f"NOT ({draw(_expr(depth + 1))})"
    return f"({draw(_expr(depth + 1))}) {op} ({draw(_expr(depth + 1))})"


@settings(max_examples=300, deadline=None)
@given(_expr())
def test_fuzz_valid_expressions_parse(expr: str) -> None:
    f = SqlFilter.parse(expr)
    assert f.evaluate(PROPS) in (True, False)
