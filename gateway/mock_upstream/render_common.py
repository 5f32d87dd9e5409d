"""What the Responses and Chat renderers share: the per-answer ``Turn``, usage figures, and
how function-call arguments and reasoning are cut into deltas."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from .scripts import JSON, Api, FunctionCall, OutputItem, Reasoning, Refusal, Script, Text


def arg_chunks(call: FunctionCall) -> list[str]:
    if call.chunks is not None:
        return call.chunks
    args = call.arguments
    return [args[i : i + 8] for i in range(0, len(args), 8)]


def chat_reasoning(item: Reasoning) -> str:
    if item.reasoning_text is not None:
        return "".join(item.reasoning_text)
    return "\n\n".join(item.summary)


@dataclass(slots=True)
class Usage:
    """The token counts of one answer, in either dialect's shape."""

    input_tokens: int
    cached_tokens: int
    output_tokens: int
    reasoning_tokens: int

    @classmethod
    def compute(cls, script: Script, raw_len: int) -> Usage:
        """Deterministic defaults (bytes // 4, chars // 4), overridden by ``script.usage``."""
        reasoning_chars = output_chars = 0
        for item in script.items:
            if isinstance(item, Reasoning):
                reasoning_chars += sum(map(len, item.summary))
                reasoning_chars += sum(map(len, item.reasoning_text or ()))
            elif isinstance(item, FunctionCall):
                output_chars += len(item.name) + len(item.arguments)
            elif isinstance(item, Text | Refusal):
                output_chars += len(item.text)
        reasoning = reasoning_chars // 4
        over = script.usage or {}
        return cls(
            input_tokens=over.get("input_tokens", max(1, raw_len // 4)),
            cached_tokens=over.get("cached_tokens", 0),
            output_tokens=over.get("output_tokens", max(1, output_chars // 4) + reasoning),
            reasoning_tokens=over.get("reasoning_tokens", reasoning),
        )

    def responses(self) -> JSON:
        return {
            "input_tokens": self.input_tokens,
            "input_tokens_details": {"cached_tokens": self.cached_tokens},
            "output_tokens": self.output_tokens,
            "output_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
            "total_tokens": self.input_tokens + self.output_tokens,
        }

    def chat(self) -> JSON:
        return {
            "prompt_tokens": self.input_tokens,
            "completion_tokens": self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": self.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }


@dataclass(slots=True)
class Turn:
    """Per-request values every renderer needs."""

    api: Api
    body: JSON
    raw_len: int
    model: str
    key: str  # unique per answer; item ids are derived from it
    created: int
    stream: bool

    def item_id(self, prefix: str, index: int) -> str:
        return f"{prefix}_{self.key}{index:02d}"

    def call_id(self, call: FunctionCall, index: int) -> str:
        return call.call_id or f"call_{self.key}{index:02d}"


def call_run(
    items: Sequence[OutputItem], start: int, group: bool
) -> list[tuple[int, FunctionCall]]:
    """The function call at ``start`` and, when ``group``, the calls directly after it."""
    run: list[tuple[int, FunctionCall]] = []
    for index in range(start, len(items) if group else start + 1):
        item = items[index]
        if not isinstance(item, FunctionCall):
            break
        run.append((index, item))
    return run


#: the tiers the mock serves as asked; anything else (``auto``, none) is ``default``
_SERVED: Final = frozenset({"default", "flex", "priority", "scale"})


def served_tier(body: JSON) -> str:
    """The ``service_tier`` OpenAI echoes: the one asked for, or ``default``."""
    tier = body.get("service_tier")
    return tier if isinstance(tier, str) and tier in _SERVED else "default"
