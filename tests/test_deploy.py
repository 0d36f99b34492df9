"""The deployment files agree with the code: the rendered kustomization (deploy/k8s) uses the
routes, port and setting names the service really has, its settings pass the service's own
validation, the time budgets add up, the PrometheusRule carries the same alerts as the plain
rules file, and every metric the alerts and the Grafana dashboard query exists in a real scrape.
The Ingress publishes the data routes only, to a host the CORS setting expects; the
NetworkPolicy admits exactly the dashboard, Prometheus and the ingress controller. Alerts and
dashboard survive a renaming overlay (tests/overlays/prefixed): they select the job the
ServiceMonitor yields there. Every alert links its section of docs/runbook.md.

The schema validation of each object (kubernetes-validate), promtool (including the alerts'
unit tests under the renaming overlay's job) and hadolint run in .ci/deploy-checks."""

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
# The example renamed with namePrefix/nameSuffix, as a staging or blue/green copy would be.
PREFIXED = ROOT / "tests" / "overlays" / "prefixed"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
RUNBOOK = ROOT / "docs" / "runbook.md"
DASHBOARDS = sorted(K8S.rglob("*.json"))
# Series Prometheus itself writes for every target, not cm-api's scrape.
PROMETHEUS_OWN = frozenset({"up"})
# A metric name in a PromQL expression: an identifier not followed by "(" (a function) or a
# label matcher operator, and not a keyword or label name. cm-api's names are all we query,
# with prometheus-client's process_/python_ ones and Prometheus' `up`.
METRIC = re.compile(r"\b((?:cmapi|process|python)_[a-zA-Z0-9_]+|up)\b(?!\s*[(=!~])")
# A metric with its label matchers, and the job matcher among them.
SELECTOR = re.compile(r"\b(?:(?:cmapi|process|python)_[a-zA-Z0-9_]+|up)\s*\{([^}]*)\}")
JOB_MATCHER = re.compile(r'\bjob\s*(=~|!~|!=|=)\s*"([^"]*)"')
# Where the rendered manifests expect their clients: Prometheus, the ingress controller, and
# the dashboard's pods (their app.kubernetes.io/name) in cm-api's namespace.
MONITORING_NAMESPACE = "monitoring"
INGRESS_NAMESPACE = "ingress-nginx"
DASHBOARD_POD = "ops-dashboard"


Doc = dict[str, Any]


def render(kustomization: Path) -> list[Doc]:
    kubectl = required_tool("kubectl", "the kubectl package (or any kubectl with kustomize)")
    out = subprocess.run(
        [kubectl, "kustomize", str(kustomization)], capture_output=True, text=True, check=True
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="module")
def rendered() -> list[Doc]:
    return render(OVERLAY)


@pytest.fixture(scope="module")
def prefixed() -> list[Doc]:
    return render(PREFIXED)


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
# Files that are mounted too, from a Secret or (a CA bundle, which is public) a ConfigMap.
TLS_FILE_SETTINGS = ("DB_SSL_CA", "DB_SSL_CERT", "DB_SSL_KEY")


def mounted_file(docs: list[Doc], path: Path) -> tuple[str, str]:
    """What a pod reads at `path`, as (volume kind: "secret" or "configMap", the value of the
    example's Secret or the rendered ConfigMap mounted there)."""
    c = container(docs)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    mounts = [m for m in c["volumeMounts"] if path.is_relative_to(m["mountPath"])]
    assert len(mounts) == 1, path
    assert mounts[0].get("readOnly") is True
    volume = next(v for v in pod["volumes"] if v["name"] == mounts[0]["name"])
    key = str(path.relative_to(mounts[0]["mountPath"]))
    kind = "secret" if "secret" in volume else "configMap"
    source = volume[kind]
    if "items" in source:
        key = next(i["key"] for i in source["items"] if i["path"] == key)
    name = source["secretName"] if kind == "secret" else source["name"]
    document = next(
        d for d in docs if d["kind"] == kind[0].upper() + kind[1:] and d["metadata"]["name"] == name
    )
    values: dict[str, str] = document.get("stringData", {}) or document.get("data", {})
    assert key in values, f"{name} has no key {key}"
    return kind, values[key]


def mounted_secret(docs: list[Doc], path: Path) -> str:
    """The value a pod reads at `path`: the key of the Secret (the example's) mounted there."""
    kind, value = mounted_file(docs, path)
    assert kind == "secret", path
    return value


def settings_of(docs: list[Doc], tmp_path: Path) -> Settings:
    """The manifests' settings through the service's own validation. The mounted files exist
    only in a pod, so stand-ins hold the example Secrets' and the ConfigMaps' values."""
    env = config(docs)
    for name in (*FILE_SETTINGS, *TLS_FILE_SETTINGS):
        if name in env:
            stand_in = tmp_path / name
            stand_in.write_text(mounted_file(docs, Path(env[name]))[1], encoding="utf-8")
            env[name] = str(stand_in)
    return load_settings(env)


