"""The tag read-outs on hfcpu and on plain-Python toy servers, in the default lane.

Issue 28: ``read_tag_logprobs_token_ids`` reads every candidate in ONE generate request on the
context through vLLM's ``logprob_token_ids``. Checked: equal to a masked transformers forward pass
(hfcpu) and to a hand-built distribution's log-softmax, one request per read-out, the same trees
as the ``prompt_logprobs`` read-out on hfcpu, ``auto`` falling back once (announced) where the
server drops the values, the server subclass returning the values and refusing to mix read-out
kinds on one engine, and hfcpu refusing what vLLM refuses.

Issue 14:

``read_tag_logprobs_cached`` sends, in one round trip, two generate requests on the context itself
(which a prefix-caching server serves from its cache): the top-k of the next-token distribution
(``rftt_top_logprobs``) and the distribution restricted to the candidates (``allowed_token_ids``);
candidates outside the top-k are anchored on one inside it. Only when none is inside does a third
request follow. Checked: equal to a masked transformers forward pass within 1e-4 (independent
reference) and to the uncached ``prompt_logprobs`` read-out; equal to a hand-built distribution's
log-softmax with the expected requests and round trips; the same seed gives the same tree with
either read-out. The vLLM side is in tests/test_vllm_offline.py.
"""

from __future__ import annotations

import asyncio
import math

import pytest
import torch

from rftt_plugin.integration.readout_token_ids import read_tag_logprobs_token_ids
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
        self.kinds.append("ids" if "logprob_token_ids" in sampling_params else
                          ("top+allowed" if "allowed_token_ids" in sampling_params else "top")
                          if "rftt_top_logprobs" in sampling_params else
                          f"prompt k={sampling_params.get('prompt_logprobs')}" if "prompt_logprobs" in sampling_params
                          else "step")
        return await self.server.generate(prompt_ids=prompt_ids, sampling_params=dict(sampling_params),
                                          request_id=request_id)


def _context(tok):
    from rftt_plugin.chat_prompt import chat_prompt_ids

    return chat_prompt_ids(tok, "What is 12 plus 30?") + tok("<analyze>\nAdd.\n</analyze>\n",
                                                             add_special_tokens=False)["input_ids"]


def _reference(tok, hf):
    """(opening-tag ids, context ids, reference next-token log-probs from a plain forward pass)."""
    from rftt_plugin.tag_ids import TagIds

    opening = [ids[0] for ids in TagIds.from_tokenizer(tok, "added").open_ids.values()]
    ctx = _context(tok)
    with torch.no_grad():
        logits = hf(input_ids=torch.tensor([ctx])).logits[0, -1].double()
    return opening, ctx, torch.log_softmax(logits[: len(tok)], dim=-1)  # verl's OOV mask: ids >= len(tokenizer) removed


def test_cached_readout_equals_forward_pass_and_uncached_readout(hfcpu):
    server, tok, hf = hfcpu
    opening, ctx, ref = _reference(tok, hf)
    top1 = int(ref.argmax())
    # the tags alone (on this untrained model none is in the top-k: the top-1 anchors a third request),
    # and the tags plus the top-1 token (a candidate in the top-k anchors the rest: one round trip)
    cases = [(k, cands) for k in (20, 2) for cands in (opening, opening + [top1])]

    async def both(top_k, cands, mgr):
        return (await read_tag_logprobs_cached(mgr, "t", ctx, cands, top_k=top_k),
                await read_tag_logprobs(_Manager(server), "t", ctx, cands, top_k=20))

    async def run_all():
        return [(k, cands, m, await both(k, cands, m)) for k, cands in cases for m in (_Manager(server),)]

    for top_k, cands, mgr, (got, old) in asyncio.run(run_all()):  # one event loop: the server's batcher binds to it
        assert max(abs(g - float(ref[c])) for g, c in zip(got, cands)) < TOL
        assert max(abs(g - o) for g, o in zip(got, old)) < 1e-6
        in_top = set(ref.topk(top_k).indices.tolist()) & set(cands)
        assert len(in_top) < len(cands), "every candidate in the top-k: the restricted read-out would not be tested"
        third = [] if in_top else ["top+allowed"]
        assert mgr.kinds == ["top", "top+allowed"] + third, (top_k, cands, mgr.kinds)  # never prompt_logprobs


