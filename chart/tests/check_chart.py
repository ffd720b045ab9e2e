#!/usr/bin/env python3
"""Offline checks of the Flowlet Helm chart: no cluster, no Docker, no helm binary.

  * lints the chart (Helm's own linter, strict) with the default values and with
    values-production.yaml;
  * renders it with both (hooks included) and validates every manifest against the Kubernetes
    JSON schemas bundled with kubernetes-validate (ServiceMonitor and PrometheusRule are CRDs
    without a bundled schema: their structure is asserted here instead);
  * asserts the properties the deployment relies on (HPA, migration hook, probes, security
    context, PDB, NetworkPolicy, the Secret's required values, the dashboard);
  * with --print-metrics, prints (only) the metric names the dashboard and the alert rules use,
    one per line, so a test can compare them with what /metrics exposes.

Uses helm-python-sdk (Helm's Go SDK as a native library) and kubernetes-validate; run it
through chart/tests/run.sh, which installs both into a private venv.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable

import yaml

try:
    import helm_python as helm
    import kubernetes_validate
except ImportError as err:  # pragma: no cover - environment problem
    sys.exit(f"check_chart: missing dependency ({err}); run chart/tests/run.sh")

CHART = Path(__file__).resolve().parent.parent
RELEASE = "flowlet"
NAMESPACE = "payments"
# The oldest Kubernetes the chart supports (preStop sleep action) and the newest bundled schema.
KUBE_VERSIONS = ["1.30", kubernetes_validate.latest_version()]
# CRDs of the Prometheus operator: kubernetes-validate has no schema for them.
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}

# What /metrics exposes (histograms also as _bucket/_sum/_count), plus Prometheus's own `up`.
KNOWN_METRICS = {
    "up",
    "http_requests_total",
    "http_request_duration_seconds",
    "database_connections_active",
    "database_connections_idle",
    "database_connections_max",
    "ledger_transfers_total",
    "ledger_batch_transfers",
    "ledger_batch_duration_seconds",
    "ledger_queue_depth",
    "ledger_verify_violations",
    "ledger_verify_last_run_timestamp_seconds",
    "payments_total",
    "payment_amount_minor_total",
    "webhook_deliveries_total",
    "webhook_delivery_duration_seconds",
    "outbox_pending",
    "outbox_oldest_age_seconds",
}
METRIC_PREFIXES = ("http_", "database_", "ledger_", "payment", "webhook_", "outbox_")
# Result label values of webhook_deliveries_total (src/notify/service.rs).
WEBHOOK_RESULTS = {"success", "retry", "failed"}

# A complete, valid set of chart-managed secrets (test values only, never used anywhere).
TEST_SECRETS: dict[str, Any] = {
    "databaseUrl": "postgres://flowlet:pw@db.internal:5432/flowlet?sslmode=require",
    "redisUrl": "rediss://:pw@redis.internal:6379",
    "jwtSecret": "j" * 48,
    "apiKeySecret": "a" * 48,
    "kycHashKey": "h" * 48,
    "kycEncryptionKeyId": "k2026",
    "kycEncryptionKeys": {"k2026": base64.b64encode(bytes(range(32))).decode()},
    "smtpUrl": "smtps://mailer:pw@smtp.example.com:465",
}


class CheckFailed(Exception):
    pass


checked: list[str] = []


def check(condition: bool, what: str) -> None:
    if not condition:
        raise CheckFailed(what)
    checked.append(what)


def log(message: str) -> None:
    print(message, file=sys.stderr if QUIET else sys.stdout)


QUIET = False


# --- rendering ---------------------------------------------------------------------------


def load_values_file(name: str) -> dict[str, Any]:
    return helm.values_from_yaml((CHART / name).read_text())


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def render(values: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Render like `helm install` would (hooks included); returns the parsed objects."""
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values=values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects: list[dict[str, Any]] = []
    for path, text in sorted(manifests.items()):
        if not path.endswith((".yaml", ".yml")):
            continue  # NOTES.txt
        try:
            docs = list(yaml.safe_load_all(text))
        except yaml.YAMLError as err:
            raise CheckFailed(f"{path} is not valid YAML: {err}") from err
        for doc in docs:
            if doc:
                doc.setdefault("metadata", {})
                doc["__source__"] = path
                objects.append(doc)
    return objects


