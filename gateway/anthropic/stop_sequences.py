"""Stop-sequence emulation for upstreams without ``stop`` (protocol.md §9.8, option 1).

The Responses API has no stop parameter (§5), so the gateway scans the visible text itself and
cuts the answer at the first match. Pure: no I/O, no aiohttp, no asyncio.

Match semantics follow generation order: the match that *ends* first wins, because a model
stops as soon as any sequence has been produced. Two sequences ending at the same character
(``"bc"`` and ``"abc"`` in ``"abc"``) resolve to the longer one, which starts earlier.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

from ..errors import InvalidRequestError

__all__ = ["MAX_STOP_LENGTH", "MAX_STOP_SEQUENCES", "StopSequenceScanner", "check_stop_sequences",
           "cut_at_stop_sequence"]  # fmt: skip

#: What a request may ask the gateway to scan for: each text delta is checked against every
#: sequence, and up to the longest's length of text is held back (a bound on both, issue 19).
MAX_STOP_SEQUENCES: Final = 32
MAX_STOP_LENGTH: Final = 256


def check_stop_sequences(sequences: Sequence[str] | None) -> None:
    """400 for more sequences, or a longer one, than the gateway scans for."""
    if sequences is None:
        return
    if len(sequences) > MAX_STOP_SEQUENCES:
        raise InvalidRequestError(
            f"stop_sequences: at most {MAX_STOP_SEQUENCES} sequences are supported by the "
            f"gateway, got {len(sequences)}"
        )
    for i, seq in enumerate(sequences):
        if len(seq) > MAX_STOP_LENGTH:
            raise InvalidRequestError(
                f"stop_sequences.{i}: at most {MAX_STOP_LENGTH} characters are supported by "
                f"the gateway, got {len(seq)}"
            )


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

    __slots__ = ("_firsts", "_held", "_match", "_max_hold", "_sequences")

    def __init__(self, sequences: Iterable[str]) -> None:
        # Longest first, so a tie on the end position resolves to the longer sequence.
        self._sequences = tuple(sorted({s for s in sequences if s}, key=len, reverse=True))
        # The characters a sequence can start with: where a held-back suffix can begin. (A
        # set of every prefix cost memory quadratic in a sequence's length, issue 19.)
        self._firsts = frozenset(s[0] for s in self._sequences)
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
        hold = self._hold(buf)
        if hold:
            self._held = buf[-hold:]
            return buf[:-hold], None
        self._held = ""
        return buf, None

    def _hold(self, buf: str) -> int:
        """The length of the longest suffix of ``buf`` that is a proper prefix of a sequence
        (0 if none): what must be held back."""
        n, firsts = len(buf), self._firsts
        for k in range(min(self._max_hold, n), 0, -1):
            if buf[n - k] in firsts:
                tail = buf[n - k :]
                for seq in self._sequences:  # longest first: the shorter cannot hold k chars
                    if len(seq) <= k:
                        break
                    if seq.startswith(tail):
                        return k
        return 0

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