def routes(settings: Settings | None = None) -> set[str]:
    if settings is None:
        settings = load_settings({"DB_HOST": "h", "DB_USER": "u", "DB_NAME": "n"})
    return {r.canonical for r in create_app(settings).router.resources()}


def scrape_job(docs: list[Doc]) -> str:
    """The job label of the targets the ServiceMonitor yields, by the Prometheus Operator's
    relabelling: the selected Service's name, replaced by the value of the Service's label named
    by spec.jobLabel when that label is there and not empty."""
    monitor = one(docs, "ServiceMonitor")
    namespace = monitor["metadata"]["namespace"]
    wanted = monitor["spec"]["selector"]["matchLabels"].items()
    services = [
        d["metadata"]
        for d in docs
        if d["kind"] == "Service"
        and d["metadata"]["namespace"] == namespace
        and wanted <= d["metadata"].get("labels", {}).items()
    ]
    assert len(services) == 1, f"the ServiceMonitor selects {len(services)} Services"
    job_label = monitor["spec"].get("jobLabel")
    job = services[0].get("labels", {}).get(job_label) if job_label else None
    return str(job or services[0]["name"])


def selected_jobs(expr: str) -> list[str]:
    """The job each metric of a PromQL expression is selected by; fails on a metric without an
    exact job matcher (it would match every job, or none after a rename)."""
    selectors = SELECTOR.findall(expr)
    assert len(selectors) == len(METRIC.findall(expr)), f"a metric without matchers: {expr!r}"
    jobs = []
    for matchers in selectors:
        found = JOB_MATCHER.findall(matchers)
        assert [op for op, _ in found] == ["="], f"no single job= matcher in {{{matchers}}}"
        jobs.append(found[0][1])
    return jobs


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
    # /readyz reads state only (never the database): it answers well within one period.
    readiness = c["readinessProbe"]
    assert 1 <= readiness["timeoutSeconds"] <= readiness["periodSeconds"]
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


def test_the_database_certificate_is_checked_against_a_mounted_ca(
    rendered: list[Doc], tmp_path: Path
) -> None:
    """The example overlay verifies the database's certificate and host name, with the CA
    bundle mounted read-only from a ConfigMap (a CA is public; a client key would be a
    Secret). The service's own validation loads the bundle."""
    env = config(rendered)
    assert mounted_file(rendered, Path(env["DB_SSL_CA"]))[0] == "configMap"
    tls = settings_of(rendered, tmp_path).tls()
    assert tls.mode == "verify_identity"
    assert tls.context is not None
    assert tls.context.check_hostname
    for name in ("DB_SSL_CERT", "DB_SSL_KEY"):
        if name in env:
            assert mounted_file(rendered, Path(env[name]))[0] == "secret"


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


def test_alerts_survive_a_renaming_overlay(prefixed: list[Doc]) -> None:
    # namePrefix/nameSuffix rename the Service; the job its ServiceMonitor yields must not move.
    job = scrape_job(prefixed)
    assert one(prefixed, "Service")["metadata"]["name"] != job, "the overlay renames nothing"
    rule = one(prefixed, "PrometheusRule")
    for group in rule["spec"]["groups"]:
        for alert in group["rules"]:
            jobs = selected_jobs(alert["expr"])
            assert jobs, f"{alert['alert']}: selects no metric"
            assert set(jobs) == {job}, f"{alert['alert']} selects {jobs}, the targets get {job}"


def test_dashboard_selects_the_job_by_variable(rendered: list[Doc], prefixed: list[Doc]) -> None:
    def strings(node: Any) -> Iterator[str]:
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict):
            for value in node.values():
                yield from strings(value)
        elif isinstance(node, list):
            for item in node:
                yield from strings(item)

    job = scrape_job(rendered)
    assert scrape_job(prefixed) == job
    for path in DASHBOARDS:
        board = json.loads(path.read_text(encoding="utf-8"))
        literal = [s for s in strings(board) if re.search(r'\bjob\s*[=!~]+\s*"(?!\$)', s)]
        assert not literal, f"{path.name}: a literal job in {literal}"
        for where, expr in dashboard_exprs(path):
            assert set(selected_jobs(expr)) == {"$job"}, f"{path.name} {where}: {expr!r}"
        variables = {v["name"]: v for v in board["templating"]["list"]}
        variable = variables["job"]
        query = variable["query"]
        query = query["query"] if isinstance(query, dict) else query
        assert query == "label_values(cmapi_build_info, job)"
        assert variable["current"]["value"] == job
        assert variable["multi"] is False
        assert variable["includeAll"] is False


