"""Every TOML example in the README is a valid configuration (users paste them)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.config import load_settings
from gateway.routing import Router

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```toml\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_toml_examples() -> None:
    assert len(BLOCKS) >= 6


@pytest.mark.parametrize("block", BLOCKS, ids=[f"toml{i}" for i in range(len(BLOCKS))])
def test_readme_toml_example_loads(tmp_path: Path, block: str) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(block)
    settings = load_settings(cfg, env={})
    router = Router(settings, env={})
    assert router.resolve("claude-haiku-5-5").upstream_model
