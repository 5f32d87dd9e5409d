"""Stop-sequence emulation for upstreams without ``stop`` (protocol.md §9.8, option 1).

The Responses API has no stop parameter (§5), so the gateway scans the visible text itself and
cuts the answer at the first match. Pure: no I/O, no aiohttp, no asyncio.

Match semantics follow generation order: the match that *ends* first wins, because a model
stops as soon as any sequence has been produced. Two sequences ending at the same character
(``"bc"`` and ``"abc"`` in ``"abc"``) resolve to the longer one, which starts earlier.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["StopSequenceScanner", "cut_at_stop_sequence"]


class StopSequenceScanner:
    """Incremental scanner: ``feed(text) -> (safe_text, match)``, then ``flush()``.

    Contract:

    * The concatenation of every ``safe_text`` plus ``flush()`` equals the input up to (not
      including) the first match, or the whole input when nothing matched.
    * Held back is only the longest suffix of the text seen so far that is a proper prefix of
      some sequence: nothing that could become part of a match is released early, and
      nothing else is delayed.
    * Matches spanning several ``feed`` calls are found. Output does not depend on how the
      text was split.
    * After a match, the scanner is spent: further ``feed`` calls return ``("", match)`` and
      ``flush()`` returns ``""``.

    Empty sequences are ignored (they would match before any text).
    """

    __slots__ = ("_held", "_match", "_max_hold", "_prefixes", "_sequences")

    def __init__(self, sequences: Iterable[str]) -> None:
        # Longest first, so a tie on the end position resolves to the longer sequence.
        self._sequences = tuple(sorted({s for s in sequences if s}, key=len, reverse=True))
        self._prefixes = frozenset(s[:i] for s in self._sequences for i in range(1, len(s)))
        self._max_hold = max((len(s) for s in self._sequences), default=1) - 1
        self._held = ""
        self._match: str | None = None

    @property
    def active(self) -> bool:
        """True when there is at least one sequence to look for."""
        return bool(self._sequences)

    def feed(self, text: str) -> tuple[str, str | None]:
        """Consume the next piece of text; return (text safe to emit now, matched sequence)."""
        if self._match is not None:
            return "", self._match
        if not self._sequences:
            return text, None
        buf = self._held + text
        best_end = -1
        best_start = 0
        best: str | None = None
        for seq in self._sequences:
            start = buf.find(seq)
            if start < 0:
                continue
            end = start + len(seq)
            # Strictly earlier end wins; on a tie the earlier (longer, seen first) one stays.
            if best is None or end < best_end:
                best, best_start, best_end = seq, start, end
        if best is not None:
            self._held = ""
            self._match = best
            return buf[:best_start], best
        hold = 0
        prefixes = self._prefixes
        for k in range(min(self._max_hold, len(buf)), 0, -1):
            if buf[-k:] in prefixes:
                hold = k
                break
        if hold:
            self._held = buf[-hold:]
            return buf[:-hold], None
        self._held = ""
        return buf, None

    def flush(self) -> str:
        """End of the text: release what was held back (it can no longer complete a match)."""
        held, self._held = self._held, ""
        return held


def cut_at_stop_sequence(text: str, sequences: Iterable[str]) -> tuple[str, str | None]:
    """Whole-text form of the scanner: (text before the first match, match) or (text, None)."""
    scanner = StopSequenceScanner(sequences)
    safe, match = scanner.feed(text)
    if match is not None:
        return safe, match
    return safe + scanner.flush(), None