class _Toy:
    """A server over one fixed next-token distribution, answering ``rftt_top_logprobs`` (with
    ``allowed_token_ids``: renormalised over the allowed set, as vLLM's processed log-probs), and
    recording which requests were in flight together."""

    def __init__(self, logits, honour_key=True):
        self.logits, self.honour_key = list(logits), honour_key
        self.requests, self.rounds, self._in_flight = [], 0, 0

    async def generate(self, request_id, prompt_ids, sampling_params):
        from types import SimpleNamespace

        if self._in_flight == 0:
            self.rounds += 1
        self._in_flight += 1
        await asyncio.sleep(0.01)  # answered later: requests sent together overlap here
        self._in_flight -= 1
        allowed = sampling_params.get("allowed_token_ids")
        asked = sampling_params.get("logprob_token_ids")
        if asked is not None:  # vLLM's field: every listed id's log-prob, full vocabulary
            self.requests.append(("ids", tuple(asked)))
            norm = math.log(sum(math.exp(x) for x in self.logits))
            fields = {"token_id_logprobs": {"ids": list(asked), "logprobs": [self.logits[i] - norm for i in asked]}}
            return SimpleNamespace(token_ids=[0], log_probs=None, extra_fields=fields if self.honour_key else {})
        self.requests.append(sorted(allowed) if allowed else "top")
        k = sampling_params.get("rftt_top_logprobs")
        if not self.honour_key or not k:
            return SimpleNamespace(token_ids=[0], log_probs=None, extra_fields={})
        ids = sorted(allowed) if allowed else range(len(self.logits))
        norm = math.log(sum(math.exp(self.logits[i]) for i in ids))
        ranked = sorted(ids, key=lambda i: -self.logits[i])[:k]
        return SimpleNamespace(token_ids=[ranked[0]], log_probs=None, extra_fields={
            "top_logprobs": {"ids": ranked, "logprobs": [self.logits[i] - norm for i in ranked]}})


# logits of a 30-id vocabulary: ids 0..29 with logit 3.0 - 0.2 * id (id 0 most likely), and the
# tag-like ids 25..28 moved to chosen places
_LOGITS = [3.0 - 0.2 * i for i in range(30)]
_LOGITS[25], _LOGITS[26], _LOGITS[27], _LOGITS[28] = 2.9, -4.0, -7.5, -1.25


def _log_softmax(logits, i):
    return logits[i] - math.log(sum(math.exp(x) for x in logits))


@pytest.mark.parametrize("candidates, top_k, rounds, requests", [
    ([25, 26, 27, 28], 20, 1, ["top", [25, 26, 27, 28]]),        # top-20 = 0, 25, 1..18: anchor 25
    ([25, 26, 27, 28], 3, 1, ["top", [25, 26, 27, 28]]),         # top-3 = 0, 25, 1: anchor 25
    ([26, 27, 28], 5, 2, ["top", [26, 27, 28], [0, 26, 27, 28]]),  # none in the top-5: anchor on id 0
    ([27], 4, 2, ["top", [0, 27]]),                               # one candidate: no restricted request first
    ([0, 1], 20, 1, ["top", [0, 1]]),                             # all in the top-k
])
def test_cached_readout_values_and_round_trips_against_a_plain_reference(candidates, top_k, rounds, requests):
    toy = _Toy(_LOGITS)
    got = asyncio.run(read_tag_logprobs_cached(toy, "t", [1, 2, 3], candidates, top_k=top_k))
    want = [_log_softmax(_LOGITS, c) for c in candidates]
    assert max(abs(g - w) for g, w in zip(got, want)) < 1e-9, (got, want)
    assert toy.rounds == rounds  # sequential round trips: the restricted request rides with the top-k one
    assert sorted(map(str, toy.requests)) == sorted(map(str, requests))


@pytest.mark.parametrize("candidates", [[25, 26, 27, 28], [26, 27, 28], [27], [0, 1], list(range(30))])
def test_token_ids_readout_one_request_against_a_plain_reference(candidates):
    toy = _Toy(_LOGITS)
    got = asyncio.run(read_tag_logprobs_token_ids(toy, "t", [1, 2, 3], candidates))
    want = [_log_softmax(_LOGITS, c) for c in candidates]
    assert max(abs(g - w) for g, w in zip(got, want)) < 1e-9, (got, want)
    assert toy.rounds == 1 and toy.requests == [("ids", tuple(candidates))]  # whatever is in any top-k


