"""The deployment pieces in config/: the systemd unit verifies, the example config loads."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "config" / "messages-gateway.service"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_unit_verifies(tmp_path: Path) -> None:
    text = UNIT.read_text()
    assert "/opt/messages-gateway/.venv/bin/python" in text
    # point ExecStart at a python that exists here; everything else is verified as shipped
    unit = tmp_path / UNIT.name
    unit.write_text(text.replace("/opt/messages-gateway/.venv/bin/python", sys.executable))
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr


def test_unit_is_hardened_and_unprivileged() -> None:
    lines = {line.split("=", 1)[0] for line in UNIT.read_text().splitlines() if "=" in line}
    for directive in (
        "User",
        "EnvironmentFile",
        "Restart",
        "NoNewPrivileges",
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "CapabilityBoundingSet",
        "SystemCallFilter",
        "RestrictAddressFamilies",
        "MemoryDenyWriteExecute",
    ):
        assert directive in lines, directive
    assert "User=root" not in UNIT.read_text()
