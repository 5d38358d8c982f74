"""Offline checks of the Helm chart, the CRD, the examples and the container build.

Run through scripts/check-chart.sh, which provides the virtualenv. Nothing here
needs a cluster, Docker or the network.

Once: the chart's CRD equals crds/sagaplatform.yaml byte for byte, and both
equal `target/debug/saga-operator crd` when that binary is built; the CRD is a
valid CustomResourceDefinition with the contract's names; the RBAC tables below
cover exactly the Kubernetes APIs operator/src calls and the Lease it names; the
Grafana dashboard is valid JSON with a query on every panel (that every query
returns data is proven against a real Prometheus scraping a running platform:
tests/tests/prometheus.rs); the Dockerfile
passes hadolint and has a distroless, shell-free, non-root runtime stage;
kind-config.yaml maps the node ports of examples/values-kind.yaml. Every example
validates (SagaPlatforms against the CRD schema and its CEL rules, the rest
against Kubernetes 1.33) and finds its Secrets in examples/secrets.yaml.

For every value combination (the defaults, every examples/values-*.yaml and
every charts/saga-platform/ci/*-values.yaml): the values pass
values.schema.json and `helm lint --strict` (Kubernetes 1.33), the chart renders
(Helm library, client side), and on the rendered objects:

  * every object validates against the Kubernetes 1.33 JSON schemas in strict
    mode; a SagaPlatform against the CRD (schema and CEL); a ServiceMonitor or
    PodMonitor gets a structural check; a PrometheusRule too (every alert has
    a severity, a summary, a description and a runbook_url whose anchor is a
    heading of docs/operations.md; promtool checks the rules themselves, see
    scripts/prometheus-rules.sh);
  * every workload is hardened: liveness and readiness probes on declared
    ports, resources, runAsNonRoot, non-zero user, readOnlyRootFilesystem, no
    privilege escalation, all capabilities dropped, seccomp RuntimeDefault, no
    host namespaces or hostPath, pinned image tags;
  * the operator Deployment: probes, leader-election wiring, strategy, only
    environment variables saga-operator reads;
  * RBAC has no wildcard and grants exactly EXPECTED_*_RULES; bindings point at
    rendered roles and service accounts;
  * Services select pods that exist on ports they declare; every Secret key a
    pod or SagaPlatform reads is rendered (dev mode) or declared external.

Values that must be refused (NEGATIVE_CASES) fail the schema or the render;
values whose SagaPlatform the API server would refuse (CRD_REFUSED_CASES, read
from operator/tests/refused-sagaplatforms.yaml) are refused by the CRD with its message.

Exit status 0 when every check passed, 1 otherwise; the failures are listed.
`--dump DIR` also writes each case's rendered manifests to DIR. `--rules DIR`
only renders: the rule groups of each case's PrometheusRule, as a Prometheus
rule file DIR/<case>.rules.yml (for promtool), and nothing is checked.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import subprocess
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import celpy
import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "saga-platform"
CRD_SOURCE = ROOT / "crds" / "sagaplatform.yaml"
CHART_CRD = CHART / "crds" / "sagaplatform.yaml"
OPERATOR_BIN = ROOT / "target" / "debug" / "saga-operator"
EXAMPLES = ROOT / "examples"
KUBE_VERSION = "1.33.0"
RELEASE = "demo"
NAMESPACE = "saga"

# The operator's API calls (operator/src), as RBAC rules:
# (apiGroup, resource, resourceNames) -> verbs. The rendered rules must grant
# exactly these, no more and no fewer. Where each comes from:
#   controller.rs: Controller::new(SagaPlatforms).owns(Deployments)  -> list, watch
#   kube-runtime finalizer(): JSON patch of metadata.finalizers      -> sagaplatforms patch
#   reconcile/mod.rs write_status: patch_status (server-side apply)  -> sagaplatforms/status patch
#   reconcile/apply.rs: server-side apply of ConfigMap, Service,
#     Deployment; an apply that creates is authorized as create too  -> create, patch
#   build.rs controller owner reference (blockOwnerDeletion)         -> sagaplatforms/finalizers update
#   reconcile/mod.rs: PodDisruptionBudget, NetworkPolicy apply, list, delete (pruning)
#                                                                    -> create, patch, list, delete
#   reconcile/read.rs: Secret get_opt                                -> secrets get
#   controller.rs: metadata watch of Secrets (rbac.watchSecrets)     -> secrets list, watch
#   kube-runtime Recorder (events.k8s.io/v1): create, patch series   -> events create, patch
#   lease.rs: get_opt, create, replace of Lease "saga-operator"      -> leases create; get, update by name
EXPECTED_OPERATOR_RULES: dict[tuple[str, str, tuple[str, ...]], set[str]] = {
    ("saga.dev", "sagaplatforms", ()): {"list", "watch", "patch"},
    ("saga.dev", "sagaplatforms/status", ()): {"patch"},
    ("saga.dev", "sagaplatforms/finalizers", ()): {"update"},
    ("apps", "deployments", ()): {"list", "watch", "create", "patch"},
    ("", "services", ()): {"create", "patch"},
    ("", "configmaps", ()): {"create", "patch"},
    ("", "secrets", ()): {"get"},
    ("events.k8s.io", "events", ()): {"create", "patch"},
    ("policy", "poddisruptionbudgets", ()): {"list", "create", "patch", "delete"},
    ("networking.k8s.io", "networkpolicies", ()): {"list", "create", "patch", "delete"},
}
# Leader election: a Role in the release namespace.
EXPECTED_LEADER_RULES: dict[tuple[str, str, tuple[str, ...]], set[str]] = {
    ("coordination.k8s.io", "leases", ()): {"create"},
    ("coordination.k8s.io", "leases", ("saga-operator",)): {"get", "update"},
}

# Labels and port of the service pods the operator runs for a SagaPlatform
# (operator/src/reconcile/build.rs: selector_labels, container port "http").
OPERATOR_POD_NAMES = {"order-service", "payment-service", "inventory-service"}
OPERATOR_POD_PORT = "http"

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"}


@dataclass
class Case:
    """One value combination the chart is rendered with."""

    label: str
    values_files: list[Path] = field(default_factory=list)
    # Secrets the rendered objects may reference without rendering them
    # (created by the user, e.g. production values); read from the values
    # file's "# check-chart: external-secrets a,b" comment.
    external_secrets: set[str] = field(default_factory=set)
    # Files the user applies next to this release ("# check-chart: apply-with
    # FILE"): their SagaPlatforms must find their Secrets in the render and the
    # Services of the release must select their pods.
    apply_with: list[Path] = field(default_factory=list)

    def values(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for path in self.values_files:
            merged = deep_merge(merged, yaml.safe_load(path.read_text()) or {})
        return merged


# Values the chart must refuse: (label, values, a fragment of the expected error).
NEGATIVE_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("unknown top-level key", {"operatr": {}}, "operatr"),
    ("unknown operator key", {"operator": {"replica": 2}}, "replica"),
    ("prometheusRule: runbookUrl not a URL", {"prometheusRule": {"enabled": True, "runbookUrl": "docs/operations.md"}}, "runbookUrl"),
    ("prometheusRule: failureRatio above 1", {"prometheusRule": {"enabled": True, "failureRatio": 2}}, "failureRatio"),
    ("two operators without leader election", {"operator": {"replicas": 2, "leaderElection": {"enabled": False}}}, "leaderElection"),
    ("negative replicas", {"operator": {"replicas": -1}}, "replicas"),
    ("root operator user", {"operator": {"runAsUser": 0}}, "runAsUser"),
    ("log format", {"operator": {"logFormat": "xml"}}, "logFormat"),
    ("dev password not URL-safe", {"dev": {"enabled": True, "password": "p@ss:word/1"}}, "password"),
    ("short JWT secret", {"dev": {"enabled": True, "jwtSecret": "short"}}, "jwtSecret"),
    ("node port out of range", {"expose": {"order": {"enabled": True, "nodePort": 8080}}}, "nodePort"),
    ("platform name", {"platform": {"create": True, "name": "Saga_Platform"}}, "name"),
    (
        "platform outside the watched namespace",
        {"operator": {"watchNamespace": "elsewhere"}, "platform": {"create": True}},
        "watchNamespace",
    ),
    ("image without repository", {"operator": {"image": {"repository": ""}}}, "repository"),
]


# Values the chart renders but whose SagaPlatform the API server would refuse
# (CRD schema or CEL rule): (label, values, a fragment of the expected message).
# operator/tests/refused-sagaplatforms.yaml: specs the CRD must refuse, shared
# with the real-API-server test (operator/tests/cluster.rs).
REFUSED_CATALOGUE = ROOT / "operator" / "tests" / "refused-sagaplatforms.yaml"
CRD_REFUSED_CASES: list[tuple[str, dict[str, Any], str]] = [
    (case["name"], {"platform": {"create": True, "spec": case["spec"]}}, case["message"])
    for case in yaml.safe_load(REFUSED_CATALOGUE.read_text())
]


class Failure(Exception):
    pass


class Checker:
    def __init__(self) -> None:
        self.passed = 0
        self.failures: list[str] = []

    def check(self, name: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Failure as e:
            self.failures.append(f"{name}: {e}")
            print(f"FAIL {name}\n     {str(e).replace(chr(10), chr(10) + '     ')}")
        except Exception as e:  # a crash of a check is a failure too
            self.failures.append(f"{name}: {type(e).__name__}: {e}")
            print(f"FAIL {name}: {type(e).__name__}: {e}")
            traceback.print_exc()
        else:
            self.passed += 1
            print(f"ok   {name}")


# ---------------------------------------------------------------- helpers


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def ident(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind')}/{meta.get('name')}"


def require(condition: bool, message: str) -> None:
    if not condition:
        raise Failure(message)


def collect(problems: list[str]) -> None:
    if problems:
        raise Failure("\n".join(problems))


def discover_cases() -> list[Case]:
    cases = [Case("defaults")]
    files = sorted(EXAMPLES.glob("values-*.yaml")) + sorted((CHART / "ci").glob("*-values.yaml"))
    for path in files:
        external: set[str] = set()
        apply_with: list[Path] = []
        for line in path.read_text().splitlines():
            marker = "# check-chart: external-secrets"
            if line.startswith(marker):
                external |= {s.strip() for s in line[len(marker) :].split(",") if s.strip()}
            marker = "# check-chart: apply-with"
            if line.startswith(marker):
                apply_with += [ROOT / f for f in line[len(marker) :].split()]
        cases.append(Case(str(path.relative_to(ROOT)), [path], external, apply_with))
    return cases


# ---------------------------------------------------------------- Helm


def render(values: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """Renders the chart; returns the objects and NOTES.txt."""
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema(values)
        manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects: list[dict[str, Any]] = []
    notes = ""
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        for doc in load_docs(text):
            doc.setdefault("__source", path)
            objects.append(doc)
    return objects, notes


def lint(values: dict[str, Any]) -> None:
    report = helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}")
    problems = [
        f"[{m.get('severity')}] {m.get('path')}: {m.get('error')}" for m in report.get("messages", []) if (m.get("severity") or 0) >= 2
    ]
    problems += [str(e) for e in report.get("errors") or []]
    collect(problems)


# ---------------------------------------------------------------- schemas


def strict_crd_schema(schema: Any) -> Any:
    """The CRD's openAPIV3Schema as JSON Schema, with unknown fields refused
    (as `kubectl apply`'s strict field validation does) unless the schema
    preserves them."""
    if isinstance(schema, list):
        return [strict_crd_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict_crd_schema(v) for k, v in schema.items()}
    if out.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if (
        out.get("type") == "object"
        and "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def load_crd(path: Path) -> dict[str, Any]:
    docs = load_docs(path.read_text())
    require(len(docs) == 1, f"{path.relative_to(ROOT)}: expected one document, found {len(docs)}")
    return docs[0]


def crd_validator(crd: dict[str, Any], version: str = "v1alpha1") -> jsonschema.Validator:
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            schema = strict_crd_schema(v["schema"]["openAPIV3Schema"])
            # The API server adds these to every custom resource's schema.
            schema.setdefault("properties", {}).update(
                {
                    "apiVersion": {"type": "string"},
                    "kind": {"const": crd["spec"]["names"]["kind"]},
                    "metadata": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {"name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63}},
                    },
                }
            )
            return jsonschema.Draft202012Validator(schema)
    raise Failure(f"CRD has no version {version}")


def validate_custom_resource(obj: dict[str, Any], crd: dict[str, Any]) -> list[str]:
    group = crd["spec"]["group"]
    api_version = obj.get("apiVersion", "")
    g, _, version = api_version.rpartition("/")
    if g != group:
        return [f"{ident(obj)}: apiVersion {api_version} is not of group {group}"]
    body = {k: v for k, v in obj.items() if not k.startswith("__")}
    # apiVersion/kind/metadata are checked by the API server, not the schema.
    errors = sorted(crd_validator(crd, version).iter_errors(body), key=lambda e: list(e.path))
    problems = [f"{ident(obj)}: {'.'.join(map(str, e.path)) or '(root)'}: {e.message}" for e in errors]
    if not problems:
        # The CEL rules (x-kubernetes-validations), as on `kubectl apply` (create).
        schema = next(v for v in crd["spec"]["versions"] if v["name"] == version)["schema"]["openAPIV3Schema"]
        spec_schema = schema["properties"]["spec"]
        problems = [f"{ident(obj)}: {e}" for e in cel_errors(body.get("spec") or {}, spec_schema, "spec")]
    return problems


def to_cel(value: Any, schema: dict[str, Any]) -> Any:
    """A JSON value as CEL sees it in the API server: numbers typed by the schema."""
    t = schema.get("type")
    if value is None:
        return None
    if t == "integer":
        return celpy.celtypes.IntType(value)
    if t == "number":
        return celpy.celtypes.DoubleType(value)
    if t == "boolean":
        return celpy.celtypes.BoolType(value)
    if t == "string":
        return celpy.celtypes.StringType(value)
    if t == "array":
        return celpy.celtypes.ListType([to_cel(v, schema.get("items") or {}) for v in value])
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties") if isinstance(schema.get("additionalProperties"), dict) else {}
        return celpy.celtypes.MapType({celpy.celtypes.StringType(k): to_cel(v, props.get(k, extra)) for k, v in value.items()})
    return celpy.json_to_cel(value)


_CEL = celpy.Environment()
_CEL_PROGRAMS: dict[str, Any] = {}


def cel_errors(value: Any, schema: dict[str, Any], path: str) -> list[str]:
    """Evaluates the x-kubernetes-validations rules of `schema` and below on
    `value` as the API server does on create: defaults applied first;
    transition rules (those using oldSelf) only apply to updates and are skipped."""
    errors: list[str] = []
    if isinstance(value, dict) and schema.get("type") == "object":
        value = dict(value)
        for name, sub in (schema.get("properties") or {}).items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                errors += cel_errors(value[name], sub, f"{path}.{name}")
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name, v in value.items():
                if name not in (schema.get("properties") or {}):
                    errors += cel_errors(v, extra, f"{path}.{name}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            errors += cel_errors(v, schema.get("items") or {}, f"{path}[{i}]")
    for rule in schema.get("x-kubernetes-validations") or []:
        if "oldSelf" in rule["rule"]:
            continue
        program = _CEL_PROGRAMS.get(rule["rule"])
        if program is None:
            program = _CEL_PROGRAMS[rule["rule"]] = _CEL.program(_CEL.compile(rule["rule"]))
        try:
            ok = program.evaluate({"self": to_cel(value, schema)})
        except Exception as e:  # an evaluation error is a rejection too
            ok = e
        if ok is not True and not (isinstance(ok, celpy.celtypes.BoolType) and bool(ok)):
            errors.append(
                f"{path}: {rule.get('message') or rule['rule']}" + ("" if isinstance(ok, celpy.celtypes.BoolType) else f" ({ok})")
            )
    return errors


def validate_kubernetes(obj: dict[str, Any]) -> list[str]:
    body = {k: v for k, v in obj.items() if not k.startswith("__")}
    try:
        kubernetes_validate.validate(body, KUBE_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = ".".join(str(p) for p in e.path)
        return [f"{ident(obj)}: {path or '(root)'}: {e.message}"]
    except kubernetes_validate.SchemaNotFoundError as e:
        return [f"{ident(obj)}: no Kubernetes {KUBE_VERSION} schema for it ({e.message})"]
    return []


def validate_monitor(obj: dict[str, Any]) -> list[str]:
    """ServiceMonitor / PodMonitor (monitoring.coreos.com/v1): kubernetes-validate
    has no schema for the Prometheus Operator's CRDs, so check the fields we use."""
    p: list[str] = []
    kind = obj["kind"]
    spec = obj.get("spec") or {}
    allowed_spec = {"selector", "namespaceSelector", "endpoints" if kind == "ServiceMonitor" else "podMetricsEndpoints", "jobLabel"}
    if obj.get("apiVersion") != "monitoring.coreos.com/v1":
        p.append(f"{ident(obj)}: apiVersion must be monitoring.coreos.com/v1")
    extra = set(spec) - allowed_spec
    if extra:
        p.append(f"{ident(obj)}: unexpected spec fields {sorted(extra)}")
    if not (spec.get("selector") or {}).get("matchLabels"):
        p.append(f"{ident(obj)}: spec.selector.matchLabels is empty (would select everything)")
    endpoints = spec.get("endpoints" if kind == "ServiceMonitor" else "podMetricsEndpoints") or []
    if not endpoints:
        p.append(f"{ident(obj)}: no endpoints")
    for ep in endpoints:
        extra = set(ep) - {"port", "path", "interval", "scrapeTimeout", "scheme", "honorLabels"}
        if extra:
            p.append(f"{ident(obj)}: unexpected endpoint fields {sorted(extra)}")
        if not isinstance(ep.get("port"), str) or not ep.get("port"):
            p.append(f"{ident(obj)}: endpoint needs a named port")
        if ep.get("path") != "/metrics":
            p.append(f"{ident(obj)}: endpoint path must be /metrics")
    return p


def runbook_anchors() -> set[str]:
    """GitHub's anchors of the headings of docs/operations.md."""
    import re

    anchors = set()
    for line in (ROOT / "docs" / "operations.md").read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^a-z0-9 _-]", "", title).replace(" ", "-"))
    return anchors


