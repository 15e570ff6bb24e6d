"""Hugging Face transformers backend (CPU or GPU), batched across concurrent requests.

* **Scoring** (:meth:`HFBackend.next_token_logprobs`, :meth:`~HFBackend.sequence_logprobs`,
  :meth:`~HFBackend.prompt_logprobs`): one forward pass over the (left-padded) batch of all
  scoring requests in flight; ``log_softmax`` over the full vocabulary at temperature 1. A
  next-token query reads the last position only (``logits_to_keep``), so ranking the allowed
  tags of a node costs one forward pass of its context, exactly.
* **Generation** (:meth:`~HFBackend.generate`): requests in flight are decoded together with a
  KV cache (left padding, explicit position ids, rows dropped from the cache as they finish):
  :func:`rftt_plugin.backends.decode.decode`, the loop hfcpu uses too; :meth:`HFBackend._sample`
  is this backend's own token choice (hfcpu's follows vLLM's sampler instead).
  Each row has its own :class:`SamplingParams`: temperature (0 = greedy), top-k, top-p
  (the smallest set of most probable ids whose mass reaches ``top_p``), a ``torch.Generator``
  seeded with ``params.seed`` (or the backend seed and a request counter), stop ids, stop
  strings (checked on the decoded continuation) and EOS (tokenizer and generation config).
* **Reported log-probs** of sampled ids: ``logprobs_mode="processed"`` (default) gives
  ``log_softmax(logits / temperature)[id]`` -- the sampling distribution before the top-p/top-k
  cut, the same temperature scaling verl's actor applies when it recomputes log-probs;
  ``"raw"`` gives ``log_softmax(logits)[id]`` (vLLM's default ``raw_logprobs``). Greedy
  (temperature 0) reports the raw value in both modes.

Batching: an asyncio :class:`~rftt_plugin.backends.batcher.MicroBatcher` collects requests for
``batch_wait_s`` and runs one batch at a time in a worker thread. A generation batch runs to
completion before the next batch starts (no continuous batching), and the shared prefix (the
prompt) is recomputed per request: prefix KV reuse is left to vLLM's prefix cache on servers,
it is not cheap to do right with a batched, padded DynamicCache. Left padding changes float
summation order, so scores of the same context can differ in the last bits between batch
compositions (tests compare with tolerance 1e-4); sampling with a seed is reproducible for a
fixed batch composition (``max_batch_size=1`` makes it fully reproducible).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Sequence

from rftt_plugin.backends.base import BaseBackend, Generation, SamplingParams
from rftt_plugin.backends.batcher import MicroBatcher
from rftt_plugin.backends.decode import decode, left_pad
from rftt_plugin.backends.stopping import StopChecker

LOGPROB_MODES = ("processed", "raw")


@dataclass
class _ScoreItem:
    ids: list[int]              # the sequence to run
    positions: list[int]        # read log P(ids_or_token | ids[:pos]) for each pos ...
    tokens: list[int]           # ... for these tokens


@dataclass
class _GenItem:
    context: list[int]
    params: SamplingParams
    seed: int


class HFBackend(BaseBackend):
    def __init__(self, model: Any, tokenizer: Any = None, *, device: str | None = None,
                 max_batch_size: int = 16, batch_wait_s: float = 0.003, logprobs_mode: str = "processed",
                 seed: int = 0, eos_ids: Sequence[int] | None = None, max_context: int | None = None):
        import torch

        if logprobs_mode not in LOGPROB_MODES:
            raise ValueError(f"logprobs_mode must be one of {LOGPROB_MODES}")
        self.torch = torch
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        if self.device != next(model.parameters()).device:
            self.model.to(self.device)
        self.logprobs_mode = logprobs_mode
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        cfg = model.config
        self.max_context = int(max_context or getattr(cfg, "max_position_embeddings", 1 << 30))
        self.pad_id = self._pad_id(model, tokenizer)
        self.eos_ids = tuple(eos_ids) if eos_ids is not None else self._eos_ids(model, tokenizer)
        self._seeds = itertools.count(seed * 1_000_003)
        self.batcher = MicroBatcher({"score": self._score_batch, "generate": self._generate_batch,
                                     "call": lambda fns: [fn() for fn in fns]},
                                    max_batch_size=max_batch_size, wait_s=batch_wait_s, thread_name="rftt-hf")

    @classmethod
    def from_pretrained(cls, path: str, *, device: str = "cpu", dtype: str = "float32", **kwargs) -> "HFBackend":
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch_dtype = getattr(torch, dtype) if dtype != "auto" else "auto"
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype).to(device)
        return cls(model, tokenizer, device=device, **kwargs)

    @staticmethod
    def _pad_id(model: Any, tokenizer: Any) -> int:
        for src in (tokenizer, model.config):
            pid = getattr(src, "pad_token_id", None) if src is not None else None
            if isinstance(pid, int):
                return pid
        return 0  # any valid id: padded positions are masked out

    @staticmethod
    def _eos_ids(model: Any, tokenizer: Any) -> tuple[int, ...]:
        ids: list[int] = []
        gen_cfg = getattr(model, "generation_config", None)
        for value in (getattr(tokenizer, "eos_token_id", None), getattr(gen_cfg, "eos_token_id", None)):
            if isinstance(value, int):
                ids.append(value)
            elif isinstance(value, (list, tuple)):
                ids.extend(int(v) for v in value)
        return tuple(dict.fromkeys(ids))

    def _decode(self, ids: Sequence[int]) -> str:
        if self.tokenizer is None:
            raise ValueError("stop strings need a tokenizer")
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def _validate(self, ids: Sequence[int], extra: int = 0) -> None:
        if not ids:
            raise ValueError("empty context")
        bad = [t for t in ids if not 0 <= int(t) < self.vocab_size]
        if bad:
            raise ValueError(f"token ids {bad[:5]} outside the model vocabulary (size {self.vocab_size})")
        if len(ids) + extra > self.max_context:
            raise ValueError(f"context of {len(ids)} ids exceeds the model window ({self.max_context})")

    # -- protocol --------------------------------------------------------------------------------
    async def next_token_logprobs(self, context_ids: Sequence[int], candidate_ids: Sequence[int]) -> list[float]:
        ctx = [int(t) for t in context_ids]
        cands = [int(c) for c in candidate_ids]
        self._validate(ctx + cands)
        return await self.batcher.submit("score", _ScoreItem(ctx, [len(ctx)] * len(cands), cands))

    async def sequence_logprobs(self, context_ids: Sequence[int], candidates: Sequence[Sequence[int]]) -> list[float]:
        ctx = [int(t) for t in context_ids]
        items = []
        for cand in candidates:
            cand = [int(t) for t in cand]
            if not cand:
                raise ValueError("empty candidate continuation")
            self._validate(ctx + cand)
            items.append(_ScoreItem(ctx + cand[:-1], list(range(len(ctx), len(ctx) + len(cand))), cand))
        import asyncio

        rows = await asyncio.gather(*(self.batcher.submit("score", it) for it in items))
        return [float(sum(r)) for r in rows]

    async def prompt_logprobs(self, ids: Sequence[int]) -> list[float | None]:
        """log P(ids[i] | ids[:i]) for every position (None for the first), one forward pass."""
        ids = [int(t) for t in ids]
        self._validate(ids)
        if len(ids) == 1:
            return [None]
        got = await self.batcher.submit("score", _ScoreItem(ids[:-1], list(range(1, len(ids))), ids[1:]))
        return [None, *got]

    async def top_logprobs(self, context_ids: Sequence[int], k: int) -> dict[int, float]:
        """The ``k`` most probable next ids and their log-probs (temperature 1)."""
        torch = self.torch
        ctx = [int(t) for t in context_ids]
        self._validate(ctx)

        def run() -> dict[int, float]:
            with torch.inference_mode():
                logits = self.model(torch.tensor([ctx], device=self.device), logits_to_keep=1).logits[0, -1]
                lp = torch.log_softmax(logits.float(), -1)
                vals, idx = torch.topk(lp, k)
                return {int(i): float(v) for v, i in zip(vals.tolist(), idx.tolist())}

        return await self.batcher.submit("call", run)  # on the worker thread, like all model use

    async def generate(self, context_ids: Sequence[int], params: SamplingParams) -> Generation:
        ctx = [int(t) for t in context_ids]
        try:
            self._validate(ctx, extra=1 if params.max_tokens else 0)
            if params.stop and self.tokenizer is None:
                raise ValueError("stop strings need a tokenizer")
        except ValueError as exc:
            return Generation.failed(str(exc))
        seed = params.seed if params.seed is not None else next(self._seeds)
        return await self.batcher.submit("generate", _GenItem(ctx, params, seed))

    async def aclose(self) -> None:
        await self.batcher.aclose()

    # -- batched work (worker thread) -------------------------------------------------------------
    def _score_batch(self, items: list[_ScoreItem]) -> list[list[float]]:
        torch = self.torch
        ids, mask, pos = left_pad([it.ids for it in items], self.pad_id, self.device)
        width = ids.shape[1]
        # Logits are needed from the earliest queried position on; keep only that tail.
        keep = max(len(it.ids) - min(it.positions) + 1 for it in items)
        with torch.inference_mode():
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos,
                                logits_to_keep=keep).logits
            logp = torch.log_softmax(logits.float(), dim=-1)
        out = []
        for row, it in enumerate(items):
            # Position p of the unpadded row (predicting ids[p]) is logit column p - 1, which is
            # column width - len + p - 1 of the padded row and keep - (width - that) of the tail.
            cols = [keep - (width - (width - len(it.ids) + p - 1)) for p in it.positions]
            vals = logp[row, cols, it.tokens]
            out.append([float(v) for v in vals.tolist()])
        return out

    def _sample(self, logits, params: SamplingParams, gen) -> tuple[int, float]:
        torch = self.torch
        raw = torch.log_softmax(logits, -1)
        if params.temperature == 0:
            tok = int(torch.argmax(logits))
            return tok, float(raw[tok])
        scaled = torch.log_softmax(logits / params.temperature, -1)
        probs = scaled.exp()
        if params.top_k and params.top_k > 0 and params.top_k < probs.shape[-1]:
            kth = torch.topk(probs, params.top_k).values[-1]
            probs = torch.where(probs >= kth, probs, torch.zeros_like(probs))
            probs = probs / probs.sum()
        if params.top_p < 1.0:
            sorted_p, order = torch.sort(probs, descending=True)
            before = torch.cumsum(sorted_p, 0) - sorted_p  # mass of the more probable ids
            drop = order[before >= params.top_p]
            probs = probs.clone()
            probs[drop] = 0.0
        tok = int(torch.multinomial(probs, 1, generator=gen))
        value = scaled[tok] if self.logprobs_mode == "processed" else raw[tok]
        return tok, float(value)

    def _generate_batch(self, items: list[_GenItem]) -> list[Generation]:
        torch = self.torch
        results: list[Generation | None] = [None] * len(items)
        ids_out: list[list[int]] = [[] for _ in items]
        lps_out: list[list[float]] = [[] for _ in items]
        checkers, gens, active = [], [], []
        for i, it in enumerate(items):
            checker = StopChecker(it.params, self.eos_ids, self._decode if it.params.stop else None,
                                  max_tokens=self.max_context - len(it.context))
            checkers.append(checker)
            gens.append(torch.Generator(device=self.device).manual_seed(int(it.seed)))
            done = checker.check([])
            if done is not None:  # max_tokens == 0
                results[i] = Generation([], [], done[0], done[1])
            else:
                active.append(i)

        def pick(n: int, logits) -> tuple[int, bool]:  # n: position in the decoded batch
            i = active[n]
            tok, lp = self._sample(logits, items[i].params, gens[i])
            ids_out[i].append(tok)
            lps_out[i].append(lp)
            done = checkers[i].check(ids_out[i])
            if done is not None:
                results[i] = Generation(ids_out[i], lps_out[i], done[0], done[1])
            return tok, done is not None

        decode(self.model, [items[i].context for i in active], pick, pad_id=self.pad_id, device=self.device)
        return results  # type: ignore[return-value]
