"""Chat Completions body → Anthropic ``Message`` (non-streaming), plus the mapping helpers the
stream translator shares, so both paths follow one set of rules.

Pure: no aiohttp, no asyncio. protocol.md §2 (target shape), §8 (source shape and server
quirks), §9.3 (block mapping), §9.6 (stop_reason), §9.7 (usage), §9.8 (stop sequences),
§9.10 (thinking).

Rules (identical in ``chat.stream``):

* only ``choices`` index 0 is read (the gateway never asks for ``n > 1``);
* blocks in the order the stream produces them: ``thinking`` (``reasoning_content``, else
  ``reasoning``; only when the client asked for thinking), then ``text`` (``content`` then
  ``refusal``), then one ``tool_use`` per call that has a name;
* text or thinking that is only whitespace makes no block: Anthropic rejects such text blocks
  when the client sends them back, and templates often emit ``"\\n\\n"`` before tool calls;
* thinking blocks carry ``signature: ""``: there is nothing to round-trip (Chat reasoning is
  plain text, sent back under the route's ``thinking_field``), and the SDK and Claude Code
  accept an empty signature (claude-code.md §4);
* a call without an ``id`` gets a minted ``toolu_`` id; ``input`` is the parsed arguments
  object (invalid JSON → ``{}``, a non-object → ``{"value": v}``, as for Responses);
* ``stop_reason`` (:func:`chat_stop_reason`): a stop sequence found by scanning the text
  (servers that ignore ``stop``) or reported by the server (vLLM's ``stop_reason``) →
  ``stop_sequence``; ``length`` → ``max_tokens``; ``content_filter`` or a refusal →
  ``refusal``; any emitted tool call (whatever the finish_reason, ``stop`` included) →
  ``tool_use``; else ``end_turn``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from ...anthropic.citations import CitationPlan
from ...anthropic.ids import message_id, tool_use_id_from_upstream
from ...anthropic.signatures import Signer
from ...anthropic.stop import refusal_details, stop_reason
from ...anthropic.stop_sequences import cut_at_stop_sequence
from ...anthropic.strict import NO_STRICT, StrictPlan, strict_arguments
from ...anthropic.tools import client_tool_name, tool_input
from ...anthropic.usage import estimate_tokens, set_service_tier, usage_from_chat
from ...errors import (
    NO_RESPONSE,
    BadGatewayError,
    GatewayError,
    failure_error,
    from_upstream_failure,
    invalid_response,
)
from ...schemas.anthropic_out import (
    MessageResponse,
    OutBlock,
    OutText,
    OutThinking,
    OutToolUse,
    StopReason,
    Usage,
)
from ...schemas.openai_chat import (
    COMPLETION_DECODER,
    ChatChoice,
    ChatError,
    ChatMessage,
    Content,
    ToolCall,
)

__all__ = [
    "chat_error",
    "chat_stop_reason",
    "chat_usage",
    "content_text",
    "first_choice",
    "from_chat",
    "invalid_response",
    "server_stop_sequence",
]

# ---------------------------------------------------------------------------------------------
# Shared helpers (also used by chat.stream)


def content_text(content: Content) -> str:
    """``content`` as text: the string, or the ``text`` parts of a part list joined."""
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(p.text for p in content if p.type == "text" and p.text)


def server_stop_sequence(
    finish_reason: str | None, reported: str | int | None, stop_sequences: list[str] | None
) -> str | None:
    """The stop sequence the server says ended generation: vLLM puts the matched string in
    ``choices[].stop_reason`` (an int there is a stop *token*). Only a sequence the client
    asked for counts. OpenAI does not say which one matched (protocol.md §8): None."""
    if finish_reason != "stop" or not isinstance(reported, str) or not stop_sequences:
        return None
    return reported if reported in stop_sequences else None


def chat_stop_reason(
    finish_reason: str | None,
    *,
    refusal: bool,
    tool_use: bool,
    stop_sequence: str | None,
) -> StopReason:
    """protocol.md §9.6, Chat column, via common.stop_reason (one precedence for both
    dialects). ``tool_use``: a tool_use block was emitted; ``finish_reason: "tool_calls"``
    without one (every call lacked a name) is ``end_turn``, never a tool_use stop with
    nothing to run."""
    incomplete = finish_reason if finish_reason in ("length", "content_filter") else None
    return stop_reason(
        incomplete_reason=incomplete,
        refusal=refusal,
        tool_use=tool_use,
        stop_sequence=stop_sequence,
    )


def chat_usage(usage: dict[str, Any] | None, *, input_tokens: int, output_chars: int) -> Usage:
    """Anthropic usage from the upstream's (cached reads split out, §9.7), or an estimate when
    it reported none (no ``include_usage``, or a server that ignores it) or only zeros."""
    if not usage or not (usage.get("prompt_tokens") or usage.get("completion_tokens")):
        return Usage(input_tokens=input_tokens, output_tokens=estimate_tokens(output_chars))
    return usage_from_chat(usage)


def chat_error(error: ChatError | str | None) -> GatewayError:
    """An ``{"error": …}`` object (mid-stream chunk or 200 body; a bare string on some
    servers) → GatewayError, as :func:`gateway.errors.failure_error`."""
    if isinstance(error, str):
        return from_upstream_failure(None, error)
    return failure_error(error)


def first_choice(choices: list[ChatChoice]) -> ChatChoice:
    for choice in choices:
        if choice.index == 0:
            return choice
    return choices[0]


# ---------------------------------------------------------------------------------------------
# Non-streaming


def _tool_uses(
    message: ChatMessage, tool_names: Mapping[str, str] | None, strict: StrictPlan
) -> tuple[list[OutBlock], int]:
    calls: list[ToolCall] = list(message.tool_calls or ())
    if message.function_call is not None:
        calls.append(ToolCall(function=message.function_call))  # legacy, protocol.md §9.6
    blocks: list[OutBlock] = []
    chars = 0
    for call in calls:
        fn = call.function
        if fn is None or not fn.name:
            continue  # a call without a name cannot be forwarded
        blocks.append(
            OutToolUse(
                id=tool_use_id_from_upstream(call.id),
                name=client_tool_name(fn.name, tool_names),
                input=tool_input(strict_arguments(strict, fn.name, fn.arguments)),
            )
        )
        chars += len(fn.arguments or "")
    return blocks, chars


def from_chat(
    body: bytes,
    *,
    model: str,
    signer: Signer,
    thinking: bool,
    stop_sequences: list[str] | None = None,
    tool_names: Mapping[str, str] | None = None,
    blocked_domains: Sequence[str] = (),
    strict: StrictPlan = NO_STRICT,
    citations: CitationPlan | None = None,
) -> MessageResponse:
    """Translate the upstream's non-streaming ``chat.completion`` body into a Message.
    (``blocked_domains`` is for hosted search, which Chat upstreams never run.) Strict
    answers are restored to the client's schemas first (:mod:`gateway.anthropic.strict`).

    ``model`` is the client's model string (echoed, protocol.md §10 item 14). ``signer`` is
    accepted for the dialect interface and unused (module docstring: no signatures). With
    ``thinking=False`` reasoning makes no block. ``stop_sequences`` cut the text at the first
    match and drop the tool calls after it (§9.8); usage stays the upstream's.

    Raises ``errors.from_upstream_failure(code, message)`` for a body that is an error object
    (some servers answer 200 with one), and ``errors.BadGatewayError("upstream returned an invalid
    response: …")`` for a body that does not decode or has no choice.
    """
    try:
        resp = COMPLETION_DECODER.decode(body)
    except msgspec.DecodeError as exc:
        raise invalid_response(str(exc)) from None
    if not resp.choices:
        if resp.error is not None:
            raise chat_error(resp.error)
        raise BadGatewayError(NO_RESPONSE)
    choice = first_choice(resp.choices)
    message = choice.message or ChatMessage()

    content: list[OutBlock] = []
    chars = 0
    if thinking:
        reasoning = message.reasoning_content or message.reasoning
        if reasoning and not reasoning.isspace():
            content.append(OutThinking(thinking=reasoning, signature=""))
            chars += len(reasoning)
    text = content_text(message.content)
    restorer = strict.text()
    if restorer is not None:
        text = restorer.restore_text(text)
    text += message.refusal or ""
    matched: str | None = None
    if stop_sequences:
        text, matched = cut_at_stop_sequence(text, stop_sequences)
    if text and not text.isspace():
        if citations is not None:
            content += citations.segments(text)  # quoted sources cited (issue 15)
        else:
            content.append(OutText(text=text))
        chars += len(text)
    tool_use = False
    if matched is None:
        calls, call_chars = _tool_uses(message, tool_names, strict)
        content += calls
        chars += call_chars
        tool_use = bool(calls)
        matched = server_stop_sequence(choice.finish_reason, choice.stop_reason, stop_sequences)
    reason = chat_stop_reason(
        choice.finish_reason,
        refusal=bool(message.refusal),
        tool_use=tool_use,
        stop_sequence=matched,
    )
    usage = chat_usage(resp.usage, input_tokens=0, output_chars=chars)
    set_service_tier(usage, resp.service_tier)
    out = MessageResponse(
        id=message_id(),
        model=model,
        content=content,
        stop_reason=reason,
        stop_sequence=matched,
        usage=usage,
    )
    if reason == "refusal":
        out.stop_details = refusal_details()
    return out
