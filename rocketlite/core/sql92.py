"""RocketMQ's SQL92 subset for property filters (subscription type ``SQL92``).

Public API
----------
``SqlFilter.parse(expression) -> SqlFilter`` (a :class:`~rocketlite.core.filters.Filter`); raises
:class:`~rocketlite.core.errors.BadRequest` for a syntax error, an expression longer than
:data:`MAX_LENGTH` characters or nested deeper than :data:`MAX_DEPTH`. ``filter.match(msg)``
evaluates it against the message's properties, plus ``TAGS`` and ``KEYS`` from the fields;
``match_index`` is always True (properties are not in the consume queue).

Grammar (keywords case-insensitive)::

    expr      := or
    or        := and ("OR" and)*
    and       := unary ("AND" unary)*
    unary     := "NOT" unary | primary
    primary   := "(" expr ")" | operand [predicate]
    predicate := ("=" | "<>" | "!=" | ">" | ">=" | "<" | "<=") operand
               | ["NOT"] "BETWEEN" operand "AND" operand
               | ["NOT"] "IN" "(" literal ("," literal)* ")"
               | "IS" ["NOT"] "NULL"
               | ["NOT"] ("CONTAINS" | "STARTSWITH" | "ENDSWITH") string
    operand   := identifier | literal
    literal   := 'string' ('' escapes a quote) | [-]integer | [-]decimal | TRUE | FALSE | NULL

Semantics follow RocketMQ (an ActiveMQ selector descendant): three-valued logic where a missing
property makes a comparison *unknown* (neither it nor its negation matches; ``IS NULL`` is
true); ordering comparisons and BETWEEN are numeric (a property that is not a number makes them
unknown); ``=``/``<>`` compare numerically against a number literal, as strings against a string
literal and case-insensitively against ``TRUE``/``FALSE``; IN and CONTAINS/STARTSWITH/ENDSWITH
compare strings. A bare identifier or boolean is a predicate (true when the value is "true").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from rocketlite.core.errors import BadRequest
from rocketlite.core.filters import Filter
from rocketlite.core.message import Message

MAX_LENGTH = 4096
MAX_DEPTH = 64
MAX_IN_ITEMS = 512

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<str>'(?:[^']|'')*')
    | (?P<num>\d+\.\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|\d+(?:[eE][-+]?\d+)?)
    | (?P<op><>|!=|>=|<=|=|>|<|\(|\)|,|-)
    | (?P<id>[A-Za-z_$][A-Za-z0-9_.$]*)
    )""",
    re.VERBOSE,
)
KEYWORDS = {
    "AND", "OR", "NOT", "BETWEEN", "IN", "IS", "NULL", "TRUE", "FALSE", "CONTAINS", "STARTSWITH", "ENDSWITH",
}

Value = Any  # str | int | float | bool | None
Expr = Callable[[dict[str, str]], Value]


class _Null:
    """The NULL literal (distinct from "unknown")."""


NULL = _Null()


