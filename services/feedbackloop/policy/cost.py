"""A static upper bound on what evaluating a CEL condition costs, computed at validate time.

Modelled on how Kubernetes bounds CEL in admission (apiserver's estimated cost: sizes from
the schema's maxItems/maxLength, comprehensions multiply, a per-expression limit and a
budget for a whole object): the `cel` package holds the GIL for a whole evaluation and has
no runtime limit, so an expression such as three nested `.all()` over 300-element lists
(27 million steps, seconds of a frozen server per event) must be refused before it is ever
run, at validate time, with its estimate and the limit.

The unit is about 25 ns of the `cel` package on the development machine: measured on the
largest event ingestion accepts, comprehension-heavy conditions ran at 19-27 ns a unit and
copy- or scan-heavy ones at 1-18 (bench/policy_limits_bench.py times the slowest accepted
condition of each kind). The estimate is a bound, not a prediction: every branch is taken,
every comprehension runs to the end, every event field is as large as ingestion allows.

What it charges, per node of the syntax tree:
- 1 for the node itself;
- reading a value (a field, an index, a comprehension variable) copies it: the `cel` package
  copies lists and maps on access, so 1 per value inside plus 1 per BYTES_PER_UNIT bytes;
- a comprehension (all, exists, exists_one, map, filter) runs its body once per element of
  what it iterates; map and filter also copy their growing result on each step (quadratic);
- string operations (contains, startsWith, endsWith, size, comparisons, +) scan their
  operands; `matches` scans the text once per unit of the pattern's weight (its length,
  with counted repetitions such as `{1,100}` expanded), so a pattern built from event data
  costs as much as the longest text it could be;
- `in` over a list compares with every element.

Event fields are sized by ingestion's limits (ingestion/validation.py and the settings'
defaults: text 32,000 characters, 64 attributes, 16 categories, 512 messages, 256
documents), with any one value at most MAX_MESSAGE_BYTES (a record arrives in one gRPC
message). A list whose elements cannot all be maximal at once (512 messages of 32,000
characters exceed a message) is costed with elements at the average size its total allows:
for costs that grow linearly with an element's size this bounds the sum over all elements.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from feedbackloop.policy import celparse
from feedbackloop.policy.celparse import (
    Binary,
    Call,
    Cond,
    Ident,
    Index,
    ListLit,
    Lit,
    MapLit,
    Node,
    ParseError,
    Select,
    Unary,
)

# Per expression: the slowest condition it accepts evaluates in about 3 ms (a `map` over 312
# integers, 2.8 ms measured), so a server thread holds the GIL no longer than that per
# condition; a lookup in 64 maximal attributes (about 34,000) still passes, and the example
# conditions cost at most about 1,000.
EXPRESSION_COST_LIMIT = 100_000
# Per policy set, summed over its routing policies: what routing one event may cost at most
# (25 conditions at the limit, about 70 ms on a maximal event); the 50 policies of
# bench/policy_bench.py cost 360,940, ten of them reading an attribute.
POLICY_SET_COST_LIMIT = 2_500_000
# Longer conditions are refused before `cel.compile` (which takes about 3 ms per 4,000
# characters, holding the GIL); the longest example condition is under 100.
MAX_EXPRESSION_CHARS = 4096
# Copying a value costs about 0.1-0.3 ns a byte (more when each copy is a fresh allocation).
BYTES_PER_UNIT = 128

# Ingestion's limits, as the estimate assumes them (a test checks they match the ingestion
# constants and the settings' defaults, so the two cannot drift apart silently).
MAX_TEXT_CHARS = 32_000
MAX_ATTRIBUTES = 64
MAX_ID_CHARS = 128
MAX_NAME_CHARS = 128
MAX_CATEGORIES = 16
MAX_MESSAGES = 512
MAX_DOCUMENTS = 256
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# The most elements a list or map of unknown origin could hold in one message (8 bytes each).
_UNKNOWN_ITEMS = MAX_MESSAGE_BYTES // 8
_UTF8_MAX = 4  # bytes per character at most


@dataclass(frozen=True)
class Shape:
    """The most a value can be: kind, entries (lists, maps) or characters (strings)."""

    kind: str  # bool, int, uint, double, string, bytes, null, list, map, type, time, dyn
    size: int = 1
    bytes: int = 8
    count: int = 1  # values inside it, itself included
    elem: Shape | None = None  # list element or map value
    key: Shape | None = None  # map key
    fields: Mapping[str, Shape] | None = field(default=None, hash=False, compare=False)
    text: str | None = None  # a string literal's contents


SCALAR = {k: Shape(k) for k in ("bool", "int", "uint", "double", "null", "type", "time")}
DYN = Shape("dyn", size=_UNKNOWN_ITEMS, bytes=MAX_MESSAGE_BYTES, count=_UNKNOWN_ITEMS, elem=None, key=None)


def _join(shapes: list[Shape]) -> Shape:
    """A shape at least as large as each of `shapes` (a list literal's elements, two branches)."""
    if not shapes:
        return SCALAR["null"]
    first = shapes[0]
    if all(s == first for s in shapes):
        return first
    kinds = {s.kind for s in shapes}
    elems = [s.elem for s in shapes if s.elem is not None]
    keys = [s.key for s in shapes if s.key is not None]
    return Shape(
        kinds.pop() if len(kinds) == 1 else "dyn",
        size=max(s.size for s in shapes),
        bytes=max(s.bytes for s in shapes),
        count=max(s.count for s in shapes),
        elem=_join(elems) if elems else None,
        key=_join(keys) if keys else None,
    )


def _string(chars: int) -> Shape:
    return Shape("string", size=chars, bytes=min(chars * _UTF8_MAX, MAX_MESSAGE_BYTES))


def _list(items: int, elem: Shape) -> Shape:
    return Shape(
        "list",
        size=items,
        bytes=min(items * elem.bytes, MAX_MESSAGE_BYTES),
        count=1 + items * elem.count,
        elem=elem,
    )


def _map(items: int, key: Shape, value: Shape) -> Shape:
    return Shape(
        "map",
        size=items,
        bytes=min(items * (key.bytes + value.bytes), MAX_MESSAGE_BYTES),
        count=1 + items * (key.count + value.count),
        elem=value,
        key=key,
    )


def _record(fields: Mapping[str, Shape]) -> Shape:
    """A map with known keys (an event section, a map literal with string keys)."""
    return Shape(
        "map",
        size=len(fields),
        bytes=min(sum(MAX_NAME_CHARS + f.bytes for f in fields.values()), MAX_MESSAGE_BYTES),
        count=1 + sum(1 + f.count for f in fields.values()),
        elem=_join(list(fields.values())) if fields else SCALAR["null"],
        key=_string(MAX_NAME_CHARS),
        fields=dict(fields),
    )


_ID = _string(MAX_ID_CHARS)
_NAME = _string(MAX_NAME_CHARS)
_TEXT = _string(MAX_TEXT_CHARS)
_WORD = _string(32)  # enum-like values: thumb, implicit, source, signal names, timestamps
_ATTRIBUTES = _map(MAX_ATTRIBUTES, _NAME, _TEXT)

EVENT_SHAPES: dict[str, Shape] = {
    "feedback": _record(
        {
            "id": _ID,
            "session_id": _ID,
            "interaction_id": _ID,
            "thumb": _WORD,
            "rating": SCALAR["int"],
            "categories": _list(MAX_CATEGORIES, _NAME),
            "comment": _TEXT,
            "correction": _TEXT,
            "implicit": _WORD,
            "implicit_text": _TEXT,
            "source": _WORD,
            "user_id": _ID,
            "user_role": _NAME,
            "model_confidence": SCALAR["double"],
            "attributes": _ATTRIBUTES,
            "occurred_at": _WORD,
            "signals": _list(16, _WORD),
            "negative": SCALAR["bool"],
            "origin_policy": _NAME,
        }
    ),
    "interaction": _record(
        {
            "id": _ID,
            "session_id": _ID,
            "turn_index": SCALAR["int"],
            "user_id": _ID,
            "user_role": _NAME,
            "application": _NAME,
            "prompt_name": _NAME,
            "prompt_version": _NAME,
            "model_name": _NAME,
            "model_version": _NAME,
            "input_messages": _list(MAX_MESSAGES, _record({"role": _WORD, "content": _TEXT})),
            "context_documents": _list(
                MAX_DOCUMENTS, _record({"id": _ID, "text": _TEXT, "score": SCALAR["double"]})
            ),
            "response": _TEXT,
            "latency_ms": SCALAR["int"],
            "prompt_tokens": SCALAR["int"],
            "completion_tokens": SCALAR["int"],
            "attributes": _ATTRIBUTES,
        }
    ),
    "session": _record(
        {
            "id": _ID,
            "turn_count": SCALAR["int"],
            "feedback_count": SCALAR["int"],
            "negative_count": SCALAR["int"],
        }
    ),
}


class CostError(ValueError):
    """The expression's cost cannot be bounded (it could not be read)."""


def _scaled(shape: Shape, factor: float) -> Shape:
    """`shape` with every size multiplied by `factor` <= 1 (an average element)."""
    if factor >= 1.0:
        return shape
    return Shape(
        shape.kind,
        size=math.ceil(shape.size * factor) if shape.kind in ("string", "bytes") else shape.size,
        bytes=math.ceil(shape.bytes * factor),
        count=shape.count,
        elem=_scaled(shape.elem, factor) if shape.elem is not None else None,
        key=shape.key,
        fields={k: _scaled(v, factor) for k, v in shape.fields.items()} if shape.fields else None,
        text=shape.text,
    )


def _element(container: Shape) -> Shape:
    """What a comprehension variable over `container` is bound to (averaged, see above)."""
    if container.kind == "map":
        item = container.key or _NAME
    elif container.kind == "list":
        item = container.elem or DYN
    else:
        return DYN
    if container.size <= 0:
        return item
    total = container.size * item.bytes
    return _scaled(item, container.bytes / total) if total > container.bytes else item


def _copy(shape: Shape) -> int:
    """Reading a value: the `cel` package copies it."""
    return shape.count + shape.bytes // BYTES_PER_UNIT


def _scan(shape: Shape) -> int:
    return 1 + shape.bytes // BYTES_PER_UNIT


def _compare(a: Shape, b: Shape) -> int:
    return 1 + min(a.count, b.count) + min(a.bytes, b.bytes) // BYTES_PER_UNIT


def regex_weight(pattern: str) -> int:
    """How many times, at most, a regex engine walks the text for `pattern`: its length,
    with each counted repetition (`x{3,100}`) multiplying what it repeats."""
    # Weight of the group being read, and of the last atom (what a quantifier applies to).
    stack: list[tuple[int, int]] = []
    total, last = 0, 0
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            last = 2
            total += last
            i += 2
            continue
        if c == "(":
            stack.append((total, last))
            total, last = 0, 0
        elif c == ")" and stack:
            group = total + 1
            total, _ = stack.pop()
            total += group
            last = group
        elif c == "{":
            end = pattern.find("}", i)
            bounds = pattern[i + 1 : end].split(",") if end > i else []
            if bounds and all(b.strip().isdigit() or not b.strip() for b in bounds):
                repeat = max((int(b) for b in bounds if b.strip()), default=1)
                total += last * max(repeat - 1, 0)
                last *= max(repeat, 1)
                i = end + 1
                continue
            last = 1
            total += 1
        elif c == "[":
            end = pattern.find("]", i + 2)
            width = (end - i + 1) if end > i else 1
            last = 1
            total += 1
            i += width
            continue
        else:
            last = 1
            total += 1
        i += 1
    while stack:  # an unbalanced pattern (cel refuses it at run time); still bound it
        outer, _ = stack.pop()
        total += outer
    return max(total, 1)


_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
_SCANS = frozenset({"contains", "startsWith", "endsWith"})
_CONVERSIONS = {
    "int": "int",
    "uint": "uint",
    "double": "double",
    "bool": "bool",
    "timestamp": "time",
    "duration": "time",
    "type": "type",
}


class _Estimator:
    def estimate(self, node: Node, env: Mapping[str, Shape]) -> tuple[int, Shape]:
        if isinstance(node, Lit):
            if node.kind in ("string", "bytes"):
                shape = Shape(node.kind, size=len(node.text), bytes=len(node.text.encode()), text=node.text)
                return 1 + shape.bytes // BYTES_PER_UNIT, shape
            return 1, SCALAR.get(node.kind, SCALAR["int"])
        if isinstance(node, Ident):
            if node.name in env:
                shape = env[node.name]
                return 1 + _copy(shape), shape
            shape = EVENT_SHAPES.get(node.name, DYN)  # a whole section, as in `size(feedback)`
            return 1 + _copy(shape), shape
        if isinstance(node, Select):
            if (
                isinstance(node.operand, Ident)
                and node.operand.name in EVENT_SHAPES
                and (node.operand.name not in env)
            ):
                cost = 1  # a section is not copied when one of its fields is read
                shape = self._field(EVENT_SHAPES[node.operand.name], node.field)
            else:
                cost, operand = self.estimate(node.operand, env)
                shape = self._field(operand, node.field)
            return cost + 1 + _copy(shape), shape
        if isinstance(node, Index):
            c1, operand = self.estimate(node.operand, env)
            c2, index = self.estimate(node.index, env)
            if operand.fields is not None and index.text is not None and index.text in operand.fields:
                shape = operand.fields[index.text]
            else:
                shape = operand.elem or DYN
            return c1 + c2 + 1 + _copy(shape), shape
        if isinstance(node, Unary):
            cost, shape = self.estimate(node.operand, env)
            return cost + 1, SCALAR["bool"] if node.op == "!" else shape
        if isinstance(node, Binary):
            return self._binary(node, env)
        if isinstance(node, Cond):
            c0, _ = self.estimate(node.test, env)
            c1, s1 = self.estimate(node.then, env)
            c2, s2 = self.estimate(node.otherwise, env)
            return c0 + max(c1, c2) + 1, _join([s1, s2])
        if isinstance(node, ListLit):
            cost, shapes = 1, []
            for item in node.items:
                c, s = self.estimate(item, env)
                cost += c
                shapes.append(s)
            elem = _join(shapes)
            return cost, Shape(
                "list",
                size=len(shapes),
                bytes=sum(s.bytes for s in shapes),
                count=1 + sum(s.count for s in shapes),
                elem=elem,
            )
        if isinstance(node, MapLit):
            cost, keys, values = 1, [], []
            named: dict[str, Shape] = {}
            for k, v in node.entries:
                ck, sk = self.estimate(k, env)
                cv, sv = self.estimate(v, env)
                cost += ck + cv
                keys.append(sk)
                values.append(sv)
                if sk.text is not None:
                    named[sk.text] = sv
            return cost, Shape(
                "map",
                size=len(values),
                bytes=sum(k.bytes + v.bytes for k, v in zip(keys, values, strict=True)),
                count=1 + sum(k.count + v.count for k, v in zip(keys, values, strict=True)),
                elem=_join(values),
                key=_join(keys),
                fields=named if len(named) == len(values) else None,
            )
        assert isinstance(node, Call)
        return self._call(node, env)

    @staticmethod
    def _field(operand: Shape, name: str) -> Shape:
        if operand.fields is not None:
            return operand.fields.get(name, DYN)
        if operand.kind == "map" and operand.elem is not None:
            return operand.elem
        return DYN

    def _binary(self, node: Binary, env: Mapping[str, Shape]) -> tuple[int, Shape]:
        c1, left = self.estimate(node.left, env)
        c2, right = self.estimate(node.right, env)
        cost = c1 + c2 + 1
        op = node.op
        if op in ("&&", "||"):
            return cost, SCALAR["bool"]
        if op == "in":
            if right.kind == "map":
                return cost + _compare(left, right.key or DYN), SCALAR["bool"]
            per = _compare(left, right.elem or DYN)
            return cost + right.size * per, SCALAR["bool"]
        if op in ("==", "!=", "<", "<=", ">", ">="):
            return cost + _compare(left, right), SCALAR["bool"]
        if op == "+" and (left.kind in ("string", "bytes", "list", "dyn") or right.kind == "dyn"):
            joined = Shape(
                left.kind if left.kind == right.kind else "dyn",
                size=left.size + right.size,
                bytes=left.bytes + right.bytes,
                count=left.count + right.count,
                elem=_join(elems)
                if (elems := [s for s in (left.elem, right.elem) if s is not None])
                else None,
            )
            return cost + _copy(joined), joined
        return cost, left if left.kind in ("int", "uint", "double", "time") else SCALAR["double"]

    def _call(self, node: Call, env: Mapping[str, Shape]) -> tuple[int, Shape]:
        if node.target is not None and node.name in _MACROS and node.args and isinstance(node.args[0], Ident):
            return self._comprehension(node, env)
        if node.target is None and node.name == "has" and len(node.args) == 1:
            arg = node.args[0]
            if isinstance(arg, Select):
                cost, _ = self.estimate(arg.operand, env)
                return cost + 1, SCALAR["bool"]
        cost = 1
        receiver: Shape | None = None
        if node.target is not None:
            c, receiver = self.estimate(node.target, env)
            cost += c
        args: list[Shape] = []
        for arg in node.args:
            c, s = self.estimate(arg, env)
            cost += c
            args.append(s)
        subject = receiver if receiver is not None else (args[0] if args else None)
        name = node.name
        if name in _SCANS and subject is not None:
            return cost + _scan(subject) + sum(_scan(a) for a in args), SCALAR["bool"]
        if name == "matches" and subject is not None:
            pattern = args[-1] if args else DYN
            weight = regex_weight(pattern.text) if pattern.text is not None else pattern.bytes
            return cost + 1 + subject.bytes * weight // BYTES_PER_UNIT, SCALAR["bool"]
        if name == "size" and subject is not None:
            return cost + (_scan(subject) if subject.kind in ("string", "bytes", "dyn") else 1), SCALAR["int"]
        if name in _CONVERSIONS:
            return cost + sum(_scan(a) for a in args), SCALAR[_CONVERSIONS[name]]
        if name in ("string", "bytes") and args:
            source = args[0]
            shape = replace(source, kind=name) if source.kind in ("string", "bytes") else _string(32)
            return cost + _copy(shape), shape
        if name == "dyn" and args:
            return cost, args[0]
        if name.startswith("get") and receiver is not None:
            return cost, SCALAR["int"]  # timestamp and duration accessors
        # Anything else (an unknown function fails on the sample events) is costed as if it
        # could return the largest value a message can carry.
        return cost + _copy(DYN), DYN

    def _comprehension(self, node: Call, env: Mapping[str, Shape]) -> tuple[int, Shape]:
        assert node.target is not None
        var = node.args[0]
        assert isinstance(var, Ident)
        cost, container = self.estimate(node.target, env)
        items = container.size if container.kind in ("list", "map") else _UNKNOWN_ITEMS
        item = _element(container)
        inner = {**env, var.name: item}
        per_step = 1 + _copy(item)
        result_elem = item
        for arg in node.args[1:]:
            c, s = self.estimate(arg, inner)
            per_step += c
            result_elem = s  # map's transform is its last argument
        cost += items * per_step
        if node.name in ("map", "filter"):
            if node.name == "filter":
                result_elem = item
            # Each step copies the result so far: at most items^2 element copies.
            cost += items * items * _copy(result_elem)
            return cost, Shape(
                "list",
                size=items,
                bytes=items * result_elem.bytes,
                count=1 + items * result_elem.count,
                elem=result_elem,
            )
        return cost, SCALAR["bool"]


def estimate_cost(source: str) -> int:
    """The estimated cost of evaluating `source` on the largest event ingestion accepts.

    CostError if the expression cannot be read (callers refuse it: no bound, no run).
    """
    try:
        tree = celparse.parse(source)
        cost, _ = _Estimator().estimate(tree, {})
    except ParseError as error:
        raise CostError(str(error)) from None
    except RecursionError:  # MAX_NESTING keeps the parser far from it; never crash on it
        raise CostError("expression nests too deeply") from None
    return cost


def cost_problem(source: str) -> tuple[int, str | None]:
    """(estimate, problem): the problem is None when the expression is within its limit."""
    if len(source) > MAX_EXPRESSION_CHARS:
        return 0, (f"expression is {len(source):,} characters long; the limit is {MAX_EXPRESSION_CHARS:,}")
    try:
        cost = estimate_cost(source)
    except CostError as error:
        return 0, f"cannot bound the cost of this expression: {error}"
    if cost > EXPRESSION_COST_LIMIT:
        return cost, (
            f"estimated cost {cost:,} exceeds the per-expression limit of {EXPRESSION_COST_LIMIT:,} "
            "(comprehensions multiply by the sizes they iterate; event fields count at their "
            "ingestion maxima)"
        )
    return cost, None
