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


class _Batch:
    def __init__(self, keys, partition_id="train"):
        self.keys, self.partition_id = list(keys), partition_id


def _tree_row(uid, acc):
    return {"rftt_leaf_steps": 2, "rftt_terminal_reason": "output", "reward_extra_info": {"acc": acc},
            "rftt_tree": {"uid": uid, "sessions": 2, "masked": {"prm_error": 1}, "policy_path_acc": acc}}


def test_sample_adds_the_tree_metrics_of_the_sampled_rows(monkeypatch):
    import rftt_plugin.integration.replay_order as ro
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

    batch = _Batch(["u1_0_0", "u2_0_0"])
    monkeypatch.setattr(ReplayBuffer, "sample", lambda self, g, p, b: (batch, {"training/x": 7.0}))
    asked = []

    def kv_batch_get(keys, partition_id, select_fields):
        asked.append((keys, partition_id, select_fields))
        return {"extra_fields": [_tree_row("u1", 1.0), _tree_row("u2", 0.0)]}

    monkeypatch.setattr(ro.tq, "kv_batch_get", kv_batch_get)
    got, metrics = _buffer().sample(3, "train", 2)
    assert got is batch and asked == [(["u1_0_0", "u2_0_0"], "train", ["extra_fields"])]
    assert metrics["training/x"] == 7.0                       # verl's own metrics kept
    assert metrics["rftt/rows"] == 2.0 and metrics["rftt/masked/prm_error"] == 2.0   # 1 per tree, 2 trees
    assert metrics["rftt/policy_path_acc"] == 0.5
    # validation batches: verl logs reward_extra_info itself; no TransferQueue read here
    _, val_metrics = _buffer().sample(3, "val", 2)
    assert len(asked) == 1 and not [k for k in val_metrics if k.startswith("rftt/")]


def test_a_metrics_failure_never_stops_training(monkeypatch, caplog):
    import rftt_plugin.integration.replay_order as ro
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

    batch = _Batch(["u1_0_0"])
    monkeypatch.setattr(ReplayBuffer, "sample", lambda self, g, p, b: (batch, {}))

    def broken(**_kw):
        raise KeyError("extra_fields")

    monkeypatch.setattr(ro.tq, "kv_batch_get", broken)
    monkeypatch.setattr(ro.DatasetOrderReplayBuffer, "_warned", set())
    with caplog.at_level("WARNING", logger="rftt_plugin"):
        got, metrics = _buffer().sample(1, "train", 1)
        _buffer().sample(2, "train", 1)
    assert got is batch and metrics == {"rftt/metrics_errors": 1.0}
    warnings = [r for r in caplog.records if "tree metrics skipped" in r.getMessage()]
    assert len(warnings) == 1 and "KeyError" in warnings[0].getMessage()  # logged once per kind
