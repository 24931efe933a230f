#!/usr/bin/env bash
# check-jsonschema (PyPI) validates every example against the generated schema, in both
# drafts, and must reject every bad manifest marked `jsonschema` in tests/bad-manifests/cases.tsv.
# Installs into a virtualenv under Cargo's target directory, so nothing outside the build
# changes. The target directory is Cargo's own answer (CARGO_TARGET_DIR, .cargo/config.toml or
# ./target), never assumed.
set -euo pipefail
cd "$(dirname "$0")/../.."
target_dir=$(cargo metadata --format-version 1 --no-deps --locked |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
venv=$target_dir/ci-venv
[ -x "$venv/bin/check-jsonschema" ] || {
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'check-jsonschema==0.33.*'
}
cargo build --quiet --locked -p timctl
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
timctl=$target_dir/debug/timctl
"$timctl" schema --draft 2020-12 --out "$tmp/2020-12.json"
"$timctl" schema --draft 07 --out "$tmp/07.json"
# examples/ci holds CI pipelines and examples/serve deployment files (systemd, Kubernetes,
# Prometheus), not manifests.
mapfile -t examples < <(find examples \( -path examples/ci -o -path examples/serve \) -prune -o \( -name '*.yaml' -o -name '*.yml' \) -print | sort)
for draft in 2020-12 07; do
    "$venv/bin/check-jsonschema" --schemafile "$tmp/$draft.json" "${examples[@]}"
done
fail=0
count=0
while IFS=$'\t' read -r case place clients _; do
    case "$case" in '#'*|'') continue ;; esac
    [[ ",$clients," == *",jsonschema"* ]] || continue
    file=tests/bad-manifests/${place%%:*}
    count=$((count + 1))
    for draft in 2020-12 07; do
        # Exit 1 is a rejection; 0 is acceptance, and anything else a crash of the tool.
        rc=0
        "$venv/bin/check-jsonschema" --schemafile "$tmp/$draft.json" "$file" >/dev/null 2>&1 || rc=$?
        if [ "$rc" -ne 1 ]; then
            echo "FAIL: check-jsonschema ($draft) on $file exited $rc, not 1"
            fail=1
        fi
    done
done < tests/bad-manifests/cases.tsv
# The messages must read well: a mistake inside a block is named as such, never answered with
# "is not of type 'null'" (a nullable block's best match).
for file in unknown-key-app.yaml unknown-key-defaults.yaml absent-is-a-list.yaml unknown-region.yaml; do
    out=$("$venv/bin/check-jsonschema" --schemafile "$tmp/2020-12.json" "tests/bad-manifests/$file" 2>&1 || true)
    if grep -q "of type 'null'" <<<"$out"; then
        echo "FAIL: check-jsonschema's message for $file mentions null:"
        echo "$out"
        fail=1
    fi
done
echo "check-jsonschema: ${#examples[@]} examples valid, $count bad manifests rejected in both drafts"
exit $fail
