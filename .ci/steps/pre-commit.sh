#!/usr/bin/env bash
# The timctl-validate and timctl-fmt hooks of .pre-commit-hooks.yaml, run by the real pre-commit (PyPI, pinned)
# on a throwaway repository of manifests: a good set passes, a bad one fails naming file:line.
# Twice: with `pre-commit try-repo` (the hook's defaults: timctl.yaml), and from a
# .pre-commit-config.yaml with args naming a directory whose set only validates whole.
# Installs into a virtualenv under Cargo's target directory (Cargo's own answer, never assumed),
# so nothing outside the build changes.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo_root=$PWD
target_dir=$(cargo metadata --format-version 1 --no-deps --locked |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
venv=$target_dir/ci-venv-pre-commit
[ -x "$venv/bin/pre-commit" ] || {
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'pre-commit==4.7.0'
}
cargo build --quiet --locked -p timctl
export PATH="$target_dir/debug:$PATH"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export PRE_COMMIT_HOME="$tmp/pre-commit-home"
export NO_COLOR=1
git_() { git -c user.name=ci -c user.email=ci@example.invalid -c init.defaultBranch=main "$@"; }

fail=0
expect() { # expect CODE PATTERN DESCRIPTION -- COMMAND...
    local code=$1 pattern=$2 what=$3
    shift 4
    local rc=0
    "$@" >"$tmp/out" 2>&1 || rc=$?
    # miette wraps long messages at 80 columns, continuing them on lines that start with
    # `  | `: match against the text with those breaks undone.
    perl -0pe 's/\n\s*\|\s*//g' "$tmp/out" >"$tmp/flat"
    if [ "$rc" -ne "$code" ] || ! grep -q -- "$pattern" "$tmp/flat"; then
        echo "FAIL: $what: exit $rc (wanted $code), output:"
        cat "$tmp/out"
        fail=1
    else
        echo "ok: $what"
    fi
}

app='version: 1
app:
  sdkappid: 1400000001
  region: singapore
  admin: administrator'

# 1. try-repo, hook defaults: ./timctl.yaml.
work="$tmp/single"
mkdir -p "$work"
printf '%s\nabsent:\n  alice:\n    - user: bob\n' "$app" >"$work/timctl.yaml"
git_ -C "$work" init -q && git_ -C "$work" add -A && git_ -C "$work" commit -qm manifests
expect 0 "Passed" "try-repo: a good manifest passes" -- \
    bash -c "cd '$work' && '$venv/bin/pre-commit' try-repo '$repo_root' timctl-validate --all-files"
printf '%s\nabsent:\n  alice:\n    - usr: bob\n' "$app" >"$work/timctl.yaml"
git_ -C "$work" commit -qam "a typo"
expect 1 "timctl.yaml:8:7" "try-repo: a bad manifest fails naming file:line" -- \
    bash -c "cd '$work' && '$venv/bin/pre-commit' try-repo '$repo_root' timctl-validate --all-files"

# 2. From a config with args: the app block in one file, entries in another. Validated file by
# file, team.yaml would fail (no app block); the duplicate across files is caught only whole.
hooks="$tmp/hooks"
mkdir -p "$hooks"
cp .pre-commit-hooks.yaml "$hooks/"
cp -r hooks "$hooks/"
git_ -C "$hooks" init -q && git_ -C "$hooks" add -A && git_ -C "$hooks" commit -qm hooks
rev=$(git -C "$hooks" rev-parse HEAD)
work="$tmp/set"
mkdir -p "$work/manifests"
printf '%s\n' "$app" >"$work/manifests/app.yaml"
printf 'version: 1\nabsent:\n  alice:\n    - user: bob\n' >"$work/manifests/team.yaml"
cat >"$work/.pre-commit-config.yaml" <<YAML
repos:
  - repo: $hooks
    rev: $rev
    hooks:
      - id: timctl-validate
        args: [-f, manifests]
YAML
git_ -C "$work" init -q && git_ -C "$work" add -A && git_ -C "$work" commit -qm manifests
run_hook() { (cd "$work" && "$venv/bin/pre-commit" run timctl-validate "$@"); }
expect 0 "Passed" "config: a set split across files passes" -- run_hook --all-files
# Only the entries file changed: the hook still validates the whole set, app block included.
printf 'version: 1\nabsent:\n  alice:\n    - user: bob\n    - user: carol\n' >"$work/manifests/team.yaml"
expect 0 "Passed" "config: a change to one file validates the whole set" -- run_hook --files manifests/team.yaml
printf 'version: 1\nabsent:\n  alice:\n    - user: bob\n' >"$work/manifests/more.yaml"
git_ -C "$work" add -A
expect 1 "manifests/more.yaml:4:" "config: a duplicate across files fails naming file:line" -- run_hook --files manifests/more.yaml

# 3. timctl-fmt: an unformatted manifest fails the commit and is rewritten; then it passes.
work="$tmp/fmt"
mkdir -p "$work"
printf 'absent:\n  zed:\n    - user: "bob"   # why\n  alice:\n    - user: carol\n%s\n' "$app" >"$work/timctl.yaml"
git_ -C "$work" init -q && git_ -C "$work" add -A && git_ -C "$work" commit -qm manifests
expect 1 "files were modified by this hook" "fmt: an unformatted manifest fails and is rewritten" -- \
    bash -c "cd '$work' && '$venv/bin/pre-commit' try-repo '$repo_root' timctl-fmt --all-files"
if ! head -1 "$work/timctl.yaml" | grep -q '^version: 1$'; then
    echo "FAIL: fmt: the manifest was not rewritten:"
    cat "$work/timctl.yaml"
    fail=1
fi
git_ -C "$work" commit -qam formatted
expect 0 "Passed" "fmt: a formatted manifest passes" -- \
    bash -c "cd '$work' && '$venv/bin/pre-commit' try-repo '$repo_root' timctl-fmt --all-files"

# 4. timctl not installed: the hook says how to install it, instead of pre-commit's bare
# "Executable `timctl` not found".
work="$tmp/missing"
mkdir -p "$work"
printf '%s\nabsent:\n  alice:\n    - user: bob\n' "$app" >"$work/timctl.yaml"
git_ -C "$work" init -q && git_ -C "$work" add -A && git_ -C "$work" commit -qm manifests
if PATH=/usr/bin:/bin command -v timctl >/dev/null; then
    echo "FAIL: a timctl in /usr/bin or /bin hides the missing-timctl case"
    fail=1
fi
expect 1 "cargo install --locked --path '.*/reconciler'" "missing: the hook says how to install timctl" -- \
    env PATH=/usr/bin:/bin bash -c "cd '$work' && '$venv/bin/pre-commit' try-repo '$repo_root' timctl-validate --all-files"
exit $fail
