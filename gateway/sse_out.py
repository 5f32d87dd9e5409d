"""Server-Sent Events: the outbound encoder (the decoder is :mod:`gateway.sse`).

Frames are ``event: NAME\\ndata: JSON\\n\\n`` with compact one-line JSON (protocol.md §3.1).
"""

from __future__ import annotations

import msgspec
import orjson

__all__ = ["encode_event", "encode_frame"]


def encode_frame(event: bytes, data: bytes) -> bytes:
    """Frame one outbound event: ``b"event: " + event + b"\\ndata: " + data + b"\\n\\n"``.

    ``data`` must be one line (compact JSON). A CR or LF in either argument would silently
    split the event on the client's side (protocol.md §3.1), so it raises ``ValueError``.
    """
    if b"\n" in data or b"\r" in data or b"\n" in event or b"\r" in event:
        raise ValueError("SSE event name and data must not contain CR or LF")
    return b"".join((b"event: ", event, b"\ndata: ", data, b"\n\n"))


def _orjson_default(obj: object) -> object:
    # Our outbound schemas are msgspec Structs (design.md, house style 4); to_builtins keeps
    # their field names and omit_defaults settings.
    if isinstance(obj, msgspec.Struct):
        return msgspec.to_builtins(obj)
    raise TypeError(f"Type is not JSON serializable: {type(obj).__name__}")


def encode_event(event: str, payload: object) -> bytes:
    """Frame ``payload`` as compact one-line JSON under the event name ``event``.

    orjson's output has no spaces after separators, keeps non-ASCII as UTF-8 and escapes
    control characters, so it is always one line. msgspec Structs are accepted too. Raises
    ``TypeError`` for a payload orjson cannot serialise and ``ValueError`` for an event name
    containing CR or LF.
    """
    if "\n" in event or "\r" in event:
        raise ValueError("SSE event name must not contain CR or LF")
    data = orjson.dumps(payload, default=_orjson_default)
    return b"".join((b"event: ", event.encode(), b"\ndata: ", data, b"\n\n"))
