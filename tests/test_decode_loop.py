"""One generation loop (backends/decode.py) behind the hf backend and hfcpu: batched generations
equal a plain reference loop -- one request at a time, no padding, no KV cache, the whole sequence
recomputed every step, the stop rules written out here -- with the same seeds.

The token choosers (``HFBackend._sample``, ``hfcpu.sampling.choose_token``) are called by the
reference too: they are each side's contract, not the loop under test."""

from __future__ import annotations

import asyncio

import pytest
import torch

from rftt_plugin.backends.base import SamplingParams
from rftt_plugin.backends.decode import left_pad
from rftt_plugin.backends.hf import HFBackend
from rftt_plugin.cpu.hfcpu.engine import BatchGenerator, GenerationRequest
from rftt_plugin.cpu.hfcpu.sampling import SamplingSpec, choose_token

TEXTS = ["What is 2 + 3?", "Let me think step by step about this math problem.", "x", "The final answer is",
         "a b c d e f g"]


@pytest.fixture(scope="module")
def parts(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa").eval()
    return model, tok, [tok(t)["input_ids"] for t in TEXTS]


def _last_logits(model, ids, vocab_limit=None):
    with torch.no_grad():
        logits = model(torch.tensor([list(ids)])).logits[0, -1].float()
    if vocab_limit is not None:
        logits[vocab_limit:] = float("-inf")
    return logits


def _stopped(tokens, max_tokens, eos, stop_ids, stop_strings, decode):
    """The documented stop rule, written plainly: (finish reason, stop reason) or None."""
    last = tokens[-1]
    if last in stop_ids:
        return "stop", last
    if last in eos:
        return "eos", None
    hits = [s for s in stop_strings if s in decode(tokens)]
    if hits:
        return "stop", min(hits, key=decode(tokens).find)
    if len(tokens) >= max_tokens:
        return "length", None
    return None


def test_left_pad_puts_every_row_at_the_right_edge():
    ids, mask, pos = left_pad([[5, 6, 7], [9]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 9]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert pos.tolist() == [[0, 1, 2], [0, 0, 0]]


def test_hf_backend_batched_generations_equal_a_plain_loop(parts):
    model, tok, prompts = parts
    the = tok.encode(" the")[0]
    params = [SamplingParams(max_tokens=12, temperature=0.0),
              SamplingParams(max_tokens=16, temperature=0.9, top_p=0.9, top_k=30, seed=5),
              SamplingParams(max_tokens=10, temperature=1.3, seed=6),
              SamplingParams(max_tokens=20, temperature=0.7, stop=("e",), seed=7),
              SamplingParams(max_tokens=14, temperature=1.0, top_k=5, stop_token_ids=(the,), seed=8)]
    backend = HFBackend(model, tok, max_batch_size=8)
    decode = backend._decode

    async def batched():
        out = await asyncio.gather(*(backend.generate(p, q) for p in prompts for q in params))
        await backend.aclose()
        return out

    got = asyncio.run(batched())
    assert max(size for _, size in backend.batcher.batches) > 1  # the loop really ran batches
    finishes = set()
    for gen, (prompt, q) in zip(got, [(p, q) for p in prompts for q in params]):
        rng = torch.Generator().manual_seed(q.seed if q.seed is not None else 0)
        tokens, lps, done = [], [], None
        while done is None:
            tok_id, lp = backend._sample(_last_logits(model, prompt + tokens), q, rng)
            tokens.append(tok_id)
            lps.append(lp)
            done = _stopped(tokens, q.max_tokens, set(backend.eos_ids), set(q.stop_token_ids), q.stop, decode)
        assert gen.token_ids == tokens
        assert gen.logprobs == pytest.approx(lps, abs=1e-4)
        assert (gen.finish_reason, gen.stop_reason) == done
        finishes.add(done[0])
    assert {"length", "stop"} <= finishes  # rows left the batch at different steps


def test_hfcpu_batched_generations_equal_a_plain_loop(parts):
    model, tok, prompts = parts
    limit = 200  # a tokenizer smaller than the embedding: verl's vLLM mask applies
    decode = lambda ids: tok.decode(ids, skip_special_tokens=True)  # noqa: E731
    eos = frozenset({tok.eos_token_id})
    gen = BatchGenerator(model, eos, tok.pad_token_id, decode=decode, seed=0, vocab_limit=limit)
    specs = [SamplingSpec(max_tokens=10, temperature=0.0, logprobs=True, ignore_eos=True),
             SamplingSpec(max_tokens=12, temperature=0.9, top_p=0.9, top_k=20, logprobs=True, seed=1),
             SamplingSpec(max_tokens=12, temperature=1.0, logprobs=True, repetition_penalty=1.3, seed=2),
             SamplingSpec(max_tokens=12, temperature=0.8, logprobs=True, stop=("e",), seed=3),
             SamplingSpec(max_tokens=12, temperature=1.2, logprobs=True, allowed_token_ids=tuple(range(50, 120)),
                          stop_token_ids=(60, 61, 62), seed=4)]
    requests = [GenerationRequest(tuple(p), s) for p in prompts for s in specs]
    got = gen.run(requests)
    finishes = set()
    for out, req in zip(got, requests):
        spec, rng = req.spec, torch.Generator().manual_seed(req.spec.seed or 0)  # greedy: unused
        tokens, lps, done = [], [], None
        while done is None:
            seen = torch.tensor(list(req.prompt_ids) + tokens, dtype=torch.long)
            tok_id, lp = choose_token(_last_logits(model, list(req.prompt_ids) + tokens, limit), spec, seen, rng)
            tokens.append(tok_id)
            lps.append(lp)
            done = _stopped(tokens, spec.max_tokens, set() if spec.ignore_eos else eos, set(spec.stop_token_ids),
                            spec.stop, decode)
        assert out.token_ids == tokens
        assert out.log_probs == pytest.approx(lps, abs=1e-4)
        assert out.finish_reason == ("length" if done[0] == "length" else "stop")
        assert max(out.token_ids) < limit
        finishes.add(out.finish_reason)
    assert finishes == {"length", "stop"}
