#!/usr/bin/env bash
# The chart's alerts through promtool (Prometheus built from source by
# scripts/prometheus-build.sh): renders the chart for every values case that
# enables prometheusRule (scripts/check-chart.sh --rules), runs
# `promtool check rules` on each rendered rule file, then `promtool test rules`
# on prometheus/alerts.test.yml against the rules rendered with
# charts/saga-platform/ci/prometheus-rule-values.yaml (the default thresholds).
set -euo pipefail
cd "$(dirname "$0")/.."

promtool=prometheus/bin/promtool
[[ -x $promtool ]] || {
    echo "error: $promtool is missing: run scripts/prometheus-build.sh" >&2
    exit 1
}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

scripts/check-chart.sh --rules "$out"
for rules in "$out"/*.rules.yml; do
    "$promtool" check rules "$rules"
done

tested="$out/charts_saga-platform_ci_prometheus-rule-values.yaml.rules.yml"
[[ -f $tested ]] || {
    echo "error: no rules rendered from charts/saga-platform/ci/prometheus-rule-values.yaml (have: $(ls "$out"))" >&2
    exit 1
}
cp "$tested" "$out/saga-platform.rules.yml"
cp prometheus/alerts.test.yml "$out/"
"$promtool" test rules "$out/alerts.test.yml"
