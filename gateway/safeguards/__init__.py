"""Claude Code's auto-mode safety check on any upstream (issue 13).

``verdicts``: the ``safeguard_results`` shape and the classifier's answer mapped into it;
``prompt``: what the classifier is shown and the request that asks it; ``tap``: the stream
side (record the tool calls, hold the final ``message_delta``); ``classifier``: the one
upstream call per answer, bounded and fail-safe.
"""