def validate_prometheus_rule(obj: dict[str, Any]) -> list[str]:
    """PrometheusRule (monitoring.coreos.com/v1): kubernetes-validate has no
    schema for it, so check its shape and what every alert must carry;
    promtool checks the rules themselves (scripts/prometheus-rules.sh)."""
    p: list[str] = []
    if obj.get("apiVersion") != "monitoring.coreos.com/v1":
        p.append(f"{ident(obj)}: apiVersion must be monitoring.coreos.com/v1")
    spec = obj.get("spec") or {}
    if set(spec) != {"groups"}:
        p.append(f"{ident(obj)}: spec must hold groups only, has {sorted(spec)}")
    anchors = runbook_anchors()
    alerts = 0
    for group in spec.get("groups") or []:
        if set(group) - {"name", "interval", "rules"} or not group.get("name") or not group.get("rules"):
            p.append(f"{ident(obj)}: group {group.get('name')!r} needs a name and rules, and nothing else")
        for rule in group.get("rules") or []:
            name = rule.get("alert")
            if not name:
                p.append(f"{ident(obj)}: group {group.get('name')!r}: a rule that is not an alert")
                continue
            alerts += 1
            if set(rule) - {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}:
                p.append(f"{ident(obj)} {name}: unexpected fields {sorted(set(rule) - {'alert', 'expr', 'for', 'labels', 'annotations'})}")
            if not isinstance(rule.get("expr"), str) or not rule["expr"].strip():
                p.append(f"{ident(obj)} {name}: no expr")
            if (rule.get("labels") or {}).get("severity") not in {"critical", "warning", "info"}:
                p.append(f"{ident(obj)} {name}: severity label must be critical, warning or info")
            notes = rule.get("annotations") or {}
            for key in ("summary", "description", "runbook_url"):
                if not notes.get(key):
                    p.append(f"{ident(obj)} {name}: annotation {key} missing")
            url = notes.get("runbook_url") or ""
            anchor = url.partition("#")[2]
            if anchor != name.lower() or anchor not in anchors:
                p.append(f"{ident(obj)} {name}: runbook_url {url!r} must end in #{name.lower()}, a heading of docs/operations.md")
    if not alerts:
        p.append(f"{ident(obj)}: no alerts")
    return p


