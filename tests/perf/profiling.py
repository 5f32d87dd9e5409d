"""``--profile``: sample the gateway with py-spy during the matrix and summarise the stacks."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from tests.perf.servers import progress


@contextlib.contextmanager
def py_spy(pid: int, out: Path | None) -> Iterator[None]:
    """Sample ``pid`` with py-spy (raw collapsed stacks) while the block runs."""
    if out is None:
        yield
        return
    exe = Path(sys.executable).with_name("py-spy")
    if not exe.exists():
        progress("--profile: py-spy not installed in this environment; skipped")
        yield
        return
    raw = out.with_suffix(".raw")
    spy = subprocess.Popen(
        [
            str(exe),
            "record",
            "--pid",
            str(pid),
            "--rate",
            "250",
            "--format",
            "raw",
            "--output",
            str(raw),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            spy.kill()
    if raw.exists():
        out.write_text(summarise_profile(raw.read_text()))
        progress(f"profile summary in {out} (raw stacks in {raw})")


def summarise_profile(raw: str, top: int = 30) -> str:
    """Self and inclusive sample shares per function from py-spy's raw collapsed stacks."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        total += count
        frames = [f.rsplit(":", 1)[0] + ")" if ":" in f else f for f in stack.split(";")]
        own[frames[-1]] += count
        for f in set(frames):
            incl[f] += count
    lines = [f"py-spy samples: {total}", "", "self %  function"]
    lines += [f"{n / total * 100:5.1f}  {f}" for f, n in own.most_common(top)]
    lines += ["", "incl % function (gateway/ code)"]
    ours = [(f, n) for f, n in incl.most_common() if "gateway/" in f]
    lines += [f"{n / total * 100:5.1f}  {f}" for f, n in ours[:top]]
    return "\n".join(lines) + "\n"
