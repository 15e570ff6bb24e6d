"""Fast tests of rftt_plugin.cpu: platform selection, guarded patches, post-import hooks, the hfcpu
rollout (sampling semantics against a direct forward pass, prompt_logprobs layout, batching, the
stale-weight check) and the dry-run launcher's pure parts. No Ray, no main_ppo."""

from __future__ import annotations

import asyncio
import sys
import textwrap
import types

import pytest
import torch

from rftt_plugin import import_hooks as hooks
from rftt_plugin.cpu import compat, patches
from rftt_plugin.cpu.compat import PatchSignatureError
from rftt_plugin.cpu.platform import CPUPlatformMethods, decide_registration, platform_class

# The CPU platform is only selected on hosts without an accelerator.
cpu_only_host = pytest.mark.skipif(torch.cuda.is_available(), reason="host has CUDA: verl keeps its own platform")

# ---------------------------------------------------------------------------------------------
# Platform selection
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "env, cuda, npu, expected",
    [
        ("", False, False, True),        # CPU-only host: register
        ("", True, False, False),        # CUDA visible: leave verl alone
        ("", False, True, False),        # NPU visible
        ("cpu", True, False, True),      # VERL_PLATFORM wins, even with a GPU
        ("nvidia", False, False, False),  # VERL_PLATFORM wins the other way
        ("  CPU ", False, False, True),
    ],
)
def test_decide_registration(env, cuda, npu, expected):
    ok, reason = decide_registration(env, cuda, npu)
    assert ok is expected and reason


@cpu_only_host
def test_cpu_platform_steps_aside_for_an_available_accelerator(monkeypatch):
    import verl  # noqa: F401
    from verl.plugin.platform.platform_manager import PlatformRegistry
    from verl.plugin.platform.platform_base import PlatformBase

    PlatformCPU = platform_class()
    assert PlatformCPU().is_platform_available(use_smi_check=True)  # this host: no accelerator

    class FakeAccelerator(CPUPlatformMethods, PlatformBase):
        pass

    class Present(PlatformBase):  # only the probe matters here
        def is_platform_available(self, use_smi_check=False):
            return True

    Present.__abstractmethods__ = frozenset()
    monkeypatch.setitem(PlatformRegistry._platforms, "fakeacc", Present)
    assert not PlatformCPU().is_platform_available(use_smi_check=True)
    monkeypatch.setitem(PlatformRegistry._platforms, "fakeacc", FakeAccelerator)  # CPU-like: ignored
    assert PlatformCPU().is_platform_available(use_smi_check=True)


@cpu_only_host
def test_platform_resolves_to_cpu_and_env_override_is_respected(monkeypatch):
    import verl  # noqa: F401
    from verl.plugin.platform import get_platform

    from rftt_plugin.cpu import platform

    assert get_platform().device_name == "cpu"
    assert get_platform().communication_backend_name() == "gloo"
    assert get_platform().current_device() == "cpu"
    assert get_platform().device_module.is_available() is False
    monkeypatch.setenv("VERL_PLATFORM", "nvidia")
    assert platform.register()[0] is False


def test_cpu_device_module_explains_missing_calls():
    from rftt_plugin.cpu.platform import CpuDeviceModule

    with pytest.raises(AttributeError, match="CPU platform"):
        CpuDeviceModule().get_device_properties(0)
    free, total = CpuDeviceModule().mem_get_info()
    assert 0 < free <= total


# ---------------------------------------------------------------------------------------------
# Version gate and guarded patches
# ---------------------------------------------------------------------------------------------


def test_version_gate(monkeypatch):
    monkeypatch.delenv(compat.UNTESTED_ENV, raising=False)
    assert compat.private_patches_allowed("0.9.1")[0]
    allowed, reason = compat.private_patches_allowed("0.10.0")
    assert not allowed and compat.UNTESTED_ENV in reason
    monkeypatch.setenv(compat.UNTESTED_ENV, "apply")
    assert compat.private_patches_allowed("0.10.0")[0]


