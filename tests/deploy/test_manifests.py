"""The Kubernetes manifests (config/kubernetes/): valid against the Kubernetes schemas that
kubernetes-validate bundles, and consistent with the gateway itself: its settings loader, the
environment variables it reads, its probes, its shutdown timing, its image."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

import gateway
from gateway.config import ENV_OVERRIDES, load_settings
from gateway.settings import Settings
from gateway.startup import StartupError, resolve_startup

from .support import ENTRYPOINT, KUBERNETES, ROOT

#: an old release still common in clusters, and the newest whose schemas are bundled
VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
FILES = {
    "configmap.yaml": "ConfigMap",
    "secret.yaml": "Secret",
    "deployment.yaml": "Deployment",
    "service.yaml": "Service",
    "pdb.yaml": "PodDisruptionBudget",
    "hpa.yaml": "HorizontalPodAutoscaler",
    "ingress-nginx.yaml": "Ingress",
    "kustomization.yaml": "Kustomization",
}
#: variables the gateway reads besides ENV_OVERRIDES (each checked against its source below)
READ_BY_GATEWAY = (
    "GATEWAY_CONFIG",
    "GATEWAY_SIGNING_KEY",
    "GATEWAY_API_KEYS",
    "GATEWAY_API_KEYS_FILE",
    "XDG_STATE_HOME",
)
SSE_ANNOTATIONS = {
    "nginx.ingress.kubernetes.io/proxy-buffering": "off",
    "nginx.ingress.kubernetes.io/proxy-request-buffering": "off",
    "nginx.ingress.kubernetes.io/proxy-read-timeout": "3600",
    "nginx.ingress.kubernetes.io/proxy-send-timeout": "3600",
}


def load(name: str) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all((KUBERNETES / name).read_text(encoding="utf-8")) if d]
    assert len(docs) == 1, f"{name}: {len(docs)} documents"
    doc: dict[str, Any] = docs[0]
    return doc


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = load("deployment.yaml")["spec"]["template"]["spec"]
    return spec


def container() -> dict[str, Any]:
    containers = pod_spec()["containers"]
    assert len(containers) == 1
    c: dict[str, Any] = containers[0]
    return c


def container_port(port: int | str) -> int:
    """A probe's or Service's port (a number or a port name) as the container's port."""
    if isinstance(port, int):
        return port
    named = [p["containerPort"] for p in container()["ports"] if p.get("name") == port]
    assert named, f"no container port named {port!r}"
    value: int = named[0]
    return value


