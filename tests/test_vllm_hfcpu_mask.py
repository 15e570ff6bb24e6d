"""hfcpu applies verl's vLLM out-of-vocabulary mask: ids >= len(tokenizer) get -inf logits.

verl 0.9.1's vLLM server patches ``compute_logits`` so that ``logits[..., len(tokenizer):] = -inf``
(verl/workers/rollout/vllm_rollout/utils.py, ``monkey_patch_compute_logits``); both sampling and
``prompt_logprobs`` read those logits. These tests run in the default lane (no vLLM needed): a
stand-in model returns fixed logits whose largest entry is a padded row, so an unmasked server
would pick it; the expected log-probs are a plain-Python log-softmax over the first ``limit`` ids.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch

from rftt_plugin.cpu.hfcpu.engine import BatchGenerator, GenerationRequest
from rftt_plugin.cpu.hfcpu.sampling import SamplingSpec

ROWS = 8      # embedding rows of the stand-in model
LIMIT = 5     # len(tokenizer): ids 5, 6, 7 are padded rows
LOGITS = [0.5, 2.0, -1.0, 1.0, 0.0, 9.0, 8.0, 7.0]  # the padded ids dominate


class _NoCache:
    """Holds nothing; takes the row selection the decode loop makes when a row finishes."""

    def batch_select_indices(self, rows):
        pass


class FixedLogitsLM(torch.nn.Module):
    """Every position gets LOGITS; a cache object is passed through unchanged."""

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=False):
        b, l = input_ids.shape
        logits = torch.tensor(LOGITS).expand(b, l, ROWS).clone()
        return SimpleNamespace(logits=logits, past_key_values=past_key_values or _NoCache())


def _log_softmax_first(n: int) -> list[float]:
    z = math.log(sum(math.exp(x) for x in LOGITS[:n]))
    return [x - z for x in LOGITS[:n]]


def test_greedy_and_sampling_never_pick_padded_rows_and_logprobs_are_masked():
    gen = BatchGenerator(FixedLogitsLM(), eos_token_ids=frozenset(), pad_token_id=0, seed=0, vocab_limit=LIMIT)
    greedy = SamplingSpec(max_tokens=3, temperature=0.0, logprobs=True)
    sampled = SamplingSpec(max_tokens=40, temperature=1.0, logprobs=True, seed=3)
    out_g, out_s = gen.run([GenerationRequest((1, 2), greedy), GenerationRequest((3,), sampled)])
    expected = _log_softmax_first(LIMIT)
    assert out_g.token_ids == [1, 1, 1]  # argmax among ids < 5 (id 5 would win unmasked)
    assert all(abs(lp - expected[1]) < 1e-6 for lp in out_g.log_probs)
    assert max(out_s.token_ids) < LIMIT, out_s.token_ids
    for t, lp in zip(out_s.token_ids, out_s.log_probs):
        assert abs(lp - expected[t]) < 1e-6


def test_prompt_logprobs_are_a_softmax_over_the_tokenizer_ids():
    gen = BatchGenerator(FixedLogitsLM(), eos_token_ids=frozenset(), pad_token_id=0, seed=0, vocab_limit=LIMIT)
    spec = SamplingSpec(max_tokens=1, temperature=1.0, prompt_logprobs=3)
    (out,) = gen.run([GenerationRequest((0, 4, 2), spec)])
    expected = _log_softmax_first(LIMIT)
    # rows 0 and 1 predict prompt tokens 1 and 2; top-3 of the masked distribution is ids 1, 3, 0
    assert out.prompt_ids[:2] == [[1, 3, 0], [1, 3, 0]]
    for row in out.prompt_logprobs[:2]:
        assert [round(x, 6) for x in row] == [round(expected[i], 6) for i in (1, 3, 0)]
    assert out.prompt_ids[2] == [0, 0, 0] and out.prompt_logprobs[2] == [0.0, 0.0, 0.0]  # verl's dummy row


def test_without_a_limit_every_row_counts():
    """The stand-in really would emit a padded id without the mask (guards the test above)."""
    gen = BatchGenerator(FixedLogitsLM(), eos_token_ids=frozenset(), pad_token_id=0, seed=0)
    (out,) = gen.run([GenerationRequest((1,), SamplingSpec(max_tokens=1, temperature=0.0, logprobs=True))])
    assert out.token_ids == [5]