def render_error(values: dict[str, Any]) -> str | None:
    """The render error message, or None if the chart rendered."""
    try:
        render(values)
    except helm.HelmError as err:
        return str(err)
    return None


def lint(label: str, values: dict[str, Any] | None) -> None:
    report = helm.lint(CHART, values, strict=True, kube_version="v1.30.0")
    problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    problems_text = "; ".join(f"{m.get('path')}: {m.get('error')}" for m in problems)
    errors = "; ".join(report.get("errors") or [])
    detail = f": {problems_text}{errors}" if problems or errors else ""
    check(not problems and not errors, f"helm lint --strict ({label}){detail}")


# --- helpers over rendered objects -------------------------------------------------------


def strip(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k != "__source__"}


def find(objects: list[dict[str, Any]], kind: str, pred: Callable[[dict], bool] = lambda o: True):
    return [o for o in objects if o.get("kind") == kind and pred(o)]


def one(objects: list[dict[str, Any]], kind: str, pred: Callable[[dict], bool] = lambda o: True):
    found = find(objects, kind, pred)
    if len(found) != 1:
        raise CheckFailed(f"expected exactly one {kind}, found {len(found)}")
    return found[0]


def hook_of(obj: dict[str, Any]) -> str | None:
    return (obj["metadata"].get("annotations") or {}).get("helm.sh/hook")


def validate_schemas(label: str, objects: list[dict[str, Any]]) -> None:
    for obj in objects:
        kind = obj.get("kind")
        name = f"{kind}/{obj['metadata'].get('name')}"
        if kind in CRD_KINDS:
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(strip(obj), version, strict=True)
            except kubernetes_validate.ValidationError as err:
                path = "/".join(str(p) for p in err.path)
                raise CheckFailed(
                    f"{label}: {name} ({obj['__source__']}) fails the Kubernetes {version} "
                    f"schema at {path or '<root>'}: {err.message}"
                ) from err
            except kubernetes_validate.SchemaNotFoundError as err:
                raise CheckFailed(f"{label}: {name}: {err.message}") from err
    kinds = sorted({o["kind"] for o in objects if o["kind"] not in CRD_KINDS})
    checked.append(
        f"{label}: {len(objects)} manifests; {', '.join(kinds)} valid against the Kubernetes "
        f"{' and '.join(KUBE_VERSIONS)} schemas (strict)"
    )


# --- assertions --------------------------------------------------------------------------


def env_of(objects: list[dict[str, Any]], pod_spec: dict[str, Any]) -> dict[str, str]:
    """The environment a container gets from its envFrom ConfigMaps (rendered ones)."""
    env: dict[str, str] = {}
    for container in pod_spec["containers"]:
        for source in container.get("envFrom", []):
            ref = source.get("configMapRef")
            if ref:
                cm = one(objects, "ConfigMap", lambda o, n=ref["name"]: o["metadata"]["name"] == n)
                env.update(cm.get("data") or {})
        for item in container.get("env", []):
            env[item["name"]] = item.get("value")
    return env


