#!/usr/bin/env bash
# yaml-language-server, driven headless through its language service: the examples get no
# diagnostic, each bad manifest gets one on its line. Needs node and npm; installs the pinned
# packages from package-lock.json into .ci/yaml-ls/node_modules.
set -euo pipefail
cd "$(dirname "$0")/../.."
npm ci --prefix .ci/yaml-ls --no-audit --no-fund --loglevel=error
node .ci/yaml-ls/check.mjs "$PWD"
