"""OpenAI Chat Completions wire types we read: the ``chat.completion`` body and its chunks.

protocol.md §8 (shapes, server quirks) and §10 item 12; checked against the real recordings in
``shared/corpus/chat-*.json`` (INDEX.md facts 20-26).

* Only the fields the gateway uses are declared; msgspec skips the rest (``obfuscation``,
  ``logprobs``, ``service_tier``, ``system_fingerprint``, vLLM/llama.cpp ``timings`` …).
* Every field has a default: compatible servers omit what OpenAI always sends — the tool-call
  ``index`` (Ollama before 0.4.7, Gemini), the first call's ``id`` (Ollama/gpt-oss), ``usage``
  without ``include_usage`` (INDEX.md fact 22).
* The request payload is built as plain dicts by ``translate.to_chat`` (like the Responses
  one), so there are no request structs here.
* ``usage`` is kept as a plain dict for ``translate.common.usage_from_chat``; it arrives once
  per stream, never on the hot path (every other chunk has ``"usage": null``).
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
from msgspec import Struct

__all__ = [
    "CHUNK_DECODER",
    "COMPLETION_DECODER",
    "ChatChoice",
    "ChatCompletion",
    "ChatError",
    "ChatMessage",
    "Chunk",
    "ChunkChoice",
    "ContentPart",
    "Delta",
    "FunctionFragment",
    "ToolCall",
    "ToolCallFragment",
]


class ContentPart(Struct, kw_only=True, gc=False):
    """A part of a list-valued ``content`` (Mistral's reasoning models answer with parts);
    only ``type: "text"`` parts are read."""

    type: str = ""
    text: str | None = None


#: ``content`` as OpenAI sends it (a string or null), or as a part list.
Content = str | list[ContentPart] | None


class FunctionFragment(Struct, kw_only=True, gc=False):
    """``function`` of a tool call (whole, or one streamed fragment; legacy ``function_call``)."""

    name: str | None = None
    arguments: str | None = None


class ToolCallFragment(Struct, kw_only=True, gc=False):
    """One ``delta.tool_calls[]`` entry. The first fragment of a call carries ``id``, ``type``
    and ``function.name``; later ones only ``index`` and ``function.arguments`` (INDEX.md fact
    21). Any of the three keys may be missing on compatible servers (protocol.md §10.12)."""

    index: int | None = None
    id: str | None = None
    function: FunctionFragment | None = None


class Delta(Struct, kw_only=True, gc=False):
    content: Content = None
    refusal: str | None = None
    # Reasoning extension (not in OpenAI's spec): DeepSeek and older vLLM use
    # reasoning_content, newer vLLM (vllm#27752), OpenRouter and SGLang use reasoning (§8).
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[ToolCallFragment] | None = None
    function_call: FunctionFragment | None = None


class ChunkChoice(Struct, kw_only=True, gc=False):
    index: int = 0
    delta: Delta | None = None
    finish_reason: str | None = None
    # vLLM: the stop string that ended generation (or a stop token id); protocol.md §9.8.
    stop_reason: str | int | None = None


class ChatError(Struct, kw_only=True, gc=False):
    """``{"error": {message, type, code}}``; llama.cpp sends an integer ``code``."""

    message: str | None = None
    type: str | None = None
    code: str | int | None = None


class Chunk(Struct, kw_only=True, gc=False):
    """One ``chat.completion.chunk``, the final usage chunk (``choices: []``), or a
    mid-stream ``{"error": …}`` object (§8; a bare string on some servers)."""

    choices: list[ChunkChoice] | None = None
    usage: dict[str, Any] | None = None
    error: ChatError | str | None = None
    service_tier: str | None = None


class ToolCall(Struct, kw_only=True, gc=False):
    id: str | None = None
    function: FunctionFragment | None = None


class ChatMessage(Struct, kw_only=True, gc=False):
    content: Content = None
    refusal: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[ToolCall] | None = None
    function_call: FunctionFragment | None = None


class ChatChoice(Struct, kw_only=True, gc=False):
    index: int = 0
    message: ChatMessage | None = None
    finish_reason: str | None = None
    stop_reason: str | int | None = None


class ChatCompletion(Struct, kw_only=True, gc=False):
    """The non-streaming body; ``error`` for servers that answer 200 with an error object."""

    choices: list[ChatChoice] | None = None
    usage: dict[str, Any] | None = None
    error: ChatError | str | None = None
    service_tier: str | None = None


CHUNK_DECODER: Final = msgspec.json.Decoder(Chunk)
COMPLETION_DECODER: Final = msgspec.json.Decoder(ChatCompletion)
