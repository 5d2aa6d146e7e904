"""Policy files sent from a browser: several *.yaml, or one plan.json saved by
`feedbackloop policy plan --out` (its files and the revision it was planned against)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from starlette.datastructures import FormData, UploadFile

from feedbackloop.routing.saved_plan import SavedPlanError, parse_saved_plan
from feedbackloop.v1 import routing_pb2

MAX_FILES = 100
MAX_FILE_BYTES = 1024 * 1024
POLICY_SUFFIXES = (".yaml", ".yml")


class UploadError(ValueError):
    """Files the plan screen refuses; the message names the field and the file."""


@dataclass
class Upload:
    files: list[routing_pb2.PolicyFile]
    saved_base: int | None  # a saved plan's base revision; None for YAML files


def saved_plan(name: str, text: str) -> Upload:
    """The files and base revision of a saved plan, checked as `policy apply FILE` checks them."""
    try:
        files, base = parse_saved_plan(name, text)
    except SavedPlanError as error:
        raise UploadError(f"files: {error}") from None
    return Upload(files, base)


async def read_upload(form: FormData) -> Upload:
    uploads = [value for value in form.getlist("files") if isinstance(value, UploadFile) and value.filename]
    if not uploads:
        raise UploadError(
            "files: choose policy files (*.yaml) or a plan.json saved by `feedbackloop policy plan --out`"
        )
    if len(uploads) > MAX_FILES:
        raise UploadError(f"files: at most {MAX_FILES} files")
    texts: list[tuple[str, str]] = []
    for upload in uploads:
        name = upload.filename or ""
        data = await upload.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise UploadError(f"files: {name} is larger than {MAX_FILE_BYTES // 1024} KiB")
        try:
            texts.append((name, data.decode("utf-8")))
        except UnicodeDecodeError:
            raise UploadError(f"files: {name} is not UTF-8 text") from None
    plans = [(name, text) for name, text in texts if name.lower().endswith(".json")]
    if plans:
        if len(texts) > 1:
            raise UploadError("files: send one plan.json alone, or policy files (*.yaml) without a plan")
        return saved_plan(*plans[0])
    for name, _ in texts:
        if not name.lower().endswith(POLICY_SUFFIXES):
            raise UploadError(f"files: {name} is neither a policy file (*.yaml, *.yml) nor a plan.json")
    return Upload([routing_pb2.PolicyFile(path=name, content=text) for name, text in texts], None)


def files_json(files: list[routing_pb2.PolicyFile]) -> str:
    """The files as the apply form carries them back (the plan screen keeps no state)."""
    return json.dumps([{"path": f.path, "content": f.content} for f in files], ensure_ascii=False)


def files_of_json(text: str) -> list[routing_pb2.PolicyFile]:
    try:
        entries = json.loads(text)
    except json.JSONDecodeError:
        raise UploadError("files: the planned files are missing; make the plan again") from None
    if not isinstance(entries, list) or not entries:
        raise UploadError("files: the planned files are missing; make the plan again")
    files = []
    for entry in entries:
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("path"), str)
            and isinstance(entry.get("content"), str)
        ):
            raise UploadError("files: the planned files are damaged; make the plan again")
        files.append(routing_pb2.PolicyFile(path=entry["path"], content=entry["content"]))
    return files
