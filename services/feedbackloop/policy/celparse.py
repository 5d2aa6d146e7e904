"""A parser for CEL's expression grammar, enough to estimate what an expression costs.

The `cel` package compiles and runs expressions but exposes no syntax tree, and a cost bound
needs one (which comprehension runs inside which, over what). This follows the grammar in
cel-spec's langdef.md. It runs only on expressions `cel.compile` already accepted, so it
aims to build the right tree for valid input rather than to explain invalid input; anything
it cannot read is a ParseError, which the caller turns into a refusal (a bound that cannot
be computed is not a bound).

Binary operators are parsed with loops and nesting is capped at MAX_NESTING, so neither a
long chain (`a && b && ...`) nor deep brackets can exhaust Python's stack.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# How deeply parentheses, brackets, calls and conditionals may nest. cel itself refuses
# about 100 levels of parentheses; conditions written by people nest a handful, and each
# level costs this recursive-descent parser about ten stack frames.
MAX_NESTING = 32


class ParseError(ValueError):
    """The expression could not be read (or nests deeper than MAX_NESTING)."""


@dataclass(frozen=True)
class Lit:
    kind: str  # int, uint, double, string, bytes, bool, null
    text: str  # a string or bytes literal's contents as written (escapes not decoded)


@dataclass(frozen=True)
class Ident:
    name: str


@dataclass(frozen=True)
class Select:
    operand: Node
    field: str


@dataclass(frozen=True)
class Index:
    operand: Node
    index: Node


@dataclass(frozen=True)
class Call:
    """A function (`size(x)`, target None) or method (`x.contains(y)`) call, macros included."""

    name: str
    target: Node | None
    args: tuple[Node, ...]


@dataclass(frozen=True)
class ListLit:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class MapLit:
    entries: tuple[tuple[Node, Node], ...]


@dataclass(frozen=True)
class Unary:
    op: str
    operand: Node


@dataclass(frozen=True)
class Binary:
    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Cond:
    test: Node
    then: Node
    otherwise: Node


Node = Lit | Ident | Select | Index | Call | ListLit | MapLit | Unary | Binary | Cond

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+|//[^\n]*)
  | (?P<string>(?:[rR][bB]?|[bB][rR]?)?(?:'''(?:.|\n)*?'''|\"\"\"(?:.|\n)*?\"\"\"|'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*"))
  | (?P<number>0[xX][0-9a-fA-F]+[uU]?|(?:\d+\.\d+|\.\d+)(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|\d+[uU]?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>\|\||&&|==|!=|<=|>=|[<>+\-*/%!?:.,()\[\]{}])
    """,
    re.VERBOSE,
)
_RELATIONS = frozenset({"<", "<=", ">", ">=", "==", "!=", "in"})


def _literal(text: str) -> Lit:
    if text[0] in "0123456789.":
        if text[:2].lower() == "0x":
            return Lit("uint" if text[-1] in "uU" else "int", text)
        if any(c in text for c in ".eE"):
            return Lit("double", text)
        return Lit("uint" if text[-1] in "uU" else "int", text)
    prefix = ""
    while text[0] in "rRbB":
        prefix += text[0].lower()
        text = text[1:]
    quote = 3 if text[:3] in ("'''", '"""') else 1
    return Lit("bytes" if "b" in prefix else "string", text[quote:-quote])


