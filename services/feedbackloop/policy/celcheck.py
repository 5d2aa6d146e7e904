"""Static checks for CEL conditions, beyond what `cel.compile` does.

The `cel` package type-checks nothing at compile time (a condition on `feedback.commnet`
compiles and only fails per event), so validation adds four checks: top-level variables
must be feedback/interaction/session, `var.field` accesses must name real fields, the
estimated cost must be within its limit (cost.py; checked before anything is run, since an
evaluation cannot be interrupted), and the condition must evaluate to a bool on sample events. The same field analysis tells the
engine which fields each condition reads, so it converts only those per event.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any

import cel

from feedbackloop.policy.cost import MAX_EXPRESSION_CHARS, cost_problem
from feedbackloop.policy.event import EVENT_DEFAULTS, TOP_LEVEL_VARIABLES, make_event, sample_event

# CEL string and bytes literals (triple-quoted first, then single-line), optionally raw or
# bytes-prefixed; their contents must not be mistaken for identifiers.
_STRING_LITERAL = re.compile(
    r"""(?:[rRbB]{1,2})?(?:'''(?:.|\n)*?'''|\"\"\"(?:.|\n)*?\"\"\"|'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*")"""
)
# Variables bound by macros: `feedback.categories.exists(c, c == "x")` binds `c`.
_COMPREHENSION_VAR = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,")
_TOP = "|".join(sorted(TOP_LEVEL_VARIABLES))
# `feedback.xxx`, not preceded by another identifier or dot (so `x.feedback.y` is not a hit).
_MEMBER = re.compile(rf"(?<![\w.])({_TOP})\s*\.\s*([A-Za-z_]\w*)")
# A top-level variable used as a whole (`feedback["thumb"]`, `size(session)`).
_WHOLE = re.compile(rf"(?<![\w.])({_TOP})\b(?!\s*\.\s*[A-Za-z_])")
_CEL_ERROR = re.compile(r"<input>:(\d+):(\d+): (.+)")


def strip_string_literals(source: str) -> str:
    return _STRING_LITERAL.sub('""', source)


@dataclass(frozen=True)
class FieldUse:
    """Which fields of each top-level variable an expression reads; None means all of them."""

    fields: dict[str, frozenset[str] | None]


def field_use(source: str) -> FieldUse:
    code = strip_string_literals(source)
    used: dict[str, set[str] | None] = {}
    for var, name in _MEMBER.findall(code):
        current = used.setdefault(var, set())
        if current is not None:
            current.add(name)
    for var in _WHOLE.findall(code):
        used[var] = None
    return FieldUse({var: (frozenset(f) if f is not None else None) for var, f in used.items()})


def _syntax_message(exc: Exception) -> str:
    text = str(exc)
    found = _CEL_ERROR.findall(text)
    if not found:
        return f"CEL syntax error: {text.splitlines()[0] if text else type(exc).__name__}"
    return "; ".join(
        f"CEL syntax error at {line}:{col}: {msg.strip().removeprefix('Syntax error: ')}"
        for line, col, msg in found
    )


def _short(exc: BaseException) -> str:
    # The cel runtime's overload errors are a paragraph; the first sentence is the point.
    text = str(exc) or type(exc).__name__
    return text.split(". ")[0]


@dataclass(frozen=True)
class CheckedCondition:
    """A compiled condition, every problem found, and its estimated cost (0 if unknown)."""

    program: cel.Program | None
    problems: list[str]
    cost: int


def check_expression(source: str) -> tuple[cel.Program | None, list[str]]:
    """Compile and check a condition; return the program and every problem found."""
    checked = check_condition(source)
    return checked.program, checked.problems


def check_condition(source: str) -> CheckedCondition:
    """The checks of `check_expression`, with the cost estimate (for the policy-set budget)."""
    if len(source) > MAX_EXPRESSION_CHARS:
        # Refused before compiling: compile time grows with the length and holds the GIL.
        _, problem = cost_problem(source)
        assert problem is not None
        return CheckedCondition(None, [problem], 0)
    try:
        program = cel.compile(source)
    except Exception as exc:  # the binding raises ValueError; be robust to others
        return CheckedCondition(None, [_syntax_message(exc)], 0)
    problems: list[str] = []
    bound = set(_COMPREHENSION_VAR.findall(strip_string_literals(source)))
    for var in sorted(set(program.variables()) - bound - TOP_LEVEL_VARIABLES):
        problems.append(f'unknown variable "{var}" (conditions can use feedback, interaction and session)')
    seen: set[tuple[str, str]] = set()
    for var, name in _MEMBER.findall(strip_string_literals(source)):
        if name in EVENT_DEFAULTS[var] or (var, name) in seen:
            continue
        seen.add((var, name))
        close = difflib.get_close_matches(name, list(EVENT_DEFAULTS[var]), n=1)
        hint = f' (did you mean "{var}.{close[0]}"?)' if close else ""
        problems.append(f'unknown field "{var}.{name}"{hint}')
    if problems:
        return CheckedCondition(program, problems, 0)
    cost, problem = cost_problem(source)
    if problem is not None:
        return CheckedCondition(program, [problem], cost)
    # Evaluate on a fully populated event and on an all-defaults one, to reach both sides of
    # common `x != "" && ...` guards. A missing map key (attributes["team"]) is data, not a
    # type error, so KeyError is tolerated here and surfaces per event as outcome "error".
    for event in (sample_event(), make_event()):
        result: Any
        try:
            result = program.execute(event)
        except KeyError:
            continue
        except Exception as exc:
            problems.append(f"condition fails on a sample event: {_short(exc)}")
            break
        if not isinstance(result, bool):
            problems.append(f"condition must evaluate to a bool, got {type(result).__name__} ({result!r})")
            break
    return CheckedCondition(program, problems, cost)
