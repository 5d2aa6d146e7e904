"""Policy files sent from a browser: several *.yaml, or one plan.json saved by
`feedbackloop policy plan --out` (its files and the revision it was planned against).

The plan screen keeps no state: the planned files go back to apply in one hidden form field
(`files_json`). Every set the plan step accepts fits that field (PLANNED_FIELD_BYTES), so
apply never refuses a plan the plan step made; the console's body cap is sized from it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from starlette.datastructures import FormData, UploadFile

from feedbackloop.policy.loader import MAX_SET_BYTES
from feedbackloop.routing.convert import MAX_FILES as MAX_PLANNED_FILES
from feedbackloop.routing.convert import MAX_PATH_CHARS
from feedbackloop.routing.saved_plan import SavedPlanError, parse_saved_plan
from feedbackloop.v1 import routing_pb2

MAX_FILES = 100  # policy files in one upload
MAX_FILE_BYTES = 1024 * 1024  # one uploaded file, a saved plan.json included
POLICY_SUFFIXES = (".yaml", ".yml")
# The server's own limits on a set (MAX_PLANNED_FILES, MAX_PATH_CHARS, MAX_SET_BYTES, imported
# above) are checked here too so that the apply field has a bound: a saved plan may hold more
# files than an upload.
# The apply form is url-encoded. JSON writes a one-byte character in at most six bytes
# (`\u001f`), and url-encoding writes a byte in at most three (`%5C` for the backslash), so a
# content byte takes at most 8 bytes (a byte of a longer UTF-8 character: 3). A path character
# is at most 4 UTF-8 bytes, 12 once encoded. Each file adds `{"path": "", "content": ""}, `
# (30 characters, 90 bytes), the list its brackets.
_ENTRY_BYTES = 90
PLANNED_FIELD_BYTES = 8 * MAX_SET_BYTES + MAX_PLANNED_FILES * (12 * MAX_PATH_CHARS + _ENTRY_BYTES) + 6
# The whole apply form: the field above, the CSRF token, the revision, a note of at most
# policies.MAX_MESSAGE_CHARS characters (12 bytes each at most, encoded), with room to spare.
APPLY_FORM_BYTES = PLANNED_FIELD_BYTES + 64 * 1024


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
        return checked(saved_plan(*plans[0]))
    for name, _ in texts:
        if not name.lower().endswith(POLICY_SUFFIXES):
            raise UploadError(f"files: {name} is neither a policy file (*.yaml, *.yml) nor a plan.json")
    return checked(Upload([routing_pb2.PolicyFile(path=name, content=text) for name, text in texts], None))


def checked(upload: Upload) -> Upload:
    """The set within the server's limits, which also bound the apply form (see above)."""
    if len(upload.files) > MAX_PLANNED_FILES:
        raise UploadError(f"files: the set has {len(upload.files)} files; the limit is {MAX_PLANNED_FILES}")
    for f in upload.files:
        if len(f.path) > MAX_PATH_CHARS:
            raise UploadError(
                f"files: the name {f.path[:40]}... is {len(f.path)} characters long; "
                f"the limit is {MAX_PATH_CHARS}"
            )
    total = sum(len(f.content.encode()) for f in upload.files)
    if total > MAX_SET_BYTES:
        raise UploadError(
            f"files: the policy set is {total:,} bytes; the limit for a set is {MAX_SET_BYTES:,}"
        )
    return upload


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
