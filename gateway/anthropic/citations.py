"""Citations on documents and search results, emulated (issue 15 item 7).

Pure: no aiohttp, no asyncio. With ``citations: {"enabled": true}`` on its documents and
search results, Claude's answer comes as text blocks, the cited ones carrying
``char_location`` (text documents), ``content_block_location`` (content documents) or
``search_result_location`` citations whose ``cited_text`` is the source's own words. OpenAI
models have no such feature, so the gateway:

* labels each citable source in the prompt (``[document N]``, ``[search result N]``, N its
  index among the request's documents / search results, as Anthropic counts them) and tells
  the model to quote what supports a sentence verbatim in ``<cite source="document N">…</cite>``;
* finds each quote in its source (exactly, else with whitespace runs made equal) and makes it
  a cited text block with the source's own span; a quote that is not in its source stays as
  plain text, never a citation that points nowhere. The tags never reach the client.

What is not emulated: PDFs (the gateway cannot read their pages, so ``page_location`` is
impossible: a 400 says so), and Anthropic's own sentence chunking (a citation covers the quote
the model chose). As on the API, citations cannot be mixed on and off across documents, nor
combined with structured outputs.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from ..errors import InvalidRequestError
from ..schemas.anthropic import (
    Base64Source,
    ContentSource,
    DocumentBlock,
    Message,
    MessagesRequest,
    SearchResultBlock,
    TextBlock,
    TextSource,
    ToolResultBlock,
    URLSource,
)
from ..schemas.anthropic_out import OutText

INSTRUCTION: Final = (
    "Some documents and search results in this conversation are labelled [document N] or "
    "[search result N]. When a sentence of your answer is supported by one of them, quote the "
    'supporting words verbatim inside a tag naming it, like <cite source="document 0">the '
    'exact words</cite> or <cite source="search result 1">the exact words</cite>. Copy the '
    "words exactly as they appear; write everything else outside the tags."
)
#: A quote runs to its ``</cite>`` but never over the next opening tag: with ``.*?`` alone, each
#: tag left open read the rest of the answer, and 8,000 of them in a 224 KB answer took 5.6 s
#: (issue 19: nothing may grow worse than linearly). An unclosed tag stays as written.
_CITE: Final = re.compile(
    r'<cite source="(document|search result) (\d+)">((?:(?!<cite source=").)*?)</cite>', re.S
)
_SPACE: Final = re.compile(r"\s+")


@dataclass
class _Source:
    kind: str  # "text" | "content" | "search"
    index: int
    title: str | None
    #: the text (text documents), or the text of each block
    texts: list[str]
    source: str = ""


@dataclass
class CitationPlan:
    """The request's citable sources, by kind and index."""

    documents: dict[int, _Source] = field(default_factory=dict)
    results: dict[int, _Source] = field(default_factory=dict)

    def segments(self, text: str) -> list[OutText]:
        """The answer's text as blocks: cited quotes with their citations, the rest plain."""
        out: list[OutText] = []
        plain: list[str] = []
        pos = 0
        for m in _CITE.finditer(text):
            plain.append(text[pos : m.start()])
            pos = m.end()
            quote = m.group(3)
            source = (self.documents if m.group(1) == "document" else self.results).get(
                int(m.group(2))
            )
            citation = _locate(source, quote) if source is not None and quote.strip() else None
            if citation is None:
                plain.append(quote)
                continue
            _flush(plain, out)
            out.append(OutText(text=quote, citations=[citation]))
        plain.append(text[pos:])
        _flush(plain, out)
        return out


def citations_to_doc(plan: CitationPlan | None) -> Any:
    """The plan as JSON (a batch keeps it beside its requests)."""
    if plan is None:
        return None
    return {
        "d": [dataclasses.astuple(s) for s in plan.documents.values()],
        "r": [dataclasses.astuple(s) for s in plan.results.values()],
    }


def citations_from_doc(doc: Any) -> CitationPlan | None:
    if not isinstance(doc, dict):
        return None
    plan = CitationPlan()
    for row in doc.get("d") or ():
        source = _Source(*row)
        plan.documents[source.index] = source
    for row in doc.get("r") or ():
        source = _Source(*row)
        plan.results[source.index] = source
    return plan


def _flush(plain: list[str], out: list[OutText]) -> None:
    text = "".join(plain)
    plain.clear()
    if text:
        out.append(OutText(text=text))


def _find(haystack: str, quote: str) -> tuple[int, int] | None:
    at = haystack.find(quote)
    if at >= 0:
        return at, at + len(quote)
    stripped = quote.strip()
    if stripped and (at := haystack.find(stripped)) >= 0:
        return at, at + len(stripped)
    # whitespace runs made equal: map back through a regex of the quote's words
    words = stripped.split()
    if not words:
        return None
    m = re.search(r"\s+".join(re.escape(w) for w in words), haystack)
    return (m.start(), m.end()) if m else None


