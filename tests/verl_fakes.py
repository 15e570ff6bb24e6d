"""Stand-ins for verl's rollout server client, for agent-loop tests without Ray or vLLM.

:class:`TinyServerManager` answers ``generate(request_id, prompt_ids=..., sampling_params=...)``
the way verl's ``LLMServerClient`` + vLLM server do (verl/workers/rollout/vllm_rollout/
vllm_async_server.py and utils.extract_prompt_logprobs): token ids and sampled log-probs out,
``stop_reason="completed"``, ``extra_fields["global_steps"]`` and, when ``prompt_logprobs=k`` is
asked, ``extra_fields["prompt_ids"] / ["prompt_logprobs"]`` with one row per prompt position
``j >= 1`` (top-k by rank, or the prompt token itself when ``k == 0``) plus a dummy last row.
Prompt log-probs come from one direct forward pass of the transformers model; generation from
the project's HF backend.
"""

from __future__ import annotations

import asyncio
from typing import Any

import torch
from verl.workers.rollout.replica import TokenOutput

from rftt_plugin.backends.base import SamplingParams


class TinyServerManager:
    def __init__(self, model, backend, *, global_steps: int = 3, fail: bool = False):
        self.model = model
        self.backend = backend
        self.global_steps = global_steps
        self.fail = fail
        self.calls: list[dict[str, Any]] = []

    def _prompt_rows(self, prompt: list[int], k: int) -> tuple[list[list[int]], list[list[float]]]:
        with torch.inference_mode():
            logp = torch.log_softmax(self.model(torch.tensor([prompt])).logits[0].float(), -1)
        ids_rows, lp_rows = [], []
        for j in range(1, len(prompt)):
            row = logp[j - 1]
            if k == 0:
                ids_rows.append([prompt[j]])
                lp_rows.append([float(row[prompt[j]])])
            else:
                vals, idx = torch.topk(row, k)
                ids_rows.append([int(i) for i in idx])
                lp_rows.append([float(v) for v in vals])
        ids_rows.append([0] * max(k, 1))
        lp_rows.append([0.0] * max(k, 1))
        return ids_rows, lp_rows

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs) -> TokenOutput:
        self.calls.append({"request_id": request_id, "prompt_len": len(prompt_ids), **sampling_params})
        await asyncio.sleep(0)
        if self.fail:
            raise RuntimeError("simulated server failure")
        params = dict(sampling_params)
        extra: dict[str, Any] = {"global_steps": self.global_steps}
        k = params.pop("prompt_logprobs", None)
        if k is not None:
            extra["prompt_ids"], extra["prompt_logprobs"] = self._prompt_rows(list(prompt_ids), int(k))
        want_lp = bool(params.pop("logprobs", False))
        gen = await self.backend.generate(list(prompt_ids), SamplingParams(
            max_tokens=int(params.get("max_tokens", 16)), temperature=float(params.get("temperature", 1.0)),
            top_p=float(params.get("top_p", 1.0)), top_k=int(params.get("top_k", -1)),
            stop_token_ids=tuple(params.get("stop_token_ids", ())), seed=params.get("seed")))
        if gen.finish_reason == "error":
            raise RuntimeError(gen.stop_reason)
        extra.update(min_global_steps=self.global_steps, max_global_steps=self.global_steps)
        return TokenOutput(token_ids=gen.token_ids, log_probs=gen.logprobs if want_lp else None,
                           stop_reason="completed", extra_fields=extra)
