"""vLLM's CPU build on the prepared tiny model, offline (one ``vllm.LLM`` engine for the module).

What the GPU path relies on, checked on the real vLLM (0.27.1, CPU platform) instead of a stand-in:

* the plugin's vLLM CPU patch is active in the worker process (Linear weights stay live);
* each of the 16 tags is one id in vLLM's tokenizer, prompt ids come back unchanged, and vLLM's
  detokenizer keeps the tags in the text (``skip_special_tokens=True``);
* a step with ``stop_token_ids`` = closing-tag ids ends on a closing tag, **included** as the last
  output token, finish reason ``stop``, one log-prob per output token;
* the plugin's tag read-outs (``read_tag_logprobs``, through verl's ``extract_prompt_logprobs``
  layout and verl's OOV mask; the cached top-k one; the one-request ``logprob_token_ids`` one)
  equal a transformers forward pass, masked the same way, within 1e-4;
* a ``logprob_token_ids`` read-out and verl-style rollout requests (``logprobs=0``) in ONE engine
  step (seen by the sampler): the read-out's values are right and read the prefix cache, and each
  rollout request gets exactly its sampled token's log-prob, right (issue 28's trap: vLLM then
  uses id-gathered log-probs for the whole batch);
* hfcpu parity: the same requests to the hfcpu server and to vLLM give the same greedy tokens and
  log-probs within 1e-4 (fp32), prompt log-probs included.

Expected values come from a plain transformers forward pass (an independent implementation);
the model has padded embedding rows (ids >= len(tokenizer)), so the mask matters.
"""

from __future__ import annotations

import asyncio
import math
import time

import pytest
import torch

from tests.vllm_lane import OfflineVerlServer, build_vllm_tiny, require_vllm_lane, set_vllm_cpu_env

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(600)]

MAX_MODEL_LEN = 512
TOL = 1e-4
QUESTIONS = ["What is 12 plus 30?", "Compute 7 * 6 and check it.", "Subtract 9 from 30."]


@pytest.fixture(scope="module")
def lane(tmp_path_factory):
    require_vllm_lane()
    set_vllm_cpu_env()
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from vllm import LLM

    root = tmp_path_factory.mktemp("vllm_offline")
    model_dir = build_vllm_tiny(root)
    tok = AutoTokenizer.from_pretrained(model_dir)
    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa").eval()
    assert hf.get_input_embeddings().num_embeddings > len(tok), "the fixture must have padded rows"
    t0 = time.time()
    llm = LLM(model=str(model_dir), dtype="float32", max_model_len=MAX_MODEL_LEN, seed=0, max_num_seqs=16,
              enforce_eager=True, logprobs_mode="processed_logprobs")  # verl's rollout.logprobs_mode default
    print(f"\n[vllm offline] engine up in {time.time() - t0:.1f} s")
    server = OfflineVerlServer(llm, vocab_size=len(tok), max_model_len=MAX_MODEL_LEN)
    yield {"dir": model_dir, "tok": tok, "hf": hf, "llm": llm, "server": server}
    del llm


def _tags(tok):
    from rftt_plugin.tag_ids import TagIds

    return TagIds.from_tokenizer(tok, mode="added")


def _context(tok, question: str) -> list[int]:
    """A tree context: chat prompt, one finished step, and the newline after its closing tag."""
    from rftt_plugin.chat_prompt import chat_prompt_ids

    ids = chat_prompt_ids(tok, question)
    step = tok("<analyze>\nWe add the two numbers.\n</analyze>\n", add_special_tokens=False)["input_ids"]
    return ids + step


def _masked_forward_logprobs(hf, tok, context: list[int]) -> torch.Tensor:
    """Independent reference: transformers logits at the last position, ids >= len(tok) removed."""
    with torch.no_grad():
        logits = hf(input_ids=torch.tensor([context])).logits[0, -1].double()
    return torch.log_softmax(logits[: len(tok)], dim=-1)


def _worker_linear_state(worker):
    from vllm import _custom_ops as ops

    model = worker.model_runner.model
    qkv = model.model.layers[0].self_attn.qkv_proj
    return ops._supports_onednn, tuple(qkv.weight.shape), hasattr(qkv.weight, "weight_loader")


