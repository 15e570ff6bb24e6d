"""Batched token-in/token-out generation with a Hugging Face causal LM (no Ray, no asyncio).

One call serves a batch of requests with their own sampling parameters.

The loop (left-padded prefill, KV-cache decode, finished rows leaving the batch) is the hf
backend's, :func:`rftt_plugin.backends.decode.decode`, and so is the stop rule
(:class:`~rftt_plugin.backends.stopping.StopChecker`: EOS unless ``ignore_eos``, ``stop_token_ids``,
``stop`` strings, ``max_tokens``). What stays here is what makes hfcpu a vLLM stand-in rather than
the backend: choosing the token and its log-prob the way vLLM's sampler does
(:func:`.sampling.choose_token`: ``allowed_token_ids``, repetition penalty, greedy below
``1e-5``, log-probs after top-k/top-p), the first-position read-outs (``rftt_top_logprobs``,
``logprob_token_ids``), ``prompt_logprobs``, the OOV mask, and one shared generator for requests
without a seed. The backend reports the log-prob *before* the top-k/top-p cut (what verl's actor
recomputes) and has no penalties, so one token chooser for both would change one of the two
contracts; they share everything around it.

Like vLLM, the returned token ids include the token that ended the sequence (EOS, a stop token,
or the token that completed a stop string): vLLM only trims stop strings from the *text*.

``prompt_logprobs`` needs logits at every prompt position; those are computed by a separate
forward over that request's prompt alone, so batching never holds ``B x L x vocab`` logits.

Out-of-vocabulary rows: like verl 0.9.1's vLLM server (``monkey_patch_compute_logits`` in
verl/workers/rollout/vllm_rollout/utils.py, called with ``vocab_size=len(tokenizer)``), the
logits of ids ``>= vocab_limit`` are set to ``-inf`` before anything reads them, so padded
embedding rows (Qwen2.5-style checkpoints) are never sampled and every log-prob -- sampled and
``prompt_logprobs`` -- is a softmax over the tokenizer's ids only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from rftt_plugin.backends.decode import decode as decode_batch
from rftt_plugin.backends.stopping import StopChecker
from rftt_plugin.cpu.hfcpu.prompt_logprobs import prompt_logprobs_layout
from rftt_plugin.cpu.hfcpu.sampling import SamplingSpec, apply_allowed_and_penalty, choose_token


@dataclass(frozen=True)
class GenerationRequest:
    prompt_ids: tuple[int, ...]
    spec: SamplingSpec


@dataclass
class GenerationResult:
    token_ids: list[int]
    log_probs: Optional[list[float]]  # None unless spec.logprobs
    finish_reason: str  # "stop" (EOS / stop token / stop string) or "length"
    prompt_ids: Optional[list[list[int]]] = None  # only when spec.prompt_logprobs is not None
    prompt_logprobs: Optional[list[list[float]]] = None
    top_logprobs: Optional[tuple[list[int], list[float]]] = None  # only when spec.top_logprobs
    token_id_logprobs: Optional[list[float]] = None  # only when spec.logprob_token_ids, in their order


class _RowState:
    """Per-request decoding state."""

    def __init__(self, request: GenerationRequest, generator: Optional[torch.Generator]):
        self.request = request
        self.spec = request.spec
        self.generator = generator
        self.tokens: list[int] = []
        self.logprobs: list[float] = []
        self.finish_reason: Optional[str] = None
        self.top: Optional[tuple[list[int], list[float]]] = None
        self.token_id_lps: Optional[list[float]] = None
        self.seen = torch.tensor(request.prompt_ids, dtype=torch.long)  # for repetition_penalty

    @property
    def done(self) -> bool:
        return self.finish_reason is not None


class BatchGenerator:
    def __init__(
        self,
        model: torch.nn.Module,
        eos_token_ids: frozenset[int],
        pad_token_id: int,
        decode: Optional[Callable[[list[int]], str]] = None,
        seed: int = 0,
        vocab_limit: Optional[int] = None,
    ):
        self.model = model
        self.vocab_limit = None if vocab_limit is None else int(vocab_limit)  # ids >= this get -inf
        self.eos_token_ids = frozenset(eos_token_ids)
        self.pad_token_id = int(pad_token_id)
        self.decode = decode
        self.generator = torch.Generator().manual_seed(seed)  # for requests without their own seed

    # -- helpers --------------------------------------------------------------------------------
    def _mask_oov(self, logits: torch.Tensor) -> torch.Tensor:
        """verl's vLLM server mask: ids the tokenizer does not have get ``-inf`` (see module docstring)."""
        if self.vocab_limit is not None and self.vocab_limit < logits.shape[-1]:
            logits = logits.clone()
            logits[..., self.vocab_limit:] = float("-inf")
        return logits

    @staticmethod
    def _token_id_logprobs(logits: torch.Tensor, row: "_RowState") -> list[float]:
        """``logprob_token_ids`` as vLLM's sampler gathers them under ``processed_logprobs``: after
        ``allowed_token_ids`` and penalties, then temperature unless greedy (before top-k/top-p)."""
        processed = apply_allowed_and_penalty(logits, row.spec, row.seen)
        if not row.spec.greedy:
            processed = processed / row.spec.temperature
        lps = torch.log_softmax(processed, dim=-1)
        return lps[torch.tensor(row.spec.logprob_token_ids, dtype=torch.long)].tolist()

    @torch.no_grad()
    def prompt_logprobs(self, prompt_ids: Sequence[int], k: int) -> tuple[list, list]:
        ids = torch.tensor([list(prompt_ids)], dtype=torch.long)
        logits = self._mask_oov(self.model(input_ids=ids, use_cache=False).logits[0])
        return prompt_logprobs_layout(torch.log_softmax(logits.float(), dim=-1), list(prompt_ids), k)

    # -- main entry point -------------------------------------------------------------------------
    @torch.no_grad()
    def run(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        if not requests:
            return []
        if min(len(r.prompt_ids) for r in requests) < 1:
            raise ValueError("hfcpu cannot generate from an empty prompt")
        if self.decode is None and any(r.spec.stop for r in requests):
            raise RuntimeError("stop strings need a tokenizer, but the hfcpu server has none")
        rows = [
            _RowState(r, torch.Generator().manual_seed(r.spec.seed) if r.spec.seed is not None else self.generator)
            for r in requests
        ]
        stops = [StopChecker(r.spec, () if r.spec.ignore_eos else self.eos_token_ids,
                             self.decode if r.spec.stop else None) for r in requests]

        def pick(i: int, logits: torch.Tensor) -> tuple[int, bool]:
            row = rows[i]
            if not row.tokens and row.spec.top_logprobs:  # vLLM's processed log-probs, before top-k/top-p
                processed = apply_allowed_and_penalty(logits, row.spec, row.seen) / max(row.spec.temperature, 1e-5)
                top = torch.topk(torch.log_softmax(processed, dim=-1), row.spec.top_logprobs)
                row.top = (top.indices.tolist(), top.values.tolist())
            if not row.tokens and row.spec.logprob_token_ids:
                row.token_id_lps = self._token_id_logprobs(logits, row)
            token, logprob = choose_token(logits, row.spec, row.seen, row.generator)
            row.tokens.append(token)
            row.logprobs.append(logprob)
            if row.spec.repetition_penalty != 1.0:
                row.seen = torch.cat([row.seen, torch.tensor([token])])
            done = stops[i].check(row.tokens)
            if done is not None:  # vLLM's finish reasons: EOS is a "stop" too
                row.finish_reason = "length" if done[0] == "length" else "stop"
            return token, row.done

        decode_batch(self.model, [r.prompt_ids for r in requests], pick, pad_id=self.pad_token_id,
                     logits_filter=self._mask_oov)
        results = []
        for row in rows:
            result = GenerationResult(
                token_ids=row.tokens,
                log_probs=row.logprobs if row.spec.logprobs else None,
                finish_reason=row.finish_reason or "length",
                top_logprobs=row.top,
                token_id_logprobs=row.token_id_lps,
            )
            if row.spec.prompt_logprobs is not None:
                result.prompt_ids, result.prompt_logprobs = self.prompt_logprobs(
                    row.request.prompt_ids, row.spec.prompt_logprobs
                )
            results.append(result)
        return results
