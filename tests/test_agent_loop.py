"""The `rftt_tree` agent loop through verl's own classes (no Ray, no vLLM).

A prepared tiny model serves through :class:`tests.verl_fakes.TinyServerManager`; sessions are
instantiated exactly as verl's agent-loop worker does; outputs go through verl's
``AgentLoopWorkerTQ._agent_loop_postprocess`` with the TransferQueue put captured.
"""

from __future__ import annotations

import asyncio

import pytest
import torch

from rftt_plugin.tokens import validate


@pytest.fixture(scope="module")
def prepared_dir(warm_model_dir):
    return warm_model_dir


@pytest.fixture(scope="module")
def model_and_tok(prepared_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(prepared_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(prepared_dir)


def _config(prepared_dir, recipe="rftt", extra=()):
    import verl  # noqa: F401
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    overrides = [f"+recipe={recipe}", f"actor_rollout_ref.model.path={prepared_dir}", "data.max_prompt_length=64",
                 "data.max_response_length=160", "actor_rollout_ref.rollout.n=4", "rftt.search.step_max_tokens=48",
                 "rftt.search.direct_answer_max_tokens=48", "rftt.search.max_depth=6", *extra]
    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        return compose(config_name="ppo_trainer", overrides=overrides)


def _make_loop(config, server, tok):
    from verl.experimental.agent_loop.agent_loop import DictConfigWrap, _agent_loop_registry
    from verl.utils.dataset.rl_dataset import RLHFDataset
    import hydra

    return hydra.utils.instantiate(_agent_loop_registry["rftt_tree"], trainer_config=DictConfigWrap(config),
                                   server_manager=server, tokenizer=tok, processor=None, hf_model_type="qwen2",
                                   dataset_cls=RLHFDataset, data_config=DictConfigWrap(config.data))


def _kwargs(uid, session, question="What is 7 * 7 + 4?", gold="53"):  # in the warm-up distribution
    return {"raw_prompt": [{"role": "user", "content": question}], "uid": uid, "session_id": session,
            "global_steps": 1, "data_source": "rftt_math", "reward_model": {"style": "rule", "ground_truth": gold},
            "extra_info": {"index": 0}, "index": 0}


async def _run_sessions(config, server, tok, uid, n, sampling=None, order=None):
    order = list(range(n)) if order is None else order
    tasks = {s: asyncio.create_task(_make_loop(config, server, tok).run(dict(sampling or {"temperature": 1.0}),
                                                                         **_kwargs(uid, s)))
             for s in order}
    done = await asyncio.wait_for(asyncio.gather(*tasks.values(), return_exceptions=True), timeout=240)
    return dict(zip(tasks.keys(), done))


@pytest.fixture
def server(model_and_tok):
    from rftt_plugin.backends.hf import HFBackend

    model, tok = model_and_tok
    return TinyServerManager(model, HFBackend(model, tok, max_batch_size=8))


from tests.verl_fakes import TinyServerManager  # noqa: E402

pytestmark = pytest.mark.slow  # a 300-step warm-up model fixture and live searches


async def test_sessions_in_any_order_get_distinct_leaves_of_one_tree(prepared_dir, model_and_tok, server):
    from rftt_plugin.integration.agent_loop import RfttTreeAgentLoop

    model, tok = model_and_tok
    config = _config(prepared_dir)
    order = [2, 0, 3, 1]
    outs = await _run_sessions(config, server, tok, "uid-A", 4, order=order)
    assert not [o for o in outs.values() if isinstance(o, BaseException)], outs
    assert RfttTreeAgentLoop._jobs == {}  # shared state cleaned up
    assert {c["request_id"] for c in server.calls} == {"rftt-uid-A"}  # one sticky id per tree
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is 7 * 7 + 4?"}], add_generation_prompt=True,
                                     tokenize=True)
    prompt = list(prompt["input_ids"] if hasattr(prompt, "keys") else prompt)
    nodes_seen = {o.extra_fields["rftt_tree_nodes"] for o in outs.values()}
    assert len(nodes_seen) == 1  # every session read the same tree
    for s, out in outs.items():
        assert out.prompt_ids == prompt
        assert len(out.response_ids) == len(out.response_mask) == len(out.response_logprobs) > 0
        assert out.reward_score is not None and out.extra_fields["min_global_steps"] == 3
        report = validate(tok.decode(out.response_ids, skip_special_tokens=True))  # as verl decodes
        assert report.ok or out.extra_fields["rftt_leaf_truncated"] == 1
    # prefix metadata: each node starts with its opening tag; a node shared by two leaves covers
    # the same response ids in both (what a prefix-sharing trainer relies on)
    spans_by_node: dict[int, list[int]] = {}
    for out in outs.values():
        prefix, ids = out.extra_fields["rftt_prefix"], out.response_ids
        assert prefix["parent_ids"] == [0] + prefix["node_ids"][:-1]
        bounds = prefix["starts"] + [len(ids)]
        for k, (node, tag) in enumerate(zip(prefix["node_ids"], out.extra_fields["rftt_tags"])):
            assert ids[bounds[k]] == tok.convert_tokens_to_ids(f"<{tag}>")
            if k + 1 < len(prefix["node_ids"]):  # the last node of a leaf may carry the EOS
                span = ids[bounds[k]:bounds[k + 1]]
                assert spans_by_node.setdefault(node, span) == span, node


async def test_leaf_ids_and_logprobs_match_a_direct_forward_pass(prepared_dir, model_and_tok, server):
    from rftt_plugin.tokens import TAGS

    model, tok = model_and_tok
    config = _config(prepared_dir)
    out = (await _run_sessions(config, server, tok, "uid-B", 2))[0]  # the most probable path: several steps
    ids = out.prompt_ids + out.response_ids
    with torch.inference_mode():
        logits = model(torch.tensor([ids])).logits[0].float()
    open_ids = {tok.convert_tokens_to_ids(t.open) for t in TAGS}
    close_ids = {tok.convert_tokens_to_ids(t.close) for t in TAGS}
    temp = config.rftt.search.step_temperature
    checked = 0
    for i, token in enumerate(out.response_ids):
        pos = len(out.prompt_ids) + i - 1
        prev = out.response_ids[i - 1] if i else None
        if token in open_ids:  # tag chosen by the search: its log-prob at temperature 1
            expected = torch.log_softmax(logits[pos], -1)[token]
        elif prev in open_ids or prev in close_ids or token == tok.eos_token_id:
            assert out.response_logprobs[i] == 0.0  # format ids inserted by the search carry 0
            continue
        else:  # sampled text (closing tag included): the temperature-scaled distribution
            expected = torch.log_softmax(logits[pos] / temp, -1)[token]
        assert abs(float(expected) - out.response_logprobs[i]) < 2e-3, (i, token)
        checked += 1
    assert checked >= 10


async def test_failed_search_fails_every_session_and_cleans_up(prepared_dir, model_and_tok):
    from rftt_plugin.backends.hf import HFBackend
    from rftt_plugin.integration.agent_loop import RfttTreeAgentLoop

    model, tok = model_and_tok
    failing = TinyServerManager(model, HFBackend(model, tok), fail=True)
    outs = await _run_sessions(_config(prepared_dir), failing, tok, "uid-C", 3)
    assert all(isinstance(o, RuntimeError) for o in outs.values()), outs
    assert "produced no leaf" in str(outs[0])
    assert RfttTreeAgentLoop._jobs == {}


async def test_missing_rftt_section_is_a_clear_error(prepared_dir, model_and_tok, server):
    from omegaconf import OmegaConf, open_dict

    model, tok = model_and_tok
    config = _config(prepared_dir)
    with open_dict(config):
        del config["rftt"]
    with pytest.raises(Exception, match=r"\+recipe=rftt"):  # hydra wraps it in InstantiationException
        _make_loop(config, server, tok)
    assert OmegaConf.is_config(config)


def _canned_search_class(tok):
    """A stand-in for FunctionalMCTS whose tree is fixed by hand, so what the test checks does not
    depend on what a random tiny model happens to sample (tree shapes differ between machines).

    root -> n1 <analyze> -> n2 <next_step> -> n3 <output> (reward 1, reached twice)
                         -> n4 <output>                   (reward 0)
         -> n5 <direct_answer> -> n6 <output>             (reward 0.1)
    Iterations reach n3, n4, n6, n3, so V(n1) = 2/3, V(n2) = 1, V(root) = 2.1/4 and the first path
    has two non-zero step credits before its last token.
    """
    from rftt_plugin.search.mcts import SearchResult
    from rftt_plugin.search.tree import Iteration, Tree

    def ids(text):
        return tok.encode(text, add_special_tokens=False)

    def step(tree, parent, tag, text, reward=None):
        body = [tok.convert_tokens_to_ids(f"<{tag}>"), *ids(f"\n{text}\n"), tok.convert_tokens_to_ids(f"</{tag}>")]
        node = tree.add_child(parent, tag, generated=True, text=text)
        node.append(body[:1], [0.0], sampled=False)
        node.append(body[1:], [-0.5] * (len(body) - 1), sampled=True)
        node.close_index = len(body) - 1
        if reward is not None:
            node.terminal_reason, node.reward = "output", reward
        return node

    class CannedMCTS:
        def __init__(self, backend, tag_ids, config, grader=None):
            self.tag_ids, self.config = tag_ids, config

        async def search(self, question, prompt_ids, gold=None, meta=None):
            tree = Tree(question, prompt_ids, self.tag_ids.eos_id, gold, dict(meta or {}))
            tree.meta["config"] = {"cut_reward": 0.0, "loss_on_inserted": True}
            n1 = step(tree, tree.root, "analyze", "Add 7 * 7 to 4.")
            n2 = step(tree, n1, "next_step", "7 * 7 = 49, 49 + 4 = 53.")
            n3 = step(tree, n2, "output", "\\boxed{53}", reward=1.0)
            n4 = step(tree, n1, "output", "\\boxed{50}", reward=0.0)
            n5 = step(tree, tree.root, "direct_answer", "It is 54.")
            n6 = step(tree, n5, "output", "\\boxed{54}", reward=0.1)
            for leaf, dup in ((n3, False), (n4, False), (n6, False), (n3, True)):
                tree.backup(leaf, leaf.reward)
                tree.iterations.append(Iteration(leaf.id, duplicate=dup))
            return SearchResult(tree, tree.paths(), tree.stats(), 0.0)

    return CannedMCTS


async def test_tree_credit_reaches_verl_postprocess_as_dense_rm_scores(prepared_dir, model_and_tok, server,
                                                                       monkeypatch):
    """Through verl's AgentLoopWorkerTQ._agent_loop_postprocess: keys, dense rm_scores, masks, extras.
    The tree is fixed by hand (``_canned_search_class``), so the test is deterministic."""
    import verl.trainer.ppo.v1.agent_loop_tq as tq_mod
    from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopWorkerTQ

    import rftt_plugin.integration.agent_loop as loop_mod

    model, tok = model_and_tok
    config = _config(prepared_dir, recipe="rftt_tree", extra=["rftt.credit.step_weight=1.0"])
    with monkeypatch.context() as m:
        m.setattr(loop_mod, "FunctionalMCTS", _canned_search_class(tok))
        outs = await _run_sessions(config, server, tok, "uid-D", 4)
    assert not [o for o in outs.values() if isinstance(o, BaseException)], outs

    captured = []

    async def fake_put(keys, fields, tags, partition_id):
        captured.append((keys, fields, tags, partition_id))

    monkeypatch.setattr(tq_mod.tq, "async_kv_batch_put", fake_put)
    worker_cls = getattr(AgentLoopWorkerTQ, "__ray_actor_class__", AgentLoopWorkerTQ)  # the class behind @ray.remote
    worker = object.__new__(worker_cls)
    worker.reward_loop_worker_handles = None
    worker.distillation_enabled = False
    worker.processor = None

    async def no_teacher(*a, **k):
        return None

    worker._compute_teacher_logprobs = no_teacher
    weight = config.rftt.credit.step_weight
    # hand-worked values of the canned tree (see _canned_search_class)
    root_v, v1, v2 = 2.1 / 4, 2.0 / 3, 1.0
    hand = {0: [v1 - root_v, v2 - v1, 0.0], 1: [v1 - root_v, 0.0 - v1], 2: [0.1 - root_v, 0.0], 3: [v1 - root_v, v2 - v1, 0.0]}
    for s, out in outs.items():
        await worker._agent_loop_postprocess(out, False, **_kwargs("uid-D", s))
        keys, fields, tags, partition = captured[-1]
        assert keys == [f"uid-D_{s}_0"] and partition == "train"
        rm = fields["rm_scores"][0]
        extra = fields["extra_fields"][0]
        # plain reference: w * (V(s_k) - V(s_{k-1})) at each step end, the outcome on the last trained id
        values = [extra["rftt_root_value"], *extra["rftt_node_values"]]
        credits = [weight * (values[k + 1] - values[k]) for k in range(len(values) - 1)]
        assert credits == pytest.approx(hand[s], abs=1e-6)
        expected = [0.0] * len(out.response_ids)
        for k, end in enumerate(extra["rftt_step_ends"]):
            expected[end] += credits[k]
        last_trained = max(t for t, m in enumerate(out.response_mask) if m)
        expected[last_trained] += out.reward_score
        torch.testing.assert_close(rm, torch.tensor(expected, dtype=torch.float32))
        # the step credits telescope: sum = w * (V(leaf) - V(root)), plus the outcome
        telescoped = weight * (extra["rftt_node_values"][-1] - extra["rftt_root_value"]) + out.reward_score
        assert float(rm.sum()) == pytest.approx(telescoped, abs=1e-5)
        assert float(rm[extra["rftt_step_ends"][0]]) == pytest.approx(hand[s][0], abs=1e-6)  # credit before the end
        assert torch.equal(fields["response_mask"][0], torch.tensor(out.response_mask))
        assert extra["rftt_tree_nodes"] == 6 and "rftt_tree_token_ratio" in extra["reward_extra_info"]
        assert tags[0]["min_global_steps"] == out.extra_fields["min_global_steps"]  # no server call: None
    # greedy (validation-style) sampling writes the outcome only
    outs_val = await _run_sessions(config, server, tok, "uid-E", 2, sampling={"temperature": 0})
    assert all(o.token_rewards is None for o in outs_val.values())
