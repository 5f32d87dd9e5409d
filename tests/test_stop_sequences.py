"""StopSequenceScanner: exact cut, minimal hold-back, split independence (protocol.md §9.8)."""

from __future__ import annotations

import itertools

import anthropic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.anthropic.stop_sequences import (
    MAX_STOP_LENGTH,
    MAX_STOP_SEQUENCES,
    StopSequenceScanner,
    cut_at_stop_sequence,
)


def reference_cut(text: str, sequences: list[str]) -> tuple[str, str | None]:
    """Generation order: the first character at which some sequence is complete; on a tie
    the longer sequence (it starts earlier)."""
    seqs = [s for s in sequences if s]
    for end in range(1, len(text) + 1):
        done = [s for s in seqs if text[:end].endswith(s)]
        if done:
            best = max(done, key=len)
            return text[: end - len(best)], best
    return text, None


def reference_hold(seen: str, sequences: list[str]) -> int:
    """Length of the longest suffix of ``seen`` that is a proper prefix of a sequence."""
    for k in range(len(seen), 0, -1):
        if any(len(s) > k and s.startswith(seen[-k:]) for s in sequences):
            return k
    return 0


def run(chunks: list[str], sequences: list[str]) -> tuple[str, str | None]:
    scanner = StopSequenceScanner(sequences)
    out = []
    for chunk in chunks:
        safe, match = scanner.feed(chunk)
        out.append(safe)
        if match is not None:
            return "".join(out), match
    return "".join(out) + scanner.flush(), None


@pytest.mark.parametrize(
    ("chunks", "sequences", "expected"),
    [
        (["hello world"], ["world"], ("hello ", "world")),
        (["hello wo", "rld!"], ["world"], ("hello ", "world")),
        (["a", "b", "c", "d"], ["bcd"], ("a", "bcd")),
        (["no match here"], ["xyz"], ("no match here", None)),
        (["abc"], ["abc", "bc"], ("", "abc")),  # same end: the longer one
        (["abcd"], ["abcd", "bc"], ("a", "bc")),  # earlier end wins
        (["STOP"], ["STOP"], ("", "STOP")),
        (["text"], [], ("text", None)),
        (["text"], [""], ("text", None)),
        (["aab"], ["ab"], ("a", "ab")),
        (["x", "\n\nHuman:"], ["\n\nHuman:"], ("x", "\n\nHuman:")),
    ],
)
def test_cases(chunks: list[str], sequences: list[str], expected: tuple[str, str | None]) -> None:
    assert run(chunks, sequences) == expected
    assert cut_at_stop_sequence("".join(chunks), sequences) == expected


def test_holds_back_only_a_possible_match() -> None:
    scanner = StopSequenceScanner(["END"])
    assert scanner.feed("the E") == ("the ", None)  # "E" could start END
    assert scanner.feed("x") == ("Ex", None)  # it did not: released at once
    assert scanner.feed("EN") == ("", None)
    assert scanner.flush() == "EN"
    assert scanner.flush() == ""


def test_nothing_delayed_without_prefix() -> None:
    scanner = StopSequenceScanner(["###"])
    assert scanner.feed("abc") == ("abc", None)
    assert scanner.feed("de#") == ("de", None)
    assert scanner.feed("#") == ("", None)
    assert scanner.feed("x") == ("##x", None)


def test_spent_after_match() -> None:
    scanner = StopSequenceScanner(["x"])
    assert scanner.feed("axb") == ("a", "x")
    assert scanner.feed("more") == ("", "x")
    assert scanner.flush() == ""
    assert scanner.active


def test_inactive_scanner_passes_through() -> None:
    scanner = StopSequenceScanner(["", ""])
    assert not scanner.active
    assert scanner.feed("abc") == ("abc", None)


_alphabet = st.text(alphabet="abc\n", max_size=40)
_sequences = st.lists(st.text(alphabet="abc\n", min_size=1, max_size=4), max_size=3)


@st.composite
def _chunked(draw: st.DrawFn) -> tuple[str, list[str]]:
    text = draw(_alphabet)
    cuts = sorted(draw(st.sets(st.integers(0, len(text)), max_size=8)))
    bounds = [0, *cuts, len(text)]
    return text, [text[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=300, deadline=None)
@given(_chunked(), _sequences)
def test_random_chunking(data: tuple[str, list[str]], sequences: list[str]) -> None:
    text, chunks = data
    expected = reference_cut(text, sequences)
    scanner = StopSequenceScanner(sequences)
    emitted = ""
    seen = ""
    match = None
    for chunk in chunks:
        seen += chunk
        safe, match = scanner.feed(chunk)
        emitted += safe
        # Never ahead of the final cut: nothing that later became a match leaked out.
        assert expected[0].startswith(emitted)
        if match is not None:
            break
        # Nothing else is delayed: exactly the longest possible-match suffix is held.
        assert emitted + seen[len(emitted) :] == seen
        assert len(seen) - len(emitted) == reference_hold(seen, sequences)
    if match is None:
        emitted += scanner.flush()
    assert (emitted, match) == expected


# --------------------------------------------------------------------------------------------
# What a request may ask the gateway to scan for (issue 19: a bound on the work per delta)


async def test_too_many_or_too_long_stop_sequences_are_a_400(
    sdk: anthropic.AsyncAnthropic,
) -> None:
    ask = {"model": "claude-sonnet-5-5", "max_tokens": 20,
           "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
    with pytest.raises(anthropic.BadRequestError) as long:
        await sdk.messages.create(**ask, stop_sequences=["ok", "x" * (MAX_STOP_LENGTH + 1)])
    assert long.value.status_code == 400
    assert long.value.body["error"] == {
        "type": "invalid_request_error",
        "message": f"stop_sequences.1: at most {MAX_STOP_LENGTH} characters are supported by "
        f"the gateway, got {MAX_STOP_LENGTH + 1}",
    }
    with pytest.raises(anthropic.BadRequestError) as many:
        await sdk.messages.create(**ask, stop_sequences=[str(i) for i in range(33)])
    assert many.value.body["error"]["message"] == (
        f"stop_sequences: at most {MAX_STOP_SEQUENCES} sequences are supported by the gateway, "
        "got 33"
    )
    # at the bounds it is served
    done = await sdk.messages.create(
        **ask, stop_sequences=[f"{i:03}" + "x" * (MAX_STOP_LENGTH - 3) for i in range(32)]
    )
    assert done.stop_reason == "end_turn"


def test_a_long_sequence_holds_back_its_longest_possible_start() -> None:
    # the held-back suffix is found from the characters a sequence starts with (no set of
    # every prefix: that was quadratic in a sequence's length)
    seq = "a" * (MAX_STOP_LENGTH - 1) + "b"
    scanner = StopSequenceScanner([seq])
    safe, match = scanner.feed("x" + "a" * 300)
    assert (safe, match) == ("x" + "a" * 45, None)  # 255 "a"s could still become the sequence
    assert scanner.feed("b") == ("", seq)
