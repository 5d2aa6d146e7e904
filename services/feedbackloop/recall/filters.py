"""`RecallFilter`: the metadata filter of a recall query, rendered to a Milvus boolean expression.

Values are rendered as escaped string literals, never pasted raw. pymilvus' `filter_params`
templating would be nicer, but neither Milvus Lite 3.x nor a Milvus 2.3 server evaluates
expression templates (Lite ignores them, 2.3 rejects `{name}` as a syntax error), so the one code
path that works on both is literal rendering with an escaper that both grammars agree on:
backslash, the double quote, and \\n \\r \\t; any other control character is refused. (A single
quote is left as it is: it is plain text inside a double-quoted literal in both grammars, while
`\\'` is not a valid escape in the Go-style unquoting a Milvus server does.)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from feedbackloop.recall.text import epoch_ms

MAX_VALUES_PER_FIELD = 256
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


class FilterError(ValueError):
    """A filter value that cannot be expressed safely (control characters, too many values...)."""


def quote(value: str) -> str:
    """`value` as a double-quoted Milvus string literal; refuses characters neither grammar escapes."""
    if not isinstance(value, str):
        raise FilterError(f"filter values must be strings, got {type(value).__name__}")
    out: list[str] = []
    for ch in value:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            raise FilterError(f"control character U+{ord(ch):04X} is not allowed in a filter value")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def quoted_list(values: Iterable[str]) -> str:
    """A Milvus list literal of quoted strings, e.g. ["a", "b"]."""
    return "[" + ", ".join(quote(v) for v in values) + "]"


def _ms(moment: datetime | int) -> int:
    if isinstance(moment, bool):  # bool is an int: refuse it rather than filter on epoch 0/1
        raise FilterError("a time bound must be a datetime or epoch milliseconds")
    return moment if isinstance(moment, int) else epoch_ms(moment)


@dataclass(frozen=True)
class RecallFilter:
    """Conditions ANDed together; within one list field, any listed value matches.

    `signals` / `categories` match rows whose array holds any of the values; the other lists
    match rows whose field equals one of them. `occurred_after` is inclusive and
    `occurred_before` exclusive, so adjacent windows never share a row.
    """

    signals: Sequence[str] = field(default_factory=tuple)
    categories: Sequence[str] = field(default_factory=tuple)
    model_versions: Sequence[str] = field(default_factory=tuple)
    prompt_names: Sequence[str] = field(default_factory=tuple)
    user_roles: Sequence[str] = field(default_factory=tuple)
    sources: Sequence[str] = field(default_factory=tuple)
    occurred_after: datetime | int | None = None
    occurred_before: datetime | int | None = None
    negative_only: bool = False

    def within(self, start: datetime | int, end: datetime | int) -> RecallFilter:
        """This filter restricted to the window [start, end), e.g. for TopIssues."""
        return replace(self, occurred_after=start, occurred_before=end)

    def clauses(self, array_shadows: bool = False) -> list[str]:
        """The filter's conditions, each a self-contained expression (tenancy not included).

        With `array_shadows`, array conditions test the `<name>_text` shadow columns instead of
        the ARRAY fields (see `shadow_text`): Milvus Lite evaluates any expression holding
        `array_contains_*` row by row in Python (~0.35 s per 10k rows), LIKE vectorized in Arrow.
        """
        out: list[str] = []
        for name, values in (("signals", self.signals), ("categories", self.categories)):
            if values:
                checked = self._checked(name, values)
                if array_shadows:
                    tests = [f"{name}_text like {quote('%' + shadow_text([v]) + '%')}" for v in checked]
                    out.append(" or ".join(tests))
                else:
                    out.append(f"array_contains_any({name}, {quoted_list(checked)})")
        for name, values in (
            ("model_version", self.model_versions),
            ("prompt_name", self.prompt_names),
            ("user_role", self.user_roles),
            ("source", self.sources),
        ):
            if values:
                out.append(f"{name} in {quoted_list(self._checked(name, values))}")
        if self.occurred_after is not None:
            out.append(f"occurred_at >= {_ms(self.occurred_after)}")
        if self.occurred_before is not None:
            out.append(f"occurred_at < {_ms(self.occurred_before)}")
        if self.negative_only:
            out.append("negative == true")
        return out

    @staticmethod
    def _checked(name: str, values: Sequence[str]) -> list[str]:
        if isinstance(values, str):  # a bare string would filter on its characters
            raise FilterError(f"{name}: expected a list of strings, got a string")
        values = list(dict.fromkeys(values))  # dedupe, keep order: the expression stays deterministic
        if len(values) > MAX_VALUES_PER_FIELD:
            raise FilterError(f"{name}: at most {MAX_VALUES_PER_FIELD} values, got {len(values)}")
        return values


def shadow_text(values: Iterable[str]) -> str:
    """Array values as one LIKE-searchable string: ``|v1|v2|``, each value with every character
    outside [A-Za-z0-9] written as ``~XXXX`` (hex code point). The encoded form holds no LIKE
    wildcard (``%``, ``_``), no quote and no delimiter, so ``like "%|<encoded>|%"`` matches
    exactly the rows holding that value, and user text can never change the pattern's meaning."""
    encoded = ["".join(c if c.isascii() and c.isalnum() else f"~{ord(c):04X}" for c in v) for v in values]
    return "|" + "|".join(encoded) + "|" if encoded else ""


def tenant_expression(
    project_id: str, recall_filter: RecallFilter | None = None, array_shadows: bool = False
) -> str:
    """The full server-side expression: the project clause first, ANDed with every filter clause.

    Every query of `FeedbackIndex` goes through here, so no caller can leave the tenant out; the
    filter's values are quoted literals, so none can close the project clause early either.
    """
    if not project_id:
        raise FilterError("project_id is required")
    parts = [f"project_id == {quote(project_id)}"]
    if recall_filter is not None:
        parts.extend(f"({c})" for c in recall_filter.clauses(array_shadows))
    return " and ".join(parts)
