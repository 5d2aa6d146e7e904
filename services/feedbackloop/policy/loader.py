"""Load policy YAML files while keeping each node's source position.

PyYAML's composer already knows where every node starts; we compose the node tree, build
plain Python data from it with the safe constructor, and walk the same tree to record a
`path -> (line, column)` map. Keeping data plain (dicts/lists) lets jsonschema validate it
as is, and the map lets every later error point at `file:line:col`.

Loading is bounded, since policy files also arrive over gRPC from any key with the policy
scope: a file over MAX_FILE_BYTES or a set over MAX_SET_BYTES is refused before it is read,
nesting deeper than MAX_DEPTH is refused while composing (PyYAML's composer recurses, and
2,000 levels would end in RecursionError), and aliases are refused outright. An alias
re-uses a node, so a few hundred bytes of aliases to aliases expand into billions of
nodes for every later walk; policy documents are short enough to write out in full, and
refusing every alias is simpler to state and to trust than an expansion budget.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from feedbackloop.policy.errors import PolicyError, format_path

Path_ = tuple[str | int, ...]

# The largest example file is under 4 KB; a megabyte is hundreds of policies, and validating
# it takes well under a second.
MAX_FILE_BYTES = 1024 * 1024
# The default gRPC message limit: a set the server accepts can also be checked offline.
MAX_SET_BYTES = 4 * 1024 * 1024
# Policy documents nest about eight levels (spec.actions[0].prompt_patch.generator.target).
MAX_DEPTH = 32


class _Refused(yaml.MarkedYAMLError):
    """A limit of policy loading (not a syntax error), at the node that crossed it."""


class _PolicyLoader(yaml.SafeLoader):
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()
        mark: Any = event.start_mark
        if isinstance(event, yaml.AliasEvent):
            raise _Refused(
                None,
                None,
                f"YAML aliases (*{event.anchor}) are not allowed in policy files; write the value out",
                mark,
            )
        if self._depth >= MAX_DEPTH:
            raise _Refused(None, None, f"YAML nests deeper than {MAX_DEPTH} levels", mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _size_error(file: str, size: int) -> PolicyError:
    return PolicyError(
        file, 1, 1, "", f"file is {size:,} bytes; the limit for a policy file is {MAX_FILE_BYTES:,}"
    )


def set_size_error(sizes: list[tuple[str, int]]) -> PolicyError | None:
    """The error for a set of (file, bytes) over MAX_SET_BYTES, at the file that crosses it.

    Checked before any file is parsed, so an oversized set costs nothing but the sizes.
    """
    total = sum(size for _, size in sizes)
    if total <= MAX_SET_BYTES:
        return None
    running = 0
    for file, size in sizes:
        running += size
        if running > MAX_SET_BYTES:
            return PolicyError(
                file,
                1,
                1,
                "",
                f"the policy set is {total:,} bytes; the limit for a set is {MAX_SET_BYTES:,} "
                "(the total passes it at this file; nothing was parsed)",
            )
    raise AssertionError("unreachable: the running total reaches the total")


@dataclass(frozen=True)
class Mark:
    """1-based line and column, as editors and compilers print them."""

    line: int
    column: int


@dataclass
class Document:
    """One YAML document with the positions of its nodes."""

    file: str
    data: Any
    value_marks: dict[Path_, Mark] = field(default_factory=dict)
    key_marks: dict[Path_, Mark] = field(default_factory=dict)

    def mark(self, path: Path_, *, key: bool = False) -> Mark:
        """Position of the node at `path`, or of its nearest existing ancestor.

        `key=True` prefers the key's position (an unknown field is best shown where its
        name is written); values are preferred otherwise.
        """
        probe = tuple(path)
        while True:
            if key and probe in self.key_marks:
                return self.key_marks[probe]
            if probe in self.value_marks:
                return self.value_marks[probe]
            if not probe:
                return Mark(1, 1)
            probe = probe[:-1]

    def error(self, path: Path_, message: str, *, key: bool = False) -> PolicyError:
        mark = self.mark(path, key=key)
        return PolicyError(self.file, mark.line, mark.column, format_path(path), message)


def _mark(node: yaml.Node) -> Mark:
    return Mark(node.start_mark.line + 1, node.start_mark.column + 1)


def _walk(doc: Document, node: yaml.Node, path: Path_, errors: list[PolicyError]) -> None:
    doc.value_marks[path] = _mark(node)
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, Mark] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue  # complex keys are rejected by the schema (keys must be strings)
            key = str(key_node.value)
            child = (*path, key)
            if key in seen:
                # PyYAML silently keeps the last duplicate; a silently ignored setting in a
                # routing policy is exactly the bug strict loading exists to prevent.
                first = seen[key]
                errors.append(
                    PolicyError(
                        doc.file,
                        key_node.start_mark.line + 1,
                        key_node.start_mark.column + 1,
                        format_path(child),
                        f'duplicate key "{key}" (first at line {first.line})',
                    )
                )
            seen[key] = _mark(key_node)
            doc.key_marks[child] = _mark(key_node)
            _walk(doc, value_node, child, errors)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(doc, item, (*path, i), errors)


def load_text(text: str, file: str) -> tuple[list[Document], list[PolicyError]]:
    """Parse every document of one YAML stream; a syntax error stops that file."""
    docs: list[Document] = []
    errors: list[PolicyError] = []
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_FILE_BYTES:
        return [], [_size_error(file, size)]
    try:
        loader = _PolicyLoader(text)
    except yaml.YAMLError as exc:  # the reader refuses some characters (e.g. U+0001) up front
        return [], [PolicyError(file, 1, 1, "", f"YAML error: {exc}")]
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            data = loader.construct_document(node)
            if data is not None:  # an empty document (e.g. a trailing `---`) is not an error
                doc = Document(file=file, data=data)
                _walk(doc, node, (), errors)
                docs.append(doc)
    except _Refused as exc:
        mark = exc.problem_mark
        assert mark is not None
        errors.append(PolicyError(file, mark.line + 1, mark.column + 1, "", str(exc.problem)))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem:
            problem = f"{exc.context}: {exc.problem}" if "while" not in exc.context else exc.problem
        errors.append(PolicyError(file, line, col, "", f"YAML syntax error: {problem}"))
    except yaml.YAMLError as exc:  # e.g. a reader error (bad encoding); no mark available
        errors.append(PolicyError(file, 1, 1, "", f"YAML error: {exc}"))
    finally:
        loader.dispose()
    return docs, errors


def iter_policy_files(root: Path) -> Iterator[Path]:
    """Every *.yaml / *.yml under root in sorted order, skipping `tests/` and hidden folders.

    `tests/` holds policy unit test cases (see testing.py), not resources. Hidden folders are
    skipped because a Kubernetes ConfigMap mounted as a directory keeps every file twice: once
    as `x.yaml` (a link) and once in its `..<timestamp>/` data folder, so each policy would be
    defined twice.
    """
    if root.is_file():
        yield root
        return
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part == "tests" or part.startswith(".") for part in rel.parts[:-1]):
            continue
        if path.is_file() and path.suffix in (".yaml", ".yml"):
            yield path


def load_path(root: Path | str) -> tuple[list[Document], list[PolicyError]]:
    """Load a single file or every policy file under a directory."""
    root = Path(root)
    docs: list[Document] = []
    errors: list[PolicyError] = []
    if not root.exists():
        return [], [PolicyError(str(root), 1, 1, "", "no such file or directory")]
    sizes: list[tuple[Path, int]] = []
    for path in iter_policy_files(root):
        try:
            # Sizes come from the file system, so an oversized file is never read.
            size = path.stat().st_size
        except OSError as exc:
            errors.append(PolicyError(str(path), 1, 1, "", f"cannot read file: {exc}"))
            continue
        if size > MAX_FILE_BYTES:
            errors.append(_size_error(str(path), size))
        else:
            sizes.append((path, size))
    over = set_size_error([(str(path), size) for path, size in sizes])
    if over is not None:
        return [], [*errors, over]
    for path, _ in sizes:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(PolicyError(str(path), 1, 1, "", f"cannot read file: {exc}"))
            continue
        file_docs, file_errors = load_text(text, str(path))
        docs.extend(file_docs)
        errors.extend(file_errors)
    return docs, errors