# ---------------------------------------------------------------- rendered-output assertions


def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    if kind == "Pod":
        return spec
    if kind == "CronJob":
        return spec["jobTemplate"]["spec"]["template"]["spec"]
    if kind in WORKLOAD_KINDS:
        return spec["template"]["spec"]
    return None


def pod_labels(obj: dict[str, Any]) -> dict[str, str]:
    if obj["kind"] == "Pod":
        return obj["metadata"].get("labels") or {}
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["metadata"].get("labels") or {}
    return obj["spec"]["template"]["metadata"].get("labels") or {}


def check_hardening(objects: list[dict[str, Any]]) -> None:
    p: list[str] = []
    workloads = [o for o in objects if o["kind"] in WORKLOAD_KINDS]
    require(workloads, "no workload rendered")
    for obj in workloads:
        spec = pod_spec(obj)
        assert spec is not None
        where = ident(obj)
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(flag):
                p.append(f"{where}: {flag} is set")
        for vol in spec.get("volumes") or []:
            if "hostPath" in vol:
                p.append(f"{where}: volume {vol.get('name')} is a hostPath")
        psc = spec.get("securityContext") or {}
        if obj["kind"] == "Deployment":
            selector = (obj["spec"].get("selector") or {}).get("matchLabels") or {}
            labels = pod_labels(obj)
            if not selector or any(labels.get(k) != v for k, v in selector.items()):
                p.append(f"{where}: selector {selector} does not match the pod labels {labels}")
        containers = [("container", c) for c in spec.get("containers") or []]
        containers += [("initContainer", c) for c in spec.get("initContainers") or []]
        for role, c in containers:
            cwhere = f"{where} {role} {c.get('name')}"
            csc = c.get("securityContext") or {}

            def effective(key: str) -> Any:
                return csc[key] if key in csc else psc.get(key)

            if csc.get("allowPrivilegeEscalation") is not False:
                p.append(f"{cwhere}: securityContext.allowPrivilegeEscalation must be false")
            if csc.get("readOnlyRootFilesystem") is not True:
                p.append(f"{cwhere}: securityContext.readOnlyRootFilesystem must be true")
            if csc.get("privileged"):
                p.append(f"{cwhere}: privileged")
            caps = csc.get("capabilities") or {}
            if "ALL" not in (caps.get("drop") or []):
                p.append(f"{cwhere}: securityContext.capabilities.drop must contain ALL")
            if caps.get("add"):
                p.append(f"{cwhere}: adds capabilities {caps['add']}")
            if effective("runAsNonRoot") is not True:
                p.append(f"{cwhere}: runAsNonRoot must be true (pod or container)")
            uid = effective("runAsUser")
            if uid is not None and int(uid) == 0:
                p.append(f"{cwhere}: runAsUser 0")
            seccomp = (effective("seccompProfile") or {}).get("type")
            if seccomp != "RuntimeDefault":
                p.append(f"{cwhere}: seccompProfile.type must be RuntimeDefault, is {seccomp}")
            image = c.get("image") or ""
            last = image.rsplit("/", 1)[-1]
            if "@sha256:" not in image and (":" not in last or last.endswith(":latest")):
                p.append(f"{cwhere}: image {image!r} must have a pinned tag or digest")
            res = c.get("resources") or {}
            for key in ("requests.cpu", "requests.memory", "limits.memory"):
                section, name = key.split(".")
                if not (res.get(section) or {}).get(name):
                    p.append(f"{cwhere}: resources.{key} is not set")
            if role != "container":
                continue
            port_names = {port.get("name") for port in c.get("ports") or []}
            port_numbers = {port.get("containerPort") for port in c.get("ports") or []}
            for probe_name in ("livenessProbe", "readinessProbe"):
                probe = c.get(probe_name)
                if not probe:
                    p.append(f"{cwhere}: no {probe_name}")
                    continue
                for handler in ("httpGet", "tcpSocket", "grpc"):
                    if handler in probe:
                        port = probe[handler].get("port")
                        if port not in port_names and port not in port_numbers:
                            p.append(f"{cwhere}: {probe_name} uses port {port!r}, which the container does not declare")
                if not any(h in probe for h in ("httpGet", "tcpSocket", "grpc", "exec")):
                    p.append(f"{cwhere}: {probe_name} has no handler")
    collect(p)


