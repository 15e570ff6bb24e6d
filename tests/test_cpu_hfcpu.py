"""The hfcpu rollout server: sampling params, engine, prompt_logprobs, batching, verl's server contract (cpu/hfcpu/)."""

from __future__ import annotations

import asyncio
import types

import pytest
import torch


# ---------------------------------------------------------------------------------------------
# hfcpu: sampling params, engine, prompt_logprobs, batching
# ---------------------------------------------------------------------------------------------

from rftt_plugin.cpu.hfcpu.engine import BatchGenerator, GenerationRequest
from rftt_plugin.cpu.hfcpu.sampling import ServerLimits, UnsupportedRequest, parse_sampling_params

LIMITS = ServerLimits(max_model_len=100, prompt_length=20, response_length=10, vocab_size=50)


def test_max_tokens_default_and_clamp_follow_verl():
    assert parse_sampling_params({}, 5, LIMITS).max_tokens == 10                      # response_length
    assert parse_sampling_params({}, 25, LIMITS).max_tokens == 5                      # 20 + 10 - 25
    assert parse_sampling_params({}, 35, LIMITS).max_tokens == 1                      # at least 1
    assert parse_sampling_params({"max_tokens": 500}, 90, LIMITS).max_tokens == 10    # max_model_len - prompt
    assert parse_sampling_params({"max_new_tokens": 3}, 5, LIMITS).max_tokens == 3
    with pytest.raises(ValueError, match="no room"):
        parse_sampling_params({}, 100, LIMITS)


def test_sampling_param_validation():
    spec = parse_sampling_params({"logprobs": 0, "temperature": 0, "stop": "x", "skip_special_tokens": True}, 3, LIMITS)
    assert spec.greedy and not spec.logprobs and spec.stop == ("x",)
    assert parse_sampling_params({"logprobs": 5}, 3, LIMITS).logprobs is True  # verl: truthy -> sampled token only
    params = {"temperature": 0.5}
    parse_sampling_params(params, 3, LIMITS)
    assert params == {"temperature": 0.5}  # never mutated
    for bad, match in [({"n": 2}, "n=1"), ({"best_of": 3}, "best_of"), ({"frobnicate": 1}, "frobnicate"),
                       ({"prompt_logprobs": 21}, "prompt_logprobs"), ({"allowed_token_ids": [99]}, "vocabulary"),
                       ({"allowed_token_ids": []}, "empty"), ({"top_p": 0}, "top_p")]:
        with pytest.raises(UnsupportedRequest, match=match):
            parse_sampling_params(bad, 3, LIMITS)
    assert parse_sampling_params({"presence_penalty": 0.0}, 3, LIMITS)  # neutral values are fine


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa").eval()
    gen = BatchGenerator(model, frozenset({tok.eos_token_id}), tok.pad_token_id,
                         decode=lambda ids: tok.decode(ids, skip_special_tokens=True), seed=0)
    prompts = [tok(t)["input_ids"] for t in ("What is 2 + 3?", "Let me think step by step about this math problem.",
                                             "x", "The final answer is")]
    return types.SimpleNamespace(tok=tok, model=model, gen=gen, prompts=prompts)


def _limits(tiny, **kw):
    return ServerLimits(max_model_len=512, prompt_length=64, response_length=12,
                        vocab_size=tiny.model.get_input_embeddings().num_embeddings, **kw)


def _req(tiny, prompt, **params):
    return GenerationRequest(tuple(prompt), parse_sampling_params(params, len(prompt), _limits(tiny)))


def _direct_logprobs(tiny, prompt, generated):
    with torch.no_grad():
        logits = tiny.model(torch.tensor([list(prompt) + list(generated)])).logits[0].float()
    return logits[len(prompt) - 1: len(prompt) - 1 + len(generated)]


def test_greedy_is_argmax_and_logprobs_match_direct_forward(tiny):
    for prompt in tiny.prompts:
        out = tiny.gen.run([_req(tiny, prompt, temperature=0, logprobs=True)])[0]
        logits = _direct_logprobs(tiny, prompt, out.token_ids)
        assert out.token_ids == logits.argmax(-1).tolist()
        expected = torch.log_softmax(logits, -1).gather(1, torch.tensor(out.token_ids)[:, None])[:, 0]
        assert torch.allclose(torch.tensor(out.log_probs), expected, atol=1e-4)
        assert out.finish_reason in ("stop", "length")


