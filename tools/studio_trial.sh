#!/usr/bin/env bash
# docs/farm.md's steps, one by one, on one machine: a head and a second node, each with a CPU
# stand-in for one GPU (the resource "conjure_gpu"), the front with two artists' tokens, a job
# submitted from the command line, the farm's status; everything stopped at the end.
# tests/test_farm.py runs it.   Usage: tools/studio_trial.sh [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RAY="$(dirname "$PY")/ray"
WORK=$(realpath "${1:-$(mktemp -d)}")
RAY_PORT=${RAY_PORT:-6391}
HTTP_PORT=${HTTP_PORT:-8766}
STANDIN=(--num-cpus 1 --resources '{"conjure_gpu": 1}')  # on a GPU node: nothing (Ray counts the GPUs)
FRONT=""
stop() {
  [ -n "$FRONT" ] && kill -TERM "$FRONT" 2>/dev/null && wait "$FRONT" || true
  "$RAY" stop --force >/dev/null 2>&1 || true
}
trap stop EXIT
mkdir -p "$WORK"

echo "== 0. the cluster's token (the head's \`ray get-auth-token --generate\`, here kept out of ~/.ray)"
export RAY_AUTH_MODE=token
RAY_AUTH_TOKEN=$("$PY" -c 'import secrets; print(secrets.token_hex(32))')
export RAY_AUTH_TOKEN
echo "== 1. the head node"
"$RAY" start --head --port "$RAY_PORT" "${STANDIN[@]}" --include-dashboard=false --disable-usage-stats
echo "== 2. a GPU node joins"
"$RAY" start --address "127.0.0.1:$RAY_PORT" "${STANDIN[@]}" --disable-usage-stats
echo "== 3. one token per artist"
cat > "$WORK/users.json" <<'JSON'
{"alice": "alice-7f3e9c1d2b4a6e8f", "bob": "bob-0a1b2c3d4e5f6a7b8c"}
JSON
echo "== 4. the front"
HF_HUB_OFFLINE=1 "$PY" -m backend serve --http "127.0.0.1:$HTTP_PORT" --users "$WORK/users.json" \
  --ray "127.0.0.1:$RAY_PORT" --worker-resource conjure_gpu --jobs-dir "$WORK/jobs" > "$WORK/front.log" 2>&1 &
FRONT=$!
for _ in $(seq 1 120); do grep -q "serving on" "$WORK/front.log" && break; sleep 0.5; done
grep "serving on" "$WORK/front.log"
echo "== 5. an artist's job (here from the command line; the add-on sends the same)"
HF_HUB_OFFLINE=1 "$PY" -m backend.eval.targets --out "$WORK/job" --targets ring > /dev/null
"$PY" - "$WORK/job/ring_job.json" <<'PYTHON'
import json, sys
job = json.load(open(sys.argv[1]))
job["overrides"] = {**job.get("overrides", {}), "phase1.iterations": 12, "phase2.iterations": 10,
                    "phase3.iterations": 10, "phase2.tet_res": 24, "export.texture_size": 128}
json.dump(job, open(sys.argv[1], "w"))
PYTHON
CONJURE_TOKEN=alice-7f3e9c1d2b4a6e8f "$PY" -m backend submit "$WORK/job/ring_job.json" \
  --url "http://127.0.0.1:$HTTP_PORT" --out "$WORK/result"
echo "== 6. the farm's state"
"$PY" -m backend status --url "http://127.0.0.1:$HTTP_PORT" --token bob-0a1b2c3d4e5f6a7b8c | tee "$WORK/status.json"
echo "studio trial: $WORK/result/result.glb"