def _fake_distributed(ray_sig="timeout_second=None, backend=None", plain_sig="timeout_second=36000"):
    ns: dict = {"calls": []}
    exec(textwrap.dedent(f"""
        def initialize_global_process_group_ray({ray_sig}):
            calls.append(locals())
        def initialize_global_process_group({plain_sig}):
            calls.append("plain")
    """), ns)
    module = types.ModuleType("fake_distributed")
    module.initialize_global_process_group_ray = ns["initialize_global_process_group_ray"]
    module.initialize_global_process_group = ns["initialize_global_process_group"]
    return module, ns["calls"]


def test_b3_forces_gloo_and_keeps_explicit_backends():
    module, calls = _fake_distributed()
    patches.apply_b3(module)
    module.initialize_global_process_group_ray(timeout_second=5)
    module.initialize_global_process_group_ray(backend="cpu:gloo")
    assert calls == [{"timeout_second": 5, "backend": "gloo"}, {"timeout_second": None, "backend": "cpu:gloo"}]
    assert patches.apply_b3(module) == "already applied"


@pytest.mark.parametrize("ray_sig, plain_sig", [
    ("timeout_second=None, backend=None, extra=None", "timeout_second=36000"),
    ("timeout=None, backend=None", "timeout_second=36000"),
    ("timeout_second=None, backend=None", "timeout_second=36000, backend=None"),
])
def test_b3_refuses_on_signature_mismatch(ray_sig, plain_sig):
    module, _ = _fake_distributed(ray_sig, plain_sig)
    original = module.initialize_global_process_group_ray
    with pytest.raises(PatchSignatureError, match="rftt_plugin"):
        patches.apply_b3(module)
    assert module.initialize_global_process_group_ray is original  # untouched


def test_b8_unpins_and_keeps_isinstance():
    from torch.distributed.fsdp import CPUOffloadPolicy

    module = types.SimpleNamespace(CPUOffloadPolicy=CPUOffloadPolicy)
    patches.apply_b8(module)
    policy = module.CPUOffloadPolicy(pin_memory=True)
    assert policy.pin_memory is False and isinstance(policy, CPUOffloadPolicy)


def test_b8_refuses_on_signature_mismatch():
    class Policy:
        def __init__(self, pin_memory=True, offload_grads=False):
            pass

    module = types.SimpleNamespace(CPUOffloadPolicy=Policy)
    with pytest.raises(PatchSignatureError):
        patches.apply_b8(module)
    assert module.CPUOffloadPolicy is Policy


def test_untested_version_skips_patch_with_warning(monkeypatch, caplog):
    from rftt_plugin.cpu import registry
    from rftt_plugin.cpu.state import STATE

    module, _ = _fake_distributed()
    original = module.initialize_global_process_group_ray
    monkeypatch.setattr(registry, "private_patches_allowed", lambda: (False, "verl 9.9 is not a tested version"))
    fake = patches.Patch("B3-test", "fake_distributed", patches.apply_b3)
    with caplog.at_level("WARNING", logger="rftt_plugin.cpu"):
        registry._run_patch(fake, module)
    assert module.initialize_global_process_group_ray is original
    assert STATE.steps["B3-test"].state == "skipped" and "tested" in caplog.text
    del STATE.steps["B3-test"]


def test_deferred_steps_only_act_on_the_cpu_platform(monkeypatch):
    from rftt_plugin.cpu import platform, registry
    from rftt_plugin.cpu.state import STATE

    calls = []
    step = registry._only_on_cpu("probe-step", "some.module", lambda m: calls.append(m))
    monkeypatch.setattr(registry, "_platform_is_cpu", lambda: (False, "platform is nvidia"))
    step("module")
    assert calls == [] and STATE.steps["probe-step"].state == "skipped"

    def broken(_module):
        raise PatchSignatureError("verl changed")

    monkeypatch.setattr(registry, "_platform_is_cpu", lambda: (True, ""))
    with pytest.raises(PatchSignatureError):
        registry._only_on_cpu("probe-step", "some.module", broken)("module")
    assert STATE.steps.pop("probe-step").state == "failed"

    monkeypatch.delenv("VERL_PLATFORM", raising=False)
    monkeypatch.setattr(platform, "accelerators_visible", lambda: (True, False))  # a GPU host
    assert platform.register() == (False, "an accelerator is visible to torch (CUDA or NPU)")


