"""Inputs for running ``examples/pipeline`` offline on a CPU: a tiny base model and toy questions.

``python -m rftt_plugin.demo.pipeline_toy --out DIR`` writes

* ``DIR/base/``: a tiny random Qwen2-style instruct model with a ChatML template
  (:mod:`rftt_plugin.tiny_model`; digits split so arithmetic is learnable);
* ``DIR/phase1.jsonl``, ``DIR/rl.jsonl``, ``DIR/eval.jsonl``: disjoint toy sum questions
  (:mod:`rftt_plugin.demo.synthetic`) as ``{"id", "problem", "answer"}`` rows (the MATH-500 fields), which any
  ``--source`` file of ``rftt gen-sft`` / ``rftt data rl`` / ``rftt eval`` reads.

The CPU preset (``examples/pipeline/presets/cpu-tiny.env``) points the pipeline's variables at
these files, so every stage runs for real with no download. Phase 1 on this toy is answered by
the scripted stand-in :mod:`rftt_plugin.demo.toy_instruct` (a tiny random model never answers).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def write_inputs(out: str | Path, n_phase1: int = 24, n_rl: int = 64, n_eval: int = 16, seed: int = 0,
                 hidden_size: int = 64) -> dict[str, str]:
    from rftt_plugin.demo.synthetic import split_sum_problems
    from rftt_plugin.tiny_model import build_tiny_model

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    build_tiny_model(out / "base", seed=seed, hidden_size=hidden_size, split_digits=True)
    first, rest = split_sum_problems(n_phase1, n_rl + n_eval, seed=seed)
    parts = {"phase1": first, "rl": rest[:n_rl], "eval": rest[n_rl:]}
    paths = {"base": str(out / "base")}
    for name, problems in parts.items():
        path = out / f"{name}.jsonl"
        with path.open("w") as fh:
            for p in problems:
                fh.write(json.dumps({"id": p.id, "problem": p.question, "answer": str(p.answer)}) + "\n")
        paths[name] = str(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rftt_plugin.demo.pipeline_toy",
                                     description="Write a tiny base model and toy question files for the CPU pipeline.")
    parser.add_argument("--out", required=True)
    parser.add_argument("--phase1", type=int, default=24, help="questions for phase 1 (gen-sft)")
    parser.add_argument("--rl", type=int, default=64, help="questions for RL (train + test)")
    parser.add_argument("--eval", type=int, default=16, help="held-out questions for eval")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    paths = write_inputs(args.out, args.phase1, args.rl, args.eval, args.seed)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
