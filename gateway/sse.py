"""Server-Sent Events: an incremental decoder for upstream streams (the encoder: ``sse_out``).

The decoder follows the WHATWG HTML Standard, §9.2.6 "Interpreting an event stream"
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation),
with two deliberate differences, both for a gateway that consumes rather than reconnects:

* ``finish()`` dispatches an event whose final blank line never arrived. The spec discards it;
  protocol.md §10 item 9 asks us to be more lenient than the SDKs.
* An event larger than ``max_event_bytes`` raises :class:`SSEError` instead of growing without
  bound.

No I/O happens here: bytes in, :class:`SSEEvent` values out (design.md, house style 1 and 2).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from itertools import repeat
from typing import Final

import msgspec

__all__ = ["SSEDecoder", "SSEError", "SSEEvent"]

DEFAULT_MAX_EVENT_BYTES: Final = 16 * 1024 * 1024

# int() refuses strings longer than sys.get_int_max_str_digits(), which can be set no lower
# than 640. A longer `retry:` value (an absurd delay) is ignored rather than failing the stream.
_MAX_RETRY_DIGITS: Final = 640

_BOM: Final = b"\xef\xbb\xbf"  # U+FEFF in UTF-8

#: the shape of nearly every upstream event: one ``event:`` line, one ``data:`` line, a blank
#: line (line ends already folded to LF); ``_FAST_RUN`` matches a run of them. Chat Completions
#: events are a ``data:`` line and a blank line (``_FAST_DATA``).
#: The split patterns begin at a line start (``^``, multiline): unanchored, a line holding many
#: "event: " that no match takes (an event of several data lines) was tried from each of them,
#: to its end, and a 280 KB line took 23 s of the event loop.
_FAST_RUN: Final = re.compile(rb"(?:event: [^\n]*\ndata: [^\n]*\n\n)+")
_FAST_PAIR: Final = re.compile(rb"(?m)^event: ([^\n]*)\ndata: ([^\n]*)\n\n")
_FAST_DATA: Final = re.compile(rb"(?m)^data: ([^\n]*)\n\n")


_MAX_NAMES: Final = 256  # README "Limits"


class _Names(dict[bytes, str]):
    """Event names seen on fast paths, decoded once: upstreams use a few dozen; the bound
    keeps one that invents names from growing it."""

    def __missing__(self, raw: bytes) -> str:
        name = raw.decode("utf-8", "replace") or "message"
        if len(self) < _MAX_NAMES:
            self[raw] = name
        return name


_NAMES: Final = _Names()
#: a block this long holds several events (a text delta is ~250 bytes): split by the regex
#: engine; a shorter one is matched whole when it is one event, else read line by line
_RUN_BYTES: Final = 2048


class SSEError(ValueError):
    """An event exceeded the decoder's size cap.

    ``limit`` is the configured ``max_event_bytes``; ``size`` is how many bytes of the event
    were buffered when the cap was found exceeded (a lower bound on the event's real size,
    since the rest of it may not have arrived yet).
    """

    def __init__(self, limit: int, size: int) -> None:
        super().__init__(
            f"SSE event exceeds max_event_bytes={limit}: {size} bytes buffered without a blank line"
        )
        self.limit = limit
        self.size = size


class SSEEvent(msgspec.Struct, frozen=True, gc=False):
    """One dispatched event.

    ``event`` is the event type, ``"message"`` when the event had no (or an empty) ``event:``
    field (WHATWG §9.2.6, "dispatch the event", step 4). ``data`` is the data buffer with
    the final LF removed, i.e. the ``data:`` values joined with ``b"\\n"``, as raw bytes: the
    consumer hands them to its JSON decoder, which reads UTF-8 itself (issue 19: a ``str``
    first cost a decode per event); bytes that are not UTF-8 are the consumer's to replace
    (the spec decodes with replacement). ``id`` is the last event ID in effect at dispatch
    (it persists across events; ``None`` until a stream sets one). ``retry`` is the
    reconnection time in milliseconds in effect at dispatch (it also persists, like the
    spec's stream-level reconnection time; ``None`` until set). ``event`` and ``id`` are
    decoded, with U+FFFD for bytes that are not UTF-8.

    A msgspec Struct because construction happens once per event on the hot path and its
    C ``__init__`` is several times cheaper than a slotted dataclass's.
    """

    event: str
    data: bytes
    id: str | None = None
    retry: int | None = None


class SSEDecoder:
    """Incremental event-stream decoder: ``feed(bytes) -> list[SSEEvent]``, then ``finish()``.

    Contract:

    * The events returned over a whole stream do not depend on how its bytes were chunked.
      Line ends may be LF, CRLF or CR; a CRLF split across two chunks is one line end.
    * Lines are decoded as UTF-8 only when whole, so a character split across chunks decodes
      correctly; invalid UTF-8 in a name or id becomes U+FFFD and never raises (``data``
      stays bytes, see :class:`SSEEvent`).
    * Linear time: a chunk is searched for line ends once, when it arrives. The partial
      line kept between feeds never contains a line end (that is the invariant that replaces
      a scan offset), so a long line fed one byte at a time is never re-scanned.
    * Size cap: the bytes of the current event (all its lines so far, excluding line ends,
      plus the pending partial line) may not exceed ``max_event_bytes``, otherwise
      :class:`SSEError` is raised. Because the count only grows between blank lines, whether
      it raises does not depend on chunking either. After an ``SSEError`` the stream is
      broken: the decoder drops its buffers and must not be fed again; events completed
      earlier in the same ``feed`` call are lost with it.
    """

    __slots__ = (
        "_at_start",
        "_data",
        "_event_type",
        "_last_id",
        "_max",
        "_pending",
        "_retry",
        "_size",
        "_skip_lf",
    )

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        if max_event_bytes < 1:
            raise ValueError(f"max_event_bytes must be positive, got {max_event_bytes}")
        self._max = max_event_bytes
        self._reset()

    def _reset(self) -> None:
        # Bytes of the current, unterminated line; never contains CR or LF.
        self._pending = bytearray()
        # The previous chunk ended in CR: an LF opening the next chunk completes that CRLF.
        self._skip_lf = False
        # No byte decoded yet, so a leading BOM is still to be stripped.
        self._at_start = True
        # The spec's data buffer, kept as raw values and decoded once at dispatch.
        self._data: list[bytes] = []
        self._event_type = ""
        self._last_id: str | None = None
        self._retry: int | None = None
        # Bytes of the current event's completed lines (excluding line ends).
        self._size = 0

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Consume the next chunk of the stream; return the events it completed, in order.

        Raises :class:`SSEError` if the current event outgrows ``max_event_bytes``.
        """
        if self._skip_lf and chunk:
            self._skip_lf = False
            if chunk[0] == 0x0A:
                chunk = chunk[1:]
        # Only the new chunk is searched for line ends (see the class docstring).
        lf, cr = chunk.rfind(b"\n"), chunk.rfind(b"\r")
        end = (lf if lf > cr else cr) + 1
        pending = self._pending
        if not end:
            pending += chunk
            if self._size + len(pending) > self._max:
                self._check_pending()
            return []
        if pending:
            pending += chunk[:end]
            block = bytes(pending)
            pending.clear()
        else:
            block = chunk[:end]
        if end < len(chunk):
            pending += chunk[end:]
        elif chunk[end - 1] == 0x0D:
            # WHATWG §9.2.6: a lone CR ends a line, so the line is processed now rather than
            # held back until we learn whether an LF follows; that LF, if it opens the next
            # chunk, belongs to this line end and is dropped then.
            self._skip_lf = True
        events = self._lines(block, cr >= 0)  # the pending bytes hold no CR
        if pending and self._size + len(pending) > self._max:
            self._check_pending()
        return events

    def _check_pending(self) -> None:
        """Raise SSEError if the pending partial line takes the event over the cap."""
        pending = self._pending
        size = self._size + len(pending)
        if self._at_start:
            # The BOM is not part of the line, so it does not count here either; nor does the
            # start of one whose last bytes are still to come.
            if pending.startswith(_BOM):
                size -= 3
            elif _BOM.startswith(pending):
                size -= len(pending)
        if size > self._max:
            self._reset()
            raise SSEError(self._max, size)

    def finish(self) -> list[SSEEvent]:
        """Signal end of stream: return the events still pending, then reset the decoder.

        Unlike the spec, which discards an event not followed by a blank line at end of file
        (WHATWG §9.2.6, last paragraph), the pending partial line is taken as complete and the
        pending event is dispatched. With nothing pending, returns ``[]``. Afterwards the
        decoder is as new (last event ID, reconnection time and BOM handling included).
        """
        block = bytes(self._pending) + b"\n\n"
        try:
            return self._lines(block, False)
        finally:
            self._reset()

    def _lines(self, block: bytes, cr: bool) -> list[SSEEvent]:
        """Process ``block``, which holds only whole lines and ends with a line end; ``cr``:
        whether it holds a CR."""
        if cr:
            # Line ends are CRLF, LF or CR (WHATWG §9.2.5 "Parsing an event stream", the
            # `end-of-line` production); fold them to LF so one split finds them all.
            block = block.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if self._at_start:
            self._at_start = False
            # §9.2.5: one leading U+FEFF is ignored, only at the very start of the stream.
            if block.startswith(_BOM):
                block = block[3:]
        size = len(block)
        if size > self._max:
            return self._plain(block)  # the line loop raises when an event is over the cap
        if size >= _RUN_BYTES:
            return self._runs(block)
        if not (self._data or self._event_type or self._size):
            # One whole event, the usual read of an upstream sending as it generates.
            if block.startswith(b"event: "):
                one = _FAST_PAIR.fullmatch(block)
                if one is not None:
                    name, data = one.groups()
                    return [SSEEvent(_NAMES[name], data, self._last_id, self._retry)]
            elif block.startswith(b"data: "):
                one = _FAST_DATA.fullmatch(block)
                if one is not None:
                    return [SSEEvent("message", one[1], self._last_id, self._retry)]
        return self._plain(block)

    def _plain(self, block: bytes) -> list[SSEEvent]:
        """The line-by-line loop over ``block`` (whole lines, LF only, ending with one)."""
        lines = block.split(b"\n")
        lines.pop()  # the block ends with a line end, so the last piece is always empty

        events: list[SSEEvent] = []
        data = self._data
        event_type = self._event_type
        last_id = self._last_id
        retry = self._retry
        size = self._size
        limit = self._max
        # The field dispatch below is §9.2.6 "process the field"; the checks on `line` come
        # first because `data: ` and blank lines are nearly every line an upstream sends.
        for line in lines:
            if not line:
                # Blank line: dispatch (§9.2.6 "dispatch the event"). An empty data buffer
                # dispatches nothing but still resets the event type buffer.
                if data:
                    raw = data[0] if len(data) == 1 else b"\n".join(data)
                    events.append(SSEEvent(event_type or "message", raw, last_id, retry))
                    data = []
                event_type = ""
                size = 0
                continue
            size += len(line)
            if size > limit:
                self._reset()
                raise SSEError(limit, size)
            if line.startswith(b"data: "):
                data.append(line[6:])
                continue
            colon = line.find(b":")
            if colon == 0:
                continue  # comment (e.g. keep-alives)
            if colon < 0:
                # A line without a colon is a field name with an empty value.
                field = line
                value = b""
            else:
                field = line[:colon]
                # Only a single leading space is removed from the value.
                start = colon + 2 if line[colon + 1 : colon + 2] == b" " else colon + 1
                value = line[start:]
            if field == b"data":
                data.append(value)
            elif field == b"event":
                event_type = value.decode("utf-8", "replace")
            elif field == b"id":
                # §9.2.6: an id containing U+0000 is ignored. NUL only decodes from the byte
                # 0x00, so testing the raw bytes is the same test.
                if b"\x00" not in value:
                    last_id = value.decode("utf-8", "replace")
            elif field == b"retry" and value.isdigit() and len(value) <= _MAX_RETRY_DIGITS:
                # ASCII digits only, else ignored; bytes.isdigit() is ASCII-only and False for
                # b"". The length bound keeps int() from raising (see _MAX_RETRY_DIGITS).
                retry = int(value)
            # Any other field name is ignored (§9.2.6, "Otherwise").
        self._data = data
        self._event_type = event_type
        self._last_id = last_id
        self._retry = retry
        self._size = size
        return events

    def _runs(self, block: bytes) -> list[SSEEvent]:
        """A block of ``_RUN_BYTES`` or more (a read that found a burst buffered), with no
        event in it over the cap. Nearly every upstream event is the two lines "event: NAME" and
        "data: JSON" (Chat Completions: the data line alone) then a blank line (issue 19), so
        the regex engine splits a run of such events in one pass over the block; an event
        begun in an earlier block is finished, and whatever follows the run is read, by the
        line-by-line loop, which keeps the state between blocks. Cutting a block at blank lines
        changes nothing: the loop reads lines, not blocks. A shorter block (an upstream sending
        as it generates) takes one regex match when it is one such event, else the loop."""
        events: list[SSEEvent] = []
        pos = 0
        if self._data or self._event_type or self._size:
            cut = block.find(b"\n")
            if (
                not self._data
                and block.startswith(b"data: ")
                and block.startswith(b"\n", cut + 1)
                and self._size + cut <= self._max
            ):
                # The usual cut: the last block ended with this event's name line.
                name = self._event_type or "message"
                events = [SSEEvent(name, block[6:cut], self._last_id, self._retry)]
                self._event_type, self._size = "", 0
            else:
                cut = block.find(b"\n\n")
                if cut < 0:
                    return self._plain(block)
                events = self._plain(block[: cut + 2])
            pos = cut + 2
        rest = block[pos:] if pos else block
        names: Iterable[str]
        if rest.startswith(b"event: "):
            # split leaves what lies between the matches in every third piece: the matches
            # are the events only if those are all empty (nothing skipped); the last piece is
            # what follows the run, for the line loop.
            parts = _FAST_PAIR.split(rest)
            if any(parts[0:-1:3]):
                return events + self._mixed(block, pos)
            names, datas = map(_NAMES.__getitem__, parts[1::3]), parts[2::3]
        elif rest.startswith(b"data: "):
            parts = _FAST_DATA.split(rest)  # Chat Completions: every other piece
            if any(parts[0:-1:2]):
                return events + self._plain(rest)
            names, datas = repeat("message"), parts[1::2]
        else:
            return events + self._plain(rest)
        events += map(SSEEvent, names, datas, repeat(self._last_id), repeat(self._retry))
        tail = parts[-1]
        if tail.startswith(b"event: ") and tail.find(b"\n") == len(tail) - 1:
            # The usual cut: the next block brings this event's data line.
            self._event_type = tail[7:-1].decode("utf-8", "replace")
            self._size = len(tail) - 1
        elif tail:
            events += self._plain(tail)
        return events

    def _mixed(self, block: bytes, pos: int) -> list[SSEEvent]:
        """A block from ``pos`` with other events among the fast ones (comments, ``id:``
        lines): runs of fast events by the regex engine, the others line by line."""
        events: list[SSEEvent] = []
        end = len(block)
        while pos < end:
            if not (self._data or self._event_type or self._size):
                run = _FAST_RUN.match(block, pos)
                if run is not None:
                    pairs = _FAST_PAIR.findall(block, pos, run.end())
                    last_id, retry = self._last_id, self._retry
                    events += [SSEEvent(_NAMES[n], d, last_id, retry) for n, d in pairs]
                    pos = run.end()
                    continue
            cut = block.find(b"\n\n", pos)
            if cut < 0:
                events += self._plain(block[pos:])
                break
            events += self._plain(block[pos : cut + 2])
            pos = cut + 2
        return events