def test_sampled_logprobs_are_temperature_scaled(tiny):
    prompt = tiny.prompts[1]
    out = tiny.gen.run([_req(tiny, prompt, temperature=0.7, logprobs=True, seed=3)])[0]
    logits = _direct_logprobs(tiny, prompt, out.token_ids)
    expected = torch.log_softmax(logits / 0.7, -1).gather(1, torch.tensor(out.token_ids)[:, None])[:, 0]
    assert torch.allclose(torch.tensor(out.log_probs), expected, atol=1e-4)
    again = tiny.gen.run([_req(tiny, prompt, temperature=0.7, logprobs=True, seed=3)])[0]
    assert again.token_ids == out.token_ids  # per-request seed: reproducible
    assert tiny.gen.run([_req(tiny, prompt, temperature=0.7)])[0].log_probs is None  # not requested


def test_stop_token_ids_and_stop_strings_stop(tiny):
    prompt = tiny.prompts[1]
    free = tiny.gen.run([_req(tiny, prompt, temperature=0, max_tokens=12, ignore_eos=True)])[0].token_ids
    stop_id = free[3]
    first = free.index(stop_id)
    out = tiny.gen.run([_req(tiny, prompt, temperature=0, stop_token_ids=[stop_id], ignore_eos=True)])[0]
    assert out.token_ids == free[: first + 1] and out.finish_reason == "stop"  # the stop token is kept, like vLLM

    decode = lambda ids: tiny.tok.decode(ids, skip_special_tokens=True)  # noqa: E731
    n = next(i for i in range(2, len(free)) if decode(free[:i]).strip())
    stop_str = decode(free[:n]).strip()[-2:] or decode(free[:n])
    out = tiny.gen.run([_req(tiny, prompt, temperature=0, stop=[stop_str], ignore_eos=True)])[0]
    expected_len = next(i for i in range(1, len(free) + 1) if stop_str in decode(free[:i]))
    assert out.token_ids == free[:expected_len] and out.finish_reason == "stop"


def test_max_tokens_and_length_finish(tiny):
    out = tiny.gen.run([_req(tiny, tiny.prompts[0], temperature=0, max_tokens=3, ignore_eos=True)])[0]
    assert len(out.token_ids) == 3 and out.finish_reason == "length"


def test_allowed_token_ids_restrict_and_renormalise(tiny):
    allowed = [5, 17, 42, 100]
    prompt = tiny.prompts[0]
    out = tiny.gen.run([_req(tiny, prompt, temperature=1.0, allowed_token_ids=allowed, logprobs=True, seed=1,
                             max_tokens=8, ignore_eos=True)])[0]
    assert set(out.token_ids) <= set(allowed) and len(out.token_ids) == 8
    logits = _direct_logprobs(tiny, prompt, out.token_ids)[:, allowed]
    expected = torch.log_softmax(logits, -1).gather(
        1, torch.tensor([allowed.index(t) for t in out.token_ids])[:, None])[:, 0]
    assert torch.allclose(torch.tensor(out.log_probs), expected, atol=1e-4)
    greedy = tiny.gen.run([_req(tiny, prompt, temperature=0, allowed_token_ids=allowed, max_tokens=4)])[0]
    assert set(greedy.token_ids) <= set(allowed)


@pytest.mark.parametrize("k", [0, 3])
def test_prompt_logprobs_layout_matches_verl_vllm(tiny, k):
    prompt = tiny.prompts[1]
    out = tiny.gen.run([_req(tiny, prompt, temperature=0, max_tokens=2, prompt_logprobs=k)])[0]
    with torch.no_grad():
        lp = torch.log_softmax(tiny.model(torch.tensor([prompt])).logits[0].float(), -1)
    width = max(k, 1)
    assert len(out.prompt_ids) == len(out.prompt_logprobs) == len(prompt)
    assert all(len(r) == width for r in out.prompt_ids + out.prompt_logprobs)
    assert out.prompt_ids[-1] == [0] * width and out.prompt_logprobs[-1] == [0.0] * width  # dummy last row
    for j in range(len(prompt) - 1):
        if k == 0:
            assert out.prompt_ids[j] == [prompt[j + 1]]
            assert out.prompt_logprobs[j][0] == pytest.approx(float(lp[j, prompt[j + 1]]), abs=1e-4)
        else:
            top = torch.topk(lp[j], k)
            assert out.prompt_ids[j] == top.indices.tolist()
            assert out.prompt_logprobs[j] == pytest.approx(top.values.tolist(), abs=1e-4)


