"""``HFCPUServer``: the hfcpu rollout server (one Ray actor per replica; a plain class here).

It implements the duck-typed server contract verl calls by name: ``generate`` from
``LLMServerClient.generate`` (verl/workers/rollout/llm_server.py:99-170) and the control methods
of ``RolloutReplica`` (verl/workers/rollout/replica.py:265-310). See the package docstring for
the request/response contract.

Options come from ``actor_rollout_ref.rollout.engine_kwargs.hfcpu`` (see :class:`HFCPUOptions`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, fields, replace
from typing import Any, Optional

import torch

from rftt_plugin.backends.batcher import MicroBatcher
from rftt_plugin.cpu.hfcpu.engine import BatchGenerator, GenerationRequest, GenerationResult
from rftt_plugin.cpu.hfcpu.model import build_model, eos_token_ids, install_weights, torch_dtype
from rftt_plugin.cpu.hfcpu.sampling import ServerLimits, UnsupportedRequest, parse_sampling_params, request_seed
from rftt_plugin.cpu.hfcpu.weights import WeightState, WeightSyncError, l1_norm, state_digest

logger = logging.getLogger("rftt_plugin.cpu.hfcpu")


@dataclass(frozen=True)
class HFCPUOptions:
    batch_wait_ms: float = 5.0  # how long the first request of a batch waits for company
    max_batch_size: int = 64
    strict_weight_sync: bool = True  # refuse to generate on stale weights in hybrid mode
    attn_implementation: str = "sdpa"
    event_log: Optional[str] = None  # append JSON lines (weight loads, sleeps, batches) here
    num_threads: int = 0  # torch intra-op threads for the server; 0 = leave torch's default
    seed: Optional[int] = None  # sampling seed for requests without one; None = rollout.seed
    # Requests without a seed get one derived from (seed, weights version, prompt ids, how many
    # identical prompts came before) instead of sharing one generator in arrival order, so the set of
    # samples drawn for given weights does not depend on how concurrent requests were scheduled
    # (sampling.request_seed); which of a prompt's identical requests gets which sample still does.
    request_seeds: bool = False

    @classmethod
    def from_mapping(cls, values) -> "HFCPUOptions":
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown actor_rollout_ref.rollout.engine_kwargs.hfcpu keys {unknown}; known: {sorted(known)}")
        return cls(**values)


def _is_hybrid(rollout_mode) -> bool:
    return str(getattr(rollout_mode, "value", rollout_mode)) == "hybrid"


def _lora_adapters_requested(model_config) -> bool:
    """LoRA that would be synced as adapters (merged LoRA arrives as plain full weights: fine)."""
    lora = dict(getattr(model_config, "lora", None) or {})
    rank = getattr(model_config, "lora_rank", 0) or lora.get("rank", 0)
    return bool(rank) and not lora.get("merge", False)


class HFCPUServer:
    def __init__(self, config, model_config, rollout_mode, replica_rank: int = 0, node_rank: int = 0):
        from verl.utils.config import omega_conf_to_dataclass
        from verl.workers.config import HFModelConfig
        from verl.workers.rollout.utils import get_max_position_embeddings

        self.config = omega_conf_to_dataclass(config)
        self.model_config = omega_conf_to_dataclass(model_config, dataclass_type=HFModelConfig)
        engine_kwargs = getattr(self.config, "engine_kwargs", None) or {}
        self.options = HFCPUOptions.from_mapping(engine_kwargs.get("hfcpu"))
        self.rollout_mode = rollout_mode
        self.replica_rank, self.node_rank = replica_rank, node_rank
        if _lora_adapters_requested(self.model_config):
            raise NotImplementedError(
                "hfcpu does not serve LoRA adapters. Use actor_rollout_ref.model.lora.merge=True (merged weights are "
                "synced as full tensors) or train without LoRA for the CPU dry run."
            )
        if self.options.num_threads > 0:
            torch.set_num_threads(self.options.num_threads)

        max_model_len = self.config.max_model_len or get_max_position_embeddings(self.model_config.hf_config)
        self.model = build_model(
            self.model_config,
            torch_dtype(self.config.dtype),
            self.options.attn_implementation,
            self.config.load_format,
        )
        tokenizer = self.model_config.tokenizer
        self.limits = ServerLimits(
            max_model_len=int(max_model_len),
            prompt_length=int(self.config.prompt_length),
            response_length=int(self.config.response_length),
            vocab_size=int(self.model.get_input_embeddings().num_embeddings),
            repetition_penalty=float(getattr(self.config, "repetition_penalty", 1.0) or 1.0),
            ignore_eos=bool(self.config.ignore_eos),
            default_seed=(replica_rank + self.config.seed) if self.config.full_determinism else None,
            stop_strings_allowed=not bool(getattr(self.config, "skip_tokenizer_init", False)),
        )
        seed = self.options.seed if self.options.seed is not None else self.config.seed + replica_rank
        pad = getattr(tokenizer, "pad_token_id", None)
        self.generator = BatchGenerator(
            self.model,
            eos_token_ids(self.model_config),
            pad if pad is not None else 0,
            decode=(lambda ids: tokenizer.decode(ids, skip_special_tokens=True)) if tokenizer is not None else None,
            seed=seed,
            vocab_limit=len(tokenizer) if tokenizer is not None else None,  # verl's vLLM OOV mask
        )
        self.weights = WeightState()
        self._seed = seed
        self._prompt_counts: Counter = Counter()  # (weights version, prompt ids) -> requests seen (request_seeds)
        held = self.model.state_dict()
        self.weights.digest, self.weights.l1 = state_digest(held), l1_norm(held)
        self.strict = self.options.strict_weight_sync and _is_hybrid(rollout_mode)
        if self.strict:
            self.weights.mark_stale("no weights received from the actor yet")
        self._lock = asyncio.Lock()  # one forward or one weight load at a time
        self.batcher = MicroBatcher(
            {"generate": self._run_batch}, max_batch_size=self.options.max_batch_size,
            wait_s=self.options.batch_wait_ms / 1000.0, thread_name="hfcpu",
        )
        self._event("start", load_format=self.config.load_format, dtype=str(self.config.dtype),
                    max_model_len=self.limits.max_model_len)

    # -- observability ------------------------------------------------------------------------
    def _event(self, event: str, **fields_) -> None:
        if not self.options.event_log:
            return
        record = {"event": event, "time": time.time(), "replica": self.replica_rank, "pid": os.getpid(), **fields_}
        with open(self.options.event_log, "a") as f:  # small appends; one writer per replica
            f.write(json.dumps(record) + "\n")

    async def ready(self) -> dict:
        """Returned once the model is built (the replica waits for it)."""
        return self.get_weight_info()

    def get_weight_info(self) -> dict:
        return {"replica": self.replica_rank, **self.weights.as_dict(), "batch_sizes": list(self.batcher.batch_sizes)}

    # -- generation -------------------------------------------------------------------------------
    async def generate(
        self,
        prompt_ids,
        sampling_params: dict[str, Any],
        request_id: str,
        image_data=None,
        video_data=None,
        audio_data=None,
        mm_processor_kwargs=None,
        priority: int = 0,
        **unsupported,
    ):
        from verl.utils.tokenizer.tokenizer import normalize_token_ids
        from verl.workers.rollout.replica import TokenOutput

        if unsupported:
            raise UnsupportedRequest(f"hfcpu.generate got arguments it does not support: {sorted(unsupported)}")
        if any(x is not None and (not hasattr(x, "__len__") or len(x)) for x in (image_data, video_data, audio_data)):
            raise UnsupportedRequest("hfcpu serves text-only models: image/video/audio inputs are not supported")
        if mm_processor_kwargs:
            raise UnsupportedRequest("hfcpu serves text-only models: mm_processor_kwargs is not supported")
        prompt_ids = normalize_token_ids(prompt_ids)
        spec = parse_sampling_params(sampling_params, len(prompt_ids), self.limits)
        if self.options.request_seeds and spec.seed is None and not spec.greedy:
            key = (self.weights.version, tuple(prompt_ids))
            spec = replace(spec, seed=request_seed(self._seed, key[0], key[1], self._prompt_counts[key]))
            self._prompt_counts[key] += 1
        result, global_steps = await self.batcher.submit("generate", GenerationRequest(tuple(prompt_ids), spec))
        extra_fields: dict[str, Any] = {"global_steps": global_steps, "num_cached_tokens": 0}
        if result.prompt_ids is not None:
            extra_fields["prompt_ids"] = result.prompt_ids
            extra_fields["prompt_logprobs"] = result.prompt_logprobs
        if result.top_logprobs is not None:  # rftt_top_logprobs (sampling.TOP_LOGPROBS_KEY)
            extra_fields["top_logprobs"] = {"ids": result.top_logprobs[0], "logprobs": result.top_logprobs[1]}
        if result.token_id_logprobs is not None:  # logprob_token_ids, as the plugin's vLLM server subclass
            extra_fields["token_id_logprobs"] = {"ids": list(spec.logprob_token_ids), "logprobs": result.token_id_logprobs}
        return TokenOutput(
            token_ids=result.token_ids,
            log_probs=result.log_probs,
            stop_reason="completed",  # verl maps vLLM's "stop" and "length" both to "completed"
            extra_fields=extra_fields,
        )

    async def _run_batch(self, requests: list[GenerationRequest]) -> list[tuple[GenerationResult, Optional[int]]]:
        async with self._lock:
            if self.strict:
                self.weights.check_fresh()
            steps = self.weights.global_steps
            results = await asyncio.to_thread(self.generator.run, requests)
        self._event("batch", size=len(requests), global_steps=steps, version=self.weights.version)
        return [(r, steps) for r in results]

    # -- weights ------------------------------------------------------------------------------------
    async def load_weights(self, state: dict, global_steps: Optional[int] = None, digest: Optional[str] = None) -> dict:
        """Install the actor's weights (called by the worker-side adapter after every step)."""
        received = state_digest(state)
        if digest is not None and received != digest:
            raise WeightSyncError(f"weights changed in transit: sent digest {digest}, received {received}")
        async with self._lock:
            held = await asyncio.to_thread(install_weights, self.model, state)
            self.weights.loaded(global_steps, held, l1_norm(state))
            self._prompt_counts.clear()  # counts are per weights version
        info = self.weights.as_dict()
        print(
            f"[hfcpu] replica {self.replica_rank}: loaded weights version={info['version']} "
            f"global_steps={info['global_steps']} digest={info['digest']} l1={info['l1']:.6f}",
            flush=True,
        )
        self._event("load_weights", **info)
        return info

    async def set_global_steps(self, global_steps: int) -> None:
        """vLLM-compatible tag update. hfcpu's adapter passes global_steps to load_weights instead."""
        self.weights.global_steps = global_steps

    # -- control methods called by RolloutReplica / the adapter (nothing to free on CPU) ------------
    async def sleep(self) -> None:
        # In hybrid mode the trainer sleeps the rollout before it changes the weights.
        if self.strict:
            self.weights.mark_stale(f"sleep() after global_steps {self.weights.global_steps}; no update since")
        self._event("sleep", version=self.weights.version, global_steps=self.weights.global_steps)

    async def wake_up(self, tags: Optional[list[str]] = None) -> None:
        return None

    async def clear_kv_cache(self) -> None:
        return None  # no cache survives a request

    async def release_kv_cache(self) -> None:
        return None

    async def resume_kv_cache(self) -> None:
        return None

    async def wait_for_requests_to_drain(self) -> None:
        async with self._lock:  # the running batch (if any) finishes first
            return None

    async def abort_all_requests(self, reset_prefix_cache: bool = True, reject_request: bool = False) -> dict:
        return {"aborted_count": 0, "request_ids": []}  # requests are short; nothing is aborted

    async def abort_request(self, request_id: str, reset_prefix_cache: bool = True) -> dict:
        return {"aborted": False, "request_id": request_id, "error": "hfcpu does not abort requests"}

    async def resume_generation(self) -> None:
        return None

    async def resume_engine_generation(self) -> None:
        return None

    async def open_submission_gate(self) -> None:
        return None

    async def start_profile(self, **kwargs) -> None:
        return None

    async def stop_profile(self) -> None:
        return None
