"""The Kubernetes manifests (deploy/kubernetes), checked offline: no cluster runs here.

kubernetes-validate checks every resource against the API schemas it ships (strict:
unknown fields fail); the other tests check what a schema cannot: that the manifests
agree with the images, the compose hardening and each other.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))
# The oldest release still in common use, and the newest the package knows.
VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
SERVER = {"app.kubernetes.io/name": "websocket-gateway", "app.kubernetes.io/component": "server"}
NGINX = {"app.kubernetes.io/name": "websocket-gateway", "app.kubernetes.io/component": "nginx"}


def resources() -> list[dict[str, Any]]:
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


def one(kind: str, name: str) -> dict[str, Any]:
    (found,) = [r for r in resources() if r["kind"] == kind and r["metadata"]["name"] == name]
    return found


def pod(deployment: str) -> dict[str, Any]:
    return one("Deployment", deployment)["spec"]["template"]["spec"]


def dockerfile_user(path: str) -> tuple[int, int]:
    (user,) = re.findall(r"^USER (\d+):(\d+)$", (ROOT / path).read_text(), re.M)
    return int(user[0]), int(user[1])


def env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", [])}


def seconds(duration: str) -> float:
    value, unit = re.fullmatch(r"(\d+)(ms|s|m|h)?", duration).groups()
    return int(value) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[unit]


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_is_valid_against_the_api_schema(version: str) -> None:
    """Each resource validates (strictly: no unknown field) against Kubernetes ``version``."""
    assert MANIFESTS, "no manifests under deploy/kubernetes"
    kinds = set()
    for resource in resources():
        kubernetes_validate.validate(resource, version, strict=True)
        kinds.add(resource["kind"])
    assert kinds >= {"Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"}


def test_the_validator_rejects_a_misspelt_field() -> None:
    """The schema check can fail: a typo in a container spec is caught offline."""
    deployment = one("Deployment", "websocket-server")
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFilesytem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[-1], strict=True)


@pytest.mark.parametrize(
    ("deployment", "dockerfile", "tmp_mib"),
    [("websocket-server", "server/Dockerfile", 16), ("websocket-nginx", "nginx/Dockerfile", 64)],
)
def test_pods_are_hardened_like_compose(deployment: str, dockerfile: str, tmp_mib: int) -> None:
    """The image's UID, read-only root, no capability, no escalation, seccomp, a small /tmp."""
    spec = pod(deployment)
    uid, gid = dockerfile_user(dockerfile)
    context = spec["securityContext"]
    assert (context["runAsUser"], context["runAsGroup"], context["runAsNonRoot"]) == (
        uid,
        gid,
        True,
    )
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = spec["containers"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
    }
    (mount,) = container["volumeMounts"]
    (volume,) = spec["volumes"]
    assert mount == {"name": volume["name"], "mountPath": "/tmp"}
    assert volume["emptyDir"] == {"medium": "Memory", "sizeLimit": f"{tmp_mib}Mi"}


def test_limits_match_the_compose_file() -> None:
    """CPU and memory limits are compose's deploy.resources.limits (their defaults)."""
    compose = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())["services"]
    units = {"1g": "1Gi", "768m": "768Mi"}
    for service, deployment in (("server", "websocket-server"), ("nginx", "websocket-nginx")):
        want = compose[service]["deploy"]["resources"]["limits"]
        memory = re.sub(r"^\$\{\w+:-(.*)\}$", r"\1", want["memory"])  # ${VAR:-default}
        (container,) = pod(deployment)["containers"]
        limits = container["resources"]["limits"]
        assert limits == {"cpu": str(int(float(want["cpus"]))), "memory": units[memory]}


