"""Rollout cost of RFTT tree search against verl's stock GRPO rollout, on one engine in one run.

    python bench/rollout.py                       # vLLM (the vLLM lane's .venv-vllm) and hfcpu
    python bench/rollout.py --engine hfcpu        # the default lane: no vLLM needed
    python bench/rollout.py --model ckpt/prepared --prompts 8 --n 16

Per engine, on the same model, prompts and token budgets, it runs one rollout step of each:

* ``grpo``: what verl's stock ``single_turn_agent`` sends for ``rollout.n`` samples: one request
  per sample (``max_tokens`` = the response budget, temperature 1, sampled log-probs);
* ``rftt_tree``: the ``rftt_tree`` agent loop's search (``FunctionalMCTS`` with ``iterations =
  rollout.n`` over ``VerlServerBackend``, i.e. the exact requests the agent loop sends through
  ``server_manager.generate``), one tree per prompt, all trees concurrently.

Engines answer ``generate(request_id, prompt_ids, sampling_params)`` with verl 0.9.1's server
semantics: vLLM is an in-process ``AsyncLLM`` with verl's request conversion (``logprobs`` ->
sampled only, ``prompt_logprobs`` through verl's ``extract_prompt_logprobs``, ``logprob_token_ids``
passed on and its values read back as the plugin's server subclass does) and verl's OOV mask; hfcpu is the plugin's ``HFCPUServer`` (no prefix cache). The prefix cache is reset before
each phase. Reported per phase: wall time (median of ``--repeats`` round-robin rounds: the machine
may be shared), generate calls (and how many were tag read-outs), generated tokens, prompt tokens,
prompt tokens prefilled without the cache (vLLM's own per-request ``num_cached_tokens``), and the
share of prompt tokens served from the cache; then, per call kind, where the uncached prompt
tokens come from (first touch, KV block granularity, cache reads skipped: ``Recorder.breakdown``)
and where wall time goes (latency per kind, sequential round trips per tree). The last line is::

    rollout: engine=vllm grpo_s=... rftt_s=... ratio=... cached_prompt_share=... tokens_per_leaf_token=... equal_work_ratio=...

``--block-size`` (default 16) sets vLLM's KV block size: vLLM caches whole blocks only, and its
CPU default (128) is longer than most toy contexts, which would then never hit the cache.
The default model is the tiny head_dim-32 Qwen2 model prepared with the functional tokens and
warmed on tagged arithmetic (``--warm-steps``, ~1 min on an idle 2-core machine), so steps end on
closing tags and trees branch; a cost benchmark, not a quality one. Each engine runs the phases
``grpo``, ``rftt (before)`` (``--readout-before``, default ``top_logprobs``: issue 14's cached
top-k read-out, two requests per expansion), ``rftt (after)`` (``--readout-after``, default
``token_ids``: one request per expansion through vLLM's ``logprob_token_ids``, issue 28) and
``chains``; the trees of the two rftt phases must be identical (on hfcpu; vLLM's numerics follow
batch composition, so a control runs the 'before' read-out twice). Phases run one after another,
so the two read-outs never share an engine step (they must not: see
rftt_plugin/integration/readout_token_ids.py).

Equal work (issue 28): ``chains`` sends, for every distinct leaf of the ``rftt (after)`` trees
(the search may emit a leaf again; a repeat adds no token), one independent request from the same
prompt that generates exactly the leaf's path length (``ignore_eos``) at the search's step
sampling -- trees and chains then produce the same leaf tokens. Reported per leaf token: generated tokens (the sharing the tree buys; 1 for chains),
generated + uncached prompt tokens, wall per 1,000 leaf tokens, round trips per tree, and the
cached share per call kind. The last line then also carries ``tokens_per_leaf_token=`` (the
tree's generated tokens per leaf token) and ``equal_work_ratio=`` (tree wall / chains wall).

``--prompt-pad N`` puts about N filler ids before each question (a long-context check);
``--warm-pad N`` also warms the default model on such prompts, so the long-context trees branch.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")  # verl's OOV mask via collective_rpc
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

QUESTIONS = [
    "What is 12 plus 30?", "Compute 7 * 6 and check it.", "Subtract 9 from 30.", "What is 17 + 25?",
    "Divide 84 by 7.", "What is 3 times 14?", "Add 19 and 23.", "What is 100 minus 58?",
    "Compute 6 * 7 - 0.", "What is 21 + 21?", "Halve 84.", "What is 50 - 8?",
]


# ---------------------------------------------------------------------------------------------
# What each generate call cost
# ---------------------------------------------------------------------------------------------

TOP_LOGPROBS_KEY = "rftt_top_logprobs"
TOKEN_IDS_KEY = "logprob_token_ids"  # vLLM's field (the one-request read-out, issue 28)


@dataclasses.dataclass
class Call:
    kind: str            # "grpo", "step", "readout k=20", "readout k=0"
    prompt_tokens: int
    cached_tokens: int
    generated: int
    tree: str = ""       # the sticky request id (one per tree)
    t0: float = 0.0      # submitted / answered (perf_counter)
    t1: float = 0.0
    computed: tuple = ()  # ids whose KV this call computed: the prompt + all generated ids but the last


class Recorder:
    def __init__(self) -> None:
        self.calls: list[Call] = []

    @staticmethod
    def kind(params: dict) -> str:
        if params.get(TOKEN_IDS_KEY):
            return "readout ids (cached)"
        if params.get("ignore_eos"):
            return "chain"
        if params.get(TOP_LOGPROBS_KEY):
            return "readout allowed (cached)" if params.get("allowed_token_ids") else "readout top-k (cached)"
        if params.get("prompt_logprobs") is not None:
            return f"readout k={params['prompt_logprobs']}"
        return "step" if params.get("stop_token_ids") else "grpo"

    def breakdown(self, block: int) -> dict:
        """Where the uncached prompt tokens come from, per call kind (vLLM; ``computed`` needed).

        For each call, in submission order, against the ids whose KV earlier calls computed or are
        computing (the prompts of calls sent before it -- vLLM caches a block once it is scheduled,
        so concurrent requests share it --, and the generated ids but the last of calls answered
        before it was sent):
        ``novel`` = prompt ids past the longest such prefix (first touch: no cache can serve them);
        ``block`` = what a prefix cache of ``block``-token blocks then still recomputes (the partial
        last block, and vLLM's rule that the last prompt id is always computed);
        ``other`` = the rest of what vLLM reported uncached (reads skipped -- ``prompt_logprobs`` --,
        evictions, or negative: hits on KV of calls still in flight).
        """
        events = sorted([(c.t0, 1, i) for i, c in enumerate(self.calls)] + [(c.t1, 0, i) for i, c in enumerate(self.calls)])
        known: set[int] = set()
        out: dict[str, dict[str, int]] = {}
        first_of_tree: set[str] = set()
        def learn(ids) -> None:
            h = 0
            for t in ids:
                h = hash((h, t))
                known.add(h)

        for _t, is_submit, i in events:
            c = self.calls[i]
            if not is_submit:
                learn(c.computed)
                continue
            prompt = c.computed[:c.prompt_tokens]
            h, lcp = 0, 0
            for t in prompt:
                h = hash((h, t))
                if h not in known:
                    break
                lcp += 1
            learn(prompt)
            ideal = min(lcp // block, (c.prompt_tokens - 1) // block) * block
            kind = c.kind if c.tree in first_of_tree else "first call of a tree"
            first_of_tree.add(c.tree)
            row = out.setdefault(kind, {"calls": 0, "prompt": 0, "uncached": 0, "novel": 0, "block": 0, "other": 0})
            row["calls"] += 1
            row["prompt"] += c.prompt_tokens
            row["uncached"] += c.prompt_tokens - c.cached_tokens
            row["novel"] += c.prompt_tokens - lcp
            row["block"] += lcp - ideal
            row["other"] += ideal - c.cached_tokens
        return out

    def timing(self) -> dict:
        """Where wall time goes: latency summed per kind, and the critical path (the slowest tree)."""
        if not self.calls:
            return {}
        wall = max(c.t1 for c in self.calls) - min(c.t0 for c in self.calls)
        per_kind: dict[str, float] = {}
        trees: dict[str, list[Call]] = {}
        for c in self.calls:
            per_kind[c.kind] = per_kind.get(c.kind, 0.0) + (c.t1 - c.t0)
            trees.setdefault(c.tree, []).append(c)
        slow = max(trees.values(), key=lambda cs: max(c.t1 for c in cs) - min(c.t0 for c in cs))
        slow_kinds: dict[str, list] = {}
        for c in slow:
            row = slow_kinds.setdefault(c.kind, [0, 0.0])
            row[0] += 1
            row[1] += c.t1 - c.t0
        return {"wall": wall, "in_flight": sum(per_kind.values()) / wall if wall else 0.0,
                "latency_by_kind": per_kind, "slowest_tree_wall": max(c.t1 for c in slow) - min(c.t0 for c in slow),
                "slowest_tree_calls": len(slow), "slowest_tree_rounds": self.round_trips(slow),
                "slowest_tree_by_kind": slow_kinds, "calls_per_tree": sorted(len(cs) for cs in trees.values()),
                "rounds_per_tree": sorted(self.round_trips(cs) for cs in trees.values())}

    @staticmethod
    def round_trips(calls: list[Call]) -> int:
        """Sequential round trips of one tree: groups of calls in flight together."""
        rounds, end = 0, None
        for c in sorted(calls, key=lambda c: c.t0):
            if end is None or c.t0 >= end:
                rounds += 1
                end = c.t1
            else:
                end = max(end, c.t1)
        return rounds

    def summary(self) -> dict:
        prompt = sum(c.prompt_tokens for c in self.calls)
        cached = sum(c.cached_tokens for c in self.calls)
        kinds: dict[str, int] = {}
        for c in self.calls:
            kinds[c.kind] = kinds.get(c.kind, 0) + 1
        # cached share per call kind; a tree's first call (its prompt's first touch) is its own kind
        trees = {c.tree for c in self.calls if c.kind not in ("grpo", "chain")}
        first_ids = {id(min((c for c in self.calls if c.tree == t), key=lambda c: c.t0)) for t in trees}
        by_kind: dict[str, list[int]] = {}
        for c in self.calls:
            row = by_kind.setdefault("first call of a tree" if id(c) in first_ids else c.kind, [0, 0])
            row[0] += c.prompt_tokens
            row[1] += c.cached_tokens
        return {"calls": len(self.calls), "kinds": kinds, "generated": sum(c.generated for c in self.calls),
                "prompt": prompt, "uncached": prompt - cached, "cached_share": cached / prompt if prompt else 0.0,
                "cached_share_by_kind": {k: (ca / pr if pr else 0.0) for k, (pr, ca) in sorted(by_kind.items())}}


# ---------------------------------------------------------------------------------------------
# Engines with verl's server semantics
# ---------------------------------------------------------------------------------------------

def _mask_oov(worker, vocab_size: int) -> bool:
    from verl.workers.rollout.vllm_rollout.utils import monkey_patch_compute_logits

    monkey_patch_compute_logits(worker.model_runner.model, vocab_size)
    return True


class VLLMEngine:
    name = "vllm"

    def __init__(self, model_dir: str, vocab_size: int, max_model_len: int, response_length: int, block_size: int):
        self.args = dict(model=model_dir, dtype="float32", max_model_len=max_model_len, enforce_eager=True, seed=0,
                         block_size=block_size, enable_prefix_caching=True, max_num_seqs=256,
                         logprobs_mode="processed_logprobs")  # verl's rollout.logprobs_mode default
        self.vocab_size, self.max_model_len, self.response_length = vocab_size, max_model_len, response_length
        self.rec = Recorder()
        self._ids = 0

    async def start(self) -> None:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        self.engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**self.args))
        await self.engine.collective_rpc(_mask_oov, args=(self.vocab_size,))

    async def reset(self) -> None:
        await self.engine.reset_prefix_cache()
        self.rec = Recorder()

    async def generate(self, request_id: str = "", prompt_ids=None, sampling_params=None, **_):
        from vllm import SamplingParams
        from verl.workers.rollout.vllm_rollout.utils import extract_prompt_logprobs

        params = dict(sampling_params or {})
        kind = Recorder.kind(params)
        top_k = params.pop(TOP_LOGPROBS_KEY, None)  # the plugin's cached read-out (see the module docstring)
        prompt_ids = [int(t) for t in prompt_ids]
        room = self.max_model_len - len(prompt_ids)
        max_tokens = max(1, min(int(params.pop("max_tokens", min(self.response_length, room))), room))
        params["logprobs"] = 0 if params.pop("logprobs", False) else None  # as verl's server
        if top_k:
            params["logprobs"] = int(top_k)
        self._ids += 1  # verl gives vLLM a fresh id per call (the sticky id only routes)
        t0 = time.perf_counter()
        final = None
        async for out in self.engine.generate({"prompt_token_ids": prompt_ids},
                                              SamplingParams(max_tokens=max_tokens, **params), f"{request_id}-{self._ids}"):
            final = out
        extra: dict = {"num_cached_tokens": final.num_cached_tokens or 0}
        extract_prompt_logprobs(final, params.get("prompt_logprobs"), extra)
        choice = final.outputs[0]
        lps = None
        if params["logprobs"] is not None:
            lps = [lp[t].logprob for t, lp in zip(choice.token_ids, choice.logprobs)]
        if top_k:
            first = sorted(choice.logprobs[0].items(), key=lambda kv: kv[1].rank)[: int(top_k)]
            extra["top_logprobs"] = {"ids": [int(t) for t, _ in first], "logprobs": [v.logprob for _, v in first]}
        if params.get(TOKEN_IDS_KEY):  # passed on to vLLM as verl does; values read back as the subclass does
            from rftt_plugin.integration.vllm_readout import token_id_entries

            extra["token_id_logprobs"] = token_id_entries(choice.logprobs[0], list(params[TOKEN_IDS_KEY]))
        self.rec.calls.append(Call(kind, len(prompt_ids), extra["num_cached_tokens"], len(choice.token_ids),
                                   request_id, t0, time.perf_counter(),
                                   tuple(prompt_ids) + tuple(choice.token_ids[:-1])))
        return SimpleNamespace(token_ids=list(choice.token_ids), log_probs=lps, extra_fields=extra,
                               stop_reason="completed")

    async def close(self) -> None:
        self.engine.shutdown()


class HFCPUEngine:
    name = "hfcpu"

    def __init__(self, model_dir: str, max_prompt: int, response_length: int):
        self.model_dir, self.max_prompt, self.response_length = model_dir, max_prompt, response_length
        self.rec = Recorder()

    async def start(self) -> None:
        import verl  # noqa: F401  (the plugin puts +dryrun=cpu on Hydra's search path)
        from hydra import compose, initialize_config_module
        from verl.workers.rollout.replica import RolloutMode

        from rftt_plugin.cpu.hfcpu.server import HFCPUServer

        with initialize_config_module("verl.trainer.config", version_base=None):
            cfg = compose("ppo_trainer", overrides=[
                "+dryrun=cpu", f"actor_rollout_ref.model.path={self.model_dir}",
                f"data.max_prompt_length={self.max_prompt}", f"data.max_response_length={self.response_length}",
                "actor_rollout_ref.rollout.load_format=auto",
            ])
        self.server = HFCPUServer(cfg.actor_rollout_ref.rollout, cfg.actor_rollout_ref.model, RolloutMode("colocated"))

    async def reset(self) -> None:
        self.rec = Recorder()

    async def generate(self, request_id: str = "", prompt_ids=None, sampling_params=None, **_):
        params = dict(sampling_params or {})
        kind = Recorder.kind(params)
        t0 = time.perf_counter()
        out = await self.server.generate(prompt_ids=prompt_ids, sampling_params=params, request_id=request_id)
        self.rec.calls.append(Call(kind, len(prompt_ids), 0, len(out.token_ids), request_id, t0, time.perf_counter(),
                                   tuple(int(t) for t in prompt_ids) + tuple(out.token_ids[:-1])))
        return out

    async def close(self) -> None:
        return None


# ---------------------------------------------------------------------------------------------
# The two rollouts
# ---------------------------------------------------------------------------------------------

async def grpo_step(engine, prompts: list[list[int]], n: int, budget: int) -> None:
    """verl's single_turn_agent: rollout.n independent requests per prompt, all in flight at once."""
    params = {"max_tokens": budget, "temperature": 1.0, "top_p": 1.0, "top_k": -1, "logprobs": True}
    await asyncio.gather(*(engine.generate(request_id=f"grpo-{i}-{j}", prompt_ids=p, sampling_params=params)
                           for i, p in enumerate(prompts) for j in range(n)))


async def chains_step(engine, prompts: list[list[int]], lengths: list[list[int]], config) -> None:
    """Equal work: for every distinct leaf of a tree, one independent chain from the same prompt that
    generates exactly the leaf's path length (``ignore_eos``, no stop ids) at the search's step
    sampling -- the same path-length distribution and temperature, without the tree's sharing. All in
    flight at once."""
    params = {"temperature": config.step_temperature, "top_p": config.step_top_p, "top_k": config.step_top_k,
              "ignore_eos": True, "logprobs": True}
    await asyncio.gather(*(engine.generate(request_id=f"chain-{i}-{j}", prompt_ids=p,
                                           sampling_params={**params, "max_tokens": n})
                           for i, (p, ns) in enumerate(zip(prompts, lengths)) for j, n in enumerate(ns)))


async def rftt_step(engine, prompts: list[list[int]], questions: list[str], layout, config, top_k: int,
                    readout: str) -> list:
    """The rftt_tree agent loop's search, one tree per prompt, concurrently (as its worker does)."""
    from rftt_plugin.integration.server_backend import VerlServerBackend
    from rftt_plugin.search.mcts import FunctionalMCTS

    async def one(i: int):
        backend = VerlServerBackend(engine, request_id=f"rftt-{i}", eos_id=layout.eos_id, readout_top_k=top_k,
                                    readout=readout)
        return await FunctionalMCTS(backend, layout, config).search(questions[i], prompts[i], meta={"uid": i})

    return await asyncio.gather(*(one(i) for i in range(len(prompts))))


def _tree_key(tree) -> list:
    """What must not change with the read-out: every node's tag, rank and ids."""
    return [(n.id, n.parent, n.tag, n.rank, tuple(n.token_ids)) for n in tree.walk()]


def _row(name: str, wall: float, s: dict) -> str:
    readouts = sum(v for k, v in s["kinds"].items() if k.startswith("readout"))
    return (f"| {name:<14} | {wall:7.2f} | {s['calls']:5d} | {readouts:8d} | {s['generated']:9d} | {s['prompt']:8d} "
            f"| {s['uncached']:8d} | {s['cached_share']:6.3f} |")


def build_prompts(tok, count: int, pad: int) -> tuple[list[str], list[list[int]]]:
    """``count`` questions as chat prompts; with ``pad`` > 0 each question is preceded by its own
    filler text of about ``pad`` ids (a stand-in for long prompts and contexts: different per question,
    so trees share no more of it than distinct long questions would)."""
    from rftt_plugin.chat_prompt import chat_prompt_ids

    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(count)]
    prompts = [chat_prompt_ids(tok, padded_question(tok, q, pad, seed=i)) for i, q in enumerate(questions)]
    return questions, prompts