def test_cpu_patch_keeps_linear_weights_live_in_the_worker(lane):
    (onednn, shape, has_loader), = lane["llm"].collective_rpc(_worker_linear_state)
    assert onednn is False, "the vllm.general_plugins entry point did not turn oneDNN prepacking off"
    assert shape[0] > 0 and has_loader, f"qkv_proj weight was replaced by an empty Parameter: {shape}"


def test_tags_are_single_ids_prompt_ids_round_trip_and_text_keeps_tags(lane):
    from vllm import SamplingParams

    from rftt_plugin.tokens import TAG_STRINGS

    tok, llm = lane["tok"], lane["llm"]
    vtok = llm.get_tokenizer()
    hf_ids = {s: tok.convert_tokens_to_ids(s) for s in TAG_STRINGS}
    for s in TAG_STRINGS:
        assert vtok.encode(s, add_special_tokens=False) == [hf_ids[s]], s
    assert len(set(hf_ids.values())) == 16
    prompt = _context(tok, QUESTIONS[0]) + [hf_ids["<verify>"]]
    out = llm.generate([{"prompt_token_ids": prompt}],
                       SamplingParams(max_tokens=4, temperature=1.0, seed=3, allowed_token_ids=[hf_ids["<output>"],
                                                                                             hf_ids["</output>"]]),
                       use_tqdm=False)[0]
    assert list(out.prompt_token_ids) == prompt
    choice = out.outputs[0]
    assert set(choice.token_ids) <= {hf_ids["<output>"], hf_ids["</output>"]}
    expected_text = "".join("<output>" if t == hf_ids["<output>"] else "</output>" for t in choice.token_ids)
    assert choice.text == expected_text  # skip_special_tokens=True (vLLM's default) keeps the tags


def test_step_stops_on_a_closing_tag_included_as_last_token(lane):
    from vllm import SamplingParams

    tok, llm = lane["tok"], lane["llm"]
    tags = _tags(tok)
    closing = sorted(i for ids in tags.close_ids.values() for i in ids)
    text_ids = tok("We add", add_special_tokens=False)["input_ids"][:2]
    for seed in range(3):
        params = SamplingParams(max_tokens=40, temperature=1.0, seed=seed, logprobs=0, stop_token_ids=closing,
                                allowed_token_ids=text_ids + closing)
        choice = llm.generate([{"prompt_token_ids": _context(tok, QUESTIONS[1])}], params, use_tqdm=False)[0].outputs[0]
        ids = list(choice.token_ids)
        assert choice.finish_reason == "stop", (seed, ids)
        assert ids[-1] in closing and choice.stop_reason == ids[-1], (seed, ids, choice.stop_reason)
        assert not set(ids[:-1]) & set(closing), f"generation went on past a closing tag: {ids}"
        assert len(choice.logprobs) == len(ids)


def test_tag_readout_equals_masked_forward_pass(lane):
    """Both read-outs: prompt_logprobs (uncached) and the cached one (top-k of a generate request)."""
    from rftt_plugin.integration.readout_token_ids import read_tag_logprobs_token_ids
    from rftt_plugin.integration.server_backend import read_tag_logprobs, read_tag_logprobs_cached

    tok, server = lane["tok"], lane["server"]
    tags = _tags(tok)
    opening = [ids[0] for ids in tags.open_ids.values()]
    worst = 0.0
    for q in QUESTIONS:
        ctx = _context(tok, q)
        ref = _masked_forward_logprobs(lane["hf"], tok, ctx)
        for top_k in (20, 0):  # top-k row plus exact k=0 fall-backs, and k=0 only
            got = asyncio.run(read_tag_logprobs(server, "t", ctx, opening, top_k=top_k))
            for cand, lp in zip(opening, got):
                worst = max(worst, abs(lp - float(ref[cand])))
        for top_k in (20, 2):  # cached read-out, with few and with many fall-backs
            got = asyncio.run(read_tag_logprobs_cached(server, "t", ctx, opening, top_k=top_k))
            for cand, lp in zip(opening, got):
                worst = max(worst, abs(lp - float(ref[cand])))
        got = asyncio.run(read_tag_logprobs_token_ids(server, "t", ctx, opening))  # one request, all tags
        for cand, lp in zip(opening, got):
            worst = max(worst, abs(lp - float(ref[cand])))
    print(f"\n[vllm offline] tag read-out vs masked transformers forward: max |diff| = {worst:.2e}")
    assert worst < TOL


