"""Per-key limits and budgets (issue 17 item 2): the state one key carries between requests.

Windows are sliding (the last 60 s), so a ``retry-after`` is when enough of the window will
have passed, not a guess. A request reserves its token estimate (the body's size / 4) when it
is admitted; when its answer ends, streamed or not, the reservation becomes the real usage.
Budgets (tokens, cost; per UTC day and month) start from the ledger and are refreshed from it
(every worker's rows), so they hold across restarts and ``--workers``.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from ..errors import PermissionDeniedError, RateLimitError
from ..settings import glob_match
from .keyfile import KeyEntry

WINDOW: Final = 60.0


#: the UTC day last asked about: [start, end, "YYYY-MM-DD", "YYYY-MM"]; a named key asks twice
#: per request, and formatting a date costs more than the rest of its limit checks (issue 19)
_day: list[Any] = [0.0, 0.0, "", ""]


def day_and_month(now: float) -> tuple[str, str]:
    day = _day
    if not day[0] <= now < day[1]:
        d = datetime.fromtimestamp(now, UTC)
        start = d.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
        day[:] = [start, start + 86400.0, d.strftime("%Y-%m-%d"), d.strftime("%Y-%m")]
    return day[2], day[3]


def resets(now: float, monthly: bool) -> datetime:
    """When the day's (or month's) budget starts again (UTC)."""
    d = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if not monthly:
        return d + timedelta(days=1)
    return (d.replace(day=1) + timedelta(days=32)).replace(day=1)


def period_start(now: float, monthly: bool) -> float:
    d = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return (d.replace(day=1) if monthly else d).timestamp()


@dataclass(slots=True)
class Spend:
    tokens: int = 0
    cost: float = 0.0


@dataclass(slots=True)
class KeyState:
    """One named key's live state; ``entry`` is replaced when the keys file is reloaded."""

    entry: KeyEntry
    requests: deque[float] = field(default_factory=deque)
    #: [time, tokens] per request of the last minute (a reservation until settled)
    tokens: deque[list[float]] = field(default_factory=deque)
    token_sum: float = 0.0
    active: int = 0
    day: str = ""
    month: str = ""
    today: Spend = field(default_factory=Spend)
    this_month: Spend = field(default_factory=Spend)

    @property
    def name(self) -> str:
        return self.entry.name

    def allows_model(self, model: str) -> bool:
        patterns = self.entry.models
        if not patterns:
            return True
        lowered = model.lower()
        return any(glob_match(lowered, p.lower()) for p in patterns)

    def _roll(self, now: float) -> None:
        day, month = day_and_month(now)
        if day != self.day:
            self.day, self.today = day, Spend()
        if month != self.month:
            self.month, self.this_month = month, Spend()

    @property
    def windowed(self) -> bool:
        """It has a limit counted in a window or in flight (what a fleet shares in Redis)."""
        lim = self.entry.limits
        return lim.rpm is not None or lim.tpm is not None or lim.concurrent is not None

    def precheck(self, model: str, now: float) -> None:
        """The model it may use and its budgets (raise when refused)."""
        if not self.allows_model(model):
            raise PermissionDeniedError(
                f"key {self.name!r} may not use model {model[:100]!r} (keys file: models)"
            )
        self._roll(now)
        self._budgets(now)

    def admit(
        self, model: str, estimate: int, clock: Callable[[], float] = time.time
    ) -> list[float]:
        """Take a place, or raise the error saying which limit and until when. Returns the
        token reservation to settle with :meth:`settle`."""
        now = clock()
        self.precheck(model, now)
        limits = self.entry.limits
        if limits.concurrent is not None and self.active >= limits.concurrent:
            raise LimitExceeded(
                f"key {self.name!r} has {self.active} requests in flight, its limit "
                f"(concurrent = {limits.concurrent})",
                "concurrent",
                1.0,
            )
        reqs = self.requests
        while reqs and reqs[0] <= now - WINDOW:
            reqs.popleft()
        if limits.rpm is not None and len(reqs) >= limits.rpm:
            raise LimitExceeded(f"key {self.name!r} sent {len(reqs)} requests in the last "
                                f"minute, its limit (rpm = {limits.rpm})", "rpm",
                                reqs[0] + WINDOW - now)  # fmt: skip
        window = self.tokens
        while window and window[0][0] <= now - WINDOW:
            self.token_sum -= window.popleft()[1]
        if limits.tpm is not None and window and self.token_sum + estimate > limits.tpm:
            need = self.token_sum + estimate - limits.tpm
            wait = WINDOW
            freed = 0.0
            for t, n in window:
                freed += n
                if freed >= need:
                    wait = t + WINDOW - now
                    break
            raise LimitExceeded(
                f"key {self.name!r} used {int(self.token_sum):,} tokens in the last minute and "
                f"this request needs about {estimate:,} more (tpm = {limits.tpm:,})",
                "tpm",
                wait,
            )
        reqs.append(now)
        entry = [now, float(estimate)]
        window.append(entry)
        self.token_sum += estimate
        self.active += 1
        return entry

    def settle(self, reservation: list[float], tokens: int, cost: float, now: float) -> None:
        """The request ended: its reservation becomes ``tokens``; budgets gain them."""
        self.active -= 1
        if reservation[1] != tokens:
            if self.tokens and reservation[0] >= self.tokens[0][0]:  # still in the window
                self.token_sum += tokens - reservation[1]
            reservation[1] = float(tokens)
        self.add(tokens, cost, now)

    def add(self, tokens: int, cost: float, now: float) -> None:
        self._roll(now)
        self.today.tokens += tokens
        self.today.cost += cost
        self.this_month.tokens += tokens
        self.this_month.cost += cost

    def _budgets(self, now: float) -> None:
        limits = self.entry.limits
        for spent, limit, what, monthly in (
            (self.today.tokens, limits.daily_tokens, "daily token", False),
            (self.this_month.tokens, limits.monthly_tokens, "monthly token", True),
            (self.today.cost, limits.daily_cost, "daily cost", False),
            (self.this_month.cost, limits.monthly_cost, "monthly cost", True),
        ):
            if limit is not None and spent >= limit:
                at = resets(now, monthly)
                shown = f"{limit:,}" if isinstance(limit, int) else f"{limit:g}"
                # spent until the reset: retrying sooner cannot help (x-should-retry: false)
                raise LimitExceeded(
                    f"key {self.name!r} has spent its {what} budget ({shown}); it resets at "
                    f"{at.strftime('%Y-%m-%dT%H:%M:%SZ')}",
                    ("daily_" if not monthly else "monthly_") + what.split()[1],
                    at.timestamp() - now,
                    should_retry=False,
                )


