"""Chat Completions (``POST /chat/completions``): OpenAI, vLLM, Ollama, llama.cpp, LM Studio,
OpenRouter and the other compatible servers, with their differences as route capabilities
(protocol.md §8, §10 items 11-12)."""

from __future__ import annotations

from ..base import Dialect
from .request import to_chat
from .response import from_chat
from .stream import ChatStreamTranslator

DIALECT = Dialect(
    name="chat",
    path="/chat/completions",
    to_upstream=to_chat,
    from_upstream=from_chat,
    stream_translator=ChatStreamTranslator,
)