def test_concurrent_requests_are_batched_with_the_same_results(tiny):
    from rftt_plugin.backends.batcher import MicroBatcher

    reqs = [_req(tiny, p, temperature=0, logprobs=True, max_tokens=10, ignore_eos=True) for p in tiny.prompts]
    reqs += [_req(tiny, p, temperature=0.9, top_p=0.9, top_k=20, logprobs=True, seed=i) for i, p in enumerate(tiny.prompts)]
    alone = [tiny.gen.run([r])[0] for r in reqs]

    async def run_batch(batch):
        return await asyncio.to_thread(tiny.gen.run, batch)

    async def main():
        batcher = MicroBatcher({"generate": run_batch}, wait_s=0.05, max_batch_size=64)
        results = await asyncio.gather(*(batcher.submit("generate", r) for r in reqs))
        return results, batcher.batch_sizes

    batched, sizes = asyncio.run(main())
    assert sizes == [len(reqs)]  # one forward batch served all of them
    for a, b in zip(alone, batched):
        assert a.token_ids == b.token_ids
        assert torch.allclose(torch.tensor(a.log_probs), torch.tensor(b.log_probs), atol=1e-4)


def test_batch_failure_reaches_every_caller():
    from rftt_plugin.backends.batcher import MicroBatcher

    async def boom(batch):
        raise RuntimeError("model exploded")

    async def main():
        batcher = MicroBatcher({"generate": boom}, wait_s=0.01)
        return await asyncio.gather(batcher.submit("generate", 1), batcher.submit("generate", 2),
                                    return_exceptions=True)

    assert [str(e) for e in asyncio.run(main())] == ["model exploded"] * 2


# ---------------------------------------------------------------------------------------------
# hfcpu server: verl contract, weights, stale check
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server_cfgs(tiny_model_dir):
    import verl  # noqa: F401  (plugin registers the Hydra search path for +dryrun=cpu)
    from hydra import compose, initialize_config_module

    with initialize_config_module("verl.trainer.config", version_base=None):
        cfg = compose("ppo_trainer", overrides=[
            "+dryrun=cpu", f"actor_rollout_ref.model.path={tiny_model_dir}",
            "data.max_prompt_length=64", "data.max_response_length=6",
            "actor_rollout_ref.rollout.load_format=auto",
        ])
    return cfg.actor_rollout_ref.rollout, cfg.actor_rollout_ref.model


def _server(server_cfgs, mode="hybrid"):
    from verl.workers.rollout.replica import RolloutMode

    from rftt_plugin.cpu.hfcpu.server import HFCPUServer

    return HFCPUServer(server_cfgs[0], server_cfgs[1], RolloutMode(mode), replica_rank=0)


def test_server_generate_contract_and_stale_weight_check(server_cfgs, tiny):
    from rftt_plugin.cpu.hfcpu.weights import StaleWeightsError, WeightSyncError, state_digest

    server = _server(server_cfgs)
    prompt = tiny.prompts[0]
    params = {"temperature": 0, "logprobs": True, "prompt_logprobs": 2}

    async def scenario():
        with pytest.raises(StaleWeightsError, match="no weights received"):
            await server.generate(prompt_ids=prompt, sampling_params=params, request_id="a")
        state = {k: v.clone() for k, v in tiny.model.state_dict().items()}
        info = await server.load_weights(state, global_steps=0, digest=state_digest(state))
        assert info["version"] == 1 and info["global_steps"] == 0
        out = await server.generate(prompt_ids=prompt, sampling_params=params, request_id="b", image_data=None)
        assert out.extra_fields["global_steps"] == 0 and out.stop_reason == "completed"
        assert len(out.token_ids) == len(out.log_probs) <= 6
        assert len(out.extra_fields["prompt_logprobs"]) == len(prompt) and len(out.extra_fields["prompt_ids"][0]) == 2

        await server.sleep()  # the trainer is about to change the weights
        with pytest.raises(StaleWeightsError, match="sleep"):
            await server.generate(prompt_ids=prompt, sampling_params=params, request_id="c")
        changed = {k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}
        info = await server.load_weights(changed, global_steps=1, digest=state_digest(changed))
        assert info["version"] == 2 and info["digest"] != state_digest(state)
        out = await server.generate(prompt_ids=prompt, sampling_params={"temperature": 0}, request_id="d")
        assert out.extra_fields["global_steps"] == 1 and out.log_probs is None

        with pytest.raises(WeightSyncError, match="backwards"):
            await server.load_weights(changed, global_steps=0)
        with pytest.raises(WeightSyncError, match="transit"):
            await server.load_weights(changed, global_steps=2, digest="0" * 16)
        with pytest.raises(WeightSyncError, match="does not have"):
            await server.load_weights({**changed, "extra.weight": torch.zeros(1)}, global_steps=2)
        missing = dict(changed)
        missing.pop(next(k for k in changed if "layers.0" in k))
        with pytest.raises(WeightSyncError, match="did not send"):
            await server.load_weights(missing, global_steps=2)

    asyncio.run(scenario())


