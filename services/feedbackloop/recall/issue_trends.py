"""GetTrends by TopIssues group: each lasting complaint group's complaints per bucket.

Group membership is not stored per feedback (a group is a centroid; which complaints it holds
depends on the window's data), so the grouping is TopIssues' own, run once over the complaints
of both windows, [previous_start, end): one clustering gives a group one definition in the
window and in the one before, and a complaint that stopped this window is still a group (its
window total 0). The groups are matched to the lasting ones as TopIssues matches them (so this
call, like TopIssues, stores the groups it finds), and each row is keyed by the lasting id and
named by the group's label. Complaints in no group are the group "".

Only complaints are counted, so a row's negative share is 1; the response's totals are the
filtered feedback of each window, counted once, as for every dimension. The buckets come from
the members' times, read from SQL by id; the filter applies as TopIssues applies it (in the
vector index), so it must be one TopIssues accepts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import select

from feedbackloop.ingestion.repository import FeedbackQuery
from feedbackloop.recall import clustering, issues
from feedbackloop.recall.filters import RecallFilter
from feedbackloop.recall.service import Recall
from feedbackloop.recall.trends import Counts, Group, Trends, TrendWindow, totals
from feedbackloop.store.lookups import chunks
from feedbackloop.store.models import Feedback


@dataclasses.dataclass
class _Tally:
    key: str
    label: str
    window: int
    previous: int
    buckets: list[int]


def issue_trends(
    recall: Recall,
    project_id: str,
    query: FeedbackQuery,
    recall_filter: RecallFilter,
    window: TrendWindow,
    top: int,
    *,
    counted: tuple[Counts, Counts] | None = None,
) -> Trends:
    """`counted`: the response's totals (`trends.totals` of the same query and window) when
    the caller has them already (the servicer counts them first to bound the window)."""
    negative = dataclasses.replace(recall_filter, negative_only=True)
    vectors = recall.window_vectors(project_id, negative, window.previous_start, window.end)
    named = issues.name_groups(recall, project_id, clustering.top_issues(vectors), window.end)
    members = [issue.member_ids for issue in named.found.issues]
    occurred = _occurred(
        recall, project_id, [fid for ids in members for fid in ids] + list(named.found.unclustered_ids)
    )
    rows = [
        _tally(lasting.group_id, described.label, ids, occurred, window)
        for ids, described, lasting in zip(members, named.described, named.lasting, strict=True)
    ]
    if named.found.unclustered_ids:
        rows.append(_tally("", "", named.found.unclustered_ids, occurred, window))
    rows = [row for row in rows if row.window or row.previous]
    rows.sort(key=lambda r: (-r.window, -r.previous, r.key))
    window_counts, previous_counts = counted or totals(recall.db, project_id, query, window)
    return Trends(
        groups=[
            Group(
                key=row.key,
                label=row.label,
                window=Counts(row.window, row.window),
                previous=Counts(row.previous, row.previous),
                buckets=[Counts(n, n) for n in row.buckets],
            )
            for row in rows[:top]
        ],
        window=window_counts,
        previous=previous_counts,
        groups_found=len(rows),
    )


def _occurred(recall: Recall, project_id: str, ids: Sequence[str]) -> dict[str, datetime]:
    out: dict[str, datetime] = {}
    with recall.db.read() as session:
        for chunk in chunks(list(ids)):
            for fid, at in session.execute(
                select(Feedback.id, Feedback.occurred_at).where(
                    Feedback.project_id == project_id, Feedback.id.in_(chunk)
                )
            ):
                out[fid] = at if at.tzinfo else at.replace(tzinfo=UTC)
    return out


def _tally(
    key: str, label: str, ids: Sequence[str], occurred: dict[str, datetime], window: TrendWindow
) -> _Tally:
    start_s = int(window.start.timestamp())
    bucket_s = int(window.bucket.total_seconds())
    tally = _Tally(key, label, 0, 0, [0] * window.buckets)
    for fid in ids:
        at = occurred.get(fid)  # a row Milvus knows but SQL does not (deleted): SQL is the truth
        if at is None:
            continue
        if at >= window.start:
            tally.window += 1
            # The SQL dimensions' bucket arithmetic: whole epoch seconds from the window start.
            index = (int(at.timestamp()) - start_s) // bucket_s
            if index < len(tally.buckets):  # the window's end is exclusive; guard all the same
                tally.buckets[index] += 1
        else:
            tally.previous += 1
    return tally