@cpu_only_host
def test_real_patches_applied_in_this_process():
    import verl.utils.distributed as dist
    import verl.workers.engine.fsdp.transformer_impl as impl
    import verl.workers.engine_workers as workers

    from rftt_plugin import cpu

    assert getattr(dist.initialize_global_process_group_ray, patches.PATCHED_MARK) == "B3"
    assert workers.initialize_global_process_group_ray is dist.initialize_global_process_group_ray
    assert getattr(impl.CPUOffloadPolicy, patches.PATCHED_MARK) == "B8"
    status = cpu.status()
    assert status["platform_active"] and status["verl_version_tested"]
    assert all(status["patches_applied"].values()), status["steps"]


# ---------------------------------------------------------------------------------------------
# Post-import hooks
# ---------------------------------------------------------------------------------------------


def test_when_imported_fires_once_after_the_module_body(tmp_path, monkeypatch):
    (tmp_path / "rftt_hook_probe.py").write_text("VALUE = 41\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = []
    hooks.when_imported("rftt_hook_probe", lambda m: seen.append(m.VALUE))
    assert "rftt_hook_probe" in hooks.pending()
    import rftt_hook_probe  # noqa: F401

    assert seen == [41] and "rftt_hook_probe" not in hooks.pending()
    hooks.when_imported("rftt_hook_probe", lambda m: seen.append(m.VALUE + 1))  # already imported: now
    assert seen == [41, 42]
    sys.modules.pop("rftt_hook_probe")


# ---------------------------------------------------------------------------------------------
# hfcpu: sampling params, engine, prompt_logprobs, batching
# ---------------------------------------------------------------------------------------------

from rftt_plugin.cpu.hfcpu.engine import BatchGenerator, GenerationRequest  # noqa: E402
from rftt_plugin.cpu.hfcpu.sampling import (  # noqa: E402
    ServerLimits,
    UnsupportedRequest,
    parse_sampling_params,
)

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
    from rftt_plugin.cpu.hfcpu.batcher import MicroBatcher

    reqs = [_req(tiny, p, temperature=0, logprobs=True, max_tokens=10, ignore_eos=True) for p in tiny.prompts]
    reqs += [_req(tiny, p, temperature=0.9, top_p=0.9, top_k=20, logprobs=True, seed=i) for i, p in enumerate(tiny.prompts)]
    alone = [tiny.gen.run([r])[0] for r in reqs]

    async def run_batch(batch):
        return await asyncio.to_thread(tiny.gen.run, batch)

    async def main():
        batcher = MicroBatcher(run_batch, max_wait_s=0.05, max_batch=64)
        results = await asyncio.gather(*(batcher.submit(r) for r in reqs))
        return results, batcher.batch_sizes

    batched, sizes = asyncio.run(main())
    assert sizes == [len(reqs)]  # one forward batch served all of them
    for a, b in zip(alone, batched):
        assert a.token_ids == b.token_ids
        assert torch.allclose(torch.tensor(a.log_probs), torch.tensor(b.log_probs), atol=1e-4)


def test_batch_failure_reaches_every_caller():
    from rftt_plugin.cpu.hfcpu.batcher import MicroBatcher

    async def boom(batch):
        raise RuntimeError("model exploded")

    async def main():
        batcher = MicroBatcher(boom, max_wait_s=0.01)
        return await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)

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


def test_adapter_refuses_lora_adapters():
    from rftt_plugin.cpu.hfcpu.adapter import HFCPUServerAdapter

    adapter = object.__new__(HFCPUServerAdapter)  # skip BaseRollout config plumbing
    with pytest.raises(NotImplementedError, match="LoRA"):
        asyncio.run(adapter.update_weights(iter([]), peft_config={"r": 8}))


# ---------------------------------------------------------------------------------------------
# Dry-run launcher: overrides, report, tiny clone
# ---------------------------------------------------------------------------------------------


