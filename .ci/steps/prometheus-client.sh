#!/usr/bin/env bash
# Python's prometheus_client (PyPI, the Prometheus project's own client) parses serve's
# /metrics in tests/tests/serve_cli.rs (metrics_parse_…): a real OpenMetrics parser, not ours. Installs into
# the virtualenv under Cargo's target directory that the test looks for (ci-venv), so nothing
# outside the build changes; then runs that test.
set -euo pipefail
cd "$(dirname "$0")/../.."
target_dir=$(cargo metadata --format-version 1 --no-deps --locked |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
venv=$target_dir/ci-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c 'import prometheus_client' 2>/dev/null ||
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'prometheus-client==0.23.*'
cargo test --quiet --locked -p timctl-tests --test serve_cli metrics_parse
