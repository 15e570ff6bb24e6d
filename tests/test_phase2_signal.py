"""Phase-2 training signal through the `rftt_tree` agent loop: one grade per leaf, the outcome on
a trained token, the PRM rules, and the V1-only guard. Expectations are hand-worked from the
leaf's own ids and the PRM test server's fixed scores, not from the functions under test."""

from __future__ import annotations

import pytest

from tests.prm_server import PRMServer
from tests.test_agent_loop import _config, _kwargs, _make_loop, _run_sessions, model_and_tok, prepared_dir, server  # noqa: F401

pytestmark = pytest.mark.slow  # the warm-up model fixture and live searches


def _counting_grader(monkeypatch):
    import rftt_plugin.reward.score as score_mod

    real = score_mod.score_response_async
    calls: list[str] = []

    async def counted(text, gold, **kw):
        calls.append(text)
        return await real(text, gold, **kw)

    monkeypatch.setattr(score_mod, "score_response_async", counted)
    return calls


async def test_each_leaf_is_graded_once_on_the_text_verl_decodes(prepared_dir, model_and_tok, server, monkeypatch):
    model, tok = model_and_tok
    calls = _counting_grader(monkeypatch)
    outs = await _run_sessions(_config(prepared_dir), server, tok, "uid-G", 4)
    assert not [o for o in outs.values() if isinstance(o, BaseException)], outs
    output_texts = set()
    for out in outs.values():
        text = tok.decode(out.response_ids, skip_special_tokens=True)   # what verl's reward path decodes
        if out.extra_fields["rftt_terminal_reason"] == "output":
            output_texts.add(text)
            assert text in calls
    # every grade was of an <output> leaf, on verl's decoding, and no text was graded twice
    assert len(calls) == len(set(calls)), "a leaf was graded twice"
    assert output_texts <= set(calls)
    assert all("<|im_end|>" not in t and "<|endoftext|>" not in t for t in calls)


async def test_reward_score_and_acc_come_from_the_same_grade(prepared_dir, model_and_tok, server, monkeypatch):
    import rftt_plugin.reward.score as score_mod

    model, tok = model_and_tok
    real = score_mod.score_response_async
    graded = {}

    async def remembered(text, gold, **kw):
        result = await real(text, gold, **kw)
        # a distinctive score: if anything grades again, reward_score and this map disagree
        result = result.__class__(**{**result.to_dict(), "score": 0.5 + len(text) % 7 / 100})
        graded[text] = result
        return result

    monkeypatch.setattr(score_mod, "score_response_async", remembered)
    outs = await _run_sessions(_config(prepared_dir), server, tok, "uid-H", 4)
    seen_output = False
    for out in outs.values():
        text = tok.decode(out.response_ids, skip_special_tokens=True)
        info = out.extra_fields["reward_extra_info"]
        if out.extra_fields["rftt_terminal_reason"] == "output":
            seen_output = True
            assert out.reward_score == pytest.approx(graded[text].score)
            assert info["acc"] == float(graded[text].acc)
            assert out.extra_fields["rftt_format_ok"] == int(graded[text].format_ok)
        else:
            assert out.reward_score == 0.0 and info["acc"] == 0.0
    assert seen_output, "the warmed-up model should reach <output> on a training-distribution question"


async def test_outcome_survives_loss_on_inserted_false(prepared_dir, model_and_tok, server):
    """The inserted EOS is masked: the outcome must sit on the last trained token (not be dropped)."""
    model, tok = model_and_tok
    config = _config(prepared_dir, extra=["rftt.search.loss_on_inserted=false"])
    outs = await _run_sessions(config, server, tok, "uid-I", 4)
    n_output = 0
    for out in outs.values():
        last_trained = max(t for t, m in enumerate(out.response_mask) if m)
        expected = [0.0] * len(out.response_ids)
        expected[last_trained] = out.reward_score
        rm = out.as_dict()["rm_scores"]
        assert rm.tolist() == pytest.approx(expected)
        if out.extra_fields["rftt_terminal_reason"] == "output":
            n_output += 1
            # the search appended the EOS: inserted, so masked, and the outcome moved before it
            assert out.response_ids[-1] == tok.eos_token_id and out.response_mask[-1] == 0
            assert last_trained < len(out.response_ids) - 1
    assert n_output, "no <output> leaf: the case under test never happened"


async def test_blend_rule_scores_paths_with_the_configured_prm(prepared_dir, model_and_tok, server):
    model, tok = model_and_tok
    with PRMServer(step_score=0.25, last_score=0.625) as prm:
        config = _config(prepared_dir, extra=["rftt.reward.rule=blend", f"rftt.reward.prm.url={prm.url}"])
        outs = await _run_sessions(config, server, tok, "uid-P", 4)
    assert not [o for o in outs.values() if isinstance(o, BaseException)], outs
    assert prm.requests, "the PRM was never asked"
    first = prm.requests[0][0]
    assert first.startswith("What is 7 * 7 + 4? Step 1: ") and first.endswith("ки\n")   # Math-Shepherd format
    for out in outs.values():
        acc = out.extra_fields["reward_extra_info"]["acc"]
        steps = out.extra_fields["rftt_leaf_steps"]
        prm_value = 0.625 if steps else 0.0          # aggregate "last": the final step's score
        assert out.reward_score == pytest.approx(0.6 * acc + 0.4 * prm_value), out.extra_fields["rftt_terminal_reason"]
        assert float(out.as_dict()["rm_scores"][-1]) == pytest.approx(out.reward_score)


async def test_rftt_prm_rule_gives_sigma_only_without_an_answer(prepared_dir, model_and_tok, server):
    model, tok = model_and_tok
    with PRMServer(step_score=0.25, last_score=0.375) as prm:
        config = _config(prepared_dir, extra=["rftt.reward.rule=rftt_prm", f"rftt.reward.prm.url={prm.url}",
                                              "rftt.reward.prm.aggregate=mean"])
        outs = await _run_sessions(config, server, tok, "uid-Q", 4)
    for out in outs.values():
        info = out.extra_fields["reward_extra_info"]
        steps = out.extra_fields["rftt_leaf_steps"]
        if info["acc"]:
            assert out.reward_score == 1.0
        elif info["has_answer"]:
            assert out.reward_score == pytest.approx(0.1)
        else:
            # 0.1 x the mean of (steps - 1) x 0.25 and one 0.375; no step at all -> 0
            sigma = 0.1 * (0.25 * (steps - 1) + 0.375) / steps if steps else 0.0
            assert out.reward_score == pytest.approx(sigma), out.extra_fields["rftt_terminal_reason"]


def test_prm_rule_without_a_prm_is_refused_when_the_loop_starts(prepared_dir, model_and_tok, server):
    model, tok = model_and_tok
    with pytest.raises(Exception, match=r"rftt.reward.rule='blend' needs a PRM.*rftt.reward.prm.url"):
        _make_loop(_config(prepared_dir, extra=["rftt.reward.rule=blend"]), server, tok)


async def test_a_session_without_session_id_is_refused(prepared_dir, model_and_tok, server):
    """verl's V0 trainer sends no session_id: all rollout.n rows would silently be one leaf."""
    model, tok = model_and_tok
    kwargs = _kwargs("uid-V0", 0)
    del kwargs["session_id"]
    with pytest.raises(RuntimeError, match="session_id.*V1 trainer"):
        await _make_loop(_config(prepared_dir), server, tok).run({"temperature": 1.0}, **kwargs)