def padded_question(tok, question: str, pad: int, seed: int) -> str:
    """``question`` preceded by its own filler text of about ``pad`` ids (unchanged for ``pad <= 0``)."""
    import random

    if pad <= 0:
        return question
    rng = random.Random(seed)
    words: list[str] = []
    while len(tok(" ".join(words), add_special_tokens=False)["input_ids"]) < pad:
        words.append(rng.choice(FILLER))
    return f"Notes: {' '.join(words)}.\n{question}"


FILLER = ("apple river stone cloud seven market paper window green table orange forty lamp garden silver "
          "number bridge winter music letter eleven yellow horse station").split()


async def bench_engine(engine, args, questions: list[str], prompts: list[list[int]], layout, config) -> dict:
    t0 = time.perf_counter()
    await engine.start()
    print(f"[{engine.name}] engine up in {time.perf_counter() - t0:.1f} s", flush=True)
    if args.warmup:  # one small request first: lazy initialisation must not count against either phase
        await engine.generate(request_id="warm", prompt_ids=prompts[0], sampling_params={"max_tokens": 2})
    out: dict = {"walls": {}}
    trees = {}
    # Phases round-robin, --repeats times: the reported wall is each phase's median, so a load spike
    # from other work on the machine does not land on one phase only. Calls, tokens and trees are the
    # first round's. Phases run one after another: the two read-outs never share an engine step.
    readouts = {"rftt_before": args.readout_before, "rftt_after": args.readout_after,
                "rftt_control": args.readout_before}
    for rep in range(args.repeats):
        for phase in ("grpo", "rftt_before", "rftt_after", "chains", "rftt_control"):
            if phase == "rftt_control" and rep:
                continue
            await engine.reset()
            t0 = time.perf_counter()
            if phase == "grpo":
                await grpo_step(engine, prompts, args.n, args.budget)
            elif phase == "chains":
                await chains_step(engine, prompts, out["leaf_lengths"], config)
            else:
                results = await rftt_step(engine, prompts, questions, layout, config, args.readout_top_k,
                                          readouts[phase])
                if not rep:
                    out["leaves"] = sum(len(r.leaves) for r in results)
                    trees[phase] = [_tree_key(r.tree) for r in results]
                    if phase == "rftt_after":  # the work the chains must match (fixed for all rounds)
                        # distinct leaves: a leaf the search emits again adds no token (and no sharing)
                        out["leaf_lengths"] = [sorted(len(ids) for ids in {tuple(leaf.response_ids) for leaf in r.leaves})
                                               for r in results]
                        out["emitted_leaf_tokens"] = sum(len(leaf.response_ids) for r in results for leaf in r.leaves)
                        out["emitted_leaves"] = sum(len(r.leaves) for r in results)
            wall = time.perf_counter() - t0
            out["walls"].setdefault(phase, []).append(wall)
            if not rep:
                out[phase + "_summary"] = engine.rec.summary()
                out[phase + "_rec"] = engine.rec
    for phase, walls in out["walls"].items():
        out[phase] = (statistics.median(walls), out[phase + "_summary"])
    out["same_trees"] = trees["rftt_before"] == trees["rftt_after"]
    # control: the old read-out again. vLLM's numerics depend on batch composition (asynchronous
    # arrival), so two runs with the same seeds can already differ there; hfcpu is deterministic.
    out["same_trees_control"] = trees["rftt_before"] == trees["rftt_control"]
    await engine.close()
    return out


