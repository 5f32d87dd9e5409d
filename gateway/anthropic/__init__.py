"""The Anthropic side, shared by every upstream dialect (pure: no aiohttp, no asyncio).

Where each rule lives:

* ``ids``: message, request and tool ids, and the mapping of tool ids to upstream call ids
* ``signatures``: the thinking-block signature envelope (``Signer``)
* ``stop``: ``stop_reason`` and its precedence; ``usage``: Anthropic usage from OpenAI usage
* ``frames``: the SSE frames Anthropic clients read; ``stream``: the message lifecycle and
  block bookkeeping every stream translator shares (``BaseStreamTranslator``)
* ``tools``: tool names both ways, tool input parsing; ``tool_schema``: schemas sent upstream
* ``request``: what a request asks for (system text, effort, tool choice, session id)
* ``parts``: content that becomes upstream parts (images, documents, tool results)
* ``stop_sequences``: stop-sequence emulation

Errors and their statuses are in :mod:`gateway.errors`.
"""
