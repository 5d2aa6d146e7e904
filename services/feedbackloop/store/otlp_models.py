"""SQLAlchemy model of the OTLP response ids: which interaction a model response became.

GenAI evaluators that cannot parent their `gen_ai.evaluation.result` event to the span they
judge (an offline judge, another process) name the completion by its `gen_ai.response.id`
instead; this table finds the interaction for it in one index probe.
"""

from __future__ import annotations

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from feedbackloop.store.models import Base


class InteractionResponse(Base):
    """The `gen_ai.response.id` of an LLM span, for the interaction taken from it. The first
    span stored with a response id keeps it (two instrumentations of one call may both
    report it)."""

    __tablename__ = "interaction_responses"

    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), primary_key=True)
    response_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    interaction_id: Mapped[str] = mapped_column(ForeignKey("interactions.id"), unique=True)
