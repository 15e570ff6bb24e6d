"""verl agent loop ``rftt_tree``: functional MCTS rollouts for verl's V1 trainer.

``actor_rollout_ref.rollout.n`` sessions of one prompt (one ``uid``) run concurrently in the same
agent-loop worker process. The first session to arrive starts the prompt's tree search (a shared
asyncio task keyed by ``uid``); every session awaits it and returns one leaf:

* session ``i`` gets leaf ``i`` (the path of MCTS iteration ``i``; with
  ``rftt.search.distinct_leaves`` the ``i``-th distinct leaf). The search runs as many iterations
  as there are sessions (``rollout.n`` in training, ``val_kwargs.n`` in validation), so every
  session gets its own path. **Fewer leaves than sessions** (a distinct-leaf search that exhausted
  the tree, or a session that arrives after the search finished) -> leaves are reused cyclically
  (``i mod #leaves``) and the reuse is reported in ``extra_fields["rftt_leaf_reused"]``.
* **A failed search** (the root could not be expanded, the backend or grader crashed) raises in
  every session of the group, so verl marks the group ``failure``; nothing waits forever and the
  shared state of the ``uid`` is removed when its last session leaves.

Each leaf becomes an ``AgentLoopOutput`` with the exact prompt ids, response ids, loss mask and
rollout log-probs of the search (nothing re-tokenised; see ``rftt_plugin.search.tree``). The
reward is computed here (``reward_score`` set, so verl does not grade again); with
``rftt.credit.mode=tree`` the output also carries dense per-token rewards that become
``rm_scores`` (formula: ``rftt_plugin.credit``). When verl asks for greedy sampling
(``temperature == 0``: validation by default) only the outcome is written, so validation scores
stay comparable across credit modes.

Tree statistics go into ``extra_fields`` (stored with every trajectory) and into
``extra_fields["reward_extra_info"]``, which verl turns into validation metrics.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import torch
from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopMetrics, AgentLoopOutput, register

from rftt_plugin.credit import dense_rewards, step_credit
from rftt_plugin.integration.server_backend import VerlServerBackend
from rftt_plugin.search.config import SearchConfig
from rftt_plugin.search.layout import TokenLayout
from rftt_plugin.search.mcts import FunctionalMCTS, SearchResult

logger = logging.getLogger("rftt_plugin")

CREDIT_MODES = ("outcome", "tree")


@dataclass(frozen=True)
class LoopSettings:
    """What the agent loop reads from the composed config's ``rftt`` section."""

    search: dict
    token_mode: str
    rule: str
    format_penalty: float
    timeout_s: float
    credit_mode: str
    step_weight: float
    readout_top_k: int

    @classmethod
    def from_config(cls, config: Any) -> "LoopSettings":
        section = config.get("rftt") if hasattr(config, "get") else None
        if section is None:
            raise ValueError("the rftt_tree agent loop needs the `rftt` config section: run main_ppo with "
                             "+recipe=rftt (or +recipe=rftt_tree)")
        from omegaconf import OmegaConf

        data = OmegaConf.to_container(section, resolve=True) if not isinstance(section, dict) else dict(section)
        token_mode = data.get("token_mode", "added")
        if token_mode != "added":
            raise ValueError("rftt.token_mode=text is not supported inside verl: its vLLM server runs with "
                             "skip_tokenizer_init, so a step cannot stop on a closing-tag string. Prepare the model "
                             "with `rftt prepare-model` and use token_mode=added.")
        reward, credit = data.get("reward", {}) or {}, data.get("credit", {}) or {}
        mode = credit.get("mode", "outcome")
        if mode not in CREDIT_MODES:
            raise ValueError(f"rftt.credit.mode must be one of {CREDIT_MODES}, got {mode!r}")
        return cls(search=dict(data.get("search", {}) or {}), token_mode=token_mode,
                   rule=str(reward.get("rule", "rftt")), format_penalty=float(reward.get("format_penalty", 0.0)),
                   timeout_s=float(reward.get("timeout_s", 5.0)), credit_mode=mode,
                   step_weight=float(credit.get("step_weight", 0.0)),
                   readout_top_k=int(data.get("tag_readout_top_k", 20)))


