"""Build the hfcpu server's model from verl's ``HFModelConfig`` and install synced weights."""

from __future__ import annotations

from typing import Mapping

import torch

from rftt_plugin.cpu.hfcpu.weights import WeightSyncError, state_digest

_DTYPES = {
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
}


def torch_dtype(name) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    try:
        return _DTYPES[str(name).lower()]
    except KeyError:
        raise ValueError(f"hfcpu: unknown rollout dtype {name!r}; use one of {sorted(_DTYPES)}") from None


def build_model(model_config, dtype: torch.dtype, attn_implementation: str, load_format: str) -> torch.nn.Module:
    """``load_format == "dummy"``: random init from the config (weights come from the actor, as in
    vLLM's hybrid mode); anything else: read the checkpoint at ``model_config.local_path``.

    The attention implementation is forced (default ``sdpa``): the server always runs on CPU,
    where verl's default ``flash_attention_2`` cannot load.
    """
    from transformers import AutoModelForCausalLM

    hf_config = model_config.hf_config
    trust = bool(getattr(model_config, "trust_remote_code", False))
    if load_format == "dummy":
        model = AutoModelForCausalLM.from_config(
            hf_config, dtype=dtype, attn_implementation=attn_implementation, trust_remote_code=trust
        )
    else:
        model = AutoModelForCausalLM.from_pretrained(
            model_config.local_path, config=hf_config, dtype=dtype,
            attn_implementation=attn_implementation, trust_remote_code=trust,
        )
    return model.to("cpu").eval()


def eos_token_ids(model_config) -> frozenset[int]:
    """EOS ids vLLM stops on: the tokenizer's EOS plus generation_config's ``eos_token_id`` list."""
    ids: set[int] = set()
    tok = getattr(model_config, "tokenizer", None)
    if tok is not None and tok.eos_token_id is not None:
        ids.add(int(tok.eos_token_id))
    gen = getattr(model_config, "generation_config", None)
    value = getattr(gen, "eos_token_id", None) if gen is not None else None
    if value is None:
        value = getattr(model_config.hf_config, "eos_token_id", None)
    if isinstance(value, int):
        ids.add(value)
    elif value is not None:
        ids.update(int(v) for v in value)
    return frozenset(ids)


def install_weights(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> str:
    """Copy ``state`` into ``model``; verify every tensor landed; return the digest of what the model holds.

    Unknown names are an error. Missing names are an error unless the parameter shares storage
    with one that was sent (tied embeddings).
    """
    current = model.state_dict()
    unexpected = sorted(set(state) - set(current))
    if unexpected:
        raise WeightSyncError(f"the actor sent weights the rollout model does not have: {unexpected[:5]}")
    sent_ptrs = {current[name].data_ptr() for name in state}
    missing = sorted(name for name in set(current) - set(state) if current[name].data_ptr() not in sent_ptrs)
    if missing:
        raise WeightSyncError(f"the actor did not send these rollout weights: {missing[:5]}")
    with torch.no_grad():
        for name, tensor in state.items():
            current[name].copy_(tensor)
    expected = state_digest({name: t.to(current[name].dtype) for name, t in state.items()})
    held = state_digest({name: current[name] for name in state})
    if held != expected:
        raise WeightSyncError(f"weights did not land in the rollout model (digest {held} != {expected})")
    return held
