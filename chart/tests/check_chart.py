#!/usr/bin/env python3
"""Offline checks of the Flowlet Helm chart: no cluster, no Docker, no helm binary.

  * lints the chart (Helm's own linter, strict) with the default values and with
    values-production.yaml;
  * renders it with both (hooks included) and validates every manifest against the Kubernetes
    JSON schemas bundled with kubernetes-validate (ServiceMonitor, PrometheusRule and
    ScheduledBackup are CRDs without a bundled schema: their structure is asserted here instead);
  * asserts the properties the deployment relies on (HPA, migration hook and its secrets,
    probes, Pod Security "restricted", PDB, spreading, termination arithmetic, the connection
    budget, threads, NetworkPolicy, the Secret's required values, alerts, backups, helm test,
    values.schema.json) and the README/docs statements operators follow (deploy command,
    timeouts, TLS examples, runbooks);
  * with --print-metrics, prints (only) the app's metric names the dashboard and the alert rules
    use, one per line, so a test can compare them with what /metrics exposes (kube-state-metrics
    and Prometheus's own `up` are not from /metrics and are left out).

Uses helm-python-sdk (Helm's Go SDK as a native library) and kubernetes-validate; run it
through chart/tests/run.sh, which installs both into a private venv.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import re
import sys
import tomllib
from pathlib import Path
from typing import Any, Callable

import yaml

try:
    import helm_python as helm
    import kubernetes_validate
except ImportError as err:  # pragma: no cover - environment problem
    sys.exit(f"check_chart: missing dependency ({err}); run chart/tests/run.sh")

CHART = Path(__file__).resolve().parent.parent
REPO = CHART.parent
RELEASE = "flowlet"
NAMESPACE = "payments"
# The oldest Kubernetes the chart supports (preStop sleep action) and the newest bundled schema.
KUBE_VERSIONS = ["1.30", kubernetes_validate.latest_version()]
# CRDs (Prometheus operator, CloudNativePG): kubernetes-validate has no schema for them.
CRD_KINDS = {"ServiceMonitor", "PrometheusRule", "ScheduledBackup"}
# The margin terminationGracePeriodSeconds keeps beyond preStop + the HTTP drain (the render's
# own check, flowlet.validate, uses the same figure).
GRACE_MARGIN_SECONDS = 10
# What the Pod Security "restricted" profile allows as volumes.
RESTRICTED_VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                           "persistentVolumeClaim", "projected", "secret"}

# App metrics: what the app's /metrics exposes (histograms also as _bucket/_sum/_count). Every
# metric the dashboard or an alert uses must be here or in EXTERNAL_METRICS.
KNOWN_METRICS = {
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
    # Added by the app with issue 16 (the alerts rely on them):
    # gauges of deliveries / emails whose next attempt time has passed (due now; retries
    # scheduled later are not counted), so outbox alerts do not fire on far-off retries;
    "outbox_due_deliveries",
    "outbox_due_emails",
    # gauge: 1 = Redis reachable, 0 = degraded (rate limits and caches in-process).
    "shared_state_backend_up",
}
# Not from the app's /metrics: Prometheus's own scrape health, and kube-state-metrics (series
# about Kubernetes objects, with kube-state-metrics' job label, selected by namespace and name).
PROMETHEUS_METRICS = {"up"}
KUBE_STATE_METRICS = {
    "kube_deployment_status_replicas_available",
    "kube_deployment_spec_replicas",
    "kube_pod_container_status_restarts_total",
    "kube_pod_container_status_last_terminated_reason",
    "kube_horizontalpodautoscaler_status_current_replicas",
    "kube_horizontalpodautoscaler_spec_max_replicas",
    "kube_job_status_failed",
    "kube_job_status_active",
    "kube_cronjob_status_last_successful_time",
    "kube_cronjob_created",
}
EXTERNAL_METRICS = PROMETHEUS_METRICS | KUBE_STATE_METRICS
# PromQL words that are neither metrics nor followed by "(".
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "Inf", "NaN"}
# Result label values of webhook_deliveries_total (src/notify/service.rs).
WEBHOOK_RESULTS = {"success", "retry", "failed"}

# A complete, valid set of chart-managed secrets (test values only, never used anywhere).
TEST_SECRETS: dict[str, Any] = {
    "databaseUrl": "postgres://flowlet:pw@db.internal:5432/flowlet?sslmode=verify-full",
    "redisUrl": "rediss://:pw@redis.internal:6379",
    "jwtSecret": "j" * 48,
    "apiKeySecret": "a" * 48,
    "kycHashKey": "h" * 48,
    "kycEncryptionKeyId": "k2026",
    "kycEncryptionKeys": {"k2026": base64.b64encode(bytes(range(32))).decode()},
    "cardHashKey": "c" * 48,
    "cardCvcKey": "v" * 48,
    "cardEncryptionKeyId": "c2026",
    "cardEncryptionKeys": {"c2026": base64.b64encode(bytes(range(32, 64))).decode()},
    "smtpUrl": "smtps://mailer:pw@smtp.example.com:465",
}
# Every key the chart-managed Secret must hold for TEST_SECRETS: the app refuses to start in
# production without each of them (or with a development value in its place).
REQUIRED_SECRET_DATA = {
    "FLOWLET__DATABASE__URL": TEST_SECRETS["databaseUrl"],
    "FLOWLET__REDIS__URL": TEST_SECRETS["redisUrl"],
    "FLOWLET__AUTH__JWT_SECRET": TEST_SECRETS["jwtSecret"],
    "FLOWLET__AUTH__API_KEY_SECRET": TEST_SECRETS["apiKeySecret"],
    "FLOWLET__KYC__HASH_KEY": TEST_SECRETS["kycHashKey"],
    "FLOWLET__KYC__ENCRYPTION_KEY_ID": "k2026",
    "FLOWLET__KYC__ENCRYPTION_KEYS__K2026": TEST_SECRETS["kycEncryptionKeys"]["k2026"],
    "FLOWLET__CARDS__HASH_KEY": TEST_SECRETS["cardHashKey"],
    "FLOWLET__CARDS__CVC_KEY": TEST_SECRETS["cardCvcKey"],
    "FLOWLET__CARDS__ENCRYPTION_KEY_ID": "c2026",
    "FLOWLET__CARDS__ENCRYPTION_KEYS__C2026": TEST_SECRETS["cardEncryptionKeys"]["c2026"],
}
# Secrets the server reads that must never reach the migration Job (its one secret is the
# database URL) nor be accepted in `config` (the ConfigMap).
SERVER_ONLY_SECRETS = ("FLOWLET__REDIS__URL", "FLOWLET__AUTH__JWT_SECRET", "FLOWLET__AUTH__API_KEY_SECRET",
                       "FLOWLET__KYC__HASH_KEY", "FLOWLET__CARDS__HASH_KEY", "FLOWLET__CARDS__CVC_KEY")
# Families of secrets named by key id.
SECRET_PREFIXES = ("FLOWLET__KYC__ENCRYPTION_KEYS__", "FLOWLET__CARDS__ENCRYPTION_KEYS__",
                   "FLOWLET__AUTH__JWT_PREVIOUS_SECRETS__")


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


def render_notes(values: dict[str, Any] | None) -> str:
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values=values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return next(text for path, text in manifests.items() if path.endswith("NOTES.txt"))


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


# --- small parsers -----------------------------------------------------------------------


def cpu_cores(quantity: Any) -> float:
    """A Kubernetes CPU quantity ("500m", "1", 2) as cores."""
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def millis_seconds(text: str) -> float:
    """A duration as the app reads its `_ms` settings: whole milliseconds, in seconds."""
    if not re.fullmatch(r"[1-9][0-9]*", text):
        raise CheckFailed(f"{text!r} is not a whole number of milliseconds")
    return int(text) / 1000


def helm_timeout_seconds(text: str) -> float:
    """A Go duration as `helm --timeout` takes it: 15m, 900s, 1h30m."""
    units = {"h": 3600, "m": 60, "s": 1}
    parts = re.findall(r"([0-9]+)([hms])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise CheckFailed(f"--timeout {text!r} is not a duration like 15m")
    return sum(int(n) * units[u] for n, u in parts)


def readme_section(title: str) -> str:
    text = (REPO / "README.md").read_text()
    start = text.find(f"\n## {title}\n")
    if start < 0:
        raise CheckFailed(f"README.md has no section {title!r}")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else len(text)]


def shell_commands(markdown: str) -> list[str]:
    """The commands of the fenced code blocks, continuation lines joined."""
    commands: list[str] = []
    for block in re.findall(r"```(?:sh|bash|console)?\n(.*?)```", markdown, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        commands.extend(line.strip() for line in joined.splitlines() if line.strip())
    return commands


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


def not_test_hook(obj: dict[str, Any]) -> bool:
    return hook_of(obj) != "test"


def named(name: str) -> Callable[[dict], bool]:
    return lambda o: o["metadata"].get("name") == name


def pod_specs(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Every pod spec a render creates: Deployment, Job, CronJob, bare Pod."""
    specs = []
    for obj in objects:
        kind, name = obj.get("kind"), f"{obj.get('kind')}/{obj['metadata'].get('name')}"
        if kind in ("Deployment", "Job"):
            specs.append((name, obj["spec"]["template"]["spec"]))
        elif kind == "CronJob":
            specs.append((name, obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]))
        elif kind == "Pod":
            specs.append((name, obj["spec"]))
    return specs


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
    """The environment a container gets from its envFrom ConfigMaps (rendered ones) and env
    (valueFrom entries map to None)."""
    env: dict[str, str] = {}
    for container in pod_spec["containers"]:
        for source in container.get("envFrom", []):
            ref = source.get("configMapRef")
            if ref:
                cm = one(objects, "ConfigMap", named(ref["name"]))
                env.update(cm.get("data") or {})
        for item in container.get("env", []):
            env[item["name"]] = item.get("value")
    return env


