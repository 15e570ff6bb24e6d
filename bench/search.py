"""Functional tree search: token economy, LLM calls and concurrency, against same-run baselines.

    python bench/search.py                 # fake backend + format-fitted tiny hf model
    python bench/search.py --skip-hf       # fake backend only (about a minute)

What is measured (16 leaves per question, faithful settings unless a row says otherwise):

* **token ratio** = ids the tree sampled (each shared step once) / ids the same 16 paths cost
  if each were sampled independently from the prompt ("16 independent paths of the same
  shape"; baseline = 1.0). Target: <= 0.5.
* **LLM calls per tree** (one ranking call per expanded node + one generation per step).
* **concurrency** = wall time of N trees searched at once / wall time of one tree, both measured
  in this run (baseline = one tree; N x one tree is what a sequential loop, like the reference
  code, would take). Target on the fake backend: 64 trees within 3x one tree.

Fake backend: the scripted policy of ``rftt_plugin.backends.fake.TagScript`` with per-call
latency ``--latency-ms`` plus ``--per-token-ms`` per generated id (a server with spare
capacity: concurrent calls overlap; server saturation is not modelled). Two step-length
profiles: ``short`` (4-24 words per step) and ``paper`` (per-tag lengths in the range of the
paper's 0.5k-2.7k-token responses).

tiny hf model: the repo's tiny random Qwen2 with the 16 tags added, fitted for ~300 Adam steps
on synthetic tagged responses so that it writes the format (cached under ``--cache-dir``); run
with the hf backend (micro-batched) on CPU, added-token mode.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from pathlib import Path

from rftt_plugin.backends.fake import FakeBackend, FakeVocab, TagScript
from rftt_plugin.chat_prompt import chat_prompt_ids
from rftt_plugin.search import FunctionalMCTS, SearchConfig, search_many
from rftt_plugin.tag_ids import TagIds
from rftt_plugin.tokens import FunctionalTag as T

PAPER_LENGTHS = {T.CLARIFY: (20, 60), T.ANALYZE: (20, 50), T.SUBQUESTION: (10, 30), T.NEXT_STEP: (40, 120),
                 T.DIRECT_ANSWER: (80, 300), T.VERIFY: (30, 100), T.REFINE: (40, 120), T.OUTPUT: (4, 12)}


def questions(n: int, tag: str = "q") -> list[str]:
    return [f"{tag} {i}: what is {i} plus {2 * i + 1} ?" for i in range(n)]


def economy(results) -> dict[str, float]:
    stats = [r.stats for r in results]
    gen = sum(s.generated_tokens for s in stats)
    ind = sum(s.independent_tokens for s in stats)
    return {
        "ratio": gen / ind if ind else 0.0,
        "ratio_unique": gen / max(1, sum(s.independent_unique_tokens for s in stats)),
        "calls": statistics.mean(s.llm_calls for s in stats),
        "unique": statistics.mean(s.unique_leaves for s in stats),
        "leaves": statistics.mean(s.leaves for s in stats),
        "depth": statistics.mean(statistics.mean(leaf.n_steps for leaf in r.leaves) for r in results),
        "path_tokens": statistics.mean(s.independent_tokens / max(1, s.leaves) for s in stats),
    }


def fake_engine(profile: str, latency_ms: float = 0.0, per_token_ms: float = 0.0, **cfg) -> FunctionalMCTS:
    script = TagScript(step_words_by_tag=PAPER_LENGTHS if profile == "paper" else {})
    backend = FakeBackend.for_script(script, latency_s=latency_ms / 1e3, latency_per_token_s=per_token_ms / 1e3)
    return FunctionalMCTS(backend, TagIds.from_fake(script.vocab), SearchConfig(**cfg), grade=script.grade)


def prompt_of(mcts: FunctionalMCTS):
    """The prompt builder that goes with ``mcts``'s backend (the fake vocabulary, or the model's chat template)."""
    tokenizer = getattr(mcts.backend, "tokenizer", None)
    return FakeVocab().prompt_ids if tokenizer is None else (lambda q: chat_prompt_ids(tokenizer, q))


async def timed(mcts: FunctionalMCTS, qs: list[str], concurrency: int):
    t0 = time.perf_counter()
    results = await search_many(qs, mcts, max_concurrent_trees=concurrency, prompt=prompt_of(mcts))
    return time.perf_counter() - t0, results


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISS"


# --------------------------------------------------------------------------------------------
# fake backend
# --------------------------------------------------------------------------------------------

async def bench_fake(args) -> None:
    print(f"\n== fake backend: token economy ({args.questions} questions x 16 leaves; baseline = 16 "
          f"independent paths = 1.00) ==")
    print(f"{'setting':44s} {'tokens':>7s} {'uniq.':>6s} {'calls':>6s} {'leaves':>7s} {'steps':>6s} {'ids/path':>8s}  target<=0.5")
    variants = [
        ("short steps, faithful", "short", {}),
        ("paper-length steps, faithful", "paper", {}),
        ("paper-length steps, distinct leaves", "paper", {"distinct_leaves": True}),
        ("paper-length steps, min_tag_prior=0.1", "paper", {"min_tag_prior": 0.1}),
        ("paper-length steps, min_tag_prior=0.1, c=0.5", "paper", {"min_tag_prior": 0.1, "uct_c": 0.5}),
    ]
    for name, profile, cfg in variants:
        mcts = fake_engine(profile, **cfg)
        _, results = await timed(mcts, questions(args.questions), 64)
        e = economy(results)
        print(f"{name:44s} {e['ratio']:7.2f} {e['ratio_unique']:6.2f} {e['calls']:6.1f} "
              f"{e['unique']:4.1f}/{e['leaves']:<2.0f} {e['depth']:6.1f} {e['path_tokens']:8.0f}  {verdict(e['ratio'] <= 0.5)}")
    print("  tokens = generated / independent (all 16 emitted paths); uniq. = the same over distinct leaves only")

    n = args.trees
    print(f"\n== fake backend: {n} concurrent trees vs one tree (latency {args.latency_ms:g} ms/call + "
          f"{args.per_token_ms:g} ms/id, paper-length steps) ==")
    mcts = fake_engine("paper", args.latency_ms, args.per_token_ms)
    singles = []
    for q in questions(args.single_runs, "single"):
        t, _ = await timed(mcts, [q], 1)
        singles.append(t)
    one = statistics.mean(singles)
    many, results = await timed(mcts, questions(n, "many"), n)
    calls = statistics.mean(r.stats.llm_calls for r in results)
    print(f"one tree (baseline, mean of {len(singles)}): {one:6.2f} s   ({calls:.0f} LLM calls per tree)")
    print(f"{n} trees at once:                {many:6.2f} s   = {many / one:.2f}x one tree "
          f"(target <= 3x: {verdict(many / one <= 3)}); {n} x one tree sequentially would be "
          f"{n * one:.0f} s -> speed-up {n * one / many:.1f}x")


# --------------------------------------------------------------------------------------------
# tiny hf model
# --------------------------------------------------------------------------------------------

def fit_format_model(cache_dir: Path, steps: int) -> Path:
    """The tiny random model with tag tokens, fitted to write tagged steps (cached)."""
    out = cache_dir / f"tiny_format_{steps}"
    if (out / "config.json").exists():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rftt_plugin.chat_prompt import chat_prompt_ids
    from rftt_plugin.tiny_model import _CORPUS, build_tiny_model
    from rftt_plugin.tokens import GRAMMAR, TAG_STRINGS, Step, render

    print(f"fitting the tiny model to the tag format ({steps} steps, once; cached in {out}) ...", flush=True)
    rng = random.Random(0)
    torch.manual_seed(0)
    base = build_tiny_model(cache_dir / "tiny_base")
    tok = AutoTokenizer.from_pretrained(base)
    tok.add_tokens(list(TAG_STRINGS), special_tokens=False)
    model = AutoModelForCausalLM.from_pretrained(base)
    model.resize_token_embeddings(len(tok), mean_resizing=False)
    words = " ".join(_CORPUS).split()
    tag_id0 = min(tok.convert_tokens_to_ids(list(TAG_STRINGS)))  # the 16 added ids come last

    def sample():
        prev, steps_ = None, []
        while GRAMMAR[prev] and len(steps_) < 8:
            allowed = GRAMMAR[prev]
            tag = T.OUTPUT if len(steps_) >= 6 and T.OUTPUT in allowed else rng.choice(allowed)
            text = (f"The answer is \\boxed{{{rng.randint(1, 9)}}}." if tag is T.OUTPUT
                    else " ".join(rng.choice(words) for _ in range(rng.randint(2, 10))))
            steps_.append(Step(tag, text))
            prev = tag
        q = " ".join(rng.choice(words) for _ in range(8))
        return chat_prompt_ids(tok, q), tok.encode(render(steps_), add_special_tokens=False) + [tok.eos_token_id]

    data = [sample() for _ in range(2000)]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(steps):
        batch = rng.sample(data, 16)
        width = max(len(a) + len(b) for a, b in batch)
        ids = torch.full((16, width), tok.pad_token_id)
        labels = torch.full((16, width), -100)
        for i, (a, b) in enumerate(batch):
            ids[i, :len(a) + len(b)] = torch.tensor(a + b)
            labels[i, len(a):len(a) + len(b)] = torch.tensor(b)
        logits = model(input_ids=ids).logits[:, :-1].float()
        target = labels[:, 1:]
        # The format is what matters here: tag ids weigh 5x in the loss (random words cannot be learnt).
        weight = torch.where(target >= tag_id0, 5.0, 1.0) * (target != -100)
        token_loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target.clamp(min=0), reduction="none")
        loss = (token_loss * weight).sum() / weight.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"  final loss {loss.item():.2f}", flush=True)
    model.eval()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


async def bench_hf(args) -> None:
    from rftt_plugin.backends.hf import HFBackend

    path = fit_format_model(Path(args.cache_dir), args.fit_steps)
    cfg = SearchConfig(step_max_tokens=48, direct_answer_max_tokens=48, max_depth=10, step_temperature=0.1)
    backend = HFBackend.from_pretrained(str(path), max_batch_size=args.hf_trees)
    layout = TagIds.from_tokenizer(backend.tokenizer, mode="added")
    mcts = FunctionalMCTS(backend, layout, cfg)
    n = args.hf_trees
    try:
        await mcts.search("warm up the model", prompt_of(mcts)("warm up the model"))
        one, single = await timed(mcts, questions(1, "single"), 1)
        many, results = await timed(mcts, questions(n, "many"), n)
    finally:
        await backend.aclose()
    e = economy(single + results)
    reasons: dict[str, int] = {}
    for r in results:
        for k, v in r.stats.terminal_reasons.items():
            reasons[k] = reasons.get(k, 0) + v
    print(f"\n== tiny hf model (format-fitted, added tags, CPU, {os.cpu_count()} cores), 16 leaves per question ==")
    print(f"token ratio {e['ratio']:.2f} (target <= 0.5: {verdict(e['ratio'] <= 0.5)}), {e['calls']:.0f} LLM calls per "
          f"tree, {e['unique']:.1f} unique of {e['leaves']:.0f} leaves, {e['depth']:.1f} steps per path; "
          f"leaf endings {reasons}")
    print(f"one tree (baseline): {one:6.2f} s;  {n} trees at once: {many:6.2f} s = {many / one:.2f}x one tree; "
          f"{n} x one tree would be {n * one:.1f} s -> speed-up {n * one / many:.1f}x "
          f"(micro-batches: mean {statistics.mean(b for _, b in backend.batcher.batches):.1f} requests)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=32, help="questions for the token economy")
    parser.add_argument("--trees", type=int, default=64, help="concurrent trees (fake backend)")
    parser.add_argument("--single-runs", type=int, default=3, help="single-tree runs averaged for the baseline")
    parser.add_argument("--latency-ms", type=float, default=30.0)
    parser.add_argument("--per-token-ms", type=float, default=5.0)
    parser.add_argument("--skip-hf", action="store_true")
    parser.add_argument("--skip-fake", action="store_true")
    parser.add_argument("--hf-trees", type=int, default=8)
    parser.add_argument("--fit-steps", type=int, default=300)
    parser.add_argument("--cache-dir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "rftt-bench-cache"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPU cores")
    if not args.skip_fake:
        asyncio.run(bench_fake(args))
    if not args.skip_hf:
        asyncio.run(bench_hf(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
