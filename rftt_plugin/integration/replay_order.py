"""verl's sync replay buffer, with each sampled batch in dataset order (a reproducible phase 2).

verl 0.9.1's V1 trainer takes a training batch from its replay buffer, which lists trajectories in
the order they *finished* (the TransferQueue partition's insertion order). Finishing order depends
on timing, so the same seed gives a different batch order on every run, hence different PPO
mini-batches (``ppo_mini_batch_size`` splits the batch in order) and a different model: measured
on the CPU quickstart, two runs from the same SFT checkpoint had the same step-1 trajectories in a
different order and diverged from step 2 on.

:class:`DatasetOrderReplayBuffer` changes only that order: trajectories are sorted by the position
of their prompt in the dataloader batch, then by session and index (verl's key format
``{uid}_{session_id}_{index}``), which is the order verl's V0 trainer used. Sampling, eviction and
refill are verl's. The recipes select it with ``trainer.v1.sampler.custom_sampler`` (a public
verl setting); it is for ``trainer.v1.trainer_mode=sync`` only, and says so otherwise.

It is also where the tree metrics join verl's step metrics: ``sample()`` returns ``(batch,
metrics)`` and the V1 trainer logs those metrics with the step (``_step_once``). For a training
batch the buffer reads the sampled rows' ``extra_fields`` from TransferQueue (as verl's own
filter_groups does) and adds :func:`rftt_plugin.search.step_metrics.step_metrics` of them (the
``rftt/...`` keys, docs/training-metrics.md). Fail-soft: a metrics problem is logged once per
kind and never stops training.
"""

from __future__ import annotations

import logging
from typing import Iterable, Sequence

import transfer_queue as tq
from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

from rftt_plugin.search.step_metrics import step_metrics

logger = logging.getLogger("rftt_plugin")


def dataset_order(keys: Sequence[str], prompt_order: Iterable[str]) -> list[int]:
    """Indices that sort trajectory ``keys`` by (prompt position, session id, index).

    ``prompt_order``: the prompt uids in the order they were submitted. A uid missing from it goes
    last (in key order); non-numeric session or index parts compare as text after numeric ones.

    >>> dataset_order(["b_1_0", "a_0_0", "b_0_0", "a_1_0"], ["b", "a"])
    [2, 0, 1, 3]
    >>> dataset_order(["x_10_0", "x_9_0", "x_9_1"], [])
    [1, 2, 0]
    """
    rank = {uid: i for i, uid in enumerate(prompt_order)}

    def part(text: str) -> tuple[int, int, str]:
        return (0, int(text), "") if text.isdigit() else (1, 0, text)

    def sort_key(i: int) -> tuple:
        uid, _, rest = keys[i].partition("_")
        session, _, index = rest.partition("_")
        return (rank.get(uid, len(rank)), uid if uid not in rank else "", part(session), part(index), keys[i])

    return sorted(range(len(keys)), key=sort_key)


class DatasetOrderReplayBuffer(ReplayBuffer):
    """verl's :class:`ReplayBuffer` whose sampled batches list trajectories in dataset order."""

    def __init__(self, trainer_mode: str, *args, **kwargs):
        if trainer_mode != "sync":
            raise ValueError(
                f"rftt_plugin's DatasetOrderReplayBuffer (trainer.v1.sampler.custom_sampler) subclasses verl's sync "
                f"ReplayBuffer, but trainer.v1.trainer_mode={trainer_mode!r}. Use trainer_mode=sync, or set "
                f"trainer.v1.sampler.custom_sampler.path=null to get verl's buffer for that mode.")
        super().__init__(trainer_mode, *args, **kwargs)

    def _materialize_batch(self, partition_id, selected_prompt_uids, partition_snapshot):
        batch = super()._materialize_batch(partition_id, selected_prompt_uids, partition_snapshot)
        # prompt_global_steps is filled from TransferQueue's listing, where the prompts sit in the
        # order the trainer submitted them (one kv_batch_put per dataloader batch)
        order = dataset_order(list(batch.keys), self.prompt_global_steps[partition_id])
        if order != list(range(len(order))):
            batch.reorder(order)
        return batch

    def sample(self, global_steps: int, partition_id: str, batch_size: int):
        batch, metrics = super().sample(global_steps, partition_id, batch_size)
        if partition_id == "train":  # validation metrics come from reward_extra_info (verl's own path)
            metrics = {**metrics, **self._tree_metrics(batch)}
        return batch, metrics

    _warned: set[str] = set()

    def _tree_metrics(self, batch) -> dict[str, float]:
        try:
            keys = list(batch.keys)
            if not keys:
                return {}
            data = tq.kv_batch_get(keys=keys, partition_id=batch.partition_id, select_fields=["extra_fields"])
            return step_metrics(list(data["extra_fields"]))
        except Exception as exc:  # noqa: BLE001 - metrics must never stop training
            kind = type(exc).__name__
            if kind not in self._warned:
                self._warned.add(kind)
                logger.warning("rftt tree metrics skipped for this batch (%s: %s); training goes on. Further %s "
                               "errors are not logged again.", kind, exc, kind, exc_info=True)
            return {"rftt/metrics_errors": 1.0}
