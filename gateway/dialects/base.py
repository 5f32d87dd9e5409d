"""What a dialect is: the record the handlers use, and the stream contract the relay drives.

Pure: no aiohttp, no asyncio. Each dialect package (``responses/``, ``chat/``) exports one
:class:`Dialect` named ``DIALECT`` built from its three faces: ``request`` (Anthropic request
→ upstream payload), ``response`` (upstream body → Message) and ``stream`` (upstream events →
Anthropic frames).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import GatewayError
from ..schemas.anthropic_out import MessageResponse, Usage
from ..sse import SSEEvent


class StreamTranslator(Protocol):
    """The incremental contract every upstream stream dialect implements (design.md item 2)."""

    @property
    def done(self) -> bool: ...
    @property
    def usage(self) -> Usage: ...
    @property
    def stop_reason(self) -> str | None: ...
    @property
    def frames_out(self) -> int: ...
    @property
    def error(self) -> GatewayError | None: ...

    #: top-level fields for the final ``message_delta`` (``context_management``)
    delta_extra: dict[str, Any] | None
    #: end the message after a compaction block
    pause_after_compaction: bool
    #: the client asked for ``speed: fast``
    fast_requested: bool

    def feed(self, event: SSEEvent) -> list[bytes]: ...
    def feed_many(self, events: Iterable[SSEEvent]) -> list[bytes]: ...
    def finish(self) -> list[bytes]: ...
    def fail(self, err: GatewayError) -> list[bytes]: ...


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one upstream wire dialect is spoken: its path and its three translators."""

    name: str
    #: appended to the upstream's base URL
    path: str
    #: ``(request, route, signer, *, stream, session_id) -> payload``
    to_upstream: Callable[..., dict[str, Any]]
    #: ``(body, *, model, signer, thinking, stop_sequences, tool_names) -> Message``
    from_upstream: Callable[..., MessageResponse]
    #: ``(*, model, signer, thinking, request_id, stop_sequences, tool_names, message_id)``
    stream_translator: Callable[..., StreamTranslator]