def gateway_toml(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(load("configmap.yaml")["data"]["gateway.toml"], encoding="utf-8")
    return path


def literal_env() -> dict[str, str]:
    return {e["name"]: e["value"] for e in container().get("env", []) if "value" in e}


def fleet_settings(tmp_path: Path) -> Settings:
    """The settings a pod runs with: the ConfigMap's file under the Deployment's own env."""
    return load_settings(gateway_toml(tmp_path), env=literal_env())


def test_every_manifest_parses() -> None:
    names = {p.name for p in KUBERNETES.iterdir()}
    assert names == set(FILES)
    for name, kind in FILES.items():
        assert load(name)["kind"] == kind


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", sorted(n for n, k in FILES.items() if k != "Kustomization"))
def test_manifest_is_valid_kubernetes(name: str, version: str) -> None:
    try:
        kubernetes_validate.validate(load(name), version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{name} against Kubernetes {version}: {exc}")


def test_kustomization_lists_the_manifests() -> None:
    kust = load("kustomization.yaml")
    assert kust["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    resources = kust["resources"]
    assert sorted(resources) == sorted(
        ["configmap.yaml", "deployment.yaml", "service.yaml", "pdb.yaml", "hpa.yaml"]
    )
    # the two left out are left out on purpose, and say so
    text = (KUBERNETES / "kustomization.yaml").read_text(encoding="utf-8")
    for name in set(FILES) - set(resources) - {"kustomization.yaml"}:
        assert re.search(rf"^#\s+{re.escape(name)}\s", text, re.MULTILINE), name


def test_configmap_loads_with_the_gateways_own_loader(tmp_path: Path) -> None:
    settings = load_settings(gateway_toml(tmp_path), env={})
    assert settings.server.host == "0.0.0.0"
    assert settings.server.port == 8082
    assert settings.server.drain_delay == 5.0
    assert settings.server.shutdown_grace == 25.0
    assert settings.routes == []  # the default routes
    assert settings.mock is False
    # redis.url is left to GATEWAY_REDIS_URL (from the Secret)
    assert settings.redis.url == ""
    url = "redis://:pw@redis:6379/0"
    assert load_settings(gateway_toml(tmp_path), env={"GATEWAY_REDIS_URL": url}).redis.url == url


def test_config_is_mounted_where_gateway_config_points() -> None:
    configmap = load("configmap.yaml")
    volumes = {v["name"]: v["configMap"]["name"] for v in pod_spec()["volumes"] if "configMap" in v}
    mounts = [m for m in container()["volumeMounts"] if m["name"] in volumes]
    assert len(mounts) == 1
    assert volumes[mounts[0]["name"]] == configmap["metadata"]["name"]
    assert mounts[0].get("readOnly") is True
    path = mounts[0]["mountPath"].rstrip("/") + "/gateway.toml"
    assert path == "/etc/messages-gateway/gateway.toml"
    assert literal_env()["GATEWAY_CONFIG"] == path


def test_probes_ask_the_gateway_on_its_port(tmp_path: Path) -> None:
    c = container()
    port = fleet_settings(tmp_path).server.port
    assert [p["containerPort"] for p in c["ports"]] == [port]
    paths = {"readinessProbe": "/readyz", "livenessProbe": "/healthz", "startupProbe": "/healthz"}
    for probe, path in paths.items():
        get = c[probe]["httpGet"]
        assert get["path"] == path, probe
        assert container_port(get["port"]) == port, probe
        assert get.get("scheme", "HTTP") == "HTTP"


def test_pods_outlive_the_gateways_shutdown(tmp_path: Path) -> None:
    """SIGTERM: drain_delay, then shutdown_grace, then ~4 s: all inside the grace period."""
    server = fleet_settings(tmp_path).server
    pod = pod_spec()
    grace = pod["terminationGracePeriodSeconds"]
    assert grace == 45
    assert grace > server.drain_delay + server.shutdown_grace + 4
    if "--workers" in container().get("args", []):  # gunicorn's graceful_timeout
        assert grace > server.drain_delay + server.shutdown_grace + 10
    # the drain is the gateway's own (drain_delay > 0), not a preStop hook's
    assert server.drain_delay > 0
    assert "preStop" not in container().get("lifecycle", {})


def test_every_variable_set_is_one_the_gateway_reads(tmp_path: Path) -> None:
    source = "\n".join(
        p.read_text(encoding="utf-8") for p in sorted((ROOT / "gateway").rglob("*.py"))
    )
    for name in READ_BY_GATEWAY:
        assert f'"{name}"' in source, f"the gateway no longer reads {name}"
    settings = fleet_settings(tmp_path)
    named_by_settings = {settings.ledger.dsn_env} | {
        var for up in settings.upstreams.values() for var in (up.api_key_env, *up.api_key_envs)
    }
    script = ENTRYPOINT.read_text(encoding="utf-8")
    read_by_entrypoint = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", script))
    assert {"GATEWAY_SIGNING_KEY", "GATEWAY_ALLOW_EPHEMERAL_KEY", "XDG_STATE_HOME"} <= (
        read_by_entrypoint
    )
    known = set(ENV_OVERRIDES) | set(READ_BY_GATEWAY) | named_by_settings | read_by_entrypoint
    known.discard("")  # ledger.dsn_env or an api_key_env left empty
    secret = load("secret.yaml")
    given = {e["name"] for e in container().get("env", [])}
    for source_ref in container().get("envFrom", []):
        assert source_ref["secretRef"]["name"] == secret["metadata"]["name"]
        given |= set(secret.get("stringData", {})) | set(secret.get("data", {}))
    assert given - known == set()
    assert {"OPENAI_API_KEY", "GATEWAY_SIGNING_KEY", "GATEWAY_API_KEYS", "GATEWAY_REDIS_URL"} <= (
        given
    )


def test_secret_holds_placeholders_that_cannot_start_a_gateway(tmp_path: Path) -> None:
    secret = load("secret.yaml")
    values: dict[str, str] = secret["stringData"]
    assert set(values) == {
        "OPENAI_API_KEY",
        "GATEWAY_SIGNING_KEY",
        "GATEWAY_API_KEYS",
        "GATEWAY_REDIS_URL",
    }
    for name, value in values.items():
        assert "REPLACE-ME" in value, name
    # applied as is, the pods refuse to start (a signing key under 32 characters)
    env = {**values, **literal_env(), "XDG_STATE_HOME": str(tmp_path)}
    with pytest.raises(StartupError, match="GATEWAY_SIGNING_KEY"):
        resolve_startup(env, config=str(gateway_toml(tmp_path)), create_signing_key=False)
    # with a real key in its place, everything else in it is accepted
    env["GATEWAY_SIGNING_KEY"] = "0123456789abcdef" * 4
    startup = resolve_startup(env, config=str(gateway_toml(tmp_path)), create_signing_key=False)
    assert len(startup.api_keys) == 2
    assert startup.signing.source == "GATEWAY_SIGNING_KEY"


def test_the_image_runs_unprivileged_on_a_read_only_root() -> None:
    pod = pod_spec()
    c = container()
    assert c["image"] == f"messages-gateway:{gateway.__version__}"
    ctx = pod["securityContext"]
    assert ctx["runAsNonRoot"] is True
    assert ctx["runAsUser"] != 0 and ctx["runAsGroup"] != 0
    assert ctx["seccompProfile"]["type"] == "RuntimeDefault"
    cctx = c["securityContext"]
    assert cctx["readOnlyRootFilesystem"] is True
    assert cctx["allowPrivilegeEscalation"] is False
    assert cctx["capabilities"]["drop"] == ["ALL"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False  # no GATEWAY_PORT=tcp://... from a Service
    # what must be writable is an emptyDir: XDG_STATE_HOME (signing key file, ledger) and /tmp
    empty = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    writable = {m["mountPath"] for m in c["volumeMounts"] if m["name"] in empty}
    assert literal_env()["XDG_STATE_HOME"] in writable
    assert "/tmp" in writable


def test_deployment_shape() -> None:
    deployment = load("deployment.yaml")
    spec = deployment["spec"]
    assert spec["replicas"] == 3
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    resources = container()["resources"]
    for part in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[part]), part
    spread = pod_spec()["topologySpreadConstraints"]
    assert {s["topologyKey"] for s in spread} == {
        "topology.kubernetes.io/zone",
        "kubernetes.io/hostname",
    }
    for s in spread:
        assert s["labelSelector"]["matchLabels"].items() <= labels.items()


def test_service_pdb_and_hpa_select_the_pods() -> None:
    deployment = load("deployment.yaml")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = load("service.yaml")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    assert port["port"] == 80
    assert container_port(port["targetPort"]) == 8082
    assert "SSE" in (KUBERNETES / "service.yaml").read_text(encoding="utf-8")

    pdb = load("pdb.yaml")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    replicas = deployment["spec"]["replicas"]
    if "maxUnavailable" in pdb["spec"]:
        assert pdb["spec"]["maxUnavailable"] == 1
    else:
        assert pdb["spec"]["minAvailable"] == 2
    assert replicas - pdb["spec"].get("maxUnavailable", replicas - 2) >= 2

    hpa = load("hpa.yaml")["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 10)
    assert hpa["minReplicas"] == replicas
    (metric,) = hpa["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
    # a CPU utilisation target needs a CPU request to be a share of
    assert "cpu" in container()["resources"]["requests"]


def test_ingress_keeps_sse_streaming() -> None:
    ingress = load("ingress-nginx.yaml")
    annotations = ingress["metadata"]["annotations"]
    for key, value in SSE_ANNOTATIONS.items():
        assert annotations.get(key) == value, key
    # nginx's 1m default would refuse a Messages body the gateway accepts (32 MiB)
    size = annotations["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert re.fullmatch(r"\d+m", size) and int(size[:-1]) >= 32
    assert ingress["spec"]["ingressClassName"] == "nginx"
    service = load("service.yaml")
    backends = [
        p["backend"]["service"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]
    ]
    assert backends
    for backend in backends:
        assert backend["name"] == service["metadata"]["name"]
        assert backend["port"] in ({"name": "http"}, {"number": 80})
