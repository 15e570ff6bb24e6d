"""Fault injection through the real ``rftt_tree`` agent loop, search and grader (no Ray, no model).

A scripted rollout server answers verl's ``server_manager.generate`` for the prepared tiny
tokenizer: tag read-outs rank ``<output>`` first, then ``<next_step>``; every step is a fixed text
closed by its tag, and the ``<output>`` step boxes 53 (correct) unless the path went through
``<analyze>`` (50, wrong). Faults are injected into the server, the PRM service and the grader.
Each test checks: no emitted row carries a reward the fault made up (every row's reward is
recomputed here from its text), the faulted sessions emit nothing (verl stores nothing for
``[]``), and the count reaches the step metrics.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time

import pytest

from rftt_plugin.search.step_metrics import step_metrics
from rftt_plugin.tokens import FunctionalTag as T

UID_N = 6  # sessions (= leaves) per tree


class ScriptedServer:
    """verl's server manager for one tiny tokenizer: deterministic steps and tag read-outs."""

    def __init__(self, tok, inject=None):
        from rftt_plugin.tag_ids import TagIds

        self.tok = tok
        vocab = TagIds.from_tokenizer(tok, mode="added")
        self.open_of = {vocab.open_ids[t][0]: t for t in T}
        self.close_ids = {t: vocab.close_ids[t][0] for t in T}
        self.inject = inject or (lambda kind, prompt: None)
        self.calls = {"generate": 0, "readout": 0}

    def _score(self, token: int) -> float:
        tag = self.open_of.get(token)
        return {T.OUTPUT: 0.0, T.NEXT_STEP: -1.0}.get(tag, -2.0 - list(T).index(tag) if tag else -30.0)

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
        from verl.workers.rollout.replica import TokenOutput

        await asyncio.sleep(0)
        prompt = list(prompt_ids)
        if "prompt_logprobs" in sampling_params:  # tag read-out (top_k 0: the asked token's own row)
            self.calls["readout"] += 1
            if self.inject("readout", prompt) == "raise":
                raise ConnectionError("injected: rollout server unreachable")
            rows = [[0] for _ in prompt]
            lps = [[0.0] for _ in prompt]
            rows[len(prompt) - 2], lps[len(prompt) - 2] = [prompt[-1]], [self._score(prompt[-1])]
            return TokenOutput(token_ids=[0], log_probs=None, stop_reason="completed",
                               extra_fields={"prompt_ids": rows, "prompt_logprobs": lps, "global_steps": 1})
        self.calls["generate"] += 1
        mode = self.inject("generate", prompt)
        if mode == "raise":
            raise ConnectionError("injected: rollout server unreachable")
        opened = [self.open_of[t] for t in prompt if t in self.open_of]
        tag = opened[-1]
        if tag is T.OUTPUT:
            text = "\\boxed{50}" if T.ANALYZE in opened else "\\boxed{53}"
        else:
            text = "7 * 7 = 49, then add 4."
        ids = self.tok.encode(f"\n{text}\n", add_special_tokens=False) + [self.close_ids[tag]]
        stop = "aborted" if mode == "abort" else "completed"
        return TokenOutput(token_ids=ids, log_probs=[-0.25] * len(ids), stop_reason=stop,
                           extra_fields={"global_steps": 1, "min_global_steps": 1, "max_global_steps": 1,
                                         "num_cached_tokens": len(prompt) // 2})


class PRM:
    """A Math-Shepherd PRM over HTTP that can be healthy, slow, failing (500) or failing once."""

    def __init__(self, mode="ok", score=0.5, delay_s=0.0):
        self.mode, self.score, self.delay_s, self.requests = mode, score, delay_s, 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests += 1
                if owner.delay_s:
                    time.sleep(owner.delay_s)
                if owner.mode == "500" or (owner.mode == "500_once" and owner.requests == 1):
                    self.send_response(500)
                    self.end_headers()
                    return
                data = json.dumps({"rewards": [[owner.score] * p.count("ки") for p in body["query"]]}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/get_reward"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def refused_url() -> str:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connection refused
    return f"http://127.0.0.1:{port}/get_reward"


@pytest.fixture(scope="module")
def tok(prepared_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(prepared_model_dir)


def _config(prepared_dir, extra=()):
    import verl  # noqa: F401
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    overrides = ["+recipe=rftt", f"actor_rollout_ref.model.path={prepared_dir}", "data.max_prompt_length=64",
                 "data.max_response_length=200", f"actor_rollout_ref.rollout.n={UID_N}", "rftt.search.max_depth=4",
                 "rftt.tag_readout=prompt_logprobs", "rftt.tag_readout_top_k=0", *extra]
    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        return compose(config_name="ppo_trainer", overrides=overrides)


def _kwargs(uid, session):
    return {"raw_prompt": [{"role": "user", "content": "What is 7 * 7 + 4?"}], "uid": uid, "session_id": session,
            "global_steps": 1, "data_source": "rftt_math", "reward_model": {"style": "rule", "ground_truth": "53"},
            "extra_info": {"index": 0}, "index": 0}


async def _run(config, server, tok, uid):
    import hydra
    from verl.experimental.agent_loop.agent_loop import DictConfigWrap, _agent_loop_registry
    from verl.utils.dataset.rl_dataset import RLHFDataset

    def loop():
        return hydra.utils.instantiate(_agent_loop_registry["rftt_tree"], trainer_config=DictConfigWrap(config),
                                       server_manager=server, tokenizer=tok, processor=None, hf_model_type="qwen2",
                                       dataset_cls=RLHFDataset, data_config=DictConfigWrap(config.data))

    tasks = [asyncio.create_task(loop().run({"temperature": 1.0}, **_kwargs(uid, s))) for s in range(UID_N)]
    return await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=120)


def _expected_reward(out, tok, rule="rftt", prm=None):
    """The reward of a row recomputed from its own text (independent of the loop's bookkeeping)."""
    text = tok.decode(out.response_ids, skip_special_tokens=True)
    correct, answered = "\\boxed{53}" in text, "\\boxed{" in text
    if rule == "rftt":
        return 1.0 if correct else (0.1 if answered else 0.0)
    if rule == "blend":
        return 0.6 * correct + 0.4 * (prm if out.extra_fields["rftt_leaf_steps"] else 0.0)
    raise AssertionError(rule)


async def _store(outs):
    """Every session's output through verl's own V1 post-processing; returns the stored rows' extra_fields."""
    import verl.trainer.ppo.v1.agent_loop_tq as tq_mod
    from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopWorkerTQ

    stored = []

    async def fake_put(keys, fields, tags, partition_id):
        stored.extend(zip(keys, fields["extra_fields"]))

    original = tq_mod.tq.async_kv_batch_put
    tq_mod.tq.async_kv_batch_put = fake_put
    try:
        worker = object.__new__(getattr(AgentLoopWorkerTQ, "__ray_actor_class__", AgentLoopWorkerTQ))
        worker.reward_loop_worker_handles, worker.distillation_enabled, worker.processor = None, False, None

        async def no_teacher(*a, **k):
            return None

        worker._compute_teacher_logprobs = no_teacher
        for s, out in enumerate(outs):
            await worker._agent_loop_postprocess(out, False, **_kwargs("uid-store", s))
    finally:
        tq_mod.tq.async_kv_batch_put = original
    return stored


def _rows(outs):
    return [o for o in outs if not isinstance(o, list)]


# -- healthy reference --------------------------------------------------------------------------

async def test_healthy_tree_trains_every_session_and_reports_zero_faults(prepared_model_dir, tok):
    outs = await _run(_config(prepared_model_dir), ScriptedServer(tok), tok, "ok")
    assert not [o for o in outs if isinstance(o, BaseException)], outs
    assert len(_rows(outs)) == UID_N
    for out in outs:
        assert out.reward_score == pytest.approx(_expected_reward(out, tok))
    m = step_metrics([o.extra_fields for o in outs])
    assert m["rftt/masked/total"] == 0.0 and m["rftt/faults/retried_calls"] == 0.0
    assert m["rftt/policy_path_acc"] == 1.0  # the most probable tags: <next_step> -> <output> \boxed{53}
    assert m["rftt/readout/cache_share"] > 0


# -- rollout step ------------------------------------------------------------------------------

async def test_a_step_that_fails_once_is_retried_and_trains_as_healthy(prepared_model_dir, tok):
    healthy = await _run(_config(prepared_model_dir), ScriptedServer(tok), tok, "h")
    seen = set()

    def once(kind, prompt):
        if kind == "generate" and tuple(prompt) not in seen:
            seen.add(tuple(prompt))
            return "raise"
        return None

    outs = await _run(_config(prepared_model_dir), ScriptedServer(tok, once), tok, "once")
    assert [o.response_ids for o in outs] == [o.response_ids for o in healthy]
    assert [o.reward_score for o in outs] == [o.reward_score for o in healthy]
    m = step_metrics([o.extra_fields for o in outs])
    assert m["rftt/faults/retried_calls"] == len(seen) > 0 and m["rftt/masked/total"] == 0.0


@pytest.mark.parametrize("mode", ["raise", "abort"])
async def test_a_step_that_always_fails_emits_no_row_and_is_counted(prepared_model_dir, tok, caplog, mode):
    server = ScriptedServer(tok)
    analyze = next(i for i, t in server.open_of.items() if t is T.ANALYZE)
    # a step's request ends with its opening tag and a newline: fail every <analyze> step
    server.inject = lambda kind, prompt: mode if kind == "generate" and prompt[-2] == analyze else None
    outs = await _run(_config(prepared_model_dir), server, tok, "always")
    assert not [o for o in outs if isinstance(o, BaseException)], outs
    dropped = [s for s, o in enumerate(outs) if o == []]
    assert dropped, "the <analyze> branch should have been reached and failed"
    for out in _rows(outs):
        assert "<analyze>" not in tok.decode(out.response_ids)          # no row of the failed branch
        assert out.reward_score == pytest.approx(_expected_reward(out, tok))
    stored = await _store(outs)
    assert len(stored) == UID_N - len(dropped)                            # verl stored nothing for []
    m = step_metrics([extra for _, extra in stored])
    assert m["rftt/masked/step_error"] == len(dropped) and m["rftt/faults/failed_steps"] >= 1
    assert m["rftt/faults/retried_calls"] >= 2 * m["rftt/faults/failed_steps"]  # step_retries=2 each


# -- PRM ---------------------------------------------------------------------------------------

def _prm_config(prepared_model_dir, url, rule="blend", **prm):
    extra = [f"rftt.reward.rule={rule}", f"rftt.reward.prm.url={url}"]
    extra += [f"rftt.reward.prm.{k}={v}" for k, v in prm.items()]
    return _config(prepared_model_dir, extra)


@pytest.mark.parametrize("fault", ["refused", "slow", "500"])
async def test_a_failing_prm_drops_its_leaves_never_scores_them_zero(prepared_model_dir, tok, fault):
    from rftt_plugin.integration.agent_loop import RfttTreeAgentLoop

    RfttTreeAgentLoop._breakers.clear()
    prm = None if fault == "refused" else PRM("500" if fault == "500" else "ok", delay_s=1.0 if fault == "slow" else 0)
    url = refused_url() if prm is None else prm.url
    try:
        config = _prm_config(prepared_model_dir, url, retries=1, timeout_s=0.3, max_consecutive_failures=100)
        outs = await _run(config, ScriptedServer(tok), tok, f"prm-{fault}")
    finally:
        if prm:
            prm.close()
    # blend needs the PRM on every leaf: every session is dropped, none trained with a made-up 0.6 x correct
    assert outs == [[]] * UID_N, outs
    if prm is not None:
        assert prm.requests >= 2  # retried (retries=1)


async def test_prm_failures_in_a_row_stop_the_run_with_the_setting_named(prepared_model_dir, tok):
    from rftt_plugin.integration.agent_loop import RfttTreeAgentLoop

    RfttTreeAgentLoop._breakers.clear()
    url = refused_url()
    config = _prm_config(prepared_model_dir, url, retries=0, timeout_s=0.3, max_consecutive_failures=2)
    outs = await _run(config, ScriptedServer(tok), tok, "prm-down")
    assert all(isinstance(o, RuntimeError) for o in outs), outs  # verl marks the group failed
    assert f"rftt.reward.prm.url={url}" in str(outs[0]) and "2 PRM calls in a row failed" in str(outs[0])
    RfttTreeAgentLoop._breakers.clear()


async def test_a_prm_500_once_is_retried_and_scores(prepared_model_dir, tok):
    from rftt_plugin.integration.agent_loop import RfttTreeAgentLoop

    RfttTreeAgentLoop._breakers.clear()
    prm = PRM("500_once", score=0.5)
    try:
        config = _prm_config(prepared_model_dir, prm.url, retries=1, timeout_s=5.0)
        outs = await _run(config, ScriptedServer(tok), tok, "prm-once")
    finally:
        prm.close()
    assert len(_rows(outs)) == UID_N
    for out in outs:
        assert out.reward_score == pytest.approx(_expected_reward(out, tok, "blend", prm=0.5))
    m = step_metrics([o.extra_fields for o in outs])
    assert m["rftt/prm/failures"] == 0.0 and m["rftt/prm/calls"] >= 1


async def test_rftt_prm_asks_the_prm_only_for_leaves_without_an_answer(prepared_model_dir, tok):
    from rftt_plugin.integration.agent_loop import RfttTreeAgentLoop

    RfttTreeAgentLoop._breakers.clear()
    # every leaf of this tree boxes an answer (depth 4 is never reached): the PRM is never needed,
    # so a dead PRM must not cost a single leaf
    config = _prm_config(prepared_model_dir, refused_url(), rule="rftt_prm", retries=0, timeout_s=0.3)
    outs = await _run(config, ScriptedServer(tok), tok, "prm-unused")
    assert len(_rows(outs)) == UID_N
    m = step_metrics([o.extra_fields for o in outs])
    assert m["rftt/prm/calls"] == 0.0 and m["rftt/masked/total"] == 0.0


# -- grader ------------------------------------------------------------------------------------

@pytest.mark.parametrize("method, cause", [("overloaded", "grade_timeout"), ("queue_timeout", "grade_timeout"),
                                           ("timeout", "grade_timeout"), ("error", "grade_error")])
async def test_a_grade_without_verdict_emits_no_row_and_is_counted(prepared_model_dir, tok, monkeypatch, method,
                                                                    cause):
    import rftt_plugin.reward.score as score_mod
    from rftt_plugin.reward.equivalence import Verdict

    async def no_verdict(pred, gold, timeout_s=None):  # what the pool answers under overload / a dead worker
        return Verdict(False, timed_out=method != "error", method=method)

    monkeypatch.setattr(score_mod, "check_equivalence_async", no_verdict)
    outs = await _run(_config(prepared_model_dir), ScriptedServer(tok), tok, f"grader-{method}")
    # no <output> leaf may be trained as "wrong" (0.1); with them pruned the search goes deeper and
    # may emit leaves cut at the depth cap, which were never graded (cut_reward 0, legitimately)
    dropped = [o for o in outs if o == []]
    assert len(dropped) >= UID_N // 2, outs
    for out in _rows(outs):
        assert out.extra_fields["rftt_terminal_reason"] != "output" and out.reward_score == 0.0
    if _rows(outs):
        m = step_metrics([o.extra_fields for o in _rows(outs)])
        assert m[f"rftt/masked/{cause}"] == len(dropped)


async def test_grader_faults_reach_the_metrics_when_some_rows_survive(prepared_model_dir, tok, monkeypatch):
    import rftt_plugin.reward.score as score_mod
    from rftt_plugin.reward.equivalence import Verdict, check_equivalence_async

    async def flaky(pred, gold, timeout_s=None):  # the wrong answer (50) times out; 53 is checked for real
        if pred == "50":
            return Verdict(False, timed_out=True, method="overloaded")
        return await check_equivalence_async(pred, gold, timeout_s=timeout_s)

    monkeypatch.setattr(score_mod, "check_equivalence_async", flaky)
    outs = await _run(_config(prepared_model_dir), ScriptedServer(tok), tok, "grader-flaky")
    rows = _rows(outs)
    assert rows and len(rows) < UID_N
    for out in rows:
        assert out.reward_score == pytest.approx(_expected_reward(out, tok))
        assert "\\boxed{50}" not in tok.decode(out.response_ids)
    stored = await _store(outs)
    m = step_metrics([extra for _, extra in stored])
    assert m["rftt/masked/grade_timeout"] == UID_N - len(rows)
    assert m["rftt/grader/timeouts"] >= 1


async def test_an_in_process_prm_that_hangs_is_bounded_retried_and_dropped():
    from rftt_plugin.config.schema import settings_from_mapping
    from rftt_plugin.integration.agent_loop import PRMUnavailable, _LeafGrader, _PrmBreaker
    from rftt_plugin.search.tree import LeafFault

    class Hanging:  # an in-process scorer stuck in a forward pass
        calls = 0

        async def score_steps_async(self, question, steps):
            Hanging.calls += 1
            await asyncio.sleep(30)

    settings = settings_from_mapping({"reward": {"rule": "rftt_prm", "prm": {
        "model": "some/prm", "timeout_s": 0.2, "retries": 1, "max_consecutive_failures": 2}}})
    grader = _LeafGrader(settings, "Q", "53", None, Hanging(), _PrmBreaker(2))
    t0 = time.perf_counter()
    with pytest.raises(LeafFault) as info:
        await grader.grade_text("<next_step>\nthinking\n</next_step>\n<output>\nno box\n</output>")
    assert info.value.cause == "prm_error" and "rftt.reward.prm.model=some/prm" in str(info.value)
    assert Hanging.calls == 2 and time.perf_counter() - t0 < 5   # 1 try + 1 retry, each cut at 0.2 s
    assert grader.prm_calls == 1 and grader.prm_failures == 1
    # an answered leaf under rftt_prm needs no PRM: graded without a call
    assert (await grader.grade_text("<output>\n\\boxed{53}\n</output>")).score == 1.0 and Hanging.calls == 2
    with pytest.raises(LeafFault):
        await grader.grade_text("<output>\nstill no box\n</output>")
    with pytest.raises(PRMUnavailable, match="rftt.reward.prm.model=some/prm: 2 PRM calls in a row failed"):
        await grader.grade_text("<output>\na third unanswered leaf\n</output>")