def test_overlay_values_win_over_colliding_user_overrides():
    from rftt_plugin.cpu.dryrun.overrides import compose

    user = ["+recipe=rftt", "trainer.logger=[console,wandb]", "data.train_files=x.parquet", "trainer.n_gpus_per_node=8"]
    composed = compose(user, enforced={"trainer.n_gpus_per_node": "2"})
    args = composed.args
    assert args[: len(user)] == user and "+dryrun=cpu" in args
    assert args.index("trainer.logger=[console]") > args.index("trainer.logger=[console,wandb]")
    assert args[-1] == "trainer.n_gpus_per_node=2"
    assert ("trainer.logger", "[console,wandb]", "[console]") in composed.replaced
    assert not any(a.startswith("data.train_files=") for a in args[len(user):])


def test_report_parses_verl_console_lines_and_judges():
    from rftt_plugin.cpu.dryrun.report import judge, parse_step_metrics, timing_table

    lines = [
        "(TaskRunnerV1 pid=1) step:1 - actor/grad_norm:0.8 - critic/advantages/max:0.7 - critic/advantages/min:-0.7"
        " - timing_s/gen:2.0 - timing_s/step:3.5 - training/off_policy/trajectory_staleness/max:np.int64(0)",
        "noise",
        "(TaskRunnerV1 pid=1) step:2 - actor/grad_norm:0.0 - timing_s/gen:1.0 - timing_s/step:1.5",
    ]
    steps = parse_step_metrics(lines)
    assert steps[1]["critic/advantages/min"] == -0.7 and steps[1]["training/off_policy/trajectory_staleness/max"] == 0
    events = [{"event": "load_weights", "version": v, "global_steps": v - 1} for v in (1, 2, 3)]
    verdict = judge(0, steps, 2, events)
    assert verdict.passed and any("grad_norm is 0" in w for w in verdict.warnings)
    assert not judge(0, steps, 3, events).passed
    assert not judge(0, steps, 2, events[:2]).passed  # the rollout did not get the last weights
    assert "gen" in timing_table(steps)


def test_tiny_clone_keeps_family_and_tokenizer(tiny_llama_dir, tmp_path):
    from transformers import AutoConfig, AutoTokenizer

    from rftt_plugin.cpu.dryrun.tiny_clone import ShrinkSpec, tiny_clone

    spec = ShrinkSpec(num_layers=1, hidden_size=32, num_heads=2, num_kv_heads=1, intermediate_size=48)
    out = tiny_clone(str(tiny_llama_dir), cache_dir=tmp_path, spec=spec)
    cfg, src = AutoConfig.from_pretrained(out), AutoConfig.from_pretrained(tiny_llama_dir)
    assert cfg.model_type == src.model_type and cfg.architectures == src.architectures
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size) == (1, 32, src.vocab_size)
    text = "What is 12 * 7? <|im_end|>"
    assert AutoTokenizer.from_pretrained(out)(text)["input_ids"] == AutoTokenizer.from_pretrained(tiny_llama_dir)(text)["input_ids"]
    assert tiny_clone(str(tiny_llama_dir), cache_dir=tmp_path, spec=spec) == out  # cached


def test_launcher_prepares_a_cpu_command_for_a_real_model(tiny_llama_dir, tmp_path, monkeypatch):
    import shutil

    from rftt_plugin.cpu.dryrun.launcher import DryRunOptions, prepare

    monkeypatch.setenv("RFTT_CACHE", str(tmp_path / "cache"))
    opts = DryRunOptions(overrides=["+recipe=rftt", f"actor_rollout_ref.model.path={tiny_llama_dir}",
                                    "trainer.logger=[console,wandb]"], steps=3, workdir=tmp_path / "w")
    command, env, workdir, replaced, note = prepare(opts)
    shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)
    assert command[1:3] == ["-m", "verl.trainer.main_ppo"] and "+dryrun=cpu" in command
    model_args = [a for a in command if a.startswith("actor_rollout_ref.model.path=")]
    assert model_args[-1] != f"actor_rollout_ref.model.path={tiny_llama_dir}" and "tiny" in model_args[-1]
    assert "trainer.total_training_steps=3" in command and command.index("trainer.logger=[console]") > 0
    assert len(env["RAY_TMPDIR"]) < 40 and ("trainer.logger", "[console,wandb]", "[console]") in replaced
    assert model_args[-1].split("=", 1)[1].startswith(str(tmp_path / "cache"))