def test_grace_periods_outlast_the_shutdown_timeouts() -> None:
    """SIGKILL comes after the server's preStop sleep and WS_SHUTDOWN_TIMEOUT (the grace
    period counts from the deletion, preStop included), and after NGINX's worker timeout."""
    (server,) = pod("websocket-server")["containers"]
    shutdown = float(env(server)["WS_SHUTDOWN_TIMEOUT"])
    pre_stop = server["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod("websocket-server")["terminationGracePeriodSeconds"] > pre_stop + shutdown
    nginx_env = one("ConfigMap", "websocket-nginx")["data"]
    worker = seconds(nginx_env["WORKER_SHUTDOWN_TIMEOUT"])
    assert pod("websocket-nginx")["terminationGracePeriodSeconds"] > worker


def test_a_stopping_server_is_forgotten_by_nginx_before_it_sends_1001() -> None:
    """The drain order of a rollout: the preStop sleep and WS_DRAIN_DELAY (503 to new
    handshakes) last longer than the cluster DNS (5 s) and NGINX (RESOLVER_VALID) keep the
    pod's address together, so the reconnects 1001 sets off go to pods NGINX still lists
    (a retry after a 503 while NGINX's list changes is answered 502)."""
    (server,) = pod("websocket-server")["containers"]
    pre_stop = server["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain_delay = float(env(server)["WS_DRAIN_DELAY"])
    resolver_valid = seconds(one("ConfigMap", "websocket-nginx")["data"]["RESOLVER_VALID"])
    assert pre_stop >= 5 + resolver_valid
    assert drain_delay > resolver_valid
    assert drain_delay < 0.6 * float(env(server)["WS_SHUTDOWN_TIMEOUT"])  # the server's rule


def test_probes_ask_the_health_endpoints() -> None:
    """Server: alive on /healthz, ready on /readyz (503 while draining); NGINX: /healthz."""
    (server,) = pod("websocket-server")["containers"]
    assert server["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert server["readinessProbe"]["httpGet"]["path"] == "/readyz"
    (nginx,) = pod("websocket-nginx")["containers"]
    assert nginx["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert nginx["readinessProbe"]["httpGet"]["path"] == "/healthz"


def test_nginx_resolves_the_headless_service_through_an_ip_resolver() -> None:
    """UPSTREAM_HOST is the headless Service's FQDN; RESOLVER is an IP, as NGINX needs."""
    service = one("Service", "websocket-server")
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == SERVER
    assert pod("websocket-nginx")["containers"][0]["envFrom"] == [
        {"configMapRef": {"name": "websocket-nginx"}}
    ]
    data = one("ConfigMap", "websocket-nginx")["data"]
    name = service["metadata"]["name"]
    assert re.fullmatch(rf"{name}\.[a-z0-9-]+\.svc\.cluster\.local", data["UPSTREAM_HOST"])
    assert data["UPSTREAM_PORT"] == str(service["spec"]["ports"][0]["port"]) == "3000"
    assert re.fullmatch(r"(\d{1,3}\.){3}\d{1,3}", data["RESOLVER"])


def test_only_nginx_may_reach_the_server_port() -> None:
    """The NetworkPolicy selects the server pods and admits NGINX pods on 3000 only."""
    policy = one("NetworkPolicy", "websocket-server")["spec"]
    assert policy["podSelector"] == {"matchLabels": SERVER}
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    (rule,) = policy["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": NGINX}}]
    assert rule["ports"] == [{"port": 3000, "protocol": "TCP"}]
    assert one("Deployment", "websocket-nginx")["spec"]["template"]["metadata"]["labels"] == NGINX
    assert one("Deployment", "websocket-server")["spec"]["template"]["metadata"]["labels"] == SERVER


def test_the_server_may_open_no_connection() -> None:
    """Like compose's internal backend: the server's policy lists Egress with no rule."""
    policy = one("NetworkPolicy", "websocket-server")["spec"]
    assert "Egress" in policy["policyTypes"]
    assert policy["egress"] == []


def policy_for(labels: dict[str, str]) -> dict[str, Any]:
    (found,) = [
        r["spec"]
        for r in resources()
        if r["kind"] == "NetworkPolicy" and r["spec"]["podSelector"] == {"matchLabels": labels}
    ]
    return found


def test_nginx_pods_admit_clients_on_their_port_and_nothing_on_8081() -> None:
    """NGINX is selected: ingress on its container port only (no 8081, stub_status), egress
    only to the server's 3000 and the cluster DNS on 53."""
    policy = policy_for(NGINX)
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    (container,) = pod("websocket-nginx")["containers"]
    declared = {port["containerPort"] for port in container["ports"]}
    admitted = {port["port"] for rule in policy["ingress"] for port in rule["ports"]}
    assert admitted == declared == {8080}
    assert all("ports" in rule for rule in policy["ingress"]), "a rule without ports admits all"
    to_server, to_dns = policy["egress"]
    assert to_server == {
        "to": [{"podSelector": {"matchLabels": SERVER}}],
        "ports": [{"port": 3000, "protocol": "TCP"}],
    }
    assert to_dns["ports"] == [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
    (dns,) = to_dns["to"]
    assert dns["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
    }
    assert dns["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}


def test_every_pod_is_selected_by_a_network_policy() -> None:
    """No Deployment's pods are left open: each is selected by a policy for both ways."""
    for deployment in ("websocket-server", "websocket-nginx"):
        labels = one("Deployment", deployment)["spec"]["template"]["metadata"]["labels"]
        assert set(policy_for(labels)["policyTypes"]) == {"Ingress", "Egress"}


def test_disruption_budgets_cover_both_deployments() -> None:
    """A node drain evicts at most one pod of each at a time."""
    for name, labels in (("websocket-server", SERVER), ("websocket-nginx", NGINX)):
        budget = one("PodDisruptionBudget", name)["spec"]
        assert budget == {"maxUnavailable": 1, "selector": {"matchLabels": labels}}
