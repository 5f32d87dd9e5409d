"""What the status page shows live (issue 17 item 4): requests, errors and latency per minute
over the last hour, and the last errors (status, type, route, key name: never content)."""

from __future__ import annotations

import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final

#: latency samples kept per minute (a reservoir: every request equally likely to be kept)
SAMPLES: Final = 1000
MINUTES: Final = 60
LAST_ERRORS: Final = 50


@dataclass(slots=True)
class Minute:
    start: int
    requests: int = 0
    errors: int = 0
    samples: list[float] = field(default_factory=list)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))], 2)


class LiveStats:
    def __init__(self) -> None:
        self.minutes: deque[Minute] = deque(maxlen=MINUTES)
        self.errors: deque[dict[str, Any]] = deque(maxlen=LAST_ERRORS)

    def observe(
        self,
        now: float,
        status: int,
        ms: float,
        error_type: str | None,
        route: str | None,
        key: str,
    ) -> None:
        start = int(now // 60 * 60)
        minutes = self.minutes
        if not minutes or minutes[-1].start != start:
            minutes.append(Minute(start))
        m = minutes[-1]
        m.requests += 1
        if len(m.samples) < SAMPLES:
            m.samples.append(ms)
        else:
            i = random.randrange(m.requests)
            if i < SAMPLES:
                m.samples[i] = ms
        if status >= 400:
            m.errors += 1
            error = {"time": round(now, 3), "status": status, "type": error_type or "",
                     "route": route or "", "key": key}  # fmt: skip
            self.errors.append(error)

    def snapshot(self) -> dict[str, Any]:
        cutoff = time.time() - MINUTES * 60
        recent = [m for m in self.minutes if m.start >= cutoff]
        every = [s for m in recent for s in m.samples]
        return {
            "requests": sum(m.requests for m in recent),
            "errors": sum(m.errors for m in recent),
            "p50_ms": percentile(every, 50),
            "p95_ms": percentile(every, 95),
            "p99_ms": percentile(every, 99),
            "minutes": [_minute(m) for m in recent],
            "last_errors": list(reversed(self.errors)),
        }


def _minute(m: Minute) -> dict[str, Any]:
    return {
        "t": m.start,
        "requests": m.requests,
        "errors": m.errors,
        "p50_ms": percentile(m.samples, 50),
        "p95_ms": percentile(m.samples, 95),
    }
