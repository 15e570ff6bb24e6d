"""Foundation: the verl entry point, the recipe group, overrides, the guard and the wheel."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.helpers import REPO, clean_env, run_python

pytestmark = pytest.mark.slow  # fresh interpreters, a Ray actor, wheel builds


def _compose(overrides):
    import verl  # noqa: F401  (loads the plugin, as main_ppo does before Hydra runs)
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        return compose(config_name="ppo_trainer", overrides=overrides)


def test_recipe_applies_and_passes_verl_validation(tiny_model_dir):
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    cfg = _compose(["+recipe=rftt", f"actor_rollout_ref.model.path={tiny_model_dir}"])
    assert cfg.algorithm.adv_estimator == "reinforce_plus_plus"
    assert cfg.algorithm.use_kl_in_reward is True and cfg.algorithm.kl_ctrl.kl_coef == 0.01
    assert cfg.actor_rollout_ref.rollout.agent.default_agent_loop == "rftt_tree"
    assert cfg.actor_rollout_ref.rollout.n == 16
    assert cfg.actor_rollout_ref.actor.optim.lr == 5e-7
    assert cfg.data.train_batch_size == 16
    assert cfg.reward.custom_reward_function.path == "pkg://rftt_plugin.reward"
    assert cfg.reward.custom_reward_function.reward_kwargs.rule == "rftt"
    # training batches in dataset order (reproducible mini-batches); the class loads as verl loads it
    sampler = cfg.trainer.v1.sampler.custom_sampler
    from verl.utils.import_utils import load_extern_object

    from rftt_plugin.integration.replay_order import DatasetOrderReplayBuffer
    assert load_extern_object(sampler.path, sampler.name) is DatasetOrderReplayBuffer
    assert cfg.rftt.search.max_depth == 18 and cfg.rftt.search.uct_c == 2.0
    assert cfg.rftt.search.step_temperature == 0.1 and cfg.rftt.search.step_top_p == 0.95
    assert (cfg.rftt.search.step_max_tokens, cfg.rftt.search.direct_answer_max_tokens) == (512, 1024)
    # the guard resolves to its value while the plugin is loaded
    assert cfg.actor_rollout_ref.actor.use_dynamic_bsz is True
    assert cfg.actor_rollout_ref.rollout.full_determinism is False
    assert not need_critic(cfg) and need_reference_policy(cfg)
    validate_config(cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))


@pytest.mark.parametrize("position", ["before", "after"])
def test_command_line_overrides_win(position):
    extra = ["actor_rollout_ref.actor.optim.lr=1e-6", "rftt.search.uct_c=0.5", "algorithm.kl_ctrl.kl_coef=0.05",
             "rftt.reward.rule=binary"]
    overrides = extra + ["+recipe=rftt"] if position == "before" else ["+recipe=rftt"] + extra
    cfg = _compose(overrides)
    assert cfg.actor_rollout_ref.actor.optim.lr == 1e-6
    assert cfg.rftt.search.uct_c == 0.5
    assert cfg.algorithm.kl_ctrl.kl_coef == 0.05
    # interpolated values follow the override
    assert cfg.reward.custom_reward_function.reward_kwargs.rule == "binary"


def test_unknown_recipe_fails_loudly():
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException):
        _compose(["+recipe=rfft"])


def test_fresh_process_registers_plugin():
    code = ("import verl, sys; from rftt_plugin.integration import guard; "
            "print('LOADED', guard.plugin_loaded(), 'rftt_plugin.integration.plugin' in sys.modules)")
    proc = run_python(code, cwd="/")
    assert proc.returncode == 0, proc.stderr
    assert "LOADED True True" in proc.stdout
    off = run_python(code, cwd="/", env=clean_env(VERL_USE_EXTERNAL_PLUGINS="none"))
    assert "LOADED False False" in off.stdout, off.stderr


def test_plugin_import_error_is_logged_at_error_and_reraised():
    code = """
import logging
import rftt_plugin.integration.hydra_searchpath as h
def boom():
    raise RuntimeError("simulated registration failure")
h.register = boom
try:
    import rftt_plugin.integration.plugin
except RuntimeError as exc:
    print("RERAISED", exc)
"""
    proc = run_python(code, cwd="/")
    assert "RERAISED simulated registration failure" in proc.stdout
    assert "rftt-plugin failed to register with verl" in proc.stderr
    assert "Traceback" in proc.stderr and "simulated registration failure" in proc.stderr


def test_registration_inside_ray_actor():
    code = """
import ray
ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
@ray.remote(num_cpus=0)
def probe():
    import verl
    from rftt_plugin.integration import guard
    return guard.plugin_loaded()
on = ray.get(probe.remote())
off = ray.get(probe.options(runtime_env={"env_vars": {"VERL_USE_EXTERNAL_PLUGINS": "none"}}).remote())
print("ACTOR", on, off)
ray.shutdown()
"""
    proc = run_python(code, cwd="/", timeout=240)
    assert "ACTOR True False" in proc.stdout, proc.stderr[-2000:]


def test_no_silent_fallback_when_plugin_not_loaded(tmp_path):
    """+recipe=rftt with the plugin disabled must stop before Ray starts, saying why."""
    cmd = [sys.executable, "-m", "verl.trainer.main_ppo", "+recipe=rftt", "actor_rollout_ref.model.path=/nonexistent",
           "trainer.device=cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp_path,
                          env=clean_env(VERL_USE_EXTERNAL_PLUGINS="none"))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "rftt-plugin's verl plugin is not loaded" in out
    assert "rftt doctor" in out
    assert "ray init kwargs" not in out  # stopped before ray.init


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory):
    """Build the wheel, install it with --no-deps into a venv that sees this environment's packages."""
    root = tmp_path_factory.mktemp("wheel")
    dist = root / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(dist)], check=True, capture_output=True, timeout=300)
    wheels = list(dist.glob("rftt_plugin-*.whl"))
    assert len(wheels) == 1
    env_dir = root / "venv"
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    site = Path(run_python("import site; print(site.getsitepackages()[0])", python=str(py)).stdout.strip())
    outer = Path(run_python("import site; print(site.getsitepackages()[0])").stdout.strip())
    # a plain path line: the outer packages become importable, but the outer editable install's
    # finder (.pth files in that directory) is not activated, so rftt_plugin comes from the wheel
    (site / "outer_env.pth").write_text(f"{outer}\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                    str(wheels[0])], check=True, capture_output=True, timeout=300)
    return py


def test_wheel_ships_recipes_and_resolves_recipe(wheel_venv, tmp_path):
    where = run_python("import rftt_plugin; print(rftt_plugin.__file__)", python=str(wheel_venv), cwd=tmp_path)
    assert str(wheel_venv.parent.parent) in where.stdout, where.stdout + where.stderr
    cmd = [str(wheel_venv), "-m", "verl.trainer.main_ppo", "+recipe=rftt", "rftt.search.uct_c=3.5", "--cfg", "job"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp_path, env=clean_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "default_agent_loop: rftt_tree" in proc.stdout
    assert "adv_estimator: reinforce_plus_plus" in proc.stdout
    assert "uct_c: 3.5" in proc.stdout


def test_wheel_hydra_plugins_fallback_resolves_without_verl_plugin(wheel_venv, tmp_path):
    cmd = [str(wheel_venv), "-m", "verl.trainer.main_ppo", "+recipe=rftt", "--info", "searchpath"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp_path,
                          env=clean_env(VERL_USE_EXTERNAL_PLUGINS="none"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "pkg://rftt_plugin.config" in proc.stdout
