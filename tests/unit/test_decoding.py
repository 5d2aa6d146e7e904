"""Undecodable requests: the wire walk that names the faulty field, and the refusal's text."""

from __future__ import annotations

import pytest
from google.protobuf.message import Message

from feedbackloop.decoding import Undecodable, locate_fault, safe_deserializer
from feedbackloop.v1 import common_pb2, ingestion_pb2

S = common_pb2
MARK = "\u00e9\u00e9"  # two bytes each in UTF-8: replaced by four invalid ones below
BAD = b"\xff\xfe\xff\xfe"


def corrupted(message: Message) -> bytes:
    """`message` serialized with the one string holding MARK made invalid UTF-8."""
    data = message.SerializeToString()
    assert data.count(MARK.encode()) == 1
    return data.replace(MARK.encode(), BAD)


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (ingestion_pb2.SubmitFeedbackRequest(project=MARK), "project"),
        (
            ingestion_pb2.SubmitFeedbackRequest(feedback=S.Feedback(thumb=S.THUMB_UP, comment=MARK)),
            "feedback.comment",
        ),
        (
            ingestion_pb2.SubmitFeedbackRequest(feedback=S.Feedback(categories=["ok", "fine", MARK])),
            "feedback.categories[2]",
        ),
        (
            ingestion_pb2.SubmitFeedbackRequest(feedback=S.Feedback(attributes={"k": MARK})),
            "feedback.attributes.value",
        ),
        (
            ingestion_pb2.SubmitFeedbackRequest(feedback=S.Feedback(attributes={MARK: "v"})),
            "feedback.attributes.key",
        ),
        (
            ingestion_pb2.RecordInteractionRequest(
                interaction=S.Interaction(
                    input_messages=[
                        S.ChatMessage(role="user", content="a"),
                        S.ChatMessage(role="user", content=MARK),
                    ]
                )
            ),
            "interaction.input_messages[1].content",
        ),
    ],
)
def test_invalid_utf8_is_located_in_its_field(message: Message, field: str) -> None:
    data = corrupted(message)
    with pytest.raises(Exception, match="bad UTF-8"):
        type(message).FromString(data)
    assert locate_fault(message.DESCRIPTOR, data)[0] == field


@pytest.mark.parametrize(
    ("data", "fault"),
    [
        # feedback (field 2, length-delimited) says 5 bytes follow; 2 do.
        (b"\x12\x05\x0a\x03", ("feedback", "is truncated (its length runs past the end of the message)")),
        # a varint that never ends, in a field the message does not declare
        (b"\x48" + b"\xff" * 11, ("<field 9>", "is truncated or has a malformed varint")),
        # wire type 7 does not exist
        (b"\x0f", ("project", "has an unsupported wire type 7")),
        (b"\x00\x01", ("", "holds a field numbered 0")),
    ],
)
def test_framing_faults_are_named(data: bytes, fault: tuple[str, str]) -> None:
    with pytest.raises(Exception, match="corrupt"):
        ingestion_pb2.SubmitFeedbackRequest.FromString(data)
    assert locate_fault(ingestion_pb2.SubmitFeedbackRequest.DESCRIPTOR, data) == fault


def test_the_safe_deserializer_decodes_or_stands_in() -> None:
    decode = safe_deserializer(ingestion_pb2.SubmitFeedbackRequest.FromString)
    assert decode is not None
    good = ingestion_pb2.SubmitFeedbackRequest(project="acme")
    assert decode(good.SerializeToString()) == good
    bad = decode(corrupted(ingestion_pb2.SubmitFeedbackRequest(feedback=S.Feedback(comment=MARK))))
    assert isinstance(bad, Undecodable)
    unary = bad.error()
    assert unary.message == (
        "feedback.comment: is not valid UTF-8 at byte 0; "
        "the request is not a valid feedbackloop.v1.SubmitFeedbackRequest"
    )
    assert [(v.field, v.description) for v in bad.error(4).violations] == [
        (
            "stream[4].feedback.comment",
            "is not valid UTF-8 at byte 0; stream message 4 is not a valid feedbackloop.v1.SubmitFeedbackRequest",
        )
    ]
    framing = decode(b"\x0f")
    assert isinstance(framing, Undecodable)
    assert framing.error().message == (
        "project: has an unsupported wire type 7; the request is not a valid feedbackloop.v1.SubmitFeedbackRequest"
    )


def test_a_deserializer_without_a_message_class_still_stands_in() -> None:
    def strict(data: bytes) -> bytes:
        raise ValueError("no")

    decode = safe_deserializer(strict)
    assert decode is not None
    refused = decode(b"x")
    assert isinstance(refused, Undecodable)
    assert (
        refused.error().message == "request: could not be decoded; the request is not a valid request message"
    )