def check_operator(objects: list[dict[str, Any]], values: dict[str, Any]) -> None:
    """The operator Deployment specifically: its probes hit /healthz and /readyz."""
    ops = [
        o
        for o in objects
        if o["kind"] == "Deployment" and (o["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == "operator"
    ]
    require(len(ops) == 1, f"expected one operator Deployment, found {len(ops)}")
    spec = pod_spec(ops[0]) or {}
    c = spec["containers"][0]
    p: list[str] = []
    if (c.get("livenessProbe") or {}).get("httpGet", {}).get("path") != "/healthz":
        p.append("operator livenessProbe must be GET /healthz")
    leader = ((values.get("operator") or {}).get("leaderElection") or {}).get("enabled", False)
    # /readyz turns ready once the watches synced, which a standby never does.
    want = "/healthz" if leader else "/readyz"
    if (c.get("readinessProbe") or {}).get("httpGet", {}).get("path") != want:
        p.append(f"operator readinessProbe must be GET {want} (leader election {'on' if leader else 'off'})")
    env = {e["name"]: e for e in c.get("env") or []}
    if env.get("LEADER_ELECTION", {}).get("value") != str(leader).lower():
        p.append(f"operator LEADER_ELECTION env is {env.get('LEADER_ELECTION')}, values say {leader}")
    watch_secrets = (values.get("rbac") or {}).get("watchSecrets", True)
    # The operator watches Secrets only where the Role lets it.
    if env.get("WATCH_SECRETS", {}).get("value") != str(watch_secrets).lower():
        p.append(f"operator WATCH_SECRETS env is {env.get('WATCH_SECRETS')}, rbac.watchSecrets says {watch_secrets}")
    if leader and "fieldRef" not in (env.get("POD_NAME", {}).get("valueFrom") or {}):
        p.append("leader election needs POD_NAME from the downward API (the Lease holder identity)")
    if c.get("args") != ["run"]:
        p.append(f"operator args {c.get('args')}, expected ['run']")
    strategy = (ops[0]["spec"].get("strategy") or {}).get("type")
    if not leader and strategy != "Recreate":
        p.append(f"without leader election the strategy must be Recreate (never two operators), is {strategy}")
    if not c.get("startupProbe"):
        p.append("operator has no startupProbe")
    if ops[0]["spec"].get("replicas", 1) > 1 and not leader:
        p.append("operator replicas > 1 without leader election")
    sa = spec.get("serviceAccountName")
    sas = {o["metadata"]["name"] for o in objects if o["kind"] == "ServiceAccount"}
    if (values.get("serviceAccount") or {}).get("create", True) and sa not in sas:
        p.append(f"operator serviceAccountName {sa!r} is not rendered (ServiceAccounts: {sorted(sas)})")
    collect(p)


Rules = dict[tuple[str, str, tuple[str, ...]], set[str]]


def operator_env_names() -> set[str] | None:
    """The environment variables `saga-operator` reads (from its --help), or
    None when the binary is not built."""
    import re

    if not OPERATOR_BIN.exists():
        return None
    out = subprocess.run([str(OPERATOR_BIN), "--help"], capture_output=True, text=True, timeout=60)
    require(out.returncode == 0, f"saga-operator --help exited {out.returncode}")
    # RUST_LOG is read by tracing's EnvFilter (services/common/src/telemetry.rs), not clap.
    return set(re.findall(r"\[env: ([A-Z0-9_]+)=", out.stdout)) | {"RUST_LOG"}


_said: dict[str, bool] = {}


def check_operator_env(objects: list[dict[str, Any]], values: dict[str, Any]) -> None:
    """Every variable the chart sets on the operator is one the binary reads."""
    known = operator_env_names()
    if known is None:
        if not _said.get("env"):
            print(f"     ({OPERATOR_BIN.relative_to(ROOT)} not built: environment names not compared)")
            _said["env"] = True
        return
    extra = {e["name"] for e in (values.get("operator") or {}).get("extraEnv") or []}
    ops = [
        o
        for o in objects
        if o["kind"] == "Deployment" and (o["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == "operator"
    ]
    p = []
    for op in ops:
        for c in (pod_spec(op) or {}).get("containers") or []:
            for env in c.get("env") or []:
                if env["name"] not in known and env["name"] not in extra:
                    p.append(f"{ident(op)}: sets {env['name']}, which saga-operator does not read (it reads {sorted(known)})")
    collect(p)


# Rust type of an `Api<…>` in operator/src -> the API resource it calls.
API_TYPES = {
    "SagaPlatform": ("saga.dev", "sagaplatforms"),
    "Deployment": ("apps", "deployments"),
    "ConfigMap": ("", "configmaps"),
    "Service": ("", "services"),
    "Secret": ("", "secrets"),
    "PodDisruptionBudget": ("policy", "poddisruptionbudgets"),
    "NetworkPolicy": ("networking.k8s.io", "networkpolicies"),
    "LeaseObject": ("coordination.k8s.io", "leases"),
    "Lease": ("coordination.k8s.io", "leases"),
}


def check_rbac_covers_code() -> None:
    """Every Kubernetes API the operator's code touches (each `Api<T>`, the
    event Recorder, status patches) has rules in the expected tables, and every
    table entry is still used: a new API call cannot ship without RBAC, and a
    dropped one leaves no stale grant."""
    import re

    used: set[tuple[str, str]] = set()
    p: list[str] = []
    for path in sorted((ROOT / "operator" / "src").rglob("*.rs")):
        text = path.read_text()
        for t in re.findall(r"\bApi(?:::)?<\s*(?:DeserializeGuard<\s*|PartialObjectMeta<\s*)?([A-Za-z_]+)", text):
            if t == "K":  # generic helper (reconcile/apply.rs), typed at its call sites
                continue
            if t not in API_TYPES:
                p.append(
                    f"{path.relative_to(ROOT)}: Api<{t}> has no RBAC mapping: add it to API_TYPES, the chart's rbac.yaml and the expected rules"
                )
            else:
                used.add(API_TYPES[t])
        if "Recorder::new" in text:
            used.add(("events.k8s.io", "events"))
        if ".patch_status(" in text:
            used.add(("saga.dev", "sagaplatforms/status"))
    granted = {(g, r) for (g, r, _) in (EXPECTED_OPERATOR_RULES | EXPECTED_LEADER_RULES)}
    # owner references with blockOwnerDeletion need the finalizers subresource; it has no Api<> call.
    used.add(("saga.dev", "sagaplatforms/finalizers"))
    for g, r in sorted(used - granted):
        p.append(f"the operator calls {g or 'core'}/{r}, which the expected RBAC does not grant")
    for g, r in sorted(granted - used):
        p.append(f"the expected RBAC grants {g or 'core'}/{r}, which operator/src no longer calls")
    collect(p)


def check_lease_name() -> None:
    """The leader-election Role names the Lease the operator really uses."""
    import re

    main_rs = ROOT / "operator" / "src" / "main.rs"
    require(main_rs.exists(), "operator/src/main.rs is missing")
    found = re.findall(r'Lease::new\(\s*[^,]+,\s*[^,]+,\s*"([^"]+)"', main_rs.read_text())
    require(len(found) == 1, f"cannot find the Lease name in operator/src/main.rs (found {found})")
    expected = {names for (_, _, names) in EXPECTED_LEADER_RULES if names}
    require(expected == {(found[0],)}, f"the RBAC expects Lease {expected}, operator/src/main.rs uses {found[0]!r}")


def rules_of(role: dict[str, Any]) -> tuple[Rules, list[str]]:
    granted: Rules = {}
    p: list[str] = []
    for i, rule in enumerate(role.get("rules") or []):
        where = f"{ident(role)} rule {i}"
        if rule.get("nonResourceURLs"):
            p.append(f"{where}: nonResourceURLs {rule['nonResourceURLs']}")
        for key in ("apiGroups", "resources", "verbs", "resourceNames"):
            if any("*" in str(x) for x in rule.get(key) or []):
                p.append(f"{where}: wildcard in {key}: {rule.get(key)}")
        for verb in rule.get("verbs") or []:
            if verb in {"escalate", "bind", "impersonate"}:
                p.append(f"{where}: dangerous verb {verb}")
        names = tuple(sorted(rule.get("resourceNames") or []))
        for group in rule.get("apiGroups") or []:
            for resource in rule.get("resources") or []:
                granted.setdefault((group, resource, names), set()).update(rule.get("verbs") or [])
    return granted, p


def diff_rules(where: str, granted: Rules, expected: Rules) -> list[str]:
    p = []
    for key in sorted(set(granted) | set(expected)):
        have, want = granted.get(key, set()), expected.get(key, set())
        what = f"{key[0] or 'core'}/{key[1]}" + (f" (names {list(key[2])})" if key[2] else "")
        if have - want:
            p.append(f"{where}: {what} grants {sorted(have - want)} that the operator does not use")
        if want - have:
            p.append(f"{where}: {what} lacks {sorted(want - have)} that the operator needs")
    return p


def expected_operator_rules(values: dict[str, Any]) -> dict[tuple[str, str, tuple[str, ...]], set[str]]:
    """EXPECTED_OPERATOR_RULES, plus list and watch on Secrets with rbac.watchSecrets (default true)."""
    rules = {key: set(verbs) for key, verbs in EXPECTED_OPERATOR_RULES.items()}
    if (values.get("rbac") or {}).get("watchSecrets", True):
        rules[("", "secrets", ())] |= {"list", "watch"}
    return rules


def check_rbac(objects: list[dict[str, Any]], values: dict[str, Any]) -> None:
    p: list[str] = []
    op = values.get("operator") or {}
    roles = {(o["kind"], o["metadata"]["name"]): o for o in objects if o["kind"] in {"Role", "ClusterRole"}}
    if not (values.get("rbac") or {}).get("create", True):
        require(not roles, "rbac.create=false still renders roles")
        return
    watch = op.get("watchNamespace") or ""
    leader_roles = [r for r in roles.values() if r["kind"] == "Role" and r["metadata"]["name"].endswith("-leader-election")]
    operator_roles = [r for r in roles.values() if r not in leader_roles]
    require(len(operator_roles) == 1, f"expected one operator role, found {[ident(r) for r in operator_roles]}")
    role = operator_roles[0]
    if watch:
        require(
            role["kind"] == "Role" and role["metadata"].get("namespace") == watch,
            f"watchNamespace {watch}: expected a Role in {watch}, got {ident(role)} in {role['metadata'].get('namespace')}",
        )
    else:
        require(role["kind"] == "ClusterRole", f"all namespaces watched: expected a ClusterRole, got {ident(role)}")
    granted, problems = rules_of(role)
    p += problems + diff_rules(ident(role), granted, expected_operator_rules(values))
    if (op.get("leaderElection") or {}).get("enabled", False):
        require(len(leader_roles) == 1, f"expected one leader-election Role, found {len(leader_roles)}")
        granted, problems = rules_of(leader_roles[0])
        p += problems + diff_rules(ident(leader_roles[0]), granted, EXPECTED_LEADER_RULES)
        if leader_roles[0]["metadata"].get("namespace") != NAMESPACE:
            p.append("leader-election Role is not in the release namespace")
    else:
        require(not leader_roles, "leader election disabled but a leader-election Role is rendered")
    sas = {(o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects if o["kind"] == "ServiceAccount"}
    bindings = [o for o in objects if o["kind"] in {"RoleBinding", "ClusterRoleBinding"}]
    require(len(bindings) == len(roles), f"{len(roles)} roles but {len(bindings)} bindings")
    for b in bindings:
        ref = b["roleRef"]
        target = roles.get((ref["kind"], ref["name"]))
        if target is None:
            p.append(f"{ident(b)}: roleRef {ref['kind']}/{ref['name']} is not rendered")
        elif b["kind"] == "RoleBinding" and target["metadata"].get("namespace") != b["metadata"].get("namespace"):
            p.append(f"{ident(b)}: binds a Role of another namespace")
        if b["kind"] == "RoleBinding" and ref["kind"] == "ClusterRole":
            p.append(f"{ident(b)}: binds a ClusterRole")
        for s in b.get("subjects") or []:
            if s.get("kind") != "ServiceAccount":
                p.append(f"{ident(b)}: subject {s} is not a ServiceAccount")
            elif (values.get("serviceAccount") or {}).get("create", True) and (s.get("namespace"), s["name"]) not in sas:
                p.append(f"{ident(b)}: subject {s['namespace']}/{s['name']} is not rendered")
    collect(p)


def check_references(objects: list[dict[str, Any]], crd: dict[str, Any] | None, case: Case) -> None:
    """Services select rendered pods on declared ports; every Secret read is there."""
    p: list[str] = []
    workloads = [o for o in objects if o["kind"] in WORKLOAD_KINDS]
    secrets = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Secret"}
    platforms = {o["metadata"]["name"] for o in objects if o["kind"] == "SagaPlatform"}
    for svc in (o for o in objects if o["kind"] == "Service"):
        selector = svc["spec"].get("selector") or {}
        targets = [w for w in workloads if selector and all(pod_labels(w).get(k) == v for k, v in selector.items())]
        if (
            not targets
            and set(selector) == {"app.kubernetes.io/name", "app.kubernetes.io/instance"}
            and selector["app.kubernetes.io/name"] in OPERATOR_POD_NAMES
        ):
            # Pods of the operator: the SagaPlatform must be rendered too (or be applied by hand).
            instance = selector["app.kubernetes.io/instance"]
            if platforms and instance not in platforms:
                p.append(f"{ident(svc)}: selects pods of SagaPlatform {instance!r}, but the release renders {sorted(platforms)}")
            for port in svc["spec"].get("ports") or []:
                if port.get("targetPort") != OPERATOR_POD_PORT:
                    p.append(
                        f"{ident(svc)}: targetPort {port.get('targetPort')!r}; the operator's pods name their port {OPERATOR_POD_PORT!r}"
                    )
            continue
        if not targets:
            p.append(f"{ident(svc)}: selector {selector} matches no rendered pod")
            continue
        for port in svc["spec"].get("ports") or []:
            target = port.get("targetPort", port.get("port"))
            for w in targets:
                spec = pod_spec(w) or {}
                declared = {q.get("name") for c in spec.get("containers", []) for q in c.get("ports") or []}
                declared |= {q.get("containerPort") for c in spec.get("containers", []) for q in c.get("ports") or []}
                if target not in declared:
                    p.append(f"{ident(svc)}: targetPort {target!r} is not declared by {ident(w)}")

    def need_secret(where: str, name: str, key: str | None) -> None:
        if name in case.external_secrets:
            return
        s = secrets.get(name)
        if s is None:
            p.append(
                f"{where}: reads Secret {name!r}, which is not rendered (declare it external in the values file if the user creates it)"
            )
            return
        keys = set(s.get("data") or {}) | set(s.get("stringData") or {})
        if key is not None and key not in keys:
            p.append(f"{where}: reads key {key!r} of Secret {name!r}, which has only {sorted(keys)}")

    for w in workloads:
        spec = pod_spec(w) or {}
        for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
            for env in c.get("env") or []:
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    need_secret(f"{ident(w)} env {env['name']}", ref["name"], ref.get("key"))
    for sp in (o for o in objects if o["kind"] == "SagaPlatform"):
        spec = sp.get("spec") or {}
        for where, name, key in secret_refs(sp):
            need_secret(f"{ident(sp)} {where}", name, key)
        # With the dev RabbitMQ rendered, the management URL must reach it.
        rabbits = [
            o
            for o in objects
            if o["kind"] == "Service" and (o["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == "rabbitmq"
        ]
        url = (spec.get("broker") or {}).get("managementUrl")
        if rabbits and url:
            from urllib.parse import urlparse

            parsed = urlparse(url)
            host = (parsed.hostname or "").split(".")
            ok = False
            for r in rabbits:
                names = [
                    [r["metadata"]["name"]],
                    [r["metadata"]["name"], r["metadata"]["namespace"]],
                    [r["metadata"]["name"], r["metadata"]["namespace"], "svc"],
                ]
                full = [r["metadata"]["name"], r["metadata"]["namespace"], "svc", "cluster", "local"]
                ports = {q["port"] for q in r["spec"].get("ports") or [] if q.get("name") == "management"}
                if (host in names or host == full) and parsed.port in ports:
                    ok = True
            if not ok:
                p.append(f"{ident(sp)}: broker.managementUrl {url} does not reach the dev RabbitMQ Service {[ident(r) for r in rabbits]}")
    collect(p)


def check_objects(objects: list[dict[str, Any]], crd: dict[str, Any] | None) -> None:
    p: list[str] = []
    seen: set[tuple[str, str, str]] = set()
    for obj in objects:
        meta = obj.get("metadata") or {}
        key = (obj.get("kind", ""), meta.get("namespace", ""), meta.get("name", ""))
        if key in seen:
            p.append(f"{ident(obj)}: rendered twice")
        seen.add(key)
        if obj.get("kind") == "SagaPlatform":
            if crd is None:
                p.append(f"{ident(obj)}: no CRD to validate it against")
            else:
                p += validate_custom_resource(obj, crd)
        elif obj.get("kind") == "PrometheusRule":
            p += validate_prometheus_rule(obj)
        elif obj.get("apiVersion", "").startswith("monitoring.coreos.com/"):
            p += validate_monitor(obj)
        else:
            p += validate_kubernetes(obj)
        labels = meta.get("labels") or {}
        for label in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by", "helm.sh/chart"):
            if label not in labels:
                p.append(f"{ident(obj)}: label {label} missing")
        namespaced = obj.get("kind") not in {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "Namespace"}
        if namespaced and not meta.get("namespace"):
            p.append(f"{ident(obj)}: no metadata.namespace")
    collect(p)


def check_dashboard_file() -> None:
    """Valid JSON, a query on every panel. Whether each query returns data is
    proven against a real Prometheus (tests/tests/prometheus.rs)."""
    dash = json.loads((CHART / "files" / "dashboard.json").read_text())
    p: list[str] = []
    require(dash.get("panels"), "dashboard has no panels")
    for panel in dash["panels"]:
        targets = panel.get("targets") or []
        if not targets or not all((t.get("expr") or "").strip() for t in targets):
            p.append(f"panel {panel.get('title')!r} has a panel without a query")
    collect(p)


def check_dashboard_configmap(objects: list[dict[str, Any]]) -> None:
    maps = [
        o
        for o in objects
        if o["kind"] == "ConfigMap" and (o["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == "dashboard"
    ]
    for m in maps:
        data = m.get("data") or {}
        require(list(data) == ["saga-platform.json"], f"{ident(m)}: expected one key saga-platform.json, got {list(data)}")
        require(
            json.loads(data["saga-platform.json"]) == json.loads((CHART / "files" / "dashboard.json").read_text()),
            f"{ident(m)}: the dashboard JSON does not survive templating intact",
        )


# ---------------------------------------------------------------- CRD and examples


def check_crd_copy() -> None:
    require(CHART_CRD.exists(), f"{CHART_CRD.relative_to(ROOT)} is missing")
    if not CRD_SOURCE.exists():
        raise Failure(f"{CRD_SOURCE.relative_to(ROOT)} is missing (generated by `saga-operator crd`)")
    if CRD_SOURCE.read_bytes() != CHART_CRD.read_bytes():
        raise Failure(
            f"{CHART_CRD.relative_to(ROOT)} differs from {CRD_SOURCE.relative_to(ROOT)}; "
            f"fix: cp {CRD_SOURCE.relative_to(ROOT)} {CHART_CRD.relative_to(ROOT)}"
        )


def check_crd_generated() -> None:
    if not OPERATOR_BIN.exists():
        print(f"     ({OPERATOR_BIN.relative_to(ROOT)} not built: comparing only the files)")
        return
    out = subprocess.run([str(OPERATOR_BIN), "crd"], capture_output=True, text=True, timeout=60)
    require(out.returncode == 0, f"saga-operator crd exited {out.returncode}: {out.stderr.strip()}")
    p = []
    for path in (CRD_SOURCE, CHART_CRD):
        rel = path.relative_to(ROOT)
        if not path.exists():
            p.append(f"{rel} is missing")
        elif out.stdout.encode() != path.read_bytes():
            p.append(f"`saga-operator crd` output differs from {rel}")
    if p:
        p.append(
            f"fix: target/debug/saga-operator crd > {CRD_SOURCE.relative_to(ROOT)} && "
            f"cp {CRD_SOURCE.relative_to(ROOT)} {CHART_CRD.relative_to(ROOT)}"
        )
    collect(p)


def check_crd_valid(crd: dict[str, Any]) -> None:
    p = validate_kubernetes(crd)
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    if spec.get("group") != "saga.dev":
        p.append(f"group is {spec.get('group')}, not saga.dev")
    if spec.get("scope") != "Namespaced":
        p.append("scope is not Namespaced")
    if names.get("kind") != "SagaPlatform" or "sp" not in (names.get("shortNames") or []):
        p.append("kind SagaPlatform with short name sp expected")
    versions = {v["name"]: v for v in spec.get("versions") or []}
    v = versions.get("v1alpha1")
    if not v or not v.get("served") or not v.get("storage"):
        p.append("v1alpha1 must be served and the storage version")
    elif "status" not in (v.get("subresources") or {}):
        p.append("v1alpha1 has no status subresource")
    if v:
        try:
            jsonschema.Draft202012Validator.check_schema(strict_crd_schema(v["schema"]["openAPIV3Schema"]))
        except jsonschema.SchemaError as e:
            p.append(f"openAPIV3Schema is not a valid schema: {e.message}")
    collect(p)


def example_files() -> list[Path]:
    return [p for p in sorted(EXAMPLES.glob("*.yaml")) if not p.name.startswith("values-")]


def check_example(path: Path, crd: dict[str, Any] | None) -> None:
    docs = load_docs(path.read_text())
    require(docs, "no objects")
    p: list[str] = []
    for doc in docs:
        if doc.get("kind") == "SagaPlatform":
            if crd is None:
                p.append(f"{ident(doc)}: no CRD to validate it against")
            else:
                p += validate_custom_resource(doc, crd)
        else:
            p += validate_kubernetes(doc)
    collect(p)


def check_kind_config() -> None:
    """kind-config.yaml maps the node ports examples/values-kind.yaml opens to
    the host ports the README uses (8080: order API, 15672: RabbitMQ UI)."""
    kind = load_docs((ROOT / "kind-config.yaml").read_text())
    require(len(kind) == 1 and kind[0].get("kind") == "Cluster", "kind-config.yaml: expected one kind Cluster")
    mappings = {m["containerPort"]: m for n in kind[0].get("nodes") or [] for m in n.get("extraPortMappings") or []}
    values = yaml.safe_load((EXAMPLES / "values-kind.yaml").read_text())
    p = []
    for what, node_port, host_port in (
        ("order API (expose.order.nodePort)", values["expose"]["order"]["nodePort"], 8080),
        ("RabbitMQ UI (dev.rabbitmq.managementNodePort)", values["dev"]["rabbitmq"]["managementNodePort"], 15672),
    ):
        m = mappings.get(node_port)
        if m is None:
            p.append(f"kind-config.yaml does not map node port {node_port} of the {what}")
        elif m.get("hostPort") != host_port:
            p.append(f"kind-config.yaml maps node port {node_port} ({what}) to host port {m.get('hostPort')}, not {host_port}")
    collect(p)


def check_dockerfile() -> None:
    """hadolint reports nothing (warnings included), and the images are what the
    README promises: multi-stage; a `runtime` stage on a distroless :nonroot
    image with a numeric non-root USER; one stage per binary of
    scripts/images.sh on top of it, without commands (no shell), with an
    exec-form ENTRYPOINT; a build without --target refused."""
    dockerfile = ROOT / "Dockerfile"
    hadolint = Path(sys.executable).parent / "hadolint"
    out = subprocess.run(
        [str(hadolint), "--no-color", "--failure-threshold", "warning", str(dockerfile)], capture_output=True, text=True, timeout=120
    )
    p: list[str] = []
    if out.returncode != 0:
        p.append(f"hadolint: {out.stdout.strip()} {out.stderr.strip()}")
    lines = [l.strip() for l in dockerfile.read_text().splitlines() if l.strip() and not l.strip().startswith("#")]
    starts = [i for i, l in enumerate(lines) if l.upper().startswith("FROM ")]
    if len(starts) < 2:
        p.append(f"expected a multi-stage build, found {len(starts)} FROM")
    # name -> (base, lines of the stage)
    stages: dict[str, tuple[str, list[str]]] = {}
    for n, i in enumerate(starts):
        words = lines[i].split()
        name = words[3] if len(words) >= 4 and words[2].upper() == "AS" else f"#{n}"
        stages[name] = (words[1], lines[i + 1 : starts[n + 1] if n + 1 < len(starts) else len(lines)])
    args = {l.split()[1].split("=")[0]: l.split("=", 1)[1] if "=" in l else "" for l in lines if l.upper().startswith("ARG ")}
    base, runtime = stages.get("runtime", ("", []))
    if base.startswith("${"):
        base = args.get(base.strip("${}"), base)
    if "distroless" not in base or not base.endswith(":nonroot"):
        p.append(f"the runtime stage is {base or 'missing'}, expected a distroless :nonroot image")
    users = [l.split()[1] for l in runtime if l.upper().startswith("USER ")]
    if not users or not users[-1].split(":")[0].isdigit() or users[-1].split(":")[0] == "0":
        p.append(f"runtime stage USER {users[-1] if users else None}: expected a numeric non-root user (runAsNonRoot checks it)")
    images_sh = (ROOT / "scripts" / "images.sh").read_text()
    binaries = re.search(r"^binaries=\(([^)]*)\)", images_sh, re.M)
    for binary in binaries.group(1).split() if binaries else []:
        if binary not in stages:
            p.append(f"no stage {binary} (scripts/images.sh builds --target {binary})")
            continue
        from_, body = stages[binary]
        if from_ != "runtime":
            p.append(f"stage {binary} is FROM {from_}, expected FROM runtime")
        if any(l.upper().startswith(("RUN ", "SHELL ", "USER ")) for l in body):
            p.append(f"stage {binary} runs commands or changes USER: it has no shell and runs as 65532")
        entry = [l for l in body if l.upper().startswith("ENTRYPOINT ")]
        if not entry or not entry[-1].split(None, 1)[1].startswith("["):
            p.append(f"stage {binary}: ENTRYPOINT must be in exec form (no shell at run time)")
    last = list(stages)[-1] if stages else ""
    last_body = stages.get(last, ("", []))[1]
    if not any(l.upper().startswith("RUN ") for l in last_body) or not any("exit 1" in l for l in last_body):
        p.append(f"the last stage ({last}) does not refuse a build without --target")
    ignored = {l.strip().rstrip("/") for l in (ROOT / ".dockerignore").read_text().splitlines() if l.strip() and not l.startswith("#")}
    for needed in ("target", ".git", ".venv-chart"):
        if needed not in ignored:
            p.append(f".dockerignore does not exclude {needed}/")
    collect(p)


def secret_refs(sp: dict[str, Any]) -> list[tuple[str, str, str]]:
    spec = sp.get("spec") or {}
    refs = [
        ("broker.urlSecret", (spec.get("broker") or {}).get("urlSecret")),
        ("auth.jwtSecret", (spec.get("auth") or {}).get("jwtSecret")),
    ]
    refs += [(f"{s}.databaseUrlSecret", (spec.get(s) or {}).get("databaseUrlSecret")) for s in ("order", "payment", "inventory")]
    refs.append(("broker.tls.caSecret", ((spec.get("broker") or {}).get("tls") or {}).get("caSecret")))
    refs.append(("database.tls.caSecret", ((spec.get("database") or {}).get("tls") or {}).get("caSecret")))
    return [(where, ref["name"], ref["key"]) for where, ref in refs if ref]


def check_example_secrets(path: Path) -> None:
    """A SagaPlatform example finds every Secret key it names in examples/secrets.yaml."""
    secrets = {
        d["metadata"]["name"]: set(d.get("stringData") or {}) | set(d.get("data") or {})
        for d in load_docs((EXAMPLES / "secrets.yaml").read_text())
        if d.get("kind") == "Secret"
    }
    p = []
    for sp in (d for d in load_docs(path.read_text()) if d.get("kind") == "SagaPlatform"):
        for where, name, key in secret_refs(sp):
            if key not in secrets.get(name, set()):
                p.append(f"{ident(sp)} {where}: Secret {name} key {key} is not in examples/secrets.yaml")
    collect(p)


# ---------------------------------------------------------------- main


def write_rules(out: Path) -> int:
    """The rule groups of every case's PrometheusRule, as Prometheus rule
    files (what the Prometheus Operator hands to Prometheus), for promtool."""
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for case in discover_cases():
        objects, _ = render(case.values())
        rules = [o for o in objects if o["kind"] == "PrometheusRule"]
        if not rules:
            continue
        groups = [g for o in rules for g in o["spec"]["groups"]]
        path = out / (case.label.replace("/", "_") + ".rules.yml")
        path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
        print(f"{path}: {sum(len(g['rules']) for g in groups)} rules ({case.label})")
        written += 1
    if not written:
        print("no case renders a PrometheusRule", file=sys.stderr)
        return 1
    return 0



def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dump", metavar="DIR", help="also write each case's rendered manifests to DIR")
    parser.add_argument("--rules", metavar="DIR", help="only write each case's PrometheusRule groups to DIR/<case>.rules.yml")
    args = parser.parse_args()
    helm.disable_logging()
    if args.rules:
        return write_rules(Path(args.rules))
    c = Checker()
    crd: dict[str, Any] | None = None

    print(f"==> CRD ({CHART_CRD.relative_to(ROOT)})")
    c.check("CRD: chart copy equals crds/sagaplatform.yaml", check_crd_copy)
    c.check("CRD: equals `saga-operator crd` output (if built)", check_crd_generated)
    if CHART_CRD.exists():
        try:
            crd = load_crd(CHART_CRD)
        except Exception as e:  # reported by the next check
            print(f"     cannot read the CRD: {e}")
    c.check(
        "CRD: valid CustomResourceDefinition (Kubernetes 1.33, strict) with the contract's names",
        lambda: check_crd_valid(crd) if crd else (_ for _ in ()).throw(Failure("no CRD")),
    )

    c.check("RBAC: every Kubernetes API operator/src calls is granted, nothing else", check_rbac_covers_code)
    c.check("RBAC: the leader-election Lease name is the one operator/src/main.rs uses", check_lease_name)
    c.check("Grafana dashboard: valid JSON, a query on every panel", check_dashboard_file)

    print("==> examples/")
    c.check("Dockerfile: hadolint clean; multi-stage, distroless nonroot, numeric USER, a stage per image with an exec ENTRYPOINT; .dockerignore", check_dockerfile)
    c.check("kind-config.yaml maps the node ports of examples/values-kind.yaml to host 8080 and 15672", check_kind_config)
    cases = discover_cases()
    applied_with_values = {p for case in cases for p in case.apply_with}
    for path in example_files():
        c.check(f"example {path.relative_to(ROOT)} validates", lambda path=path: check_example(path, crd))
        if path not in applied_with_values and any(d.get("kind") == "SagaPlatform" for d in load_docs(path.read_text())):
            c.check(
                f"example {path.relative_to(ROOT)}: its Secrets are in examples/secrets.yaml", lambda path=path: check_example_secrets(path)
            )

    for case in cases:
        print(f"==> values: {case.label}")
        values = case.values()
        rendered: dict[str, Any] = {}

        def do_render(values: dict[str, Any] = values) -> None:
            objects, notes = render(values)
            require(notes.strip() != "", "NOTES.txt renders empty")
            rendered["objects"] = objects
            if args.dump:
                out = Path(args.dump) / (case.label.replace("/", "_") + ".yaml")
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(
                    yaml.safe_dump_all([{k: v for k, v in o.items() if not k.startswith("__")} for o in objects], sort_keys=False)
                    + "---\n# NOTES.txt\n"
                    + "".join("# " + l + "\n" for l in notes.splitlines())
                )

        c.check(f"[{case.label}] values schema + render", do_render)
        c.check(f"[{case.label}] helm lint --strict", lambda values=values: lint(values))
        objects = rendered.get("objects")
        if objects is None:
            continue
        kinds = sorted({o["kind"] for o in objects})
        print(f"     rendered {len(objects)} objects: {', '.join(kinds)}")
        c.check(f"[{case.label}] objects valid (Kubernetes {KUBE_VERSION} strict / CRD schema)", lambda: check_objects(objects, crd))
        c.check(f"[{case.label}] workloads hardened (probes, resources, securityContext, seccomp)", lambda: check_hardening(objects))
        c.check(f"[{case.label}] operator Deployment (probes, service account)", lambda: check_operator(objects, values))
        c.check(f"[{case.label}] operator environment is what saga-operator reads", lambda: check_operator_env(objects, values))
        c.check(f"[{case.label}] RBAC least privilege, no wildcards", lambda: check_rbac(objects, values))
        c.check(f"[{case.label}] Service selectors, ports and Secret references resolve", lambda: check_references(objects, crd, case))
        for extra in case.apply_with:

            def with_applied(extra: Path = extra) -> None:
                applied = load_docs(extra.read_text())
                for doc in applied:
                    doc.setdefault("metadata", {}).setdefault("namespace", NAMESPACE)
                check_references(objects + applied, crd, case)

            c.check(f"[{case.label}] + kubectl apply {extra.relative_to(ROOT)}: Secrets and Services resolve", with_applied)
        if any(o["kind"] == "ConfigMap" for o in objects):
            c.check(f"[{case.label}] Grafana dashboard ConfigMap", lambda: check_dashboard_configmap(objects))

    print("==> values the chart must refuse")
    for label, values, fragment in NEGATIVE_CASES:

        def refused(values: dict[str, Any] = values, fragment: str = fragment) -> None:
            try:
                render(values)
            except helm.HelmError as e:
                require(fragment.lower() in str(e).lower(), f"refused, but the message does not name {fragment!r}: {e}")
                return
            raise Failure("rendered without an error")

        c.check(f"refuses: {label}", refused)

    print("==> SagaPlatforms the CRD must refuse (schema and CEL rules, as on create)")
    for label, values, fragment in CRD_REFUSED_CASES:

        def crd_refuses(values: dict[str, Any] = values, fragment: str = fragment) -> None:
            require(crd is not None, "no CRD")
            objects, _ = render(values)
            sps = [o for o in objects if o["kind"] == "SagaPlatform"]
            require(len(sps) == 1, f"expected one SagaPlatform, rendered {len(sps)}")
            problems = validate_custom_resource(sps[0], crd)  # type: ignore[arg-type]
            require(problems, "accepted")
            require(any(fragment in p for p in problems), f"refused, but not with {fragment!r}: {problems}")

        c.check(f"CRD refuses: {label}", crd_refuses)

    print()
    for f in c.failures:
        print(f"FAILED: {f.splitlines()[0]}")
    print(f"chart checks: {c.passed} passed, {len(c.failures)} failed")
    return 1 if c.failures else 0


if __name__ == "__main__":
    sys.exit(main())