class LimitExceeded(RateLimitError):
    """A key's limit or budget: 429 with an honest ``retry-after``; ``limit`` names which
    (``rpm``, ``tpm``, ``concurrent``, ``daily_tokens``, …) for metrics and the ledger."""

    def __init__(
        self, message: str, limit: str, wait: float, *, should_retry: bool | None = None
    ) -> None:
        super().__init__(
            message,
            headers={"retry-after": str(max(1, math.ceil(wait)))},
            should_retry=should_retry,
        )
        self.limit = limit


def refusal(state: KeyState, code: int, count: int, wait: float, estimate: int) -> LimitExceeded:
    """The error for a refusal the fleet's Redis gave (codes of ``shared.ADMIT``)."""
    lim = state.entry.limits
    name = state.name
    if code == 1:
        return LimitExceeded(f"key {name!r} has {count} requests in flight, its limit "
                             f"(concurrent = {lim.concurrent})", "concurrent", 1.0)  # fmt: skip
    if code == 2:
        return LimitExceeded(f"key {name!r} sent {count} requests in the last minute, its "
                             f"limit (rpm = {lim.rpm})", "rpm", wait)  # fmt: skip
    return LimitExceeded(
        f"key {name!r} used {count:,} tokens in the last minute and this request needs about "
        f"{estimate:,} more (tpm = {lim.tpm or 0:,})",
        "tpm",
        wait,
    )
