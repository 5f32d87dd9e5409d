"""The fleet test (issue 18 item 2): three gateway processes behind Debian's nginx, sharing
Debian's redis-server, in front of the mock upstream, all started here on loopback.

``python -m tests.fleet.harness --seconds 60`` (``make fleet``) runs it and prints a report;
``tests/fleet/test_fleet.py`` runs a short version in the suite. Phases:

1. a per-key limit (rpm) holds across the fleet under a concurrent burst;
2. a burst of identical count_tokens requests reaches the upstream once;
3. mixed streamed and non-streamed load for ``seconds``, during which one gateway is sent
   SIGTERM, then Redis is stopped and started again: every request must complete or end in an
   Anthropic error (a status with the error envelope, or an ``event: error``); none may hang,
   fail at the connection or answer anything else.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp

from gateway.accounts.keyfile import KeyFile, save
from tests.accounts.conftest import entry, key_of
from tests.fleet.conftest import RedisServer, free_port, wait_port
from tests.perf.servers import Proc, start_process, wait_ready

SIGNING_KEY: Final = "fleet-signing-key-0123456789abcdef0123"
MODEL: Final = "claude-sonnet-5-5"
LIMIT: Final = 30
#: one request may take this long before it counts as hung
REQUEST_LIMIT: Final = 30.0
NGINX: Final = """
{user}
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {dir}/nginx-body;
  proxy_temp_path {dir}/nginx-proxy;
  fastcgi_temp_path {dir}/nginx-fastcgi;
  uwsgi_temp_path {dir}/nginx-uwsgi;
  scgi_temp_path {dir}/nginx-scgi;
  upstream gateways {{
{servers}
    keepalive 64;
  }}
  server {{
    listen 127.0.0.1:{port};
    client_max_body_size 32m;
    location / {{
      proxy_pass http://gateways;
      # SSE: nothing buffered either way, long reads, keep-alive to the gateways
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_cache off;
      proxy_read_timeout 3600s;
      proxy_send_timeout 3600s;
      proxy_next_upstream error timeout;
      # no gateway reachable: an Anthropic error clients retry, not nginx's HTML page
      error_page 502 503 504 = @unavailable;
    }}
    location @unavailable {{
      default_type application/json;
      add_header retry-after 1 always;
      return 529 '{{"type":"error","error":{{"type":"overloaded_error","message":"{message}"}}}}';
    }}
  }}
}}
"""


@dataclass
class Fleet:
    dir: Path
    mock: Proc
    redis: RedisServer
    gateways: list[Proc]
    nginx: subprocess.Popen[bytes]
    port: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Outcomes:
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


async def start_fleet(n: int = 3) -> Fleet:
    base = Path(tempfile.mkdtemp(prefix="gateway-fleet-"))
    base.chmod(0o755)  # noqa: ASYNC240 - the test's own servers, before any load
    redis = RedisServer()
    redis.start()
    mock_port = free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "XDG_STATE_HOME": str(base)}
    mock = start_process("mock", [sys.executable, "-m", "gateway.mock_upstream", "--port",
                                  str(mock_port), "--input-tokens-delay", "0.3"],
                         port=mock_port, env=env, cpus=None, log_dir=base)  # fmt: skip
    keys = base / "keys.json"
    save(
        keys, KeyFile(keys=[entry("alice"), entry("limited", rpm=LIMIT), entry("ops", admin=True)])
    )
    config = base / "fleet.toml"
    config.write_text(
        f'[server]\nshutdown_grace = 5.0\ndrain_delay = 0.5\n[redis]\nurl = "{redis.url}"\n'
        f'retry_interval = 0.5\n[accounts]\nkeys_file = "{keys}"\n[ledger]\nflush_interval = 0.5\n'
    )
    gateways = []
    for i in range(n):
        port = free_port()
        genv = {**env, "OPENAI_BASE_URL": f"{mock.base}/v1", "OPENAI_API_KEY": "sk-fleet",
                "GATEWAY_SIGNING_KEY": SIGNING_KEY, "GATEWAY_CONFIG": str(config),
                "GATEWAY_LEDGER_PATH": str(base / f"usage-{i}.db"),
                "GATEWAY_LOG_LEVEL": "warning"}  # fmt: skip
        gateways.append(start_process(f"gateway-{i}", [sys.executable, "-m", "gateway", "--port",
                                                       str(port)], port=port, env=genv,
                                      cpus=None, log_dir=base))  # fmt: skip
    await wait_ready(mock)
    for gw in gateways:
        await wait_ready(gw)
    port = free_port()
    servers = "\n".join(
        f"    server 127.0.0.1:{g.base.rsplit(':', 1)[1]} max_fails=1 fail_timeout=2s;"
        for g in gateways
    )
    user = "user root root;" if os.geteuid() == 0 else ""
    conf = base / "nginx.conf"
    conf.write_text(
        NGINX.format(
            user=user,
            dir=base,
            servers=servers,
            port=port,
            message="no gateway could take the request (load balancer)",
        )
    )
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():  # noqa: ASYNC240
        raise RuntimeError("nginx is not installed (Debian: apt-get install nginx); .ci/run "
                           "installs it")  # fmt: skip
    argv = [binary, "-c", str(conf), "-p", str(base), "-g", "daemon off;"]
    # it runs for the whole test, beside the event loop
    nginx = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: ASYNC220
    wait_port(port)
    return Fleet(base, mock, redis, gateways, nginx, port)


def stop_fleet(fleet: Fleet) -> None:
    fleet.nginx.terminate()
    try:
        fleet.nginx.wait(10)
    except subprocess.TimeoutExpired:
        fleet.nginx.kill()
    for gw in fleet.gateways:
        gw.stop()
    fleet.mock.stop()
    fleet.redis.stop()
    shutil.rmtree(fleet.dir, ignore_errors=True)
    shutil.rmtree(fleet.redis.dir, ignore_errors=True)


def body(stream: bool, words: int) -> dict[str, Any]:
    text = " ".join(["fleet"] * words)
    return {"model": MODEL, "max_tokens": 200, "stream": stream,
            "messages": [{"role": "user", "content": text}]}  # fmt: skip


async def one(session: aiohttp.ClientSession, url: str, key: str, doc: dict[str, Any],
              out: Outcomes) -> None:  # fmt: skip
    """One request, classified: completed, an Anthropic error, or a failure (anything else)."""
    t0 = time.perf_counter()
    try:
        async with (
            asyncio.timeout(REQUEST_LIMIT),
            session.post(
                url, json=doc, headers={"x-api-key": key, "anthropic-version": "2023-06-01"}
            ) as r,
        ):
            raw = await r.read()
            ctype = r.content_type
            status = r.status
    except TimeoutError:
        out.failures.append("hung")
        return
    except aiohttp.ClientError as exc:
        out.failures.append(f"connection: {type(exc).__name__}")
        return
    out.latencies.append(time.perf_counter() - t0)
    if status == 200 and ctype == "text/event-stream":
        events = [e for e in raw.decode().split("\n\n") if e.strip()]
        last = events[-1].split("\n", 1)[0] if events else ""
        if last == "event: message_stop":
            out.ok += 1
        elif last == "event: error":
            out.error("stream:" + json.loads(events[-1].split("data: ", 1)[1])["error"]["type"])
        else:
            out.failures.append(f"stream ended with {last!r}")
        return
    try:
        doc = json.loads(raw)
    except ValueError:
        out.failures.append(f"HTTP {status} {ctype}: {raw[:80]!r}")
        return
    if status == 200 and doc.get("type") in ("message", None) and "error" not in doc:
        out.ok += 1
    elif status >= 400 and doc.get("type") == "error" and "type" in doc.get("error", {}):
        out.error(f"{status}:{doc['error']['type']}")
    else:
        out.failures.append(f"HTTP {status}: {raw[:80]!r}")


async def limit_burst(fleet: Fleet) -> dict[str, int]:
    """2 × LIMIT requests of a key limited to LIMIT a minute, all at once, spread by nginx."""
    out = Outcomes()
    async with aiohttp.ClientSession() as s:
        await asyncio.gather(*(one(s, fleet.base + "/v1/messages", key_of("limited"),
                                   body(False, 3), out) for _ in range(2 * LIMIT)))  # fmt: skip
    return {"ok": out.ok, "limited": out.errors.get("429:rate_limit_error", 0),
            "other": sum(out.errors.values()) - out.errors.get("429:rate_limit_error", 0),
            "failures": len(out.failures)}  # fmt: skip


async def count_burst(fleet: Fleet, n: int = 30) -> dict[str, int]:
    doc = {"model": MODEL, "messages": [{"role": "user", "content": "count this once"}]}
    async with aiohttp.ClientSession() as s:

        async def count() -> int:
            async with s.post(fleet.base + "/v1/messages/count_tokens", json=doc,
                              headers={"x-api-key": key_of("alice")}) as r:  # fmt: skip
                assert r.status == 200, await r.text()
                n_tokens: int = (await r.json())["input_tokens"]
                return n_tokens

        answers = await asyncio.gather(*(count() for _ in range(n)))
        async with s.get(fleet.mock.base + "/__mock/counts") as r:
            counts = await r.json()
    return {"requests": n, "distinct_answers": len(set(answers)),
            "upstream_counts": counts.get("/v1/responses/input_tokens", 0)}  # fmt: skip


async def mixed_load(fleet: Fleet, seconds: float, concurrency: int = 24) -> dict[str, Any]:
    out = Outcomes()
    events: list[str] = []
    stop = time.monotonic() + seconds
    url = fleet.base + "/v1/messages"

    async def client(seed: int) -> None:
        rng = random.Random(seed)
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=connector) as s:
            while time.monotonic() < stop:
                await one(s, url, key_of("alice"), body(rng.random() < 0.5, rng.randint(3, 60)),
                          out)  # fmt: skip

    async def faults() -> dict[str, Any]:
        victim = fleet.gateways[0]
        await asyncio.sleep(seconds * 0.25)
        t0 = time.monotonic()
        victim.popen.send_signal(signal.SIGTERM)
        events.append(f"{t0 - (stop - seconds):.1f}s: SIGTERM to gateway-0")
        code = await asyncio.to_thread(victim.popen.wait, 30)
        exited = time.monotonic() - t0
        await asyncio.sleep(max(0.0, stop - seconds * 0.5 - time.monotonic()))
        fleet.redis.stop()
        events.append(f"{time.monotonic() - (stop - seconds):.1f}s: redis-server killed")
        await asyncio.sleep(max(0.0, stop - seconds * 0.25 - time.monotonic()))
        fleet.redis.start()
        events.append(f"{time.monotonic() - (stop - seconds):.1f}s: redis-server started")
        return {"gateway0_exit": code, "gateway0_exit_seconds": round(exited, 2)}

    fault, *_ = await asyncio.gather(faults(), *(client(i) for i in range(concurrency)))
    # the fleet is back on Redis once it answers again
    async with aiohttp.ClientSession() as s:
        deadline = time.monotonic() + 10
        back = False
        while time.monotonic() < deadline and not back:
            states = []
            for gw in fleet.gateways[1:]:
                async with s.get(gw.base + "/readyz") as r:
                    states.append((await r.json()).get("redis", {}).get("up"))
            back = all(states)
            if not back:
                await asyncio.sleep(0.2)
    lat = sorted(out.latencies)
    pct = lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 1) if lat else None  # noqa: E731
    return {
        "seconds": seconds, "concurrency": concurrency, "completed": out.ok,
        "anthropic_errors": out.errors, "failures": len(out.failures),
        "failure_samples": out.failures[:5], "requests_per_s": round((out.ok + sum(
            out.errors.values())) / seconds, 1), "p50_ms": pct(0.5), "p99_ms": pct(0.99),
        "redis_back": back, "events": events, **fault,
    }  # fmt: skip


async def run(seconds: float) -> dict[str, Any]:
    fleet = await start_fleet()
    try:
        report: dict[str, Any] = {"limit": await limit_burst(fleet)}
        report["count_tokens"] = await count_burst(fleet)
        report["load"] = await mixed_load(fleet, seconds)
        return report
    finally:
        stop_fleet(fleet)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tests.fleet.harness", description=__doc__)
    p.add_argument("--seconds", type=float, default=60.0)
    args = p.parse_args(argv)
    report = asyncio.run(run(args.seconds))
    print(json.dumps(report, indent=2))
    load = report["load"]
    ok = (
        report["limit"]["ok"] == LIMIT
        and report["count_tokens"]["upstream_counts"] == 1
        and load["failures"] == 0
        and load["redis_back"]
        and load["gateway0_exit"] == 0
    )
    print("fleet: PASS" if ok else "fleet: FAIL", file=sys.stderr)
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
