"""Responses API response object → Anthropic ``Message`` (non-streaming), plus the mapping
helpers the stream translator shares, so both paths follow one set of rules.

Pure: no aiohttp, no asyncio. protocol.md §2 (target shape), §6 (source shape), §9.3 (block
mapping), §9.6 (stop_reason), §9.7 (usage), §9.8 (stop sequences), §9.10 (reasoning).

Rules (identical in ``responses.stream``):

* one ``text`` block per ``message`` item: its ``output_text`` and ``refusal`` parts
  concatenated; empty text makes no block (the stream opens text blocks lazily);
* ``function_call`` → ``tool_use`` (id from ``call_id``, name mapped back to the client's);
  ``input`` is the parsed arguments object: invalid JSON → ``{}``, a non-object → ``{"value": v}``;
* ``reasoning`` (only when ``thinking``) → ``thinking`` with the summary texts joined by
  ``"\\n\\n"`` (or vLLM ``reasoning_text`` content when there is no summary) and a gateway
  signature; no text but ``encrypted_content`` → ``redacted_thinking``; neither → nothing;
* a non-empty refusal part → ``stop_reason: refusal``;
* item types we do not request (hosted tools) are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import msgspec

from ...anthropic.citations import CitationPlan
from ...anthropic.ids import message_id, tool_use_id_from_upstream
from ...anthropic.signatures import Signer
from ...anthropic.stop import POLICY_REFUSAL_CODES, refusal_details, stop_reason
from ...anthropic.stop_sequences import cut_at_stop_sequence
from ...anthropic.strict import NO_STRICT, StrictPlan, strict_arguments
from ...anthropic.tools import client_tool_name, tool_input
from ...anthropic.usage import estimate_tokens, set_service_tier, usage_from_responses
from ...errors import NO_RESPONSE, BadGatewayError, failure_error, invalid_response
from ...schemas.anthropic_out import (
    MessageResponse,
    OutBlock,
    OutRedactedThinking,
    OutText,
    OutThinking,
    OutToolUse,
    Usage,
)
from ...schemas.openai_responses import (
    RESPONSE_DECODER,
    FunctionCallItem,
    MessageItem,
    ReasoningItem,
    ResponseUsage,
    decode_item,
)
from .hosted import HOSTED_ITEMS, hosted_blocks, is_search
from .hosted import citations as url_citations

__all__ = ["final_usage", "from_responses", "message_text", "reasoning_block", "reasoning_text"]


# ---------------------------------------------------------------------------------------------
# Helpers the stream translator (responses/stream.py) uses too


def message_text(item: MessageItem) -> tuple[str, bool]:
    """(visible text of a message item, whether it carried a non-empty refusal)."""
    parts: list[str] = []
    refusal = False
    for part in item.content or ():
        if part.type == "refusal":
            if part.refusal:
                parts.append(part.refusal)
                refusal = True
        elif part.text:
            parts.append(part.text)
    return "".join(parts), refusal


def reasoning_text(item: ReasoningItem) -> str:
    """Summary texts joined by a blank line; raw ``reasoning_text`` only when no summary."""
    texts = [p.text for p in item.summary or () if p.text]
    if not texts:
        texts = [p.text for p in item.content or () if p.text]
    return "\n\n".join(texts)


def reasoning_block(
    item_id: str | None, text: str, encrypted_content: str | None, signer: Signer
) -> OutThinking | OutRedactedThinking | None:
    """The block for a reasoning item (§9.10): thinking, redacted_thinking, or nothing."""
    if text:
        return OutThinking(thinking=text, signature=signer.encode(item_id or "", encrypted_content))
    if encrypted_content:
        return OutRedactedThinking(data=signer.encode(item_id or "", encrypted_content))
    return None


def final_usage(
    usage: ResponseUsage | None, *, input_tokens: int, output_chars: int, searches: int = 0
) -> Usage:
    """Anthropic usage from the upstream's, or an estimate when it reported none.

    "None" includes an all-zero report: responses-stream-incomplete-max-output-tokens ends
    with zeros although 16 tokens were produced; an estimate is closer (§9.7). ``searches``:
    the hosted web searches run (``server_tool_use.web_search_requests``).
    """
    if usage is None or not (usage.input_tokens or usage.output_tokens):
        out = Usage(input_tokens=input_tokens, output_tokens=estimate_tokens(output_chars))
    else:
        out = usage_from_responses(usage)
    if searches:
        out.server_tool_use = {"web_search_requests": searches, "web_fetch_requests": 0}
    return out


# ---------------------------------------------------------------------------------------------
# Non-streaming


def from_responses(
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
    """Translate the upstream's non-streaming JSON body into an Anthropic Message.

    Hosted-tool items become server blocks (:mod:`.hosted`; results from ``blocked_domains``
    left out), ``url_citation`` annotations citations on their text.

    Strict answers are restored to the client's schemas first (:mod:`gateway.anthropic.strict`).

    ``model`` is the client's model string (echoed, protocol.md §10 item 14). With
    ``thinking=False`` reasoning items produce no blocks. ``stop_sequences`` are emulated by
    cutting the text at the first match and dropping every later block (§9.8); usage then
    stays the upstream's, which is what was generated and billed.

    Raises ``errors.from_upstream_failure(code, message)`` for ``status: failed`` and
    ``errors.BadGatewayError("upstream returned an invalid response: …")`` for a body that does not
    decode, or a response that is not finished (``cancelled``, ``queued``, ``in_progress``).
    """
    try:
        resp = RESPONSE_DECODER.decode(body)
    except msgspec.DecodeError as exc:
        raise invalid_response(str(exc)) from None
    status = resp.status
    policy = resp.error is not None and resp.error.code in POLICY_REFUSAL_CODES
    if (status == "failed" or (status is None and resp.error is not None)) and not policy:
        raise failure_error(resp.error)
    if status in ("cancelled", "queued", "in_progress"):
        raise invalid_response(f"status {status}")
    if resp.output is None and not policy:
        raise BadGatewayError(NO_RESPONSE)

    content: list[OutBlock] = []
    refusal = policy
    tool_use = False
    matched: str | None = None
    chars = 0
    searches = 0
    for raw in resp.output or ():
        try:
            item = decode_item(raw)
        except msgspec.DecodeError as exc:
            raise invalid_response(f"output item: {exc}") from None
        if isinstance(item, MessageItem):
            text, is_refusal = message_text(item)
            refusal = refusal or is_refusal
            restorer = strict.text()
            if restorer is not None and not is_refusal:
                text = restorer.restore_text(text)
            if stop_sequences:
                text, matched = cut_at_stop_sequence(text, stop_sequences)
            if text and citations is not None:
                content += citations.segments(text)  # quoted sources cited (issue 15)
                chars += len(text)
            elif text:
                cited = (
                    url_citations(item, signer, blocked_domains)
                    if matched is None and restorer is None
                    else []
                )
                content.append(OutText(text=text, citations=cited) if cited else OutText(text=text))
                chars += len(text)
            if matched is not None:
                break
        elif isinstance(item, FunctionCallItem):
            content.append(
                OutToolUse(
                    id=tool_use_id_from_upstream(item.call_id),
                    name=client_tool_name(item.name, tool_names),
                    input=tool_input(strict_arguments(strict, item.name, item.arguments)),
                )
            )
            tool_use = True
            chars += len(item.arguments or "")
        elif isinstance(item, HOSTED_ITEMS):
            content += hosted_blocks(item, signer, blocked_domains)
            searches += is_search(item)
        elif isinstance(item, ReasoningItem) and thinking:
            text = reasoning_text(item)
            block = reasoning_block(item.id, text, item.encrypted_content, signer)
            if block is not None:
                content.append(block)
                chars += len(text)
        # None (an item type we do not request) and reasoning with thinking off: ignored.

    incomplete = resp.incomplete_details.reason if resp.incomplete_details else None
    reason = stop_reason(
        incomplete_reason=incomplete, refusal=refusal, tool_use=tool_use, stop_sequence=matched
    )
    usage = final_usage(resp.usage, input_tokens=0, output_chars=chars, searches=searches)
    set_service_tier(usage, resp.service_tier)
    message = MessageResponse(
        id=message_id(),
        model=model,
        content=content,
        stop_reason=reason,
        stop_sequence=matched,
        usage=usage,
    )
    if reason == "refusal":
        error = resp.error if policy else None
        message.stop_details = refusal_details(
            error.code if error else None, error.message if error else None
        )
    return message
