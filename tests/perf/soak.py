"""Soak test (`make soak`): minutes of mixed streaming traffic with faults sprinkled in.

    python -m tests.perf.soak [--minutes 2] [--concurrency 32] [--out bench-results/soak.md]

Starts the mock upstream and the gateway as separate processes, then drives them with a mix
of streamed and non-streamed requests, upstream faults (503 overload retried into 529,
429, ``response.failed``, malformed streams), clients that hang up mid-stream, clients that
stop reading an 8 MB stream and clients that stop sending their body halfway. Reports
requests served, answers by status / error type, the gateway's RSS at the start, every 10 s
and at the end (it must stay flat), and what is left open at the end (client connections,
open streams and in-flight requests from /metrics: all must be zero).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import orjson
from yarl import URL

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def established_on(pid: int, port: int) -> int:
    """ESTABLISHED TCP connections of ``pid`` whose local port is ``port``."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            parts = line.split()
            local_port = int(parts[1].rsplit(":", 1)[1], 16)
            if parts[3] == "01" and local_port == port and parts[9] in inodes:
                count += 1
    return count


async def wait_ready(url: str) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(200):
            try:
                async with s.get(url) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


KINDS = [
    # (weight, name, prompt, stream, hang up after N frames)
    (55, "stream", "tell me about " + " ".join(["gateways"] * 40), True, None),
    (12, "json", "hello there", False, None),
    (8, "client_abort", "tell me a long story " + " ".join(["words"] * 60), True, 3),
    (7, "overload_503", "mock:status=503", True, None),
    (6, "rate_limit_429", "mock:status=429", False, None),
    (6, "failed_mid_stream", "answer then mock:fail", True, None),
    (6, "malformed_stream", "mock:malformed", True, None),
    # clients the gateway must cut (issue 10): one stops reading an 8 MB stream, one stops
    # sending its body halfway
    (1, "stuck_reader", "mock:big=8000000", True, None),
    (1, "slow_body", "hello there", False, None),
]
#: the gateway's client timeouts in the soak, short so that every stuck client is cut in it
CLIENT_TIMEOUT = 2.0


