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

**Faults are never trained.** A leaf whose reward would be invented by an infrastructure fault --
a backend call still failing after ``rftt.search.step_retries`` retries, an answer check with no
verdict (time-out, grader overload), a grader exception, a PRM score still missing after the PRM's
retries -- is pruned from the tree by the search and its session returns ``[]``: verl V1 stores
nothing for an empty list (``AgentLoopWorkerTQ._agent_loop_postprocess``), so no row, no reward, no
share in the batch's whitening (a fully masked row would still count in verl's score and length
metrics; verl flags only its own padding rows). Every such leaf is counted in the tree's
``extra_fields["rftt_tree"]["masked"]`` (by cause), which every emitted row of the tree carries, and
reaches the step's metrics (``rftt/masked/<cause>``, docs/training-metrics.md). After
``rftt.reward.prm.max_consecutive_failures`` PRM calls in a row fail, every further tree fails with
a message naming ``rftt.reward.prm``: the run stops instead of training without its PRM.

Each leaf becomes an ``AgentLoopOutput`` with the exact prompt ids, response ids, loss mask and
rollout log-probs of the search (nothing re-tokenised; see ``rftt_plugin.search.tree``).

**One grade per leaf.** The search grades an ``<output>`` leaf once, on the text exactly as verl
decodes it for its reward (``skip_special_tokens=True``); that :class:`RewardResult` is kept and
becomes the leaf's ``reward_score``, ``acc`` and ``format_ok`` (so verl does not grade again). With
a PRM rule the grade includes the PRM's path score from ``rftt.reward.prm``, asked only where it is
used (``blend``: every leaf; ``rftt_prm``: leaves without an answer); a leaf the search cut (depth,
budget, a step the policy spoiled) has no answer and gets, under those rules, its PRM value here
(the tree's back-up used ``cut_reward`` for it).

With ``rftt.credit.mode=tree``, or when ``rftt.search.loss_on_inserted=false`` masks the EOS the
search inserts, the output carries dense per-token rewards that become ``rm_scores`` (formula:
``rftt_plugin.search.credit``), with the outcome on the last *trained* token, so it is never dropped.
When verl asks for greedy sampling (``temperature == 0``: validation by default) no step credit
is written, so validation scores stay comparable across credit modes.

**Rollout log-probs** are those of the search: step text sampled at
``rftt.search.step_temperature``, the chosen tag's ranking log-prob, 0.0 on inserted ids. They
are not the behaviour policy at the actor's temperature, so the config check refuses verl's
rollout correction (``algorithm.rollout_correction``) with this loop.

Tree statistics go into ``extra_fields`` (stored with every trajectory; ``rftt_tree`` is the dict
:func:`rftt_plugin.search.step_metrics.step_metrics` turns into each training step's ``rftt/...``
metrics) and into ``extra_fields["reward_extra_info"]``, which verl turns into validation metrics.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import torch
from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopMetrics, AgentLoopOutput, register

from rftt_plugin.config.schema import RfttSettings
from rftt_plugin.search.credit import leaf_token_rewards
from rftt_plugin.integration.server_backend import VerlServerBackend
from rftt_plugin.reward.rules import reward_rule
from rftt_plugin.reward.score import RewardResult
from rftt_plugin.search.mcts import FunctionalMCTS, SearchResult
from rftt_plugin.search.tree import Fault, Leaf, LeafFault
from rftt_plugin.tag_ids import TagIds
from rftt_plugin.tokens import TAGS

logger = logging.getLogger("rftt_plugin")



@dataclass(frozen=True)
class LoopSettings:
    """What the agent loop reads from the composed config (typed: ``rftt_plugin.config.schema``)."""

    rftt: RfttSettings

    @classmethod
    def from_config(cls, config: Any) -> "LoopSettings":
        from rftt_plugin.config.schema import check_composed_config

        section = config.get("rftt") if hasattr(config, "get") else None
        if section is None:
            raise ValueError("the rftt_tree agent loop needs the `rftt` config section: run main_ppo with "
                             "+recipe=rftt (or +recipe=rftt_tree)")
        settings = check_composed_config(config)
        if not isinstance(settings, RfttSettings):
            raise ValueError("the rftt_tree agent loop needs a phase-2 recipe (+recipe=rftt or rftt_tree), "
                             f"not {getattr(settings, 'recipe', '?')!r}")
        return cls(rftt=settings)


class PRMUnavailable(RuntimeError):
    """Too many PRM calls in a row failed: stop the run rather than train without the PRM."""

    fatal = True  # the search lets it through instead of pruning one leaf


class _PrmBreaker:
    """Consecutive PRM failures in this worker process (all trees): past the bound it stays open."""

    def __init__(self, bound: int):
        self.bound, self.in_a_row, self.last_error = bound, 0, ""

    def check(self, where: str) -> None:
        if self.in_a_row >= self.bound:
            raise PRMUnavailable(f"{where}: {self.in_a_row} PRM calls in a row failed (last: {self.last_error}); "
                                 f"stopping rather than training without the PRM. Check the service "
                                 f"(`rftt doctor --config ...` calls it), or use rftt.reward.rule=rftt")

    def record(self, ok: bool, error: str = "") -> None:
        self.in_a_row = 0 if ok else self.in_a_row + 1
        self.last_error = error or self.last_error


class _LeafGrader:
    """Grades leaves of one tree exactly once each (keyed by the text verl decodes).

    A grade without a trustworthy value raises :class:`LeafFault` (the search prunes the leaf)."""

    def __init__(self, settings: RfttSettings, question: str, gold: Any, data_source: Any, scorer: Any,
                 breaker: _PrmBreaker | None = None):
        self.reward = settings.reward
        self.max_depth = settings.search.max_depth
        self.question, self.gold, self.data_source, self.scorer = question, gold, data_source, scorer
        self.breaker = breaker or _PrmBreaker(settings.reward.prm.max_consecutive_failures)
        self.results: dict[str, RewardResult] = {}
        self.faults: dict[str, LeafFault] = {}
        self.prm_calls = self.prm_failures = 0

    @property
    def prm_setting(self) -> str:
        prm = self.reward.prm
        return f"rftt.reward.prm.url={prm.url}" if prm.url else f"rftt.reward.prm.model={prm.model}"

    async def prm_score(self, steps: list[str]) -> float:
        """The PRM's path score, or :class:`LeafFault` ``prm_error`` once its bounded retries are spent.

        The HTTP client retries by itself (``prm.retries``, with back-off); an in-process PRM is
        retried here. Every attempt is bounded by ``prm.timeout_s`` (a hung scorer included)."""
        from rftt_plugin.reward.prm import HttpStepScorer, path_score

        if not steps:
            return path_score([], self.reward.prm.aggregate)  # nothing a PRM could approve: no call
        prm = self.reward.prm
        self.breaker.check(self.prm_setting)
        http = isinstance(self.scorer, HttpStepScorer)
        attempts = 1 if http else prm.retries + 1
        # the HTTP client's own bound: every try at timeout_s, plus its back-off (0.5 s doubling)
        bound = prm.timeout_s * (prm.retries + 1) + 0.5 * (2 ** prm.retries) if http else prm.timeout_s
        self.prm_calls += 1
        error = ""
        for _ in range(attempts):
            try:
                scores = await asyncio.wait_for(self.scorer.score_steps_async(self.question, steps), bound)
                value = path_score(scores, prm.aggregate)
                self.breaker.record(True)
                return value
            except Exception as exc:  # noqa: BLE001 - any failure: retry, then a fault
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        self.prm_failures += 1
        self.breaker.record(False, error)
        logger.warning("PRM (%s) gave no score after %d attempt(s): %s; the leaf is dropped, not scored",
                       self.prm_setting, attempts, error)
        raise LeafFault("prm_error", f"the PRM gave no score ({self.prm_setting}): {error}")

    async def grade_text(self, text: str) -> RewardResult:
        """The reward of an ``<output>`` leaf (steps for the PRM parsed from the text)."""
        if text in self.results:
            return self.results[text]
        if text in self.faults:
            raise self.faults[text]
        from rftt_plugin.reward.extract import extract_answer
        from rftt_plugin.reward.score import score_response_async

        try:
            prm = None
            # the PRM only where the rule uses its value (blend: always, rftt_prm: without an answer)
            if reward_rule(self.reward.rule).needs_prm(extract_answer(text).has_answer):
                prm = await self.prm_score(_steps_of(text))
            result = await score_response_async(text, self.gold, rule=self.reward.rule,
                                                format_penalty=self.reward.format_penalty, prm_score=prm,
                                                data_source=self.data_source, timeout_s=self.reward.timeout_s,
                                                max_depth=self.max_depth)
            if result.grader_error:
                raise LeafFault("grade_error", f"the answer check failed in the grader (pred {result.pred!r:.60})")
            if result.timed_out:
                raise LeafFault("grade_timeout", f"the answer check gave no verdict within "
                                                 f"rftt.reward.timeout_s={self.reward.timeout_s} (pred {result.pred!r:.60})")
        except LeafFault as fault:
            self.faults[text] = fault
            raise
        self.results[text] = result
        return result

    async def __call__(self, text: str) -> float:
        return (await self.grade_text(text)).score


def _steps_of(text: str) -> list[str]:
    """Step texts of a tagged response for the PRM; an unparseable text is one step."""
    from rftt_plugin.tokens import TagFormatError, parse

    try:
        return [step.text for step in parse(text)]
    except TagFormatError:
        return [text] if text.strip() else []


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


@dataclass
class _Slot:
    """What one session gets: a leaf with its reward, or the cause of a fault (no row)."""

    leaf: Leaf | None
    cause: str | None = None
    outcome: float = 0.0
    graded: RewardResult | None = None
    cut_by_length: bool = False
    text: str = ""


@dataclass
class _TreeOutcome:
    result: SearchResult
    backend: VerlServerBackend
    slots: list[_Slot]
    tree_record: dict[str, Any]


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
    _tag_ids: ClassVar[dict[int, TagIds]] = {}
    _scorers: ClassVar[dict[Any, Any]] = {}
    _breakers: ClassVar[dict[Any, _PrmBreaker]] = {}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.settings = LoopSettings.from_config(self.config).rftt
        self.prompt_length = int(self.rollout_config.prompt_length)
        self.response_length = int(self.rollout_config.response_length)

    # -- shared per-uid search -------------------------------------------------------------------
    def _tags(self) -> TagIds:
        key = id(self.tokenizer)
        if key not in self._tag_ids:
            tag_ids = TagIds.from_tokenizer(self.tokenizer, mode=self.settings.token_mode)
            tokenizer = self.tokenizer
            # grade (and show) the text exactly as verl decodes a response for its reward
            self._tag_ids[key] = dataclasses.replace(
                tag_ids, decode=lambda ids: tokenizer.decode(list(ids), skip_special_tokens=True))
        return self._tag_ids[key]

    def _prm_scorer(self):
        prm = self.settings.reward.prm
        if not self.settings.reward.needs_prm:
            return None
        if prm not in self._scorers:  # one per worker process: an in-process PRM model loads once
            from rftt_plugin.reward.prm import build_step_scorer

            self._scorers[prm] = build_step_scorer(prm)
        return self._scorers[prm]

    def _prm_breaker(self) -> _PrmBreaker:
        prm = self.settings.reward.prm
        if prm not in self._breakers:
            self._breakers[prm] = _PrmBreaker(prm.max_consecutive_failures)
        return self._breakers[prm]

    async def _search(self, job: _TreeJob, kwargs: dict) -> _TreeOutcome:
        messages = list(kwargs["raw_prompt"])
        prompt_ids = await self.ct_build_initial_tokens(messages)
        # All sessions of the uid were created in one go by verl and registered before this task
        # ran; yield once more so that any straggler is counted too.
        await asyncio.sleep(0)
        n = max(job.sessions) + 1
        base = self.settings.search
        config = dataclasses.replace(
            base, iterations=n, token_mode=self.settings.token_mode,
            max_response_tokens=min(base.max_response_tokens, self.response_length),
            seed=base.seed + int(kwargs.get("global_steps", 0) or 0))
        tag_ids = self._tags()
        backend = VerlServerBackend(self.server_manager, request_id=f"rftt-{job.key}", eos_id=tag_ids.eos_id,
                                    readout_top_k=self.settings.tag_readout_top_k,
                                    # $RFTT_TAG_READOUT wins (benchmarks and the vLLM lane switch engines with it)
                                    readout=os.environ.get("RFTT_TAG_READOUT", "").strip() or self.settings.tag_readout)
        gold = (kwargs.get("reward_model") or {}).get("ground_truth")
        question = str(messages[-1].get("content", "")) if messages else ""
        grader = _LeafGrader(self.settings, question, gold, kwargs.get("data_source"), self._prm_scorer(),
                             self._prm_breaker())
        result = await FunctionalMCTS(backend, tag_ids, config, grader).search(question, prompt_ids, gold=gold,
                                                                             meta={"uid": job.key})
        if not result.leaves:
            raise RuntimeError(f"rftt_tree: the search for uid {job.key} produced no leaf: "
                               f"{result.tree.meta.get('error', 'unknown error')}")
        slots = [await self._slot(result, grader, item) for item in result.session_slots()]
        return _TreeOutcome(result, backend, slots, self._tree_record(job.key, n, result, backend, grader, slots))

    async def _slot(self, result: SearchResult, grader: _LeafGrader, item: Leaf | Fault) -> _Slot:
        """A session's leaf and its reward, computed once per tree (every session sees the same)."""
        if isinstance(item, Fault):
            return _Slot(None, item.cause)
        leaf = item
        limit = self.response_length
        cut_by_length = len(leaf.response_ids) > limit
        # as verl decodes for its reward: EOS and other special tokens dropped, the (normal) tag tokens kept
        text = self.tokenizer.decode(leaf.response_ids[:limit], skip_special_tokens=True)
        try:
            outcome, graded = await self._leaf_reward(result, leaf, grader, text, cut_by_length)
        except LeafFault as fault:
            return _Slot(leaf, fault.cause, text=text)
        except Exception as exc:  # noqa: BLE001 - a grader crash drops this leaf, not the tree ...
            if getattr(exc, "fatal", False):
                raise  # ... unless the run must stop (PRMUnavailable)
            logger.warning("rftt_tree: grading a leaf failed (%s: %s); the leaf is dropped, not scored",
                           type(exc).__name__, exc)
            return _Slot(leaf, "grade_error", text=text)
        return _Slot(leaf, None, outcome, graded, cut_by_length, text)

    async def _leaf_reward(self, result: SearchResult, leaf: Leaf, grader: _LeafGrader, text: str,
                           cut_by_length: bool) -> tuple[float, RewardResult | None]:
        """(outcome, grade) of a leaf; the grade is the one the search computed, never a second one."""
        cut_reward = float((result.tree.meta.get("config") or {}).get("cut_reward", 0.0))
        if cut_by_length:
            return cut_reward, None
        if leaf.terminal_reason == "output":
            graded = grader.results.get(text)
            if graded is None:
                if text in grader.faults:  # the search pruned it; a duplicate text of another node
                    raise grader.faults[text]
                # graded under a different text (cannot happen while both decode alike): grade it now
                graded = await grader.grade_text(text)
            return graded.score, graded
        rule = reward_rule(self.settings.reward.rule)
        if rule.needs_prm(has_answer=False):
            # a cut leaf has no answer: the rule's value of an unanswered path with its PRM score
            steps = [result.tree[i].text for i in leaf.node_ids if result.tree[i].text]
            prm = await grader.prm_score(steps)  # LeafFault("prm_error") when it has none
            return rule(correct=False, has_answer=False, prm=prm), None
        return cut_reward, None

    def _tree_record(self, key: str, n: int, result: SearchResult, backend: VerlServerBackend,
                     grader: _LeafGrader, slots: list[_Slot]) -> dict[str, Any]:
        """The tree's numbers for the step metrics (rftt_plugin.search.step_metrics.TREE_KEYS)."""
        stats = result.stats
        masked: dict[str, int] = {}
        for session in range(n):
            cause = slots[session % len(slots)].cause
            if cause:
                masked[cause] = masked.get(cause, 0) + 1
        faults = dict(stats.faults)
        late = {sl.leaf.leaf_id: sl.cause for sl in slots  # found after the search (a cut leaf's PRM value)
                if sl.cause and sl.leaf is not None and result.tree[sl.leaf.leaf_id].fault is None}
        for cause in late.values():
            faults[cause] = faults.get(cause, 0) + 1
        first = next((sl for sl in slots if sl.leaf is not None and sl.leaf.iteration == 0), None)
        policy_acc = None  # the first iteration follows the most probable tag at every step: the policy's path
        if first is not None and first.cause is None:
            is_output = first.leaf.terminal_reason == "output" and not first.cut_by_length
            policy_acc = float(bool(is_output and first.graded is not None and first.graded.acc))
        usage = backend.usage
        return {
            "uid": key, "sessions": n, "distinct_leaves": stats.unique_leaves, "nodes": stats.nodes,
            "depth": stats.max_depth, "llm_calls": stats.llm_calls, "token_ratio": round(stats.token_ratio, 4),
            "tags": dict(stats.tag_histogram), "masked": masked, "faults": faults, "retries": stats.retries,
            "prm_calls": grader.prm_calls, "prm_failures": grader.prm_failures, "policy_path_acc": policy_acc,
            "prompt_tokens": usage.reported_prompt_tokens,
            "cached_tokens": usage.cached_tokens if usage.reported_prompt_tokens else None,
        }

    # -- one session ------------------------------------------------------------------------------
    async def run(self, sampling_params: dict[str, Any], **kwargs) -> AgentLoopOutput | list[AgentLoopOutput]:
        key = str(kwargs["uid"])
        if "session_id" not in kwargs:
            # verl's V0 trainer creates sessions without an id: every rollout.n row would be leaf 0
            raise RuntimeError("rftt_tree: this verl session has no session_id (verl's V0 trainer, "
                               "trainer.use_v1=False?); the rftt_tree agent loop needs the V1 trainer")
        session = int(kwargs["session_id"])
        job = self._jobs.setdefault(key, _TreeJob(key))
        job.sessions.add(session)  # before any await: the search sizes itself from these
        if job.task is None:
            job.task = asyncio.create_task(self._search(job, kwargs))
        t0 = time.perf_counter()
        try:
            tree = await asyncio.shield(job.task)
            slot = tree.slots[session % len(tree.slots)]
            if slot.cause is not None:
                # a fault: no row at all (verl stores nothing for []); counted in the tree's "masked"
                logger.info("rftt_tree uid=%s session %d: no training row (%s)", key, session, slot.cause)
                return []
            return self._leaf_output(tree, slot, session, sampling_params, time.perf_counter() - t0)
        finally:
            job.finished += 1
            if job.finished >= len(job.sessions) and self._jobs.get(key) is job:
                del self._jobs[key]

    def _leaf_output(self, tree: _TreeOutcome, slot: _Slot, session: int, sampling_params: dict,
                     wall_s: float) -> AgentLoopOutput:
        result, backend = tree.result, tree.backend
        leaf, outcome, graded, cut_by_length = slot.leaf, slot.outcome, slot.graded, slot.cut_by_length
        assert leaf is not None
        limit = self.response_length
        response_ids = leaf.response_ids[:limit]
        loss_mask = leaf.loss_mask[:limit]
        is_output = leaf.terminal_reason == "output" and not cut_by_length
        greedy = float(sampling_params.get("temperature", 1.0) or 0.0) == 0.0

        token_rewards = None
        step_ends = [int(e) for e in leaf.step_ends if e < len(response_ids)]
        tree_credit = self.settings.credit.mode == "tree" and not greedy
        outcome_masked = bool(response_ids) and not loss_mask[-1]
        if response_ids and (tree_credit or outcome_masked):
            token_rewards = leaf_token_rewards(loss_mask, leaf.step_ends, leaf.node_values, result.tree.root.value,
                                               outcome, step_weight=self.settings.credit.step_weight,
                                               with_step_credit=tree_credit)

        stats = result.stats
        tags = {tag.value: 0 for tag in TAGS}  # every tag, so each row has the same keys
        tags.update(stats.tag_histogram)
        tree_info = {
            "rftt_tree_nodes": stats.nodes, "rftt_tree_depth": stats.max_depth,
            "rftt_tree_unique_leaves": stats.unique_leaves, "rftt_tree_llm_calls": stats.llm_calls,
            "rftt_tree_token_ratio": round(stats.token_ratio, 4),
            "rftt_tree_tokens_saved": stats.independent_tokens - stats.generated_tokens,
            "rftt_leaf_steps": leaf.n_steps, "rftt_leaf_duplicate": int(leaf.duplicate),
            "rftt_leaf_reused": int(session >= len(tree.slots)),
            "rftt_leaf_truncated": int(not is_output),
            "rftt_format_ok": int(graded is not None and graded.format_ok and is_output),
            **{f"rftt_tag_{tag}": count for tag, count in sorted(tags.items())},
        }
        reward_info = {"score": outcome, "acc": float(graded is not None and graded.acc and is_output),
                       "has_answer": float(graded is not None and graded.has_answer and is_output), **tree_info}
        extra_fields = {
            **tree_info,
            "rftt_terminal_reason": leaf.terminal_reason if not cut_by_length else "response_length",
            "rftt_tags": list(leaf.tags),
            # what the dense rewards were built from (analysis, and tests recompute them)
            "rftt_step_ends": step_ends,
            "rftt_node_values": [float(v) for v in leaf.node_values],
            "rftt_root_value": float(result.tree.root.value),
            # the leaf's place in its tree, for trainers that share prefixes: node ids, parent ids
            # (0 = the prompt) and each node's first response offset (Tree.prefix_spans)
            "rftt_prefix": result.tree.prefix_spans(leaf.leaf_id, len(response_ids)),
            # the whole tree's numbers, faults included (rftt_plugin.search.step_metrics)
            "rftt_tree": tree.tree_record,
            "reward_extra_info": reward_info,
            "turn_scores": [], "tool_rewards": [],
            "min_global_steps": backend.min_global_steps, "max_global_steps": backend.max_global_steps,
        }
        if session == 0:
            logger.info("rftt_tree uid=%s: %d nodes, depth %d, %d/%d unique leaves, mean reward %.3f, %.1fs%s",
                        result.tree.meta.get("uid"), stats.nodes, stats.max_depth, stats.unique_leaves,
                        stats.leaves, stats.mean_reward, result.wall_s,
                        f", masked {tree.tree_record['masked']}" if tree.tree_record["masked"] else "")
        return RfttLeafOutput(
            prompt_ids=list(leaf.prompt_ids), response_ids=response_ids,
            response_mask=loss_mask, response_logprobs=leaf.response_logprobs[:limit],
            reward_score=outcome, num_turns=2,
            metrics=AgentLoopMetrics(generate_sequences=wall_s),
            extra_fields=extra_fields, token_rewards=token_rewards,
        )
