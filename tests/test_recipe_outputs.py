"""What the phase-2 recipes make of a run's outputs: console logging under project `rftt` with the
recipe's name as the run name, and a Hugging Face copy with every actor checkpoint (which
`rftt export` hands to eval) that is never loaded back on resume."""

from __future__ import annotations

import pytest


def _compose(recipe: str, overrides=()):
    import verl  # noqa: F401  (loads the plugin, as main_ppo does)
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        return compose(config_name="ppo_trainer", overrides=[f"+recipe={recipe}", *overrides])


@pytest.mark.parametrize("recipe", ["rftt", "rftt_tree"])
def test_logging_and_checkpoint_contents(recipe):
    cfg = _compose(recipe)
    assert list(cfg.trainer.logger) == ["console"]          # verl's default is console + wandb
    assert cfg.trainer.project_name == "rftt"                # not verl_examples
    assert cfg.trainer.experiment_name == recipe             # not gsm8k
    assert cfg.trainer.default_local_dir == f"checkpoints/rftt/{recipe}"
    ckpt = cfg.actor_rollout_ref.actor.checkpoint
    assert "hf_model" in ckpt.save_contents and "hf_model" not in ckpt.load_contents
    assert set(ckpt.load_contents) == {"model", "optimizer", "extra"}


def test_command_line_still_wins():
    cfg = _compose("rftt", ["trainer.logger=[console,wandb]", "trainer.experiment_name=mine"])
    assert list(cfg.trainer.logger) == ["console", "wandb"] and cfg.trainer.default_local_dir == "checkpoints/rftt/mine"
