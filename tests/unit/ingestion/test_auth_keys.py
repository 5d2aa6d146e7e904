"""auth.py (tested here with the ingestion code that relies on it): bearer parsing, scopes, projects."""

from __future__ import annotations

import re

import pytest

from feedbackloop import auth
from feedbackloop.auth import Principal, Scope
from feedbackloop.errors import PermissionDenied, Unauthenticated

BAD_HEADER = "authorization metadata must be 'Bearer <key>'"


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ((("authorization", "Bearer abc"),), "abc"),
        ((("authorization", "bearer abc"),), "abc"),
        ((("Authorization", "BEARER  abc  "),), "abc"),
        ((("authorization", b"Bearer xyz"),), "xyz"),
        ((("x-other", "1"), ("authorization", "Bearer k2")), "k2"),
        ((("x-other", "1"),), None),
        ((), None),
        (None, None),
    ],
)
def test_bearer_token(metadata, expected) -> None:  # type: ignore[no-untyped-def]
    assert auth.bearer_token(metadata) == expected


@pytest.mark.parametrize("value", ["Basic abc", "Bearer", "Bearer   ", "abc", "Token abc", ""])
def test_bearer_token_refuses_other_schemes(value: str) -> None:
    with pytest.raises(Unauthenticated) as raised:
        auth.bearer_token((("authorization", value),))
    assert raised.value.message == BAD_HEADER


@pytest.mark.parametrize(
    ("scopes", "required", "allowed"),
    [
        ({Scope.INGEST}, Scope.INGEST, True),
        ({Scope.INGEST}, Scope.READ, False),
        ({Scope.INGEST}, Scope.ADMIN, False),
        ({Scope.READ}, Scope.READ, True),
        ({Scope.READ}, Scope.INGEST, False),
        ({Scope.INGEST, Scope.READ}, Scope.READ, True),
        ({Scope.INGEST, Scope.READ}, Scope.ADMIN, False),
        ({Scope.ADMIN}, Scope.INGEST, True),
        ({Scope.ADMIN}, Scope.READ, True),
        ({Scope.ADMIN}, Scope.ADMIN, True),
        ({Scope.ADMIN}, Scope.REVIEW, True),
        ({Scope.ADMIN}, Scope.EVALUATE, True),
        ({Scope.INGEST}, Scope.REVIEW, False),
        ({Scope.INGEST}, Scope.EVALUATE, False),
        ({Scope.REVIEW}, Scope.REVIEW, True),
        ({Scope.REVIEW}, Scope.READ, False),
        ({Scope.REVIEW}, Scope.INGEST, False),
        ({Scope.EVALUATE}, Scope.INGEST, False),
        (set(), Scope.READ, False),
    ],
)
def test_require(scopes: set[Scope], required: Scope, allowed: bool) -> None:
    principal = Principal("p", frozenset(scopes), key_id="k")
    if allowed:
        principal.require(required)
        return
    with pytest.raises(PermissionDenied) as raised:
        principal.require(required)
    assert raised.value.message == f"this API key lacks the '{required}' scope"


def test_project_for() -> None:
    principal = Principal("acme", frozenset({Scope.READ}), key_id="k")
    assert principal.project_for("") == "acme"
    assert principal.project_for("acme") == "acme"
    with pytest.raises(PermissionDenied) as raised:
        principal.project_for("globex")
    assert raised.value.message == "project: this API key belongs to project 'acme', not 'globex'"


def test_project_for_quotes_a_hostile_project_as_every_error_does() -> None:
    principal = Principal("acme", frozenset({Scope.READ}), key_id="k")
    with pytest.raises(PermissionDenied) as raised:
        principal.project_for("g\x00" + "x" * 100_000)
    assert raised.value.message == (
        f"project: this API key belongs to project 'acme', not 'g\\x00{'x' * 78}… (100002 characters)'"
    )


def test_a_key_reviews_as_its_reviewer_or_its_key_id() -> None:
    named = Principal("p", frozenset({Scope.REVIEW}), key_id="k1", reviewer="alice")
    nameless = Principal("p", frozenset({Scope.REVIEW}), key_id="k2")
    assert named.reviewer_identity == "alice" and nameless.reviewer_identity == "key:k2"
    assert named.reviewer_for("") == named.reviewer_for("alice") == "alice"
    assert nameless.reviewer_for("") == nameless.reviewer_for("key:k2") == "key:k2"
    for principal, other in ((named, "bob"), (named, "key:k1"), (nameless, "k2"), (nameless, "alice")):
        with pytest.raises(PermissionDenied) as raised:
            principal.reviewer_for(other)
        assert raised.value.message == (
            f"reviewer: this API key reviews as '{principal.reviewer_identity}' "
            "and cannot review as someone else"
        )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ingest", {Scope.INGEST}),
        ("ingest read", {Scope.INGEST, Scope.READ}),
        (["admin", "read", "admin"], {Scope.ADMIN, Scope.READ}),
        ("", set()),
    ],
)
def test_parse_scopes(raw: str | list[str], expected: set[Scope]) -> None:
    assert auth.parse_scopes(raw) == frozenset(expected)


def test_parse_scopes_names_the_bad_one() -> None:
    with pytest.raises(
        ValueError, match=r"^unknown scope 'write' \(valid: ingest, read, review, policy, evaluate, admin\)$"
    ):
        auth.parse_scopes("read write")


def test_generated_keys_and_hashes() -> None:
    key_id, key = auth.generate_key()
    assert re.fullmatch(r"[0-9a-f]{12}", key_id)
    assert key.startswith(f"fbl_{key_id}_")
    assert auth.generate_key()[1] != key
    digest = auth.hash_key(key)
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert key not in digest and auth.hash_key(key) == digest


def test_current_principal_is_per_context() -> None:
    with pytest.raises(Unauthenticated):
        auth.current_principal()
    principal = Principal("p", frozenset({Scope.READ}), key_id="k")
    token = auth.set_principal(principal)
    try:
        assert auth.current_principal() is principal
    finally:
        auth.reset_principal(token)
    with pytest.raises(Unauthenticated):
        auth.current_principal()