def _record_sampler_batches(worker, on: bool):
    """Inside the vLLM worker: record, per sampler call, the batch size, which rows carry
    ``logprob_token_ids`` and the batch's ``max_num_logprobs`` (``on=False`` restores and returns them)."""
    sampler = worker.model_runner.sampler
    if on:
        sampler._rftt_seen = []
        original = sampler.forward

        def forward(logits, sampling_metadata, *args, **kwargs):
            sampler._rftt_seen.append((int(logits.shape[0]), sorted((sampling_metadata.logprob_token_ids or {}).keys()),
                                       sampling_metadata.max_num_logprobs))
            return original(logits, sampling_metadata, *args, **kwargs)

        sampler.forward = forward
        return []
    seen = sampler.__dict__.pop("_rftt_seen", [])
    sampler.__dict__.pop("forward", None)
    return seen


def test_token_ids_readout_next_to_rollout_requests_in_one_engine_step(lane):
    """Issue 28: a tag read-out (``logprob_token_ids``, as verl's server converts the plugin's request)
    and verl-style rollout requests (``logprobs=0``, temperature 1) in one sampler call (recorded in
    the worker): the read-out's values equal a masked forward pass and come from the cache; each
    rollout token's reported log-prob equals the masked forward pass of the sequence it sampled."""
    from vllm import SamplingParams

    from rftt_plugin.integration.readout_token_ids import token_ids_sampling_params
    from rftt_plugin.integration.vllm_readout import token_id_entries

    tok, llm, hf = lane["tok"], lane["llm"], lane["hf"]
    opening = [ids[0] for ids in _tags(tok).open_ids.values()]
    ctx = _context(tok, QUESTIONS[2])
    step = tok("<analyze>\nNine from thirty.\n</analyze>\n", add_special_tokens=False)["input_ids"]
    while len(ctx) < 160:  # longer than one KV block (vLLM's CPU default: 128 ids; whole blocks are cached)
        ctx = ctx + step
    llm.generate([{"prompt_token_ids": ctx}], SamplingParams(max_tokens=1), use_tqdm=False)  # the tree's earlier call
    wire = token_ids_sampling_params(opening)
    wire["logprobs"] = 0 if wire.pop("logprobs") else None  # verl's conversion
    readout = SamplingParams(**wire)
    rollouts = [_context(tok, q) for q in QUESTIONS]
    n_tokens = 48
    # The engine core (another process) steps while requests arrive, so which requests share a step is
    # not fixed. The rollouts go first and decode 48 steps (ignore_eos), so the read-out, sent right
    # after them, lands in a step with them; should the host stall that long, the pair is sent again.
    for attempt in range(3):
        rollout_params = [SamplingParams(max_tokens=n_tokens, ignore_eos=True, temperature=1.0, top_p=1.0, logprobs=0,
                                         seed=11 + i + 10 * attempt) for i in range(len(rollouts))]
        llm.collective_rpc(_record_sampler_batches, args=(True,))
        try:
            outs = llm.generate([{"prompt_token_ids": p} for p in rollouts + [ctx]], rollout_params + [readout],
                                use_tqdm=False)
        finally:
            (batches,) = llm.collective_rpc(_record_sampler_batches, args=(False,))
        shared = [b for b in batches if b[1] and b[0] > len(b[1])]  # read-out rows next to rollout rows
        if shared:
            break
    assert shared, f"the read-out never shared a sampler call with a rollout request: {batches}"
    assert all(b[2] == 0 for b in shared)  # the rollout rows asked logprobs=0 (verl's requests)

    ref = _masked_forward_logprobs(hf, tok, ctx)
    got = token_id_entries(outs[-1].outputs[0].logprobs[0], opening)
    assert got["ids"] == opening
    readout_diff = max(abs(lp - float(ref[c])) for c, lp in zip(opening, got["logprobs"]))
    assert readout_diff < TOL
    assert outs[-1].num_cached_tokens > 0, "the read-out did not read the prefix cache"

    rollout_diff = 0.0
    for prompt, out in zip(rollouts, outs[:-1]):
        choice = out.outputs[0]
        ids = list(choice.token_ids)
        assert len(ids) == n_tokens and len(choice.logprobs) == n_tokens
        with torch.no_grad():
            logits = hf(input_ids=torch.tensor([prompt + ids])).logits[0].double()
        ref_rows = torch.log_softmax(logits[:, : len(tok)], dim=-1)
        for j, (t, entry) in enumerate(zip(ids, choice.logprobs)):
            assert set(entry) == {t}, f"a logprobs=0 request got entries {entry} next to the read-out"
            rollout_diff = max(rollout_diff, abs(entry[t].logprob - float(ref_rows[len(prompt) - 1 + j, t])))
    print(f"\n[vllm offline] read-out + rollout in one step (attempt {attempt + 1}): read-out {readout_diff:.2e}, "
          f"rollout {rollout_diff:.2e}, cached {outs[-1].num_cached_tokens}/{len(ctx)}; shared sampler calls {shared}")
    assert rollout_diff < TOL


