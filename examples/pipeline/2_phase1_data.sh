#!/usr/bin/env bash
# Stage 2 (phase 1): serve the instruct model, run the prompt-driven functional MCTS over
# PHASE1_SOURCE and stitch correct/wrong paths into self-correcting SFT samples
# -> $WORK/phase1/train.parquet. `rftt gen-sft` journals every tree: a killed run resumes.
source "$(dirname "$0")/common.sh"
done_or_continue "$WORK/phase1/.done"
served=rftt-phase1
server_pid=
stop_server() {  # keeps the script's exit status (a reaped server would otherwise set it to 143)
  local rc=$?
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  exit "$rc"
}
trap stop_server EXIT
url=$PHASE1_BASE_URL
if [ -z "$url" ]; then
  url="http://127.0.0.1:$PHASE1_PORT/v1"
  mkdir -p "$WORK/phase1"
  case "$PHASE1_SERVER" in
    vllm) say "starting vllm serve $BASE_MODEL on port $PHASE1_PORT (log: $WORK/phase1/server.log)"
          vllm serve "$BASE_MODEL" --port "$PHASE1_PORT" --served-model-name "$served" $PHASE1_SERVER_ARGS \
            >"$WORK/phase1/server.log" 2>&1 &
          server_pid=$! ;;
    toy)  say "starting the scripted toy instruct model on port $PHASE1_PORT (CPU stand-in; rftt_plugin.demo.toy_instruct)"
          "$PYTHON" -m rftt_plugin.demo.toy_instruct --tokenizer "$BASE_MODEL" --port "$PHASE1_PORT" \
            --served-model-name "$served" >"$WORK/phase1/server.log" 2>&1 &
          server_pid=$! ;;
    none) die "PHASE1_SERVER=none needs PHASE1_BASE_URL (the /v1 URL of a running server)" ;;
    *)    die "PHASE1_SERVER=$PHASE1_SERVER: choose vllm, toy or none" ;;
  esac
else
  served=${PHASE1_MODEL_NAME:-$BASE_MODEL}
fi
say "waiting for $url (up to ${PHASE1_SERVER_WAIT_S} s)"
"$PYTHON" - "$url" "$PHASE1_SERVER_WAIT_S" "${server_pid:-0}" <<'PY'
import os, sys, time, urllib.request
url, wait_s, pid = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
deadline = time.monotonic() + wait_s
while True:
    try:
        urllib.request.urlopen(url.rstrip("/") + "/models", timeout=5).read()
        break
    except Exception as exc:  # noqa: BLE001
        if pid:
            try:
                os.kill(pid, 0)
            except OSError:
                sys.exit(f"the phase-1 server exited before answering ({exc}); see its log")
        if time.monotonic() > deadline:
            sys.exit(f"no answer from {url} after {wait_s:g} s: {exc}")
        time.sleep(2)
PY
"$RFTT" gen-sft --backend openai --base-url "$url" --model "$served" --tokenizer "$BASE_MODEL" \
  --source "$PHASE1_SOURCE" --limit "$PHASE1_LIMIT" --out "$WORK/phase1" $PHASE1_ARGS
rows=$("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["rows"])' "$WORK/phase1/report.json")
[ "$rows" -gt 0 ] || die "phase 1 produced no SFT sample (see $WORK/phase1/report.json): no question had a correct path"
say "$rows SFT samples in $WORK/phase1/train.parquet"
mark_done "$WORK/phase1/.done"
