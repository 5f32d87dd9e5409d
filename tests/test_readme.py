"""Every TOML example in the README is a valid configuration (users paste them)."""

from __future__ import annotations

import ast
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


# ---------------------------------------------------------------------------------------------
# The "Supported Messages API features" table: every row names tests that exist.

STATUSES = {"supported", "emulated", "not supported"}
ROOT = README.parent


def feature_rows() -> list[list[str]]:
    text = README.read_text()
    section = text.split("## Supported Messages API features\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    header, *body = rows
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "feature", "Responses", "Chat", "notes", "tested by"]  # fmt: skip
    return [[c.strip() for c in row.strip().strip("|").split("|")] for row in body]


def functions_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef)
    return {n.name for n in ast.walk(tree) if isinstance(n, kinds) and n.name.startswith("test_")}


def problems(rows: list[list[str]]) -> list[str]:
    """What is wrong with the table: unknown statuses, rows naming no test or a missing one."""
    found = []
    for feature, responses, chat, _notes, tested_by in rows:
        if not {responses, chat} <= STATUSES:
            found.append(f"{feature}: status must be one of {sorted(STATUSES)}")
        named = re.findall(r"`(tests/[\w/]+\.py)::(test_\w+)`", tested_by)
        if not named:
            found.append(f"{feature}: names no test")
        for file, name in named:
            path = ROOT / file
            if not path.is_file() or name not in functions_in(path):
                found.append(f"{feature}: {file}::{name} does not exist")
    return found


def test_every_feature_row_names_a_test_that_exists() -> None:
    rows = feature_rows()
    assert len(rows) >= 25
    assert problems(rows) == []


def test_the_table_check_finds_what_is_wrong() -> None:
    good = "`tests/test_strict.py::test_sdk_parse_gets_its_model_back`"
    rows = [
        ["a", "supported", "emulated", "", good],
        ["b", "supported", "partly", "", good],
        ["c", "supported", "supported", "", "nothing"],
        ["d", "supported", "supported", "", "`tests/test_strict.py::test_no_such_thing`"],
        ["e", "supported", "supported", "", "`tests/test_nowhere.py::test_x`"],
    ]
    assert problems(rows) == [
        "b: status must be one of ['emulated', 'not supported', 'supported']",
        "c: names no test",
        "d: tests/test_strict.py::test_no_such_thing does not exist",
        "e: tests/test_nowhere.py::test_x does not exist",
    ]
