"""The OpenAI Responses API (``POST /responses``): protocol.md §5-§7."""

from __future__ import annotations

from ..base import Dialect
from .request import to_responses
from .response import from_responses
from .stream import ResponsesStreamTranslator

DIALECT = Dialect(
    name="responses",
    path="/responses",
    to_upstream=to_responses,
    from_upstream=from_responses,
    stream_translator=ResponsesStreamTranslator,
)
