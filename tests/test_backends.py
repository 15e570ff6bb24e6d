"""Backend contract tests: every backend (fake, hf on the tiny model, and the OpenAI client
against a local vLLM-style server wrapping either) gives the same answers as a direct
computation with the underlying model."""

from __future__ import annotations

import asyncio
import math

import pytest

from rftt_plugin.backends.base import Generation, SamplingParams
from rftt_plugin.backends.fake import FakeBackend, FakeVocab
from tests.helpers import InFlightCounter

KINDS = ["fake", "hf", "openai-fake", "openai-hf"]


@pytest.fixture(scope="module")
def hf_parts(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, tok


class Harness:
    """A backend plus a reference: full next-token log-probs computed directly."""

    def __init__(self, kind, backend, reference, vocab_size, context, decode, inner=None, server=None):
        self.kind, self.backend, self.reference = kind, backend, reference
        self.vocab_size, self.context, self.decode = vocab_size, context, decode
        self.inner, self.server = inner, server

    def ref(self, ids, temperature=1.0):
        return self.reference(list(ids), temperature)

    async def greedy(self, n):
        """Greedy continuation computed from the reference, token by token."""
        ids = list(self.context)
        out = []
        for _ in range(n):
            lp = self.ref(ids)
            tok = max(range(len(lp)), key=lambda t: (lp[t], -t))
            out.append(tok)
            ids.append(tok)
        return out


def _hf_reference(model):
    import torch

    def ref(ids, temperature):
        with torch.inference_mode():
            logits = model(torch.tensor([ids])).logits[0, -1].float()
        return torch.log_softmax(logits / temperature, -1).tolist()

    return ref


@pytest.fixture
async def make(request, hf_parts):
    """Async factory: ``await make(kind, eos_ids=...) -> Harness``; everything closed after."""
    opened = []

    async def factory(kind, eos_ids=None, **client_kwargs):
        base = kind.split("-")[-1]
        if base == "fake":
            vocab = FakeVocab()
            inner = FakeBackend(vocab.vocab_size, eos_ids=eos_ids if eos_ids is not None else (vocab.EOS,),
                                decode=vocab.decode, seed=3)
            reference = lambda ids, t: inner.logprobs(ids, t)  # noqa: E731
            context, decode, size = [1, 40, 41, 42, 3], vocab.decode, vocab.vocab_size
        else:
            from rftt_plugin.backends.hf import HFBackend

            model, tok = hf_parts
            inner = HFBackend(model, tok, eos_ids=eos_ids, max_batch_size=8)
            reference = _hf_reference(model)
            context = tok.encode("What is 2 + 3? The answer is")
            decode, size = inner._decode, inner.vocab_size
        opened.append(inner)
        if not kind.startswith("openai"):
            return Harness(kind, inner, reference, size, context, decode)
        from rftt_plugin.backends.openai import OpenAIBackend
        from rftt_plugin.backends.openai_server import CompletionServer

        server = CompletionServer(inner, "tiny", decode=decode)
        await server.start()
        client = OpenAIBackend(server.base_url, "tiny", max_retries=client_kwargs.pop("max_retries", 1),
                               backoff_s=0.01, **client_kwargs)
        opened.append(client)
        opened.append(server)
        return Harness(kind, client, reference, size, context, decode, inner, server)

    yield factory
    for obj in reversed(opened):
        await (obj.close() if hasattr(obj, "close") and not hasattr(obj, "aclose") else obj.aclose())


# --------------------------------------------------------------------------------------------
# The contract, for every backend
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
async def test_next_token_logprobs_are_exact_full_vocabulary(make, kind):
    h = await make(kind)
    cands = [0, 5, 17, h.vocab_size - 1]
    got = await h.backend.next_token_logprobs(h.context, cands)
    ref = h.ref(h.context)
    assert got == pytest.approx([ref[c] for c in cands], abs=1e-4)
    # Normalised over the whole vocabulary, not over the candidates.
    assert sum(math.exp(x) for x in got) < 0.9


@pytest.mark.parametrize("kind", ["fake", "hf"])
async def test_next_token_distribution_sums_to_one(make, kind):
    h = await make(kind)
    every = await h.backend.next_token_logprobs(h.context, list(range(h.vocab_size)))
    assert sum(math.exp(x) for x in every) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("kind", KINDS)
async def test_sequence_logprobs_sum_the_pieces(make, kind):
    h = await make(kind)
    cands = [[5, 6, 7], [9], [5, 8]]
    got = await h.backend.sequence_logprobs(h.context, cands)
    want = []
    for cand in cands:
        total, ids = 0.0, list(h.context)
        for tok in cand:
            total += h.ref(ids)[tok]
            ids.append(tok)
        want.append(total)
    assert got == pytest.approx(want, abs=1e-4)


@pytest.mark.parametrize("kind", KINDS)
async def test_greedy_generation_follows_the_argmax(make, kind):
    h = await make(kind)
    gen = await h.backend.generate(h.context, SamplingParams(max_tokens=6, temperature=0.0))
    assert gen.finish_reason == "length"
    assert gen.token_ids == await h.greedy(6)
    ids, want = list(h.context), []
    for tok in gen.token_ids:
        want.append(h.ref(ids)[tok])
        ids.append(tok)
    assert gen.logprobs == pytest.approx(want, abs=1e-4)


@pytest.mark.parametrize("kind", KINDS)
async def test_sampled_logprobs_are_temperature_scaled_and_seeded(make, kind):
    h = await make(kind)
    params = SamplingParams(max_tokens=8, temperature=0.7, top_p=0.95, seed=11)
    a = await h.backend.generate(h.context, params)
    b = await h.backend.generate(h.context, params)
    assert a.token_ids == b.token_ids and len(a.token_ids) == 8
    ids = list(h.context)
    for tok, lp in zip(a.token_ids, a.logprobs):
        assert lp == pytest.approx(h.ref(ids, 0.7)[tok], abs=1e-4)
        ids.append(tok)
    c = await h.backend.generate(h.context, params.with_(seed=12))
    d = await h.backend.generate(h.context, params.with_(seed=13))
    assert len({tuple(a.token_ids), tuple(c.token_ids), tuple(d.token_ids)}) > 1


@pytest.mark.parametrize("kind", KINDS)
async def test_stop_token_id_ends_generation_and_is_kept(make, kind):
    h = await make(kind)
    greedy = await h.greedy(8)
    stop = greedy[3]
    k = greedy.index(stop)
    gen = await h.backend.generate(h.context, SamplingParams(max_tokens=8, temperature=0.0, stop_token_ids=(stop,)))
    assert (gen.finish_reason, gen.stop_reason) == ("stop", stop)
    assert gen.token_ids == greedy[:k + 1]


@pytest.mark.parametrize("kind", KINDS)
async def test_stop_string_ends_generation(make, kind):
    h = await make(kind)
    greedy = await h.greedy(10)
    # The text the 5th id adds; generation must stop at the first id that completes it.
    added = h.decode(greedy[:5])[len(h.decode(greedy[:4])):]
    assert added.strip(), "pick a context whose 5th greedy id adds visible text"
    k = next(i for i in range(1, 11) if added in h.decode(greedy[:i]))
    gen = await h.backend.generate(h.context, SamplingParams(max_tokens=10, temperature=0.0, stop=(added,)))
    assert (gen.finish_reason, gen.stop_reason) == ("stop", added)
    assert gen.token_ids == greedy[:k]


@pytest.mark.parametrize("kind", KINDS)
async def test_eos_is_reported_as_eos(make, kind):
    probe = await make(kind)
    greedy = await probe.greedy(4)
    h = await make(kind, eos_ids=[greedy[1]])
    gen = await h.backend.generate(h.context, SamplingParams(max_tokens=4, temperature=0.0))
    assert gen.finish_reason == "eos"
    assert gen.token_ids == greedy[:greedy.index(greedy[1]) + 1]


@pytest.mark.parametrize("kind", KINDS)
async def test_concurrent_requests_equal_sequential_ones(make, kind):
    h = await make(kind)
    params = [SamplingParams(max_tokens=5 + i, temperature=1.0, seed=100 + i) for i in range(5)]
    contexts = [h.context + [10 + i] for i in range(5)]
    together = await asyncio.gather(*(h.backend.generate(c, p) for c, p in zip(contexts, params)))
    alone = [await h.backend.generate(c, p) for c, p in zip(contexts, params)]
    assert [g.token_ids for g in together] == [g.token_ids for g in alone]
    for g, a in zip(together, alone):
        assert g.logprobs == pytest.approx(a.logprobs, abs=1e-4)


@pytest.mark.parametrize("kind", KINDS)
async def test_bad_request_gives_an_error_generation(make, kind):
    h = await make(kind)
    gen = await h.backend.generate(h.context + [h.vocab_size + 5], SamplingParams(max_tokens=3))
    assert gen.finish_reason == "error" and gen.token_ids == [] and gen.stop_reason
    empty = await h.backend.generate(h.context, SamplingParams(max_tokens=0))
    assert (empty.finish_reason, empty.token_ids) == ("length", [])


def test_generation_contract_is_checked():
    with pytest.raises(ValueError):
        Generation([1, 2], [0.0], "stop")
    with pytest.raises(ValueError):
        Generation([], [], "finished")
    with pytest.raises(ValueError):
        SamplingParams(top_p=0)


# --------------------------------------------------------------------------------------------
# hf specifics
# --------------------------------------------------------------------------------------------

async def test_hf_batches_concurrent_requests(make):
    h = await make("hf")
    h.backend.batcher.batches.clear()
    await asyncio.gather(*(h.backend.next_token_logprobs(h.context + [i], [1, 2]) for i in range(6)))
    await asyncio.gather(*(h.backend.generate(h.context + [i], SamplingParams(max_tokens=3, seed=i)) for i in range(6)))
    kinds = [k for k, n in h.backend.batcher.batches for _ in range(n)]
    assert kinds.count("score") == 6 and kinds.count("generate") == 6
    assert max(n for _, n in h.backend.batcher.batches) > 1


async def test_hf_top_k_one_is_greedy_and_raw_mode(make, hf_parts):
    from rftt_plugin.backends.hf import HFBackend

    h = await make("hf")
    gen = await h.backend.generate(h.context, SamplingParams(max_tokens=5, temperature=1.3, top_k=1, seed=1))
    assert gen.token_ids == await h.greedy(5)
    raw = HFBackend(*hf_parts, logprobs_mode="raw")
    try:
        g = await raw.generate(h.context, SamplingParams(max_tokens=3, temperature=0.5, seed=4))
        assert g.logprobs[0] == pytest.approx(h.ref(h.context)[g.token_ids[0]], abs=1e-4)
    finally:
        await raw.aclose()


# --------------------------------------------------------------------------------------------
# OpenAI client specifics (against the local server)
# --------------------------------------------------------------------------------------------

async def test_openai_request_shape(make):
    h = await make("openai-fake")
    await h.backend.generate(h.context, SamplingParams(max_tokens=3, temperature=0.1, stop_token_ids=(9,),
                                                       stop=("x",), seed=5))
    body = h.server.requests[-1]
    assert body["prompt"] == h.context and body["return_tokens_as_token_ids"] is True
    assert body["stop_token_ids"] == [9] and body["stop"] == ["x"] and body["seed"] == 5
    assert body["model"] == "tiny" and body["logprobs"] == 1
    # default read-out (auto): one request on the context itself, vLLM's logprob_token_ids
    await h.backend.next_token_logprobs(h.context, [4, 5, 6])
    body = h.server.requests[-1]
    assert body["prompt"] == h.context and body["logprob_token_ids"] == [4, 5, 6]
    assert body["max_tokens"] == 1 and body["logprobs"] == 1 and body["temperature"] == 1.0 and body["top_p"] == 1.0
    assert "prompt_logprobs" not in body and h.backend.readout_path == "token_ids"


async def test_openai_prompt_logprobs_method_request_shape(make):
    h = await make("openai-fake", logprob_method="prompt_logprobs")
    got = await h.backend.next_token_logprobs(h.context, [4, 5, 6])
    body = h.server.requests[-1]
    assert body["prompt"] == [h.context + [4], h.context + [5], h.context + [6]]
    assert body["prompt_logprobs"] == 0 and body["max_tokens"] == 1 and "logprob_token_ids" not in body
    assert got == pytest.approx([h.ref(h.context)[c] for c in (4, 5, 6)], abs=1e-6)
    assert h.backend.readout_path == "prompt_logprobs"


@pytest.mark.parametrize("old_server", ["ignores the field", "HTTP 400"])
async def test_openai_auto_readout_falls_back_once_where_the_server_lacks_token_ids(make, capsys, old_server):
    """vLLM 0.24.0's OpenAI endpoint ignores ``logprob_token_ids`` (its answer then lacks the ids);
    another server may reject it: ``auto`` then uses ``prompt_logprobs`` for good and says so once."""
    from rftt_plugin.backends.openai import OpenAIBackend, TokenIdsRefused

    h = await make("openai-fake")
    if old_server == "ignores the field":
        h.server.token_ids_field = False
    else:
        h.server.fault = lambda payload: 400 if "logprob_token_ids" in payload else None
    ref = h.ref(h.context)
    for _ in range(2):
        before = len(h.server.requests)
        got = await h.backend.next_token_logprobs(h.context, [4, 5, 6])
        assert got == pytest.approx([ref[c] for c in (4, 5, 6)], abs=1e-6)
        sent = h.server.requests[before:]
        assert [("logprob_token_ids" in b, "prompt_logprobs" in b) for b in sent] == \
            ([(True, False)] if _ == 0 else []) + [(False, True)]
    assert h.backend.readout_path == "prompt_logprobs" and h.backend.refusal_reason
    err = capsys.readouterr().err
    assert err.count("tag read-out via prompt_logprobs (the server refused logprob_token_ids") == 1
    strict = OpenAIBackend(h.server.base_url, "tiny", logprob_method="token_ids", max_retries=0)
    try:
        with pytest.raises(TokenIdsRefused):
            await strict.next_token_logprobs(h.context, [4, 5, 6])
    finally:
        await strict.aclose()


async def test_openai_retries_transient_errors_then_succeeds(make):
    h = await make("openai-fake", max_retries=3)
    failures = iter([503, 429])
    h.server.fault = lambda payload: next(failures, None)
    before = h.backend.requests
    got = await h.backend.next_token_logprobs(h.context, [5])
    assert got == pytest.approx([h.ref(h.context)[5]], abs=1e-6)
    assert h.backend.requests - before == 3


async def test_openai_does_not_retry_client_errors(make):
    from rftt_plugin.backends.openai import OpenAIBackend, OpenAIBackendError

    h = await make("openai-fake", max_retries=3)
    wrong = OpenAIBackend(h.server.base_url, "not-served", max_retries=3, backoff_s=0.01)
    try:
        gen = await wrong.generate(h.context, SamplingParams(max_tokens=2))
        assert gen.finish_reason == "error" and "400" in gen.stop_reason
        assert wrong.requests == 1
        with pytest.raises(OpenAIBackendError):
            await wrong.next_token_logprobs(h.context, [1])
    finally:
        await wrong.aclose()


async def test_openai_timeout_and_concurrency_limit(make):
    from rftt_plugin.backends.openai import OpenAIBackend

    h = await make("openai-fake")
    h.inner.latency_s = 0.05
    counter = InFlightCounter(h.inner)
    limited = OpenAIBackend(h.server.base_url, "tiny", max_concurrency=2, max_retries=0)
    impatient = OpenAIBackend(h.server.base_url, "tiny", timeout_s=0.01, max_retries=0)
    try:
        gens = await asyncio.gather(*(limited.generate(h.context, SamplingParams(max_tokens=2, seed=i))
                                      for i in range(6)))
        assert all(g.finish_reason in ("length", "eos") for g in gens) and counter.peak == 2
        slow = await impatient.generate(h.context, SamplingParams(max_tokens=2))
        assert slow.finish_reason == "error" and "Timeout" in slow.stop_reason
    finally:
        await limited.aclose()
        await impatient.aclose()


async def test_openai_top_logprobs_method(make):
    h = await make("openai-fake", logprob_method="top_logprobs", top_logprobs=5)
    ref = h.ref(h.context)
    order = sorted(range(len(ref)), key=lambda t: -ref[t])
    got = await h.backend.next_token_logprobs(h.context, [order[0], order[3], order[50]])
    assert got[:2] == pytest.approx([ref[order[0]], ref[order[3]]], abs=1e-6)
    assert got[2] == -math.inf


# ---------------------------------------------------------------------- the engine: tag ids and prompt ids

def test_fake_engine_builds_the_fake_vocabularys_prompts_and_tag_ids():
    from rftt_plugin.backends.engine import make_engine
    from rftt_plugin.backends.fake import TagScript
    from rftt_plugin.chat_prompt import chat_prompt_ids
    from rftt_plugin.tokens import FunctionalTag as T

    script = TagScript()
    v = script.vocab
    engine = make_engine("fake", script=script, token_mode="added")
    q = "What is 2 + 2 ?"
    ids = engine.prompt_ids(q)
    # the chat-template look-alike: <|im_start|> one id per word <|im_end|> \n <|im_start|> \n
    assert ids[0] == v.IM_START and ids[-4:] == [v.EOS, v.NEWLINE, v.IM_START, v.NEWLINE] and len(ids) == 6 + 5  # 6 words
    assert ids == chat_prompt_ids(v, q)
    assert engine.layout is engine.tag_ids and engine.tag_ids.eos_id == v.EOS
    assert engine.tag_ids.open_segments[T.OUTPUT] == (*v.open_ids[T.OUTPUT], v.NEWLINE)
    assert make_engine("fake", token_mode=None).tag_ids is None
    with pytest.raises(ValueError, match="one user turn"):
        v.apply_chat_template([{"role": "system", "content": "x"}, {"role": "user", "content": q}])