def build_default_model(root: Path, warm_steps: int, warm_pad: int = 0) -> Path:
    """The tiny head_dim-32 model, prepared, warmed on tagged arithmetic (so steps end on closing
    tags and trees grow as they would with a trained policy; a random model never closes a tag).

    ``warm_pad`` > 0: half of the warm-up questions carry their own filler of about that many ids
    (as ``--prompt-pad`` builds them), so the model also writes tagged steps after long prompts --
    without it the toy model, trained on ~40-id prompts only, ends every step at once there and the
    long-context trees never branch.
    """
    import random

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from transformers import AutoTokenizer

    from rftt_plugin.demo.synthetic import make_problems, tagged_solution
    from rftt_plugin.tiny_model import build_tiny_model
    from rftt_plugin.demo.warmup import warm_up
    from rftt_plugin.prepare import prepare_model

    base = build_tiny_model(root / "base", num_heads=2, num_kv_heads=1)  # head_dim 32: vLLM's CPU attention
    prepare_model(str(base), str(root / "prepared"), overwrite=True, progress=False, log=lambda _m: None)
    if warm_steps <= 0:
        return root / "prepared"
    t0 = time.perf_counter()
    # the pairs of rftt_plugin.demo.warmup.warmed_arithmetic_model (same seed), some padded
    problems = make_problems(400, seed=0)
    rng = random.Random(0)
    pairs = [(p.question, tagged_solution(p, self_correct=rng.random() < 0.2, rng=rng)) for p in problems]
    if warm_pad > 0:
        tok = AutoTokenizer.from_pretrained(root / "prepared")
        pairs = [(padded_question(tok, q, warm_pad, seed=1000 + i) if i % 2 else q, a) for i, (q, a) in enumerate(pairs)]
    warm_up(str(root / "prepared"), str(root / "warm"), pairs, steps=warm_steps, seed=0, log=None)
    print(f"warmed the tiny model for {warm_steps} steps{f' (half the prompts padded by ~{warm_pad} ids)' if warm_pad else ''} "
          f"in {time.perf_counter() - t0:.0f} s", flush=True)
    return root / "warm"


