"""The deployment files parse and say what they must (no Docker engine or cluster here:
the compose file and Kubernetes manifests are checked as YAML, the script with bash -n)."""

from __future__ import annotations

import subprocess
from typing import Any

import yaml

from gateway.config import PROJECT_ROOT, Settings

DEPLOY = PROJECT_ROOT / "deploy"


def manifests(name: str) -> dict[str, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((DEPLOY / "k8s" / name).read_text()) if d]
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in docs}


def env_names(container: dict[str, Any]) -> set[str]:
    return {e["name"] for e in container.get("env", [])}


def test_every_replica_runs_ringfence_serve() -> None:
    """One way to serve, tested by the suite's replicas (tests/cluster.py): the image,
    Kubernetes and the local cluster all run ``ringfence serve`` (granian)."""
    assert '\nCMD ["ringfence", "serve"]' in (DEPLOY / "Dockerfile").read_text()
    [container] = manifests("gateway.yaml")["Deployment/ringfence-gateway"]["spec"]["template"][
        "spec"
    ]["containers"]
    assert container["args"] == ["ringfence", "serve"]
    script = (DEPLOY / "local-cluster.sh").read_text()
    assert script.count('"$PYTHON" -m gateway.cli serve') == 1
    assert "gunicorn" not in script


def test_compose_has_database_redis_two_replicas_behind_a_balancer_worker_and_beat() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "gateway-a", "gateway-b", "lb", "worker", "beat"} <= set(services)
    for name in ("gateway-a", "gateway-b"):
        env = services[name]["environment"]
        assert env["RINGFENCE_WATCHER_URL"].startswith("redis://redis:")
        assert env["RINGFENCE_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert "readyz" in " ".join(services[name]["healthcheck"]["test"])
    nginx = (DEPLOY / "nginx.conf").read_text()
    assert "gateway-a:8000" in nginx and "gateway-b:8000" in nginx
    assert "X-Forwarded-For" in nginx
    assert "--beat" in services["beat"]["command"] and "--no-beat" in services["worker"]["command"]
    # A mail worker that stops is started again, whatever its exit status (issue 25).
    assert services["worker"]["restart"] == services["beat"]["restart"] == "unless-stopped"


def test_kubernetes_gateway_has_probes_resources_budget_and_secrets_by_reference() -> None:
    docs = manifests("gateway.yaml")
    deployment = docs["Deployment/ringfence-gateway"]
    assert deployment["spec"]["replicas"] >= 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    [container] = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]
    secret_refs = [
        e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if "valueFrom" in e
    ]
    assert secret_refs and set(secret_refs) == {"ringfence"}
    assert all("value" not in e for e in container["env"])  # no secret written inline
    assert {"RINGFENCE_DATABASE_URL", "RINGFENCE_SECRET_KEY", "RINGFENCE_WATCHER_URL"} <= (
        env_names(container)
    )
    labels = deployment["spec"]["selector"]["matchLabels"]
    assert docs["Service/ringfence-gateway"]["spec"]["selector"] == labels
    budget = docs["PodDisruptionBudget/ringfence-gateway"]["spec"]
    assert budget["selector"]["matchLabels"] == labels and budget["minAvailable"] >= 1
    # Every plain setting in the ConfigMap is a real setting.
    known = {f"RINGFENCE_{name.upper()}" for name in Settings.__dataclass_fields__}
    assert set(docs["ConfigMap/ringfence"]["data"]) <= known


def test_kubernetes_worker_beat_and_migration() -> None:
    docs = manifests("worker.yaml")
    beat = docs["Deployment/ringfence-beat"]
    assert beat["spec"]["replicas"] == 1 and beat["spec"]["strategy"]["type"] == "Recreate"
    assert docs["Job/ringfence-migrate"]["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "ringfence",
        "init",
    ]
    for doc in docs.values():
        [container] = doc["spec"]["template"]["spec"]["containers"]
        assert "RINGFENCE_DATABASE_URL" in env_names(container)
    # Deployments restart a container that exits, with any status (restartPolicy Always,
    # the only one they allow): the worker and beat are never left stopped.
    for name in ("Deployment/ringfence-worker", "Deployment/ringfence-beat"):
        pod = docs[name]["spec"]["template"]["spec"]
        assert pod.get("restartPolicy", "Always") == "Always"


def test_dockerfile_is_multi_stage_and_non_root() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert dockerfile.count("FROM ") >= 2 and "COPY --from=build" in dockerfile
    assert "USER 10001" in dockerfile


def test_local_cluster_script_is_valid_bash() -> None:
    script = DEPLOY / "local-cluster.sh"
    assert script.stat().st_mode & 0o111
    subprocess.run(["bash", "-n", str(script)], check=True)
