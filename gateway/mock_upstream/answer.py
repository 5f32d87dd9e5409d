"""The non-streaming answer of a script: ``(status, body)``, for live requests and batch lines."""

from __future__ import annotations

import orjson

from .errors import error_envelope
from .render_chat import render_chat_json
from .render_common import Turn
from .render_responses import render_responses_json
from .scripts import Script


def plain_answer(turn: Turn, script: Script) -> tuple[int, bytes]:
    """Status and body answering ``turn`` (taken as non-streaming) with ``script``.

    Non-200 scripts, ``error_event`` and Chat's ``failed`` are error envelopes (500 when the
    script's status is 200); ``raw_body`` replaces the body either way.
    """
    if (
        script.status != 200
        or script.end == "error_event"
        or (turn.api == "chat" and script.end == "failed")
    ):
        status = script.status if script.status != 200 else 500
        if script.raw_body is not None:
            return status, script.raw_body
        err = script.error_body or error_envelope(status, script, turn.model)
        return status, orjson.dumps(err, option=orjson.OPT_INDENT_2)
    if script.raw_body is not None:
        return 200, script.raw_body
    renderer = render_responses_json if turn.api == "responses" else render_chat_json
    return 200, renderer(turn, script)
