"""The openai backend's guard against padded vocabulary rows (default lane: no vLLM needed).

Plain ``vllm serve`` samples ids >= len(tokenizer) from a checkpoint with padded rows and then
crashes in its detokenizer; the backend therefore sends ``logit_bias = {id: -100}`` for those ids
with every request. The real server is exercised in tests/test_vllm_serve.py.
"""

from __future__ import annotations

from types import SimpleNamespace

from rftt_plugin.backends.base import SamplingParams
from rftt_plugin.backends.fake import FakeBackend, FakeVocab
from rftt_plugin.backends.openai import OpenAIBackend, out_of_vocab_ids
from rftt_plugin.backends.openai_server import CompletionServer


class _Tok:
    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n


def test_out_of_vocab_ids_are_the_rows_the_tokenizer_lacks():
    assert out_of_vocab_ids(_Tok(5), SimpleNamespace(vocab_size=8)) == [5, 6, 7]
    assert out_of_vocab_ids(_Tok(8), SimpleNamespace(vocab_size=8)) == []
    # multimodal configs keep the text model's size in get_text_config()
    nested = SimpleNamespace(vocab_size=99, get_text_config=lambda: SimpleNamespace(vocab_size=10))
    assert out_of_vocab_ids(_Tok(7), nested) == [7, 8, 9]


async def test_every_request_carries_the_bias_and_no_bias_without_padded_rows():
    vocab = FakeVocab()
    inner = FakeBackend(vocab.vocab_size, decode=vocab.decode, seed=3)
    server = CompletionServer(inner, "tiny", decode=vocab.decode)
    await server.start()
    guarded = OpenAIBackend(server.base_url, "tiny", banned_ids=[vocab.vocab_size - 2, vocab.vocab_size - 1])
    plain = OpenAIBackend(server.base_url, "tiny")
    try:
        context = [1, 40, 41]
        await guarded.generate(context, SamplingParams(max_tokens=3, temperature=1.0))
        await guarded.next_token_logprobs(context, [40, 41])
        guarded.logprob_method = "top_logprobs"
        await guarded.next_token_logprobs(context, [40, 41])
        n_guarded = len(server.requests)
        await plain.generate(context, SamplingParams(max_tokens=3, temperature=1.0))
    finally:
        await guarded.aclose()
        await plain.aclose()
        await server.close()
    want = {str(vocab.vocab_size - 2): -100.0, str(vocab.vocab_size - 1): -100.0}
    assert n_guarded == 3
    assert all(p.get("logit_bias") == want for p in server.requests[:n_guarded]), server.requests
    assert "logit_bias" not in server.requests[-1]