def test_token_ids_readout_bad_input_and_bad_answers():
    from types import SimpleNamespace

    for cands, msg in (([25, 25], "distinct"), ([], "at least one"), (list(range(129)), "at most 128"),
                       ([-1, 2], ">= 0")):
        with pytest.raises(ValueError, match=msg):
            asyncio.run(read_tag_logprobs_token_ids(_Toy(_LOGITS), "t", [1], cands))
    with pytest.raises(ValueError, match="non-empty context"):
        asyncio.run(read_tag_logprobs_token_ids(_Toy(_LOGITS), "t", [], [1]))

    class Shuffled:  # answers the ids in another order: values must not be matched by position
        async def generate(self, request_id, prompt_ids, sampling_params):
            ids = list(reversed(sampling_params["logprob_token_ids"]))
            return SimpleNamespace(extra_fields={"token_id_logprobs": {"ids": ids, "logprobs": [0.0] * len(ids)}})

    with pytest.raises(RuntimeError, match=r"has ids \[2, 1\]"):
        asyncio.run(read_tag_logprobs_token_ids(Shuffled(), "t", [5], [1, 2]))


def test_token_ids_readout_equals_forward_pass_in_one_request(hfcpu):
    server, tok, hf = hfcpu
    opening, ctx, ref = _reference(tok, hf)
    cands = opening + [int(ref.argmax())]

    async def run():
        mgr = _Manager(server)
        got = await read_tag_logprobs_token_ids(mgr, "t", ctx, cands)
        return got, mgr.kinds, await read_tag_logprobs(_Manager(server), "t", ctx, cands, top_k=20)

    got, kinds, old = asyncio.run(run())
    assert kinds == ["ids"]
    assert max(abs(g - float(ref[c])) for g, c in zip(got, cands)) < TOL
    assert max(abs(g - o) for g, o in zip(got, old)) < 1e-6


def test_hfcpu_refuses_what_vllm_refuses_with_logprob_token_ids():
    from rftt_plugin.cpu.hfcpu.sampling import ServerLimits, UnsupportedRequest, parse_sampling_params

    limits = ServerLimits(max_model_len=64, prompt_length=32, response_length=32, vocab_size=100)
    assert parse_sampling_params({"logprob_token_ids": [3, 1]}, 4, limits).logprob_token_ids == (3, 1)
    for params, msg in (({"logprob_token_ids": [1], "logprobs": True}, "truthy logprobs"),
                        ({"logprob_token_ids": list(range(129))}, "more than vLLM allows"),
                        ({"logprob_token_ids": [5, 100]}, "out of vocabulary")):
        with pytest.raises(UnsupportedRequest, match=msg):
            parse_sampling_params(params, 4, limits)


def test_cached_readout_refused_by_a_server_without_the_key():
    from rftt_plugin.integration.server_backend import ReadoutUnsupported

    with pytest.raises(ReadoutUnsupported, match="rftt_top_logprobs"):
        asyncio.run(read_tag_logprobs_cached(_Toy(_LOGITS, honour_key=False), "t", [1], [25, 26]))
    with pytest.raises(ValueError, match="distinct"):
        asyncio.run(read_tag_logprobs_cached(_Toy(_LOGITS), "t", [1], [25, 25]))


def test_same_seed_same_tree_with_either_readout(hfcpu):
    from rftt_plugin.search.config import SearchConfig
    from rftt_plugin.chat_prompt import chat_prompt_ids
    from rftt_plugin.search.mcts import FunctionalMCTS
    from rftt_plugin.tag_ids import TagIds

    server, tok, _ = hfcpu
    layout = TagIds.from_tokenizer(tok, mode="added")
    prompt = chat_prompt_ids(tok, "What is 12 plus 30?")
    config = SearchConfig(iterations=4, max_depth=3, step_max_tokens=8, direct_answer_max_tokens=8,
                          max_response_tokens=48, seed=0)

    async def tree(readout):
        mgr = _Manager(server)
        backend = VerlServerBackend(mgr, "rftt-x", eos_id=layout.eos_id, readout=readout)
        result = await FunctionalMCTS(backend, layout, config).search("q", prompt)
        return [(n.id, n.parent, n.tag, n.rank, tuple(n.token_ids), round(n.prior_logprob, 5))
                for n in result.tree.walk()], mgr.kinds

    async def three():  # one event loop: the server's batcher binds to it
        return await tree("prompt_logprobs"), await tree("top_logprobs"), await tree("token_ids")

    (before, kinds_before), (after, kinds_after), (ids, kinds_ids) = asyncio.run(three())
    assert "top" in kinds_after and "top" not in kinds_before
    assert len(before) > 4 and before == after == ids
    readouts = [k for k in kinds_ids if k != "step"]
    assert readouts and set(readouts) == {"ids"}  # one request per expansion, nothing else
    assert len(readouts) == sum(k == "top" for k in kinds_after)  # as many expansions as the top-k read-out


