"""An OTLP span as an interaction: the GenAI semantic conventions and OpenInference.

A span is an LLM span when it says so: `openinference.span.kind` is `LLM`, or
`gen_ai.operation.name` is a model call (`chat`, `text_completion`, `generate_content`), or,
from instrumentations older than `gen_ai.operation.name`, it names a `gen_ai.request.model` or
`gen_ai.response.model`. Every other span (HTTP, database, tools, embeddings, agents) is not
an interaction. The README's "OTLP in" section has the mapping as a table; this module is it.

The interaction is built as the `Interaction` message RecordInteraction takes and validated by
the same code, so a span is held to the same limits; a violation refuses the span, naming the
attribute it came from. Free attributes are different: an unmapped attribute is kept while it
fits (FEEDBACKLOOP_MAX_ATTRIBUTES of them, keys up to 128 characters, values up to
FEEDBACKLOOP_MAX_TEXT_CHARS), and the rest are dropped and counted, since a span's extra
attributes are not what makes it worth keeping.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from opentelemetry.proto.trace.v1 import trace_pb2

from feedbackloop import fields
from feedbackloop.errors import FeedbackloopError, quote
from feedbackloop.fields import MAX_NAME_CHARS
from feedbackloop.ingestion.validation import InteractionInput, Limits, validate_interaction
from feedbackloop.otlp.attributes import (
    MAX_SPAN_ATTRIBUTES,
    MAX_SPAN_EVENTS,
    as_text,
    attribute_map,
)
from feedbackloop.v1 import common_pb2

GENAI, OPENINFERENCE = "genai", "openinference"
LLM_OPERATIONS = frozenset({"chat", "text_completion", "generate_content"})
EVALUATION_EVENT = "gen_ai.evaluation.result"
# Roles other conventions and providers use, as the four an interaction has.
ROLE_ALIASES = {
    "developer": "system",
    "model": "assistant",
    "ai": "assistant",
    "human": "user",
    "function": "tool",
}
# gen_ai.request.* parameters kept as model parameters (without the prefix).
REQUEST_PARAMETERS = (
    "temperature",
    "top_p",
    "top_k",
    "max_tokens",
    "frequency_penalty",
    "presence_penalty",
    "seed",
    "stop_sequences",
    "choice.count",
)
MAX_RESPONSE_ID_CHARS = 128  # the interaction_responses column
_REQUEST_PARAMETER_KEYS = tuple((name, f"gen_ai.request.{name}") for name in REQUEST_PARAMETERS)
_INDEXED = re.compile(r"^(gen_ai\.prompt|gen_ai\.completion)\.(\d+)\.(role|content)$")
_OI_MESSAGE = re.compile(
    r"^llm\.(input_messages|output_messages)\.(\d+)\.message\.(role|content|contents\.(\d+)\.message_content\.text)$"
)
_OI_CONTENT_PART = re.compile(r"^llm\.(input_messages|output_messages)\.\d+\.message\.")
_MESSAGE_EVENTS = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}


class SpanRefused(Exception):
    """The span cannot be taken in; the message says why, naming the attribute."""


@dataclass
class Evaluation:
    """A `gen_ai.evaluation.result` event, with its position among the span's events."""

    index: int
    time_unix_nano: int
    attributes: dict[str, Any]


@dataclass
class MappedSpan:
    trace_id: str
    span_id: str
    parent_span_id: str
    start_unix_nano: int
    # Validated, with turn index 0: the store gives it its place in the session.
    interaction: InteractionInput | None
    evaluations: list[Evaluation] = field(default_factory=list)
    dropped_attributes: int = 0
    # `gen_ai.response.id`, when it is one the store can keep ("" otherwise; it stays a free
    # attribute either way), so evaluations elsewhere can name this interaction by it.
    response_id: str = ""


