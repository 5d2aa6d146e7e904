"""IngestionService: validate, store durably, acknowledge."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import grpc

from feedbackloop import auth, feedback_tokens
from feedbackloop.auth import Scope
from feedbackloop.config import Settings
from feedbackloop.decoding import UndecodableRequest
from feedbackloop.errors import FeedbackloopError, InvalidArgument, Violations
from feedbackloop.fields import require_id
from feedbackloop.ingestion import repository
from feedbackloop.ingestion.convert import feedback_to_proto, interaction_to_proto, timestamp
from feedbackloop.ingestion.group_commit import GroupCommitter
from feedbackloop.ingestion.provenance import check_source
from feedbackloop.ingestion.repository import FeedbackQuery, Stored, TraceIds
from feedbackloop.ingestion.taxonomy import Taxonomy
from feedbackloop.ingestion.validation import (
    SOURCES,
    FeedbackInput,
    Limits,
    filter_bounds,
    validate_feedback,
    validate_interaction,
)
from feedbackloop.paging import filter_digest
from feedbackloop.signals import SIGNAL_NAMES
from feedbackloop.store.db import Database
from feedbackloop.telemetry import current_ids, current_traceparent
from feedbackloop.v1 import common_pb2, ingestion_pb2, ingestion_pb2_grpc

SERVICE = "/feedbackloop.v1.IngestionService/"
REQUIRED_SCOPES = {
    SERVICE + "RecordInteraction": Scope.INGEST,
    SERVICE + "SubmitFeedback": Scope.INGEST,
    SERVICE + "SubmitFeedbackStream": Scope.INGEST,
    SERVICE + "GetFeedback": Scope.READ,
    SERVICE + "GetSession": Scope.READ,
    SERVICE + "ListFeedback": Scope.READ,
    # The application server mints tokens for the interactions it records: the same scope.
    SERVICE + "CreateFeedbackToken": Scope.INGEST,
}
SIGNAL_BY_ENUM = {i + 1: name for i, name in enumerate(SIGNAL_NAMES)}


def limits_from(settings: Settings) -> Limits:
    return Limits(
        max_text_chars=settings.max_text_chars,
        max_attributes=settings.max_attributes,
        max_future_skew=timedelta(seconds=settings.max_future_skew_seconds),
    )


def _now() -> datetime:
    return datetime.now(UTC)


def _trace_ids() -> TraceIds:
    trace_id, span_id = current_ids()
    return TraceIds(trace_id, span_id, current_traceparent())


class IngestionServicer(ingestion_pb2_grpc.IngestionServiceServicer):
    def __init__(
        self,
        db: Database,
        settings: Settings,
        taxonomy: Taxonomy,
        committer: GroupCommitter,
        on_committed: Callable[[], None] | None = None,
    ) -> None:
        self._db = db
        self._committer = committer
        self._settings = settings
        self._limits = limits_from(settings)
        self._taxonomy = taxonomy
        self._on_committed = on_committed or (lambda: None)

    def RecordInteraction(
        self, request: ingestion_pb2.RecordInteractionRequest, context: grpc.ServicerContext
    ) -> ingestion_pb2.RecordInteractionResponse:
        project = auth.current_principal().project_for(request.project)
        if not request.HasField("interaction"):
            raise InvalidArgument.single("interaction", "is required")
        data = validate_interaction(request.interaction, self._limits, _now())
        ids = _trace_ids()
        stored = repository.record_interaction(self._db, project, data, ids)
        return ingestion_pb2.RecordInteractionResponse(
            interaction_id=stored.id, created=stored.created, trace_id=ids.trace_id
        )

    def SubmitFeedback(
        self, request: ingestion_pb2.SubmitFeedbackRequest, context: grpc.ServicerContext
    ) -> ingestion_pb2.SubmitFeedbackResponse:
        project = auth.current_principal().project_for(request.project)
        if not request.HasField("feedback"):
            raise InvalidArgument.single("feedback", "is required")
        data = validate_feedback(
            request.feedback, self._limits, _now(), self._taxonomy.categories_for(project)
        )
        principal = auth.current_principal()
        check_source(principal, data)
        principal.require_feedback_target(data.interaction_id, bool(data.span_trace_id))
        data.idempotency_key = feedback_tokens.scoped_idempotency_key(principal, data.idempotency_key)
        data.span_wait_seconds = self._settings.span_link_wait_seconds
        ids = _trace_ids()
        stored = self._committer.submit(project, data, ids)
        if stored.created:
            self._on_committed()
        return ingestion_pb2.SubmitFeedbackResponse(
            feedback_id=stored.id, created=stored.created, trace_id=ids.trace_id
        )

    def SubmitFeedbackStream(
        self,
        request_iterator: Iterator[ingestion_pb2.SubmitFeedbackStreamRequest],
        context: grpc.ServicerContext,
    ) -> ingestion_pb2.SubmitFeedbackStreamResponse:
        principal = auth.current_principal()
        ids = _trace_ids()
        acks: list[ingestion_pb2.FeedbackAck] = []
        pending: list[tuple[int, str, FeedbackInput]] = []

        def flush() -> None:
            by_project: dict[str, list[tuple[int, FeedbackInput]]] = {}
            for index, project, data in pending:
                by_project.setdefault(project, []).append((index, data))
            for project, items in by_project.items():
                outcomes = repository.submit_feedback_batch(self._db, project, [(d, ids) for _, d in items])
                for (index, _), outcome in zip(items, outcomes, strict=True):
                    acks[index] = _ack(index, outcome)
            pending.clear()
            self._on_committed()

        try:
            for index, request in enumerate(request_iterator):
                acks.append(ingestion_pb2.FeedbackAck(index=index))
                try:
                    project = principal.project_for(request.project)
                    if not request.HasField("feedback"):
                        raise InvalidArgument.single("feedback", "is required")
                    data = validate_feedback(
                        request.feedback, self._limits, _now(), self._taxonomy.categories_for(project)
                    )
                    check_source(principal, data)
                    data.span_wait_seconds = self._settings.span_link_wait_seconds
                except FeedbackloopError as error:
                    acks[index] = _ack(index, error)
                    continue
                pending.append((index, project, data))
                if len(pending) >= self._settings.stream_batch_size:
                    flush()
        except UndecodableRequest as error:
            # A malformed stream is one bad request: the batch in progress is not committed, and
            # what earlier batches committed is reported, so no ack is lost and none is false.
            uncommitted_from = pending[0][0] if pending else len(acks)
            for index, _, _ in pending:
                acks[index] = _not_stored(index)
            raise StreamInterrupted(error, _stream_response(acks), uncommitted_from) from None
        if pending:
            flush()
        return _stream_response(acks)

    def GetFeedback(
        self, request: ingestion_pb2.GetFeedbackRequest, context: grpc.ServicerContext
    ) -> ingestion_pb2.GetFeedbackResponse:
        project = auth.current_principal().project_for(request.project)
        require_id("feedback_id", request.feedback_id)
        row = repository.get_feedback(self._db, project, request.feedback_id)
        response = ingestion_pb2.GetFeedbackResponse(feedback=feedback_to_proto(row))
        if row.interaction is not None:
            response.interaction.CopyFrom(interaction_to_proto(row.interaction))
        return response

    def GetSession(
        self, request: ingestion_pb2.GetSessionRequest, context: grpc.ServicerContext
    ) -> ingestion_pb2.GetSessionResponse:
        project = auth.current_principal().project_for(request.project)
        require_id("session_id", request.session_id)
        interactions, feedback = repository.get_session(self._db, project, request.session_id)
        by_interaction: dict[str, list[common_pb2.Feedback]] = {}
        session_feedback: list[common_pb2.Feedback] = []
        for row in feedback:
            target = (
                by_interaction.setdefault(row.interaction_id, []) if row.interaction_id else session_feedback
            )
            target.append(feedback_to_proto(row))
        trace_ids: list[str] = []
        for trace_id in [i.trace_id for i in interactions] + [f.trace_id for f in feedback]:
            if trace_id and trace_id not in trace_ids:
                trace_ids.append(trace_id)
        return ingestion_pb2.GetSessionResponse(
            session_id=request.session_id,
            turns=[
                ingestion_pb2.SessionTurn(
                    interaction=interaction_to_proto(i), feedback=by_interaction.get(i.id, [])
                )
                for i in interactions
            ],
            session_feedback=session_feedback,
            trace_ids=trace_ids,
        )

    def ListFeedback(
        self, request: ingestion_pb2.ListFeedbackRequest, context: grpc.ServicerContext
    ) -> ingestion_pb2.ListFeedbackResponse:
        project = auth.current_principal().project_for(request.project)
        query = feedback_query_from(request.filter)
        page_size = request.page_size or self._settings.default_page_size
        if not 0 < page_size <= self._settings.max_page_size:
            raise InvalidArgument.single(
                "page_size", f"must be between 1 and {self._settings.max_page_size} (got {request.page_size})"
            )
        rows, next_token = repository.list_feedback(
            self._db, project, query, size=page_size, token=request.page_token, digest=filter_digest(request)
        )
        return ingestion_pb2.ListFeedbackResponse(
            feedback=[feedback_to_proto(r) for r in rows], next_page_token=next_token
        )

    def CreateFeedbackToken(
        self, request: ingestion_pb2.CreateFeedbackTokenRequest, context: grpc.ServicerContext
    ) -> ingestion_pb2.CreateFeedbackTokenResponse:
        principal = auth.current_principal()
        project = principal.project_for(request.project)
        minted = feedback_tokens.mint(
            self._db, principal, project, request.interaction_id, request.ttl_seconds, _now()
        )
        return ingestion_pb2.CreateFeedbackTokenResponse(
            token=minted.token, expires_at=timestamp(minted.expires_at)
        )


def feedback_query_from(message: common_pb2.FeedbackFilter, prefix: str = "filter") -> FeedbackQuery:
    """Validate a wire filter into a store query; shared by ingestion and recall."""
    v = Violations()
    start, end = filter_bounds(v, message, prefix)
    signals = []
    for i, signal in enumerate(message.signals):
        name = SIGNAL_BY_ENUM.get(signal)
        if name is None:
            v.add(f"{prefix}.signals[{i}]", f"unknown signal {signal}")
        else:
            signals.append(name)
    sources = []
    for i, source in enumerate(message.sources):
        if source == common_pb2.FEEDBACK_SOURCE_UNSPECIFIED or source not in SOURCES:
            v.add(f"{prefix}.sources[{i}]", f"unknown source {source}")
        else:
            sources.append(SOURCES[source])
    v.raise_if_any()
    return FeedbackQuery(
        start=start,
        end=end,
        signals=tuple(signals),
        categories=tuple(message.categories),
        model_versions=tuple(message.model_versions),
        prompt_names=tuple(message.prompt_names),
        user_roles=tuple(message.user_roles),
        sources=tuple(sources),
        session_id=message.session_id,
    )


# The acks of a failed stream travel in its status details, in the trailers, which gRPC
# clients cap (8 KB soft, 16 KB hard; past that the client sees RESOURCE_EXHAUSTED and none of
# them): they are listed while they fit this many bytes, next to a message and a violation held
# to errors.py's budgets, so the trailers stay under about 7 KB; the counts cover every event.
STREAM_ACKS_BYTES = 2500


class StreamInterrupted(InvalidArgument):
    """A message on SubmitFeedbackStream did not decode; the status details carry the acks of
    the messages before it (`status_details`, packed by the error-mapping interceptor), as many
    as fit STREAM_ACKS_BYTES."""

    def __init__(
        self,
        cause: InvalidArgument,
        partial: ingestion_pb2.SubmitFeedbackStreamResponse,
        uncommitted_from: int,
    ) -> None:
        super().__init__(cause.violations)
        listed = _fitting(partial)
        if partial.acks:
            dropped = sum(1 for ack in partial.acks if ack.error.code == ABORTED)
            if len(listed.acks) == len(partial.acks):
                where = "the status details hold one ack per event"
            else:
                where = (
                    f"the status details hold the acks of the first {len(listed.acks)}; "
                    f"the batch not committed began at event {uncommitted_from}"
                )
            self.message = (
                f"{cause.message}; the events before it: {partial.accepted} stored, {dropped} not "
                f"stored (their batch was not committed), {partial.rejected - dropped} refused ({where})"
            )
        self.args = (self.message,)
        self.status_details = (listed,)


def _fitting(
    partial: ingestion_pb2.SubmitFeedbackStreamResponse,
) -> ingestion_pb2.SubmitFeedbackStreamResponse:
    """`partial` with its leading acks that fit STREAM_ACKS_BYTES, and its counts unchanged."""
    listed = ingestion_pb2.SubmitFeedbackStreamResponse(accepted=partial.accepted, rejected=partial.rejected)
    size = listed.ByteSize()
    for ack in partial.acks:
        size += ack.ByteSize() + 4  # the field's tag and length prefix
        if size > STREAM_ACKS_BYTES:
            break
        listed.acks.append(ack)
    return listed


ABORTED = grpc.StatusCode.ABORTED.name


def _not_stored(index: int) -> ingestion_pb2.FeedbackAck:
    # Short: one goes with every event of the uncommitted batch; the stream's error says why.
    return ingestion_pb2.FeedbackAck(
        index=index,
        error=ingestion_pb2.EventError(
            code=ABORTED, message="not stored: its batch was not committed; send it again"
        ),
    )


def _stream_response(acks: list[ingestion_pb2.FeedbackAck]) -> ingestion_pb2.SubmitFeedbackStreamResponse:
    accepted = sum(1 for ack in acks if ack.feedback_id)
    return ingestion_pb2.SubmitFeedbackStreamResponse(
        acks=acks, accepted=accepted, rejected=len(acks) - accepted
    )


def _ack(index: int, outcome: Stored | FeedbackloopError) -> ingestion_pb2.FeedbackAck:
    if isinstance(outcome, FeedbackloopError):
        return ingestion_pb2.FeedbackAck(
            index=index,
            error=ingestion_pb2.EventError(
                code=outcome.code.name,
                message=outcome.message,
                field_violations=[
                    ingestion_pb2.FieldViolation(field=v.field, description=v.description)
                    for v in outcome.violations
                ],
            ),
        )
    return ingestion_pb2.FeedbackAck(index=index, feedback_id=outcome.id, created=outcome.created)
