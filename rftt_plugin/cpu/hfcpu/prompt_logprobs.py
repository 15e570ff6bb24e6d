"""``prompt_logprobs`` in exactly the layout verl's vLLM server returns.

verl 0.9.1 converts vLLM's ``RequestOutput.prompt_logprobs`` with ``extract_prompt_logprobs``
(verl/workers/rollout/vllm_rollout/utils.py:540-573) into two lists of equal length ``L`` (the
prompt length), stored in ``TokenOutput.extra_fields``:

``extra_fields["prompt_ids"][j]`` / ``extra_fields["prompt_logprobs"][j]`` for ``j < L - 1``
    describe the model's distribution **after reading prompt tokens 0..j**, i.e. the prediction
    of prompt token ``j + 1`` (vLLM drops position 0, which has no prediction).

    * ``k = prompt_logprobs = 0``: one entry, the actual next prompt token:
      ``[prompt[j + 1]]`` and ``[log p(prompt[j + 1] | prompt[:j + 1])]``.
    * ``k > 0``: the top-k token ids and their log-probs, most likely first (vLLM rank 1..k).
      The actual next prompt token is **not** added when it is outside the top k.

``j = L - 1`` (the last prompt position) is a **dummy**: ``[0] * max(k, 1)`` ids and
    ``[0.0] * max(k, 1)`` log-probs. So the distribution over the token that would follow the
    whole prompt is *not* in ``prompt_logprobs``; to read P(tag | context) send
    ``context + [candidate]`` and read entry ``len(context) - 1``.

Log-probs are ``log_softmax`` of the raw logits (no temperature, penalties or
``allowed_token_ids``), as vLLM computes prompt log-probs.
"""

from __future__ import annotations

import torch


def prompt_logprobs_layout(logprobs: torch.Tensor, prompt_ids: list[int], k: int) -> tuple[list, list]:
    """Build (prompt_ids, prompt_logprobs) lists from ``logprobs[L, V]`` of a forward over the prompt.

    ``logprobs[j]`` must be the log-softmax of the logits at prompt position ``j``.
    """
    length = len(prompt_ids)
    if logprobs.shape[0] != length:
        raise ValueError(f"logprobs has {logprobs.shape[0]} positions for a prompt of {length} tokens")
    ids_out: list[list[int]] = []
    lps_out: list[list[float]] = []
    if length > 1:
        rows = logprobs[: length - 1].float()
        if k == 0:
            nxt = torch.tensor(prompt_ids[1:], dtype=torch.long)
            vals = rows.gather(1, nxt[:, None])[:, 0]
            ids_out = [[int(t)] for t in nxt.tolist()]
            lps_out = [[float(v)] for v in vals.tolist()]
        else:
            top = torch.topk(rows, k, dim=-1)  # sorted, most likely first = vLLM rank order
            ids_out = [list(map(int, r)) for r in top.indices.tolist()]
            lps_out = [list(map(float, r)) for r in top.values.tolist()]
    width = max(k, 1)
    ids_out.append([0] * width)
    lps_out.append([0.0] * width)
    return ids_out, lps_out
