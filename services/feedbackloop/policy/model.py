"""Typed, immutable policy resources and the PolicySet that holds one revision.

Resources are built only from schema-valid documents (validate.py checks first), so the
constructors here fill defaults and convert types but do not re-validate. The canonical form
is the list of documents with every default filled in: a stored revision rebuilds the exact
same set, and two files that differ only by an omitted default hash the same.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from feedbackloop.policy.durations import parse_positive_duration
from feedbackloop.policy.schema import API_VERSION, KINDS

CANONICAL_FORMAT = 1


@dataclass(frozen=True)
class Category:
    name: str
    description: str = ""


@dataclass(frozen=True)
class FeedbackSchema:
    kind: ClassVar[str] = "FeedbackSchema"
    name: str
    # Signal name -> categories, in the order written (the order is what a UI shows).
    signals: tuple[tuple[str, tuple[Category, ...]], ...]
    required: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    source: str = field(default="", compare=False)

    def spec(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "signals": {
                signal: {
                    "categories": [
                        {"name": c.name, **({"description": c.description} if c.description else {})}
                        for c in cats
                    ]
                }
                for signal, cats in self.signals
            }
        }
        if self.required:
            out["required"] = list(self.required)
        return out


def allowed_categories(schema: FeedbackSchema | None) -> set[str]:
    """Every category name any signal allows; ingestion rejects categories outside it.

    With no FeedbackSchema applied, the set is empty: the caller decides whether that means
    "no categories allowed" or "no validation" (the schema is optional in a policy set).
    """
    if schema is None:
        return set()
    return {c.name for _, cats in schema.signals for c in cats}


# A `{{name}}` placeholder in a Prompt or patch template.
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


@dataclass(frozen=True)
class Prompt:
    kind: ClassVar[str] = "Prompt"
    name: str
    template: str
    variables: tuple[str, ...]
    description: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    source: str = field(default="", compare=False)

    def spec(self) -> dict[str, Any]:
        return {"template": self.template, "variables": list(self.variables), "description": self.description}


@dataclass(frozen=True)
class Dataset:
    kind: ClassVar[str] = "Dataset"
    name: str
    formats: tuple[str, ...]
    dedup_similarity: float = 0.95
    description: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    source: str = field(default="", compare=False)

    def spec(self) -> dict[str, Any]:
        return {
            "formats": list(self.formats),
            "dedup_similarity": self.dedup_similarity,
            "description": self.description,
        }


@dataclass(frozen=True)
class ReviewQueue:
    kind: ClassVar[str] = "ReviewQueue"
    name: str
    sla: str
    lease: str = "15m"
    reviews_required: int = 1
    labels: tuple[tuple[str, str], ...] = ()
    source: str = field(default="", compare=False)

    @property
    def sla_seconds(self) -> float:
        return parse_positive_duration(self.sla)

    @property
    def lease_seconds(self) -> float:
        return parse_positive_duration(self.lease)

    def spec(self) -> dict[str, Any]:
        return {"sla": self.sla, "lease": self.lease, "reviews_required": self.reviews_required}


@dataclass(frozen=True)
class PromptPatch:
    type: ClassVar[str] = "prompt_patch"
    prompt: str
    strategy: str  # append_guideline | add_example | generator
    template: str = ""
    generator_target: str = ""  # host:port, only for strategy generator
    approval: str = "required"  # required | auto

    @property
    def target(self) -> str:
        """The resource the action acts on."""
        return self.prompt

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"prompt": self.prompt, "strategy": self.strategy}
        if self.template:
            body["template"] = self.template
        if self.generator_target:
            body["generator"] = {"target": self.generator_target}
        body["approval"] = self.approval
        return {self.type: body}


@dataclass(frozen=True)
class DatasetAdd:
    type: ClassVar[str] = "dataset_add"
    dataset: str

    @property
    def target(self) -> str:
        """The resource the action acts on."""
        return self.dataset

    def to_dict(self) -> dict[str, Any]:
        return {self.type: {"dataset": self.dataset}}


@dataclass(frozen=True)
class HumanReview:
    type: ClassVar[str] = "human_review"
    queue: str
    priority: int = 50
    due: str = ""

    @property
    def target(self) -> str:
        """The resource the action acts on."""
        return self.queue

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"queue": self.queue, "priority": self.priority}
        if self.due:
            body["due"] = self.due
        return {self.type: body}


Action = PromptPatch | DatasetAdd | HumanReview


@dataclass(frozen=True)
class Aggregate:
    min_count: int
    window: str
    min_similarity: float = 0.8
    group_by: tuple[str, ...] = ()

    @property
    def window_seconds(self) -> float:
        return parse_positive_duration(self.window)

    def to_dict(self) -> dict[str, Any]:
        return {
            "min_count": self.min_count,
            "window": self.window,
            "min_similarity": self.min_similarity,
            "group_by": list(self.group_by),
        }


@dataclass(frozen=True)
class RoutingPolicy:
    kind: ClassVar[str] = "RoutingPolicy"
    name: str
    when: str
    actions: tuple[Action, ...]
    aggregate: Aggregate | None = None
    sample: float = 1.0
    cooldown: str = ""
    priority: int = 0
    continue_: bool = False  # `continue` in YAML; a Python keyword
    labels: tuple[tuple[str, str], ...] = ()
    source: str = field(default="", compare=False)

    @property
    def cooldown_seconds(self) -> float:
        return parse_positive_duration(self.cooldown) if self.cooldown else 0.0

    def spec(self) -> dict[str, Any]:
        out: dict[str, Any] = {"when": self.when}
        if self.aggregate is not None:
            out["aggregate"] = self.aggregate.to_dict()
        out["actions"] = [a.to_dict() for a in self.actions]
        out["sample"] = self.sample
        if self.cooldown:
            out["cooldown"] = self.cooldown
        out["priority"] = self.priority
        out["continue"] = self.continue_
        return out


Resource = FeedbackSchema | Prompt | Dataset | ReviewQueue | RoutingPolicy
_KIND_ORDER = {k: i for i, k in enumerate(KINDS)}


def _action_from(data: Mapping[str, Any]) -> Action:
    ((key, body),) = data.items()
    if key == "prompt_patch":
        return PromptPatch(
            prompt=body["prompt"],
            strategy=body["strategy"],
            template=body.get("template", ""),
            generator_target=(body.get("generator") or {}).get("target", ""),
            approval=body.get("approval", "required"),
        )
    if key == "dataset_add":
        return DatasetAdd(dataset=body["dataset"])
    if key == "human_review":
        return HumanReview(
            queue=body["queue"], priority=int(body.get("priority", 50)), due=body.get("due", "")
        )
    raise ValueError(f"unknown action {key!r}")


def resource_from_document(doc: Mapping[str, Any], source: str = "") -> Resource:
    """Build a resource from a schema-valid document (defaults filled here)."""
    kind = doc["kind"]
    meta = doc["metadata"]
    name: str = meta["name"]
    labels = tuple(sorted((meta.get("labels") or {}).items()))
    spec: Mapping[str, Any] = doc.get("spec") or {}
    if kind == "FeedbackSchema":
        signals = tuple(
            (
                signal,
                tuple(
                    Category(c["name"], c.get("description", "")) for c in (body or {}).get("categories", [])
                ),
            )
            for signal, body in spec["signals"].items()
        )
        return FeedbackSchema(name, signals, tuple(spec.get("required", ())), labels, source)
    if kind == "Prompt":
        return Prompt(
            name, spec["template"], tuple(spec["variables"]), spec.get("description", ""), labels, source
        )
    if kind == "Dataset":
        return Dataset(
            name,
            tuple(spec["formats"]),
            float(spec.get("dedup_similarity", 0.95)),
            spec.get("description", ""),
            labels,
            source,
        )
    if kind == "ReviewQueue":
        return ReviewQueue(
            name, spec["sla"], spec.get("lease", "15m"), int(spec.get("reviews_required", 1)), labels, source
        )
    if kind == "RoutingPolicy":
        agg = spec.get("aggregate")
        aggregate = (
            Aggregate(
                int(agg["min_count"]),
                agg["window"],
                float(agg.get("min_similarity", 0.8)),
                tuple(agg.get("group_by", ())),
            )
            if agg
            else None
        )
        return RoutingPolicy(
            name=name,
            when=spec["when"],
            actions=tuple(_action_from(a) for a in spec["actions"]),
            aggregate=aggregate,
            sample=float(spec.get("sample", 1.0)),
            cooldown=spec.get("cooldown", ""),
            priority=int(spec.get("priority", 0)),
            continue_=bool(spec.get("continue", False)),
            labels=labels,
            source=source,
        )
    raise ValueError(f"unknown kind {kind!r}")


def resource_to_document(res: Resource) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": res.name}
    if res.labels:
        meta["labels"] = dict(res.labels)
    return {"apiVersion": API_VERSION, "kind": res.kind, "metadata": meta, "spec": res.spec()}


@dataclass(frozen=True)
class PolicySet:
    """All resources of one revision, ordered by kind then name (the canonical order)."""

    resources: tuple[Resource, ...] = ()

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.resources, key=lambda r: (_KIND_ORDER[r.kind], r.name)))
        object.__setattr__(self, "resources", ordered)
        keys = [(r.kind, r.name) for r in ordered]
        if len(set(keys)) != len(keys):
            raise ValueError("duplicate (kind, name) in PolicySet")

    def __iter__(self) -> Iterator[Resource]:
        return iter(self.resources)

    def get(self, kind: str, name: str) -> Resource | None:
        for r in self.resources:
            if r.kind == kind and r.name == name:
                return r
        return None

    # Resources never change after construction: each view is built once (routing reads them
    # per event, the backtest per matched decision).
    @functools.cached_property
    def feedback_schema(self) -> FeedbackSchema | None:
        return next((r for r in self.resources if isinstance(r, FeedbackSchema)), None)

    @functools.cached_property
    def prompts(self) -> dict[str, Prompt]:
        return {r.name: r for r in self.resources if isinstance(r, Prompt)}

    @functools.cached_property
    def datasets(self) -> dict[str, Dataset]:
        return {r.name: r for r in self.resources if isinstance(r, Dataset)}

    @functools.cached_property
    def review_queues(self) -> dict[str, ReviewQueue]:
        return {r.name: r for r in self.resources if isinstance(r, ReviewQueue)}

    @functools.cached_property
    def routing_policies(self) -> dict[str, RoutingPolicy]:
        return {r.name: r for r in self.resources if isinstance(r, RoutingPolicy)}

    def to_canonical(self) -> dict[str, Any]:
        """A JSON-able dict with all defaults filled; `from_canonical` is its inverse."""
        return {
            "format": CANONICAL_FORMAT,
            "apiVersion": API_VERSION,
            "resources": [resource_to_document(r) for r in self.resources],
        }

    @classmethod
    def from_canonical(cls, data: Mapping[str, Any]) -> PolicySet:
        if data.get("format") != CANONICAL_FORMAT or data.get("apiVersion") != API_VERSION:
            raise ValueError(
                f"unsupported canonical policy set (format={data.get('format')!r}, "
                f"apiVersion={data.get('apiVersion')!r})"
            )
        return cls(tuple(resource_from_document(doc) for doc in data["resources"]))

    def canonical_json(self) -> str:
        # sort_keys + fixed separators: the same set always serialises to the same bytes.
        return json.dumps(self.to_canonical(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    def content_hash(self) -> str:
        """sha256 hex of the canonical JSON: equal sets hash equal, whatever the file layout."""
        return hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()
