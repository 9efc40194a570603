#!/usr/bin/env bash
# Build the action's image and run it the way the GitHub runner does (/github/* mounts, INPUT_*
# env, --workdir /github/workspace) against a real MLflow server on the host: a push that deploys
# the first model, then a pull_request that only decides. Needs root (rootful podman) and
# /work/shared/tools/container_smoke.sh. Prints build time and image size.
#
#   tests/container/smoke.sh            build, then run
#   SMOKE_SKIP_BUILD=1 tests/container/smoke.sh   reuse the image
# Environment: PYTHON (with mlflow[server]; default: python3), SMOKE_IMAGE (default deploygate-action:smoke),
# CONTAINER_SMOKE (default ../shared/tools/container_smoke.sh beside the checkout), SMOKE_LOCAL_WHEELS (default 1).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PYTHON=${PYTHON:-python3}
IMAGE=${SMOKE_IMAGE:-deploygate-action:smoke}
TOOL=${CONTAINER_SMOKE:-$ROOT/../shared/tools/container_smoke.sh}
[[ -x $TOOL ]] || TOOL=/work/shared/tools/container_smoke.sh
export SMOKE_LOCAL_WHEELS=${SMOKE_LOCAL_WHEELS:-1} SMOKE_NETWORK=host SMOKE_ACTION_DIR=$ROOT

WORK=$(mktemp -d /var/tmp/deploygate-smoke.XXXXXX)
MLFLOW_PID=
cleanup() {
  if [[ -n $MLFLOW_PID ]]; then kill -- "-$MLFLOW_PID" 2>/dev/null || kill "$MLFLOW_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "smoke: FAIL: $*" >&2; exit 1; }

if [[ ${SMOKE_SKIP_BUILD:-0} != 1 ]]; then
  start=$(date +%s)
  "$TOOL" build "$ROOT" "$IMAGE"
  echo "smoke: build took $(( $(date +%s) - start )) s"
fi
echo "smoke: image $IMAGE is $(podman image inspect --format '{{.Size}}' "$IMAGE" | awk '{ printf "%.0f MB", $1 / 1e6 }')"

# A real MLflow server on the host's loopback (the container shares the host network).
PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
setsid "$PYTHON" -m mlflow server --backend-store-uri "sqlite:///$WORK/mlflow.db" --artifacts-destination "$WORK/artifacts" \
  --host 127.0.0.1 --port "$PORT" --workers 1 >"$WORK/mlflow.log" 2>&1 &
MLFLOW_PID=$!
for _ in $(seq 120); do
  curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
  kill -0 "$MLFLOW_PID" 2>/dev/null || { tail -20 "$WORK/mlflow.log"; fail "mlflow server exited"; }
  sleep 1
done
curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null || fail "mlflow server did not start"

# The sample workspace: the seed's evaluation results and a (tiny) local model folder.
WS=$WORK/workspace
mkdir -p "$WS/results/evaluations" "$WS/model"
cat >"$WS/results/evaluations/metrics.json" <<'JSON'
{"bleu1": 0.52, "bleu2": 0.41, "bleu3": 0.33, "bleu4": 0.27, "rougeL_precision": 0.61, "rouge1_precision": 0.7}
JSON
echo '{"r": 8, "lora_alpha": 16}' >"$WS/model/adapter_config.json"
echo '{"local_path": "../model", "model_name": "tiny", "fine_tuned": true}' >"$WS/results/fine_tuned_model_location.json"

run() { # <event name> <event json> [KEY=VALUE ...] -> the tool's report in $WORK/last.txt, its exit code
  local rc=0 event=$1 payload=$2
  shift 2
  "$TOOL" run "$IMAGE" "$WS" "$payload" GITHUB_EVENT_NAME="$event" MLFLOW_TRACKING_URI="http://127.0.0.1:$PORT" \
    INPUT_REGISTRY-NAME=smoke-model INPUT_SKIP-HF-PUSH=true HF_TOKEN=hf_smoke_sentinel_token "$@" \
    >"$WORK/last.txt" 2>&1 || rc=$?
  cat "$WORK/last.txt"
  return "$rc"
}

echo '{"ref": "refs/heads/main"}' >"$WORK/push.json"
run push "$WORK/push.json" || fail "push run exited non-zero"
grep -q '"deployed": "true"' "$WORK/last.txt" || fail "push did not deploy"
grep -q '"model-version": "1"' "$WORK/last.txt" || fail "push did not register version 1"
grep -q '^::add-mask::hf_smoke_sentinel_token' "$WORK/last.txt" || fail "HF_TOKEN was not masked"
[[ -s $WS/results/deployment/deployment_info.json ]] || fail "no deployment_info.json in the workspace"

cat >"$WORK/pr.json" <<'JSON'
{"number": 1, "pull_request": {"number": 1, "head": {"repo": {"full_name": "local/smoke"}}, "base": {"repo": {"full_name": "local/smoke"}}}}
JSON
run pull_request "$WORK/pr.json" INPUT_PR-COMMENT=false || fail "pull_request run exited non-zero"
grep -q '"deployed": "false"' "$WORK/last.txt" || fail "a pull request deployed"
grep -q 'Would not deploy (verdict only)' "$WORK/last.txt" || fail "the PR summary has no verdict"
echo "smoke: OK"
