"""OpenAI's error texts and the error envelope, as api.openai.com words them."""

from __future__ import annotations

from typing import Final

from .scripts import JSON, Script

_STATUS_MESSAGES: Final[dict[int, tuple[str, str, str | None]]] = {
    # status: (message, type, code), shaped like api.openai.com's (corpus + openai-python tests)
    400: ("Invalid request (mock upstream).", "invalid_request_error", None),
    401: (
        "Incorrect API key provided: sk-mock****. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        "invalid_request_error",
        "invalid_api_key",
    ),
    403: (
        "Project does not have access to this model (mock upstream).",
        "invalid_request_error",
        "model_not_found",
    ),
    404: (
        "The model does not exist or you do not have access to it.",
        "invalid_request_error",
        "model_not_found",
    ),
    429: (
        "Rate limit reached for requests per min (RPM): Limit 3, Used 3, Requested 1. "
        "Please try again in 1s.",
        "requests",
        "rate_limit_exceeded",
    ),
    500: (
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        None,
    ),
    502: ("Bad gateway.", "server_error", None),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
}
CONTEXT_MESSAGE: Final = (
    "Your input exceeds the context window of this model. Please adjust your input and try again."
)
_FAILED_MESSAGE: Final = (
    "The server had an error processing your request. Sorry about that! You can retry your "
    "request, or contact us through our help center at help.openai.com if you keep seeing this "
    "error."
)
BAD_JSON_MESSAGE: Final = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON.)"
)


def failure(script: Script) -> tuple[str, str, str]:
    """(code, type, message) of a ``failed`` / ``error_event`` / Chat error chunk."""
    return (
        script.error_code or "server_error",
        script.error_type or "server_error",
        script.error_message or _FAILED_MESSAGE,
    )


def error_envelope(status: int, script: Script | None = None, model: str = "") -> JSON:
    """OpenAI's error body ``{"error": {message, type, param, code}}`` for ``status``."""
    default = _STATUS_MESSAGES.get(
        status,
        (
            "Mock upstream error.",
            "server_error" if status >= 500 else "invalid_request_error",
            None,
        ),
    )
    message, etype, code = default
    if status == 404 and model:
        message = f"The model `{model}` does not exist or you do not have access to it."
    if script is not None:
        message = script.error_message or message
        etype = script.error_type or etype
        code = script.error_code or code
    return {"error": {"message": message, "type": etype, "param": None, "code": code}}


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> JSON:
    """The ``invalid_request_error`` envelope with ``message`` and ``param``."""
    return {
        "error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    }
