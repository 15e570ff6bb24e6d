"""Batched token-by-token decoding with a transformers causal LM: the one loop behind the ``hf``
backend and ``hfcpu`` (verl's rollout on CPU, a vLLM stand-in).

1. prefill: the prompts are left-padded into one ``[B, Lmax]`` batch (attention mask, position
   ids counted from each row's first real token); one forward builds the KV cache;
2. decode: each unfinished row picks its next token from its last logits (``pick``), then one
   forward feeds every unfinished row its token; finished rows leave the batch and the cache.

What a token *is* -- how it is sampled, which log-prob is reported, when a row stops -- belongs to
the caller's ``pick``: the backend and hfcpu keep different contracts there (see
:func:`rftt_plugin.backends.hf.HFBackend._sample` and :mod:`rftt_plugin.cpu.hfcpu.sampling`).
torch is imported inside the functions: the backends package imports without it.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence

# pick(request index, that row's last logits as fp32 [vocab]) -> (chosen token, row finished?)
Pick = Callable[[int, Any], "tuple[int, bool]"]


def left_pad(rows: Sequence[Sequence[int]], pad_id: int, device: Any = None):
    """``(ids, mask, position_ids)`` of ``rows`` left-padded to one width: every row's real
    tokens end at the last column, so the last logits of the batch are every row's next token."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(list(r), dtype=torch.long)
        mask[i, width - len(r):] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    if device is not None:
        ids, mask, pos = ids.to(device), mask.to(device), pos.to(device)
    return ids, mask, pos


def keeps_logits(model: Any) -> bool:
    """Whether ``model.forward`` takes ``logits_to_keep`` (transformers >= 4.50 causal LMs do;
    a hand-written test model may not)."""
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def decode(model: Any, prompts: Sequence[Sequence[int]], pick: Pick, *, pad_id: int, device: Any = None,
           logits_filter: Callable[[Any], Any] | None = None) -> None:
    """Run ``pick`` for every row at every step until each row says it is finished.

    ``logits_filter`` maps the ``[B, vocab]`` fp32 logits of a step before any row reads them
    (hfcpu masks ids beyond the tokenizer there, as verl's vLLM server does).
    """
    import torch

    if not prompts:
        return
    extra = {"logits_to_keep": 1} if keeps_logits(model) else {}

    def last_logits(out) -> Any:
        logits = out.logits[:, -1, :].float()
        return logits_filter(logits) if logits_filter is not None else logits

    ids, mask, pos = left_pad(prompts, pad_id, device)
    active = list(range(len(prompts)))
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **extra)
        cache, logits, last_pos = out.past_key_values, last_logits(out), pos[:, -1]
        while True:
            keep, tokens = [], []
            for row, index in enumerate(active):
                token, finished = pick(index, logits[row])
                if not finished:
                    keep.append(row)
                    tokens.append(int(token))
            if not keep:
                return
            if len(keep) < len(active):  # drop finished rows from the batch and the cache
                rows = torch.tensor(keep, device=mask.device)
                cache.batch_select_indices(rows)
                mask, last_pos = mask[rows], last_pos[rows]
                active = [active[r] for r in keep]
            mask = torch.cat([mask, torch.ones((len(active), 1), dtype=mask.dtype, device=mask.device)], 1)
            last_pos = last_pos + 1
            step = torch.tensor(tokens, device=mask.device).unsqueeze(1)
            out = model(input_ids=step, attention_mask=mask, position_ids=last_pos.unsqueeze(1),
                        past_key_values=cache, use_cache=True, **extra)
            logits = last_logits(out)
