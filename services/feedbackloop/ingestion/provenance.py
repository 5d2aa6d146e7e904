"""Who may say where feedback came from.

Policies trust `feedback.source` (`source == "end_user"` is how a rule keeps to what users
said, and the loop guard tells reviewers' verdicts apart by it), so a client cannot simply
claim a source:

- `reviewer` is written only by ReviewService.ResolveReviewItem, which records the key's bound
  reviewer identity. Through ingestion it is INVALID_ARGUMENT whatever the key: no scope makes
  it a valid request, and the message says where reviews go instead.
- `evaluator` (an automated judge) needs the `evaluate` scope (or `admin`): PERMISSION_DENIED
  otherwise, since the same request is fine from a key that has it.
- `end_user` (or unset) is what an `ingest` key submits.
"""

from __future__ import annotations

from feedbackloop.auth import Principal, Scope
from feedbackloop.errors import InvalidArgument, PermissionDenied
from feedbackloop.ingestion.validation import FeedbackInput

REVIEWER = "reviewer"
EVALUATOR = "evaluator"


def check_source(principal: Principal, data: FeedbackInput, field: str = "feedback.source") -> None:
    """Refuse a source `principal` may not submit through ingestion."""
    if data.source == REVIEWER:
        raise InvalidArgument.single(
            field, "FEEDBACK_SOURCE_REVIEWER is recorded only by ReviewService.ResolveReviewItem"
        )
    if data.source == EVALUATOR and not principal.allows(Scope.EVALUATE):
        raise PermissionDenied(f"{field}: FEEDBACK_SOURCE_EVALUATOR needs the '{Scope.EVALUATE}' scope")
