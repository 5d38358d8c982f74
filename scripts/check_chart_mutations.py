"""Mutation test of scripts/check_chart.py: each assertion must be able to fail.

Copies the chart, examples, CRD and the sources the checks read into a
temporary directory, breaks one thing at a time (a probe removed, a wildcard
verb, a CRD drift, a wrong Secret key, ...), runs check_chart.py on the copy and
expects it to fail with a message naming the problem. Exit status 1 if any
mutation goes unnoticed or the unmutated copy does not pass.

    scripts/check-chart.sh --mutations [LABEL-SUBSTRING ...]

Not part of CI (about a minute); run it after changing the checks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OPERATOR_BIN = ROOT / "target" / "debug" / "saga-operator"

# (label, file, text, replacement, fragment the failure output must contain).
# A label ending in "(all)" replaces every occurrence, else the first.
C = "charts/saga-platform/"
M = [
    (
        "operator readiness probe removed",
        C + "templates/operator-deployment.yaml",
        "          readinessProbe:\n            httpGet:",
        "          xreadinessProbe:\n            httpGet:",
        "no readinessProbe",
    ),
    (
        "readOnlyRootFilesystem false",
        C + "templates/_helpers.tpl",
        "readOnlyRootFilesystem: true",
        "readOnlyRootFilesystem: false",
        "readOnlyRootFilesystem must be true",
    ),
    ("capabilities not dropped", C + "templates/_helpers.tpl", 'drop: ["ALL"]', 'drop: ["NET_RAW"]', "drop must contain ALL"),
    (
        "allowPrivilegeEscalation true",
        C + "templates/_helpers.tpl",
        "allowPrivilegeEscalation: false",
        "allowPrivilegeEscalation: true",
        "allowPrivilegeEscalation must be false",
    ),
    (
        "seccomp removed (all)",
        C + "templates/_helpers.tpl",
        "seccompProfile:\n  type: RuntimeDefault",
        "seccompProfile:\n  type: Unconfined",
        "seccompProfile.type must be RuntimeDefault",
    ),
    ("runAsNonRoot removed (all)", C + "templates/_helpers.tpl", "runAsNonRoot: true", "runAsNonRoot: false", "runAsNonRoot must be true"),
    ("wildcard verb", C + "templates/rbac.yaml", '["get", "list", "watch"]', '["*"]', "wildcard in verbs"),
    (
        "Secret watch granted without rbac.watchSecrets",
        C + "templates/rbac.yaml",
        '{{ else }}["get"]{{ end }}',
        '{{ else }}["get", "list", "watch"]{{ end }}',
        "grants ['list', 'watch']",
    ),
    (
        "WATCH_SECRETS not wired to rbac.watchSecrets",
        C + "templates/operator-deployment.yaml",
        "value: {{ .Values.rbac.watchSecrets | quote }}",
        'value: "true"',
        "WATCH_SECRETS env is",
    ),
    ("wildcard resource", C + "templates/rbac.yaml", 'resources: ["secrets"]', 'resources: ["*"]', "wildcard in resources"),
    (
        "extra verb delete on deployments",
        C + "templates/rbac.yaml",
        'verbs: ["list", "watch", "create", "patch"]',
        'verbs: ["list", "watch", "create", "patch", "delete"]',
        "grants ['delete']",
    ),
    (
        "missing status patch",
        C + "templates/rbac.yaml",
        'resources: ["sagaplatforms/status"]\n    verbs: ["patch"]',
        'resources: ["sagaplatforms/status"]\n    verbs: ["get"]',
        "lacks ['patch']",
    ),
    (
        "hostNetwork",
        C + "templates/operator-deployment.yaml",
        "      serviceAccountName:",
        "      hostNetwork: true\n      serviceAccountName:",
        "hostNetwork is set",
    ),
    ("latest image", C + "values.yaml", "image: docker.io/library/postgres:16", "image: docker.io/library/postgres", "pinned tag"),
    (
        "no memory limit",
        C + "values.yaml",
        "    limits:\n      memory: 256Mi\n  # -- The operator",
        "    limits: {}\n  # -- The operator",
        "limits",
    ),
    ("service targetPort wrong", C + "templates/operator-service.yaml", "targetPort: http", "targetPort: metrics", "targetPort 'metrics'"),
    (
        "unknown field in Deployment",
        C + "templates/operator-deployment.yaml",
        "  revisionHistoryLimit: 3",
        "  revisionHistoryLimit: 3\n  replica: 1",
        "Additional properties",
    ),
    ("wrong type in Service", C + "templates/operator-service.yaml", "  type: ClusterIP", "  type: 7", "is not of type"),
    ("chart CRD drift", C + "crds/sagaplatform.yaml", "shortNames:\n    - sp", "shortNames:\n    - spx", "differs from"),
    ("example SagaPlatform unknown field", "examples/sagaplatform-minimal.yaml", "  broker:\n", "  brokr: {}\n  broker:\n", "brokr"),
    (
        "example missing Secret key",
        "examples/secrets.yaml",
        "  jwt-secret: CHANGE-ME",
        "  jwt: CHANGE-ME",
        "key jwt-secret is not in examples/secrets.yaml",
    ),
    (
        "dev secret key renamed",
        C + "templates/dev-secrets.yaml",
        "  jwt-secret: {{ $jwt | b64enc | quote }}\n{{- end }}",
        "  jwt: {{ $jwt | b64enc | quote }}\n{{- end }}",
        "reads key 'jwt-secret'",
    ),
    (
        "platform spec invalid via values",
        "examples/values-production.yaml",
        "deletionPolicy: Retain",
        "deletionPolicy: Keep",
        "deletionPolicy",
    ),
    (
        "alert runbook anchor drifts",
        C + "templates/prometheusrule.yaml",
        '"%s#sagastuck"',
        '"%s#saga-stuck"',
        "a heading of docs/operations.md",
    ),
    (
        "schema allows unknown keys",
        C + "values.schema.json",
        '"title": "saga-platform chart values",\n  "type": "object",\n  "additionalProperties": false,',
        '"title": "saga-platform chart values",\n  "type": "object",\n  "additionalProperties": true,',
        "rendered without an error",
    ),
    ("lint: chart version not SemVer", C + "Chart.yaml", "version: 0.1.0", "version: one", "FAIL [defaults] helm lint"),
    (
        "lint: removed API version",
        C + "templates/operator-service.yaml",
        "apiVersion: v1\nkind: Service",
        "apiVersion: v1\nkind: Service\n---\napiVersion: policy/v1beta1\nkind: PodDisruptionBudget\nmetadata:\n  name: x\n  namespace: saga\nspec:\n  minAvailable: 1\n---\napiVersion: v1\nkind: Service",
        "FAIL [defaults] helm lint",
    ),
    (
        "operator readiness /healthz without LE",
        C + "templates/operator-deployment.yaml",
        '{{ $op.leaderElection.enabled | ternary "/healthz" "/readyz" }}',
        "/healthz",
        "readinessProbe must be GET /readyz",
    ),
    ("Recreate dropped", C + "templates/operator-deployment.yaml", "    type: Recreate", "    type: RollingUpdate", "must be Recreate"),
    (
        "NodePort selects other platform",
        C + "templates/expose-order.yaml",
        "app.kubernetes.io/instance: {{ .Values.platform.name }}",
        "app.kubernetes.io/instance: other",
        "selects pods of SagaPlatform 'other'",
    ),
    (
        "management URL typo",
        "examples/sagaplatform-kind.yaml",
        "saga-rabbitmq.saga.svc:15672",
        "saga-rabbitmq.saga.svc:5672",
        "does not reach the dev RabbitMQ",
    ),
    (
        "binding to missing SA",
        C + "templates/rbac.yaml",
        'subjects:\n  - kind: ServiceAccount\n    name: {{ include "saga.serviceAccountName" . }}',
        "subjects:\n  - kind: ServiceAccount\n    name: nobody",
        "is not rendered",
    ),
    (
        "duplicate label missing",
        C + "templates/_helpers.tpl",
        "app.kubernetes.io/managed-by: {{ .Release.Service }}\n",
        "",
        "label app.kubernetes.io/managed-by missing",
    ),
    (
        "operator env misspelled",
        C + "templates/operator-deployment.yaml",
        "- name: SCALE_INTERVAL",
        "- name: SCALE_INTERVALL",
        "which saga-operator does not read",
    ),
    (
        "Lease name mismatch",
        C + "templates/rbac.yaml",
        'resourceNames: ["saga-operator"]',
        'resourceNames: ["saga-operator-lock"]',
        "lacks ['get', 'update']",
    ),
    ("kind port mapping", "examples/values-kind.yaml", "nodePort: 30080", "nodePort: 30081", "does not map node port 30081"),
    (
        "operator calls a new API",
        "operator/src/controller.rs",
        "use crate::crd::SagaPlatform;",
        "use crate::crd::SagaPlatform;\nfn _pods(client: Client) -> Api<Pod> { Api::all(client) }",
        "Api<Pod> has no RBAC mapping",
    ),
    (
        "operator stops calling an API",
        "operator/src/reconcile/mod.rs",
        "Recorder::new(",
        "RecorderNew(",
        "which operator/src no longer calls",
    ),
    (
        "example breaks a CEL rule",
        "examples/sagaplatform.yaml",
        "minReplicas: 1\n      maxReplicas: 5",
        "minReplicas: 6\n      maxReplicas: 5",
        "minReplicas must be less than or equal",
    ),
    ("Dockerfile runs as root", "Dockerfile", "USER 65532:65532", "USER root", "expected a numeric non-root user"),
    ("Dockerfile lint warning", "Dockerfile", "WORKDIR /src", "WORKDIR src", "hadolint"),
    (
        "Dockerfile shell in runtime",
        "Dockerfile",
        "COPY --from=build /out/app /usr/local/bin/app",
        'COPY --from=build /out/app /usr/local/bin/app\nRUN ["/usr/local/bin/app", "--version"]',
        "has no shell",
    ),
    (
        "hostPath volume",
        C + "templates/dev-rabbitmq.yaml",
        "        - name: logs\n          emptyDir: {}",
        "        - name: logs\n          hostPath:\n            path: /var/log",
        "hostPath",
    ),
]


def copy_tree(dst: Path) -> None:
    for d in ("charts", "examples", "crds", "scripts", "services", "operator/src"):
        if (ROOT / d).exists():
            shutil.copytree(ROOT / d, dst / d, ignore=shutil.ignore_patterns("__pycache__", "target"))
    for f in ("kind-config.yaml", "Dockerfile", ".dockerignore", "operator/tests/refused-sagaplatforms.yaml", "docs/operations.md"):
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / f, dst / f)
    if OPERATOR_BIN.exists():
        (dst / "target" / "debug").mkdir(parents=True)
        os.symlink(OPERATOR_BIN, dst / "target" / "debug" / "saga-operator")


def run_check(dst: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(dst / "scripts" / "check_chart.py")], capture_output=True, text=True)


def main() -> int:
    only = sys.argv[1:]
    missed = 0
    with tempfile.TemporaryDirectory(prefix="check-chart-mutations-") as tmp:
        base = Path(tmp)
        clean = base / "clean"
        copy_tree(clean)
        r = run_check(clean)
        summary = [line for line in r.stdout.splitlines() if line.startswith("chart checks")]
        print(f"{'ok    ' if r.returncode == 0 else 'BROKEN'} unmutated copy passes {summary}")
        if r.returncode != 0:
            print(r.stdout[-3000:])
            return 1
        for i, (label, path, old, new, expect) in enumerate(M):
            if only and not any(o in label for o in only):
                continue
            work = base / f"m{i}"
            copy_tree(work)
            target = work / path
            text = target.read_text()
            if old not in text:
                print(f"STALE  {label}: the text to mutate is no longer in {path}")
                missed += 1
                continue
            target.write_text(text.replace(old, new, -1 if label.endswith("(all)") else 1))
            r = run_check(work)
            out = r.stdout + r.stderr
            caught = r.returncode != 0 and expect in out
            missed += not caught
            print(f"{'caught' if caught else 'MISSED'} {label}")
            if not caught:
                print("       expected a failure containing", repr(expect))
                print("\n".join("       " + line for line in out.splitlines() if line.startswith("FAIL")))
            shutil.rmtree(work)
    print(f"mutations: {missed} missed")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
