"""The Prometheus side of observability, checked with Prometheus' own tools (Debian's `prometheus` and
`prometheus-alertmanager`, which `make test` installs): the scrape config, the rules and their unit tests,
the Alertmanager config; and the facts the rules share with the rest of the code."""

import subprocess

import pytest
import yaml

from workflows import defaults
from workflows.local.monitoring import CONFIGS
from workflows.retrain_events import ENDPOINTS, PORT


def rules() -> list[dict]:
    return [
        rule
        for group in yaml.safe_load((CONFIGS / "rules.yml").read_text())["groups"]
        for rule in group["rules"]
    ]


@pytest.mark.parametrize(
    "command",
    [
        ["promtool", "check", "config", "prometheus.yml"],
        ["promtool", "check", "rules", "rules.yml"],
        ["promtool", "test", "rules", "tests/rules_test.yml"],
        ["amtool", "check-config", "alertmanager.yml"],
    ],
    ids=" ".join,
)
def test_prometheus_tools_accept_the_files(command: list[str]) -> None:
    done = subprocess.run(command, cwd=CONFIGS, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_rule_has_a_unit_test() -> None:
    tests = yaml.safe_load((CONFIGS / "tests" / "rules_test.yml").read_text())["tests"]
    tested_alerts = {case["alertname"] for test in tests for case in test.get("alert_rule_test", [])}
    tested_exprs = " ".join(case["expr"] for test in tests for case in test.get("promql_expr_test", []))
    for rule in rules():
        if "alert" in rule:
            assert rule["alert"] in tested_alerts, rule["alert"]
        else:
            assert rule["record"] in tested_exprs, rule["record"]


def test_the_quality_alert_reaches_the_retrain_webhook() -> None:
    assert defaults.QUALITY_ALERT in {rule.get("alert") for rule in rules()}
    config = yaml.safe_load((CONFIGS / "alertmanager.yml").read_text())
    route = next(
        r for r in config["route"]["routes"] if r["matchers"] == [f'alertname="{defaults.QUALITY_ALERT}"']
    )
    receiver = next(r for r in config["receivers"] if r["name"] == route["receiver"])
    assert [hook["url"] for hook in receiver["webhook_configs"]] == [
        f"http://127.0.0.1:{PORT}{ENDPOINTS['alertmanager']}"
    ]
