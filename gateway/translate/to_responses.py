"""Anthropic Messages request → OpenAI Responses request payload (protocol.md §5, §9.1-§9.5,
§9.9, §9.10).

Pure: imports neither aiohttp nor asyncio. The payload is built as plain dicts and lists that
reference the request's strings (no copies, no JSON round trips of messages), because a Claude
Code request is 50-150 KB and is translated on every turn (claude-code.md §3).

The upstream is always used statelessly (``store: false``, the full history every turn), so the
input must satisfy the Responses validation rules on its own (protocol.md §5 "Validation facts",
§10.10): every ``function_call`` has a ``function_call_output`` after it and vice versa, a
``reasoning`` item is followed by the item it produced, item ids are only sent on reasoning
items, and ``call_id`` is at most 64 characters.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

import msgspec
import orjson

from ..errors import InvalidRequestError
from ..schemas.anthropic import (
    Base64Source,
    ContentSource,
    DocumentBlock,
    FileSource,
    ImageBlock,
    Message,
    MessagesRequest,
    RedactedThinkingBlock,
    SearchResultBlock,
    TextBlock,
    TextSource,
    ThinkingBlock,
    ToolChoiceAny,
    ToolChoiceAuto,
    ToolChoiceNone,
    ToolChoiceTool,
    ToolReferenceBlock,
    ToolResultBlock,
    ToolUseBlock,
    URLSource,
)
from ..settings import Route
from .common import Signer, call_id_to_upstream
from .tool_schema import clean_schema, upstream_tool_name

__all__ = ["session_id_from", "to_responses", "tool_name_map"]

#: Claude Code's first system block; its suffix changes every request (claude-code.md §3), so
#: forwarding it would defeat the upstream prefix cache.
BILLING_HEADER_PREFIX: Final = "x-anthropic-billing-header:"
#: Responses rejects ``max_output_tokens`` below 16 (protocol.md §5).
MIN_OUTPUT_TOKENS: Final = 16
#: ``function_call_output`` placeholders (protocol.md §9.2, §9.5): OpenAI needs an output for
#: every call and an empty one is not known to be accepted.
EMPTY_OUTPUT: Final = "(empty)"
NO_RESULT: Final = "(no result)"
TOOL_ERROR_PREFIX: Final = "[tool error] "

# protocol.md §9.1: Anthropic service tiers → Responses service tiers.
_SERVICE_TIERS: Final = {"auto": "auto", "standard_only": "default"}


# ---------------------------------------------------------------------------------------------
# Public API


def session_id_from(req: MessagesRequest, header_value: str | None) -> str | None:
    """The client's conversation id, used to bucket the upstream prompt cache.

    The ``X-Claude-Code-Session-Id`` header when present; else ``metadata.user_id``, which
    Claude Code sends as a JSON *string* ``{"device_id":…,"account_uuid":"","session_id":…}``
    (claude-code.md §3) and whose ``session_id`` is then used; else the raw ``user_id``; else
    None.
    """
    if header_value:
        return header_value
    user_id = req.metadata.user_id if req.metadata is not None else None
    if not user_id:
        return None
    if user_id.startswith("{"):
        try:
            doc = orjson.loads(user_id)
        except orjson.JSONDecodeError:
            return user_id
        if isinstance(doc, dict):
            sid = doc.get("session_id")
            if isinstance(sid, str) and sid:
                return sid
    return user_id


def tool_name_map(req: MessagesRequest) -> dict[str, str]:
    """Upstream tool name → client tool name, for the offered tools whose name was changed.

    Empty for nearly every request (names already match ``^[a-zA-Z0-9_-]{1,64}$``); the
    response side uses it to give ``tool_use.name`` back in the client's spelling.
    """
    out: dict[str, str] = {}
    for tool in req.tools or ():
        if _is_custom(tool.type, tool.input_schema):
            upstream = upstream_tool_name(tool.name)
            if upstream != tool.name:
                out[upstream] = tool.name
    return out


def to_responses(
    req: MessagesRequest,
    route: Route,
    signer: Signer,
    *,
    stream: bool,
    session_id: str | None = None,
) -> dict[str, Any]:
    """The JSON payload for ``POST {route.base_url}/responses``.

    ``session_id`` defaults to ``session_id_from(req, None)``. Raises ``InvalidRequestError``,
    whose message starts with the JSON path of the offending value (``messages.2.content.0:
    …``), for requests that cannot be honoured: ``file`` sources, non-PDF base64 documents,
    a ``tool_choice`` naming a tool that is not forwarded, a json_schema format without schema.
    The returned structure shares strings (and memoised tool schemas) with the request and the
    schema cache: serialise it, do not mutate it.
    """
    effort_override = _message_effort(req.messages)
    reasoning = _reasoning(req, route, effort_override)
    payload: dict[str, Any] = {"model": route.upstream_model}
    instructions = _instructions(req.system)
    if instructions:
        payload["instructions"] = instructions
    payload["input"] = _Input(signer, with_reasoning=reasoning is not None).build(req.messages)

    tools = _tools(req)
    if tools:
        payload["tools"] = tools
    if req.tools:
        # Validated even when no tool is left: a choice that forces a dropped server tool
        # cannot be honoured (protocol.md §10.16).
        _tool_choice(req, payload, forwarded=bool(tools))

    if reasoning is not None:
        payload["reasoning"] = reasoning
        payload["include"] = ["reasoning.encrypted_content"]

    fmt = req.output_config.format if req.output_config is not None else None
    if fmt is not None and fmt.type == "json_schema":
        if fmt.schema is None:
            raise InvalidRequestError("output_config.format.schema: required for json_schema")
        payload["text"] = {
            "format": {
                "type": "json_schema",
                "name": "output",
                "schema": fmt.schema,
                "strict": False,
            }
        }

    limit = route.max_output_tokens
    max_tokens = req.max_tokens if limit is None else min(req.max_tokens, limit)
    payload["max_output_tokens"] = max(MIN_OUTPUT_TOKENS, max_tokens)
    if route.sampling:
        # OpenAI reasoning models reject temperature/top_p (protocol.md §1.2); top_k has no
        # Responses field. stop_sequences are emulated on the response side (§9.8).
        if req.temperature is not None:
            payload["temperature"] = req.temperature
        if req.top_p is not None:
            payload["top_p"] = req.top_p
    payload["store"] = False
    payload["stream"] = stream

    user_id = req.metadata.user_id if req.metadata is not None else None
    if user_id:
        # ≤128 characters upstream; a hash keeps it short and does not leak the client's id.
        payload["safety_identifier"] = _sha(user_id)[:32]
    session = session_id if session_id is not None else session_id_from(req, None)
    if session:
        payload["prompt_cache_key"] = "cc-" + _sha(session)[:32]
    tier = _SERVICE_TIERS.get(req.service_tier) if req.service_tier is not None else None
    if tier is not None:
        payload["service_tier"] = tier
    return payload


# ---------------------------------------------------------------------------------------------
# Top-level fields


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _instructions(system: str | list[TextBlock] | None) -> str | None:
    if system is None or isinstance(system, str):
        return system or None
    texts = [b.text for b in system if b.text and not b.text.startswith(BILLING_HEADER_PREFIX)]
    return "\n\n".join(texts) or None


def _message_effort(messages: list[Message]) -> str | None:
    """The effort of the last ``role: "system"`` message that carries one (claude-code.md §3:
    Claude Code's per-turn ``output_config``); it overrides the top-level effort."""
    for msg in reversed(messages):
        config = msg.output_config
        if msg.role == "system" and config is not None and config.effort is not None:
            return config.effort
    return None


def _budget_effort(budget: int) -> str:
    # protocol.md §9.10: the gateway's bucketing of Anthropic thinking budgets.
    if budget < 4096:
        return "low"
    if budget < 16384:
        return "medium"
    return "high"


def _reasoning(
    req: MessagesRequest, route: Route, effort_override: str | None
) -> dict[str, Any] | None:
    """The ``reasoning`` object, or None when the request does not send reasoning.

    protocol.md §9.10: an explicit effort (a system message's, else ``output_config.effort``)
    wins; ``enabled`` budgets are bucketed; ``adaptive`` uses the explicit effort or the
    route's default (or none); ``disabled`` / no thinking reason only when an effort is given;
    unknown thinking types (``between_tools`` …) do not reason. Routes whose model takes no
    reasoning parameters never get any.
    """
    if not route.reasoning:
        return None
    explicit = effort_override
    if explicit is None and req.output_config is not None:
        explicit = req.output_config.effort
    thinking = req.thinking
    kind = thinking.type if thinking is not None else "disabled"
    effort: str | None
    if thinking is not None and kind == "enabled":
        # A budget-less ``enabled`` (malformed, but seen from older clients) uses the default.
        if explicit is not None:
            effort = explicit
        elif thinking.budget_tokens is not None:
            effort = _budget_effort(thinking.budget_tokens)
        else:
            effort = route.default_effort
    elif kind == "adaptive":
        effort = explicit if explicit is not None else route.default_effort
    elif kind == "disabled":
        if explicit is None:
            return None
        effort = explicit
    else:
        return None
    out: dict[str, Any] = {}
    if effort is not None:
        out["effort"] = effort
    if thinking is None or thinking.display != "omitted":
        out["summary"] = "auto"
    return out


def _is_custom(kind: str | None, schema: dict[str, Any] | None) -> bool:
    # Server tools have a versioned type and no input_schema (protocol.md §1.4).
    return (kind is None or kind == "custom") and schema is not None


def _tools(req: MessagesRequest) -> list[dict[str, Any]]:
    """Custom tools as function tools; server tools dropped (protocol.md §9.1).

    ``strict: false`` always: Responses defaults to strict, which demands
    ``additionalProperties: false`` and every property required (protocol.md §5). Tools with
    ``defer_loading`` (Claude Code's tool search, claude-code.md §3) are offered like any
    other: the upstream has no deferred loading, and offering them costs only prompt tokens.
    """
    out: list[dict[str, Any]] = []
    for tool in req.tools or ():
        if not _is_custom(tool.type, tool.input_schema):
            continue
        fn: dict[str, Any] = {"type": "function", "name": upstream_tool_name(tool.name)}
        if tool.description is not None:
            fn["description"] = tool.description
        fn["parameters"] = clean_schema(tool.input_schema)
        fn["strict"] = False
        out.append(fn)
    return out


def _tool_choice(req: MessagesRequest, payload: dict[str, Any], *, forwarded: bool) -> None:
    """Set ``tool_choice`` / ``parallel_tool_calls`` (protocol.md §9.1).

    Raises when the choice forces a tool that is not forwarded (a server tool, or a name the
    request does not define): dropping it would change what the client asked for.
    """
    choice = req.tool_choice
    if choice is None:
        return
    if isinstance(choice, ToolChoiceTool):
        names = {t.name for t in req.tools or () if _is_custom(t.type, t.input_schema)}
        if choice.name not in names:
            raise InvalidRequestError(
                f"tool_choice.name: {choice.name!r} is not a custom tool of this request "
                "(server tools are not forwarded upstream)"
            )
        payload["tool_choice"] = {"type": "function", "name": upstream_tool_name(choice.name)}
    elif isinstance(choice, ToolChoiceAny):
        if not forwarded:
            raise InvalidRequestError(
                "tool_choice.type: 'any' needs a tool, but this request has only server "
                "tools, which are not forwarded upstream"
            )
        payload["tool_choice"] = "required"
    elif not forwarded:
        return
    elif isinstance(choice, ToolChoiceAuto):
        payload["tool_choice"] = "auto"
    else:
        assert isinstance(choice, ToolChoiceNone)
        payload["tool_choice"] = "none"
        return
    if choice.disable_parallel_tool_use:
        payload["parallel_tool_calls"] = False


# ---------------------------------------------------------------------------------------------
# Input items


def _input_text(text: str) -> dict[str, Any]:
    return {"type": "input_text", "text": text}


def _image_part(block: ImageBlock, path: str) -> dict[str, Any]:
    """protocol.md §9.4. Anthropic file ids mean nothing upstream, so they are a 400."""
    src = block.source
    if isinstance(src, Base64Source):
        url = f"data:{src.media_type};base64,{src.data}"
    elif isinstance(src, URLSource):
        url = src.url
    else:
        raise InvalidRequestError(f"{path}.source: file_id sources are not supported")
    # ``detail`` is required by the Responses schema (protocol.md §5).
    return {"type": "input_image", "image_url": url, "detail": "auto"}


def _document_parts(block: DocumentBlock, path: str) -> list[dict[str, Any]]:
    """protocol.md §9.4: PDFs as ``input_file``, text and content sources inline."""
    src = block.source
    header = [s for s in (block.title, block.context) if s]
    if isinstance(src, Base64Source):
        if src.media_type != "application/pdf":
            # Anthropic accepts base64 documents only as PDF; anything else is malformed.
            raise InvalidRequestError(
                f"{path}.source.media_type: base64 documents must be application/pdf, "
                f"got {src.media_type!r}"
            )
        name = block.title or "document"
        if not name.lower().endswith(".pdf"):
            name += ".pdf"
        return [
            {
                "type": "input_file",
                "filename": name,
                "file_data": f"data:application/pdf;base64,{src.data}",
            }
        ]
    if isinstance(src, URLSource):
        return [{"type": "input_file", "file_url": src.url}]
    if isinstance(src, TextSource):
        return [_input_text("\n".join([*header, src.data]))]
    if isinstance(src, ContentSource):
        if isinstance(src.content, str):
            return [_input_text("\n".join([*header, src.content]))]
        parts: list[dict[str, Any]] = []
        if header:
            parts.append(_input_text("\n".join(header)))
        for k, inner in enumerate(src.content):
            if isinstance(inner, TextBlock):
                if inner.text:
                    parts.append(_input_text(inner.text))
            else:
                parts.append(_image_part(inner, f"{path}.source.content.{k}"))
        return parts
    assert isinstance(src, FileSource)
    raise InvalidRequestError(f"{path}.source: file_id sources are not supported")


def _search_result_text(block: SearchResultBlock) -> str:
    return "\n".join(
        [s for s in (block.title, block.source) if s] + [t.text for t in block.content if t.text]
    )


def _tool_reference_text(block: ToolReferenceBlock) -> str:
    # Claude Code's tool search (claude-code.md §3): the named tool is already in ``tools``.
    return f"Tool loaded: {block.tool_name}"


def _tool_output(block: ToolResultBlock, path: str) -> str | list[dict[str, Any]]:
    """``function_call_output.output`` for a tool_result (protocol.md §9.5).

    A string for string content and for lists of text-like blocks (joined by newlines); a
    list of input parts when images or documents are present; ``"(empty)"`` for nothing. No
    error flag exists upstream, so ``is_error`` becomes a ``"[tool error] "`` prefix.
    """
    content = block.content
    output: str | list[dict[str, Any]]
    if content is None or isinstance(content, str):
        output = content or EMPTY_OUTPUT
    elif all(isinstance(c, TextBlock | ToolReferenceBlock | SearchResultBlock) for c in content):
        texts: list[str] = []
        for c in content:
            if isinstance(c, TextBlock):
                text = c.text
            elif isinstance(c, ToolReferenceBlock):
                text = _tool_reference_text(c)
            else:
                assert isinstance(c, SearchResultBlock)
                text = _search_result_text(c)
            if text:
                texts.append(text)
        output = "\n".join(texts) or EMPTY_OUTPUT
    else:
        parts: list[dict[str, Any]] = []
        for k, c in enumerate(content):
            if isinstance(c, TextBlock):
                if c.text:
                    parts.append(_input_text(c.text))
            elif isinstance(c, ImageBlock):
                parts.append(_image_part(c, f"{path}.content.{k}"))
            elif isinstance(c, DocumentBlock):
                parts.extend(_document_parts(c, f"{path}.content.{k}"))
            elif isinstance(c, ToolReferenceBlock):
                parts.append(_input_text(_tool_reference_text(c)))
            else:
                parts.append(_input_text(_search_result_text(c)))
        output = parts or EMPTY_OUTPUT
    if block.is_error:
        if isinstance(output, str):
            output = TOOL_ERROR_PREFIX + output
        elif output and output[0]["type"] == "input_text":
            output[0] = _input_text(TOOL_ERROR_PREFIX + output[0]["text"])
        else:
            output.insert(0, _input_text(TOOL_ERROR_PREFIX.rstrip()))
    return output


def _arguments(block: ToolUseBlock) -> str:
    """``tool_use.input`` as compact JSON text (``"{}"`` when absent)."""
    if block.input is None:
        return "{}"
    try:
        return orjson.dumps(block.input).decode()
    except TypeError:  # orjson refuses integers wider than 64 bits; msgspec does not
        return msgspec.json.encode(block.input).decode()


class _Input:
    """Builds the ``input`` list from ``messages`` in one pass (protocol.md §9.2).

    Orphans are hard 400s upstream (protocol.md §5), so: a tool_result whose call did not come
    earlier (or was already answered) is dropped, and a tool_use that no later tool_result
    answers gets a synthetic ``"(no result)"`` output right after its assistant turn. That
    includes the calls of a trailing assistant message (a prefill continuation): OpenAI needs
    the output there too.
    """

    __slots__ = ("_answered", "_called", "_items", "_results_at", "_signer", "_with_reasoning")

    def __init__(self, signer: Signer, *, with_reasoning: bool) -> None:
        self._signer = signer
        self._with_reasoning = with_reasoning
        self._items: list[dict[str, Any]] = []
        self._called: set[str] = set()
        self._answered: set[str] = set()
        #: upstream call_id → index of the last message holding a tool_result for it
        self._results_at: dict[str, int] = {}

    def build(self, messages: list[Message]) -> list[dict[str, Any]]:
        results_at = self._results_at
        for i, msg in enumerate(messages):
            if msg.role == "user" and not isinstance(msg.content, str):
                for block in msg.content:
                    if type(block) is ToolResultBlock:
                        results_at[call_id_to_upstream(block.tool_use_id)] = i
        for i, msg in enumerate(messages):
            if msg.role == "user":
                self._user(msg, i)
            elif msg.role == "assistant":
                self._assistant(msg, i)
            else:
                self._system(msg)
        return self._items

    def _system(self, msg: Message) -> None:
        # Claude Code's mid-conversation system message (claude-code.md §3, §9.1): a developer
        # message in place; Responses has no system role inside a stateless history.
        content = msg.content
        if isinstance(content, str):
            parts = [_input_text(content)] if content else []
        else:
            parts = [_input_text(b.text) for b in content if type(b) is TextBlock and b.text]
        if parts:
            self._items.append({"role": "developer", "content": parts})

    def _user(self, msg: Message, i: int) -> None:
        content = msg.content
        items = self._items
        if isinstance(content, str):
            if content:
                items.append({"role": "user", "content": [_input_text(content)]})
            return
        parts: list[dict[str, Any]] = []
        for j, block in enumerate(content):
            kind = type(block)
            if kind is TextBlock:
                if block.text:
                    parts.append({"type": "input_text", "text": block.text})
            elif kind is ToolResultBlock:
                # Tool outputs go before the rest of the user turn (protocol.md §9.2): they
                # must follow their calls, and the user's text comes after the results.
                call_id = call_id_to_upstream(block.tool_use_id)
                if call_id in self._called and call_id not in self._answered:
                    self._answered.add(call_id)
                    output = _tool_output(block, f"messages.{i}.content.{j}")
                    items.append(
                        {"type": "function_call_output", "call_id": call_id, "output": output}
                    )
            elif kind is ImageBlock:
                parts.append(_image_part(block, f"messages.{i}.content.{j}"))
            elif kind is DocumentBlock:
                parts.extend(_document_parts(block, f"messages.{i}.content.{j}"))
            elif kind is SearchResultBlock:
                parts.append(_input_text(_search_result_text(block)))
            elif kind is ToolReferenceBlock:
                parts.append(_input_text(_tool_reference_text(block)))
            # tool_use / thinking in a user turn and server-tool artefacts: nothing upstream.
        if parts:
            items.append({"role": "user", "content": parts})

    def _assistant(self, msg: Message, i: int) -> None:
        content = msg.content
        items = self._items
        if isinstance(content, str):
            if content:
                items.append(_assistant_message([_output_text(content)]))
            return
        turn: list[dict[str, Any]] = []
        text: list[dict[str, Any]] = []
        unanswered: list[str] = []
        for block in content:
            kind = type(block)
            if kind is TextBlock:
                if block.text:
                    text.append(_output_text(block.text))
            elif kind is ToolUseBlock:
                if text:
                    turn.append(_assistant_message(text))
                    text = []
                call_id = call_id_to_upstream(block.id)
                turn.append(
                    {
                        "type": "function_call",
                        "call_id": call_id,
                        "name": upstream_tool_name(block.name),
                        "arguments": _arguments(block),
                    }
                )
                self._called.add(call_id)
                if self._results_at.get(call_id, -1) <= i:
                    unanswered.append(call_id)
            elif kind is ThinkingBlock or kind is RedactedThinkingBlock:
                item = self._reasoning_item(block)
                if item is not None:
                    if text:
                        turn.append(_assistant_message(text))
                        text = []
                    turn.append(item)
            # images, documents, server-tool artefacts: not allowed / meaningless upstream.
        if text:
            turn.append(_assistant_message(text))
        # A reasoning item must be followed by the item it produced (protocol.md §9.10).
        while turn and turn[-1].get("type") == "reasoning":
            turn.pop()
        items.extend(turn)
        for call_id in unanswered:
            self._answered.add(call_id)
            items.append({"type": "function_call_output", "call_id": call_id, "output": NO_RESULT})

    def _reasoning_item(
        self, block: ThinkingBlock | RedactedThinkingBlock
    ) -> dict[str, Any] | None:
        """A reasoning item for a thinking block this gateway minted, else None.

        Real Claude signatures, ``""`` (Claude Code echoes unsigned thinking that way,
        claude-code.md §4) and edited tokens fail ``Signer.decode``. A token without
        encrypted content is useless too: with ``store: false`` the upstream cannot look the
        item up by id.
        """
        if not self._with_reasoning:
            return None
        if isinstance(block, ThinkingBlock):
            token, text = block.signature, block.thinking
        else:
            token, text = block.data, ""
        decoded = _decode_signature(self._signer, token) if token else None
        if decoded is None or decoded[1] is None:
            return None
        rs_id, encrypted = decoded
        return {
            "type": "reasoning",
            "id": rs_id,
            "summary": [{"type": "summary_text", "text": text}] if text else [],
            "encrypted_content": encrypted,
        }


_SIGNATURE_CACHE_MAX: Final = 512
_signature_cache: dict[tuple[Signer, str], tuple[str, str | None] | None] = {}


def _decode_signature(signer: Signer, token: str) -> tuple[str, str | None] | None:
    """``signer.decode(token)``, memoised: every request of a session re-sends all earlier
    thinking blocks, and the HMAC check dominated translation time without the cache. Keyed
    by the signer object itself (held, so its id is never reused) and the exact token."""
    key = (signer, token)
    try:
        return _signature_cache[key]
    except KeyError:
        pass
    decoded = signer.decode(token)
    if len(_signature_cache) >= _SIGNATURE_CACHE_MAX:
        del _signature_cache[next(iter(_signature_cache))]
    _signature_cache[key] = decoded
    return decoded


def _output_text(text: str) -> dict[str, Any]:
    # Assistant history uses output_text parts (protocol.md §5, §10.10).
    return {"type": "output_text", "text": text, "annotations": []}


def _assistant_message(parts: list[dict[str, Any]]) -> dict[str, Any]:
    return {"role": "assistant", "content": parts}
