#!/usr/bin/env bash
# examples/serve/kubernetes: every file is a plain Kubernetes object, valid against the
# Kubernetes API's schemas with `kubernetes-validate --strict` (PyPI, pinned; it ships the
# schemas, so it needs no cluster and no network), strict so that a misspelt field is an error
# rather than silently dropped by the API server. Broken copies prove it: a misspelt field and
# a value of the wrong type must fail. Installs into a virtualenv under Cargo's target
# directory (Cargo's own answer, never assumed), so nothing outside the build changes.
set -euo pipefail
cd "$(dirname "$0")/../.."
target_dir=$(cargo metadata --format-version 1 --no-deps --locked |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
venv=$target_dir/ci-venv-kubernetes
[ -x "$venv/bin/kubernetes-validate" ] || {
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'kubernetes-validate==1.37.0'
}
shopt -s nullglob
files=(examples/serve/kubernetes/*.yaml examples/serve/kubernetes/*.yml)
[ "${#files[@]}" -gt 0 ] || { echo "no file in examples/serve/kubernetes"; exit 1; }
"$venv/bin/kubernetes-validate" --strict "${files[@]}"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
deployment=examples/serve/kubernetes/deployment.yaml
for change in 's/terminationGracePeriodSeconds:/terminationGracePeriodSecond:/' 's/replicas: 2/replicas: two/'; do
    sed "$change" "$deployment" >"$tmp/deployment.yaml"
    if cmp -s "$deployment" "$tmp/deployment.yaml"; then
        echo "FAIL: the change $change matched nothing in $deployment"
        fail=1
    elif "$venv/bin/kubernetes-validate" --strict --quiet "$tmp/deployment.yaml" >/dev/null 2>&1; then
        echo "FAIL: kubernetes-validate accepted $deployment changed by $change"
        fail=1
    fi
done
[ "$fail" -eq 0 ] && echo "kubernetes-validate: ${#files[@]} files valid, broken copies rejected"
exit $fail
