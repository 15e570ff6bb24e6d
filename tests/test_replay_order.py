"""The dataset-order replay buffer: trajectories sorted by prompt position, session, index.

Expectations are written out by hand from verl's key format ``{uid}_{session_id}_{index}``.
"""

from __future__ import annotations

import pytest

pytest.importorskip("verl")

from omegaconf import OmegaConf  # noqa: E402

from rftt_plugin.integration.replay_order import DatasetOrderReplayBuffer, dataset_order  # noqa: E402


def test_prompt_position_beats_uid_text_and_finishing_order():
    # finishing order: the second prompt's leaves first, sessions out of order
    keys = ["zz_2_0", "zz_0_0", "aa_1_0", "zz_1_0", "aa_0_0", "aa_0_1"]
    order = dataset_order(keys, ["zz", "aa"])  # zz was submitted first although "aa" < "zz"
    assert [keys[i] for i in order] == ["zz_0_0", "zz_1_0", "zz_2_0", "aa_0_0", "aa_0_1", "aa_1_0"]


def test_sessions_compare_as_numbers():
    keys = ["u_10_0", "u_2_0", "u_1_0"]
    assert [keys[i] for i in dataset_order(keys, ["u"])] == ["u_1_0", "u_2_0", "u_10_0"]


def test_unknown_uid_and_odd_keys_go_last_without_error():
    keys = ["late_0_0", "known_x_0", "known_0_0", "bare"]
    got = [keys[i] for i in dataset_order(keys, ["known"])]
    assert got == ["known_0_0", "known_x_0", "bare", "late_0_0"]
    assert dataset_order([], ["a"]) == []


def _buffer(mode: str = "sync") -> DatasetOrderReplayBuffer:
    return DatasetOrderReplayBuffer(mode, OmegaConf.create({}), max_off_policy_threshold=None,
                                    max_off_policy_strategy="drop", sampler_kwargs=OmegaConf.create({}))


def test_refuses_async_modes_with_the_setting_to_change():
    with pytest.raises(ValueError, match="trainer_mode='colocate_async'.*custom_sampler.path=null"):
        _buffer("colocate_async")


def test_materialized_batch_is_in_submission_order(monkeypatch):
    import verl.trainer.ppo.v1.replay_buffer as rb

    monkeypatch.setattr(rb.tq, "kv_clear", lambda **_kw: None)  # no TransferQueue in a unit test
    buffer = _buffer()
    # TransferQueue listed the prompts in submission order: p2 then p1 (uids are random uuids)
    buffer.prompt_global_steps["train"] = {"p2": 3, "p1": 3}
    # and the trajectories in the order their trees finished
    snapshot = {"p1_1_0": {"seq_len": 5}, "p1_0_0": {"seq_len": 6}, "p2_1_0": {"seq_len": 7}, "p2_0_0": {"seq_len": 8}}
    batch = buffer._materialize_batch("train", ["p1", "p2"], snapshot)
    assert list(batch.keys) == ["p2_0_0", "p2_1_0", "p1_0_0", "p1_1_0"]
    assert [t["seq_len"] for t in batch.tags] == [8, 7, 6, 5]  # tags move with their keys
