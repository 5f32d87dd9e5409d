"""What a request asks of the answer, beyond its translation (issue 15): read once, before
the upstream call, and applied to the answer after it.

Pure: no aiohttp, no asyncio. :func:`prepare` rewrites the request as the API would see it
(``context_management`` edits, compaction replay, citable sources labelled) and returns the
:class:`AnswerPlan` the response translators and the handler use: the client's model name,
thinking, stop sequences, tool names, blocked search domains, strict schemas, citations, fast
mode, the edits applied and whether the answer pauses after a compaction.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from ..schemas.anthropic import MessagesRequest
from ..schemas.anthropic_out import MessageResponse
from ..settings import Route
from .citations import CitationPlan, citation_plan, citations_from_doc, citations_to_doc
from .compaction import pause_at_compaction, pauses, replay
from .context_edits import apply_edits, edit_plan, rough_count
from .resource_ids import resolve_files
from .server_tools import blocked_domains
from .signatures import Signer
from .strict import StrictPlan, strict_from_doc, strict_plan, strict_to_doc
from .tools import tool_name_map
from .usage import echo_speed

#: a ``cache_control`` asking for the one-hour cache, anywhere in the body
_LONG_TTL: Final = re.compile(rb'"ttl"\s*:\s*"1h"')
#: the rarely used features' JSON tokens: one regex pass over the raw body says whether any
#: is there (four ``in`` searches took ~190 µs on a 150 KB Claude Code request, this ~50 µs;
#: issue 19); only then is each looked for. Never ``findall``: a body of a million ``"1h"``
#: values would build a million-item list.
_MARKERS: Final = re.compile(rb'"(?:file_id|compaction|citations|1h)"')
_MARKER_TOKENS: Final = (b'"file_id"', b'"compaction"', b'"citations"', b'"1h"')


@dataclass(slots=True)
class AnswerPlan:
    model: str
    thinking: bool
    stop_sequences: list[str] | None
    tool_names: Mapping[str, str]
    blocked_domains: tuple[str, ...]
    strict: StrictPlan
    citations: CitationPlan | None
    #: the client asked for ``speed: fast``
    fast: bool
    #: ``{"applied_edits": …}`` when the request carried ``context_management``
    managed: dict[str, Any] | None
    #: ``pause_after_compaction``
    pause: bool
    #: a ``cache_control`` ttl of 1h somewhere in the request
    long_cache: bool

    def translator_args(self) -> dict[str, Any]:
        """The keyword arguments of both response translators (JSON and stream)."""
        return {
            "model": self.model,
            "thinking": self.thinking,
            "stop_sequences": self.stop_sequences,
            "tool_names": self.tool_names,
            "blocked_domains": self.blocked_domains,
            "strict": self.strict,
            "citations": self.citations,
        }

    def finish(self, message: MessageResponse) -> None:
        """What the JSON answer gains from the request (speed, edits, a compaction pause)."""
        if self.fast:
            echo_speed(message.usage)
        if self.managed is not None:
            message.context_management = self.managed
            if self.pause:
                pause_at_compaction(message)

    def to_doc(self) -> dict[str, Any]:
        """The plan as JSON: a batch keeps it until its results are read (issue 15)."""
        return {
            "model": self.model,
            "thinking": self.thinking,
            "stop": self.stop_sequences,
            "names": dict(self.tool_names),
            "blocked": list(self.blocked_domains),
            "strict": strict_to_doc(self.strict),
            "cites": citations_to_doc(self.citations),
            "fast": self.fast,
            "managed": self.managed,
            "pause": self.pause,
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> AnswerPlan:
        return cls(
            model=str(doc.get("model") or ""),
            thinking=bool(doc.get("thinking")),
            stop_sequences=doc.get("stop"),
            tool_names=doc.get("names") or {},
            blocked_domains=tuple(doc.get("blocked") or ()),
            strict=strict_from_doc(doc.get("strict")),
            citations=citations_from_doc(doc.get("cites")),
            fast=bool(doc.get("fast")),
            managed=doc.get("managed"),
            pause=bool(doc.get("pause")),
            long_cache=False,
        )

    def configure(self, translator: Any) -> None:
        """The same for a stream translator (its final ``message_delta``)."""
        translator.fast_requested = self.fast
        if self.managed is not None:
            translator.delta_extra = {"context_management": self.managed}
            translator.pause_after_compaction = self.pause


def prepare(
    raw: bytes, req: MessagesRequest, route: Route, signer: Signer
) -> tuple[MessagesRequest, AnswerPlan]:
    """The request as the upstream should see it, and the plan for its answer. The raw body
    is only searched, so the rarely used features cost nothing when absent."""
    found = () if _MARKERS.search(raw) is None else [t for t in _MARKER_TOKENS if t in raw]
    if b'"file_id"' in found:  # file sources: the upstream's own files (signed ids)
        req = resolve_files(req, signer, route.upstream)
    edits = edit_plan(req)
    managed = None
    if edits is not None:
        req, applied = apply_edits(req, edits, rough_count)
        managed = {"applied_edits": applied}
    if b'"compaction"' in found:  # history before the last compaction block is dropped
        req = replay(req, signer, native=route.compaction)
    cites = None
    if b'"citations"' in found:  # documents whose answer cites them (emulated)
        req, cites = citation_plan(req)
    thinking = req.thinking
    plan = AnswerPlan(
        model=req.model,
        thinking=route.reasoning
        and thinking is not None
        and thinking.type in ("enabled", "adaptive"),
        stop_sequences=req.stop_sequences,
        tool_names=tool_name_map(req),
        blocked_domains=blocked_domains(req),
        strict=strict_plan(req),
        citations=cites,
        fast=req.speed == "fast",
        managed=managed,
        pause=edits is not None and pauses(req),
        long_cache=b'"1h"' in found and _LONG_TTL.search(raw) is not None,
    )
    return req, plan