def print_diagnostics(label: str, rec: Recorder, block: int | None) -> None:
    """Where the uncached prompt tokens (vLLM) and the wall time of one phase went."""
    if block:
        print(f"{label}: uncached prompt tokens by call kind (novel: first touch; block: {block}-token block "
              f"granularity; other: cache reads skipped or lost)")
        for kind, r in sorted(rec.breakdown(block).items()):
            print(f"  {kind:<26} calls {r['calls']:4d} prompt {r['prompt']:6d} uncached {r['uncached']:5d} = novel "
                  f"{r['novel']:5d} + block {r['block']:5d} + other {r['other']:5d}")
    t = rec.timing()
    if t:
        kinds = ", ".join(f"{k} {v:.1f}" for k, v in sorted(t["latency_by_kind"].items()))
        slow = ", ".join(f"{k} {n}x {s:.1f}" for k, (n, s) in sorted(t["slowest_tree_by_kind"].items()))
        print(f"{label}: wall {t['wall']:.1f} s, {t['in_flight']:.1f} calls in flight on average; latency s by kind: "
              f"{kinds}; slowest tree {t['slowest_tree_wall']:.1f} s, {t['slowest_tree_calls']} calls in "
              f"{t['slowest_tree_rounds']} sequential round trips ({slow}); calls per tree {t['calls_per_tree']}, "
              f"round trips per tree {t['rounds_per_tree']}")


