#!/usr/bin/env bash
# The GitHub example's apply job writes its summary with jq (GitHub's runners have it), and
# tests/tests/ci_examples.rs runs that step for real: install Debian's `jq` where it is missing.
set -euo pipefail
if command -v jq >/dev/null; then
    jq --version
    exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends jq
jq --version
