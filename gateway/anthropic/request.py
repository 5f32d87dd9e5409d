"""What an Anthropic request asks for, read the same way for every upstream dialect.

The system text without Claude Code's billing header, the session id, the effort a request
reasons with (``thinking``, ``output_config.effort``, per-turn system messages) and its tool
choice (protocol.md §9.1). The structured output it wants is :mod:`.strict`'s."""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass
from typing import Final, Literal

import orjson

from ..errors import InvalidRequestError
from ..schemas.anthropic import (
    Message,
    MessagesRequest,
    TextBlock,
    ToolChoiceAny,
    ToolChoiceAuto,
    ToolChoiceNone,
    ToolChoiceTool,
)
from ..settings import Route
from .functions import client_tool_names
from .tool_schema import upstream_tool_name

#: Claude Code's first system block; its suffix changes every request (claude-code.md §3), so
#: forwarding it would defeat the upstream prefix cache.
BILLING_HEADER_PREFIX: Final = "x-anthropic-billing-header:"


def sha_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


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


def system_text(system: str | list[TextBlock] | None) -> str | None:
    """The top-level ``system`` as one string (blocks joined by a blank line), billing header
    dropped; None when nothing is left."""
    if system is None or isinstance(system, str):
        return system or None
    texts = [b.text for b in system if b.text and not b.text.startswith(BILLING_HEADER_PREFIX)]
    return "\n\n".join(texts) or None


def system_message_texts(msg: Message) -> list[str]:
    """The non-empty texts of a mid-conversation ``role: "system"`` message (claude-code.md §3:
    a string, a list of text blocks, or ``[]`` carrying only ``output_config``)."""
    content = msg.content
    if isinstance(content, str):
        return [content] if content else []
    return [b.text for b in content if type(b) is TextBlock and b.text]


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


def thinking_effort(req: MessagesRequest, route: Route) -> tuple[bool, str | None]:
    """``(reason, effort)``: whether the request reasons upstream, and with which effort.

    protocol.md §9.10: an explicit effort (a system message's, else ``output_config.effort``)
    wins; ``enabled`` budgets are bucketed; ``adaptive`` uses the explicit effort or the
    route's default (or none: ``(True, None)``); ``disabled`` / no thinking reason only when an
    effort is given; unknown thinking types (``between_tools`` …) do not reason. Routes whose
    model takes no reasoning parameters never reason: ``(False, None)``.
    """
    if not route.reasoning:
        return False, None
    explicit = _message_effort(req.messages)
    if explicit is None and req.output_config is not None:
        explicit = req.output_config.effort
    thinking = req.thinking
    kind = thinking.type if thinking is not None else "disabled"
    if thinking is not None and kind == "enabled":
        # A budget-less ``enabled`` (malformed, but seen from older clients) uses the default.
        if explicit is not None:
            return True, explicit
        if thinking.budget_tokens is not None:
            return True, _budget_effort(thinking.budget_tokens)
        return True, route.default_effort
    if kind == "adaptive":
        return True, explicit if explicit is not None else route.default_effort
    if kind == "disabled" and explicit is not None:
        return True, explicit
    return False, None


@dataclass(frozen=True, slots=True)
class ToolChoicePlan:
    """The upstream tool choice, dialect-neutral: ``mode`` is what both APIs call
    ``"auto"`` / ``"required"`` / ``"none"``, or ``"function"`` forcing ``name`` (the upstream
    spelling); ``no_parallel`` asks for ``parallel_tool_calls: false``."""

    mode: Literal["auto", "required", "none", "function"]
    name: str | None = None
    no_parallel: bool = False


def tool_choice_plan(
    req: MessagesRequest, *, forwarded: bool, hosted: Collection[str] = ()
) -> ToolChoicePlan | None:
    """protocol.md §9.1. None: send no ``tool_choice``. ``forwarded``: at least one tool is
    sent upstream; ``hosted``: the names of the server tools sent as hosted tools. Call it
    whenever the request has tools, even if none is forwarded.

    Raises when the choice forces a tool that is not forwarded (a server tool, or a name the
    request does not define): dropping it would change what the client asked for (§10.16).
    Forcing a hosted server tool is ``required`` when it is the only tool (Claude Code's
    WebSearch sub-request); next to other tools it cannot be said upstream: a 400.
    """
    choice = req.tool_choice
    if choice is None:
        return None
    if isinstance(choice, ToolChoiceTool):
        names = client_tool_names(req)
        if choice.name in hosted:
            if len(hosted) == 1 and not names:
                return ToolChoicePlan("required")
            raise InvalidRequestError(
                f"tool_choice.name: forcing the server tool {choice.name!r} next to other "
                "tools has no upstream equivalent"
            )
        if choice.name not in names:
            raise InvalidRequestError(
                f"tool_choice.name: {choice.name!r} is not a tool of this request that the "
                "client runs (server tools are not forwarded upstream)"
            )
        return ToolChoicePlan(
            "function",
            upstream_tool_name(choice.name),
            no_parallel=bool(choice.disable_parallel_tool_use),
        )
    if isinstance(choice, ToolChoiceAny):
        if not forwarded:
            raise InvalidRequestError(
                "tool_choice.type: 'any' needs a tool, but this request has only server "
                "tools, which are not forwarded upstream"
            )
        return ToolChoicePlan("required", no_parallel=bool(choice.disable_parallel_tool_use))
    if not forwarded:
        return None
    if isinstance(choice, ToolChoiceAuto):
        return ToolChoicePlan("auto", no_parallel=bool(choice.disable_parallel_tool_use))
    assert isinstance(choice, ToolChoiceNone)
    return ToolChoicePlan("none")