def assert_deployment(label: str, objects: list[dict[str, Any]], values: dict[str, Any]) -> None:
    dep = one(objects, "Deployment")
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    containers = pod["containers"]
    check(len(containers) == 1, f"{label}: Deployment has one container")
    c = containers[0]
    check(c.get("args") == ["serve"], f"{label}: container runs `serve`")
    check(
        any(p.get("containerPort") == 8080 and p.get("name") == "http" for p in c.get("ports", [])),
        f"{label}: container port 8080 named http",
    )
    check(c["livenessProbe"]["httpGet"]["path"] == "/health", f"{label}: livenessProbe GET /health")
    check(c["readinessProbe"]["httpGet"]["path"] == "/ready", f"{label}: readinessProbe GET /ready")
    startup = c.get("startupProbe") or {}
    check(
        startup.get("httpGet", {}).get("path") == "/health"
        and startup.get("failureThreshold", 0) * startup.get("periodSeconds", 10) >= 60,
        f"{label}: startupProbe GET /health with at least 60 s of slack",
    )
    psc = pod.get("securityContext", {})
    csc = c.get("securityContext", {})
    check(psc.get("runAsNonRoot") is True and csc.get("runAsNonRoot") is True, f"{label}: runAsNonRoot")
    check(psc.get("runAsUser") == 65532 and psc.get("runAsGroup") == 65532 and psc.get("fsGroup") == 65532,
          f"{label}: runs as 65532:65532, fsGroup 65532")
    check(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{label}: seccomp RuntimeDefault")
    check(csc.get("readOnlyRootFilesystem") is True, f"{label}: readOnlyRootFilesystem")
    check(csc.get("allowPrivilegeEscalation") is False, f"{label}: allowPrivilegeEscalation false")
    check(csc.get("capabilities", {}).get("drop") == ["ALL"], f"{label}: capabilities drop ALL")
    check(pod.get("automountServiceAccountToken") is False, f"{label}: automountServiceAccountToken false")
    check(bool(pod.get("serviceAccountName")), f"{label}: serviceAccountName set")
    tmp = [m for m in c.get("volumeMounts", []) if m.get("mountPath") == "/tmp"]
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    check(len(tmp) == 1 and "emptyDir" in vols.get(tmp[0]["name"], {}), f"{label}: /tmp is an emptyDir")
    strategy = spec.get("strategy", {})
    check(strategy.get("type") == "RollingUpdate" and strategy["rollingUpdate"].get("maxUnavailable") == 0,
          f"{label}: rolling update with maxUnavailable 0")
    check(pod.get("terminationGracePeriodSeconds", 30) > 30,
          f"{label}: terminationGracePeriodSeconds > the 30 s drain")
    keys = {t["topologyKey"]: t for t in pod.get("topologySpreadConstraints", [])}
    check("topology.kubernetes.io/zone" in keys and "kubernetes.io/hostname" in keys
          and all(t["whenUnsatisfiable"] == "ScheduleAnyway" for t in keys.values()),
          f"{label}: spread over zones and hosts (ScheduleAnyway)")
    annotations = spec["template"]["metadata"].get("annotations", {})
    check("checksum/config" in annotations, f"{label}: checksum/config annotation rolls pods on config change")
    env = env_of(objects, pod)
    expected = {
        "FLOWLET__DATABASE__MIGRATE_ON_START": "false",
        "FLOWLET__SERVER__BIND": "0.0.0.0:8080",
        "FLOWLET_ENV": "production",
        "FLOWLET__LOG__FORMAT": "json",
    }
    for key, value in expected.items():
        check(env.get(key) == value, f"{label}: server env {key}={value}")
    refs = [s["secretRef"]["name"] for s in c.get("envFrom", []) if "secretRef" in s]
    want_secret = values.get("existingSecret") or RELEASE
    check(refs == [want_secret], f"{label}: server reads the Secret {want_secret}")
    autoscaling = values.get("autoscaling", {}).get("enabled", True)
    check(("replicas" in spec) != autoscaling, f"{label}: replicas omitted iff the HPA is on")


def assert_hpa(label: str, objects: list[dict[str, Any]], default: bool) -> None:
    hpa = one(objects, "HorizontalPodAutoscaler")
    check(hpa["apiVersion"] == "autoscaling/v2", f"{label}: HPA is autoscaling/v2")
    targets = {m["resource"]["name"]: m["resource"]["target"]["averageUtilization"] for m in hpa["spec"]["metrics"]}
    check(hpa["spec"]["scaleTargetRef"]["name"] == one(objects, "Deployment")["metadata"]["name"],
          f"{label}: HPA scales the Deployment")
    if default:
        check(hpa["spec"]["minReplicas"] == 3 and hpa["spec"]["maxReplicas"] == 20,
              f"{label}: HPA min 3, max 20")
        check(targets == {"cpu": 70, "memory": 80}, f"{label}: HPA targets CPU 70%, memory 80%")
    else:
        check(set(targets) == {"cpu", "memory"}, f"{label}: HPA on CPU and memory")


def assert_migrations(label: str, objects: list[dict[str, Any]], values: dict[str, Any]) -> None:
    job = one(objects, "Job")
    ann = job["metadata"].get("annotations", {})
    check(ann.get("helm.sh/hook") == "pre-install,pre-upgrade", f"{label}: migration Job is a pre-install,pre-upgrade hook")
    check("before-hook-creation" in ann.get("helm.sh/hook-delete-policy", "")
          and "hook-succeeded" in ann.get("helm.sh/hook-delete-policy", "")
          and "helm.sh/hook-weight" in ann,
          f"{label}: migration hook has a weight and before-hook-creation,hook-succeeded")
    spec = job["spec"]
    pod = spec["template"]["spec"]
    c = pod["containers"][0]
    check(c.get("args") == ["migrate"], f"{label}: migration Job runs `migrate`")
    dep_image = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    check(c["image"] == dep_image, f"{label}: migration Job uses the server's image")
    check(pod.get("restartPolicy") == "Never" and spec.get("backoffLimit", 6) <= 3
          and spec.get("activeDeadlineSeconds") and spec.get("ttlSecondsAfterFinished") is not None,
          f"{label}: Job restartPolicy Never, small backoffLimit, deadline and TTL")
    dep_pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    check(pod.get("securityContext") == dep_pod.get("securityContext")
          and c.get("securityContext") == dep_pod["containers"][0].get("securityContext"),
          f"{label}: Job has the server's securityContext")
    # Its environment must exist when the hook runs: hook-annotated ConfigMap (and Secret),
    # created before the Job (lower weight), or the operator's existingSecret.
    weight = int(ann["helm.sh/hook-weight"])
    for source in c.get("envFrom", []):
        kind, ref = ("ConfigMap", source["configMapRef"]) if "configMapRef" in source else ("Secret", source["secretRef"])
        if kind == "Secret" and ref["name"] == values.get("existingSecret"):
            continue
        target = one(objects, kind, lambda o, n=ref["name"]: o["metadata"]["name"] == n)
        t_ann = target["metadata"].get("annotations", {})
        check(t_ann.get("helm.sh/hook") == "pre-install,pre-upgrade"
              and int(t_ann.get("helm.sh/hook-weight", "0")) < weight,
              f"{label}: the Job's {kind} {ref['name']} is a hook created before the Job")
    env = env_of(objects, pod)
    check(env.get("FLOWLET_ENV") == "production", f"{label}: migration Job runs with FLOWLET_ENV=production")


def assert_network_policy(label: str, objects: list[dict[str, Any]]) -> None:
    np = one(objects, "NetworkPolicy")
    spec = np["spec"]
    check(set(spec.get("policyTypes", [])) == {"Ingress", "Egress"}, f"{label}: NetworkPolicy has Ingress and Egress")
    ports = {p.get("port") for rule in spec.get("egress", []) for p in rule.get("ports", [])}
    check({53, 5432, 6379, 443, 25, 465, 587} <= ports, f"{label}: egress to DNS, PostgreSQL, Redis, SMTP, webhooks")
    blocks = [peer["ipBlock"] for rule in spec["egress"] for peer in rule.get("to", []) if "ipBlock" in peer
              and peer["ipBlock"]["cidr"] == "0.0.0.0/0"]
    check(blocks and all({"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"} <= set(b.get("except", []))
                         for b in blocks), f"{label}: webhook egress excludes private and link-local ranges")
    in_ports = {p.get("port") for rule in spec.get("ingress", []) for p in rule.get("ports", [])}
    check(in_ports and in_ports <= {"http", 8080}, f"{label}: ingress only to port 8080")


def assert_monitoring(label: str, objects: list[dict[str, Any]]) -> None:
    sm = find(objects, "ServiceMonitor")
    rules = find(objects, "PrometheusRule")
    if sm:
        s = sm[0]
        check(s["apiVersion"] == "monitoring.coreos.com/v1", f"{label}: ServiceMonitor is monitoring.coreos.com/v1")
        eps = s["spec"]["endpoints"]
        check(any(e.get("path") == "/metrics" and e.get("port") == "http" for e in eps),
              f"{label}: ServiceMonitor scrapes /metrics on port http")
        svc = one(objects, "Service")
        sel = s["spec"]["selector"]["matchLabels"]
        check(all(svc["metadata"]["labels"].get(k) == v for k, v in sel.items()),
              f"{label}: ServiceMonitor selects the Service")
    if rules:
        r = rules[0]
        check(r["apiVersion"] == "monitoring.coreos.com/v1", f"{label}: PrometheusRule is monitoring.coreos.com/v1")
        alerts = {rule["alert"]: rule for g in r["spec"]["groups"] for rule in g["rules"]}
        for rule in alerts.values():
            check(bool(rule.get("expr")) and "severity" in rule.get("labels", {}),
                  f"{label}: alert {rule['alert']} has an expression and a severity")
        exprs = {name: rule["expr"] for name, rule in alerts.items()}
        wanted = {
            "up": "FlowletDown (up == 0 / absent)",
            'status=~"5.."': "5xx ratio",
            "http_request_duration_seconds_bucket": "p95 latency",
            "outbox_pending": "outbox backlog",
            "outbox_oldest_age_seconds": "outbox age",
            "webhook_deliveries_total": "failed deliveries",
            "ledger_verify_violations": "ledger verification violations",
            "ledger_verify_last_run_timestamp_seconds": "ledger verification not running",
            "database_connections_max": "database pool saturation",
        }
        for needle, what in wanted.items():
            check(any(needle in e for e in exprs.values()), f"{label}: an alert covers {what}")
        for e in exprs.values():
            for result in re.findall(r'result="([^"]*)"', e):
                check(result in WEBHOOK_RESULTS, f"{label}: webhook result label {result!r} is one the app emits")


def assert_common(label: str, objects: list[dict[str, Any]], values: dict[str, Any], default: bool) -> None:
    assert_deployment(label, objects, values)
    assert_hpa(label, objects, default)
    assert_migrations(label, objects, values)
    assert_network_policy(label, objects)
    assert_monitoring(label, objects)
    pdb = one(objects, "PodDisruptionBudget")
    check(pdb["apiVersion"] == "policy/v1" and ("minAvailable" in pdb["spec"] or "maxUnavailable" in pdb["spec"]),
          f"{label}: PodDisruptionBudget (policy/v1) present")
    sa = one(objects, "ServiceAccount")
    check(sa.get("automountServiceAccountToken") is False, f"{label}: ServiceAccount does not automount a token")
    svc = one(objects, "Service")
    check(svc["spec"]["type"] == "ClusterIP" and svc["spec"]["ports"][0]["targetPort"] == "http",
          f"{label}: ClusterIP Service to port http")
    server_sel = svc["spec"]["selector"]
    job_labels = one(objects, "Job")["spec"]["template"]["metadata"]["labels"]
    check(not all(job_labels.get(k) == v for k, v in server_sel.items()),
          f"{label}: the Service does not select the migration pod")
    if values.get("existingSecret"):
        check(not find(objects, "Secret"), f"{label}: no Secret rendered with existingSecret")
    dash = find(objects, "ConfigMap", lambda o: o["metadata"].get("labels", {}).get("grafana_dashboard") == "1")
    check(len(dash) == 1, f"{label}: Grafana dashboard ConfigMap labelled grafana_dashboard=1")
    json.loads(dash[0]["data"]["flowlet.json"])
    check(True, f"{label}: dashboard in the ConfigMap is valid JSON")
    ingress = find(objects, "Ingress")
    if ingress:
        paths = [p["path"] for r in ingress[0]["spec"]["rules"] for p in r["http"]["paths"]]
        check("/metrics" not in paths and "/" not in paths, f"{label}: Ingress does not expose /metrics")


def assert_secret_handling(base: dict[str, Any]) -> None:
    label = "existingSecret=\"\""
    msg = render_error(deep_merge(base, {"existingSecret": ""}))
    check(msg is not None and "secrets.databaseUrl" in msg and "secrets.kycEncryptionKeys" in msg,
          f"{label} without secrets fails the render naming the missing values ({(msg or 'rendered!')[:80]}...)")
    partial = dict(TEST_SECRETS)
    del partial["redisUrl"]
    msg = render_error(deep_merge(base, {"existingSecret": "", "secrets": partial}))
    check(msg is not None and "secrets.redisUrl" in msg, f"{label} fails when one required secret is missing")
    short = dict(TEST_SECRETS, jwtSecret="too-short")
    msg = render_error(deep_merge(base, {"existingSecret": "", "secrets": short}))
    check(msg is not None and "secrets.jwtSecret" in msg, f"{label} refuses a secret shorter than 32 bytes")
    badkey = dict(TEST_SECRETS, kycEncryptionKeyId="other")
    msg = render_error(deep_merge(base, {"existingSecret": "", "secrets": badkey}))
    check(msg is not None and "kycEncryptionKeyId" in msg, f"{label} refuses a key id without its key")

    values = deep_merge(base, {"existingSecret": "", "secrets": TEST_SECRETS})
    objects = render(values)
    validate_schemas(f"{label} with secrets", objects)
    secrets = {s["metadata"]["name"]: s for s in find(objects, "Secret")}
    check(set(secrets) == {RELEASE, f"{RELEASE}-migrate"},
          f"{label} with secrets renders the Secret and the migration hook's Secret")
    data = {k: base64.b64decode(v).decode() for k, v in secrets[RELEASE]["data"].items()}
    check(data.get("FLOWLET__DATABASE__URL") == TEST_SECRETS["databaseUrl"]
          and data.get("FLOWLET__KYC__ENCRYPTION_KEYS__K2026") == TEST_SECRETS["kycEncryptionKeys"]["k2026"]
          and data.get("FLOWLET__KYC__ENCRYPTION_KEY_ID") == "k2026"
          and "FLOWLET__SMTP__URL" in data and "FLOWLET__CARDS__ENCRYPTION_KEY" not in data,
          f"{label}: Secret holds the FLOWLET__* keys (card key only when set)")
    check(secrets[RELEASE]["data"] == secrets[f"{RELEASE}-migrate"]["data"],
          f"{label}: the hook Secret has the same data as the release Secret")
    assert_common(f"{label} with secrets", objects, values, default=True)
    dep = one(objects, "Deployment")
    check("checksum/secret" in dep["spec"]["template"]["metadata"]["annotations"],
          f"{label}: checksum/secret annotation rolls pods on secret change")

    msg = render_error(deep_merge(base, {"config": {"FLOWLET__DATABASE__MIGRATE_ON_START": "true"}}))
    check(msg is not None, "config cannot re-enable migrate_on_start")
    msg = render_error(deep_merge(base, {"config": {"FLOWLET__AUTH__JWT_SECRET": "x" * 40}}))
    check(msg is not None and "secret" in msg, "config refuses secrets (they belong in the Secret)")


# --- metric names ------------------------------------------------------------------------


def promql_expressions(objects: list[dict[str, Any]], dashboard: dict[str, Any]) -> list[str]:
    exprs: list[str] = []
    for rule_obj in find(objects, "PrometheusRule"):
        for group in rule_obj["spec"]["groups"]:
            exprs.extend(rule["expr"] for rule in group["rules"])

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("expr", "definition") and isinstance(value, str):
                    exprs.append(value)
                elif key == "query" and isinstance(value, str) and "(" in value:
                    exprs.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(dashboard)
    return exprs


def metric_names(exprs: list[str]) -> set[str]:
    names: set[str] = set()
    for expr in exprs:
        expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values are not metrics
        for token in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
            if token == "up" or token.startswith(METRIC_PREFIXES):
                names.add(re.sub(r"_(bucket|sum|count)$", "", token))
    return names


def monitoring_render() -> list[dict[str, Any]]:
    return render({"metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}})


# --- main --------------------------------------------------------------------------------


def run_checks() -> None:
    defaults = load_values_file("values.yaml")
    production = load_values_file("values-production.yaml")
    merged_production = deep_merge(defaults, production)

    lint("default values", None)
    lint("values-production.yaml", production)

    default_objects = render(None)
    validate_schemas("default values", default_objects)
    assert_common("default values", default_objects, defaults, default=True)
    check(not find(default_objects, "ServiceMonitor") and not find(default_objects, "PrometheusRule")
          and not find(default_objects, "Ingress"),
          "default values: no Ingress, ServiceMonitor or PrometheusRule (opt-in)")

    prod_objects = render(production)
    validate_schemas("values-production.yaml", prod_objects)
    assert_common("values-production.yaml", prod_objects, merged_production, default=False)
    check(bool(find(prod_objects, "ServiceMonitor")) and bool(find(prod_objects, "PrometheusRule"))
          and bool(find(prod_objects, "Ingress")),
          "values-production.yaml: Ingress, ServiceMonitor and PrometheusRule rendered")
    ingress = one(prod_objects, "Ingress")
    check(bool(ingress["spec"].get("tls")), "values-production.yaml: Ingress has TLS")
    dep_image = one(prod_objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    check("@sha256:" in dep_image, "values-production.yaml: image pinned by digest")

    no_hpa = render({"autoscaling": {"enabled": False}})
    validate_schemas("autoscaling.enabled=false", no_hpa)
    check(not find(no_hpa, "HorizontalPodAutoscaler")
          and one(no_hpa, "Deployment")["spec"].get("replicas") == defaults["replicaCount"],
          "autoscaling.enabled=false: no HPA, Deployment has replicas")

    assert_secret_handling({})

    dashboard = json.loads((CHART / "dashboards" / "flowlet.json").read_text())
    check(isinstance(dashboard.get("panels"), list) and dashboard["panels"], "dashboards/flowlet.json is valid JSON with panels")
    names = metric_names(promql_expressions(monitoring_render(), dashboard))
    unknown = sorted(names - KNOWN_METRICS)
    check(not unknown, f"dashboard and alerts use only metrics the app exposes (unknown: {unknown})")
    for needle in ("http_requests_total", "http_request_duration_seconds", "ledger_transfers_total",
                   "ledger_batch_transfers", "payments_total", "outbox_pending", "outbox_oldest_age_seconds",
                   "database_connections_active"):
        check(needle in names, f"dashboard/alerts use {needle}")


def main() -> int:
    global QUIET
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--print-metrics", action="store_true",
                        help="print the metric names the dashboard and alert rules use, one per line, and exit")
    args = parser.parse_args()
    try:
        if args.print_metrics:
            QUIET = True
            dashboard = json.loads((CHART / "dashboards" / "flowlet.json").read_text())
            for name in sorted(metric_names(promql_expressions(monitoring_render(), dashboard))):
                print(name)
            return 0
        run_checks()
    except CheckFailed as err:
        print(f"chart check FAILED: {err}", file=sys.stderr)
        return 1
    except helm.HelmError as err:
        print(f"chart check FAILED: helm: {err}", file=sys.stderr)
        return 1
    for item in checked:
        print(f"ok  {item}")
    print(f"chart checks passed ({len(checked)} checks; helm SDK {helm.helm_sdk_version()}, "
          f"kubernetes-validate {kubernetes_validate.__version__})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
