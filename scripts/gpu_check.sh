#!/usr/bin/env bash
# What a GPU machine checks that CPU CI cannot (docs/gpu-pipeline.md "What a GPU machine checks").
# Prepared to fit in 8 minutes on one GPU; records its results under docs/measurements/.
#
#   bash scripts/gpu_check.sh            (from the repository root, in an environment with CUDA torch,
#                                        transformers and rftt-plugin's own dependencies; verl is not needed)
#
# 1. bf16 numerics of the tag read-out and the rftt_tree estimator against fp32
#    (scripts/gpu_numerics_check.py -> docs/measurements/gpu_numerics_<gpu>.json).
# 2. The eval stage on CUDA: `rftt eval --device auto` on the toy (a tiny model warmed up on
#    tagged arithmetic), chain and tree, must choose cuda/bfloat16; the same evaluation on the CPU in
#    fp32 is the reference: per-question agreement of the selected answers
#    (-> docs/measurements/gpu_check_<gpu>.md).
# Not covered (needs a full GPU run of examples/pipeline): vLLM as the rollout server on a GPU
# (CUDA-IPC weight sync, sleep mode), tensor parallelism, multi-GPU FSDP, 1.5B/7B memory and time.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT_DIR=${OUT_DIR:-docs/measurements}
WORK=${WORK:-$(mktemp -d /tmp/rftt-gpu-check.XXXX)}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT_DIR"
missing=$("$PY" - <<'PY'
import importlib.util
need = ["torch", "transformers", "math_verify", "pebble", "sympy", "tqdm", "httpx", "rich", "pandas"]
print(" ".join(n for n in need if importlib.util.find_spec(n) is None))
PY
)
[ -z "$missing" ] || { echo "[gpu_check] missing Python packages: $missing (carry them as wheels)" >&2; exit 2; }
gpu=$("$PY" -c 'import torch; assert torch.cuda.is_available(), "no CUDA device"; print(torch.cuda.get_device_name(0).split()[1].lower())')
echo "[gpu_check] GPU: $gpu; work dir $WORK" >&2

echo "[gpu_check] 1/2 bf16 numerics of the read-out and the estimator" >&2
timeout 240 "$PY" scripts/gpu_numerics_check.py --out "$OUT_DIR/gpu_numerics_$gpu.json"

echo "[gpu_check] 2/2 the eval stage on CUDA (--device auto) against CPU fp32" >&2
timeout 120 "$PY" - "$WORK" <<'PY'
import sys
from rftt_plugin.demo.pipeline_toy import write_inputs
from rftt_plugin.prepare import prepare_model
from rftt_plugin.demo.warmup import warmed_arithmetic_model
work = sys.argv[1]
paths = write_inputs(f"{work}/toy", n_phase1=1, n_rl=1, n_eval=64)
prepare_model(paths["base"], f"{work}/prepared", overwrite=True, progress=False, log=lambda _m: None)
warmed_arithmetic_model(f"{work}/prepared", f"{work}/warm", steps=300, log=None)
PY
common=(--model "$WORK/warm" --source "toy=$WORK/toy/eval.jsonl" --benchmarks toy --max-tokens 96 --quiet
        --step-max-tokens 24 --direct-answer-max-tokens 24 --max-response-tokens 160 --max-depth 8)
for mode in chain tree; do
  extra=(); [ "$mode" = tree ] && extra=(--iterations 1,4)
  timeout 150 "$PY" -m rftt_plugin.cli eval "${common[@]}" --mode "$mode" "${extra[@]}" --device auto \
    --out "$WORK/eval-gpu-$mode" 2>&1 | tee "$WORK/eval-gpu-$mode.log" | grep -iE "device|dtype" || true
  timeout 150 "$PY" -m rftt_plugin.cli eval "${common[@]}" --mode "$mode" "${extra[@]}" --device cpu --dtype float32 \
    --out "$WORK/eval-cpu-$mode" >/dev/null 2>&1
done
"$PY" - "$WORK" "$OUT_DIR/gpu_check_$gpu.md" "$gpu" <<'PY'
import json, sys, pathlib
work, out, gpu = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
def answers(d):
    rows = [json.loads(l) for l in (d / "records.jsonl").read_text().splitlines() if l.strip()]
    def pick(r):  # chain: the greedy answer; tree: the selected answer at the largest budget
        if r.get("mode") == "tree":
            r = r["budgets"][max(r["budgets"], key=int)]
        return r.get("pred"), r.get("acc")
    return {str(r["id"]): pick(r) for r in rows}
lines = [f"# GPU check on {gpu}", "", "Written by scripts/gpu_check.sh.", "",
         "| eval mode | questions | same selected answer GPU bf16 vs CPU fp32 | acc GPU | acc CPU | device chosen by --device auto |",
         "|---|---|---|---|---|---|"]
for mode in ("chain", "tree"):
    g, c = answers(work / f"eval-gpu-{mode}"), answers(work / f"eval-cpu-{mode}")
    same = sum(g[k][0] == c.get(k, (None,))[0] for k in g)
    acc = lambda a: sum(bool(v[1]) for v in a.values()) / max(len(a), 1)
    log = (work / f"eval-gpu-{mode}.log").read_text()
    chosen = next((l.strip() for l in log.splitlines() if "device" in l.lower()), "not printed")
    lines.append(f"| {mode} | {len(g)} | {same}/{len(g)} | {acc(g):.3f} | {acc(c):.3f} | {chosen[:80]} |")
lines += ["", "Not covered: vLLM as the rollout server on a GPU (CUDA-IPC weight sync, sleep mode), tensor",
          "parallelism, multi-GPU FSDP, the presets' memory and time at 1.5B/7B (a full run of examples/pipeline)."]
out.write_text("\n".join(lines) + "\n")
print(out.read_text())
PY
echo "[gpu_check] done: $OUT_DIR/gpu_numerics_$gpu.json and $OUT_DIR/gpu_check_$gpu.md" >&2
