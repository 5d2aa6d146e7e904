"""RecallService over gRPC: request validation and wire conversion around `Recall`."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import grpc
from google.protobuf import duration_pb2
from google.protobuf.message import Message

from feedbackloop import auth, fields
from feedbackloop.auth import Scope
from feedbackloop.deployment import require_deployment_admin
from feedbackloop.errors import InvalidArgument, Violations
from feedbackloop.ingestion.convert import feedback_to_proto, interaction_to_proto
from feedbackloop.ingestion.servicer import feedback_query_from
from feedbackloop.recall import issue_trends, issues, limits, trends
from feedbackloop.recall.filters import FilterError, RecallFilter
from feedbackloop.recall.service import MAX_TOP_K, MODE_BOTH, MODE_FEEDBACK, MODE_QUESTION, Recall
from feedbackloop.v1 import common_pb2, recall_pb2, recall_pb2_grpc

SERVICE = "/feedbackloop.v1.RecallService/"
REQUIRED_SCOPES = {
    SERVICE + "SearchSimilar": Scope.READ,
    SERVICE + "TopIssues": Scope.READ,
    SERVICE + "Reindex": Scope.ADMIN,
    SERVICE + "GetTrends": Scope.READ,
}
DEFAULT_TOP_K = 10
# None: the service picks (the feedback field for a text, by the feedback's words for an id).
SEARCH_MODES: dict[recall_pb2.SearchMode, str | None] = {
    recall_pb2.SEARCH_MODE_UNSPECIFIED: None,
    recall_pb2.SEARCH_MODE_FEEDBACK: MODE_FEEDBACK,
    recall_pb2.SEARCH_MODE_QUESTION: MODE_QUESTION,
    recall_pb2.SEARCH_MODE_BOTH: MODE_BOTH,
}
MODE_TO_PROTO = {mode: number for number, mode in SEARCH_MODES.items() if mode is not None}
DEFAULT_MIN_SIZE = 2
DEFAULT_MAX_ISSUES = 10
MAX_ISSUES = 100
DEFAULT_BUCKET = timedelta(days=1)
MAX_BUCKETS = 366
DEFAULT_TREND_GROUPS = 10
MAX_TREND_GROUPS = 100
TREND_DIMENSIONS = {
    recall_pb2.TREND_DIMENSION_CATEGORY: trends.Dimension.CATEGORY,
    recall_pb2.TREND_DIMENSION_PROMPT_VERSION: trends.Dimension.PROMPT_VERSION,
    recall_pb2.TREND_DIMENSION_MODEL_VERSION: trends.Dimension.MODEL_VERSION,
    recall_pb2.TREND_DIMENSION_SIGNAL: trends.Dimension.SIGNAL,
    recall_pb2.TREND_DIMENSION_ISSUE: trends.Dimension.ISSUE,
}


def recall_filter_from(message: common_pb2.FeedbackFilter, prefix: str = "filter") -> RecallFilter:
    """Validate a wire filter and turn it into a Milvus metadata filter."""
    _refuse_unknown_fields(message, prefix)
    if message.session_id:
        raise InvalidArgument.single(
            f"{prefix}.session_id", "is not indexed for recall; filter sessions with ListFeedback"
        )
    query = feedback_query_from(message, prefix)
    recall_filter = RecallFilter(
        signals=query.signals,
        categories=query.categories,
        model_versions=query.model_versions,
        prompt_names=query.prompt_names,
        user_roles=query.user_roles,
        sources=query.sources,
        occurred_after=query.start,
        occurred_before=query.end,
    )
    try:  # a value the Milvus expression cannot carry (a control character) is the caller's error
        recall_filter.clauses()
    except FilterError as error:
        raise InvalidArgument.single(prefix, str(error)) from None
    return recall_filter


def _refuse_unknown_fields(message: Message, path: str) -> None:
    """A filter field this server does not know would otherwise be dropped silently, widening the
    search; a client built against a newer API gets a clear error instead."""
    from google.protobuf.unknown_fields import UnknownFieldSet

    unknown = UnknownFieldSet(message)
    if len(unknown):
        numbers = ", ".join(str(unknown[i].field_number) for i in range(len(unknown)))
        raise InvalidArgument.single(
            path, f"unknown filter field number(s) {numbers}; this server does not support them"
        )
    for descriptor, value in message.ListFields():
        if descriptor.message_type is not None and not descriptor.is_repeated:
            _refuse_unknown_fields(value, f"{path}.{descriptor.name}")


class RecallServicer(recall_pb2_grpc.RecallServiceServicer):
    def __init__(self, recall: Recall) -> None:
        self._recall = recall
        settings = recall.settings
        # One per server process (its gate counts the calls), shared by every call that clusters.
        self._clustering = limits.ClusteringLimits(
            settings.recall_clustering_max_feedback,
            limits.ClusteringGate(
                settings.recall_clustering_concurrency, settings.recall_clustering_wait_seconds
            ),
        )

    def SearchSimilar(
        self, request: recall_pb2.SearchSimilarRequest, context: grpc.ServicerContext
    ) -> recall_pb2.SearchSimilarResponse:
        project = auth.current_principal().project_for(request.project)
        v = Violations()
        top_k = request.top_k or DEFAULT_TOP_K
        if not 1 <= top_k <= MAX_TOP_K:
            v.add("top_k", f"must be between 1 and {MAX_TOP_K} (got {request.top_k})")
        if not -1.0 <= request.min_score <= 1.0:
            v.add("min_score", f"must be between -1 and 1 (got {request.min_score})")
        which = request.WhichOneof("query")
        if which is None:
            v.add("query", "set either text or feedback_id")
        elif which == "text" and not request.text.strip():
            v.add("text", "must not be empty")
        elif which == "feedback_id":
            fields.identifier(v, "feedback_id", request.feedback_id, required=True)
        if request.mode not in SEARCH_MODES:
            v.add("mode", f"unknown value {request.mode}; one of {', '.join(recall_pb2.SearchMode.keys())}")
        v.raise_if_any()
        recall_filter = recall_filter_from(request.filter)
        found = self._recall.similar(
            project,
            text=request.text if which == "text" else None,
            feedback_id=request.feedback_id if which == "feedback_id" else None,
            mode=SEARCH_MODES[request.mode],
            top_k=top_k,
            min_score=request.min_score or None,
            recall_filter=recall_filter,
        )
        response = recall_pb2.SearchSimilarResponse(
            query_text=found.query_text, mode=MODE_TO_PROTO[found.mode]
        )
        for hit in found.hits:
            item = response.hits.add(score=hit.score, feedback=feedback_to_proto(hit.feedback))
            if hit.field_scores is not None:
                item.feedback_score = hit.field_scores[MODE_FEEDBACK]
                item.question_score = hit.field_scores[MODE_QUESTION]
            if hit.feedback.interaction is not None:
                item.interaction.CopyFrom(interaction_to_proto(hit.feedback.interaction))
        return response

    def TopIssues(
        self, request: recall_pb2.TopIssuesRequest, context: grpc.ServicerContext
    ) -> recall_pb2.TopIssuesResponse:
        project = auth.current_principal().project_for(request.project)
        v = Violations()
        window = request.time_range
        start = end = None
        if not (request.HasField("time_range") and window.HasField("start") and window.HasField("end")):
            v.add("time_range", "start and end are both required")
        else:
            start = fields.timestamp(v, "time_range.start", window.start)
            end = fields.timestamp(v, "time_range.end", window.end)
            if start is not None and end is not None and end <= start:
                v.add("time_range", "end must be after start")
        min_similarity = request.min_similarity  # 0: each group's bound comes from the data
        if not 0.0 <= min_similarity <= 1.0:
            v.add("min_similarity", f"must be between 0 and 1 (got {request.min_similarity})")
        min_size = request.min_size or DEFAULT_MIN_SIZE
        if min_size < 1:
            v.add("min_size", f"must be at least 1 (got {request.min_size})")
        max_issues = request.max_issues or DEFAULT_MAX_ISSUES
        if not 1 <= max_issues <= MAX_ISSUES:
            v.add("max_issues", f"must be between 1 and {MAX_ISSUES} (got {request.max_issues})")
        v.raise_if_any()
        if request.filter.HasField("time_range"):
            raise InvalidArgument.single("filter.time_range", "use the request's time_range for TopIssues")
        base = recall_filter_from(request.filter)
        negative = dataclasses.replace(base, negative_only=True)
        assert start is not None and end is not None
        previous_start = fields.previous_window("time_range", start, end)
        complaints = self._clustering.complaints_in_store(
            self._recall.db,
            project,
            feedback_query_from(request.filter),
            trends.TrendWindow(start, end, end - start, previous_start),
        )
        with self._clustering.admit("time_range", complaints, context.time_remaining()):
            return issues.top_issues(
                self._recall,
                issues.Window(project, negative, start, end, previous_start),
                min_similarity=min_similarity,
                min_size=min_size,
                max_issues=max_issues,
            )

    def GetTrends(
        self, request: recall_pb2.GetTrendsRequest, context: grpc.ServicerContext
    ) -> recall_pb2.GetTrendsResponse:
        project = auth.current_principal().project_for(request.project)
        v = Violations()
        window = _whole_seconds(v, "window", request.window) if request.HasField("window") else None
        if not request.HasField("window"):
            v.add("window", "is required (e.g. 14 days)")
        bucket = _whole_seconds(v, "bucket", request.bucket) if request.HasField("bucket") else None
        end = datetime.now(UTC)
        if request.HasField("end"):
            end = fields.timestamp(v, "end", request.end) or end
        end = end.replace(microsecond=0)
        if window is not None:
            bucket = bucket or min(DEFAULT_BUCKET, window)
            if bucket > window:
                v.add(
                    "bucket",
                    f"is longer than the window ({int(bucket.total_seconds())}s > {int(window.total_seconds())}s)",
                )
            elif -(-window // bucket) > MAX_BUCKETS:
                v.add(
                    "bucket",
                    f"gives {-(-window // bucket)} buckets over the window; at most {MAX_BUCKETS}, use a longer bucket",
                )
            if end - fields.EARLIEST < window:
                v.add(
                    "window", f"would start before {fields.EARLIEST.date().isoformat()}; use a shorter window"
                )
        if request.group_by == recall_pb2.TREND_DIMENSION_UNSPECIFIED:
            v.add("group_by", f"is required; one of {', '.join(_dimension_names())}")
        elif request.group_by not in TREND_DIMENSIONS:
            v.add("group_by", f"unknown value {request.group_by}; one of {', '.join(_dimension_names())}")
        top = request.top or DEFAULT_TREND_GROUPS
        if not 1 <= top <= MAX_TREND_GROUPS:
            v.add("top", f"must be between 1 and {MAX_TREND_GROUPS} (got {request.top})")
        v.raise_if_any()
        if request.filter.HasField("time_range"):
            raise InvalidArgument.single(
                "filter.time_range", "use the request's window and end for GetTrends"
            )
        _refuse_unknown_fields(request.filter, "filter")
        query = feedback_query_from(request.filter)
        assert window is not None and bucket is not None
        start = end - window
        span = trends.TrendWindow(start, end, bucket, fields.previous_window("window", start, end))
        dimension = TREND_DIMENSIONS[request.group_by]
        if dimension is trends.Dimension.ISSUE:
            # Grouped as TopIssues groups, in the vector index: its filter rules apply.
            base = recall_filter_from(request.filter)
            # The response's totals, counted first: they bound the windows before any is read.
            counted = trends.totals(self._recall.db, project, query, span)
            complaints = (counted[0].negative, counted[1].negative)
            with self._clustering.admit("window", complaints, context.time_remaining()):
                found = issue_trends.issue_trends(
                    self._recall, project, query, base, span, top, counted=counted
                )
        else:
            found = trends.trends(self._recall.db, project, query, span, dimension, top)
        return _trends_to_proto(found, span)

    def Reindex(
        self, request: recall_pb2.ReindexRequest, context: grpc.ServicerContext
    ) -> Iterator[recall_pb2.ReindexResponse]:
        principal = auth.current_principal()
        if request.all_projects:
            if request.project:
                raise InvalidArgument.single(
                    "project", "must be empty with all_projects (it covers every project)"
                )
            require_deployment_admin(principal, self._recall.settings.default_project, "all_projects")
            for project, done, total in self._recall.reindex_all():
                yield recall_pb2.ReindexResponse(done=done, total=total, project=project)
            return
        project = principal.project_for(request.project)
        for done, total in self._recall.reindex(project):
            yield recall_pb2.ReindexResponse(done=done, total=total, project=project)


def _whole_seconds(v: Violations, path: str, message: duration_pb2.Duration) -> timedelta | None:
    """A positive Duration of whole seconds: buckets are integer epoch arithmetic in SQL."""
    length = fields.duration(v, path, message)
    if length is None:
        return None
    if message.nanos:
        v.add(path, f"must be whole seconds (got nanos={message.nanos})")
        return None
    if message.seconds <= 0:
        v.add(path, f"must be positive (got {message.seconds}s)")
        return None
    return length


def _dimension_names() -> list[str]:
    return [recall_pb2.TrendDimension.Name(number) for number in TREND_DIMENSIONS]


def _counts(message: recall_pb2.TrendBucket | recall_pb2.TrendGroup, counts: trends.Counts) -> None:
    message.total = counts.total
    message.negative = counts.negative
    message.negative_share = counts.share


def _trends_to_proto(found: trends.Trends, span: trends.TrendWindow) -> recall_pb2.GetTrendsResponse:
    response = recall_pb2.GetTrendsResponse(
        total=found.window.total,
        negative=found.window.negative,
        previous_total=found.previous.total,
        previous_negative=found.previous.negative,
        groups_found=found.groups_found,
    )
    response.window.start.FromDatetime(span.start)
    response.window.end.FromDatetime(span.end)
    response.bucket.FromTimedelta(span.bucket)
    for group in found.groups:
        item = response.groups.add(
            key=group.key,
            label=group.label,
            previous_total=group.previous.total,
            previous_negative=group.previous.negative,
            previous_negative_share=group.previous.share,
            total_change=(group.window.total - group.previous.total) / max(group.previous.total, 1),
            negative_share_change=group.window.share - group.previous.share,
        )
        _counts(item, group.window)
        for i, counts in enumerate(group.buckets):
            bucket = item.buckets.add()
            bucket.start.FromDatetime(span.start + i * span.bucket)
            _counts(bucket, counts)
    return response
