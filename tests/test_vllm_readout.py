"""The cached tag read-out (issue 14) on hfcpu, in the default lane.

``read_tag_logprobs_cached`` asks one generate request on the context itself for the top-k of the
next-token distribution (``rftt_top_logprobs``), which a prefix-caching server can serve from its
cache, and falls back to exact ``prompt_logprobs`` requests for tags outside the top-k. Checked:
equal to a masked transformers forward pass within 1e-4 (independent reference) and to the
uncached read-out, with and without fall-backs; the same seed gives the same tree with either
read-out. Tags outside the top-k are read from a second cacheable request restricted to them plus
an anchor of known log-prob (``allowed_token_ids``), never from ``prompt_logprobs``. The vLLM side
is in tests/test_vllm_offline.py.
"""

from __future__ import annotations

import asyncio

import pytest
import torch

from rftt_plugin.integration.server_backend import (
    VerlServerBackend, read_tag_logprobs, read_tag_logprobs_cached,
)

TOL = 1e-4


@pytest.fixture
def hfcpu(prepared_model_dir):
    """A fresh server per test: its batcher binds to the event loop of the first request."""
    import verl  # noqa: F401
    from hydra import compose, initialize_config_module
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from verl.workers.rollout.replica import RolloutMode

    from rftt_plugin.cpu.hfcpu.server import HFCPUServer

    with initialize_config_module("verl.trainer.config", version_base=None):
        cfg = compose("ppo_trainer", overrides=[
            "+dryrun=cpu", f"actor_rollout_ref.model.path={prepared_model_dir}", "data.max_prompt_length=256",
            "data.max_response_length=64", "actor_rollout_ref.rollout.load_format=auto",
        ])
    server = HFCPUServer(cfg.actor_rollout_ref.rollout, cfg.actor_rollout_ref.model, RolloutMode("colocated"))
    tok = AutoTokenizer.from_pretrained(prepared_model_dir)
    hf = AutoModelForCausalLM.from_pretrained(prepared_model_dir, dtype=torch.float32).eval()
    return server, tok, hf


class _Manager:
    """server_manager.generate over an in-process server, counting requests by kind."""

    def __init__(self, server):
        self.server, self.kinds = server, []

    async def generate(self, request_id, prompt_ids, sampling_params):
        self.kinds.append(("top+allowed" if "allowed_token_ids" in sampling_params else "top")
                          if "rftt_top_logprobs" in sampling_params else
                          f"prompt k={sampling_params.get('prompt_logprobs')}" if "prompt_logprobs" in sampling_params
                          else "step")
        return await self.server.generate(prompt_ids=prompt_ids, sampling_params=dict(sampling_params),
                                          request_id=request_id)


def _context(tok):
    from rftt_plugin.search.layout import chat_prompt_ids

    return chat_prompt_ids(tok, "What is 12 plus 30?") + tok("<analyze>\nAdd.\n</analyze>\n",
                                                             add_special_tokens=False)["input_ids"]


def test_cached_readout_equals_forward_pass_and_uncached_readout(hfcpu):
    from rftt_plugin.tokens import TagVocabulary

    server, tok, hf = hfcpu
    opening = [ids[0] for ids in TagVocabulary.from_tokenizer(tok, "added").open_ids.values()]
    ctx = _context(tok)
    with torch.no_grad():
        logits = hf(input_ids=torch.tensor([ctx])).logits[0, -1].double()
    ref = torch.log_softmax(logits[: len(tok)], dim=-1)  # verl's OOV mask: ids >= len(tokenizer) removed

    async def both(top_k, mgr):
        return (await read_tag_logprobs_cached(mgr, "t", ctx, opening, top_k=top_k),
                await read_tag_logprobs(_Manager(server), "t", ctx, opening, top_k=20))

    async def run_all():
        return [(k, m, await both(k, m)) for k, m in ((20, _Manager(server)), (2, _Manager(server)))]

    for top_k, mgr, (got, old) in asyncio.run(run_all()):  # one event loop: the server's batcher binds to it
        assert max(abs(g - float(ref[c])) for g, c in zip(got, opening)) < TOL
        assert max(abs(g - o) for g, o in zip(got, old)) < 1e-6
        assert mgr.kinds[0] == "top" and mgr.kinds[1:] in ([], ["top+allowed"]), mgr.kinds  # no prompt_logprobs
        if top_k == 2:
            assert mgr.kinds == ["top", "top+allowed"], "no fall-back happened: the test would not cover it"


def test_same_seed_same_tree_with_either_readout(hfcpu):
    from rftt_plugin.search.config import SearchConfig
    from rftt_plugin.search.layout import TokenLayout, chat_prompt_ids
    from rftt_plugin.search.mcts import FunctionalMCTS

    server, tok, _ = hfcpu
    layout = TokenLayout.from_tokenizer(tok, mode="added")
    prompt = chat_prompt_ids(tok, "What is 12 plus 30?")
    layout = layout.__class__(**{**layout.__dict__, "prompt_fn": lambda _q: prompt})
    config = SearchConfig(iterations=4, max_depth=3, step_max_tokens=8, direct_answer_max_tokens=8,
                          max_response_tokens=48, seed=0)

    async def tree(readout):
        mgr = _Manager(server)
        backend = VerlServerBackend(mgr, "rftt-x", eos_id=layout.eos_id, readout=readout)
        result = await FunctionalMCTS(backend, layout, config).search("q")
        return [(n.id, n.parent, n.tag, n.rank, tuple(n.token_ids), round(n.prior_logprob, 5))
                for n in result.tree.walk()], mgr.kinds

    async def both():  # one event loop: the server's batcher binds to it
        return await tree("prompt_logprobs"), await tree("top_logprobs")

    (before, kinds_before), (after, kinds_after) = asyncio.run(both())
    assert "top" in kinds_after and "top" not in kinds_before
    assert len(before) > 4 and before == after