def _locate(source: _Source, quote: str) -> dict[str, Any] | None:
    if source.kind == "text":
        span = _find(source.texts[0], quote)
        if span is None:
            return None
        return {
            "type": "char_location",
            "cited_text": source.texts[0][span[0] : span[1]],
            "document_index": source.index,
            "document_title": source.title,
            "start_char_index": span[0],
            "end_char_index": span[1],
            "file_id": None,
        }
    for k, block in enumerate(source.texts):
        span = _find(block, quote)
        if span is None:
            continue
        if source.kind == "content":
            return {
                "type": "content_block_location",
                "cited_text": block[span[0] : span[1]],
                "document_index": source.index,
                "document_title": source.title,
                "start_block_index": k,
                "end_block_index": k + 1,
                "file_id": None,
            }
        return {
            "type": "search_result_location",
            "cited_text": block[span[0] : span[1]],
            "source": source.source,
            "title": source.title or None,
            "search_result_index": source.index,
            "start_block_index": k,
            "end_block_index": k + 1,
        }
    return None


def _enabled(block: DocumentBlock | SearchResultBlock) -> bool:
    return isinstance(block.citations, dict) and block.citations.get("enabled") is True


def citation_plan(req: MessagesRequest) -> tuple[MessagesRequest, CitationPlan | None]:
    """``req`` with its citable sources labelled and the instruction added, and the plan;
    ``(req, None)`` when no source has citations enabled (nothing changes)."""
    found: list[tuple[str, Any]] = []  # (path, block), in order
    for i, msg in enumerate(req.messages):
        if isinstance(msg.content, str):
            continue
        for j, block in enumerate(msg.content):
            if isinstance(block, DocumentBlock | SearchResultBlock):
                found.append((f"messages.{i}.content.{j}", block))
            elif isinstance(block, ToolResultBlock) and isinstance(block.content, list):
                for k, inner in enumerate(block.content):
                    if isinstance(inner, DocumentBlock | SearchResultBlock):
                        found.append((f"messages.{i}.content.{j}.content.{k}", inner))
    flags = {_enabled(b) for _, b in found}
    if True not in flags:
        return req, None
    if False in flags:
        raise InvalidRequestError(
            "citations must be enabled on all or none of the documents and search results"
        )
    if req.output_format is not None or (
        req.output_config is not None and req.output_config.format is not None
    ):
        raise InvalidRequestError("citations cannot be used with structured outputs")
    plan = CitationPlan()
    labelled: dict[int, Any] = {}
    for path, block in found:
        if isinstance(block, SearchResultBlock):
            n = len(plan.results)
            plan.results[n] = _Source("search", n, block.title, [t.text for t in block.content],
                                      source=block.source)  # fmt: skip
            labelled[id(block)] = msgspec.structs.replace(
                block, title=f"[search result {n}] {block.title}".rstrip()
            )
            continue
        n = len(plan.documents)
        src = block.source
        if isinstance(src, TextSource):
            plan.documents[n] = _Source("text", n, block.title, [src.data])
        elif isinstance(src, ContentSource):
            texts = (
                [src.content]
                if isinstance(src.content, str)
                else [b.text if isinstance(b, TextBlock) else "" for b in src.content]
            )
            plan.documents[n] = _Source("content", n, block.title, texts)
        elif isinstance(src, Base64Source | URLSource):
            raise InvalidRequestError(
                f"{path}.citations: citations on PDF documents are not supported by the "
                "gateway (it cannot read their pages to give page locations)"
            )
        label = f"[document {n}]" + (f" {block.title}" if block.title else "")
        labelled[id(block)] = msgspec.structs.replace(block, title=label)
    messages = [_relabel(m, labelled) for m in req.messages]
    system: Any = req.system
    if system is None or isinstance(system, str):
        system = f"{system}\n\n{INSTRUCTION}" if system else INSTRUCTION
    else:
        system = [*system, TextBlock(text=INSTRUCTION)]
    return msgspec.structs.replace(req, messages=messages, system=system), plan


def _relabel(msg: Message, labelled: dict[int, Any]) -> Message:
    if isinstance(msg.content, str):
        return msg
    changed = False
    content: list[Any] = []
    for block in msg.content:
        if id(block) in labelled:
            block, changed = labelled[id(block)], True
        elif isinstance(block, ToolResultBlock) and isinstance(block.content, list):
            inner = [labelled.get(id(b), b) for b in block.content]
            if any(a is not b for a, b in zip(inner, block.content, strict=True)):
                block, changed = msgspec.structs.replace(block, content=inner), True
        content.append(block)
    return msgspec.structs.replace(msg, content=content) if changed else msg
