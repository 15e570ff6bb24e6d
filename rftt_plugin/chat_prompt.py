"""The prompt ids of a question: the model's chat template with the question as the one user turn.

The search, evaluation and warm-up condition on these ids (the same ones the trainer sees); the
reference implementation conditioned on the raw question text instead. Tokenizers are duck-typed
(``apply_chat_template``), so this module imports nothing heavy.
"""

from __future__ import annotations

from typing import Any, Mapping

__all__ = ["chat_prompt_ids"]


def chat_prompt_ids(tokenizer: Any, question: str) -> list[int]:
    """Chat-template ids for ``question`` as the single user turn, generation prompt added."""
    out = tokenizer.apply_chat_template([{"role": "user", "content": question}],
                                        add_generation_prompt=True, tokenize=True)
    # transformers 5 returns a BatchEncoding (a dict); older versions a plain list.
    if isinstance(out, Mapping) or hasattr(out, "keys"):
        out = out["input_ids"]
    if out and isinstance(out[0], (list, tuple)):
        out = out[0]
    return [int(t) for t in out]
