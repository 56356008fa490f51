"""GitHub Actions' `${{ }}` expressions, evaluated as the runner does, for tests/workflow_sim.py:
literals, context paths, ! == != < <= > >= && || (JavaScript-like: || gives the first truthy
operand), loose equality (case-insensitive strings; mixed types compared as numbers), and the
functions workflows here use (fromJSON, toJSON, format, contains, startsWith, endsWith, join,
success, failure, always, cancelled, hashFiles)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

_TOKEN = re.compile(r"\s*(?:(?P<num>-?\d+(?:\.\d+)?)|(?P<str>'(?:[^']|'')*')|"
                    r"(?P<op>==|!=|<=|>=|&&|\|\||[!<>().,\[\]*])|"
                    r"(?P<name>[A-Za-z_][A-Za-z0-9_-]*))")
_EXPR = re.compile(r"\$\{\{(.*?)\}\}", re.S)


class ExpressionError(ValueError):
    pass


def truthy(value: Any) -> bool:
    if isinstance(value, float) and math.isnan(value):
        return False
    return value not in (None, False, 0, "") or isinstance(value, list | dict)


def to_str(value: Any) -> str:
    """A value as `${{ }}` puts it into text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def _number(value: Any) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip()) if value.strip() else 0.0
        except ValueError:
            return math.nan
    return math.nan


def loose_equal(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.lower() == b.lower()
    if type(a) is type(b) or (a is None and b is None):
        return bool(a == b)
    if isinstance(a, list | dict) or isinstance(b, list | dict):
        return a is b
    return _number(a) == _number(b)


class _Parser:
    def __init__(self, text: str, ctx: dict[str, Any],
                 functions: dict[str, Callable[..., Any]]) -> None:
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        text = text.strip()
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if not m or m.end() == pos:
                raise ExpressionError(f"cannot read {text[pos:]!r} in {text!r}")
            kind = m.lastgroup or ""
            self.tokens.append((kind, m.group(kind)))
            pos = m.end()
        self.i, self.ctx, self.functions, self.text = 0, ctx, functions, text

    def peek(self) -> str | None:
        return self.tokens[self.i][1] if self.i < len(self.tokens) else None

    def take(self, want: str | None = None) -> tuple[str, str]:
        if self.i >= len(self.tokens):
            raise ExpressionError(f"{self.text!r} ends early")
        tok = self.tokens[self.i]
        if want is not None and tok[1] != want:
            raise ExpressionError(f"expected {want!r} in {self.text!r}, got {tok[1]!r}")
        self.i += 1
        return tok

    def parse(self) -> Any:
        value = self.or_()
        if self.i != len(self.tokens):
            raise ExpressionError(f"unexpected {self.peek()!r} in {self.text!r}")
        return value

    def or_(self) -> Any:
        value = self.and_()
        while self.peek() == "||":
            self.take()
            right = self.and_()
            value = value if truthy(value) else right
        return value

    def and_(self) -> Any:
        value = self.cmp()
        while self.peek() == "&&":
            self.take()
            right = self.cmp()
            value = right if truthy(value) else value
        return value

    def cmp(self) -> Any:
        left = self.unary()
        op = self.peek()
        if op in ("==", "!=", "<", "<=", ">", ">="):
            self.take()
            right = self.unary()
            if op in ("==", "!="):
                return loose_equal(left, right) == (op == "==")
            a, b = _number(left), _number(right)
            return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
        return left

    def unary(self) -> Any:
        if self.peek() == "!":
            self.take()
            return not truthy(self.unary())
        return self.primary()

    def primary(self) -> Any:
        kind, tok = self.take()
        if tok == "(":
            value = self.or_()
            self.take(")")
            return self.postfix(value)
        if kind == "num":
            return float(tok) if "." in tok else int(tok)
        if kind == "str":
            return tok[1:-1].replace("''", "'")
        if kind != "name":
            raise ExpressionError(f"unexpected {tok!r} in {self.text!r}")
        if tok in ("true", "false"):
            return tok == "true"
        if tok == "null":
            return None
        if self.peek() == "(":
            self.take()
            args = []
            while self.peek() != ")":
                args.append(self.or_())
                if self.peek() == ",":
                    self.take()
            self.take(")")
            fn = self.functions.get(tok.lower())
            if fn is None:
                raise ExpressionError(f"unknown function {tok}() in {self.text!r}")
            return self.postfix(fn(*args))
        if tok not in self.ctx:
            raise ExpressionError(f"unknown context {tok!r} in {self.text!r}")
        return self.postfix(self.ctx[tok])

    def postfix(self, value: Any) -> Any:
        while self.peek() in (".", "["):
            if self.take()[1] == ".":
                key = self.take()[1]
            else:
                key = to_str(self.or_())
                self.take("]")
            value = value.get(key) if isinstance(value, dict) else None
        return value


def _format(fmt: str, *args: Any) -> str:
    return re.sub(r"\{(\d+)\}", lambda m: to_str(args[int(m.group(1))]), fmt)


def _contains(haystack: Any, needle: Any) -> bool:
    if isinstance(haystack, list):
        return any(loose_equal(x, needle) for x in haystack)
    return to_str(needle).lower() in to_str(haystack).lower()


def evaluate(text: str, ctx: dict[str, Any], status: dict[str, bool] | None = None) -> Any:
    """The value of one expression (without its `${{ }}`)."""
    status = status or {"success": True, "failure": False}
    functions: dict[str, Callable[..., Any]] = {
        "fromjson": lambda s: json.loads(to_str(s)),
        "tojson": lambda v: json.dumps(v, indent=2),
        "format": _format, "contains": _contains,
        "startswith": lambda a, b: to_str(a).lower().startswith(to_str(b).lower()),
        "endswith": lambda a, b: to_str(a).lower().endswith(to_str(b).lower()),
        "join": lambda v, sep=",": to_str(sep).join(map(to_str, v))
        if isinstance(v, list) else to_str(v),
        "success": lambda: status["success"], "failure": lambda: status["failure"],
        "always": lambda: True, "cancelled": lambda: False,
        "hashfiles": lambda *patterns: "0" * 64,
    }
    return _Parser(text, ctx, functions).parse()


def substitute(text: str, ctx: dict[str, Any]) -> str:
    """``text`` with each `${{ expr }}` replaced by its value, as a runner renders it."""
    return _EXPR.sub(lambda m: to_str(evaluate(m.group(1), ctx)), text)


def condition(text: Any, ctx: dict[str, Any], status: dict[str, bool]) -> bool:
    """A job's or step's `if:`; without a status function it means success() && (it)."""
    if text is None:
        return status["success"]
    if isinstance(text, bool):
        return text and status["success"]
    expr = str(text).strip()
    whole = _EXPR.fullmatch(expr)
    expr = whole.group(1) if whole else expr
    if not re.search(r"\b(success|failure|always|cancelled)\s*\(", expr):
        expr = f"success() && ({expr})"
    return truthy(evaluate(expr, ctx, status))