@pytest.mark.parametrize("recipe", ["rftt", "rftt_tree"])
def test_recipes_default_to_the_cached_readout_and_keep_the_others(recipe, monkeypatch):
    """``rftt.tag_readout`` defaults to ``auto`` (the cached read-out, falling back to
    ``prompt_logprobs`` if the server refuses it); the other values stay selectable."""
    from rftt_plugin.config.schema import ConfigError, RfttSettings, check_composed_config
    from tests.test_config_schema import _compose

    assert RfttSettings().tag_readout == "auto"
    assert check_composed_config(_compose([], recipe)).tag_readout == "auto"
    for value in ("prompt_logprobs", "top_logprobs"):
        assert check_composed_config(_compose([f"rftt.tag_readout={value}"], recipe)).tag_readout == value
    with pytest.raises(ConfigError, match="rftt.tag_readout='cached': must be one of .*prompt_logprobs"):
        check_composed_config(_compose(["rftt.tag_readout=cached"], recipe))
    monkeypatch.delenv("RFTT_TAG_READOUT", raising=False)
    assert VerlServerBackend(None, "r", eos_id=0).readout == "auto"
    monkeypatch.setenv("RFTT_TAG_READOUT", "prompt_logprobs")
    assert VerlServerBackend(None, "r", eos_id=0).readout == "prompt_logprobs"


def test_auto_readout_falls_back_to_prompt_logprobs_when_refused(monkeypatch, capsys):
    """``auto`` on verl's stock vLLM server, which passes ``logprob_token_ids`` on to vLLM but drops
    the values: one refused request, then exact values through ``prompt_logprobs`` for good, said
    once (this toy's rows hold the asked candidate only, whatever k: enough for the k=0 path)."""
    import rftt_plugin.integration.server_backend as sb

    class Stock(_Toy):  # answers prompt_logprobs like verl's server (row j-1 predicts token j)
        async def generate(self, request_id, prompt_ids, sampling_params):
            from types import SimpleNamespace

            if "rftt_top_logprobs" in sampling_params:
                raise TypeError("Unexpected keyword argument 'rftt_top_logprobs'")
            if "logprob_token_ids" in sampling_params:  # accepted, values not returned
                self.requests.append("ids")
                return SimpleNamespace(token_ids=[0], log_probs=None, extra_fields={"num_cached_tokens": 0})
            self.requests.append(f"prompt k={sampling_params['prompt_logprobs']}")
            rows = [[None]] * (len(prompt_ids) - 1)
            rows[-1] = [prompt_ids[-1]]
            lps = [[None]] * (len(prompt_ids) - 1)
            lps[-1] = [_log_softmax(self.logits, prompt_ids[-1])]
            return SimpleNamespace(token_ids=[0], log_probs=None, extra_fields={"prompt_ids": rows, "prompt_logprobs": lps})

    monkeypatch.setattr(sb, "_REFUSED", {})
    server = Stock(_LOGITS)
    backend = VerlServerBackend(server, "r", eos_id=0, readout="auto", readout_top_k=20)

    async def twice():
        return [await backend.next_token_logprobs([1, 2, 3], [26, 27]) for _ in range(2)]

    for got in asyncio.run(twice()):
        assert max(abs(g - _log_softmax(_LOGITS, c)) for g, c in zip(got, [26, 27])) < 1e-9
    assert "token_id_logprobs" in sb._REFUSED["token_ids"]
    # the first read-out tries logprob_token_ids once; 26 from the k=20 row, 27 on its own; never top-k
    assert server.requests == ["ids", "prompt k=20", "prompt k=0", "prompt k=20", "prompt k=0"]
    assert capsys.readouterr().out.count("refused the logprob_token_ids tag read-out") == 1
    strict = VerlServerBackend(Stock(_LOGITS), "r", eos_id=0, readout="token_ids")
    with pytest.raises(RuntimeError, match="ignored logprob_token_ids"):
        asyncio.run(strict.next_token_logprobs([1, 2, 3], [26, 27]))


