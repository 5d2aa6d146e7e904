"""What the live policy set declares (prompts, datasets, categories), for the screens' choices.

The API has no "list prompts" or "list datasets" call: the applied revision is where they are
declared, so the screens read them from it. A key that may not read the revision gets an
empty catalog and the screens still work from typed names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc

from feedbackloop.console.backend import BackendError
from feedbackloop.console.schema import Category, categories_of, parse_policy_set
from feedbackloop.console.web import Page
from feedbackloop.v1 import routing_pb2


@dataclass
class Catalog:
    prompts: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    categories: list[Category] = field(default_factory=list)
    revision: int = 0


def catalog_of(canonical_json: str, revision: int = 0) -> Catalog:
    data = parse_policy_set(canonical_json)
    names: dict[str, list[str]] = {"Prompt": [], "Dataset": []}
    for resource in data.get("resources", []):
        kind = resource.get("kind")
        name = str((resource.get("metadata") or {}).get("name", ""))
        if kind in names and name and name not in names[kind]:
            names[kind].append(name)
    return Catalog(
        prompts=names["Prompt"],
        datasets=names["Dataset"],
        categories=categories_of(data),
        revision=revision,
    )


async def live_catalog(page: Page) -> Catalog:
    try:
        reply = await page.call(page.console.backend.routing.GetRevision, routing_pb2.GetRevisionRequest())
    except BackendError as error:
        if error.code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED):
            return Catalog()
        raise
    return catalog_of(reply.canonical_json, reply.revision.revision)