def span_ids(span: trace_pb2.Span) -> tuple[str, str, str]:
    """(trace id, span id, parent span id) as lowercase hex; SpanRefused when invalid."""
    if not span.trace_id or not any(span.trace_id):
        raise SpanRefused("has no trace_id")
    if len(span.trace_id) != 16:
        raise SpanRefused(f"trace_id must be 16 bytes (got {len(span.trace_id)})")
    if not span.span_id or not any(span.span_id):
        raise SpanRefused("has no span_id")
    if len(span.span_id) != 8:
        raise SpanRefused(f"span_id must be 8 bytes (got {len(span.span_id)})")
    parent = span.parent_span_id.hex() if len(span.parent_span_id) == 8 and any(span.parent_span_id) else ""
    return span.trace_id.hex(), span.span_id.hex(), parent


def convention(attributes: dict[str, Any]) -> str | None:
    """Which convention makes the span an LLM call, or None for any other span."""
    kind = attributes.get("openinference.span.kind")
    if isinstance(kind, str):
        return OPENINFERENCE if kind.upper() == "LLM" else None
    operation = attributes.get("gen_ai.operation.name")
    if isinstance(operation, str):
        return GENAI if operation in LLM_OPERATIONS else None
    if "gen_ai.request.model" in attributes or "gen_ai.response.model" in attributes:
        # OpenLLMetry before gen_ai.operation.name: llm.request.type says chat or completion.
        return GENAI if attributes.get("llm.request.type", "chat") in ("chat", "completion") else None
    return None


def check_size(span: trace_pb2.Span) -> None:
    """Refuse an attribute bomb before anything of it is read."""
    if len(span.attributes) > MAX_SPAN_ATTRIBUTES:
        raise SpanRefused(
            f"has {len(span.attributes)} attributes; at most {MAX_SPAN_ATTRIBUTES} are read per span"
        )
    if len(span.events) > MAX_SPAN_EVENTS:
        raise SpanRefused(f"has {len(span.events)} events; at most {MAX_SPAN_EVENTS} are read per span")
    for i, event in enumerate(span.events):
        if len(event.attributes) > MAX_SPAN_ATTRIBUTES:
            raise SpanRefused(
                f"events[{i}] has {len(event.attributes)} attributes; at most {MAX_SPAN_ATTRIBUTES} are read"
            )


def evaluations(span: trace_pb2.Span) -> list[Evaluation]:
    return [
        Evaluation(i, event.time_unix_nano, attribute_map(event.attributes))
        for i, event in enumerate(span.events)
        if event.name == EVALUATION_EVENT
    ]


class _Reader:
    """The span's attributes, remembering which ones the interaction used."""

    def __init__(self, attributes: dict[str, Any]) -> None:
        self.attributes = attributes
        self.used: set[str] = set()

    def text(self, key: str) -> str | None:
        value = self.attributes.get(key)
        if isinstance(value, str) and value:
            self.used.add(key)
            return value
        return None

    def integer(self, key: str) -> int | None:
        value = self.attributes.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            self.used.add(key)
            return value
        return None

    def number(self, key: str) -> Any:
        value = self.attributes.get(key)
        if isinstance(value, (int, float, list)) and not isinstance(value, bool):
            self.used.add(key)
            return value
        return None

    def json(self, key: str) -> Any:
        """A structured attribute: JSON text (what SDKs that cannot hold structures send) or
        an array / key-value list value."""
        value = self.attributes.get(key)
        if value is None:
            return None
        self.used.add(key)
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError as error:
                raise SpanRefused(f"{key}: is not valid JSON ({error})") from None
        return value


def _role(value: Any) -> str:
    role = str(value or "").lower()
    return ROLE_ALIASES.get(role, role)


def _part_text(part: Any) -> str:
    if not isinstance(part, dict):
        return as_text(part)
    kind = part.get("type")
    if kind in ("text", "reasoning") and isinstance(part.get("content"), str):
        return str(part["content"])
    if kind == "tool_call":
        return f"tool_call {part.get('name', '')}({as_text(part.get('arguments', {}))})"
    if kind == "tool_call_response":
        return as_text(part.get("response", ""))
    return as_text(part)


