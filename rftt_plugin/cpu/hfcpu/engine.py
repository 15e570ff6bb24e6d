"""Batched token-in/token-out generation with a Hugging Face causal LM (no Ray, no asyncio).

One call serves a batch of requests with their own sampling parameters:

1. prefill: the prompts are left-padded into one ``[B, Lmax]`` batch with an attention mask and
   position ids counted from each row's first real token, one forward builds the KV cache;
2. decode: one forward per step feeds every row's last token; each row picks its token with its
   own parameters (``sampling.choose_token``) and stops on EOS (unless ``ignore_eos``),
   ``stop_token_ids``, ``stop`` strings or ``max_tokens``. Rows that finished keep being fed
   (their tokens are discarded) so the cache stays rectangular: simple, and the batch is small.

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

import inspect
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

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
        self._keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters

    # -- helpers --------------------------------------------------------------------------------
    def _forward(self, **kwargs):
        if self._keeps_logits:
            kwargs["logits_to_keep"] = 1  # only the last position is needed while generating
        out = self.model(use_cache=True, **kwargs)
        return self._mask_oov(out.logits[:, -1, :]), out.past_key_values

    def _mask_oov(self, logits: torch.Tensor) -> torch.Tensor:
        """verl's vLLM server mask: ids the tokenizer does not have get ``-inf`` (see module docstring)."""
        if self.vocab_limit is not None and self.vocab_limit < logits.shape[-1]:
            logits = logits.clone()
            logits[..., self.vocab_limit:] = float("-inf")
        return logits

    def _stop_reason(self, row: _RowState, token: int) -> Optional[str]:
        spec = row.spec
        if not spec.ignore_eos and token in self.eos_token_ids:
            return "stop"
        if token in spec.stop_token_ids:
            return "stop"
        if spec.stop:
            if self.decode is None:
                raise RuntimeError("stop strings need a tokenizer, but the hfcpu server has none")
            # We stop at the first match, so a match can only involve the newest token.
            text = self.decode(row.tokens)
            if any(s in text for s in spec.stop):
                return "stop"
        if len(row.tokens) >= spec.max_tokens:
            return "length"
        return None

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
        rows = [
            _RowState(r, torch.Generator().manual_seed(r.spec.seed) if r.spec.seed is not None else self.generator)
            for r in requests
        ]
        lengths = [len(r.prompt_ids) for r in requests]
        if min(lengths) < 1:
            raise ValueError("hfcpu cannot generate from an empty prompt")
        batch, width = len(requests), max(lengths)
        input_ids = torch.full((batch, width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((batch, width), dtype=torch.long)
        for i, r in enumerate(requests):  # left padding: real tokens end at the same column
            input_ids[i, width - lengths[i]:] = torch.tensor(r.prompt_ids, dtype=torch.long)
            attention_mask[i, width - lengths[i]:] = 1
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)

        logits, cache = self._forward(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
        next_pos = position_ids[:, -1] + 1
        max_steps = max(r.spec.max_tokens for r in requests)
        for _step in range(max_steps):
            next_ids = torch.full((batch,), self.pad_token_id, dtype=torch.long)
            for i, row in enumerate(rows):
                if row.done:
                    continue
                if _step == 0 and row.spec.top_logprobs:  # vLLM's processed log-probs, before top-k/top-p
                    processed = apply_allowed_and_penalty(logits[i], row.spec, row.seen) / max(row.spec.temperature, 1e-5)
                    top = torch.topk(torch.log_softmax(processed, dim=-1), row.spec.top_logprobs)
                    row.top = (top.indices.tolist(), top.values.tolist())
                if _step == 0 and row.spec.logprob_token_ids:
                    row.token_id_lps = self._token_id_logprobs(logits[i], row)
                token, logprob = choose_token(logits[i], row.spec, row.seen, row.generator)
                row.tokens.append(token)
                row.logprobs.append(logprob)
                if row.spec.repetition_penalty != 1.0:
                    row.seen = torch.cat([row.seen, torch.tensor([token])])
                row.finish_reason = self._stop_reason(row, token)
                next_ids[i] = token
            if all(row.done for row in rows):
                break
            attention_mask = torch.cat([attention_mask, torch.ones((batch, 1), dtype=torch.long)], dim=1)
            logits, cache = self._forward(
                input_ids=next_ids[:, None],
                attention_mask=attention_mask,
                position_ids=next_pos[:, None],
                past_key_values=cache,
            )
            next_pos = next_pos + 1

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
