from __future__ import annotations

import jsonschema

from feedbackloop.policy.schema import load_schema, schema_text, validate_document

from .conftest import REPO_ROOT


def test_published_schema_is_byte_identical_to_the_packaged_one() -> None:
    published = REPO_ROOT / "policies" / "schema" / "feedbackloop-v1.schema.json"
    assert published.read_text(encoding="utf-8") == schema_text(), (
        "policies/schema/feedbackloop-v1.schema.json is out of date: copy "
        "services/feedbackloop/policy/feedbackloop-v1.schema.json over it"
    )


def test_schema_is_valid_draft_2020_12() -> None:
    schema = load_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_messages_are_author_friendly() -> None:
    doc = {
        "apiVersion": "feedbackloop/v1",
        "kind": "FeedbackSchema",
        "metadata": {"name": "s"},
        "spec": {"signals": {"thumbs_sideways": {"categories": []}}, "required": ["comment", "comment"]},
    }
    assert validate_document(doc) == [
        (("spec", "required"), "must not contain duplicates", False),
        (
            ("spec", "signals", "thumbs_sideways"),
            'unknown key "thumbs_sideways" (expected one of: thumbs_up, thumbs_down, rating, category, '
            "comment, correction, regenerate, copy, edit, abandon, rephrase)",
            True,
        ),
    ]


def test_missing_required_fields_are_named() -> None:
    assert validate_document(
        {"apiVersion": "feedbackloop/v1", "kind": "Prompt", "metadata": {"name": "p"}, "spec": {}}
    ) == [
        (("spec",), 'missing required field "template"', False),
        (("spec",), 'missing required field "variables"', False),
    ]
