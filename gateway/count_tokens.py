"""``POST /v1/messages/count_tokens``: the upstream's exact count, cached and coalesced, with a
local o200k count as the fallback (issue 4 item 4).

Claude Code and its IDE extensions call this endpoint in bursts (``/context`` makes ~25 calls,
claude-code.md §2), so identical requests are answered from a small TTL cache and concurrent
identical requests share one upstream call. It never fails the caller: when the route's
upstream has no counting endpoint (Chat Completions servers) or the call fails, the count is
made locally with the o200k_base vocabulary (``bpe-openai`` ships it, so it works offline).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Final

import msgspec
import orjson

from .context import RequestContext
from .encoding import encode_json
from .errors import GatewayError
from .logs import log_event
from .settings import Route
from .upstream import UpstreamClient

if TYPE_CHECKING:
    from .shared import Shared

#: Keys the Responses ``input_tokens`` endpoint accepts (openai ``input_token_count_params``).
_COUNT_KEYS: Final = frozenset(
    {
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "reasoning",
        "text",
    }
)
#: Rough per-item costs where there is no text to tokenize (OpenAI's own framing tokens per
#: message, a high-detail image tile budget, a PDF page).
_PER_ITEM: Final = 4
_PER_TOOL: Final = 8
_IMAGE: Final = 765
_PDF_BYTES_PER_TOKEN: Final = 12

#: The tokenizer refuses inputs of 1,000,000 characters and more, and any input of more than
#: 200,000 tokens; a character is at most 4 tokens (one per UTF-8 byte), so pieces of this many
#: characters are always accepted (issue 10 item 8).
PIECE_CHARS: Final = 40_000
#: How far back from a piece's end a cut looks for whitespace, so words are not split.
_CUT_WINDOW: Final = 1_000

_encoder: Callable[[str], int] | None = None


def _estimate(text: str) -> int:
    return (len(text) + 3) // 4  # ≈4 characters a token


def _token_counter() -> Callable[[str], int]:
    """o200k_base token counter, loaded on first use (~0.4 s and ~100 MB of memory, so only
    gateways that need the local fallback pay for it)."""
    global _encoder
    if _encoder is None:
        try:
            import bpe_openai  # type: ignore[import-untyped]

            enc = bpe_openai.get_encoding("o200k_base")

            def count(text: str) -> int:
                try:
                    return len(enc.encode_ordinary(text))
                except ValueError:  # past a limit of the tokenizer's own: estimate honestly
                    return _estimate(text)

            _encoder = count
        except Exception:  # no tokenizer package
            _encoder = _estimate
    return _encoder


def count_text(text: str) -> int:
    """Tokens in ``text`` of any length: counted in pieces cut at whitespace."""
    count = _token_counter()
    if len(text) <= PIECE_CHARS:
        return count(text)
    total = 0
    start = 0
    end = len(text)
    while start < end:
        cut = min(start + PIECE_CHARS, end)
        if cut < end:
            space = text.rfind(" ", cut - _CUT_WINDOW, cut)
            if space > start:
                cut = space  # the space starts the next piece, as o200k's pre-tokenizer has it
        total += count(text[start:cut])
        start = cut
    return total


def _collect(value: Any, texts: list[str]) -> int:
    """Append the countable text in a Responses content value; return fixed extra tokens."""
    extra = 0
    if isinstance(value, str):
        texts.append(value)
    elif isinstance(value, list):
        for part in value:
            if not isinstance(part, dict):
                continue
            kind = part.get("type")
            if kind in ("input_text", "output_text", "summary_text"):
                texts.append(part.get("text") or "")
            elif kind == "input_image":
                extra += _IMAGE
            elif kind == "input_file":
                extra += len(part.get("file_data") or "") * 3 // 4 // _PDF_BYTES_PER_TOKEN
    return extra


def local_count(payload: dict[str, Any]) -> int:
    """Estimate the input tokens of a translated Responses payload with o200k_base."""
    texts: list[str] = []
    extra = 3  # the assistant reply priming
    if isinstance(payload.get("instructions"), str):
        texts.append(payload["instructions"])
        extra += _PER_ITEM
    items = payload.get("input")
    for item in items if isinstance(items, list) else [items]:
        if not isinstance(item, dict):
            if isinstance(item, str):
                texts.append(item)
            continue
        extra += _PER_ITEM
        kind = item.get("type")
        if kind == "function_call":
            texts.append(item.get("name") or "")
            texts.append(item.get("arguments") or "")
        elif kind == "function_call_output":
            extra += _collect(item.get("output"), texts)
        elif kind == "reasoning":
            extra += _collect(item.get("summary"), texts)
        else:
            extra += _collect(item.get("content"), texts)
    for tool in payload.get("tools") or ():
        extra += _PER_TOOL
        texts.append(msgspec.json.encode(tool).decode())
    return count_text("\n".join(texts)) + extra


class TokenCounter:
    """Counts with the upstream, caching results and coalescing identical concurrent calls.

    A coalesced count runs in a task of its own and every caller awaits it through
    ``asyncio.shield``: the first caller hanging up cancels only its own wait, never the count
    the others are waiting for (issue 10 item 12).
    """

    def __init__(
        self,
        upstream: UpstreamClient,
        *,
        size: int = 2048,
        ttl: float = 600.0,
        shared: Shared | None = None,
    ) -> None:
        self.upstream = upstream
        self.size = size
        self.ttl = ttl
        #: a fleet's Redis: the cache and the coalescing span every gateway (issue 18)
        self.shared = shared
        self._cache: OrderedDict[bytes, tuple[float, int]] = OrderedDict()
        self._inflight: dict[bytes, asyncio.Task[int]] = {}
        self.upstream_calls = 0

    async def count(self, payload: dict[str, Any], route: Route, ctx: RequestContext) -> int:
        body = encode_json({k: v for k, v in payload.items() if k in _COUNT_KEYS})
        key = hashlib.blake2b(route.name.encode() + b"\0" + body, digest_size=20).digest()
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and now - hit[0] < self.ttl:
            self._cache.move_to_end(key)
            return hit[1]
        task = self._inflight.get(key)
        if task is None:
            work = self._count(body, payload, route, ctx)
            if self.shared is not None and self.shared.up:
                work = self._fleet_count(key, work)
            task = asyncio.get_running_loop().create_task(work)
            self._inflight[key] = task
            task.add_done_callback(lambda t: self._settle(key, t))
        return await asyncio.shield(task)

    def _settle(self, key: bytes, task: asyncio.Task[int]) -> None:
        del self._inflight[key]
        if task.cancelled():
            return
        if task.exception() is not None:  # retrieved here: every waiter re-raises it
            return
        self._cache[key] = (time.monotonic(), task.result())
        if len(self._cache) > self.size:
            self._cache.popitem(last=False)

    async def _fleet_count(self, key: bytes, work: Coroutine[Any, Any, int]) -> int:
        """The count from the fleet's cache, or made once for the whole fleet: the gateway
        that takes the lock asks the upstream, the others wait for its answer (bounded);
        Redis down or the lock holder gone, each counts for itself."""
        shared = self.shared
        assert shared is not None
        name = f"{shared.prefix}count:{key.hex()}"
        try:
            cached = await shared.call("count_get", lambda c: c.get(name))
            if cached is not None:
                return int(cached)
            took = await shared.call("count_lock", lambda c: _set_nx(c, name + ":lock", 10_000))
            if took is False:
                async with asyncio.timeout(FLEET_WAIT):
                    while True:
                        await asyncio.sleep(0.025)
                        found = await shared.call("count_wait", lambda c: _get_or_gone(c, name))
                        if found is None or found == b"gone":
                            break  # Redis down, or the holder failed: count here
                        if found != b"wait":
                            return int(found)
            try:
                n = await work
            except BaseException:
                if took:  # let the others count for themselves at once
                    shared.spawn(shared.call("count_unlock", lambda c: c.delete(name + ":lock")))
                raise
            if took:
                await shared.call("count_set", lambda c: _publish_count(c, name, n, self.ttl))
            return n
        except TimeoutError:
            return await work
        finally:
            work.close()  # never awaited when the fleet answered: no "never awaited" warning

    async def _count(
        self, body: bytes, payload: dict[str, Any], route: Route, ctx: RequestContext
    ) -> int:
        if route.dialect == "responses":
            self.upstream_calls += 1
            try:
                resp = await self.upstream.send(route, "/responses/input_tokens", body, ctx)
                data = orjson.loads(await self.upstream.read_body(resp))
                n = data.get("input_tokens") if isinstance(data, dict) else None
                if isinstance(n, int) and n >= 0:
                    return n
                log_event("count_tokens_fallback", reason="invalid_upstream_answer")
            except (GatewayError, orjson.JSONDecodeError) as exc:
                reason = exc.error_type if isinstance(exc, GatewayError) else "invalid_json"
                log_event("count_tokens_fallback", reason=reason)
        # In a thread: the first use loads the vocabulary (~0.4 s), and a 150 KB request takes
        # milliseconds to tokenize; neither may stall the event loop.
        return await asyncio.to_thread(local_count, payload)


#: how long a gateway waits for another one's count before making its own
FLEET_WAIT: Final = 10.0


async def _set_nx(client: Any, name: str, ms: int) -> bool:
    return bool(await client.set(name, b"1", nx=True, px=ms))


async def _get_or_gone(client: Any, name: str) -> bytes:
    """The fleet's count; ``wait`` while another gateway holds the lock; ``gone`` when it
    let go without a count (its upstream call failed)."""
    value, lock = await client.mget(name, name + ":lock")
    if value is not None:
        return bytes(value)
    return b"wait" if lock is not None else b"gone"


async def _publish_count(client: Any, name: str, n: int, ttl: float) -> None:
    async with client.pipeline(transaction=True) as pipe:
        pipe.set(name, n, ex=max(1, int(ttl)))
        pipe.delete(name + ":lock")
        await pipe.execute()