def test_server_rejects_what_it_does_not_support(server_cfgs, tiny):
    from rftt_plugin.cpu.hfcpu.sampling import UnsupportedRequest

    server = _server(server_cfgs, mode="standalone")  # no weight sync expected: not strict
    prompt = tiny.prompts[0]

    async def scenario():
        ok = await server.generate(prompt_ids=prompt, sampling_params={"temperature": 0}, request_id="x")
        assert ok.extra_fields["global_steps"] is None
        with pytest.raises(UnsupportedRequest, match="image"):
            await server.generate(prompt_ids=prompt, sampling_params={}, request_id="y", image_data=["img"])
        with pytest.raises(UnsupportedRequest, match="n=1"):
            await server.generate(prompt_ids=prompt, sampling_params={"n": 4}, request_id="z")
        with pytest.raises(UnsupportedRequest, match="lora_request"):
            await server.generate(prompt_ids=prompt, sampling_params={}, request_id="w", lora_request=1)
        with pytest.raises(UnsupportedRequest, match="skip_tokenizer_init"):  # verl's default config
            await server.generate(prompt_ids=prompt, sampling_params={"stop": ["</step>"]}, request_id="v")

    asyncio.run(scenario())


def test_request_seeds_make_samples_independent_of_arrival_order(server_cfgs, tiny):
    """engine_kwargs.hfcpu.request_seeds: the samples a batch of concurrent requests draws do not
    depend on the order the requests arrive in (the chain-RL baseline's reproducibility)."""
    from omegaconf import OmegaConf, open_dict

    from rftt_plugin.cpu.hfcpu.sampling import request_seed
    from rftt_plugin.cpu.hfcpu.server import HFCPUServer
    from verl.workers.rollout.replica import RolloutMode

    rollout = OmegaConf.create(OmegaConf.to_container(server_cfgs[0]))
    with open_dict(rollout):
        rollout.engine_kwargs = {**(rollout.engine_kwargs or {}), "hfcpu": {"request_seeds": True}}
    p, q = list(tiny.prompts[0]), list(tiny.prompts[1])
    sample = {"temperature": 1.0, "max_tokens": 6}

    async def draw(order):
        server = HFCPUServer(rollout, server_cfgs[1], RolloutMode("standalone"), replica_rank=0)
        outs = await asyncio.gather(*(server.generate(prompt_ids=ids, sampling_params=sample, request_id=str(i))
                                      for i, ids in enumerate(order)))
        explicit = await server.generate(prompt_ids=p, sampling_params={**sample, "seed": request_seed(
            int(rollout.seed), 0, tuple(p), 1)}, request_id="explicit")
        by_prompt: dict = {}
        for ids, out in zip(order, outs):
            by_prompt.setdefault(tuple(ids), []).append(tuple(out.token_ids))
        return by_prompt, tuple(explicit.token_ids)

    first, explicit_1 = asyncio.run(draw([p, q, p, p]))
    second, explicit_2 = asyncio.run(draw([q, p, p, p]))
    assert sorted(first[tuple(p)]) == sorted(second[tuple(p)]) and first[tuple(q)] == second[tuple(q)]
    assert len(set(first[tuple(p)])) > 1, "the n samples of one prompt must differ"
    assert explicit_1 == explicit_2 and explicit_1 in first[tuple(p)]  # the 2nd p got the documented seed


def test_adapter_refuses_lora_adapters():
    from rftt_plugin.cpu.hfcpu.adapter import HFCPUServerAdapter

    adapter = object.__new__(HFCPUServerAdapter)  # skip BaseRollout config plumbing
    with pytest.raises(NotImplementedError, match="LoRA"):
        asyncio.run(adapter.update_weights(iter([]), peft_config={"r": 8}))