def secret_key_refs(container: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """env name -> (Secret, key) of the container's secretKeyRef entries."""
    refs = {}
    for item in container.get("env", []):
        ref = (item.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            refs[item["name"]] = (ref["name"], ref["key"])
    return refs


def assert_restricted(label: str, objects: list[dict[str, Any]]) -> None:
    """Pod Security Standards, "restricted" profile (plus a read-only root filesystem) for every
    pod the render creates, so the chart installs into a namespace labelled
    pod-security.kubernetes.io/enforce=restricted."""
    specs = pod_specs(objects)
    check(bool(specs), f"{label}: the render has pods to check")
    for name, pod in specs:
        psc = pod.get("securityContext") or {}
        problems = []
        for field in ("hostNetwork", "hostPID", "hostIPC"):
            if pod.get(field):
                problems.append(field)
        for vol in pod.get("volumes", []):
            types = set(vol) - {"name"}
            if not types <= RESTRICTED_VOLUME_TYPES:
                problems.append(f"volume {vol['name']} of type {sorted(types)}")
        containers = pod.get("containers", []) + pod.get("initContainers", [])
        for c in containers:
            csc = c.get("securityContext") or {}
            who = f"container {c['name']}"
            if not (csc.get("runAsNonRoot") is True or (psc.get("runAsNonRoot") is True and csc.get("runAsNonRoot") is not False)):
                problems.append(f"{who}: runAsNonRoot")
            if csc.get("runAsUser", psc.get("runAsUser")) == 0:
                problems.append(f"{who}: runAsUser 0")
            seccomp = (csc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
            if seccomp not in ("RuntimeDefault", "Localhost"):
                problems.append(f"{who}: seccompProfile {seccomp}")
            if csc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{who}: allowPrivilegeEscalation")
            if csc.get("privileged"):
                problems.append(f"{who}: privileged")
            caps = csc.get("capabilities") or {}
            if "ALL" not in (caps.get("drop") or []):
                problems.append(f"{who}: capabilities not dropping ALL")
            if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
                problems.append(f"{who}: adds capabilities {caps['add']}")
            if csc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{who}: root filesystem writable")
            if any(p.get("hostPort") for p in c.get("ports", [])):
                problems.append(f"{who}: hostPort")
        check(not problems, f"{label}: {name} meets Pod Security 'restricted' + read-only root "
                            f"filesystem{(': ' + '; '.join(problems)) if problems else ''}")


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
    check(psc.get("runAsUser") == 65532 and psc.get("runAsGroup") == 65532 and psc.get("fsGroup") == 65532,
          f"{label}: runs as 65532:65532, fsGroup 65532")
    check(pod.get("automountServiceAccountToken") is False, f"{label}: automountServiceAccountToken false")
    check(bool(pod.get("serviceAccountName")), f"{label}: serviceAccountName set")
    tmp = [m for m in c.get("volumeMounts", []) if m.get("mountPath") == "/tmp"]
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    check(len(tmp) == 1 and "emptyDir" in vols.get(tmp[0]["name"], {}), f"{label}: /tmp is an emptyDir")
    strategy = spec.get("strategy", {})
    check(strategy.get("type") == "RollingUpdate" and strategy["rollingUpdate"].get("maxUnavailable") == 0,
          f"{label}: rolling update with maxUnavailable 0")
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
    check(env.get("FLOWLET__DATABASE__ALLOW_PLAINTEXT", "false") == "false",
          f"{label}: FLOWLET__DATABASE__ALLOW_PLAINTEXT unset or false (TLS to PostgreSQL required)")


def assert_termination(label: str, objects: list[dict[str, Any]]) -> None:
    """terminationGracePeriodSeconds covers the preStop sleep, the HTTP drain and a margin, read
    from what the pod really gets."""
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    c = pod["containers"][0]
    sleep = (((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}).get("seconds", 0)
    drain = int(env_of(objects, pod).get("FLOWLET__SERVER__SHUTDOWN_TIMEOUT_SECS") or 30)
    grace = pod.get("terminationGracePeriodSeconds", 30)
    check(grace >= sleep + drain + GRACE_MARGIN_SECONDS,
          f"{label}: terminationGracePeriodSeconds {grace} >= preStop sleep {sleep} + "
          f"FLOWLET__SERVER__SHUTDOWN_TIMEOUT_SECS {drain} + {GRACE_MARGIN_SECONDS}")


def assert_capacity(label: str, objects: list[dict[str, Any]], values: dict[str, Any]) -> None:
    """Threads, allocator, argon2 and the database connection budget, from the render."""
    dep = one(objects, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    env = env_of(objects, pod)
    res = c.get("resources") or {}
    cpu = (res.get("limits") or {}).get("cpu") or (res.get("requests") or {}).get("cpu")
    check(cpu is not None, f"{label}: the server has a CPU request or limit to size threads from")
    cores = max(1, math.ceil(cpu_cores(cpu)))
    for key in ("FLOWLET__SERVER__WORKERS", "FLOWLET__SERVER__RUNTIME_THREADS"):
        n = int(env.get(key) or 0)
        check(1 <= n <= cores, f"{label}: {key}={n} is between 1 and the pod's {cores} CPU(s) ({cpu} rounded up)")
    check(env.get("MALLOC_ARENA_MAX") == "2" and env.get("MALLOC_TRIM_THRESHOLD_") == "131072",
          f"{label}: glibc returns memory to the OS (MALLOC_ARENA_MAX=2, MALLOC_TRIM_THRESHOLD_=131072)")
    hashes = env.get("FLOWLET__AUTH__MAX_CONCURRENT_HASHES")
    check(hashes is not None and int(hashes) == values["auth"]["maxConcurrentHashes"] >= 1,
          f"{label}: FLOWLET__AUTH__MAX_CONCURRENT_HASHES={hashes} from auth.maxConcurrentHashes")
    pool = int(env["FLOWLET__DATABASE__POOL_SIZE"])
    workers_pool = int(env["FLOWLET__DATABASE__WORKER_POOL_SIZE"])
    check(pool == values["database"]["poolSize"] and workers_pool == values["database"]["workerPoolSize"],
          f"{label}: FLOWLET__DATABASE__POOL_SIZE / WORKER_POOL_SIZE from database.poolSize / workerPoolSize")
    hpa = find(objects, "HorizontalPodAutoscaler")
    pods = hpa[0]["spec"]["maxReplicas"] if hpa else dep["spec"]["replicas"]
    surge = str(dep["spec"]["strategy"]["rollingUpdate"]["maxSurge"])
    surge_pods = math.ceil(pods * int(surge[:-1]) / 100) if surge.endswith("%") else int(surge)
    migration = 1 if find(objects, "Job", lambda o: o["metadata"]["name"].endswith("-migrate")) else 0
    needed = (pool + workers_pool + 2) * (pods + surge_pods) + migration
    budget = values["database"]["maxConnections"]
    check(needed <= budget,
          f"{label}: connections ({pool} + {workers_pool} + 2) x ({pods} pods + {surge_pods} surge) + "
          f"{migration} migration = {needed} <= database.maxConnections {budget}")


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
    # created before the Job (lower weight), or a Secret the operator created beforehand.
    weight = int(ann["helm.sh/hook-weight"])
    operator_secrets = {values.get("existingSecret"), values["migrations"]["databaseUrlSecret"]["name"]} - {"", None}
    sources = [("ConfigMap", s["configMapRef"]["name"]) for s in c.get("envFrom", []) if "configMapRef" in s]
    sources += [("Secret", name) for name, _ in secret_key_refs(c).values()]
    for kind, name in sources:
        if kind == "Secret" and name in operator_secrets:
            continue
        target = one(objects, kind, named(name))
        t_ann = target["metadata"].get("annotations", {})
        check(t_ann.get("helm.sh/hook") == "pre-install,pre-upgrade"
              and int(t_ann.get("helm.sh/hook-weight", "0")) < weight,
              f"{label}: the Job's {kind} {name} is a hook created before the Job")
    # Least privilege: no whole Secret, and the database URL is its one secret.
    check(not any("secretRef" in s for s in c.get("envFrom", [])),
          f"{label}: migration Job takes no whole Secret (envFrom secretRef)")
    refs = secret_key_refs(c)
    check(set(refs) == {"FLOWLET__DATABASE__URL"},
          f"{label}: migration Job's only secret is FLOWLET__DATABASE__URL (got {sorted(refs)})")
    want = values["migrations"]["databaseUrlSecret"]
    if want["name"]:
        check(refs["FLOWLET__DATABASE__URL"] == (want["name"], want["key"]),
              f"{label}: migration URL from migrations.databaseUrlSecret {want['name']}/{want['key']}")
    env = env_of(objects, pod)
    leaked = sorted(k for k in env if k in SERVER_ONLY_SECRETS or k.startswith(SECRET_PREFIXES))
    check(not leaked, f"{label}: no Redis, JWT, API-key, KYC or card secret reaches the migration Job ({leaked})")
    check(env.get("FLOWLET_ENV") == "production", f"{label}: migration Job runs with FLOWLET_ENV=production")
    m = values["migrations"]
    timeouts = {
        "FLOWLET__DATABASE__MIGRATION_LOCK_WAIT_MS": str(m["lockWaitMs"]),
        "FLOWLET__DATABASE__MIGRATION_STATEMENT_TIMEOUT_MS": str(m["statementTimeoutMs"]),
        "FLOWLET__DATABASE__MIGRATION_LOCK_TIMEOUT_MS": str(m["lockTimeoutMs"]),
    }
    for key, value in timeouts.items():
        check(env.get(key) == value, f"{label}: migration Job env {key}={value}")
    wait = millis_seconds(env["FLOWLET__DATABASE__MIGRATION_LOCK_WAIT_MS"])
    stmt = millis_seconds(env["FLOWLET__DATABASE__MIGRATION_STATEMENT_TIMEOUT_MS"])
    lock = millis_seconds(env["FLOWLET__DATABASE__MIGRATION_LOCK_TIMEOUT_MS"])
    check(lock < stmt and wait + stmt < spec["activeDeadlineSeconds"],
          f"{label}: lock timeout {lock:g}s < statement timeout {stmt:g}s, and lock wait + statement "
          f"timeout ({wait + stmt:g}s) < the Job's activeDeadlineSeconds {spec['activeDeadlineSeconds']}")
    check(not any(k.startswith("FLOWLET__DATABASE__MIGRATION_") for k in env_of(objects, dep_pod)),
          f"{label}: the migration timeouts are the Job's, not the server's")


def assert_network_policy(label: str, objects: list[dict[str, Any]], values: dict[str, Any]) -> None:
    np = one(objects, "NetworkPolicy", not_test_hook)
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
    # DNS: both the kube-dns pods and NodeLocal DNSCache's address, on UDP and TCP 53.
    dns_rules = [r for r in spec["egress"] if {(p.get("port"), p.get("protocol")) for p in r.get("ports", [])}
                 >= {(53, "UDP"), (53, "TCP")}]
    check(len(dns_rules) == 1, f"{label}: one egress rule for DNS on UDP and TCP 53")
    peers = dns_rules[0].get("to", [])
    cidrs = {p["ipBlock"]["cidr"] for p in peers if "ipBlock" in p}
    want_cidrs = set(values["networkPolicy"]["egress"]["dns"]["nodeLocalCidrs"])
    check(any(p.get("podSelector", {}).get("matchLabels", {}).get("k8s-app") == "kube-dns" and "namespaceSelector" in p
              for p in peers) and cidrs == want_cidrs and ("169.254.20.10/32" in cidrs) == ("169.254.20.10/32" in want_cidrs),
          f"{label}: DNS egress to the kube-dns pods and to the node-local cache {sorted(cidrs)}")


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
        assert_alerts(label, objects, rules[0])


def assert_alerts(label: str, objects: list[dict[str, Any]], r: dict[str, Any]) -> None:
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
        "outbox_due_deliveries": "due webhook deliveries",
        "outbox_due_emails": "due emails",
        "webhook_deliveries_total": "failed deliveries",
        "ledger_verify_violations": "ledger verification violations",
        "ledger_verify_last_run_timestamp_seconds": "ledger verification not running",
        "database_connections_max": "database pool saturation",
    }
    for needle, what in wanted.items():
        check(any(needle in e for e in exprs.values()), f"{label}: an alert covers {what}")
    # Outbox alerts count what is due now, not retries scheduled hours ahead.
    check(not any("outbox_pending" in e or "outbox_oldest_age_seconds" in e for e in exprs.values()),
          f"{label}: no alert on outbox_pending / outbox_oldest_age_seconds (they count far-off retries)")
    deployment = one(objects, "Deployment")["metadata"]["name"]
    ns = f'namespace="{NAMESPACE}"'
    by_name = {
        "FlowletNoReadyReplica": ("kube_deployment_status_replicas_available", f'deployment="{deployment}"'),
        "FlowletCrashLooping": ("kube_pod_container_status_restarts_total", 'container="flowlet"'),
        "FlowletOOMKilled": ("kube_pod_container_status_last_terminated_reason", 'reason="OOMKilled"'),
        "FlowletRedisDegraded": ("shared_state_backend_up", f'job="{deployment}"'),
        "FlowletOutboxBacklog": ("outbox_due_deliveries", f'job="{deployment}"'),
        "FlowletOutboxStalled": ("outbox_due_deliveries", "webhook_deliveries_total"),
        "FlowletEmailBacklog": ("outbox_due_emails", f'job="{deployment}"'),
    }
    jobs = find(objects, "Job", lambda o: o["metadata"]["name"].endswith("-migrate"))
    if jobs:
        by_name["FlowletMigrationFailed"] = ("kube_job_status_failed", f'job_name="{jobs[0]["metadata"]["name"]}"')
    hpa = find(objects, "HorizontalPodAutoscaler")
    if hpa:
        by_name["FlowletAutoscalerAtMax"] = ("kube_horizontalpodautoscaler_spec_max_replicas",
                                             f'horizontalpodautoscaler="{hpa[0]["metadata"]["name"]}"')
    cron = find(objects, "CronJob")
    if cron:
        by_name["FlowletBackupMissing"] = ("kube_cronjob_status_last_successful_time",
                                           f'cronjob="{cron[0]["metadata"]["name"]}"')
    for name, needles in by_name.items():
        check(name in exprs and all(n in exprs[name] for n in needles),
              f"{label}: alert {name} uses {' and '.join(needles)}")
    # Every object a kube-state-metrics matcher names exists in this render.
    kinds = {"deployment": "Deployment", "job_name": "Job", "horizontalpodautoscaler": "HorizontalPodAutoscaler",
             "cronjob": "CronJob"}
    for name, expr in exprs.items():
        for key, value in re.findall(r'\b(deployment|job_name|horizontalpodautoscaler|cronjob)="([^"]*)"', expr):
            check(bool(find(objects, kinds[key], named(value))),
                  f"{label}: {name}: {key}=\"{value}\" names a rendered {kinds[key]}")
    # Selectors: app metrics by the scrape job, kube-state-metrics by namespace and object
    # (their job label is kube-state-metrics', so job="flowlet" would silently match nothing).
    for name, expr in exprs.items():
        for metric, selector in metric_occurrences(expr):
            if metric in KNOWN_METRICS or metric in PROMETHEUS_METRICS:
                ok = selector is not None and f'job="{deployment}"' in selector and ns in selector
            elif metric in KUBE_STATE_METRICS:
                ok = selector is not None and not re.search(r"(^|,)\s*job\s*=", selector) and ns in selector
            else:
                ok = False
            check(ok, f"{label}: {name}: {metric} selected by "
                      f"{'job and namespace' if metric not in KUBE_STATE_METRICS else 'namespace and object, not job'}")
    for e in exprs.values():
        for result in re.findall(r'result="([^"]*)"', e):
            check(result in WEBHOOK_RESULTS, f"{label}: webhook result label {result!r} is one the app emits")


def assert_common(label: str, objects: list[dict[str, Any]], values: dict[str, Any], default: bool) -> None:
    assert_deployment(label, objects, values)
    assert_restricted(label, objects)
    assert_termination(label, objects)
    assert_capacity(label, objects, values)
    assert_hpa(label, objects, default)
    assert_migrations(label, objects, values)
    assert_network_policy(label, objects, values)
    assert_monitoring(label, objects)
    assert_helm_test(label, objects)
    pdb = one(objects, "PodDisruptionBudget")
    check(pdb["apiVersion"] == "policy/v1" and ("minAvailable" in pdb["spec"] or "maxUnavailable" in pdb["spec"]),
          f"{label}: PodDisruptionBudget (policy/v1) present")
    check(pdb["spec"].get("unhealthyPodEvictionPolicy") == "AlwaysAllow",
          f"{label}: PDB lets crash-looping pods be evicted (unhealthyPodEvictionPolicy AlwaysAllow)")
    sa = one(objects, "ServiceAccount")
    check(sa.get("automountServiceAccountToken") is False, f"{label}: ServiceAccount does not automount a token")
    svc = one(objects, "Service")
    check(svc["spec"]["type"] == "ClusterIP" and svc["spec"]["ports"][0]["targetPort"] == "http",
          f"{label}: ClusterIP Service to port http")
    server_sel = svc["spec"]["selector"]
    for name, pod in pod_specs(objects):
        if name.startswith("Deployment/"):
            continue
        owner = next(o for o in objects if f"{o['kind']}/{o['metadata']['name']}" == name)
        labels = (owner["metadata"]["labels"] if owner["kind"] == "Pod" else
                  (owner["spec"]["template"] if owner["kind"] == "Job"
                   else owner["spec"]["jobTemplate"]["spec"]["template"])["metadata"]["labels"])
        check(not all(labels.get(k) == v for k, v in server_sel.items()),
              f"{label}: the Service does not select {name}'s pod")
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


def assert_helm_test(label: str, objects: list[dict[str, Any]]) -> None:
    """`helm test`: a hook Pod calling the Service's /ready, let through the NetworkPolicy."""
    tests = [o for o in objects if hook_of(o) == "test" and o["kind"] == "Pod"]
    check(len(tests) == 1, f"{label}: one helm test Pod (helm.sh/hook: test)")
    pod = tests[0]
    svc = one(objects, "Service")
    url = f"http://{svc['metadata']['name']}.{NAMESPACE}.svc:{svc['spec']['ports'][0]['port']}/ready"
    c = pod["spec"]["containers"][0]
    check(pod["spec"].get("restartPolicy") == "Never" and url in c.get("command", []) + c.get("args", [])
          and "--fail" in c.get("args", []),
          f"{label}: helm test Pod GETs {url} and fails on an error status")
    np = find(objects, "NetworkPolicy", not_test_hook)
    if np:
        labels = pod["metadata"]["labels"]
        sel = np[0]["spec"]["podSelector"]["matchLabels"]
        check(not all(labels.get(k) == v for k, v in sel.items()),
              f"{label}: the release NetworkPolicy does not select the test pod")
        allowed = [peer for rule in np[0]["spec"]["ingress"] for peer in rule.get("from", [])
                   if "podSelector" in peer and "namespaceSelector" not in peer
                   and all(labels.get(k) == v for k, v in peer["podSelector"].get("matchLabels", {}).items())]
        check(bool(allowed), f"{label}: the release NetworkPolicy lets the test pod in")
        test_np = [o for o in objects if o["kind"] == "NetworkPolicy" and hook_of(o) == "test"]
        check(len(test_np) == 1 and all(labels.get(k) == v for k, v in
                                        test_np[0]["spec"]["podSelector"]["matchLabels"].items())
              and any(p.get("port") == 8080 for r in test_np[0]["spec"]["egress"] for p in r.get("ports", [])),
              f"{label}: a test-hook NetworkPolicy lets the test pod out to port 8080")


def assert_secret_handling(base: dict[str, Any]) -> None:
    label = "existingSecret=\"\""
    msg = render_error(deep_merge(base, {"existingSecret": ""}))
    required = ("databaseUrl", "kycEncryptionKeys", "cardHashKey", "cardCvcKey", "cardEncryptionKeyId",
                "cardEncryptionKeys")
    check(msg is not None and all(f"secrets.{k}" in msg for k in required),
          f"{label} without secrets fails the render naming the missing values, card keys included "
          f"({(msg or 'rendered!')[:80]}...)")
    for name in ("redisUrl", "cardHashKey", "cardCvcKey", "cardEncryptionKeyId", "cardEncryptionKeys"):
        partial = dict(TEST_SECRETS)
        del partial[name]
        msg = render_error(deep_merge(base, {"existingSecret": "", "secrets": partial}))
        check(msg is not None and f"secrets.{name}" in msg and "needs:" in msg,
              f"{label} fails when secrets.{name} (required) is missing")

    def refused(what: str, needle: str, **changes: Any) -> None:
        msg = render_error(deep_merge(base, {"existingSecret": "", "secrets": dict(TEST_SECRETS, **changes)}))
        check(msg is not None and needle in msg, f"{label} refuses {what} ({(msg or 'rendered!')[:70]}...)")

    refused("a secret shorter than 32 bytes", "secrets.jwtSecret", jwtSecret="too-short")
    refused("a KYC key id without its key", "kycEncryptionKeyId", kycEncryptionKeyId="other")
    refused("a card hash key shorter than 32 bytes", "secrets.cardHashKey", cardHashKey="c" * 31)
    refused("a card CVC key shorter than 32 bytes", "secrets.cardCvcKey", cardCvcKey="v" * 31)
    refused("the same key as card hash key and CVC key", "secrets.cardCvcKey must differ",
            cardCvcKey=TEST_SECRETS["cardHashKey"])
    refused("a card key id without its key", "secrets.cardEncryptionKeyId", cardEncryptionKeyId="c2027")
    dev = {"dev": base64.b64encode(b"d" * 32).decode()}
    refused("the development card key id", "\"dev\"", cardEncryptionKeyId="dev", cardEncryptionKeys=dev)
    refused("an upper-case card key id", "lower case", cardEncryptionKeyId="C2026",
            cardEncryptionKeys={"C2026": TEST_SECRETS["cardEncryptionKeys"]["c2026"]})
    refused("a card key that is not base64 of 32 bytes", "secrets.cardEncryptionKeys.c2026",
            cardEncryptionKeys={"c2026": base64.b64encode(b"k" * 16).decode()})
    refused("a card key id the app would refuse (values.schema.json)", "/secrets/cardEncryptionKeyId",
            cardEncryptionKeyId="c-2026")
    refused("a card key named by a kid the app would refuse (values.schema.json)", "/secrets/cardEncryptionKeys",
            cardEncryptionKeys=dict(TEST_SECRETS["cardEncryptionKeys"], **{"c-2027": TEST_SECRETS["cardEncryptionKeys"]["c2026"]}))
    refused("the 0.2.0 placeholder secrets.cardsEncryptionKey (values.schema.json)", "cardsEncryptionKey",
            cardsEncryptionKey="x" * 44)

    values = deep_merge(load_values_file("values.yaml"), deep_merge(base, {"existingSecret": "", "secrets": TEST_SECRETS}))
    objects = render(deep_merge(base, {"existingSecret": "", "secrets": TEST_SECRETS}))
    validate_schemas(f"{label} with secrets", objects)
    secrets = {s["metadata"]["name"]: s for s in find(objects, "Secret")}
    check(set(secrets) == {RELEASE, f"{RELEASE}-migrate"},
          f"{label} with secrets renders the Secret and the migration hook's Secret")
    data = {k: base64.b64decode(v).decode() for k, v in secrets[RELEASE]["data"].items()}
    wrong = sorted(k for k, v in REQUIRED_SECRET_DATA.items() if data.get(k) != v)
    check(not wrong, f"{label}: the Secret holds every required FLOWLET__* key, card keys included (wrong: {wrong})")
    check(set(data) == set(REQUIRED_SECRET_DATA) | {"FLOWLET__SMTP__URL"},
          f"{label}: the Secret holds nothing else (SMTP as given; no replica URL, no FLOWLET__CARDS__ENCRYPTION_KEY)")
    hook = {k: base64.b64decode(v).decode() for k, v in secrets[f"{RELEASE}-migrate"]["data"].items()}
    check(hook == {"FLOWLET__DATABASE__URL": TEST_SECRETS["databaseUrl"]},
          f"{label}: the hook Secret holds only the database URL")
    assert_common(f"{label} with secrets", objects, values, default=True)
    dep = one(objects, "Deployment")
    checksum = dep["spec"]["template"]["metadata"]["annotations"].get("checksum/secret")
    check(bool(checksum), f"{label}: checksum/secret annotation on the pod template")
    rotated = render(deep_merge(base, {"existingSecret": "", "secrets": dict(TEST_SECRETS, jwtSecret="r" * 48)}))
    check(one(rotated, "Deployment")["spec"]["template"]["metadata"]["annotations"].get("checksum/secret") != checksum,
          f"{label}: rotating a secret changes checksum/secret, so the pods roll")
    # A card-key rotation: the new kid beside the old one, then active.
    new_key = base64.b64encode(bytes(range(64, 96))).decode()
    keys = dict(TEST_SECRETS["cardEncryptionKeys"], c2027=new_key)
    rotating = render(deep_merge(base, {"existingSecret": "", "secrets": dict(
        TEST_SECRETS, cardEncryptionKeyId="c2027", cardEncryptionKeys=keys)}))
    data = {k: base64.b64decode(v).decode() for k, v in one(rotating, "Secret", named(RELEASE))["data"].items()}
    check(data.get("FLOWLET__CARDS__ENCRYPTION_KEYS__C2026") == TEST_SECRETS["cardEncryptionKeys"]["c2026"]
          and data.get("FLOWLET__CARDS__ENCRYPTION_KEYS__C2027") == new_key
          and data.get("FLOWLET__CARDS__ENCRYPTION_KEY_ID") == "c2027"
          and one(rotating, "Deployment")["spec"]["template"]["metadata"]["annotations"].get("checksum/secret") != checksum,
          f"{label}: during a card-key rotation both kids are rendered, the active one is the new kid, and the pods roll")

    migrator = dict(TEST_SECRETS, migrationDatabaseUrl="postgres://migrator:pw@db.internal:5432/flowlet?sslmode=verify-full",
                    databaseReplicaUrl="postgres://flowlet:pw@replica.internal:5432/flowlet?sslmode=verify-full")
    objects = render(deep_merge(base, {"existingSecret": "", "secrets": migrator}))
    hook = {k: base64.b64decode(v).decode() for k, v in one(objects, "Secret", named(f"{RELEASE}-migrate"))["data"].items()}
    check(hook == {"FLOWLET__DATABASE__URL": migrator["migrationDatabaseUrl"]},
          f"{label}: secrets.migrationDatabaseUrl goes to the hook Secret instead of databaseUrl")
    data = one(objects, "Secret", named(RELEASE))["data"]
    check(base64.b64decode(data.get("FLOWLET__DATABASE__REPLICA_URL", "")).decode() == migrator["databaseReplicaUrl"],
          f"{label}: secrets.databaseReplicaUrl becomes FLOWLET__DATABASE__REPLICA_URL")

    msg = render_error(deep_merge(base, {"config": {"FLOWLET__DATABASE__MIGRATE_ON_START": "true"}}))
    check(msg is not None, "config cannot re-enable migrate_on_start")
    for key in ("FLOWLET__AUTH__JWT_SECRET", "FLOWLET__KYC__HASH_KEY", "FLOWLET__KYC__ENCRYPTION_KEYS__K2026",
                "FLOWLET__AUTH__JWT_PREVIOUS_SECRETS__J2025", "FLOWLET__CARDS__HASH_KEY", "FLOWLET__CARDS__CVC_KEY",
                "FLOWLET__CARDS__ENCRYPTION_KEYS__C2026", "FLOWLET__CARDS__ENCRYPTION_KEYS__C2027"):
        msg = render_error(deep_merge(base, {"config": {key: "x" * 44}}))
        check(msg is not None and f"config.{key} is a secret" in msg,
              f"config refuses {key} (a secret: it belongs in the Secret)")
    msg = render_error(deep_merge(base, {"config": {"FLOWLET__CARDS__ENCRYPTION_KEY": "x" * 44}}))
    check(msg is not None and "FLOWLET__CARDS__ENCRYPTION_KEYS__<KID>" in msg,
          "config refuses the retired FLOWLET__CARDS__ENCRYPTION_KEY, naming the keys by kid")
    objects = render(deep_merge(base, {"config": {"FLOWLET__CARDS__SIMULATOR__ENABLED": "true",
                                                  "FLOWLET__CARDS__ENCRYPTION_KEY_ID": "c2026"}}))
    env = env_of(objects, one(objects, "Deployment")["spec"]["template"]["spec"])
    check(env.get("FLOWLET__CARDS__SIMULATOR__ENABLED") == "true" and env.get("FLOWLET__CARDS__ENCRYPTION_KEY_ID") == "c2026",
          "config passes non-secret card settings through (the simulator switch of a staging environment, a key id)")
    msg = render_error(deep_merge(base, {"config": {"FLOWLET__DATABASE__POOL_SIZE": "64"}}))
    check(msg is not None and "database.poolSize" in msg,
          "config refuses FLOWLET__DATABASE__POOL_SIZE (database.poolSize, inside the connection budget)")


def assert_overrides(defaults: dict[str, Any]) -> None:
    """Values that must change the render, or fail it."""
    # Connection budget.
    msg = render_error({"database": {"maxConnections": 200}})
    check(msg is not None and "database.maxConnections" in msg,
          f"pools above database.maxConnections fail the render ({(msg or 'rendered!')[:90]}...)")
    msg = render_error({"database": {"maxConnections": 500}})
    check(msg is not None and "database.maxConnections" in msg,
          "the connection budget counts the rollout's surge: (16 + 4 + 2) x (20 + 5) + 1 = 551 > 500 fails")
    msg = render_error({"autoscaling": {"enabled": False}, "replicaCount": 30, "database": {"maxConnections": 600}})
    check(msg is not None and "database.maxConnections" in msg,
          "the connection budget counts replicaCount when the HPA is off")
    # Threads.
    msg = render_error({"server": {"workers": 4}})
    check(msg is not None and "server.workers" in msg, "server.workers above the pod's CPUs fails the render")
    objects = render({"resources": {"requests": {"cpu": "1500m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}}})
    env = env_of(objects, one(objects, "Deployment")["spec"]["template"]["spec"])
    check(env["FLOWLET__SERVER__WORKERS"] == "2" and env["FLOWLET__SERVER__RUNTIME_THREADS"] == "2",
          "requests.cpu 1500m gives 2 workers and 2 runtime threads")
    objects = render({"resources": {"requests": {"cpu": "500m", "memory": "256Mi"},
                                    "limits": {"cpu": 3, "memory": "512Mi"}}, "server": {"runtimeThreads": 2}})
    env = env_of(objects, one(objects, "Deployment")["spec"]["template"]["spec"])
    check(env["FLOWLET__SERVER__WORKERS"] == "3" and env["FLOWLET__SERVER__RUNTIME_THREADS"] == "2",
          "a CPU limit of 3 sizes workers to 3; an explicit runtimeThreads is kept")
    # Termination arithmetic.
    msg = render_error({"terminationGracePeriodSeconds": 35})
    check(msg is not None and "terminationGracePeriodSeconds" in msg,
          "terminationGracePeriodSeconds below preStop + shutdown timeout + 10 fails the render")
    # values.schema.json.
    msg = render_error({"autoscaling": {"maxReplicas": "twenty"}})
    check(msg is not None and "maxReplicas" in msg, "values.schema.json: a string for autoscaling.maxReplicas fails the render")
    msg = render_error({"autoscalling": {"enabled": False}})
    check(msg is not None and "autoscalling" in msg, "values.schema.json: an unknown top-level value (typo) fails the render")
    msg = render_error({"migrations": {"lockWaitMs": "60s"}})
    check(msg is not None and "lockWaitMs" in msg, "values.schema.json: migration durations are whole milliseconds")
    msg = render_error({"image": {"digest": "sha256:abc"}})
    check(msg is not None and "digest" in msg, "values.schema.json: image.digest must be sha256:<64 hex>")
    # Image digest.
    digest = "sha256:" + "ab" * 32
    objects = render({"image": {"repository": "reg.example/flowlet", "tag": "9.9.9", "digest": digest}})
    images = {c["image"] for _, pod in pod_specs(objects) for c in pod["containers"] if c["name"] in ("flowlet", "migrate")}
    check(images == {f"reg.example/flowlet@{digest}"}, f"image.digest renders repository@digest for server and Job ({images})")
    objects = render({"image": {"repository": "reg.example/flowlet", "tag": "9.9.9"}})
    check(one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"] == "reg.example/flowlet:9.9.9",
          "without a digest the image is repository:tag")
    # Replica URL.
    objects = render({"database": {"replicaUrlSecret": {"name": "flowlet-replica", "key": "url"}}})
    refs = secret_key_refs(one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0])
    check(refs.get("FLOWLET__DATABASE__REPLICA_URL") == ("flowlet-replica", "url"),
          "database.replicaUrlSecret maps to FLOWLET__DATABASE__REPLICA_URL")
    check("FLOWLET__DATABASE__REPLICA_URL" not in secret_key_refs(
        one(render(None), "Deployment")["spec"]["template"]["spec"]["containers"][0]),
          "no FLOWLET__DATABASE__REPLICA_URL by default")
    # A CA file from a Secret, for the server and the migration Job alike.
    ca = {
        "extraVolumes": [{"name": "db-ca", "secret": {"secretName": "db-ca"}}],
        "extraVolumeMounts": [{"name": "db-ca", "mountPath": "/etc/flowlet/ca", "readOnly": True}],
        "config": {"FLOWLET__DATABASE__CA_FILE": "/etc/flowlet/ca/ca.crt", "FLOWLET__REDIS__CA_FILE": "/etc/flowlet/ca/ca.crt"},
        "extraEnv": [{"name": "FLOWLET__LOG__LEVEL_EXTRA", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "backups": {"pgDump": {"enabled": True}},
    }
    objects = render(ca)
    validate_schemas("CA mount (extraVolumes, extraVolumeMounts, extraEnv)", objects)
    for name, pod in pod_specs(objects):
        if name.startswith("Pod/"):
            continue
        mounted = any(m["name"] == "db-ca" and m["mountPath"] == "/etc/flowlet/ca" for m in pod["containers"][0].get("volumeMounts", []))
        check(mounted and any(v["name"] == "db-ca" for v in pod["volumes"]), f"extraVolumes/extraVolumeMounts reach {name}")
        if not name.startswith("CronJob/"):
            env = env_of(objects, pod)
            check(env.get("FLOWLET__DATABASE__CA_FILE") == "/etc/flowlet/ca/ca.crt" and "FLOWLET__REDIS__CA_FILE" in env,
                  f"{name} gets FLOWLET__DATABASE__CA_FILE and FLOWLET__REDIS__CA_FILE")
    dep_env = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    check(any(e["name"] == "FLOWLET__LOG__LEVEL_EXTRA" for e in dep_env), "extraEnv reaches the server container")
    # Production-style topology and priority, and the PriorityClass the chart can create.
    objects = render({"priorityClass": {"create": True}})
    pc = one(objects, "PriorityClass")
    check(one(objects, "Deployment")["spec"]["template"]["spec"].get("priorityClassName") == pc["metadata"]["name"],
          "priorityClass.create: the pods use the created PriorityClass")


def assert_production(objects: list[dict[str, Any]], values: dict[str, Any]) -> None:
    label = "values-production.yaml"
    pdb = one(objects, "PodDisruptionBudget")["spec"]
    check(pdb.get("maxUnavailable") == 1 and "minAvailable" not in pdb,
          f"{label}: PDB maxUnavailable 1 (never more than one pod down for a drain)")
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    keys = {t["topologyKey"]: t for t in pod.get("topologySpreadConstraints", [])}
    check(keys.get("topology.kubernetes.io/zone", {}).get("whenUnsatisfiable") == "DoNotSchedule"
          and "kubernetes.io/hostname" in keys,
          f"{label}: zone spreading is DoNotSchedule, plus hostname spreading")
    pcn = pod.get("priorityClassName")
    created = [o["metadata"]["name"] for o in find(objects, "PriorityClass")]
    check(bool(pcn) and pcn in created, f"{label}: pods run at PriorityClass {pcn}, which the release creates")
    check(pod["containers"][0]["image"].startswith(values["image"]["repository"] + "@sha256:"),
          f"{label}: image pinned by digest")
    env = env_of(objects, pod)
    check(env.get("FLOWLET__CARDS__SIMULATOR__ENABLED", "false") == "false",
          f"{label}: the card network simulator stays off (config/production.toml; only a staging environment turns it on)")
    check(env.get("FLOWLET__DATABASE__CA_FILE") and any(
        m["mountPath"] == str(Path(env["FLOWLET__DATABASE__CA_FILE"]).parent) for m in pod["containers"][0]["volumeMounts"]),
          f"{label}: FLOWLET__DATABASE__CA_FILE lies on a mounted volume")


def assert_defaults_topology(objects: list[dict[str, Any]]) -> None:
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    keys = {t["topologyKey"]: t for t in pod.get("topologySpreadConstraints", [])}
    check("topology.kubernetes.io/zone" in keys and "kubernetes.io/hostname" in keys
          and all(t["whenUnsatisfiable"] == "ScheduleAnyway" for t in keys.values()),
          "default values: spread over zones and hosts (ScheduleAnyway)")
    check(not find(objects, "PriorityClass") and "priorityClassName" not in pod,
          "default values: no PriorityClass")


def assert_backups() -> None:
    objects = render(None)
    check(not find(objects, "ScheduledBackup") and not find(objects, "CronJob") and not find(objects, "PersistentVolumeClaim"),
          "default values: no backup objects (opt-in)")
    msg = render_error({"backups": {"cloudnativepg": {"enabled": True}}})
    check(msg is not None and "backups.cloudnativepg.cluster" in msg, "a ScheduledBackup needs its Cluster's name")
    objects = render({"backups": {"cloudnativepg": {"enabled": True, "cluster": "pg-main"}}})
    sb = one(objects, "ScheduledBackup")
    spec = sb["spec"]
    allowed = {"schedule", "cluster", "method", "pluginConfiguration", "target", "immediate", "backupOwnerReference",
               "suspend", "online", "onlineConfiguration"}
    check(sb["apiVersion"] == "postgresql.cnpg.io/v1" and set(spec) <= allowed
          and spec["cluster"] == {"name": "pg-main"} and len(spec["schedule"].split()) == 6
          and spec["method"] in {"barmanObjectStore", "volumeSnapshot", "plugin"}
          and spec["target"] in {"primary", "prefer-standby"}
          and spec["backupOwnerReference"] in {"none", "self", "cluster"} and isinstance(spec["immediate"], bool),
          "ScheduledBackup is postgresql.cnpg.io/v1 with cluster.name, a six-field schedule and known enums")
    objects = render({"backups": {"cloudnativepg": {"enabled": True, "cluster": "pg", "method": "plugin",
                                                    "pluginName": "barman-cloud.cloudnative-pg.io"}}})
    check(one(objects, "ScheduledBackup")["spec"].get("pluginConfiguration") == {"name": "barman-cloud.cloudnative-pg.io"},
          "ScheduledBackup method plugin names its plugin")

    values = {"backups": {"pgDump": {"enabled": True}}}
    objects = render(values)
    validate_schemas("backups.pgDump.enabled", objects)
    assert_restricted("backups.pgDump.enabled", objects)
    cron = one(objects, "CronJob")
    job = cron["spec"]["jobTemplate"]["spec"]
    pod = job["template"]["spec"]
    c = pod["containers"][0]
    pvc = one(objects, "PersistentVolumeClaim")
    check(cron["spec"]["concurrencyPolicy"] == "Forbid" and job.get("activeDeadlineSeconds")
          and len(cron["spec"]["schedule"].split()) == 5,
          "pg_dump CronJob: Forbid overlapping runs, a deadline, a five-field schedule")
    check(any(v.get("persistentVolumeClaim", {}).get("claimName") == pvc["metadata"]["name"] for v in pod["volumes"])
          and pvc["metadata"]["annotations"].get("helm.sh/resource-policy") == "keep",
          "pg_dump writes to a PersistentVolumeClaim kept on uninstall")
    script = "\n".join(c.get("command", []) + c.get("args", []))
    dump = [line for line in script.splitlines() if line.strip().startswith("pg_dump ")]
    check(len(dump) == 1 and "--format=custom" in dump[0] and "--lock-wait-timeout=" in dump[0],
          "pg_dump: custom format, bounded lock wait")
    check(secret_key_refs(c) == {"DATABASE_URL": ("flowlet-secrets", "FLOWLET__DATABASE__URL")}
          and not any("secretRef" in s for s in c.get("envFrom", [])),
          "pg_dump's only secret is the database URL")
    np = one(objects, "NetworkPolicy", not_test_hook)
    labels = job["template"]["metadata"]["labels"]
    check(all(labels.get(k) == v for k, v in np["spec"]["podSelector"]["matchLabels"].items()),
          "the release NetworkPolicy (DNS, PostgreSQL egress) covers the backup pod")
    objects = render({"backups": {"pgDump": {"enabled": True, "persistence": {"existingClaim": "nfs-backups"}}}})
    check(not find(objects, "PersistentVolumeClaim") and any(
        v.get("persistentVolumeClaim", {}).get("claimName") == "nfs-backups"
        for v in one(objects, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["volumes"]),
          "pg_dump persistence.existingClaim is used as is")


def assert_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    m = re.fullmatch(r">=\s*1\.(\d+)\.0-0", chart.get("kubeVersion", ""))
    check(m is not None, f"Chart.yaml kubeVersion is a lower bound (>=1.N.0-0): {chart.get('kubeVersion')}")
    minor = int(m.group(1))
    uses_sleep = "sleep:" in (CHART / "templates" / "deployment.yaml").read_text()
    check(not uses_sleep or minor >= 30, "Chart.yaml kubeVersion >= 1.30 (the templates use the preStop sleep action)")
    check(KUBE_VERSIONS[0] == f"1.{minor}", f"the schemas are checked from the chart's oldest Kubernetes, 1.{minor}")
    upgrading = (CHART / "UPGRADING.md").read_text()
    check(f"## {chart['version']}" in upgrading, f"chart/UPGRADING.md has notes for chart {chart['version']}")


def assert_docs(defaults: dict[str, Any], production: dict[str, Any]) -> None:
    """The README and docs statements operators act on."""
    deploy = readme_section("Deploy to Kubernetes")
    commands = [c for c in shell_commands(deploy) if c.startswith("helm upgrade --install")]
    check(bool(commands), "README deploy section has a `helm upgrade --install` command")
    deadline = max(defaults["migrations"]["activeDeadlineSeconds"], production["migrations"]["activeDeadlineSeconds"])
    for command in commands:
        m = re.search(r"--timeout[ =](\S+)", command)
        check("--wait" in command.split() and m is not None,
              f"README: `{command[:60]}...` uses --wait and --timeout")
        timeout = helm_timeout_seconds(m.group(1))
        check(timeout > deadline,
              f"README: --timeout {m.group(1)} ({timeout:g}s) exceeds the migration Job's activeDeadlineSeconds ({deadline})")
    for deadline_override in (None, 1800):
        values = {"migrations": {"activeDeadlineSeconds": deadline_override}} if deadline_override else None
        notes = render_notes(values)
        m = re.search(r"helm upgrade --install .*--wait --timeout (\S+)", notes)
        want = deadline_override or defaults["migrations"]["activeDeadlineSeconds"]
        check(m is not None and helm_timeout_seconds(m.group(1)) > want,
              f"NOTES.txt: the upgrade command's --timeout exceeds activeDeadlineSeconds {want}")
    atomic = [p for p in deploy.split("\n\n") if "`--atomic`" in p and "rolls the release back" in p]
    check(len(atomic) == 1 and "not the migrations" in atomic[0] and "forward-only" in atomic[0]
          and "expand/contract" in atomic[0],
          "README discusses --atomic: the Deployment rolls back, migrations (forward-only, expand/contract) do not")
    check("sslmode=verify-full" in deploy and "rediss://" in deploy and "sslmode=require" not in deploy
          and "redis://:" not in deploy,
          "README examples use sslmode=verify-full and rediss://")
    check("FLOWLET__DATABASE__ALLOW_PLAINTEXT" in deploy and "FLOWLET__DATABASE__CA_FILE" in deploy,
          "README documents ALLOW_PLAINTEXT and the CA-file mount")
    check(re.search(r"transaction pooling[^.]*\*\*unsupported\*\*", deploy, re.I) is not None
          and "session pooling" in deploy.lower() and "advisory lock" in deploy.lower(),
          "README: PgBouncer transaction pooling unsupported (prepared statements, advisory locks); session pooling works")
    ops = (REPO / "docs" / "operations.md").read_text()
    for needle, what in [
        ("pod-security.kubernetes.io/enforce=restricted", "namespace PodSecurity label"),
        ("rollout restart deployment/flowlet", "rolling pods after rotating an existing Secret"),
        ("FLOWLET__AUTH__JWT_PREVIOUS_SECRETS", "JWT key rotation"),
        ("FLOWLET__AUTH__API_KEY_SECRET", "API-key HMAC secret"),
        ("FLOWLET__KYC__ENCRYPTION_KEYS", "KYC PII keys by key id"),
        ("flowlet admin kyc reencrypt", "KYC re-encryption"),
        ("FLOWLET__CARDS__ENCRYPTION_KEYS__<NEWKID>", "card-number keys by key id"),
        ("flowlet admin cards reencrypt", "card-number re-encryption"),
        ("FLOWLET__CARDS__HASH_KEY", "the card lookup hash key"),
        ("FLOWLET__CARDS__CVC_KEY", "the CVC key"),
        ("digest", "pinning base images by digest as a release step"),
        ("ScheduledBackup", "CloudNativePG backups"),
    ]:
        check(needle in ops, f"docs/operations.md covers {what} ({needle})")
    cards = ops[ops.find("### Card keys"):]
    cards = cards[:cards.find("\n### ", 1)]
    card_steps = re.findall(r"^\d+\. .*?(?=^\d+\. |\Z)", cards, re.S | re.M)
    order = [next((i for i, s in enumerate(card_steps) if needle in s), -1) for needle in (
        "FLOWLET__CARDS__ENCRYPTION_KEYS__<NEWKID>", "FLOWLET__CARDS__ENCRYPTION_KEY_ID",
        "flowlet admin cards reencrypt", "<OLDKID>")]
    check("(future)" not in cards and "reserved" not in cards and -1 not in order and order == sorted(order)
          and len(set(order)) == 4,
          "docs/operations.md card keys: add the new kid, make it active, `flowlet admin cards reencrypt`, remove the old kid")
    items = re.split(r"\n(?=\* )|\n\n", cards)
    for key in ("FLOWLET__CARDS__HASH_KEY", "FLOWLET__CARDS__CVC_KEY"):
        check(any(i.startswith(f"* `{key}`") and "reissue" in i for i in items),
              f"docs/operations.md: {key} has its own item saying it changes only by reissuing cards")
    check(re.search(r"only when they have leaked", cards) is not None,
          "docs/operations.md: the card hash and CVC keys are leak-only rotations")
    # The README's Secret example holds every key the app requires in production.
    secrets_section = deploy[deploy.find("### Secrets"):]
    create = [c for c in shell_commands(secrets_section) if c.startswith("kubectl create secret generic flowlet-secrets")]
    literal_keys = set(re.findall(r"--from-literal=([A-Z0-9_]+)=", create[0])) if create else set()
    check(bool(create) and set(REQUIRED_SECRET_DATA) <= literal_keys,
          f"README's `kubectl create secret` example has every required key "
          f"(missing: {sorted(set(REQUIRED_SECRET_DATA) - literal_keys)})")
    check("FLOWLET__CARDS__ENCRYPTION_KEY " not in deploy and "FLOWLET__CARDS__ENCRYPTION_KEY`" not in deploy,
          "README no longer mentions the retired FLOWLET__CARDS__ENCRYPTION_KEY")
    configuration = readme_section("Configuration")
    for key in ("cards.bin", "cards.validity_months", "cards.encryption_key_id", "cards.encryption_keys.<kid>",
                "cards.hash_key", "cards.cvc_key", "cards.reveals_per_hour", "cards.hold_expiry_hours",
                "cards.overcapture_percent", "cards.decision_timeout_ms", "cards.simulator.enabled"):
        check(f"`{key}`" in configuration, f"README's configuration table has `{key}`")
    cards_defaults = tomllib.loads((REPO / "config" / "default.toml").read_text())["cards"]
    for key in ("bin", "validity_months", "reveals_per_hour", "hold_expiry_hours", "overcapture_percent",
                "decision_timeout_ms", "simulator.enabled"):
        value: Any = cards_defaults
        for part in key.split("."):
            value = value[part]
        text = str(value).lower() if isinstance(value, bool) else str(value)
        rows = [line.split(" | ") for line in configuration.splitlines() if line.startswith(f"| `cards.{key}` |")]
        check(len(rows) == 1 and rows[0][2].startswith(f"`{text}`"),
              f"README: the default of `cards.{key}` is config/default.toml's `{text}`")
    production_toml = tomllib.loads((REPO / "config" / "production.toml").read_text())
    simulator_row = next(line for line in configuration.splitlines() if line.startswith("| `cards.simulator.enabled` |"))
    check(production_toml["cards"]["simulator"]["enabled"] is False and "`false` in production" in simulator_row,
          "README: the card network simulator is off in production, as config/production.toml says")
    restore = ops[ops.find("## Restore"):]
    check(ops.find("## Restore") >= 0 and "point-in-time" in ops.lower(), "docs/operations.md has PITR and a restore procedure")
    steps: list[str] = []  # numbered items with their indented continuation lines
    for line in restore.split("\n## ")[0].splitlines():
        if re.match(r"\d+\. ", line):
            steps.append(line)
        elif steps and line.startswith("   ") and not steps[-1].endswith("\n"):
            steps[-1] += " " + line.strip()
        elif steps and not steps[-1].endswith("\n"):
            steps[-1] += "\n"  # the item ended
    verify = [i for i, s in enumerate(steps) if "flowlet admin ledger verify" in s]
    traffic = [i for i, s in enumerate(steps) if "traffic" in s.lower()]
    check(bool(verify) and verify[-1] == len(steps) - 2 and "traffic" in steps[-1].lower()
          and not any(i <= verify[-1] for i in traffic if not steps[i].lower().startswith(f"{i + 1}. stop traffic")),
          "restore procedure: `flowlet admin ledger verify` is the step before traffic is let back in")


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


def metric_occurrences(expr: str) -> list[tuple[str, str | None]]:
    """Each metric a PromQL expression reads, with its label selector (None when bare)."""
    selectors: list[str] = []

    def keep(match: re.Match) -> str:
        selectors.append(match.group(1))
        return f" @{len(selectors) - 1} "

    e = re.sub(r"\{([^}]*)\}", keep, expr)
    e = re.sub(r'"(?:[^"\\]|\\.)*"', " ", e)  # strings outside selectors (label_replace args)
    e = re.sub(r"\[[^\]]*\]", " ", e)  # ranges
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)  # label lists
    e = re.sub(r"\blabel_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*(@\d+)?\s*(,[^)]*)?\)", r" \1 \2 ", e)
    e = re.sub(r"\$\{?\w+\}?", " ", e)  # Grafana variables
    e = re.sub(r"(?<![A-Za-z0-9_:@])[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?", " ", e)  # numbers
    found: list[tuple[str, str | None]] = []
    for m in re.finditer(r"([A-Za-z_:][A-Za-z0-9_:]*)(\s*@(\d+))?(\s*\()?", e):
        token, sel, paren = m.group(1), m.group(3), m.group(4)
        if token in PROMQL_KEYWORDS or (paren and sel is None):
            continue  # a function or aggregation
        base = re.sub(r"_(bucket|sum|count)$", "", token)
        found.append((base if base in KNOWN_METRICS else token, selectors[int(sel)] if sel is not None else None))
    return found


def metric_names(exprs: list[str]) -> set[str]:
    return {name for expr in exprs for name, _ in metric_occurrences(expr)}


def monitoring_render() -> list[dict[str, Any]]:
    return render({"metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
                   "backups": {"pgDump": {"enabled": True}}})


def app_metric_names() -> set[str]:
    dashboard = json.loads((CHART / "dashboards" / "flowlet.json").read_text())
    return {n for n in metric_names(promql_expressions(monitoring_render(), dashboard)) if n not in EXTERNAL_METRICS}


# --- main --------------------------------------------------------------------------------


def run_checks() -> None:
    defaults = load_values_file("values.yaml")
    production = load_values_file("values-production.yaml")
    merged_production = deep_merge(defaults, production)

    lint("default values", None)
    lint("values-production.yaml", production)
    assert_chart_metadata()

    default_objects = render(None)
    validate_schemas("default values", default_objects)
    assert_common("default values", default_objects, defaults, default=True)
    assert_defaults_topology(default_objects)
    check(not find(default_objects, "ServiceMonitor") and not find(default_objects, "PrometheusRule")
          and not find(default_objects, "Ingress"),
          "default values: no Ingress, ServiceMonitor or PrometheusRule (opt-in)")

    prod_objects = render(production)
    validate_schemas("values-production.yaml", prod_objects)
    assert_common("values-production.yaml", prod_objects, merged_production, default=False)
    assert_production(prod_objects, merged_production)
    check(bool(find(prod_objects, "ServiceMonitor")) and bool(find(prod_objects, "PrometheusRule"))
          and bool(find(prod_objects, "Ingress")),
          "values-production.yaml: Ingress, ServiceMonitor and PrometheusRule rendered")
    ingress = one(prod_objects, "Ingress")
    check(bool(ingress["spec"].get("tls")), "values-production.yaml: Ingress has TLS")

    no_hpa = render({"autoscaling": {"enabled": False}})
    validate_schemas("autoscaling.enabled=false", no_hpa)
    check(not find(no_hpa, "HorizontalPodAutoscaler")
          and one(no_hpa, "Deployment")["spec"].get("replicas") == defaults["replicaCount"],
          "autoscaling.enabled=false: no HPA, Deployment has replicas")

    monitoring = monitoring_render()
    validate_schemas("monitoring and pg_dump on", monitoring)
    assert_monitoring("monitoring and pg_dump on", monitoring)

    assert_secret_handling({})
    assert_overrides(defaults)
    assert_backups()
    assert_docs(defaults, merged_production)

    dashboard = json.loads((CHART / "dashboards" / "flowlet.json").read_text())
    check(isinstance(dashboard.get("panels"), list) and dashboard["panels"], "dashboards/flowlet.json is valid JSON with panels")
    names = metric_names(promql_expressions(monitoring, dashboard))
    unknown = sorted(names - KNOWN_METRICS - EXTERNAL_METRICS)
    check(not unknown, f"dashboard and alerts use only the app's metrics and kube-state-metrics' (unknown: {unknown})")
    for needle in ("http_requests_total", "http_request_duration_seconds", "ledger_transfers_total",
                   "ledger_batch_transfers", "payments_total", "outbox_due_deliveries", "outbox_due_emails",
                   "shared_state_backend_up", "database_connections_active", "kube_deployment_status_replicas_available"):
        check(needle in names, f"dashboard/alerts use {needle}")
    check({n for n, _ in metric_occurrences('sum by (pod) (rate(bogus_total{job="x"}[5m])) > 0')} == {"bogus_total"},
          "the metric-name scanner finds a metric it does not know (so the comparison above can fail)")


def main() -> int:
    global QUIET
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--print-metrics", action="store_true",
                        help="print the app metric names (those /metrics must expose) the dashboard and "
                             "alert rules use, one per line, and exit")
    args = parser.parse_args()
    try:
        if args.print_metrics:
            QUIET = True
            for name in sorted(app_metric_names()):
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