def tokenize(source: str) -> list[tuple[str, str]]:
    """(kind, text) pairs: kind is lit, ident or op; keywords true/false/null/in become lit/op."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(source):
        m = _TOKEN.match(source, pos)
        if m is None:
            raise ParseError(f"unexpected character {source[pos]!r} at offset {pos}")
        pos = m.end()
        kind = m.lastgroup
        text = m.group()
        if kind == "ws":
            continue
        if kind == "ident" and text in ("true", "false", "null"):
            tokens.append(("lit", text))
        elif kind == "ident" and text == "in":
            tokens.append(("op", text))
        elif kind in ("string", "number"):
            tokens.append(("lit", text))
        else:
            assert kind is not None
            tokens.append((kind, text))
    return tokens


class _Parser:
    def __init__(self, source: str) -> None:
        self.tokens = tokenize(source)
        self.pos = 0
        self.depth = 0

    def peek(self) -> str:
        return self.tokens[self.pos][1] if self.pos < len(self.tokens) else ""

    def take(self, expected: str | None = None) -> tuple[str, str]:
        if self.pos >= len(self.tokens):
            raise ParseError("unexpected end of expression")
        token = self.tokens[self.pos]
        if expected is not None and (token[0] != "op" or token[1] != expected):
            raise ParseError(f"expected {expected!r}, found {token[1]!r}")
        self.pos += 1
        return token

    def accept(self, op: str) -> bool:
        if self.pos < len(self.tokens) and self.tokens[self.pos] == ("op", op):
            self.pos += 1
            return True
        return False

    def expr(self) -> Node:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise ParseError(f"expression nests more than {MAX_NESTING} levels deep")
        try:
            test = self.binary(0)
            if self.accept("?"):
                then = self.binary(0)
                self.take(":")
                return Cond(test, then, self.expr())
            return test
        finally:
            self.depth -= 1

    # Precedence levels from loosest to tightest; each level is a left-associative loop.
    _LEVELS: tuple[frozenset[str], ...] = (
        frozenset({"||"}),
        frozenset({"&&"}),
        _RELATIONS,
        frozenset({"+", "-"}),
        frozenset({"*", "/", "%"}),
    )

    def binary(self, level: int) -> Node:
        if level == len(self._LEVELS):
            return self.unary()
        ops = self._LEVELS[level]
        left = self.binary(level + 1)
        while self.pos < len(self.tokens) and self.tokens[self.pos][0] == "op" and self.peek() in ops:
            op = self.take()[1]
            left = Binary(op, left, self.binary(level + 1))
        return left

    def unary(self) -> Node:
        ops: list[str] = []
        while self.peek() in ("!", "-") and self.tokens[self.pos][0] == "op":
            ops.append(self.take()[1])
        node = self.member()
        for op in reversed(ops):
            node = Unary(op, node)
        return node

    def member(self) -> Node:
        node = self.primary()
        while True:
            if self.accept("."):
                kind, name = self.take()
                if kind != "ident":
                    raise ParseError(f"expected a field name after '.', found {name!r}")
                node = Call(name, node, self.args(")")) if self.accept("(") else Select(node, name)
            elif self.accept("["):
                index = self.expr()
                self.take("]")
                node = Index(node, index)
            else:
                return node

    def args(self, close: str) -> tuple[Node, ...]:
        items: list[Node] = []
        while not self.accept(close):
            items.append(self.expr())
            if not self.accept(","):
                self.take(close)
                break
        return tuple(items)

    def primary(self) -> Node:
        kind, text = self.take()
        if kind == "lit":
            if text in ("true", "false"):
                return Lit("bool", text)
            if text == "null":
                return Lit("null", text)
            return _literal(text)
        if kind == "ident":
            if self.accept("("):
                return Call(text, None, self.args(")"))
            if self.peek() == "{":
                raise ParseError("message construction is not supported in conditions")
            return Ident(text)
        if text == ".":  # a leading dot names the root scope: `.feedback`
            return self.primary()
        if text == "(":
            node = self.expr()
            self.take(")")
            return node
        if text == "[":
            return ListLit(self.args("]"))
        if text == "{":
            entries: list[tuple[Node, Node]] = []
            while not self.accept("}"):
                key = self.expr()
                self.take(":")
                entries.append((key, self.expr()))
                if not self.accept(","):
                    self.take("}")
                    break
            return MapLit(tuple(entries))
        raise ParseError(f"unexpected {text!r}")


def parse(source: str) -> Node:
    """The syntax tree of one CEL expression; ParseError if it cannot be read."""
    parser = _Parser(source)
    node = parser.expr()
    if parser.pos != len(parser.tokens):
        raise ParseError(f"unexpected {parser.peek()!r} after the expression")
    return node
