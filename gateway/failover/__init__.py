"""Resilience across upstreams (issue 16): key pools, circuit breakers, per-upstream
concurrency limits, and the fallback chain that uses them before the first byte."""