def github_anchor(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_alert_links_its_runbook_section() -> None:
    rules = [
        r for g in yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"] for r in g["rules"]
    ]
    sections = re.findall(r"^## (.+)$", RUNBOOK.read_text(encoding="utf-8"), re.MULTILINE)
    assert sorted(sections) == sorted(r["alert"] for r in rules)
    bases = set()
    for rule in rules:
        base, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert base.startswith("https://")
        assert base.endswith("/docs/runbook.md")
        assert anchor == github_anchor(rule["alert"])
        bases.add(base)
    assert len(bases) == 1, "one runbook for every alert"


def ingress_routes(path: str, rule: Doc) -> bool:
    """Whether an Ingress path rule takes request `path` (Kubernetes' Exact and Prefix rules:
    Prefix matches whole path elements, so /acc takes /acc/7 but not /accounts)."""
    if rule["pathType"] == "Exact":
        return bool(path == rule["path"])
    assert rule["pathType"] == "Prefix", "ImplementationSpecific differs between controllers"
    wanted = [part for part in rule["path"].split("/") if part]
    return [part for part in path.split("/") if part][: len(wanted)] == wanted


def test_ingress_publishes_the_data_routes_only(
    rendered: list[Doc], prefixed: list[Doc], tmp_path: Path
) -> None:
    settings = settings_of(rendered, tmp_path)
    known = {r.replace("{id}", "1") for r in routes(settings) if r != "/{tail}"}
    data = {r for r in known if r.split("/")[1] in settings.resources}
    public = data | {"/openapi.json"}
    assert {"/metrics", "/livez", "/readyz"} <= known - public
    for docs in (rendered, prefixed):
        ingress = one(docs, "Ingress")["spec"]
        service = one(docs, "Service")
        port_names = {p["name"] for p in service["spec"]["ports"]}
        assert ingress["ingressClassName"]
        (rule,) = ingress["rules"]
        paths = rule["http"]["paths"]
        for path in paths:
            backend = path["backend"]["service"]
            assert backend["name"] == service["metadata"]["name"]
            assert backend["port"]["name"] in port_names
        routed = {r for r in known if any(ingress_routes(r, p) for p in paths)}
        assert routed == public, f"routed {sorted(routed)}, the public routes {sorted(public)}"
        tls = [t for t in ingress["tls"] if rule["host"] in t["hosts"]]
        assert len(tls) == 1
        assert tls[0]["secretName"]


def test_ingress_host_is_a_cross_origin_the_api_allows(rendered: list[Doc], tmp_path: Path) -> None:
    # The pages live on their own origin and call the API's host: that is what CORS is for.
    settings = settings_of(rendered, tmp_path)
    assert "CORS_ALLOWED_ORIGINS" in config(rendered)
    assert settings.cors_allowed_origins
    assert "*" not in settings.cors_allowed_origins
    (rule,) = one(rendered, "Ingress")["spec"]["rules"]
    assert f"https://{rule['host']}" not in settings.cors_allowed_origins


def test_network_policy_admits_the_dashboard_prometheus_and_the_ingress_controller(
    rendered: list[Doc],
) -> None:
    policy = one(rendered, "NetworkPolicy")["spec"]
    assert "Ingress" in policy["policyTypes"]
    http = next(p for p in container(rendered)["ports"] if p["name"] == "http")
    admitted = []
    for rule in policy["ingress"]:
        # A rule without peers or ports would admit everyone or every port.
        assert rule["from"]
        assert rule["ports"]
        for port in rule["ports"]:
            assert port["protocol"] == "TCP"
            assert port["port"] in (http["name"], http["containerPort"])
        admitted += [json.dumps(peer, sort_keys=True) for peer in rule["from"]]
    expected = [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": DASHBOARD_POD}}},
        *(
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}
            for namespace in (MONITORING_NAMESPACE, INGRESS_NAMESPACE)
        ),
    ]
    assert sorted(admitted) == sorted(json.dumps(p, sort_keys=True) for p in expected)


def test_documented_ingress_namespace_patch_points_at_the_rule(rendered: list[Doc]) -> None:
    # The example overlay's comment names the JSON patch path for another controller namespace.
    text = (OVERLAY / "kustomization.yaml").read_text(encoding="utf-8")
    (pointer,) = re.findall(r"/spec/ingress/\S+", text)
    node: Any = one(rendered, "NetworkPolicy")
    for part in pointer.strip("/").split("/"):
        key = part.replace("~1", "/").replace("~0", "~")
        node = node[int(key)] if isinstance(node, list) else node[key]
    assert node == INGRESS_NAMESPACE