def test_vllm_server_subclass_keeps_concurrent_requests_apart():
    """``RfttVLLMHttpServer`` (the key on verl's vLLM server) over a stand-in for verl's server and
    vLLM's engine: the two read-out requests of one expansion run at once, so each request's
    ``rftt_top_logprobs`` must reach its own engine call only (a context variable per request)."""
    from types import SimpleNamespace

    from rftt_plugin.integration import vllm_readout

    seen = {}

    class Engine:  # vLLM's AsyncLLM.generate: an async generator of outputs with per-position top-k
        async def generate(self, prompt, sampling_params, request_id, **_):
            seen[request_id] = sampling_params.logprobs
            await asyncio.sleep(0.01)  # the other requests start meanwhile
            k = sampling_params.logprobs
            ranked = sorted(range(len(_LOGITS)), key=lambda i: -_LOGITS[i])
            norm = math.log(sum(math.exp(x) for x in _LOGITS))
            first = None if k is None else {i: SimpleNamespace(logprob=_LOGITS[i] - norm, rank=r + 1)
                                            for r, i in enumerate(ranked[:max(k, 1)])}
            asked = getattr(sampling_params, "logprob_token_ids", None)
            if asked:  # vLLM: the sampled id, then the asked ids, placeholder ranks
                first = {i: SimpleNamespace(logprob=_LOGITS[i] - norm, rank=r) for r, i in enumerate([ranked[0]] + asked)}
            yield SimpleNamespace(outputs=[SimpleNamespace(token_ids=[ranked[0]], logprobs=None if first is None else [first])])

    class VerlServer:  # what verl's vLLMHttpServer.generate does with the dict and the engine
        def __init__(self):
            self.engine = Engine()

        async def generate(self, prompt_ids, sampling_params, request_id, image_data=None):
            params = SimpleNamespace(logprobs=0 if sampling_params.pop("logprobs", False) else None, **sampling_params)
            final = None
            async for out in self.engine.generate(prompt={"prompt_token_ids": prompt_ids}, sampling_params=params,
                                                  request_id=request_id):
                final = out
            return SimpleNamespace(token_ids=final.outputs[0].token_ids, extra_fields={})

    saved, vllm_readout._CLASS = vllm_readout._CLASS, None  # build the subclass over the stand-in
    try:
        cls = vllm_readout.server_class(VerlServer)
        server = cls()

        async def three():
            return await asyncio.gather(
                server.generate([1, 2], {"rftt_top_logprobs": 3, "logprobs": False}, "a"),
                server.generate([1, 2], {"rftt_top_logprobs": 5, "logprobs": False, "allowed_token_ids": [4]}, "b"),
                server.generate([1, 2], {"logprobs": False}, "c"))

        a, b, c = asyncio.run(three())
        with pytest.raises(ValueError, match="rftt_top_logprobs must be in \\[1, 20\\], got 21"):
            asyncio.run(cls().generate([1], {"rftt_top_logprobs": 21}, "d"))
        # a top-k read-out engine refuses logprob_token_ids (vLLM would corrupt the top-k neighbours)
        with pytest.raises(vllm_readout.MixedReadoutError, match="served rftt_top_logprobs read-outs"):
            asyncio.run(server.generate([1, 2], {"logprob_token_ids": [4], "logprobs": False}, "e"))
        # logprob_token_ids: the engine call keeps logprobs unset (vLLM: unset or len(ids)), the values come back
        ids_server = cls()

        async def ids_and_rollout():
            return await asyncio.gather(
                ids_server.generate([1, 2], {"logprob_token_ids": [27, 0, 25], "logprobs": False}, "f"),
                ids_server.generate([1, 2], {"logprobs": True}, "g"))

        f, g = asyncio.run(ids_and_rollout())
        with pytest.raises(vllm_readout.MixedReadoutError, match="served logprob_token_ids read-outs"):
            asyncio.run(ids_server.generate([1, 2], {"rftt_top_logprobs": 3, "logprobs": False}, "h"))
        with pytest.raises(ValueError, match="needs logprobs=False"):
            asyncio.run(cls().generate([1], {"logprob_token_ids": [3], "logprobs": True}, "i"))
    finally:
        vllm_readout._CLASS = saved
    assert seen["f"] is None and seen["g"] == 0
    assert f.extra_fields["token_id_logprobs"]["ids"] == [27, 0, 25]
    assert max(abs(x - _log_softmax(_LOGITS, i)) for x, i in zip(f.extra_fields["token_id_logprobs"]["logprobs"],
                                                                  [27, 0, 25])) < 1e-12
    assert "token_id_logprobs" not in g.extra_fields
    ranked = sorted(range(len(_LOGITS)), key=lambda i: -_LOGITS[i])
    assert {k: seen[k] for k in "abc"} == {"a": 3, "b": 5, "c": None}
    assert a.extra_fields["top_logprobs"]["ids"] == ranked[:3]
    assert b.extra_fields["top_logprobs"]["ids"] == ranked[:5]
    assert abs(a.extra_fields["top_logprobs"]["logprobs"][1] - _log_softmax(_LOGITS, ranked[1])) < 1e-12
    assert "top_logprobs" not in c.extra_fields
