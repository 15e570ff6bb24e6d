"""A tiny random model with the same architecture family and the SAME tokenizer as a real one.

A dry run must exercise the recipe's real tokenizer and chat template (prompt lengths, special
tokens, EOS handling) but cannot afford the real weights on CPU. So we read the model's config,
shrink its dimensions (2 layers, hidden 64, 4 heads / 2 KV heads, ...), initialise random weights
with the same model class, copy the tokenizer and generation config unchanged, and cache the result
in a scratch folder keyed by the source config. The vocabulary size is kept, so every token id the
tokenizer can produce stays valid (with a large vocabulary the embedding dominates the size:
151k x 64 floats is about 39 MB).

Reads only local files: a local path, or a hub id already in the Hugging Face cache (the machine is
offline). Multimodal configs (``text_config``/``vision_config``) are refused.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

def default_cache_dir() -> Path:
    """``$RFTT_CACHE/dryrun-models`` (default ``~/.cache/rftt/dryrun-models``), read at call time."""
    return Path(os.environ.get("RFTT_CACHE", Path.home() / ".cache" / "rftt")) / "dryrun-models"


@dataclass(frozen=True)
class ShrinkSpec:
    num_layers: int = 2
    hidden_size: int = 64
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 128
    num_experts: int = 4
    experts_per_token: int = 2
    seed: int = 0


def shrink_config(config, spec: ShrinkSpec = ShrinkSpec()):
    """Shrink the known size attributes of a transformers config in place; return it."""
    if getattr(config, "vision_config", None) is not None or getattr(config, "text_config", None) is not None:
        raise ValueError(f"{type(config).__name__} is multimodal: the CPU dry run supports text-only causal LMs")
    head_dim = spec.hidden_size // spec.num_heads
    kv = spec.num_kv_heads
    orig_heads = getattr(config, "num_attention_heads", None)
    orig_kv = getattr(config, "num_key_value_heads", None)
    if orig_heads and orig_kv and orig_kv == orig_heads:
        kv = spec.num_heads  # keep plain multi-head attention models multi-head
    sizes = {
        "num_hidden_layers": spec.num_layers,
        "hidden_size": spec.hidden_size,
        "num_attention_heads": spec.num_heads,
        "num_key_value_heads": kv,
        "head_dim": head_dim,
        "intermediate_size": spec.intermediate_size,
        "moe_intermediate_size": spec.intermediate_size // 2,
        "shared_expert_intermediate_size": spec.intermediate_size // 2,
        "num_experts": spec.num_experts,
        "num_local_experts": spec.num_experts,
        "n_routed_experts": spec.num_experts,
        "num_experts_per_tok": spec.experts_per_token,
        "max_window_layers": spec.num_layers,
        "first_k_dense_replace": 0,
    }
    for name, value in sizes.items():
        if getattr(config, name, None) is not None:
            setattr(config, name, value)
    layer_types = getattr(config, "layer_types", None)
    if isinstance(layer_types, list) and layer_types:
        config.layer_types = (layer_types * spec.num_layers)[: spec.num_layers]
    if getattr(config, "mlp_only_layers", None):
        config.mlp_only_layers = []
    return config


def _cache_key(source: str, config_dict: dict, spec: ShrinkSpec) -> str:
    payload = json.dumps({"source": source, "config": config_dict, "spec": asdict(spec)}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def tiny_clone(source: str, cache_dir: str | Path | None = None, spec: ShrinkSpec = ShrinkSpec()) -> Path:
    """Return a folder with a shrunk random copy of ``source`` (built on first use, then cached)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    try:
        config = AutoConfig.from_pretrained(source)
    except OSError as exc:
        raise FileNotFoundError(
            f"cannot read the config of {source!r} offline. Pass a local model folder, or a hub id that is "
            f"already in the Hugging Face cache ({exc})"
        ) from exc
    key = _cache_key(source, config.to_dict(), spec)
    out = Path(cache_dir or default_cache_dir()) / f"{Path(source.rstrip('/')).name}-tiny-{key}"
    if (out / "config.json").exists() and (out / ".complete").exists():
        return out
    shrink_config(config, spec)
    config.torch_dtype = "float32"
    torch.manual_seed(spec.seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(source)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    try:
        GenerationConfig.from_pretrained(source).save_pretrained(out)
    except OSError:
        pass  # no generation_config.json: the saved model's default is fine
    (out / "SOURCE").write_text(f"tiny random clone of {source} ({asdict(spec)})\n")
    (out / ".complete").write_text("")
    return out
