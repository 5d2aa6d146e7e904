"""TopIssues over the store and the index: window vectors -> groups -> labels -> lasting ids.

The steps and where their time goes (each is a span, and `timings` collects seconds for the
benchmark): `fetch` reads the window's and the previous window's vectors from Milvus,
`cluster` groups them (recall.clustering), `label` reads the clustered members' words from SQL
and names each group (recall.topics), `persist` matches the groups to the stored ones
(recall.groups), `hydrate` reads the representatives and the members' categories.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from feedbackloop.ingestion.convert import feedback_to_proto, timestamp
from feedbackloop.recall import clustering, groups, topics
from feedbackloop.recall.filters import RecallFilter
from feedbackloop.recall.service import Recall
from feedbackloop.recall.text import feedback_text
from feedbackloop.store.lookups import categories_by_ids, chunks, feedback_by_ids
from feedbackloop.telemetry import tracer
from feedbackloop.v1 import recall_pb2

UNCLUSTERED_EXAMPLES = 5


@dataclass(frozen=True)
class Window:
    project_id: str
    negative: RecallFilter
    start: datetime
    end: datetime
    previous_start: datetime


@contextmanager
def _step(name: str, timings: dict[str, float] | None, **attributes: int) -> Iterator[None]:
    started = time.perf_counter()
    with tracer().start_as_current_span(f"recall.top_issues.{name}", attributes=attributes):
        yield
    if timings is not None:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - started


@dataclass(frozen=True)
class Named:
    """A window's groups (largest first), each with its description and its lasting identity."""

    found: clustering.TopIssues
    described: list[groups.Found]
    lasting: list[groups.Lasting]


def name_groups(
    recall: Recall,
    project: str,
    found: clustering.TopIssues,
    window_end: datetime,
    timings: dict[str, float] | None = None,
) -> Named:
    """Label every group of `found` from its members' words and give it its lasting id."""
    with _step("label", timings):
        words: dict[str, str] = {}
        occurred: dict[str, datetime] = {}
        sampled = [m for issue in found.issues for m in issue.sample_member_ids]
        with recall.db.read() as session:
            for chunk in chunks(sampled):
                for fid, row in feedback_by_ids(session, project, chunk).items():
                    words[fid] = topics.words_of(row)
                    occurred[fid] = row.occurred_at
        terms = topics.keywords([[words.get(m, "") for m in i.sample_member_ids] for i in found.issues])
    with _step("persist", timings):
        # Every group found is remembered, not only those reported: a group that is eleventh
        # this week and third next week must keep one id and first-seen time.
        described = [
            groups.Found(
                centroid=issue.centroid,
                label=topics.label(kw),
                keywords=tuple(kw),
                earliest=min(
                    (occurred[m] for m in issue.sample_member_ids if m in occurred), default=window_end
                ),
                size=issue.size,
            )
            for issue, kw in zip(found.issues, terms, strict=True)
        ]
        with recall.db.write() as session:
            lasting = groups.remember(session, project, described, window_end)
    return Named(found, described, lasting)


def top_issues(
    recall: Recall,
    window: Window,
    *,
    min_similarity: float,
    min_size: int,
    max_issues: int,
    timings: dict[str, float] | None = None,
) -> recall_pb2.TopIssuesResponse:
    project = window.project_id
    with _step("fetch", timings):
        current = recall.window_vectors(project, window.negative, window.start, window.end)
        previous = recall.window_vectors(project, window.negative, window.previous_start, window.start)
    with _step("cluster", timings, **{"recall.window_size": len(current)}):
        found = clustering.top_issues(current, previous, min_similarity=min_similarity)
    named = name_groups(recall, project, found, window.end, timings)
    described, lasting = named.described, named.lasting
    reported = [
        (issue, d, kept)
        for issue, d, kept in zip(found.issues, described, lasting, strict=True)
        if issue.size >= min_size
    ][:max_issues]
    with _step("hydrate", timings), recall.db.read() as session:
        representatives = feedback_by_ids(session, project, [i.representative_id for i, _, _ in reported])
        member_categories = categories_by_ids(
            session, project, [m for i, _, _ in reported for m in i.member_ids]
        )
    response = recall_pb2.TopIssuesResponse(
        total_negative=len(current),
        previous_total_negative=len(previous),
        unclustered=len(found.unclustered_ids),
        unclustered_examples=found.unclustered_ids[:UNCLUSTERED_EXAMPLES],
        groups_found=found.groups_found,
        clustered_sample=found.sample_size,
    )
    for issue, described_group, kept in reported:
        categories = Counter(c for member in issue.member_ids for c in member_categories.get(member, ()))
        item = response.issues.add(
            size=issue.size,
            member_ids=issue.member_ids,
            previous_size=issue.previous_count,
            growth=issue.growth,
            top_categories=[name for name, _ in categories.most_common()],
            group_id=kept.group_id,
            label=described_group.label,
            keywords=described_group.keywords,
            new_in_window=kept.first_seen_at >= window.start and issue.previous_count == 0,
        )
        item.first_seen.CopyFrom(timestamp(kept.first_seen_at))
        representative = representatives.get(issue.representative_id)
        if representative is not None:
            item.representative.CopyFrom(feedback_to_proto(representative))
            item.representative_text = feedback_text(representative, representative.interaction)
    return response
