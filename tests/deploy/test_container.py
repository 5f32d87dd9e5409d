"""The container image (config/container/): the Dockerfile read as text (no container engine
runs here, so the image is never built in the suite), and its entrypoint script run for real,
outside a container, with this venv's python standing in for the image's /opt/venv."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

import gateway

from .support import (
    DOCKERFILE,
    DOCKERIGNORE,
    ENTRYPOINT,
    KUBERNETES,
    ROOT,
    Instruction,
    copy_parts,
    dockerfile,
    stage_names,
)

SIGNING_KEY = "container-test-signing-key-0123456789abcdef"
PING = {
    "model": "claude-sonnet-5-5",
    "max_tokens": 20,
    "messages": [{"role": "user", "content": "ping"}],
}


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.stage == last]


def only(instructions: list[Instruction], name: str) -> Instruction:
    found = [i for i in instructions if i.name == name]
    assert len(found) == 1, f"{name}: {found}"
    return found[0]


# --- the Dockerfile -------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_on_a_pinned_base() -> None:
    ins = dockerfile()
    froms = [i for i in ins if i.name == "FROM"]
    assert len(froms) >= 2
    for f in froms:
        image = f.args.split()[0]
        assert "@" not in image or ":" in image.split("@")[0], image
        name, _, tag = image.partition(":")
        assert tag, f"{image}: no tag"
        assert tag != "latest" and "latest" not in tag, image
        # an exact patch release of Python, e.g. 3.11.11-slim-bookworm
        assert re.fullmatch(r"\d+\.\d+\.\d+-slim-[a-z]+", tag), image
        assert name == "python", image
    # every stage builds on the same base, so the venv's interpreter path holds in the last
    assert len({f.args.split()[0] for f in froms}) == 1


def test_builder_installs_the_project_with_the_fleet_extras() -> None:
    ins = dockerfile()
    runs = " ".join(i.args for i in ins if i.name == "RUN" and i.stage < ins[-1].stage)
    assert "pip wheel" in runs and "/opt/venv" in runs
    m = re.search(r'"\.\[([a-z,]+)\]"', runs)
    assert m, runs
    extras = set(m.group(1).split(","))
    assert {"redis", "postgres"} <= extras
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert extras <= set(pyproject["project"]["optional-dependencies"])
    # the final stage takes the venv from the builder
    names = stage_names(ins)
    copies = [copy_parts(i) for i in final_stage(ins) if i.name == "COPY"]
    assert any(
        flags.get("from") in names and src == ["/opt/venv"] and dest == "/opt/venv"
        for flags, src, dest in copies
    ), copies


def test_final_stage_runs_unprivileged_and_is_complete() -> None:
    last = final_stage(dockerfile())
    user = only(last, "USER").args.split(":")[0]
    assert user.isdigit() and int(user) != 0, user
    deployment = yaml.safe_load((KUBERNETES / "deployment.yaml").read_text(encoding="utf-8"))
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == int(user)
    assert only(last, "EXPOSE").args.split() == ["8082"]
    env = " ".join(i.args for i in last if i.name == "ENV")
    assert re.search(r"(^|\s)GATEWAY_HOST=0\.0\.0\.0(\s|$)", env), env
    assert "XDG_STATE_HOME=/var/lib/messages-gateway" in env
    assert only(last, "STOPSIGNAL").args == "SIGTERM"
    health = only(last, "HEALTHCHECK").exec_form()
    assert health[0] == "/opt/venv/bin/python" and "/healthz" in health[-1]
    assert "curl" not in only(last, "HEALTHCHECK").args
    version = re.search(r'org\.opencontainers\.image\.version="([^"]+)"', only(last, "LABEL").args)
    assert version and version.group(1) == gateway.__version__


def test_entrypoint_is_the_script_the_image_copies() -> None:
    ins = dockerfile()
    entry = only(final_stage(ins), "ENTRYPOINT").exec_form()
    assert len(entry) == 1, entry
    target = entry[0]
    script = "config/container/entrypoint.sh"
    copied_to = [dest for flags, src, dest in map(copy_parts, (i for i in ins if i.name == "COPY"))
                 if src == [script] and "from" not in flags]  # fmt: skip
    assert copied_to, f"no COPY of {script}"
    dest = copied_to[0]
    assert target == dest
    # copied in the final stage itself, or into a directory the final stage takes whole
    names = stage_names(ins)
    finals = [copy_parts(i) for i in final_stage(ins) if i.name == "COPY"]
    assert any(
        d == dest or (flags.get("from") in names and dest.startswith(src[0].rstrip("/") + "/"))
        for flags, src, d in finals
        if src
    ), finals
    # and made executable where it lands
    assert any(i.name == "RUN" and "chmod" in i.args and dest in i.args for i in ins)


def test_build_context_holds_what_the_dockerfile_copies() -> None:
    """The dockerignore is an allow-list: each COPY source from the context is let in, and
    exists."""
    allowed = {
        line[1:].strip().rstrip("/")
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.startswith("!")
    }
    lines = [ln.strip() for ln in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()]
    assert "*" in lines
    for ins in dockerfile():
        if ins.name != "COPY":
            continue
        flags, sources, _ = copy_parts(ins)
        if "from" in flags:
            continue
        for src in sources:
            src = src.rstrip("/")
            assert (ROOT / src).exists(), src
            assert src in allowed, f"{src} is copied but excluded by the dockerignore"
    # the header tells how to build it
    assert "docker build -f config/container/Dockerfile" in DOCKERFILE.read_text(encoding="utf-8")


# --- the entrypoint script, run outside a container ------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def script_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A clean environment (no upstream keys or GATEWAY_* of the developer's shell)."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "GATEWAY_PYTHON": sys.executable,
        "GATEWAY_HOST": "127.0.0.1",
        **extra,
    }


def run_script(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(ENTRYPOINT), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


def test_script_refuses_to_start_without_a_signing_key(tmp_path: Path) -> None:
    env = script_env(tmp_path, XDG_STATE_HOME=str(tmp_path), GATEWAY_PORT=str(free_port()))
    for extra in ({}, {"GATEWAY_SIGNING_KEY": ""}, {"GATEWAY_ALLOW_EPHEMERAL_KEY": "0"}):
        proc = run_script(["--mock"], {**env, **extra})
        assert proc.returncode == 2, proc
        assert proc.stdout == ""
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert lines[0].startswith("messages-gateway: ")
        assert "GATEWAY_SIGNING_KEY" in lines[0]
        assert "GATEWAY_ALLOW_EPHEMERAL_KEY=1" in lines[0]
    assert not (tmp_path / "messages-gateway").exists()  # nothing was started


def test_script_with_ephemeral_key_allowed_and_default_state_dir(tmp_path: Path) -> None:
    env = script_env(tmp_path, GATEWAY_PORT=str(free_port()), GATEWAY_ALLOW_EPHEMERAL_KEY="1")
    proc = run_script(["--check-config", "--mock"], env)  # --check-config itself: run once
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("messages-gateway: configuration OK") == 1
    # XDG_STATE_HOME defaulted to /var/lib/messages-gateway (--check-config writes nothing)
    assert "signing keys: 1 from /var/lib/messages-gateway/messages-gateway/signing.key" in (
        proc.stdout
    )


def test_script_fails_fast_with_the_gateways_one_line(tmp_path: Path) -> None:
    env = script_env(
        tmp_path, XDG_STATE_HOME=str(tmp_path), GATEWAY_SIGNING_KEY=SIGNING_KEY, GATEWAY_PORT="abc"
    )
    proc = run_script(["--mock"], env)
    assert proc.returncode == 2, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("messages-gateway: bad environment variable GATEWAY_PORT='abc'")
    # no upstream key, no --mock: the check names the variable
    env = script_env(
        tmp_path, XDG_STATE_HOME=str(tmp_path), GATEWAY_SIGNING_KEY=SIGNING_KEY,
        GATEWAY_PORT=str(free_port()),
    )  # fmt: skip
    proc = run_script([], env)
    assert proc.returncode == 2, proc
    assert proc.stderr.strip().splitlines() == [
        "messages-gateway: upstream 'default' needs OPENAI_API_KEY, which is not set: export it, "
        "or start with --mock to serve fake answers from the built-in mock upstream"
    ]


def test_script_passes_version_and_subcommands_through(tmp_path: Path) -> None:
    env = script_env(tmp_path, XDG_STATE_HOME=str(tmp_path))
    proc = run_script(["--version"], env)  # no signing key needed for that
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"messages-gateway {gateway.__version__}"


def http(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def wait_until_listening(proc: subprocess.Popen[bytes], port: int, err: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"exited {proc.returncode} before listening: {err.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"not listening on {port} after 15 s: {err.read_text()}")


def test_script_serves_and_sigterm_reaches_the_gateway(tmp_path: Path) -> None:
    port = free_port()
    state = tmp_path / "state"
    env = script_env(
        tmp_path, XDG_STATE_HOME=str(state), GATEWAY_SIGNING_KEY=SIGNING_KEY,
        GATEWAY_PORT=str(port),
    )  # fmt: skip
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("wb") as fo, err.open("wb") as fe:
        # its own process group, so that nothing outlives the test even if the script forked
        proc = subprocess.Popen(
            ["sh", str(ENTRYPOINT), "--mock"],
            env=env, stdin=subprocess.DEVNULL, stdout=fo, stderr=fe, cwd=tmp_path,
            start_new_session=True,
        )  # fmt: skip
    try:
        wait_until_listening(proc, port, err)
        base = f"http://127.0.0.1:{port}"
        status, health = http("GET", f"{base}/healthz")
        assert status == 200 and health["status"] == "ok" and health["mock"] is True
        # the script exec'd: the gateway is the very process that was started
        assert health["pid"] == proc.pid
        status, answer = http("POST", f"{base}/v1/messages", PING)
        assert status == 200, answer
        assert answer["type"] == "message" and answer["role"] == "assistant"
        # the image's HEALTHCHECK command, with this venv's python for /opt/venv's
        check = only(dockerfile(), "HEALTHCHECK").exec_form()
        probe = subprocess.run(
            [sys.executable, *check[1:]], env={**env, "GATEWAY_PORT": str(port)},
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        assert probe.returncode == 0, probe.stderr
        # the usage ledger went to the state directory the script pointed at
        assert (state / "messages-gateway").is_dir()
    finally:
        proc.send_signal(signal.SIGTERM)  # to the started pid only: it must be the gateway
        code: int | None
        try:
            code = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = None
        if code != 0:  # anything left in its group (a script that did not exec, say)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        if code is None:
            proc.wait(timeout=5)
            pytest.fail(f"still running 10 s after SIGTERM: {err.read_text()}")
    logs = err.read_text()
    assert code == 0, logs
    # --check-config ran (and passed) before the gateway started listening
    assert logs.index("messages-gateway: configuration OK") < logs.index("listening on")
    assert "gateway_stopped" in logs
    assert "Traceback" not in logs