def _hfcpu_server(model_dir):
    import verl  # noqa: F401  (the plugin puts +dryrun=cpu on Hydra's search path)
    from hydra import compose, initialize_config_module
    from verl.workers.rollout.replica import RolloutMode

    from rftt_plugin.cpu.hfcpu.server import HFCPUServer

    with initialize_config_module("verl.trainer.config", version_base=None):
        cfg = compose("ppo_trainer", overrides=[
            "+dryrun=cpu", f"actor_rollout_ref.model.path={model_dir}", "data.max_prompt_length=256",
            "data.max_response_length=64", "actor_rollout_ref.rollout.load_format=auto",
        ])
    return HFCPUServer(cfg.actor_rollout_ref.rollout, cfg.actor_rollout_ref.model, RolloutMode("colocated"))


def test_hfcpu_and_vllm_give_the_same_tokens_and_logprobs(lane):
    tok = lane["tok"]
    hfcpu = _hfcpu_server(lane["dir"])
    vllm_server = lane["server"]
    closing = sorted(i for ids in _tags(tok).close_ids.values() for i in ids)
    requests = []
    for q in QUESTIONS:
        ctx = _context(tok, q)
        requests.append((ctx, {"max_tokens": 24, "temperature": 0.0, "logprobs": True, "stop_token_ids": closing}))
        requests.append((ctx, {"max_tokens": 1, "temperature": 0.0, "prompt_logprobs": 20}))
        requests.append((ctx, {"max_tokens": 1, "temperature": 0.0, "prompt_logprobs": 0}))

    async def ask_hfcpu():
        return [await hfcpu.generate(prompt_ids=p, sampling_params=dict(s), request_id=f"r{i}")
                for i, (p, s) in enumerate(requests)]

    from_hf = asyncio.run(ask_hfcpu())
    from_vllm = [vllm_server.generate_sync(p, dict(s)) for p, s in requests]
    worst_sampled = worst_prompt = 0.0
    compared_rows = 0
    for (prompt, params), a, b in zip(requests, from_hf, from_vllm):
        assert a.token_ids == b.token_ids, (params, a.token_ids, b.token_ids)
        if params.get("logprobs"):
            worst_sampled = max(worst_sampled, max(abs(x - y) for x, y in zip(a.log_probs, b.log_probs)))
        if "prompt_logprobs" in params:
            ids_a, ids_b = a.extra_fields["prompt_ids"], b.extra_fields["prompt_ids"]
            lps_a, lps_b = a.extra_fields["prompt_logprobs"], b.extra_fields["prompt_logprobs"]
            assert len(ids_a) == len(ids_b) == len(prompt)
            for row in range(len(prompt) - 1):
                for ia, ib, la, lb in zip(ids_a[row], ids_b[row], lps_a[row], lps_b[row]):
                    if ia != ib:  # two ids swap ranks only when their log-probs tie
                        assert abs(la - lb) < TOL, (row, ids_a[row], ids_b[row])
                    worst_prompt = max(worst_prompt, abs(la - lb))
                compared_rows += 1
    print(f"\n[vllm offline] hfcpu vs vLLM (fp32): sampled log-probs max |diff| = {worst_sampled:.2e}, "
          f"prompt log-probs max |diff| = {worst_prompt:.2e} over {compared_rows} rows")
    assert worst_sampled < TOL and worst_prompt < TOL
    assert not math.isnan(worst_prompt)
