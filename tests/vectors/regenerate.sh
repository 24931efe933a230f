#!/usr/bin/env bash
# Regenerates usersigs.json: UserSigs made by Tencent's own reference libraries (PyPI
# `tls-sig-api-v2` and npm `tls-sig-api-v2`) at a fixed time with a fixed, public test key, so
# that `tests/tests/usersig_verify.rs` can check timctl verifies what they make. CI does not
# run this; the output is checked in. Needs python3 (with venv) and node/npm, and network access
# to PyPI and npm.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet 'tls-sig-api-v2==1.1'
(cd "$work" && npm init -y >/dev/null && npm install --silent 'tls-sig-api-v2@1.0.2' >/dev/null)

# The fixed inputs. The key is a test value, not anyone's secret.
export VEC_SDKAPPID=1400000001 VEC_KEY='5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e'
export VEC_TIME=1700000000 VEC_EXPIRE=86400

python_out="$("$work/venv/bin/python" - <<'PY'
import os, time, json
# The library reads the clock itself; pin it so the output is reproducible.
time.time = lambda: float(os.environ["VEC_TIME"])
import TLSSigAPIv2
api = TLSSigAPIv2.TLSSigAPIv2(int(os.environ["VEC_SDKAPPID"]), os.environ["VEC_KEY"])
out = [{"identifier": i, "usersig": api.gen_sig(i, int(os.environ["VEC_EXPIRE"]))}
       for i in ["administrator", "alice", "user with space+plus"]]
print(json.dumps(out))
PY
)"

node_out="$(cd "$work" && node - <<'JS'
Date.now = () => Number(process.env.VEC_TIME) * 1000;
const TLSSigAPIv2 = require('tls-sig-api-v2');
const api = new TLSSigAPIv2.Api(Number(process.env.VEC_SDKAPPID), process.env.VEC_KEY);
const out = ["administrator", "alice", "user with space+plus"].map(
  (i) => ({ identifier: i, usersig: api.genUserSig(i, Number(process.env.VEC_EXPIRE)) }));
console.log(JSON.stringify(out));
JS
)"

cat > "$here/usersigs.json" <<JSON
{
  "comment": "Made by tests/vectors/regenerate.sh with the reference libraries; do not edit by hand.",
  "sdkappid": $VEC_SDKAPPID,
  "key": "$VEC_KEY",
  "time": $VEC_TIME,
  "expire": $VEC_EXPIRE,
  "python_tls_sig_api_v2_1_1": $python_out,
  "npm_tls_sig_api_v2_1_0_2": $node_out
}
JSON
echo "wrote $here/usersigs.json"
