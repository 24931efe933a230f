#!/usr/bin/env bash
# The PostgreSQL state's tests start throwaway clusters of their own (initdb in a temporary
# directory, a free loopback port; as root, through the `postgres` system user), so they need
# PostgreSQL's server binaries: install Debian's `postgresql` where they are missing. The
# tests never use the system cluster the package may create.
set -euo pipefail
if compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null && id postgres >/dev/null 2>&1; then
    ls -d /usr/lib/postgresql/*/bin/initdb
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "PostgreSQL's server (initdb, pg_ctl) is missing and this is not Debian:" \
        "install PostgreSQL 13 or newer under /usr/lib/postgresql/<version>/bin" >&2
    exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends postgresql
ls -d /usr/lib/postgresql/*/bin/initdb