async def _raw_request(url: str, body: bytes, *, send: int, rcvbuf: int = 4096) -> socket.socket:
    """Open a connection and send a POST whose first ``send`` body bytes only are written."""
    u = URL(url)
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await loop.sock_connect(sock, (u.host, u.port))
    head = (
        f"POST {u.path} HTTP/1.1\r\nHost: {u.host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    await loop.sock_sendall(sock, head + body[:send])
    return sock


async def _misbehave(name: str, url: str, body: bytes) -> str:
    """A stuck reader or a half-sent body; how the gateway ended it."""
    loop = asyncio.get_running_loop()
    sock = await _raw_request(url, body, send=len(body) if name == "stuck_reader" else 10)
    data = b""
    try:
        if name == "stuck_reader":
            await asyncio.sleep(CLIENT_TIMEOUT * 2.5)  # not reading: buffers fill, then a cut
        async with asyncio.timeout(CLIENT_TIMEOUT * 3):
            while chunk := await loop.sock_recv(sock, 1 << 20):
                data += chunk
                if name == "slow_body" and b"\r\n\r\n" in data:
                    break
    except (ConnectionResetError, BrokenPipeError):
        return "cut by the gateway"
    except TimeoutError:
        if data.startswith(b"HTTP/1.1 ") and not data.startswith(b"HTTP/1.1 200"):
            # refused before streaming (e.g. 529 while a circuit is open): a whole answer on
            # a kept-alive connection, nothing to cut
            return f"HTTP {data.split(b' ', 2)[1].decode()}"
        return "NOT cut by the gateway"
    finally:
        sock.close()
    if name == "slow_body":
        return f"HTTP {data.split(b' ', 2)[1].decode()}" if data else "closed without answer"
    return "closed by the gateway"


async def one(
    s: aiohttp.ClientSession,
    url: str,
    rng: random.Random,
    tally: collections.Counter[str],
    kind: tuple[int, str, str, bool, int | None] | None = None,
) -> None:
    weights = [k[0] for k in KINDS]
    _, name, prompt, stream, hang_up = kind or rng.choices(KINDS, weights)[0]
    body = orjson.dumps(
        {
            "model": rng.choice(["claude-sonnet-5-5", "claude-haiku-5-5"]),
            "max_tokens": 400,
            "stream": stream,
            "messages": [{"role": "user", "content": prompt}],
        }
    )
    if name in ("stuck_reader", "slow_body"):
        tally[f"{name}: {await _misbehave(name, url, body)}"] += 1
        return
    try:
        async with s.post(url, data=body, headers={"content-type": "application/json"}) as r:
            if hang_up is not None and r.status == 200:
                for _ in range(hang_up):
                    await r.content.readuntil(b"\n\n")
                r.close()
                tally[f"{name}: client hung up"] += 1
                return
            raw = await r.read()
    except (TimeoutError, aiohttp.ClientError) as exc:
        tally[f"{name}: client error {type(exc).__name__}"] += 1
        return
    if r.status != 200:
        etype = orjson.loads(raw)["error"]["type"]
        tally[f"{name}: HTTP {r.status} {etype}"] += 1
    elif stream:
        tail = (b"\n" + raw).rsplit(b"\nevent: ", 1)[-1]  # the last frame
        if tail.startswith(b"message_stop"):
            tally[f"{name}: stream completed"] += 1
        else:
            m = re.search(rb'"error":\{"type":"(\w+)"', tail)
            tally[f"{name}: stream error {m.group(1).decode() if m else '?'}"] += 1
    else:
        tally[f"{name}: 200 message"] += 1


async def soak(minutes: float, concurrency: int) -> str:
    mock_port, gw_port = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    mock = subprocess.Popen(  # noqa: ASYNC220 - started once, before the event loop is busy
        [PY, "-m", "gateway.mock_upstream", "--port", str(mock_port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    gw_env = {
        **env,
        "OPENAI_BASE_URL": f"http://127.0.0.1:{mock_port}/v1",
        "OPENAI_API_KEY": "sk-soak",
        "GATEWAY_SIGNING_KEY": "soak-signing-key-0123456789abcdef",
        "GATEWAY_LOG_LEVEL": "warning",
        "GATEWAY_MAX_ATTEMPTS": "2",
        "GATEWAY_CLIENT_SEND_TIMEOUT": str(CLIENT_TIMEOUT),
        "GATEWAY_CLIENT_BODY_TIMEOUT": str(CLIENT_TIMEOUT),
    }
    gw = subprocess.Popen(  # noqa: ASYNC220
        [PY, "-m", "gateway", "--port", str(gw_port)],
        env=gw_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{gw_port}"
    tally: collections.Counter[str] = collections.Counter()
    samples: list[tuple[float, float]] = []
    try:
        await wait_ready(f"http://127.0.0.1:{mock_port}/healthz")
        await wait_ready(base + "/healthz")
        rng = random.Random(7)
        deadline = time.monotonic() + minutes * 60
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=60)
        ) as s:
            # warm-up (every kind at least once), then the baseline RSS
            warm: collections.Counter[str] = collections.Counter()
            await asyncio.gather(*(one(s, base + "/v1/messages", rng, warm, k) for k in KINDS))
            await asyncio.gather(*(one(s, base + "/v1/messages", rng, warm) for _ in range(200)))
            start_rss = rss_mb(gw.pid)
            samples.append((0.0, start_rss))
            t0 = time.monotonic()
            next_sample = t0 + 10

            async def worker() -> None:
                nonlocal next_sample
                while time.monotonic() < deadline:
                    await one(s, base + "/v1/messages", rng, tally)
                    now = time.monotonic()
                    if now >= next_sample:
                        next_sample = now + 10
                        samples.append((now - t0, rss_mb(gw.pid)))

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        await asyncio.sleep(1.0)  # let aborted streams settle
        end_rss = rss_mb(gw.pid)
        samples.append((time.monotonic() - t0, end_rss))
        async with aiohttp.ClientSession() as s, s.get(base + "/metrics") as r:
            metrics = await r.text()
        open_streams = _gauge(metrics, "gateway_open_streams")
        in_flight = _gauge(metrics, "gateway_in_flight_requests")
        client_conns = established_on(gw.pid, gw_port)
    finally:
        for proc in (gw, mock):
            proc.terminate()
        for proc in (gw, mock):
            proc.wait(timeout=60)
    served = sum(tally.values())
    lines = [
        f"# Soak: {minutes:g} min, concurrency {concurrency}, python {sys.version.split()[0]}, "
        f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        f"Requests served: **{served:,}** ({served / (minutes * 60):,.0f}/s)",
        "",
        "| outcome | count |",
        "|---|---:|",
        *[f"| {k} | {v:,} |" for k, v in sorted(tally.items())],
        "",
        "| gateway RSS | MB |",
        "|---|---:|",
        *[f"| t = {t:5.0f} s | {mb:.1f} |" for t, mb in samples],
        "",
        f"RSS start → end: {start_rss:.1f} → {end_rss:.1f} MB ({end_rss - start_rss:+.1f} MB)",
        "",
        _settled(samples),
        "",
        f"Left open at the end: client connections {client_conns}, open streams "
        f"{open_streams:g}, in-flight requests {in_flight:g}.",
    ]
    return "\n".join(lines) + "\n"


def _settled(samples: list[tuple[float, float]]) -> str:
    """RSS once the first 30 s are over: the first minutes raise the allocator's high-water
    mark (several 8 MB streams at once); flat means it stays there."""
    later = [mb for t, mb in samples if t >= 30]
    if len(later) < 2:
        return "Too short to judge RSS after the first 30 s."
    return (
        f"RSS after the first 30 s: {later[0]:.1f} → {later[-1]:.1f} MB "
        f"({later[-1] - later[0]:+.1f} MB; highest {max(later):.1f} MB)"
    )


def _gauge(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return float("nan")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--minutes", type=float, default=float(os.environ.get("SOAK_MINUTES", "2")))
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--out", default="bench-results/soak.md")
    args = p.parse_args(argv)
    report = asyncio.run(soak(args.minutes, args.concurrency))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
