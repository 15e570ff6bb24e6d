"""The typed `rftt:` schema and the composed-config checks: each user mistake gives one line
naming the key, before Ray starts."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from rftt_plugin.config.schema import ConfigError, RfttSettings, check_composed_config, settings_from_mapping
from tests.helpers import clean_env


def _compose(overrides, recipe="rftt"):
    import verl  # noqa: F401  (loads the plugin, as main_ppo does)
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        return compose(config_name="ppo_trainer", overrides=[f"+recipe={recipe}", *overrides])


@pytest.mark.parametrize("recipe", ["rftt", "rftt_tree"])
def test_shipped_recipes_pass_and_mirror_the_schema(recipe):
    from omegaconf import OmegaConf

    cfg = _compose([], recipe)
    settings = check_composed_config(cfg)
    assert isinstance(settings, RfttSettings)
    section = OmegaConf.to_container(cfg.rftt, resolve=True)
    # every schema field is written out in the recipe (nothing hides in code defaults)
    import dataclasses

    for f in dataclasses.fields(RfttSettings):
        assert f.name in section, f.name
    for name in ("search", "reward", "credit"):
        sub = getattr(settings, name)
        for f in dataclasses.fields(sub):
            if name == "search" and f.name == "token_mode":
                continue  # set once, as rftt.token_mode (the agent loop passes it to the search)
            assert f.name in section[name], f"rftt.{name}.{f.name} missing from the recipe"
    for f in dataclasses.fields(settings.reward.prm):
        assert f.name in section["reward"]["prm"], f.name


@pytest.mark.parametrize("overrides, message", [
    (["+rftt.serch.uct_c=3"], "rftt.serch: unknown key (did you mean rftt.search?)"),
    (["+rftt.search.uct=3"], "rftt.search.uct: unknown key (did you mean rftt.search.uct_c?)"),
    (["rftt.search.uct_c=-1"], "rftt.search.uct_c=-1.0: must be >= 0"),
    (["rftt.search.max_depth=0"], "rftt.search.max_depth=0: must be >= 1"),
    (["rftt.search.max_depth=abc"], "rftt.search.max_depth='abc': must be an integer"),
    (["rftt.reward.rule=bogus"], "rftt.reward.rule='bogus': must be one of rftt, rftt_prm, binary, blend"),
    (["rftt.reward.rule=blend"], "rftt.reward.rule='blend' needs a PRM, but neither rftt.reward.prm.url nor "
                                 "rftt.reward.prm.model is set"),
    (["rftt.reward.prm.url=http://127.0.0.1:1/x"], "rftt.reward.prm is set but rftt.reward.rule='rftt' does not use it"),
    (["rftt.reward.rule=rftt_prm", "rftt.reward.prm.url=localhost:8008"],
     "rftt.reward.prm.url='localhost:8008': must start with http:// or https://"),
    (["rftt.credit.normalize=per_leaf"], "rftt.credit.normalize='per_leaf': must be one of global, tree, none"),
    (["rftt.credit.min_std=-0.1"], "rftt.credit.min_std=-0.1: must be >= 0"),
    (["actor_rollout_ref.rollout.n=0"], "actor_rollout_ref.rollout.n=0: must be an integer >= 1"),
    (["trainer.use_v1=false"], "trainer.use_v1=False: the rftt_tree agent loop needs verl's V1 trainer"),
    (["algorithm.rollout_correction.rollout_is=token"], "algorithm.rollout_correction.rollout_is is set"),
    (["rftt.token_mode=text"], "rftt.token_mode='text': must be 'added' inside verl"),
    (["rftt.credit.normalize=tree"], "rftt.credit.normalize='tree' is ignored: algorithm.adv_estimator="
                                     "'reinforce_plus_plus' does not read it"),
    (["rftt.credit.min_std=0.05"], "rftt.credit.min_std=0.05 is ignored"),
    (["rftt.credit.step_weight=0.5"], "rftt.credit.step_weight=0.5 is ignored: rftt.credit.mode='outcome'"),
    (["rftt.search.iterations=8"], "rftt.search.iterations=8 is ignored: the rftt_tree agent loop runs one "
                                   "iteration per session, actor_rollout_ref.rollout.n=16"),
    (["trainer.v1.trainer_mode=colocate_async"],
     "trainer.v1.trainer_mode='colocate_async': the recipe's dataset-order replay buffer"),
])
def test_each_mistake_is_one_line_naming_the_key(overrides, message):
    cfg = _compose(overrides)
    with pytest.raises(ConfigError) as info:
        check_composed_config(cfg)
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_tree_normalize_with_one_leaf_per_tree_is_refused():
    cfg = _compose(["actor_rollout_ref.rollout.n=1"], recipe="rftt_tree")
    with pytest.raises(ConfigError, match=r"rftt.credit.normalize='tree' with actor_rollout_ref.rollout.n=1 cannot train"):
        check_composed_config(cfg)
    # the same n with global whitening, and rollout.n alone (iterations follow it), are fine
    assert check_composed_config(_compose(["actor_rollout_ref.rollout.n=1", "rftt.credit.normalize=global"],
                                          recipe="rftt_tree"))
    assert check_composed_config(_compose(["actor_rollout_ref.rollout.n=4"])).search.iterations == 4


def test_settings_from_a_plain_mapping():
    s = settings_from_mapping({"search": {"uct_c": 3, "iterations": 4}, "credit": {"mode": "tree"}})
    assert s.search.uct_c == 3.0 and isinstance(s.search.uct_c, float) and s.search.iterations == 4
    assert s.credit.mode == "tree" and s.reward.rule == "rftt"
    with pytest.raises(ConfigError, match="rftt.search.iterations=True: must be an integer"):
        settings_from_mapping({"search": {"iterations": True}})
    with pytest.raises(ConfigError, match="rftt.reward=3: must be a mapping"):
        settings_from_mapping({"reward": 3})


def test_sft_recipe_section_is_accepted():
    s = settings_from_mapping({"recipe": "rftt_sft", "trainer": "sft"})
    assert s.trainer == "sft"
    with pytest.raises(ConfigError, match="rftt.epochs: unknown key"):
        settings_from_mapping({"recipe": "rftt_sft", "trainer": "sft", "epochs": 3})


@pytest.mark.parametrize("override, message", [
    ("+rftt.serch.uct_c=3", "rftt.serch: unknown key (did you mean rftt.search?)"),
    ("rftt.reward.rule=blend", "rftt.reward.rule='blend' needs a PRM"),
])
@pytest.mark.slow
def test_main_ppo_stops_before_ray_with_the_message(override, message, tmp_path):
    cmd = [sys.executable, "-m", "verl.trainer.main_ppo", "+recipe=rftt", override,
           "actor_rollout_ref.model.path=/nonexistent", "trainer.device=cpu"]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp_path, env=clean_env())
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert message in out, out[-3000:]
    assert "ray init kwargs" not in out and "Started a local Ray instance" not in out   # stopped before ray.init
    print(f"stopped after {time.time() - t0:.1f} s")


@pytest.mark.slow
def test_doctor_config_runs_the_same_check():
    from rftt_plugin.integration.wiring_checks import check_config

    assert check_config(["+recipe=rftt", "rftt.search.max_depth=0"]) == (False, "rftt.search.max_depth=0: must be >= 1")
    ok, line = check_config(["+recipe=rftt_tree"])
    assert ok and "rftt_tree" in line
    ok, line = check_config(["trainer.total_epochs=1"])
    assert not ok and "no rftt section" in line


def test_the_schema_takes_its_choices_from_their_owners():
    # one definition each: the schema validates against the owners' tuples, not copies of them
    from rftt_plugin.backends import base
    from rftt_plugin.config import schema
    from rftt_plugin.reward import prm, rules
    from rftt_plugin.search import credit
    from rftt_plugin import tag_ids

    assert schema.REWARD_RULES is rules.REWARD_RULES and schema.PRM_RULES is rules.PRM_RULES
    assert schema.CREDIT_MODES is credit.CREDIT_MODES and schema.NORMALIZE_MODES is credit.NORMALIZE_MODES
    assert schema.PRM_AGGREGATES is prm.AGGREGATES and schema.TOKEN_MODES is tag_ids.TOKEN_MODES
    assert schema.TAG_READOUTS is base.TAG_READOUTS