def readout_requests(kinds: dict) -> int:
    return sum(v for k, v in kinds.items() if k.startswith("readout"))


def expansions(kinds: dict, top_k: int) -> int:
    """Tag read-outs (= expansions): each read-out sends exactly one request of its first kind."""
    first = ("readout ids (cached)", "readout top-k (cached)", f"readout k={top_k if top_k > 0 else 0}")
    return sum(kinds.get(k, 0) for k in first)


def equal_work(res: dict, config) -> dict:
    """The tree (``rftt (after)``) against chains of the same path lengths (``chains``), per leaf token.

    ``leaf tokens`` = the summed path lengths of the tree's distinct leaves (the chains generate
    exactly that many; a leaf the search emits twice is counted once, since repeating it costs and
    shares nothing). ``gen_per_leaf`` = tokens the engine generated per leaf token (the tree's
    sharing; 1 for chains by construction; the tree's count includes one discarded id per read-out);
    ``computed_per_leaf`` adds the prompt ids prefilled without the cache. ``gen_per_emitted`` is
    the tree's count per token of all emitted leaves, repeats included (what the trainer receives).
    """
    leaf_tokens = sum(sum(ns) for ns in res["leaf_lengths"])
    out = {"leaf_tokens": leaf_tokens, "leaves": sum(len(ns) for ns in res["leaf_lengths"]),
           "lengths": sorted(n for ns in res["leaf_lengths"] for n in ns),
           "emitted_leaves": res["emitted_leaves"], "emitted_leaf_tokens": res["emitted_leaf_tokens"]}
    for key, phase in (("tree", "rftt_after"), ("chains", "chains")):
        wall, s = res[phase]
        rounds = res[phase + "_rec"].timing().get("rounds_per_tree", [0])
        out[key] = {"wall": wall, "per_1k": 1000 * wall / max(leaf_tokens, 1), "calls": s["calls"],
                    "rounds": sum(rounds) / max(len(rounds), 1), "generated": s["generated"],
                    "gen_per_leaf": s["generated"] / max(leaf_tokens, 1), "uncached": s["uncached"],
                    "computed_per_leaf": (s["generated"] + s["uncached"]) / max(leaf_tokens, 1),
                    "cached_share": s["cached_share"], "by_kind": s["cached_share_by_kind"],
                    "gen_per_emitted": s["generated"] / max(res["emitted_leaf_tokens"], 1)}
    return out