def _message_text(message: Any) -> str:
    if isinstance(message, dict):
        if isinstance(message.get("parts"), list):
            return "\n".join(_part_text(p) for p in message["parts"])
        content = message.get("content")
        return content if isinstance(content, str) else as_text(content) if content is not None else ""
    return as_text(message)


def _messages(value: Any, key: str) -> list[tuple[str, str]]:
    if isinstance(value, str):
        return [("user", value)]
    if not isinstance(value, list):
        raise SpanRefused(f"{key}: must be a list of messages (got {type(value).__name__})")
    out = []
    for message in value:
        role = _role(message.get("role")) if isinstance(message, dict) else "user"
        out.append((role, _message_text(message)))
    return out


def _indexed(reader: _Reader, pattern: re.Pattern[str], group: str) -> list[tuple[str, str]]:
    """Messages flattened into attributes (`gen_ai.prompt.0.role`, ...), in index order."""
    found: dict[int, dict[str, str]] = {}
    for key, value in reader.attributes.items():
        match = pattern.match(key)
        if match is None or match.group(1) != group:
            continue
        reader.used.add(key)
        slot = found.setdefault(int(match.group(2)), {})
        leaf = match.group(3)
        text = value if isinstance(value, str) else as_text(value)
        if leaf.startswith("contents."):  # OpenInference multi-part content
            slot[f"part{int(match.group(4)):08d}"] = text
        else:
            slot[leaf] = text
    messages = []
    for _, slot in sorted(found.items()):
        content = slot.get("content") or "\n".join(v for k, v in sorted(slot.items()) if k.startswith("part"))
        messages.append((_role(slot.get("role") or "user"), content))
    return messages


def _event_messages(span: trace_pb2.Span) -> tuple[list[tuple[str, str]], str | None, str]:
    """Input messages and the response from the event forms: `gen_ai.content.prompt` /
    `gen_ai.content.completion`, and the per-message events of semantic conventions 1.2x."""
    messages: list[tuple[str, str]] = []
    response: str | None = None
    source = ""
    for event in span.events:
        name = event.name
        if name not in ("gen_ai.content.prompt", "gen_ai.content.completion", "gen_ai.choice") and (
            name not in _MESSAGE_EVENTS
        ):
            continue
        attributes = attribute_map(event.attributes)
        source = source or f"the {name} event"
        if name == "gen_ai.content.prompt":
            messages.extend(
                _messages(_maybe_json(attributes.get("gen_ai.prompt", "")), f"{name}: gen_ai.prompt")
            )
        elif name == "gen_ai.content.completion":
            completion = _messages(
                _maybe_json(attributes.get("gen_ai.completion", "")), f"{name}: gen_ai.completion"
            )
            if completion and response is None:
                response = completion[0][1]
        elif name == "gen_ai.choice":
            message = _maybe_json(attributes.get("message", attributes.get("content", "")))
            if response is None:
                response = _message_text(message)
        else:
            messages.append(
                (_MESSAGE_EVENTS[name], _message_text(_maybe_json(attributes.get("content", ""))))
            )
    return messages, response, source


