"""The fleet test, short (``make fleet`` runs the minute-long one): three gateways behind
nginx, Redis shared, a SIGTERM and a Redis restart under load (tests/fleet/harness.py)."""

from __future__ import annotations

from tests.fleet.harness import LIMIT, run


async def test_a_short_fleet_run() -> None:
    report = await run(seconds=8.0)
    assert report["limit"] == {"ok": LIMIT, "limited": LIMIT, "other": 0, "failures": 0}
    assert report["count_tokens"] == {"requests": 30, "distinct_answers": 1,
                                      "upstream_counts": 1}  # fmt: skip
    load = report["load"]
    assert load["failures"] == 0, load["failure_samples"]
    assert load["completed"] > 100
    assert load["gateway0_exit"] == 0 and load["gateway0_exit_seconds"] < 10
    assert load["redis_back"] is True
    # the only errors allowed are Anthropic ones a client retries (a gateway going away)
    assert set(load["anthropic_errors"]) <= {"529:overloaded_error", "stream:overloaded_error"}
