"""The search on the real tiny model (hf backend): exact ids and log-probs against a direct
forward pass, in both token modes. The random model never closes a step, so each path is one
step long (cut by max tokens or by a stray tag id); multi-step exactness is covered on the
fake backend (test_search_mcts)."""

from __future__ import annotations

import pytest

from rftt_plugin.chat_prompt import chat_prompt_ids
from rftt_plugin.search import FunctionalMCTS, SearchConfig
from rftt_plugin.tag_ids import TagIds
from rftt_plugin.tokens import TAG_STRINGS, allowed_next

Q = "What is 2 + 3?"


@pytest.fixture(scope="module")
def tagged_model(tiny_model_dir, tmp_path_factory):
    """The tiny model with the 16 tag strings added as normal tokens (what prepare-model does)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.add_tokens(list(TAG_STRINGS), special_tokens=False)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    torch.manual_seed(1)
    model.resize_token_embeddings(len(tok), mean_resizing=False)
    out = tmp_path_factory.mktemp("tiny_tagged")
    tok.save_pretrained(out)
    model.save_pretrained(out)
    return model.eval(), tok


def _ref(model, ids, temperature=1.0):
    import torch

    with torch.inference_mode():
        logits = model(torch.tensor([ids])).logits[0, -1].float()
    return torch.log_softmax(logits / temperature, -1)


@pytest.mark.parametrize("mode", ["added", "text"])
async def test_tree_on_tiny_model_is_exact(tagged_model, mode):
    from rftt_plugin.backends.hf import HFBackend

    model, tok = tagged_model
    backend = HFBackend(model, tok, max_batch_size=4)
    layout = TagIds.from_tokenizer(tok, mode=mode)
    cfg = SearchConfig(iterations=4, step_max_tokens=5, step_temperature=0.5, token_mode=mode)
    try:
        res = await FunctionalMCTS(backend, layout, cfg).search(Q, chat_prompt_ids(tok, Q))
    finally:
        await backend.aclose()
    tree = res.tree
    prompt = chat_prompt_ids(tok, Q)
    assert prompt == tok.apply_chat_template([{"role": "user", "content": Q}], add_generation_prompt=True,
                                             tokenize=True)["input_ids"]
    assert tree.prompt_ids == prompt
    # Root ranking: the model's own next-token distribution over the allowed opening tags.
    root_lp = _ref(model, prompt)
    kids = tree.children(tree.root)
    assert [k.tag for k in sorted(kids, key=lambda k: k.rank)] == [k.tag for k in kids]
    assert {k.tag for k in kids} == set(allowed_next(None, 0))
    for kid in kids:
        seg = list(layout.open_segments[kid.tag])
        if mode == "added":
            want = float(root_lp[seg[0]])
            assert len(seg) == 2 and tok.decode(seg) == kid.tag.open + "\n"
        else:
            want, ctx = 0.0, list(prompt)
            for t in seg:
                want += float(_ref(model, ctx)[t])
                ctx.append(t)
        assert kid.prior_logprob == pytest.approx(want, abs=1e-4)
    assert len(res.leaves) == 4
    for leaf in res.leaves:
        assert leaf.prompt_ids == prompt
        ids = leaf.response_ids
        node = tree[leaf.leaf_id]
        assert ids[:len(layout.open_segments[node.tag])] == list(layout.open_segments[node.tag])
        assert leaf.terminal_reason in {"length", "wrong_tag", "eos", "overhang", "empty"}
        for j, (t, lp, s) in enumerate(zip(ids, leaf.response_logprobs, leaf.sampled_mask)):
            if s:
                assert lp == pytest.approx(float(_ref(model, prompt + ids[:j], 0.5)[t]), abs=1e-4)
        assert sum(leaf.sampled_mask) == node.n_sampled <= 5
    # Decoding the response ids gives back the tagged text (nothing was re-tokenised).
    text = tok.decode(res.leaves[0].response_ids, skip_special_tokens=False)
    assert text.startswith(tree[res.leaves[0].leaf_id].tag.open + "\n")
