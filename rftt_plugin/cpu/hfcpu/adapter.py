"""``HFCPUServerAdapter``: the worker-side half of hfcpu (``BaseRollout``), inside each actor rank.

verl builds it in ``ActorRolloutRefWorker`` with ``get_rollout_class(name, mode)``
(verl/workers/engine_workers.py:667) and calls ``update_weights(per_tensor_param, peft_config=...,
base_sync_done=..., global_steps=...)`` from its naive weight sync after every step
(engine_workers.py:728-827; the V1 sync trainer uses ``checkpoint_engine.backend=naive``).

Every rank must drain the weight generator: for FSDP it yields ``DTensor.full_tensor()``
results, which are collectives. Rank 0 of each replica copies the tensors to a CPU fp32 state dict,
digests it, and ships it through Ray's object store to its server, which verifies the digest,
installs the weights and records ``global_steps`` (see ``weights.py``).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Generator, Optional

import ray
import torch
from verl.workers.rollout.base import BaseRollout

from rftt_plugin.cpu.hfcpu.replica import server_actor_name
from rftt_plugin.cpu.hfcpu.weights import state_digest

logger = logging.getLogger("rftt_plugin.cpu.hfcpu")


class HFCPUServerAdapter(BaseRollout):
    def __init__(self, config, model_config, device_mesh, replica_rank: int = -1):
        super().__init__(config, model_config, device_mesh)
        rank = int(os.environ.get("RANK", "0"))
        replica_world = (
            self.config.tensor_model_parallel_size
            * self.config.data_parallel_size
            * self.config.pipeline_model_parallel_size
        )
        self.replica_rank = rank // replica_world if replica_rank == -1 else replica_rank
        self.rollout_rank = rank % replica_world
        self._has_server = self.rollout_rank == 0
        self._server = None

    def _server_handle(self):
        if self._server is None:  # the server starts after the hybrid engine: look it up lazily
            self._server = ray.get_actor(server_actor_name(self.replica_rank, 0))
        return self._server

    async def resume(self, tags: list[str]):
        return None  # weights and cache never leave host memory

    async def release(self):
        return None

    @torch.no_grad()
    async def update_weights(
        self,
        weights: Generator[tuple[str, torch.Tensor], None, None],
        wire_format: str = "named_tensors",
        global_steps: Optional[int] = None,
        peft_config: Optional[dict] = None,
        base_sync_done: bool = True,
        **kwargs,
    ):
        if wire_format != "named_tensors":
            raise NotImplementedError(f"hfcpu receives full named tensors only, not wire_format={wire_format!r}")
        if peft_config is not None:
            raise NotImplementedError(
                "hfcpu does not serve LoRA adapters; set actor_rollout_ref.model.lora.merge=True so merged "
                "weights are synced as full tensors"
            )
        start = time.time()
        state: dict[str, torch.Tensor] = {}
        for name, tensor in weights:  # drain on every rank: full_tensor() is a collective
            if self._has_server:
                state[name] = tensor.detach().to("cpu", dtype=torch.float32 if tensor.is_floating_point() else None).clone()
        if not self._has_server:
            return None
        digest = state_digest(state)
        info = await self._server_handle().load_weights.remote(state, global_steps=global_steps, digest=digest)
        logger.info("hfcpu weights -> replica %d in %.2fs: %s", self.replica_rank, time.time() - start, info)
        return info