def print_equal_work(name: str, w: dict, config) -> None:
    n = w["lengths"]
    print(f"\n[{name}] equal work: the rftt (after) trees' {w['leaves']} distinct leaves ({w['emitted_leaves']} emitted), "
          f"{w['leaf_tokens']} leaf tokens ({w['emitted_leaf_tokens']} emitted; path length mean "
          f"{w['leaf_tokens'] / max(len(n), 1):.1f}, min {n[0] if n else 0}, median {n[len(n) // 2] if n else 0}, max "
          f"{n[-1] if n else 0}) against one chain per distinct leaf of the same length (ignore_eos) at the step "
          f"sampling (temperature {config.step_temperature}, top-p {config.step_top_p})")
    print("| rollout        |  wall s | s / 1k leaf tok | calls | round trips / tree | generated | gen / leaf tok "
          "| prefilled | (gen + prefilled) / leaf tok | cached |")
    print("|----------------|---------|-----------------|-------|--------------------|-----------|----------------"
          "|-----------|------------------------------|--------|")
    for label, key in (("rftt (after)", "tree"), ("chains", "chains")):
        x = w[key]
        print(f"| {label:<14} | {x['wall']:7.2f} | {x['per_1k']:15.3f} | {x['calls']:5d} | {x['rounds']:18.1f} "
              f"| {x['generated']:9d} | {x['gen_per_leaf']:14.3f} | {x['uncached']:9d} | {x['computed_per_leaf']:28.3f} "
              f"| {x['cached_share']:6.3f} |")
    t, c = w["tree"], w["chains"]
    print(f"equal-work ratios tree/chains: wall {t['wall'] / c['wall']:.2f}, generated tokens "
          f"{t['generated'] / max(c['generated'], 1):.2f}, generated + prefilled {t['computed_per_leaf'] / c['computed_per_leaf']:.2f}; "
          f"the tree's generated tokens per emitted leaf token (repeats included) {t['gen_per_emitted']:.3f}")
    print("cached share by call kind: " + "; ".join(
        f"{label} " + ", ".join(f"{k} {v:.3f}" for k, v in w[key]["by_kind"].items())
        for label, key in (("rftt (after)", "tree"), ("chains", "chains"))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=("vllm", "hfcpu", "both"), default="both")
    parser.add_argument("--model", help="a prepared checkpoint (default: the tiny random head_dim-32 model)")
    parser.add_argument("--prompts", type=int, default=8, help="concurrent prompts (>= 8 so batching matters)")
    parser.add_argument("--n", type=int, default=16, help="rollout.n: samples (GRPO) = leaves (rftt_tree) per prompt")
    parser.add_argument("--budget", type=int, default=128, help="response budget in tokens (both rollouts)")
    parser.add_argument("--step-max-tokens", type=int, default=24)
    parser.add_argument("--max-depth", type=int, default=4)
    parser.add_argument("--readout-top-k", type=int, default=20)
    parser.add_argument("--readout-before", default="top_logprobs", choices=("prompt_logprobs", "top_logprobs", "token_ids"),
                        help="the tag read-out of the 'before' phase (issue 14's cached top-k read-out)")
    parser.add_argument("--readout-after", default="token_ids", choices=("prompt_logprobs", "top_logprobs", "token_ids"),
                        help="the tag read-out of the 'after' phase (issue 28: one request, logprob_token_ids)")
    parser.add_argument("--block-size", type=int, default=16, help="vLLM KV block size (prefix cache granularity)")
    parser.add_argument("--prompt-pad", type=int, default=0,
                        help="filler ids before each question (long-context check; the tiny model's limit is 2048)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="rounds of the phases (round-robin); walls are per-phase medians")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false", help="skip the engine's first request")
    parser.add_argument("--warm-steps", type=int, default=300,
                        help="warm-up steps of the default model (0: random weights; steps then never close)")
    parser.add_argument("--warm-pad", type=int, default=0,
                        help="also warm the default model on questions padded by about this many ids (use with "
                             "--prompt-pad, so long-context trees branch)")
    args = parser.parse_args(argv)
    if args.prompts < 1 or args.n < 1 or args.repeats < 1:
        parser.error("--prompts, --n and --repeats must be >= 1")

    from transformers import AutoTokenizer

    from rftt_plugin.search.config import SearchConfig
    from rftt_plugin.tag_ids import TagIds

    tmp = tempfile.TemporaryDirectory(prefix="rftt-bench-rollout-")
    model = Path(args.model) if args.model else build_default_model(Path(tmp.name), args.warm_steps, args.warm_pad)
    tok = AutoTokenizer.from_pretrained(model)
    layout = TagIds.from_tokenizer(tok, mode="added")
    layout = dataclasses.replace(layout, decode=lambda ids: tok.decode(list(ids), skip_special_tokens=True))
    config = SearchConfig(iterations=args.n, max_depth=args.max_depth, step_max_tokens=args.step_max_tokens,
                          direct_answer_max_tokens=args.step_max_tokens, max_response_tokens=args.budget,
                          token_mode="added", seed=0)
    questions, prompts = build_prompts(tok, args.prompts, args.prompt_pad)
    max_prompt = max(64, max(map(len, prompts)) + 8)
    engines = ["hfcpu", "vllm"] if args.engine == "both" else [args.engine]  # vLLM last: its line ends the output
    print(f"model {model}; {args.prompts} prompts (mean {sum(map(len, prompts)) / len(prompts):.0f} ids) x n={args.n}; "
          f"response budget {args.budget}, step budget {args.step_max_tokens}, depth {args.max_depth}, read-out top-k "
          f"{args.readout_top_k}, vLLM block {args.block_size}")
    last = ""
    for name in engines:
        if name == "vllm":
            engine = VLLMEngine(str(model), len(tok), max_prompt + args.budget + 8, args.budget, args.block_size)
        else:
            engine = HFCPUEngine(str(model), max_prompt, args.budget)
        res = asyncio.run(bench_engine(engine, args, questions, prompts, layout, config))
        (g_wall, g), (b_wall, b), (r_wall, r) = res["grpo"], res["rftt_before"], res["rftt_after"]
        print(f"\n[{name}] one rollout step ({args.prompts} prompts, n={args.n}; rftt_tree leaves {res['leaves']})")
        print("| phase          |  wall s | calls | readouts | generated |  prompt | uncached | cached |")
        print("|----------------|---------|-------|----------|-----------|---------|----------|--------|")
        print(_row("grpo", g_wall, g))
        print(_row("rftt (before)", b_wall, b))
        print(_row("rftt (after)", r_wall, r))
        print("wall s per round: " + "; ".join(f"{k} {', '.join(f'{w:.2f}' for w in v)}"
                                               for k, v in res["walls"].items() if k != "rftt_control"))
        print(f"rftt_tree read-outs: before {args.readout_before}, after {args.readout_after}; calls by kind: before "
              f"{b['kinds']}; after {r['kinds']}")
        print("read-out requests per expansion: " + ", ".join(
            f"{label} {readout_requests(x['kinds']) / max(expansions(x['kinds'], args.readout_top_k), 1):.2f} "
            f"({readout_requests(x['kinds'])} / {expansions(x['kinds'], args.readout_top_k)})"
            for label, x in (("before", b), ("after", r))))
        for label, w, x in (("before", b_wall, b), ("after", r_wall, r)):
            print(f"ratios rftt_tree ({label})/grpo: wall {w / g_wall:.2f}, calls {x['calls'] / max(g['calls'], 1):.2f}, "
                  f"generated tokens {x['generated'] / max(g['generated'], 1):.2f}, "
                  f"prefilled prompt tokens {x['uncached'] / max(g['uncached'], 1):.2f}")
        print(f"same trees before/after the read-out change (tags, ranks, ids): {res['same_trees']}; "
              f"control, the old read-out run twice: {res['same_trees_control']}")
        for label in ("before", "after"):
            print_diagnostics(f"rftt ({label})", res[f"rftt_{label}_rec"], args.block_size if name == "vllm" else None)
        work = equal_work(res, config)
        print_equal_work(name, work, config)
        last = (f"rollout: engine={name} grpo_s={g_wall:.2f} rftt_s={r_wall:.2f} ratio={r_wall / g_wall:.2f} "
                f"cached_prompt_share={r['cached_share']:.3f} tokens_per_leaf_token={work['tree']['gen_per_leaf']:.3f} "
                f"equal_work_ratio={work['tree']['wall'] / work['chains']['wall']:.2f}")
        print(last, flush=True)
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
