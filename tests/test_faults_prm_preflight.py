"""A PRM that cannot score is found before training: the guard (read by main_ppo before Ray) and
`rftt doctor --config` make one real scoring call and name the setting in one line."""

from __future__ import annotations

import pytest

from tests.prm_server import PRMServer
from tests.test_faults_agent_loop import PRM, refused_url


def _compose(overrides):
    import verl  # noqa: F401
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        return compose(config_name="ppo_trainer", overrides=["+recipe=rftt", *overrides])


def _read_guarded_key(cfg):
    return cfg.actor_rollout_ref.rollout.full_determinism  # what verl's driver reads before ray.init


@pytest.fixture(autouse=True)
def _fresh_memo():
    from rftt_plugin.integration import guard

    guard._PRM_CHECKED.clear()
    yield
    guard._PRM_CHECKED.clear()


def test_guard_stops_on_a_refused_prm_with_the_setting_named():
    url = refused_url()
    cfg = _compose(["rftt.reward.rule=blend", f"rftt.reward.prm.url={url}", "rftt.reward.prm.timeout_s=2"])
    with pytest.raises(Exception) as info:
        _read_guarded_key(cfg)
    text = str(info.value)
    assert f"rftt.reward.prm.url={url}: the PRM did not score a test path" in text
    assert "rftt.reward.rule=rftt" in text


@pytest.mark.parametrize("mode", ["500", "slow"])
def test_guard_stops_on_a_failing_or_slow_prm(mode):
    prm = PRM("500" if mode == "500" else "ok", delay_s=1.5 if mode == "slow" else 0.0)
    try:
        cfg = _compose(["rftt.reward.rule=rftt_prm", f"rftt.reward.prm.url={prm.url}", "rftt.reward.prm.timeout_s=0.5"])
        with pytest.raises(Exception, match=r"rftt.reward.prm.url=.*did not score a test path"):
            _read_guarded_key(cfg)
    finally:
        prm.close()


def test_guard_passes_a_healthy_prm_and_calls_it_once():
    with PRMServer() as prm:
        cfg = _compose(["rftt.reward.rule=blend", f"rftt.reward.prm.url={prm.url}"])
        assert _read_guarded_key(cfg) is False
        assert _read_guarded_key(cfg) is False
        assert len(prm.requests) == 1  # once per process and setting, however often the key is read


def test_doctor_config_calls_the_prm(capsys):
    from rftt_plugin import cli

    url = refused_url()
    rc = cli.main(["doctor", "--config", "+recipe=rftt", "rftt.reward.rule=blend", f"rftt.reward.prm.url={url}",
                   "rftt.reward.prm.timeout_s=2"])
    out = capsys.readouterr().out
    assert rc == 2 and f"PRM problem: rftt.reward.prm.url={url}: the PRM did not score a test path" in out
    with PRMServer() as prm:
        rc = cli.main(["doctor", "--config", "+recipe=rftt", "rftt.reward.rule=blend", f"rftt.reward.prm.url={prm.url}"])
    out = capsys.readouterr().out
    assert rc == 0 and "scored a 2-step test path" in out
