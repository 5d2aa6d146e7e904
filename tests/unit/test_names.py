"""names.py: the project id and reviewer name rules, and how much of a bad value errors quote."""

from __future__ import annotations

import pytest

from feedbackloop import names
from feedbackloop.config import Settings

PROJECT_RULE = "use 1 to 63 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"


@pytest.mark.parametrize("value", ["default", "acme", "tenant-a", "cli-proj", "p2", "a", "x.y_z-1", "9" * 63])
def test_valid_project_ids(value: str) -> None:
    assert names.check_project_id(value) == value


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("", "''"),
        (" ", "' '"),
        ("acme ", "'acme '"),
        ("ac me", "'ac me'"),
        ("a/b", "'a/b'"),
        ("a\x00b", "'a\\x00b'"),
        ("acme\n", "'acme\\n'"),
        ("Acme", "'Acme'"),
        ("-acme", "'-acme'"),
        (".", "'.'"),
        ("a" * 64, repr("a" * 64)),
        ("a" * 81, f"'{'a' * 80}… (81 characters)'"),
        ("é", "'é'"),
    ],
)
def test_invalid_project_ids(value: str, shown: str) -> None:
    with pytest.raises(ValueError) as raised:
        names.check_project_id(value)
    assert str(raised.value) == f"{shown} is not a valid project id: {PROJECT_RULE}"


def test_a_long_value_is_quoted_in_part() -> None:
    with pytest.raises(ValueError) as raised:
        names.check_project_id("x" * 100_000)
    assert str(raised.value).startswith(f"'{'x' * 80}… (100000 characters)' is not a valid project id")


@pytest.mark.parametrize("value", ["alice", "alice@example.com", "a.b-c_d+e", "A1", "z" * 128])
def test_valid_reviewers(value: str) -> None:
    assert names.check_reviewer(value) == value


@pytest.mark.parametrize("value", ["", "key:abc", "a b", " alice", "alice\x00", "@alice", "z" * 129, "a/b"])
def test_invalid_reviewers(value: str) -> None:
    with pytest.raises(ValueError, match="is not a valid reviewer name: use 1 to 128 letters"):
        names.check_reviewer(value)


@pytest.mark.parametrize("value", ["", "My Project", "a/b"])
def test_the_default_project_setting_follows_the_rule(value: str) -> None:
    with pytest.raises(ValueError, match="is not a valid project id"):
        Settings(default_project=value)
