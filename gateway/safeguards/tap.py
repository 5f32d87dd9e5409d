"""Reads a stream's frames on their way to the client: the tool calls it carries, and the final
``message_delta``, which it holds back until the verdicts are in.

Pure: no aiohttp, no asyncio. Text and tool deltas pass through untouched and at once; only the
frames from ``message_delta`` on wait (issue 13 item 3). The tool calls are recorded as the
client accumulates them (the ids it saw, the concatenated ``partial_json``), so verdicts are keyed
by exactly what the client has. Only streams whose request carried ``safeguards`` are tapped.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from ..sse_out import encode_event
from .verdicts import ToolCall

_START: Final = b"event: content_block_start\n"
_DELTA: Final = b"event: content_block_delta\n"
_MESSAGE_DELTA: Final = b"event: message_delta\n"
_DATA: Final = b"data: "


class SafeguardTap:
    __slots__ = ("_args", "_names", "held", "stop_reason")

    def __init__(self) -> None:
        self._names: dict[int, tuple[str, str]] = {}  # block index → (id, name)
        self._args: dict[int, list[str]] = {}
        #: the frames from ``message_delta`` on, once seen (None before)
        self.held: bytes | None = None
        self.stop_reason: str | None = None

    def feed(self, data: bytes) -> bytes:
        """Record what ``data`` (whole frames) carries; return what may be sent now."""
        if self.held is not None:
            self.held += data
            return b""
        pos = 0
        while pos < len(data):
            end = data.find(b"\n\n", pos)
            end = len(data) if end < 0 else end + 2
            frame = data[pos:end]
            if frame.startswith(_MESSAGE_DELTA):
                self.held = data[pos:]
                self.stop_reason = _payload(frame).get("delta", {}).get("stop_reason")
                return data[:pos]
            if frame.startswith(_START) and b'"tool_use"' in frame:
                doc = _payload(frame)
                block = doc.get("content_block") or {}
                if block.get("type") == "tool_use":
                    self._names[doc.get("index", -1)] = (block.get("id", ""), block.get("name", ""))
                    self._args[doc.get("index", -1)] = []
            elif frame.startswith(_DELTA) and b'"input_json_delta"' in frame:
                doc = _payload(frame)
                args = self._args.get(doc.get("index", -1))
                if args is not None:
                    args.append((doc.get("delta") or {}).get("partial_json") or "")
            pos = end
        return data

    def tool_calls(self) -> tuple[list[ToolCall], list[str]]:
        """The calls whose input parsed, and the ids of those whose input did not (a call cut
        by ``max_tokens`` is judged by nobody: it gets ``unavailable: truncated``)."""
        calls: list[ToolCall] = []
        broken: list[str] = []
        for index, (call_id, name) in sorted(self._names.items()):
            text = "".join(self._args.get(index, ())) or "{}"
            try:
                value = orjson.loads(text)
            except orjson.JSONDecodeError:
                broken.append(call_id)
                continue
            calls.append(ToolCall(call_id, name, value))
        return calls, broken

    def release(self, results: list[dict[str, Any]]) -> bytes:
        """The held frames, with ``safeguard_results`` in the ``message_delta``'s ``delta``."""
        assert self.held is not None
        end = self.held.find(b"\n\n") + 2
        doc = _payload(self.held[:end])
        doc.setdefault("delta", {})["safeguard_results"] = results
        return encode_event("message_delta", doc) + self.held[end:]


def _payload(frame: bytes) -> dict[str, Any]:
    start = frame.find(_DATA)
    if start < 0:
        return {}
    try:
        doc = orjson.loads(frame[start + len(_DATA) :].strip())
    except orjson.JSONDecodeError:
        return {}
    return doc if isinstance(doc, dict) else {}
