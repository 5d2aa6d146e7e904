"""The names an operator gives: project ids and reviewer identities.

A project id ends up in SQL keys, in Milvus filter expressions and partition keys, in log lines
and in error messages, so it is kept to a portable alphabet (a DNS label's, plus `_` and `.`).
A reviewer identity is what independent reviews are told apart by; it must never look like the
`key:<id>` identity a key without a named reviewer reviews as, so it has no `:`.
"""

from __future__ import annotations

import re

from feedbackloop.errors import quote

PROJECT_ID_MAX = 63
PROJECT_ID = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
PROJECT_RULE = (
    f"1 to {PROJECT_ID_MAX} lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"
)

REVIEWER_MAX = 128
REVIEWER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}")
REVIEWER_RULE = (
    f"1 to {REVIEWER_MAX} letters, digits, '.', '_', '@', '+' or '-', starting with a letter or digit"
)


def quoted(value: str) -> str:
    """`value` in quotes, as every error quotes a refused value (errors.quote)."""
    return f"'{quote(value)}'"


def check_project_id(value: str) -> str:
    """`value` when it is a valid project id; ValueError saying the rule otherwise."""
    if PROJECT_ID.fullmatch(value) is None:
        raise ValueError(f"{quoted(value)} is not a valid project id: use {PROJECT_RULE}")
    return value


def check_reviewer(value: str) -> str:
    """`value` when it is a valid reviewer identity; ValueError saying the rule otherwise."""
    if REVIEWER.fullmatch(value) is None:
        raise ValueError(f"{quoted(value)} is not a valid reviewer name: use {REVIEWER_RULE}")
    return value
