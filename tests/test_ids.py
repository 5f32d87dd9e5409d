"""Random ids (issue 19 draws their bytes from a pool): unique, base62, and never shared with a
forked worker."""

from __future__ import annotations

import os
import re

from gateway.anthropic import ids


def test_ids_are_base62_of_the_asked_length_and_unique_across_pool_refills() -> None:
    seen = {ids.random_b62(24) for _ in range(2 * ids._POOL_SIZE // 24 + 10)}  # refills twice
    assert len(seen) == 2 * ids._POOL_SIZE // 24 + 10
    assert all(re.fullmatch(r"[0-9A-Za-z]{24}", s) for s in seen)
    assert re.fullmatch(r"[0-9A-Za-z]{5000}", ids.random_b62(5000))  # longer than the pool
    assert re.fullmatch(r"msg_[0-9A-Za-z]{24}", ids.message_id())


def test_a_forked_child_never_hands_out_the_parents_next_id() -> None:
    ids.random_b62(24)  # the pool is filled in the parent
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, to the parent
        os.write(write, ids.random_b62(24).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 100).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert re.fullmatch(r"[0-9A-Za-z]{24}", child)
    assert child != ids.random_b62(24)
