"""What the deploy tests share: paths, and the Dockerfile read into instructions."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"
CONTAINER = CONFIG / "container"
DOCKERFILE = CONTAINER / "Dockerfile"
ENTRYPOINT = CONTAINER / "entrypoint.sh"
DOCKERIGNORE = CONTAINER / "dockerignore"
KUBERNETES = CONFIG / "kubernetes"
DASHBOARD = CONFIG / "grafana" / "messages-gateway.json"


@dataclass(frozen=True)
class Instruction:
    name: str  # upper case: FROM, COPY, ...
    args: str  # the rest of the line, continuations joined
    stage: int  # index of the FROM it belongs to

    def exec_form(self) -> list[str]:
        """``["a", "b"]`` arguments (ENTRYPOINT, CMD, HEALTHCHECK ... CMD [...])."""
        text = self.args
        if self.name == "HEALTHCHECK":
            text = text.split(" CMD ", 1)[1]
        value = json.loads(text)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value), text
        return value


def dockerfile() -> list[Instruction]:
    """The Dockerfile's instructions, comments dropped and ``\\`` continuations joined."""
    out: list[Instruction] = []
    pending = ""
    stage = -1
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        full = (pending + line).strip()
        pending = ""
        name, _, args = full.partition(" ")
        name = name.upper()
        if name == "FROM":
            stage += 1
        out.append(Instruction(name, args.strip(), stage))
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


def copy_parts(ins: Instruction) -> tuple[dict[str, str], list[str], str]:
    """A COPY's ``--flag=value`` options, its sources and its destination."""
    words = ins.args.split()
    flags = dict(w[2:].split("=", 1) for w in words if w.startswith("--"))
    paths = [w for w in words if not w.startswith("--")]
    return flags, paths[:-1], paths[-1]


def stage_names(instructions: list[Instruction]) -> dict[str, int]:
    names: dict[str, int] = {}
    for ins in instructions:
        if ins.name == "FROM":
            m = re.search(r"\s+AS\s+(\S+)$", ins.args, re.IGNORECASE)
            if m:
                names[m.group(1)] = ins.stage
    return names


def load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))
