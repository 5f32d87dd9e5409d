"""Ids of the files and message batches the gateway keeps upstream (issue 15 item 8).

Pure: no aiohttp, no asyncio. Anthropic's ids are opaque strings; the gateway's carry what it
needs to find the upstream's objects again, signed with its key ring so that nobody can make
one up (the upstream key is shared by every client of the gateway) and no state is kept:

* ``file_gw1.…``: the upstream's name, the upstream's file id and the file's media type (the
  OpenAI Files API keeps no media type);
* ``msgbatch_gw1.…``: the upstream's name, its batch ids (a batch of several models or of
  more than OpenAI takes in one is several upstream batches) and the file holding what the
  gateway needs to translate the results back.
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from ..errors import InvalidRequestError, NotFoundError
from ..schemas.anthropic import (
    DocumentBlock,
    FileSource,
    ImageBlock,
    Message,
    MessagesRequest,
    ToolResultBlock,
    UpstreamFileSource,
)
from .signatures import Signer

FILE_PREFIX: Final = "file_gw1."
BATCH_PREFIX: Final = "msgbatch_gw1."
IMAGE_TYPES: Final = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
DOCUMENT_TYPES: Final = frozenset({"application/pdf", "text/plain"})


@dataclass(frozen=True, slots=True)
class FileRef:
    upstream: str
    file_id: str
    mime_type: str


@dataclass(frozen=True, slots=True)
class BatchRef:
    upstream: str
    #: the upstream's batch ids, the first one primary (it carries the metadata)
    batches: tuple[str, ...]
    #: the upstream file with the per-request answer plans
    sidecar: str
    count: int


def file_id(signer: Signer, ref: FileRef) -> str:
    return signer.seal(FILE_PREFIX, [ref.upstream, ref.file_id, ref.mime_type])


def parse_file_id(signer: Signer, value: str) -> FileRef | None:
    got = signer.unseal(FILE_PREFIX, value)
    if not (isinstance(got, list) and len(got) == 3 and all(isinstance(x, str) for x in got)):
        return None
    return FileRef(*got)


def batch_id(signer: Signer, ref: BatchRef) -> str:
    return signer.seal(BATCH_PREFIX, [ref.upstream, list(ref.batches), ref.sidecar, ref.count])


def parse_batch_id(signer: Signer, value: str) -> BatchRef | None:
    got = signer.unseal(BATCH_PREFIX, value)
    if not (isinstance(got, list) and len(got) == 4):
        return None
    upstream, batches, sidecar, count = got
    if not (
        isinstance(upstream, str)
        and isinstance(batches, list)
        and batches
        and all(isinstance(b, str) for b in batches)
        and isinstance(sidecar, str)
        and isinstance(count, int)
    ):
        return None
    return BatchRef(upstream, tuple(batches), sidecar, count)


def iso(ts: Any) -> str | None:
    """Unix seconds → RFC 3339 (``2025-04-15T18:37:24Z``)."""
    if not isinstance(ts, int | float):
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def file_not_found(value: str) -> NotFoundError:
    return NotFoundError(f"File not found: {value[:200]}")


def guess_mime(filename: str, declared: str | None) -> str:
    """The media type of an upload: the part's own when it is specific, else by name."""
    if declared and declared != "application/octet-stream":
        return declared.split(";")[0].strip().lower()
    guessed, _ = mimetypes.guess_type(filename)
    return guessed or "application/octet-stream"


# ---------------------------------------------------------------------------------------------
# file_id sources in a request


def resolve_files(req: MessagesRequest, signer: Signer, upstream: str) -> MessagesRequest:
    """``file`` sources replaced by the upstream's files they name; a 400 for an id the
    gateway did not issue, a file on another upstream, or a media type the block cannot
    take (as the API's "Invalid file type")."""
    messages: list[Message] = []
    changed = False
    for i, msg in enumerate(req.messages):
        if isinstance(msg.content, str):
            messages.append(msg)
            continue
        blocks: list[Any] = []
        touched = False
        for j, block in enumerate(msg.content):
            new = _resolve(block, f"messages.{i}.content.{j}", signer, upstream)
            if isinstance(new, ToolResultBlock) and isinstance(new.content, list):
                inner = [
                    _resolve(b, f"messages.{i}.content.{j}.content.{k}", signer, upstream)
                    for k, b in enumerate(new.content)
                ]
                if any(a is not b for a, b in zip(inner, new.content, strict=True)):
                    new = msgspec.structs.replace(new, content=inner)
            touched = touched or new is not block
            blocks.append(new)
        changed = changed or touched
        messages.append(msgspec.structs.replace(msg, content=blocks) if touched else msg)
    return msgspec.structs.replace(req, messages=messages) if changed else req


def _resolve(block: Any, path: str, signer: Signer, upstream: str) -> Any:
    if not isinstance(block, ImageBlock | DocumentBlock) or not isinstance(
        block.source, FileSource
    ):
        return block
    value = block.source.file_id
    ref = parse_file_id(signer, value)
    if ref is None:
        raise InvalidRequestError(f"{path}.source.file_id: file not found: {value[:200]}")
    if ref.upstream != upstream:
        raise InvalidRequestError(
            f"{path}.source.file_id: the file is held by upstream {ref.upstream!r}, not by this "
            f"request's ({upstream!r})"
        )
    allowed: frozenset[str] = IMAGE_TYPES if isinstance(block, ImageBlock) else DOCUMENT_TYPES
    if ref.mime_type not in allowed:
        kind = "an image" if isinstance(block, ImageBlock) else "a document"
        raise InvalidRequestError(
            f"{path}.source.file_id: Invalid file type: {ref.mime_type} cannot be {kind}"
        )
    source = UpstreamFileSource(file_id=ref.file_id, mime_type=ref.mime_type)
    return msgspec.structs.replace(block, source=source)
