"""Anthropic content that becomes upstream content parts (protocol.md §9.4, §9.5).

Images, documents and tool results read the same for both dialects; the parts themselves are
dialect-specific, so they are built through a :class:`PartMaker` (``input_image`` /
``input_file`` for Responses, ``image_url`` / ``file`` for Chat Completions). Search results and
tool references read as text."""

from __future__ import annotations

from typing import Any, Final, Protocol

from ..errors import InvalidRequestError
from ..schemas.anthropic import (
    Base64Source,
    ContentSource,
    DocumentBlock,
    FileSource,
    ImageBlock,
    SearchResultBlock,
    TextBlock,
    TextSource,
    ToolReferenceBlock,
    ToolResultBlock,
    UpstreamFileSource,
    URLSource,
)

#: Tool-output placeholders (protocol.md §9.2, §9.5): OpenAI needs an output for every call
#: and an empty one is not known to be accepted.
EMPTY_OUTPUT: Final = "(empty)"
NO_RESULT: Final = "(no result)"


#: Neither dialect has an error flag on tool outputs (protocol.md §9.5): a GW convention.
TOOL_ERROR_PREFIX: Final = "[tool error] "


def search_result_text(block: SearchResultBlock) -> str:
    return "\n".join(
        [s for s in (block.title, block.source) if s] + [t.text for t in block.content if t.text]
    )


def tool_reference_text(block: ToolReferenceBlock) -> str:
    # Claude Code's tool search (claude-code.md §3): the named tool is already in ``tools``.
    return f"Tool loaded: {block.tool_name}"


class PartMaker(Protocol):
    """Builds one dialect's content parts (protocol.md §9.4). ``text_type`` is the ``type``
    of its text parts; only text parts carry that type."""

    @property
    def text_type(self) -> str: ...

    def text(self, text: str) -> dict[str, Any]: ...

    def image(self, block: ImageBlock, path: str) -> dict[str, Any]:
        """An image part; may raise InvalidRequestError naming ``path``."""
        ...

    def pdf(self, filename: str, data_url: str) -> dict[str, Any]: ...

    def pdf_url(self, url: str, path: str) -> dict[str, Any]:
        """A PDF by URL; may raise InvalidRequestError naming ``path``."""
        ...

    def upstream_file(self, src: UpstreamFileSource, kind: str, path: str) -> dict[str, Any]:
        """A part naming a file the upstream holds (``kind``: image or document)."""
        ...


def image_url(block: ImageBlock, path: str) -> str:
    """The URL of an image part: a ``data:`` URL for base64 sources (protocol.md §9.4). A
    file id the gateway did not issue means nothing upstream: a 400."""
    src: Any = block.source
    if isinstance(src, Base64Source):
        return f"data:{src.media_type};base64,{src.data}"
    if isinstance(src, URLSource):
        return src.url
    if isinstance(src, FileSource):  # not resolved by the gateway: nothing upstream knows
        raise InvalidRequestError(f"{path}.source: file_id sources are not supported")
    raise InvalidRequestError(f"{path}.source: Chat Completions upstreams take no image by file_id")


def document_parts(block: DocumentBlock, path: str, parts: PartMaker) -> list[dict[str, Any]]:
    """protocol.md §9.4: PDFs as file parts, text and content sources inline (title and
    context first)."""
    src: Any = block.source
    header = [s for s in (block.title, block.context) if s]
    if isinstance(src, UpstreamFileSource):
        lead = [parts.text("\n".join(header))] if header else []
        return [*lead, parts.upstream_file(src, "document", path)]
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
        # the title and context go beside the file as text (issue 15 item 7)
        lead = [parts.text("\n".join(header))] if header else []
        return [*lead, parts.pdf(name, f"data:application/pdf;base64,{src.data}")]
    if isinstance(src, URLSource):
        lead = [parts.text("\n".join(header))] if header else []
        return [*lead, parts.pdf_url(src.url, path)]
    if isinstance(src, TextSource):
        return [parts.text("\n".join([*header, src.data]))]
    if isinstance(src, ContentSource):
        if isinstance(src.content, str):
            return [parts.text("\n".join([*header, src.content]))]
        out: list[dict[str, Any]] = []
        if header:
            out.append(parts.text("\n".join(header)))
        for k, inner in enumerate(src.content):
            if isinstance(inner, TextBlock):
                if inner.text:
                    out.append(parts.text(inner.text))
            else:
                out.append(parts.image(inner, f"{path}.source.content.{k}"))
        return out
    assert isinstance(src, FileSource)
    raise InvalidRequestError(f"{path}.source: file_id sources are not supported")  # unresolved


def tool_result_parts(
    block: ToolResultBlock, path: str, parts: PartMaker
) -> str | list[dict[str, Any]]:
    """A tool_result's content as one string or a part list (protocol.md §9.5).

    A string for string content and for lists of text-like blocks (joined by newlines); a
    list of parts when images or documents are present; ``"(empty)"`` for nothing. No error
    flag exists upstream, so ``is_error`` becomes a ``"[tool error] "`` prefix (on the first
    text part, or as a text part of its own when the list starts with something else).
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
                text = tool_reference_text(c)
            else:
                assert isinstance(c, SearchResultBlock)
                text = search_result_text(c)
            if text:
                texts.append(text)
        output = "\n".join(texts) or EMPTY_OUTPUT
    else:
        out: list[dict[str, Any]] = []
        for k, c in enumerate(content):
            if isinstance(c, TextBlock):
                if c.text:
                    out.append(parts.text(c.text))
            elif isinstance(c, ImageBlock):
                out.append(parts.image(c, f"{path}.content.{k}"))
            elif isinstance(c, DocumentBlock):
                out.extend(document_parts(c, f"{path}.content.{k}", parts))
            elif isinstance(c, ToolReferenceBlock):
                out.append(parts.text(tool_reference_text(c)))
            else:
                out.append(parts.text(search_result_text(c)))
        output = out or EMPTY_OUTPUT
    if block.is_error:
        if isinstance(output, str):
            output = TOOL_ERROR_PREFIX + output
        elif output and output[0]["type"] == parts.text_type:
            output[0] = parts.text(TOOL_ERROR_PREFIX + output[0]["text"])
        else:
            output.insert(0, parts.text(TOOL_ERROR_PREFIX.rstrip()))
    return output
