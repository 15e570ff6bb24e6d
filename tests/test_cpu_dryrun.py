"""The CPU dry-run launcher: overrides, report parsing, tiny clone (cpu/dryrun/)."""

from __future__ import annotations


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
