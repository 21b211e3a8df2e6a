"""Who may open a connection to what, by the NetworkPolicies in platform/ (no cluster runs here), evaluated
with Kubernetes' rules: a pod that some policy selects for Ingress is isolated and admits only what one of
those policies' rules allows.

Why it matters for the functions: their own server (functions-framework's uvicorn) sets no deadline on
reading a request's headers, so a client that drips them holds a connection. In the cluster clients do
not reach that server: requests arrive through Knative (the Kourier gateways, the activator) at the
pod's queue-proxy, whose Go server reads headers within 60 s (Knative Serving 1.23's
pkg/queue/sharedmain/servers.go: knative.dev/pkg/network.NewServer, `ReadHeaderTimeout: time.Minute`);
only Knative's own components and Prometheus' scrape may connect to the pod at all."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.support import ROOT

BASE = ROOT / "platform" / "base"
NAMESPACE = yaml.safe_load((BASE / "kustomization.yaml").read_text())["namespace"]
FUNCTIONS = ("predict", "ingest-one-url", "validate-label")
USER_PORT, QUEUE_PROXY_PORT = 8080, 8012  # the function's own server; Knative's queue-proxy in its pod

Pod = tuple[str, dict[str, str]]  # namespace, labels


def policies() -> list[dict[str, Any]]:
    documents = yaml.safe_load_all((BASE / "network" / "networkpolicies.yaml").read_text())
    return [d for d in documents if d["kind"] == "NetworkPolicy"]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A label selector as Kubernetes evaluates it; `{}` selects everything."""
    assert set(selector) <= {"matchLabels", "matchExpressions"}, selector
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        present = key in labels
        held = {
            "In": present and labels[key] in values,
            "NotIn": not present or labels[key] not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[operator]
        if not held:
            return False
    return True


def peer_matches(peer: dict[str, Any], client: Pod) -> bool:
    """A `from` entry: pods of the policy's namespace, of the selected namespaces, or both selectors."""
    assert set(peer) <= {"namespaceSelector", "podSelector"}, peer  # no ipBlock here to evaluate
    namespace, labels = client
    if "namespaceSelector" in peer:
        in_namespace = selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": namespace})
    else:
        in_namespace = namespace == NAMESPACE
    return in_namespace and selects(peer.get("podSelector", {}), labels)


def admitted(target: dict[str, str], client: Pod, port: int) -> bool:
    """Whether `client` may connect to TCP `port` of a pod of this namespace labelled `target`. A rule
    without `from` (or with an empty one) admits every source; without `ports`, every port."""
    isolating = [
        p["spec"]
        for p in policies()
        if "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
        and selects(p["spec"]["podSelector"], target)
    ]
    if not isolating:
        return True
    return any(
        port_matches(rule.get("ports"), port)
        and (not rule.get("from") or any(peer_matches(peer, client) for peer in rule["from"]))
        for spec in isolating
        for rule in spec.get("ingress", [])
    )


def port_matches(ports: list[dict[str, Any]] | None, port: int) -> bool:
    for entry in ports or []:
        assert set(entry) <= {"port", "protocol"} and isinstance(entry["port"], int), entry  # no ranges
    return not ports or any(e["port"] == port and e.get("protocol", "TCP") == "TCP" for e in ports)


CLIENTS: dict[str, Pod] = {
    "activator": ("knative-serving", {"app": "activator"}),
    "kourier gateway": ("kourier-system", {"app": "3scale-kourier-gateway"}),
    "prometheus": ("monitoring", {"app.kubernetes.io/name": "prometheus", "prometheus": "kube-prometheus"}),
    "grafana": ("monitoring", {"app.kubernetes.io/name": "grafana"}),
    "web app": (NAMESPACE, {"serving.knative.dev/service": "web"}),
    "workflow step": (NAMESPACE, {"workflows.argoproj.io/workflow": "extract-images-x7k2p"}),
    "unlabelled pod": (NAMESPACE, {}),
    "pod elsewhere": ("default", {"app": "curl"}),
}


@pytest.mark.parametrize("function", FUNCTIONS)
def test_a_function_is_reached_only_through_knative_and_scraped_only_by_prometheus(function: str) -> None:
    target = {"serving.knative.dev/service": function, "app.kubernetes.io/part-of": "dandelion"}
    other = next(f for f in FUNCTIONS if f != function)
    clients = CLIENTS | {"another function": (NAMESPACE, {"serving.knative.dev/service": other})}
    reachable = {
        (name, port)
        for name, client in clients.items()
        for port in (USER_PORT, QUEUE_PROXY_PORT)
        if admitted(target, client, port)
    }
    assert reachable == {
        ("activator", USER_PORT),
        ("activator", QUEUE_PROXY_PORT),
        ("kourier gateway", USER_PORT),
        ("kourier gateway", QUEUE_PROXY_PORT),
        ("prometheus", USER_PORT),
    }


def test_a_pod_no_rule_opens_admits_nobody_and_a_rule_opens_only_its_ports_to_its_peers() -> None:
    assert not admitted({}, CLIENTS["workflow step"], USER_PORT)  # default-deny-ingress alone
    catalog = {"app.kubernetes.io/name": "mysql"}
    assert admitted(catalog, CLIENTS["workflow step"], 3306)
    assert not admitted(catalog, CLIENTS["workflow step"], 3307)
    assert not admitted(catalog, (NAMESPACE, {"serving.knative.dev/service": "predict"}), 3306)