def _maybe_json(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _input_and_response(
    reader: _Reader, span: trace_pb2.Span, kind: str
) -> tuple[list[tuple[str, str]], str, str, str]:
    """(input messages, response, where each came from), the current forms first."""
    response: str | None
    if kind == OPENINFERENCE:
        messages = _indexed(reader, _OI_MESSAGE, "input_messages")
        outputs = _indexed(reader, _OI_MESSAGE, "output_messages")
        in_source, out_source = "llm.input_messages", "llm.output_messages"
        if not messages and (value := reader.text("input.value")) is not None:
            messages, in_source = [("user", value)], "input.value"
        response = outputs[0][1] if outputs else None
        if response is None:
            response, out_source = reader.text("output.value"), "output.value"
        for key in ("input.mime_type", "output.mime_type", "llm.input_messages", "llm.output_messages"):
            reader.used.add(key)
        return messages, response or "", in_source, out_source
    messages, in_source = [], "gen_ai.input.messages"
    if (value := reader.json("gen_ai.input.messages")) is not None:
        messages = _messages(value, "gen_ai.input.messages")
    if (system := reader.json("gen_ai.system_instructions")) is not None:
        parts = system if isinstance(system, list) else [system]
        messages.insert(0, ("system", "\n".join(_part_text(p) for p in parts)))
    response = None
    out_source = "gen_ai.output.messages"
    if (value := reader.json("gen_ai.output.messages")) is not None:
        outputs = _messages(value, "gen_ai.output.messages")
        response = outputs[0][1] if outputs else ""
    if not messages:
        messages, in_source = _indexed(reader, _INDEXED, "gen_ai.prompt"), "gen_ai.prompt.N"
    if response is None:
        completions = _indexed(reader, _INDEXED, "gen_ai.completion")
        if completions:
            response, out_source = completions[0][1], "gen_ai.completion.N"
    if not messages or response is None:
        event_messages, event_response, event_source = _event_messages(span)
        if not messages and event_messages:
            messages, in_source = event_messages, event_source
        if response is None and event_response is not None:
            response, out_source = event_response, event_source
    return messages, response or "", in_source, out_source


def map_span(
    span: trace_pb2.Span,
    kind: str,
    attributes: dict[str, Any],
    resource: dict[str, Any],
    limits: Limits,
    now: datetime,
) -> MappedSpan:
    """The interaction of an LLM span (checked by `check_size` first); SpanRefused names the
    attribute that cannot be taken in."""
    trace_id, span_id, parent = span_ids(span)
    if span.start_time_unix_nano <= 0:
        raise SpanRefused("start_time_unix_nano is not set")
    reader = _Reader(attributes)
    messages, response, in_source, out_source = _input_and_response(reader, span, kind)
    message = common_pb2.Interaction()
    session = reader.text("gen_ai.conversation.id") or reader.text("session.id")
    message.session_id = session or trace_id
    for role, content in messages:
        message.input_messages.add(role=role, content=content)
    message.response = response
    model = message.model
    if kind == OPENINFERENCE:
        model.name = model.version = reader.text("llm.model_name") or ""
        _set_tokens(message, reader, "llm.token_count.prompt", "llm.token_count.completion")
        reader.used.add("llm.token_count.total")
        reader.used.add("openinference.span.kind")
        parameters = reader.json("llm.invocation_parameters")
        if isinstance(parameters, dict):
            _set_parameters(model, parameters, "llm.invocation_parameters")
    else:
        requested, responded = reader.text("gen_ai.request.model"), reader.text("gen_ai.response.model")
        model.name = requested or responded or ""
        model.version = responded or requested or ""
        input_key = (
            "gen_ai.usage.input_tokens"
            if "gen_ai.usage.input_tokens" in attributes
            else "gen_ai.usage.prompt_tokens"
        )
        output_key = (
            "gen_ai.usage.output_tokens"
            if "gen_ai.usage.output_tokens" in attributes
            else "gen_ai.usage.completion_tokens"
        )
        _set_tokens(message, reader, input_key, output_key)
        parameters = {}
        for name, key in _REQUEST_PARAMETER_KEYS:
            if key in attributes and (value := reader.number(key)) is not None:
                parameters[name] = value
        if parameters:
            _set_parameters(model, parameters, "gen_ai.request.*")
    message.user.id = reader.text("user.id") or reader.text("enduser.id") or ""
    prompt = message.prompt
    prompt.name = reader.text("feedbackloop.prompt.name") or ""
    prompt.version = (
        reader.text("feedbackloop.prompt.version") or reader.text("llm.prompt_template.version") or ""
    )
    application = resource.get("service.name")
    message.application = application if isinstance(application, str) else ""
    if span.end_time_unix_nano >= span.start_time_unix_nano:
        message.latency_ms = min(
            (span.end_time_unix_nano - span.start_time_unix_nano) // 1_000_000, 2**31 - 1
        )
    message.occurred_at.FromNanoseconds(span.start_time_unix_nano)
    kept, dropped = _free_attributes(reader, limits)
    message.attributes.update(kept)
    try:
        interaction = validate_interaction(message, limits, now)
    except FeedbackloopError as error:
        sources = _sources(kind, "gen_ai.conversation.id" in reader.used, in_source, out_source)
        raise SpanRefused(_describe(error, sources)) from None
    return MappedSpan(
        trace_id,
        span_id,
        parent,
        span.start_time_unix_nano,
        interaction,
        evaluations(span),
        dropped,
        response_id(attributes),
    )


def response_id(attributes: dict[str, Any]) -> str:
    """`gen_ai.response.id` if it is an id the store can keep, else ""."""
    value = attributes.get("gen_ai.response.id")
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_RESPONSE_ID_CHARS:
        return ""
    return "" if fields.first_control(value) is not None else value


def _sources(kind: str, conversation: bool, in_source: str, out_source: str) -> dict[str, str]:
    """Interaction field path -> the attribute or event it came from, to name it in errors
    (worked out only for a refused span: the sources of a span taken in are never read)."""
    openinference = kind == OPENINFERENCE
    return {
        "interaction.session_id": "gen_ai.conversation.id" if conversation else "session.id",
        "interaction.input_messages": in_source,
        "interaction.response": out_source,
        "interaction.model": "llm.model_name"
        if openinference
        else "gen_ai.request.model / gen_ai.response.model",
        "interaction.model.parameters": "llm.invocation_parameters" if openinference else "gen_ai.request.*",
        "interaction.user": "user.id",
        "interaction.prompt": "feedbackloop.prompt.* / llm.prompt_template.version",
        "interaction.application": "resource service.name",
        "interaction.occurred_at": "start_time_unix_nano",
    }


def _set_tokens(
    message: common_pb2.Interaction, reader: _Reader, prompt_key: str, completion_key: str
) -> None:
    for key, target in ((prompt_key, "prompt_tokens"), (completion_key, "completion_tokens")):
        value = reader.integer(key)
        if value is None:
            continue
        if not 0 <= value < 2**31:
            raise SpanRefused(f"{key}: {value} is out of range (0 to 2147483647)")
        setattr(message, target, value)


def _set_parameters(model: common_pb2.ModelRef, parameters: dict[str, Any], source: str) -> None:
    try:
        model.parameters.update(parameters)
    except (ValueError, TypeError) as error:
        raise SpanRefused(f"{source}: cannot be kept as model parameters ({error})") from None


def _free_attributes(reader: _Reader, limits: Limits) -> tuple[dict[str, str], int]:
    """The attributes the interaction did not use, as free attributes, within the limits;
    and how many were dropped (over the count, a key or value that cannot be stored)."""
    kept: dict[str, str] = {}
    dropped = 0
    used = reader.used
    for key, value in reader.attributes.items():
        if key in used or value is None or (key.startswith("llm.") and _OI_CONTENT_PART.match(key)):
            continue
        text = as_text(value)
        if (
            len(kept) >= limits.max_attributes
            or not key
            or len(key) > MAX_NAME_CHARS
            or fields.first_control(key) is not None
            or len(text) > limits.max_text_chars
            or "\x00" in text
        ):
            dropped += 1
            continue
        kept[key] = text
    return kept, dropped


def _describe(error: FeedbackloopError, sources: dict[str, str]) -> str:
    parts = []
    for violation in error.violations or ():
        source = _source_of(violation.field, sources)
        where = f"{source} ({violation.field})" if source else violation.field
        parts.append(f"{where}: {violation.description}")
    return "; ".join(parts) or error.message


def _source_of(path: str, sources: dict[str, str]) -> str:
    best = ""
    for prefix in sources:
        if path.startswith(prefix) and len(prefix) > len(best):
            best = prefix
    return sources.get(best, "")


def describe_span(span: trace_pb2.Span, path: str) -> str:
    """How an error names a span: its place in the request and its ids."""
    ids = f"span {span.span_id.hex() or '-'} of trace {span.trace_id.hex() or '-'}"
    name = f" '{quote(span.name)}'" if span.name else ""
    return f"{path}{name} ({ids})"
