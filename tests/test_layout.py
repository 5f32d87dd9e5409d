"""The shape of the code (issue 12): no dialect package imports another, the pure layers import
neither aiohttp nor asyncio, there is no import cycle anywhere in ``gateway/``, and no module
is longer than design.md's 400-line guide."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gateway"
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Every gateway module ``path`` imports, at any depth of the file (TYPE_CHECKING and
    function-level imports included: a cycle hidden there is still a cycle)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(path, known) for name, path in mods.items()}


def test_no_dialect_imports_another() -> None:
    bad = []
    for name, deps in graph().items():
        parts = name.split(".")
        if len(parts) < 3 or parts[1] != "dialects" or parts[2] == "base":
            continue
        own = ".".join(parts[:3])
        for dep in deps:
            d = dep.split(".")
            if len(d) >= 3 and d[1] == "dialects" and d[2] != "base" and not dep.startswith(own):
                bad.append(f"{name} imports {dep}")
    assert bad == []


def find_cycles(g: dict[str, set[str]]) -> list[list[str]]:
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(g.get(node, ())):
            # a package's __init__ importing its own submodules is how packages work
            if dep.startswith(node + "."):
                continue
            if state.get(dep) == 1:
                cycles.append([*stack[stack.index(dep) :], dep])
            elif state.get(dep) is None:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            visit(node)
    return cycles


def test_no_import_cycles() -> None:
    assert find_cycles(graph()) == []


def test_the_check_finds_a_cycle_and_a_cross_import(tmp_path: Path) -> None:
    """The walker itself: it sees TYPE_CHECKING imports and relative ones."""
    pkg = tmp_path / "gateway"
    (pkg / "dialects" / "a").mkdir(parents=True)
    (pkg / "dialects" / "b").mkdir()
    for d in (pkg, pkg / "dialects", pkg / "dialects" / "a", pkg / "dialects" / "b"):
        (d / "__init__.py").write_text("")
    (pkg / "dialects" / "a" / "x.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..b.y import Y\n"
    )
    (pkg / "dialects" / "b" / "y.py").write_text("from ..a import x\n")
    known = {module_name_under(tmp_path, p) for p in pkg.rglob("*.py")}
    x = pkg / "dialects" / "a" / "x.py"
    y = pkg / "dialects" / "b" / "y.py"
    assert imports_of_under(tmp_path, x, known) == {"gateway.dialects.b.y"}
    assert imports_of_under(tmp_path, y, known) == {"gateway.dialects.a", "gateway.dialects.a.x"}
    g = {
        "gateway.dialects.a.x": {"gateway.dialects.b.y"},
        "gateway.dialects.b.y": {"gateway.dialects.a.x"},
    }
    assert find_cycles(g) == [
        ["gateway.dialects.a.x", "gateway.dialects.b.y", "gateway.dialects.a.x"]
    ]
    # a package importing its own submodules is not a cycle
    assert find_cycles({"gateway.p": {"gateway.p.q"}, "gateway.p.q": {"gateway.r"}}) == []


def module_name_under(root: Path, path: Path) -> str:
    global ROOT
    saved, ROOT = ROOT, root
    try:
        return module_name(path)
    finally:
        ROOT = saved


def imports_of_under(root: Path, path: Path, known: set[str]) -> set[str]:
    global ROOT
    saved, ROOT = ROOT, root
    try:
        return imports_of(path, known)
    finally:
        ROOT = saved


def test_pure_layers_import_neither_aiohttp_nor_asyncio() -> None:
    pure = [
        name
        for name in modules()
        if name.startswith(("gateway.dialects", "gateway.anthropic", "gateway.schemas"))
    ]
    code = (
        "import importlib, sys\n"
        f"for m in {pure!r}: importlib.import_module(m)\n"
        "bad = [m for m in ('aiohttp', 'asyncio') if m in sys.modules]\n"
        "sys.exit(str(bad) if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr or result.stdout


@pytest.mark.parametrize(
    "path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT))
)
def test_module_length(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= MAX_LINES
