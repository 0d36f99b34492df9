"""The deployment files agree with the code: the rendered kustomization (deploy/k8s) uses the
routes, port and setting names the service really has, its settings pass the service's own
validation, the time budgets add up, the PrometheusRule carries the same alerts as the plain
rules file, and every metric the alerts and the Grafana dashboard query exists in a real scrape.

The schema validation of each object (kubernetes-validate), promtool and hadolint run in
.ci/deploy-checks."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from service.app import POOL_CLOSE_GRACE, create_app
from service.settings import VARIABLES, Settings, load_settings

from .conftest import required_tool

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
OVERLAY = K8S / "overlays" / "example"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARDS = sorted(K8S.rglob("*.json"))
# Series Prometheus itself writes for every target, not cm-api's scrape.
PROMETHEUS_OWN = frozenset({"up"})
# A metric name in a PromQL expression: an identifier not followed by "(" (a function) or a
# label matcher operator, and not a keyword or label name. cm-api's names are all we query,
# with prometheus-client's process_/python_ ones and Prometheus' `up`.
METRIC = re.compile(r"\b((?:cmapi|process|python)_[a-zA-Z0-9_]+|up)\b(?!\s*[(=!~])")


Doc = dict[str, Any]


@pytest.fixture(scope="module")
def rendered() -> list[Doc]:
    kubectl = required_tool("kubectl", "the kubectl package (or any kubectl with kustomize)")
    out = subprocess.run(
        [kubectl, "kustomize", str(OVERLAY)], capture_output=True, text=True, check=True
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def one(docs: list[Doc], kind: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"{kind}: {len(found)}"
    return found[0]


def container(docs: list[Doc]) -> Doc:
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    containers = [c for c in pod["containers"] if c["name"] == "cm-api"]
    assert len(containers) == 1
    return containers[0]


def config(docs: list[Doc]) -> dict[str, str]:
    """The settings the pod gets: the ConfigMap(s) of envFrom, then env entries with values."""
    c = container(docs)
    maps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    values: dict[str, str] = {}
    for source in c.get("envFrom", []):
        values.update(maps[source["configMapRef"]["name"]])
    for entry in c.get("env", []):
        if "value" in entry:
            values[entry["name"]] = entry["value"]
    return values


FILE_SETTINGS = ("DB_PASSWORD_FILE", "API_TOKENS_FILE")


def mounted_secret(docs: list[Doc], path: Path) -> str:
    """The value a pod reads at `path`: the key of the Secret (the example's) mounted there."""
    c = container(docs)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    mounts = [m for m in c["volumeMounts"] if path.is_relative_to(m["mountPath"])]
    assert len(mounts) == 1, path
    assert mounts[0].get("readOnly") is True
    volume = next(v for v in pod["volumes"] if v["name"] == mounts[0]["name"])
    key = str(path.relative_to(mounts[0]["mountPath"]))
    secret = volume["secret"]
    if "items" in secret:
        key = next(i["key"] for i in secret["items"] if i["path"] == key)
    example = next(
        d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == secret["secretName"]
    )
    values: dict[str, str] = example.get("stringData", {})
    assert key in values, f"{secret['secretName']} has no key {key}"
    return values[key]


def settings_of(docs: list[Doc], tmp_path: Path) -> Settings:
    """The manifests' settings through the service's own validation. The secret files are only
    mounted in a pod, so stand-ins hold the example Secrets' values."""
    env = config(docs)
    for name in FILE_SETTINGS:
        if name in env:
            stand_in = tmp_path / name
            stand_in.write_text(mounted_secret(docs, Path(env[name])), encoding="utf-8")
            env[name] = str(stand_in)
    return load_settings(env)


def routes() -> set[str]:
    app = create_app(load_settings({"DB_HOST": "h", "DB_USER": "u", "DB_NAME": "n"}))
    return {r.canonical for r in app.router.resources()}


def test_setting_names_are_the_services(rendered: list[Doc]) -> None:
    names = {v.name for v in VARIABLES}
    c = container(rendered)
    used = set(config(rendered)) | {e["name"] for e in c.get("env", [])}
    assert used - names == set(), "unknown settings in the manifests"
    assert {"DB_HOST", "DB_USER", "DB_NAME"} <= used  # the required ones


def test_settings_pass_the_services_validation(rendered: list[Doc], tmp_path: Path) -> None:
    settings_of(rendered, tmp_path)  # raises SettingsError naming the variable


def test_probes_and_ports_are_the_routes_and_port_the_service_serves(
    rendered: list[Doc], tmp_path: Path
) -> None:
    settings = settings_of(rendered, tmp_path)
    c = container(rendered)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["http"] == settings.http_port
    known = routes()
    probes = {
        kind: c[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert probes["livenessProbe"]["path"] == "/livez"
    assert probes["startupProbe"]["path"] == "/livez"
    assert probes["readinessProbe"]["path"] == "/readyz"
    for probe in probes.values():
        assert probe["path"] in known
        assert probe["port"] in ("http", settings.http_port)
    service = one(rendered, "Service")
    service_ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert service_ports["http"]["targetPort"] in ("http", settings.http_port)
    monitor = one(rendered, "ServiceMonitor")
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in service_ports
        assert endpoint["path"] == "/metrics"
        assert "/metrics" in known
    policy = one(rendered, "NetworkPolicy")
    ingress_ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert ingress_ports <= {"http", settings.http_port}
    egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert settings.db_port in egress_ports
    assert 53 in egress_ports


def test_time_budgets_add_up(rendered: list[Doc], tmp_path: Path) -> None:
    settings = settings_of(rendered, tmp_path)
    pod = one(rendered, "Deployment")["spec"]["template"]["spec"]
    c = container(rendered)
    # SIGKILL must not come before the drain can end (server.py).
    drain = settings.shutdown_delay_seconds + settings.shutdown_grace_seconds + POOL_CLOSE_GRACE
    assert pod["terminationGracePeriodSeconds"] > drain
    # /readyz may wait DB_ACQUIRE_TIMEOUT for a connection before it can answer 503.
    assert c["readinessProbe"]["timeoutSeconds"] > settings.db_acquire_timeout
    # The listener opens only after the start-up connection attempts (db.py).
    s = settings
    start_up = (s.db_connect_retries + 1) * s.db_connection_timeout
    start_up += s.db_connect_retries * s.db_connect_retry_delay
    startup = c["startupProbe"]
    allowed = startup["periodSeconds"] * startup["failureThreshold"]
    allowed += startup.get("initialDelaySeconds", 0)
    assert allowed > start_up


@pytest.mark.parametrize("name", FILE_SETTINGS)
def test_secrets_come_from_mounted_secrets(rendered: list[Doc], name: str) -> None:
    env = config(rendered)
    literal = name.removesuffix("_FILE")
    assert literal not in env  # never a literal in a ConfigMap
    assert mounted_secret(rendered, Path(env[name]))


def test_data_routes_need_a_token(rendered: list[Doc], tmp_path: Path) -> None:
    # The Service is reachable from the whole cluster and /user/ serves personal data.
    assert settings_of(rendered, tmp_path).api_tokens


def test_pod_hardening(rendered: list[Doc]) -> None:
    pod = one(rendered, "Deployment")["spec"]["template"]["spec"]
    c = container(rendered)
    assert pod["automountServiceAccountToken"] is False
    sc = {**pod.get("securityContext", {}), **c["securityContext"]}
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert set(c["resources"]) == {"requests", "limits"}
    assert one(rendered, "Deployment")["spec"]["replicas"] == 2


def test_prometheus_rule_carries_the_plain_rules_file(rendered: list[Doc]) -> None:
    rule = one(rendered, "PrometheusRule")
    plain = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    assert rule["spec"]["groups"] == plain["groups"]


def alert_exprs() -> Iterator[tuple[str, str]]:
    for group in yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]:
        for rule in group["rules"]:
            yield rule.get("alert", rule.get("record", "?")), rule["expr"]


def dashboard_exprs(path: Path) -> Iterator[tuple[str, str]]:
    def walk(node: Any) -> Iterator[tuple[str, str]]:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                yield str(node.get("legendFormat", node.get("refId", "?"))), node["expr"]
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)

    yield from walk(json.loads(path.read_text(encoding="utf-8")))


def scraped_names(scrape: str) -> set[str]:
    names = set()
    for family in text_string_to_metric_families(scrape):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


async def test_alerts_and_dashboard_query_only_metrics_cm_api_exposes(client: Any) -> None:
    assert DASHBOARDS, "no Grafana dashboard under deploy/k8s"
    await client.get("/acc/")
    await client.get("/readyz")
    scrape = await (await client.get("/metrics")).text()
    exposed = scraped_names(scrape) | PROMETHEUS_OWN
    exprs = list(alert_exprs())
    assert len(exprs) >= 6
    for path in DASHBOARDS:
        found = list(dashboard_exprs(path))
        assert found, f"{path.name}: no queries"
        exprs += found
    for where, expr in exprs:
        used = set(METRIC.findall(expr))
        assert used, f"{where}: no metric in {expr!r}"
        missing = used - exposed
        assert not missing, f"{where}: {sorted(missing)} not in a scrape of cm-api"


def test_dashboard_is_grafana_json() -> None:
    for path in DASHBOARDS:
        board = json.loads(path.read_text(encoding="utf-8"))
        assert board["title"]
        assert board["uid"]
        assert board["panels"]
        datasource = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
        assert datasource
        assert datasource[0]["query"] == "prometheus"
