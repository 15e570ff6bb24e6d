"""``HFCPUReplica``: verl's ``RolloutReplica`` for the hfcpu backend (registered as ``hfcpu``).

verl creates one replica per ``tensor*data*pipeline_model_parallel_size`` trainer ranks and calls
``init_hybrid(worker_group)``, which sets ``self.workers`` and calls :meth:`launch_servers`
(verl/workers/rollout/replica.py:123-135, llm_server.py:458-487). We start one named Ray actor
per replica on the node of the replica's first worker and set what verl reads afterwards:
``servers``, ``_server_handle`` and ``_server_address`` (an opaque id: hfcpu has no HTTP API).
"""

from __future__ import annotations

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from verl.workers.rollout.replica import RolloutMode, RolloutReplica

from rftt_plugin.cpu.hfcpu.server import HFCPUServer

SERVER_NAME_PREFIX = "hfcpu_server_"


def server_actor_name(replica_rank: int, node_rank: int = 0, suffix: str = "") -> str:
    """Named so the worker-side adapter can find its server with ``ray.get_actor``."""
    return f"{SERVER_NAME_PREFIX}{replica_rank}_{node_rank}{suffix}"


class HFCPUReplica(RolloutReplica):
    async def launch_servers(self):
        if self.rollout_mode != RolloutMode.HYBRID:
            raise NotImplementedError(
                f"hfcpu supports the hybrid rollout mode only (trainer and rollout colocated, weights synced with "
                f"checkpoint_engine.backend=naive), not {self.rollout_mode}. Standalone/colocated rollouts and "
                f"generative reward models need vLLM/SGLang on a GPU."
            )
        if self.is_reward_model or self.is_teacher_model:
            raise NotImplementedError("hfcpu does not serve reward or teacher models")
        node_id = await self.workers[0].__ray_call__.remote(lambda worker: ray.get_runtime_context().get_node_id())
        server = (
            ray.remote(HFCPUServer)
            .options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
                name=server_actor_name(self.replica_rank, 0, self.name_suffix),
                max_concurrency=self.max_concurrency,
                num_cpus=0,  # CPU slots are all reserved by verl's pools on a small host (B5)
            )
            .remote(
                config=self.config,
                model_config=self.model_config,
                rollout_mode=self.rollout_mode,
                replica_rank=self.replica_rank,
                node_rank=0,
            )
        )
        await server.ready.remote()
        self.servers = [server]
        self._server_handle = server
        self._server_address = f"hfcpu-replica-{self.replica_rank}{self.name_suffix}"
