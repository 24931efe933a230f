#!/usr/bin/env bash
# examples/serve/prometheus: `promtool check rules` accepts the alerting rules and `promtool
# test rules` passes their unit tests (each alert firing and silent). Broken copies prove the
# checks bite: a rule whose expression does not parse, and rules whose thresholds were
# loosened, which the unit tests must then fail.
# promtool comes with Debian's `prometheus` package. Where it is missing, the package is
# downloaded (apt-get download) and only promtool is unpacked under Cargo's target directory:
# installing the package would start a Prometheus server on this machine, which CI needs not.
set -euo pipefail
cd "$(dirname "$0")/../.."
promtool=$(command -v promtool || true)
if [ -z "$promtool" ]; then
    target_dir=$(cargo metadata --format-version 1 --no-deps --locked |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
    dir=$target_dir/ci-promtool
    promtool=$dir/usr/bin/promtool
    if [ ! -x "$promtool" ]; then
        if ! command -v apt-get >/dev/null; then
            echo "promtool is missing and this is not Debian: install Prometheus's promtool" >&2
            exit 1
        fi
        download=$(mktemp -d)
        # apt-get download writes as the _apt user where it can: give it a directory it may write.
        chmod 0777 "$download"
        (cd "$download" && apt-get download prometheus) || {
            sudo=""
            [ "$(id -u)" -eq 0 ] || sudo="sudo"
            $sudo apt-get update
            (cd "$download" && apt-get download prometheus)
        }
        mkdir -p "$dir"
        dpkg-deb -x "$download"/prometheus_*.deb "$dir"
        rm -rf "$download"
    fi
fi
"$promtool" --version | head -1
rules=examples/serve/prometheus
"$promtool" check rules "$rules/timctl-alerts.yaml"
(cd "$rules" && "$promtool" test rules timctl-alerts.test.yaml)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
cp "$rules/timctl-alerts.test.yaml" "$tmp/"
sed 's/== 0 or up{job="timctl"} == 0/== 0 or up{job="timctl"} === 0/' "$rules/timctl-alerts.yaml" >"$tmp/timctl-alerts.yaml"
if "$promtool" check rules "$tmp/timctl-alerts.yaml" >/dev/null 2>&1; then
    echo "FAIL: promtool check rules accepted an expression that does not parse"
    fail=1
fi
# Each loosened threshold must make a unit test fail.
for change in 's/for: 5m/for: 15m/' 's/> 2 \* 6 \* 3600/> 4 * 6 * 3600/' 's/> 0.1$/> 2/' \
    's/> 10$/> 100/' 's/\[15m\])) > 0/[15m])) > 5/' 's/^          ) > 1$/          ) > 5/'; do
    sed "$change" "$rules/timctl-alerts.yaml" >"$tmp/timctl-alerts.yaml"
    if cmp -s "$rules/timctl-alerts.yaml" "$tmp/timctl-alerts.yaml"; then
        echo "FAIL: the change $change matched nothing in the rules"
        fail=1
    elif (cd "$tmp" && "$promtool" test rules timctl-alerts.test.yaml >/dev/null 2>&1); then
        echo "FAIL: the unit tests passed rules loosened by $change"
        fail=1
    fi
done
[ "$fail" -eq 0 ] && echo "promtool: rules valid, unit tests pass, broken copies rejected"
exit $fail
