"""DatasetService: dataset items, and their export as JSONL (OpenAI chat or plain)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import grpc
from sqlalchemy import select

from feedbackloop import auth
from feedbackloop.auth import Scope
from feedbackloop.errors import InvalidArgument
from feedbackloop.ingestion.convert import timestamp
from feedbackloop.paging import SortKey, filter_digest, page
from feedbackloop.routing.sink_common import PageLimits, require_known, required
from feedbackloop.store.db import Database
from feedbackloop.store.routing_models import (
    DatasetItemRow,
)
from feedbackloop.v1 import (
    common_pb2,
    datasets_pb2,
    datasets_pb2_grpc,
)

SERVICE = "/feedbackloop.v1.DatasetService/"
EXPORT_PAGE = 500  # items read per query while streaming an export
REQUIRED_SCOPES = {
    SERVICE + "ListItems": Scope.READ,
    SERVICE + "ExportDataset": Scope.READ,
}


# --- datasets ---


def item_to_proto(row: DatasetItemRow) -> datasets_pb2.DatasetItem:
    return datasets_pb2.DatasetItem(
        id=row.id,
        dataset=row.dataset,
        input_messages=[
            common_pb2.ChatMessage(role=str(m.get("role", "")), content=str(m.get("content", "")))
            for m in row.input_messages or []
            if isinstance(m, dict)
        ],
        output=row.output,
        ideal_output=row.ideal_output,
        metadata={k: str(v) for k, v in (row.item_metadata or {}).items()},
        source_feedback_ids=list(row.source_feedback_ids or []),
        policy=row.policy,
        created_at=timestamp(row.created_at),
    )


def export_line(row: DatasetItemRow, fmt: int) -> str:
    messages = [
        {"role": str(m.get("role", "user")), "content": str(m.get("content", ""))}
        for m in row.input_messages or []
        if isinstance(m, dict)
    ]
    if fmt == datasets_pb2.EXPORT_FORMAT_PLAIN:
        body: dict[str, Any] = {
            "id": row.id,
            "input": messages,
            "output": row.output,
            "ideal_output": row.ideal_output,
            "metadata": row.item_metadata or {},
            "source_feedback_ids": row.source_feedback_ids or [],
        }
    else:
        body = {"messages": [*messages, {"role": "assistant", "content": row.ideal_output or row.output}]}
    return json.dumps(body, ensure_ascii=False, sort_keys=False)


ITEM_ORDER = (SortKey(DatasetItemRow.created_at), SortKey(DatasetItemRow.id))


class DatasetServicer(datasets_pb2_grpc.DatasetServiceServicer):
    def __init__(self, db: Database, pages: PageLimits | None = None) -> None:
        self._db = db
        self._pages = pages or PageLimits()

    def ListItems(
        self, request: datasets_pb2.ListItemsRequest, context: grpc.ServicerContext
    ) -> datasets_pb2.ListItemsResponse:
        project = auth.current_principal().project_for(request.project)
        dataset = required("dataset", request.dataset)
        rows, next_token = self._items(
            project, dataset, self._pages.size(request.page_size), request.page_token, filter_digest(request)
        )
        if not rows and not request.page_token:
            self._require_dataset(project, dataset)
        return datasets_pb2.ListItemsResponse(
            items=[item_to_proto(r) for r in rows], next_page_token=next_token
        )

    def ExportDataset(
        self, request: datasets_pb2.ExportDatasetRequest, context: grpc.ServicerContext
    ) -> Iterator[datasets_pb2.ExportDatasetResponse]:
        project = auth.current_principal().project_for(request.project)
        dataset = required("dataset", request.dataset)
        if request.format not in (
            0,
            datasets_pb2.EXPORT_FORMAT_OPENAI_CHAT,
            datasets_pb2.EXPORT_FORMAT_PLAIN,
        ):
            raise InvalidArgument.single("format", f"unknown value {request.format}")
        digest, token, first = filter_digest(request), "", True
        while True:
            rows, token = self._items(project, dataset, EXPORT_PAGE, token, digest)
            if first and not rows:
                self._require_dataset(project, dataset)
            first = False
            for row in rows:
                yield datasets_pb2.ExportDatasetResponse(
                    line=export_line(row, request.format), item_id=row.id
                )
            if not token:
                return

    def _require_dataset(self, project: str, dataset: str) -> None:
        require_known(
            self._db,
            project,
            "Dataset",
            "dataset",
            dataset,
            select(DatasetItemRow.id).where(
                DatasetItemRow.project_id == project, DatasetItemRow.dataset == dataset
            ),
        )

    def _items(
        self, project: str, dataset: str, size: int, token: str, digest: str
    ) -> tuple[list[DatasetItemRow], str]:
        """A page of a dataset's items in insertion order (the order both list and export use)."""
        with self._db.read() as session:
            return page(
                session,
                select(DatasetItemRow).where(
                    DatasetItemRow.project_id == project, DatasetItemRow.dataset == dataset
                ),
                ITEM_ORDER,
                size=size,
                token=token,
                digest=digest,
            )
