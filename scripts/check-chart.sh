#!/usr/bin/env bash
# Renders, lints and validates the Helm chart (charts/saga-platform), the CRD
# and the examples, offline, with the real Helm library (PyPI helm-python-sdk)
# and the Kubernetes 1.33 JSON schemas (PyPI kubernetes-validate). The checks
# themselves are in scripts/check_chart.py. `scripts/check-chart.sh --mutations`
# runs scripts/check_chart_mutations.py instead: it breaks the chart one way at
# a time and expects each break to be caught.
#
# The Python packages go into a virtualenv inside the clone (.venv-chart/,
# git-ignored; pip's cache is not used), created on first run and re-created
# when scripts/chart-requirements.txt changes.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-chart
requirements=scripts/chart-requirements.txt
stamp=$venv/requirements.installed

if ! cmp -s "$requirements" "$stamp" 2>/dev/null; then
    echo "Creating $venv (pinned packages from $requirements)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/pip" install --quiet --no-cache-dir --require-virtualenv \
        -r "$requirements"
    cp "$requirements" "$stamp"
fi

# Keep everything inside the clone: Helm's cache/config/data dirs (the library
# may create them) and no __pycache__ next to the scripts.
export HELM_CACHE_HOME=$PWD/$venv/helm/cache HELM_CONFIG_HOME=$PWD/$venv/helm/config HELM_DATA_HOME=$PWD/$venv/helm/data
export PYTHONDONTWRITEBYTECODE=1

if [[ ${1:-} == --mutations ]]; then
    shift
    exec "$venv/bin/python" scripts/check_chart_mutations.py "$@"
fi
exec "$venv/bin/python" scripts/check_chart.py "$@"