class RfttLeafOutput(AgentLoopOutput):
    """An ``AgentLoopOutput`` that can carry dense per-token rewards (written as ``rm_scores``)."""

    token_rewards: Optional[list[float]] = None

    def as_dict(self) -> dict[str, Any]:
        dense = self.token_rewards
        out = super().as_dict()
        out.pop("token_rewards", None)
        if dense is not None:
            if len(dense) != len(self.response_ids):
                raise ValueError(f"{len(dense)} token rewards for {len(self.response_ids)} response ids")
            out["rm_scores"] = torch.tensor(dense, dtype=torch.float32)
        return out


class _TreeJob:
    """The shared search of one uid in this worker process."""

    def __init__(self, key: str):
        self.key = key
        self.sessions: set[int] = set()
        self.finished = 0
        self.task: asyncio.Task | None = None


@register("rftt_tree")
class RfttTreeAgentLoop(AgentLoopBase):
    _jobs: ClassVar[dict[str, _TreeJob]] = {}
    _layouts: ClassVar[dict[int, TokenLayout]] = {}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.settings = LoopSettings.from_config(self.config)
        self.prompt_length = int(self.rollout_config.prompt_length)
        self.response_length = int(self.rollout_config.response_length)

    # -- shared per-uid search -------------------------------------------------------------------
    def _layout(self) -> TokenLayout:
        key = id(self.tokenizer)
        if key not in self._layouts:
            self._layouts[key] = TokenLayout.from_tokenizer(self.tokenizer, mode=self.settings.token_mode)
        return self._layouts[key]

    async def _search(self, job: _TreeJob, kwargs: dict) -> tuple[SearchResult, VerlServerBackend]:
        messages = list(kwargs["raw_prompt"])
        prompt_ids = await self.ct_build_initial_tokens(messages)
        # All sessions of the uid were created in one go by verl and registered before this task
        # ran; yield once more so that any straggler is counted too.
        await asyncio.sleep(0)
        n = max(job.sessions) + 1
        search = {**self.settings.search, "iterations": n, "token_mode": self.settings.token_mode}
        search["max_response_tokens"] = min(int(search.get("max_response_tokens", self.response_length)),
                                            self.response_length)
        search["seed"] = int(search.get("seed", 0)) + int(kwargs.get("global_steps", 0) or 0)
        config = SearchConfig.from_mapping(search)
        layout = dataclasses.replace(self._layout(), prompt_fn=lambda _question: prompt_ids)
        backend = VerlServerBackend(self.server_manager, request_id=f"rftt-{job.key}", eos_id=layout.eos_id,
                                    readout_top_k=self.settings.readout_top_k)
        gold = (kwargs.get("reward_model") or {}).get("ground_truth")
        data_source = kwargs.get("data_source")
        settings = self.settings

        async def grade(text: str) -> float:
            from rftt_plugin.reward.score import score_response_async

            result = await score_response_async(text, gold, rule=settings.rule, format_penalty=settings.format_penalty,
                                                data_source=data_source, timeout_s=settings.timeout_s)
            return result.score

        question = str(messages[-1].get("content", "")) if messages else ""
        result = await FunctionalMCTS(backend, layout, config, grade).search(question, gold=gold,
                                                                           meta={"uid": job.key})
        if not result.leaves:
            raise RuntimeError(f"rftt_tree: the search for uid {job.key} produced no leaf: "
                               f"{result.tree.meta.get('error', 'unknown error')}")
        return result, backend

    # -- one session ------------------------------------------------------------------------------
    async def run(self, sampling_params: dict[str, Any], **kwargs) -> AgentLoopOutput:
        key = str(kwargs["uid"])
        session = int(kwargs.get("session_id", 0))
        job = self._jobs.setdefault(key, _TreeJob(key))
        job.sessions.add(session)  # before any await: the search sizes itself from these
        if job.task is None:
            job.task = asyncio.create_task(self._search(job, kwargs))
        t0 = time.perf_counter()
        try:
            result, backend = await asyncio.shield(job.task)
            return await self._leaf_output(result, backend, session, sampling_params, kwargs, time.perf_counter() - t0)
        finally:
            job.finished += 1
            if job.finished >= len(job.sessions) and self._jobs.get(key) is job:
                del self._jobs[key]

    async def _leaf_output(self, result: SearchResult, backend: VerlServerBackend, session: int,
                           sampling_params: dict, kwargs: dict, wall_s: float) -> AgentLoopOutput:
        from rftt_plugin.reward.score import score_response_async

        leaves = result.leaves
        leaf = leaves[session % len(leaves)]
        limit = self.response_length
        response_ids = leaf.response_ids[:limit]
        cut_by_length = len(leaf.response_ids) > limit
        # as verl decodes for its reward: EOS and other special tokens dropped, the (normal) tag tokens kept
        text = self.tokenizer.decode(response_ids, skip_special_tokens=True)
        graded = await score_response_async(text, (kwargs.get("reward_model") or {}).get("ground_truth"),
                                            rule=self.settings.rule, format_penalty=self.settings.format_penalty,
                                            data_source=kwargs.get("data_source"), timeout_s=self.settings.timeout_s)
        is_output = leaf.terminal_reason == "output" and not cut_by_length
        cut_reward = float((result.tree.meta.get("config") or {}).get("cut_reward", 0.0))
        outcome = float(leaf.reward) if not cut_by_length else cut_reward
        greedy = float(sampling_params.get("temperature", 1.0) or 0.0) == 0.0

        token_rewards = None
        if self.settings.credit_mode == "tree" and not greedy and response_ids:
            credit = step_credit(leaf.node_values, result.tree.root.value, self.settings.step_weight)
            ends = [(e, c) for e, c in zip(leaf.step_ends, credit) if e < len(response_ids)]
            token_rewards = dense_rewards(len(response_ids), [e for e, _ in ends], [c for _, c in ends], outcome)

        stats = result.stats
        tree_info = {
            "rftt_tree_nodes": stats.nodes, "rftt_tree_depth": stats.max_depth,
            "rftt_tree_unique_leaves": stats.unique_leaves, "rftt_tree_llm_calls": stats.llm_calls,
            "rftt_tree_token_ratio": round(stats.token_ratio, 4),
            "rftt_tree_tokens_saved": stats.independent_tokens - stats.generated_tokens,
            "rftt_leaf_steps": leaf.n_steps, "rftt_leaf_duplicate": int(leaf.duplicate),
            "rftt_leaf_reused": int(session >= len(leaves)),
            "rftt_leaf_truncated": int(not is_output),
            "rftt_format_ok": int(bool(graded.format_ok) and is_output),
            **{f"rftt_tag_{tag}": count for tag, count in sorted(stats.tag_histogram.items())},
        }
        reward_info = {"score": outcome, "acc": float(bool(graded.acc) and is_output),
                       "has_answer": float(bool(graded.has_answer) and is_output), **tree_info}
        extra_fields = {
            **tree_info,
            "rftt_terminal_reason": leaf.terminal_reason if not cut_by_length else "response_length",
            "rftt_tags": list(leaf.tags),
            # what the dense rewards were built from (analysis, and tests recompute them)
            "rftt_step_ends": [int(e) for e in leaf.step_ends if e < len(response_ids)],
            "rftt_node_values": [float(v) for v in leaf.node_values],
            "rftt_root_value": float(result.tree.root.value),
            "reward_extra_info": reward_info,
            "turn_scores": [], "tool_rewards": [],
            "min_global_steps": backend.min_global_steps, "max_global_steps": backend.max_global_steps,
        }
        if session == 0:
            logger.info("rftt_tree uid=%s: %d nodes, depth %d, %d/%d unique leaves, mean reward %.3f, %.1fs",
                        result.tree.meta.get("uid"), stats.nodes, stats.max_depth, stats.unique_leaves,
                        stats.leaves, stats.mean_reward, result.wall_s)
        return RfttLeafOutput(
            prompt_ids=list(leaf.prompt_ids), response_ids=response_ids,
            response_mask=leaf.loss_mask[:limit], response_logprobs=leaf.response_logprobs[:limit],
            reward_score=outcome, num_turns=2,
            metrics=AgentLoopMetrics(generate_sequences=wall_s),
            extra_fields=extra_fields, token_rewards=token_rewards,
        )
