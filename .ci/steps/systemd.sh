#!/usr/bin/env bash
# examples/serve/systemd: `systemd-analyze verify` accepts every unit, and `systemd-analyze
# security --offline=true` keeps its exposure at most 1.5 (README quotes the score), so that a
# hardening option dropped by mistake fails CI. verify only warns, exit 0, on an unknown key or
# a value it cannot parse (the option is ignored, as systemd itself would), so any output
# counts as a failure here. verify also insists that ExecStart's binary exists: each unit is
# checked as a copy whose ExecStart names the timctl just built, the rest of it unchanged.
# Broken copies prove that both checks catch what they must. systemd-analyze comes with
# Debian's `systemd` package, installed when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v systemd-analyze >/dev/null; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends systemd
fi
target_dir=$(cargo metadata --format-version 1 --no-deps --locked |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
cargo build --quiet --locked -p timctl
timctl=$target_dir/debug/timctl
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# verify_unit FILE: 0 when verify exits 0 and prints nothing.
verify_unit() {
    local out rc=0
    out=$(systemd-analyze verify "$1" 2>&1) || rc=$?
    [ "$rc" -eq 0 ] && [ -z "$out" ] && return 0
    printf '%s\n' "$out"
    return 1
}
exposure_ok() {
    systemd-analyze security --offline=true --threshold=15 --no-pager "$1" >/dev/null 2>&1
}

shopt -s nullglob
units=(examples/serve/systemd/*.service)
[ "${#units[@]}" -gt 0 ] || { echo "no unit in examples/serve/systemd"; exit 1; }
fail=0
for unit in "${units[@]}"; do
    name=$(basename "$unit")
    grep -q '^ExecStart=/usr/local/bin/timctl ' "$unit" ||
        { echo "FAIL: $unit: ExecStart does not run /usr/local/bin/timctl"; fail=1; continue; }
    sed "s|^ExecStart=/usr/local/bin/timctl |ExecStart=$timctl |" "$unit" >"$tmp/$name"
    if verify_unit "$tmp/$name"; then echo "ok: verify $unit"; else echo "FAIL: verify $unit"; fail=1; fi
    systemd-analyze security --offline=true --no-pager "$tmp/$name" | tail -1
    if exposure_ok "$tmp/$name"; then echo "ok: exposure of $unit at most 1.5"; else echo "FAIL: exposure of $unit over 1.5"; fail=1; fi

    # The broken copies: a misspelt option, a binary that is not there, hardening removed.
    mkdir -p "$tmp/broken"
    sed 's/^NoNewPrivileges=yes/NoNewPrivilege=yes/' "$tmp/$name" >"$tmp/broken/$name"
    if verify_unit "$tmp/broken/$name" >/dev/null; then echo "FAIL: verify accepted a misspelt option"; fail=1; fi
    sed "s|^ExecStart=$timctl |ExecStart=/nonexistent/timctl |" "$tmp/$name" >"$tmp/broken/$name"
    if verify_unit "$tmp/broken/$name" >/dev/null; then echo "FAIL: verify accepted a missing binary"; fail=1; fi
    sed '/^ProtectSystem=/d; /^NoNewPrivileges=/d; /^CapabilityBoundingSet=$/d; /^DynamicUser=/d' \
        "$tmp/$name" >"$tmp/broken/$name"
    if exposure_ok "$tmp/broken/$name"; then echo "FAIL: the exposure check accepted a unit without hardening"; fail=1; fi
done
[ "$fail" -eq 0 ] && echo "systemd: ${#units[@]} unit(s) verified; broken copies rejected"
exit $fail
