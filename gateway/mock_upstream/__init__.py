"""Built-in OpenAI-compatible fake upstream: Responses and Chat Completions, stream and not,
plus the Files and Batch APIs.

A real aiohttp server with three users:

* ``make run`` without an OpenAI key (``python -m gateway.mock_upstream``): answers are fake but
  shaped exactly like api.openai.com's (see ``/work/shared/corpus``).
* The test suite: ``MockUpstream.enqueue(Script(...))`` scripts the next answer, including
  byte-level faults (odd chunk splits, CRLF, delays, stalls, mid-stream disconnects, garbage).
* The benchmark: the default answer path does no I/O besides the socket and serialises each
  event once with orjson.

Without a queued script the answer is derived from the request: ``defaults.py`` lists the
``mock:…`` directives.

Modules: ``scripts`` (the script types), ``defaults`` (the unscripted answer), ``errors``
(OpenAI's error texts and envelope), ``render_common``, ``render_responses`` and
``render_chat`` (bodies and event streams), ``answer`` (a non-streaming answer's status and
body), ``shaping`` (byte-level faults), ``files_api`` and ``batches`` (the Files and Batch APIs),
``server`` (``MockUpstream``, ``start_mock`` and the command line; ``__main__`` runs it).

This package stands alone (aiohttp, orjson, stdlib): it must not import other gateway modules.
Importing it has no side effects.
"""

from __future__ import annotations

# Besides __all__, the names tests and annotations use are re-exported ("X as X").
from .answer import plain_answer
from .batches import BatchLine, MockBatch
from .defaults import default_script
from .errors import error_envelope as error_envelope
from .files_api import FilesApi, MockFile
from .scripts import Api as Api
from .scripts import (
    Citation,
    CodeRun,
    Compaction,
    FunctionCall,
    McpCall,
    Reasoning,
    RecordedRequest,
    Refusal,
    Script,
    Text,
    WebSearch,
)
from .scripts import End as End
from .scripts import OutputItem as OutputItem
from .server import MOCK_KEY, MockUpstream, create_mock_app, main, start_mock
from .shaping import shape_writes as shape_writes

__all__ = [
    "MOCK_KEY",
    "BatchLine",
    "Citation",
    "CodeRun",
    "Compaction",
    "FilesApi",
    "FunctionCall",
    "McpCall",
    "MockBatch",
    "MockFile",
    "MockUpstream",
    "Reasoning",
    "RecordedRequest",
    "Refusal",
    "Script",
    "Text",
    "WebSearch",
    "create_mock_app",
    "default_script",
    "main",
    "plain_answer",
    "start_mock",
]
