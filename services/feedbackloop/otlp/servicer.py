"""OpenTelemetry's TraceService/Export: LLM spans become interactions, evaluation events
become evaluator feedback, everything else is counted and dropped.

A batch is checked span by span. A span that cannot be taken in (no trace id, an attribute
bomb, a value past the limits, malformed message JSON) is refused alone: it is counted in
`partial_success.rejected_spans`, named with its reason in `partial_success.error_message`, and
changes nothing, while the batch's good spans are stored. What was accepted but not kept whole
(spans that are not LLM calls, free attributes past the limits, evaluation events from a key
without the `evaluate` scope) is said in `error_message` with `rejected_spans` 0, OTLP's form
for a warning. Bytes that are not an ExportTraceServiceRequest are INVALID_ARGUMENT before any
of this (`decoding.py`).

Spans go to the project of the API key, which needs the `ingest` scope; OTLP requests name no
project.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from feedbackloop import auth
from feedbackloop.auth import Scope
from feedbackloop.config import Settings
from feedbackloop.errors import FeedbackloopError, quote
from feedbackloop.ingestion import repository
from feedbackloop.ingestion.repository import TraceIds
from feedbackloop.ingestion.servicer import limits_from
from feedbackloop.ingestion.taxonomy import Taxonomy
from feedbackloop.ingestion.validation import FeedbackInput
from feedbackloop.metrics.instruments import Metrics
from feedbackloop.otlp import mapping
from feedbackloop.otlp.attributes import attribute_map
from feedbackloop.otlp.evaluations import evaluation_feedback
from feedbackloop.otlp.mapping import Evaluation, MappedSpan, SpanRefused
from feedbackloop.otlp.repository import find_responses, store_spans
from feedbackloop.store.db import Database
from feedbackloop.telemetry import current_ids, current_traceparent

log = logging.getLogger(__name__)

SERVICE_NAME = "opentelemetry.proto.collector.trace.v1.TraceService"
REQUIRED_SCOPES = {f"/{SERVICE_NAME}/Export": Scope.INGEST}
# error_message lists this many refused spans, then counts the rest; each reason is cut to
# REASON_CHARS, so the answer stays small however bad the batch.
LISTED_REFUSALS = 10
REASON_CHARS = 400
# Why a span was not stored, as the `reason` of feedbackloop_otlp_spans_dropped_total.
NOT_LLM, REFUSED = "not_llm", "refused"


@dataclass(frozen=True)
class _NamedEvaluation:
    """An evaluation event that names the completion it judges by `gen_ai.response.id`."""

    response_id: str
    event: Evaluation
    trace_id: str
    span_id: str


@dataclass
class _Batch:
    total: int = 0
    refused: list[str] = field(default_factory=list)
    not_llm: int = 0
    dropped_attributes: int = 0
    evaluations_unauthorized: int = 0
    warnings: list[str] = field(default_factory=list)
    spans: list[MappedSpan] = field(default_factory=list)
    evaluations: list[FeedbackInput] = field(default_factory=list)
    by_response: list[_NamedEvaluation] = field(default_factory=list)

    def response(self) -> trace_service_pb2.ExportTraceServiceResponse:
        parts = []
        if self.refused:
            listed = "; ".join(_cut(r) for r in self.refused[:LISTED_REFUSALS])
            more = len(self.refused) - LISTED_REFUSALS
            parts.append(
                f"{len(self.refused)} of {self.total} spans refused, nothing of them stored: {listed}"
                + (f"; and {more} more" if more > 0 else "")
            )
        if self.not_llm:
            parts.append(f"{self.not_llm} spans are not LLM calls and were dropped")
        if self.dropped_attributes:
            parts.append(
                f"{self.dropped_attributes} free attributes of stored spans were dropped (past the limits on "
                "count, key length or value length)"
            )
        if self.evaluations_unauthorized:
            parts.append(
                f"{self.evaluations_unauthorized} gen_ai.evaluation.result events were dropped: "
                f"evaluator feedback needs an API key with the '{Scope.EVALUATE}' scope"
            )
        parts.extend(_cut(w) for w in self.warnings[:LISTED_REFUSALS])
        if not parts:
            return trace_service_pb2.ExportTraceServiceResponse()
        return trace_service_pb2.ExportTraceServiceResponse(
            partial_success=trace_service_pb2.ExportTracePartialSuccess(
                rejected_spans=len(self.refused), error_message=". ".join(parts)
            )
        )


def _cut(text: str) -> str:
    return text if len(text) <= REASON_CHARS else f"{text[:REASON_CHARS]}… ({len(text)} characters)"


class TraceServicer(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(
        self,
        db: Database,
        settings: Settings,
        taxonomy: Taxonomy,
        on_committed: Callable[[], None] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._db = db
        self._settings = settings
        self._limits = limits_from(settings)
        self._taxonomy = taxonomy
        self._on_committed = on_committed or (lambda: None)
        self._metrics = metrics

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        principal = auth.current_principal()
        project = principal.project_id
        batch = self._read(request, principal, project)
        created = False
        if batch.spans:
            stored = store_spans(self._db, project, batch.spans)
            created = bool(stored.created or stored.linked_feedback)
        if batch.evaluations:
            created = self._submit_evaluations(project, batch) or created
        if created:
            self._on_committed()
        if self._metrics is not None:
            self._metrics.otlp_dropped(project, NOT_LLM, batch.not_llm)
            self._metrics.otlp_dropped(project, REFUSED, len(batch.refused))
        log.debug(
            "OTLP export to %s: %d spans, %d interactions, %d refused, %d not LLM calls",
            project,
            batch.total,
            len(batch.spans),
            len(batch.refused),
            batch.not_llm,
        )
        return batch.response()

    def _read(
        self, request: trace_service_pb2.ExportTraceServiceRequest, principal: auth.Principal, project: str
    ) -> _Batch:
        batch = _Batch()
        now = datetime.now(UTC)
        may_evaluate = principal.allows(Scope.EVALUATE)
        categories = self._taxonomy.categories_for(project)
        not_llm: set[tuple[str, str]] = set()
        pending: list[tuple[tuple[str, str], FeedbackInput]] = []  # (target span, feedback)
        for r, resource_spans in enumerate(request.resource_spans):
            service = next(
                (
                    kv.value.string_value
                    for kv in resource_spans.resource.attributes
                    if kv.key == "service.name"
                ),
                "",
            )
            resource = {"service.name": service} if service else {}
            for s, scope_spans in enumerate(resource_spans.scope_spans):
                for k, span in enumerate(scope_spans.spans):
                    batch.total += 1
                    try:
                        self._read_span(
                            span, resource, now, may_evaluate, categories, batch, pending, not_llm
                        )
                    except SpanRefused as refusal:
                        path = f"resource_spans[{r}].scope_spans[{s}].spans[{k}]"
                        batch.refused.append(f"{mapping.describe_span(span, path)}: {refusal}")
        for target, feedback in pending:
            if target in not_llm:
                batch.warnings.append(
                    f"a gen_ai.evaluation.result event on a child of span {target[1]} was dropped: "
                    "that span is not an LLM call"
                )
            else:
                batch.evaluations.append(feedback)
        if batch.by_response:
            self._resolve_responses(project, batch, now, categories)
        return batch

    def _resolve_responses(
        self, project: str, batch: _Batch, now: datetime, categories: frozenset[str]
    ) -> None:
        """Evaluations naming a response id go to the interaction of that response: one stored
        before, else an LLM span of this batch."""
        wanted = {named.response_id for named in batch.by_response}
        targets = {s.response_id: (s.trace_id, s.span_id) for s in reversed(batch.spans) if s.response_id}
        targets.update(find_responses(self._db, project, sorted(wanted)))
        for named in batch.by_response:
            target = targets.get(named.response_id)
            if target is None:
                batch.warnings.append(
                    f"a gen_ai.evaluation.result event on span {named.span_id} was dropped: no LLM span "
                    f"with gen_ai.response.id '{quote(named.response_id)}' has been received"
                )
                continue
            batch.evaluations.append(
                evaluation_feedback(
                    named.event,
                    trace_id=named.trace_id,
                    event_span_id=named.span_id,
                    target_trace_id=target[0],
                    target_span_id=target[1],
                    limits=self._limits,
                    now=now,
                    categories=categories,
                )
            )

    def _read_span(
        self,
        span: trace_pb2.Span,
        resource: dict[str, str],
        now: datetime,
        may_evaluate: bool,
        categories: frozenset[str],
        batch: _Batch,
        pending: list[tuple[tuple[str, str], FeedbackInput]],
        not_llm: set[tuple[str, str]],
    ) -> None:
        mapping.check_size(span)
        attributes = attribute_map(span.attributes)
        kind = mapping.convention(attributes)
        if kind is None:
            events = mapping.evaluations(span)
            trace_id, span_id, parent = mapping.span_ids(span) if events else ("", "", "")
            placed: list[tuple[tuple[str, str], FeedbackInput]] = []
            named: list[_NamedEvaluation] = []
            unplaced = 0
            for event in events if may_evaluate else ():
                # The rule an LLM span's id is kept by: an id no span can be stored under (blank,
                # too long, control characters) names nothing, so the parent places the event.
                response = mapping.response_id(event.attributes)
                if not response and not parent:
                    unplaced += 1
                    continue
                # Checked now, so a malformed event refuses its span before anything counts.
                feedback = evaluation_feedback(
                    event,
                    trace_id=trace_id,
                    event_span_id=span_id,
                    target_span_id=parent or span_id,
                    limits=self._limits,
                    now=now,
                    categories=categories,
                )
                if response:
                    # An evaluation naming the completion it judges (an offline judge, or one
                    # that cannot parent its event to the call's span).
                    named.append(_NamedEvaluation(response, event, trace_id, span_id))
                else:
                    # An evaluation under an LLM span (a judge's own span, a child of the call).
                    placed.append(((trace_id, parent), feedback))
            batch.not_llm += 1
            not_llm.add((span.trace_id.hex(), span.span_id.hex()))
            if events and not may_evaluate:
                batch.evaluations_unauthorized += len(events)
            pending.extend(placed)
            batch.by_response.extend(named)
            if unplaced:
                batch.warnings.append(
                    f"{unplaced} gen_ai.evaluation.result events on span {span_id}, which is neither an LLM "
                    "call nor under one and names no gen_ai.response.id, were dropped"
                )
            return
        mapped = mapping.map_span(span, kind, attributes, resource, self._limits, now)
        feedback_list = []
        if mapped.evaluations and not may_evaluate:
            batch.evaluations_unauthorized += len(mapped.evaluations)
        elif mapped.evaluations:
            feedback_list = [
                evaluation_feedback(
                    event,
                    trace_id=mapped.trace_id,
                    event_span_id=mapped.span_id,
                    target_span_id=mapped.span_id,
                    limits=self._limits,
                    now=now,
                    categories=categories,
                )
                for event in mapped.evaluations
            ]
        # Only now, with the whole span accepted, does any of it count.
        batch.spans.append(mapped)
        batch.dropped_attributes += mapped.dropped_attributes
        batch.evaluations.extend(feedback_list)

    def _submit_evaluations(self, project: str, batch: _Batch) -> bool:
        trace_id, span_id = current_ids()
        ids = TraceIds(trace_id, span_id, current_traceparent())
        for feedback in batch.evaluations:
            feedback.span_wait_seconds = self._settings.span_link_wait_seconds
        outcomes = repository.submit_feedback_batch(self._db, project, [(f, ids) for f in batch.evaluations])
        created = False
        for feedback, outcome in zip(batch.evaluations, outcomes, strict=True):
            if isinstance(outcome, FeedbackloopError):
                batch.warnings.append(
                    f"the evaluation {feedback.idempotency_key} was not stored: {outcome.message}"
                )
            else:
                created = created or outcome.created
        return created