def tokenize(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    n = len(text)
    while pos < n:
        if text[pos:].isspace():
            break
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise BadRequest(f"SQL92: unexpected character at {pos}: {text[pos:pos + 10]!r}")
        pos = m.end()
        kind = m.lastgroup or ""
        val = m.group(kind)
        if kind == "id" and val.upper() in KEYWORDS:
            out.append(("kw", val.upper()))
        else:
            out.append((kind, val))
    return out


def _num(v: Value) -> float | int | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return v
    try:
        s = str(v).strip()
        if re.fullmatch(r"[-+]?\d+", s):
            return int(s)
        f = float(s)
        return f if f == f else None  # NaN never compares
    except ValueError:
        return None


def _and(a: Value, b: Value) -> Value:
    if a is False or b is False:
        return False
    if a is None or b is None:
        return None
    return True


def _or(a: Value, b: Value) -> Value:
    if a is True or b is True:
        return True
    if a is None or b is None:
        return None
    return False


def _not(a: Value) -> Value:
    return None if a is None else not a


def _truth(v: Value) -> Value:
    if v is None:
        return None
    if isinstance(v, bool):
        return v
    if isinstance(v, str):
        low = v.lower()
        return True if low == "true" else False if low == "false" else None
    return None


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.toks = tokens
        self.i = 0
        self.depth = 0

    def peek(self, k: int = 0) -> tuple[str, str]:
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else ("eof", "")

    def take(self) -> tuple[str, str]:
        t = self.peek()
        self.i += 1
        return t

    def accept(self, kind: str, val: str | None = None) -> bool:
        t = self.peek()
        if t[0] == kind and (val is None or t[1] == val):
            self.i += 1
            return True
        return False

    def expect(self, kind: str, val: str | None = None) -> tuple[str, str]:
        t = self.peek()
        if t[0] != kind or (val is not None and t[1] != val):
            raise BadRequest(f"SQL92: expected {val or kind}, got {t[1] or 'end'!r}")
        self.i += 1
        return t

    def nest(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise BadRequest("SQL92: expression nested too deeply")

    # -- grammar -------------------------------------------------------------------------------
    def parse(self) -> Expr:
        e = self.or_()
        if self.peek()[0] != "eof":
            raise BadRequest(f"SQL92: unexpected {self.peek()[1]!r}")
        return e

    def or_(self) -> Expr:
        terms = [self.and_()]
        while self.accept("kw", "OR"):
            terms.append(self.and_())
        if len(terms) == 1:
            return terms[0]

        def any_(p: dict[str, str]) -> Value:  # n-ary, so long chains do not recurse
            out: Value = False
            for t in terms:
                out = _or(out, _truth(t(p)))
                if out is True:
                    return True
            return out

        return any_

    def and_(self) -> Expr:
        terms = [self.unary()]
        while self.accept("kw", "AND"):
            terms.append(self.unary())
        if len(terms) == 1:
            return terms[0]

        def all_(p: dict[str, str]) -> Value:
            out: Value = True
            for t in terms:
                out = _and(out, _truth(t(p)))
                if out is False:
                    return False
            return out

        return all_

    def unary(self) -> Expr:
        if self.accept("kw", "NOT"):
            self.nest()
            inner = self.unary()
            self.depth -= 1
            return lambda p: _not(_truth(inner(p)))
        return self.primary()

    def primary(self) -> Expr:
        if self.accept("op", "("):
            self.nest()
            e = self.or_()
            self.depth -= 1
            self.expect("op", ")")
            return e
        left = self.operand()
        return self.predicate(left)

    def operand(self) -> Expr:
        kind, val = self.take()
        if kind == "id":
            return lambda p, k=val: p.get(k)
        self.i -= 1
        lit = self.literal()
        return lambda p, v=lit: v

    def literal(self) -> Value:
        kind, val = self.take()
        if kind == "str":
            return val[1:-1].replace("''", "'")
        neg = False
        if kind == "op" and val == "-":
            neg = True
            kind, val = self.take()
            if kind != "num":
                raise BadRequest("SQL92: '-' must precede a number")
        if kind == "num":
            try:
                v: int | float = int(val) if re.fullmatch(r"\d+", val) else float(val)
            except (ValueError, OverflowError):
                raise BadRequest(f"SQL92: bad number {val!r}") from None
            if isinstance(v, float) and v != v:  # pragma: no cover
                raise BadRequest("SQL92: bad number")
            return -v if neg else v
        if kind == "kw" and val in ("TRUE", "FALSE"):
            return val == "TRUE"
        if kind == "kw" and val == "NULL":
            return NULL
        raise BadRequest(f"SQL92: expected a literal, got {val or 'end'!r}")

    def predicate(self, left: Expr) -> Expr:
        kind, val = self.peek()
        if kind == "op" and val in ("=", "<>", "!=", ">", ">=", "<", "<="):
            self.take()
            right = self.operand()
            return _comparison(val, left, right)
        negate = False
        if kind == "kw" and val == "NOT" and self.peek(1)[0] == "kw" and self.peek(1)[1] in (
            "BETWEEN", "IN", "CONTAINS", "STARTSWITH", "ENDSWITH"
        ):
            self.take()
            negate = True
            kind, val = self.peek()
        if kind == "kw" and val == "BETWEEN":
            self.take()
            lo = self.operand()
            self.expect("kw", "AND")
            hi = self.operand()
            e = _between(left, lo, hi)
        elif kind == "kw" and val == "IN":
            self.take()
            self.expect("op", "(")
            items = [self.literal()]
            while self.accept("op", ","):
                items.append(self.literal())
                if len(items) > MAX_IN_ITEMS:
                    raise BadRequest("SQL92: IN list too long")
            self.expect("op", ")")
            e = _in(left, items)
        elif kind == "kw" and val in ("CONTAINS", "STARTSWITH", "ENDSWITH"):
            self.take()
            s = self.literal()
            if not isinstance(s, str):
                raise BadRequest(f"SQL92: {val} needs a string")
            e = _strop(val, left, s)
        elif kind == "kw" and val == "IS" and not negate:
            self.take()
            is_not = self.accept("kw", "NOT")
            self.expect("kw", "NULL")
            return (lambda p: left(p) is not None) if is_not else (lambda p: left(p) is None)
        else:
            if negate:  # pragma: no cover - guarded above
                raise BadRequest("SQL92: NOT must precede BETWEEN, IN or a string operator")
            return lambda p: _truth(left(p))
        if negate:
            inner = e
            return lambda p: _not(inner(p))
        return e


def _comparison(op: str, left: Expr, right: Expr) -> Expr:
    def cmp(p: dict[str, str]) -> Value:
        a, b = left(p), right(p)
        if a is None or b is None or a is NULL or b is NULL:
            return None
        if op in ("=", "<>", "!="):
            if isinstance(a, bool) or isinstance(b, bool):
                ta, tb = _truth(a), _truth(b)
                if ta is None or tb is None:
                    return None
                eq = ta == tb
            elif isinstance(a, (int, float)) or isinstance(b, (int, float)):
                na, nb = _num(a), _num(b)
                if na is None or nb is None:
                    return None
                eq = na == nb
            else:
                eq = a == b
            return eq if op == "=" else not eq
        na, nb = _num(a), _num(b)
        if na is None or nb is None:
            return None
        if op == ">":
            return na > nb
        if op == ">=":
            return na >= nb
        if op == "<":
            return na < nb
        return na <= nb

    return cmp


def _between(v: Expr, lo: Expr, hi: Expr) -> Expr:
    def f(p: dict[str, str]) -> Value:
        a, x, y = _num(v(p)), _num(lo(p)), _num(hi(p))
        if a is None or x is None or y is None:
            return None
        return x <= a <= y

    return f


def _in(v: Expr, items: list[Value]) -> Expr:
    values = {i if isinstance(i, str) else _fmt(i) for i in items if i is not NULL}

    def f(p: dict[str, str]) -> Value:
        a = v(p)
        if a is None or a is NULL:
            return None
        return (a if isinstance(a, str) else _fmt(a)) in values

    return f


def _fmt(v: Value) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _strop(op: str, v: Expr, s: str) -> Expr:
    def f(p: dict[str, str]) -> Value:
        a = v(p)
        if a is None or a is NULL:
            return None
        a = a if isinstance(a, str) else _fmt(a)
        if op == "CONTAINS":
            return s in a
        if op == "STARTSWITH":
            return a.startswith(s)
        return a.endswith(s)

    return f


@dataclass(slots=True)
class SqlFilter(Filter):
    expression: str
    _expr: Expr = field(repr=False, compare=False, default=lambda p: True)

    @classmethod
    def parse(cls, expression: str | None) -> "SqlFilter":
        text = (expression or "").strip()
        if len(text) > MAX_LENGTH:
            raise BadRequest(f"SQL92 expression longer than {MAX_LENGTH} characters")
        if not text:
            raise BadRequest("SQL92: empty expression")
        return cls(text, _Parser(tokenize(text)).parse())

    def evaluate(self, properties: dict[str, str]) -> bool:
        try:
            return _truth(self._expr(properties)) is True
        except RecursionError:  # pragma: no cover - depth is bounded
            return False

    def match_index(self, tag_code: int) -> bool:
        return True

    def match(self, msg: Message) -> bool:
        props = msg.properties
        if msg.tags and "TAGS" not in props or msg.keys and "KEYS" not in props:
            props = dict(props)
            if msg.tags:
                props.setdefault("TAGS", msg.tags)
            if msg.keys:
                props.setdefault("KEYS", msg.keys)
        return self.evaluate(props)
