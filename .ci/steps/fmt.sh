#!/usr/bin/env bash
# The checked-in manifests are in `timctl fmt`'s canonical layout: examples/ (the CI pipelines
# under examples/ci are not manifests). Each set is named as users name it.
set -euo pipefail
cd "$(dirname "$0")/../.."
target_dir=$(cargo metadata --format-version 1 --no-deps --locked |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
cargo build --quiet --locked -p timctl
"$target_dir/debug/timctl" fmt --check -f examples/timctl.yaml -f examples/acme
echo "fmt: the example manifests are formatted"
