"""Phase-1 SFT samples: from a searched tree to one tagged, self-correcting response per question.

The paper (rftt-method.md 2.5) builds each warm-up sample from one phase-1 tree: the best correct
path, the worst wrong path that shares a prefix with it, a cross-verification step saying where
the wrong branch fails, and the correct continuation. The reference code does not contain this
step, so every rule below is our decision, written down.

**Paths.** Every answer node of the tree (``terminal_reason == "answer"``: a direct answer or a
next step that states the answer) ends one path, *including* answer nodes that were generated
during an expansion but never visited by an iteration (the reference collects them too). Paths
cut by the depth cap or a dead end have no answer and are not used.

* *correct*: the search valued the answer 1 (the reward module's grader against the gold);
* *wrong*: valued 0 **and** it states an extractable answer (a box). A path that only says "the
  answer is 5" without a box is neither: a merged sample must show a wrong *answer*;
* *eligible*: its first step may start a phase-2 response (``tokens.GRAMMAR[ROOT]``). The
  phase-1 root may also produce a direct answer (reference grammar); such a path cannot start a
  valid tagged response and is skipped (counted as ``ineligible`` in the sample details).

**Scores.** With a PRM scorer (``--prm-url``), a path's score is the mean of its PRM step scores
(Math-Shepherd style, all steps of the path). Without one, it is the *search value*: the mean
over the path's nodes of Q/N (for a node never visited, its own value: 1/0 for answers).

**Choice.**

* best correct path = highest score; ties: fewer steps, then the earlier node (lower id).
  With ``pick="opening"`` the path is chosen in two draws instead: first the *opening* (the tag
  of the first step), uniformly among the openings that have an eligible correct path, seeded
  by ``seed`` and the question; then the best correct path under it by the rule above. Why:
  "highest score, then fewer steps" gives every question the same kind of path whenever the
  scores tie, e.g. the shortest strategy wherever it is right, so the warm-up data would teach
  one way to start. Drawing the opening keeps every first move the instruct model solved the
  question with, which is what phase 2 needs to choose between (the CPU strategies toy:
  ``rftt quickstart --toy strategies --phase1-data search``).
* the wrong path it is merged with = the *lowest* score among eligible wrong paths that *share a
  prefix* with it. Both are root-to-leaf paths of one tree, so "sharing" means sharing tree
  nodes: the shared prefix is the path to their lowest common ancestor, and it is non-empty
  when they have at least one step in common (not just the question). Ties: longer shared
  prefix (the closer contrast), then shorter wrong tail, then lower node id.
* if no wrong path shares a step, one that shares only the root (the question) is used when
  ``allow_root_fork`` is on (default): the sample then shows a complete wrong attempt, the
  check, and the complete correct solution as the correction (kind ``merged_root``). With it
  off, or with no eligible wrong path at all, the sample is the plain correct path (``plain``).

**Cross-verification.** One chat call (:func:`rftt_plugin.phase1.prompt_templates.verify_messages`)
shows the model the shared steps, the wrong continuation and the correct continuation and asks
where the wrong one first goes wrong, written as a self-check, without the final answer.
The reply is cleaned like any step (``clean_reply("verify")``, which also rejects a boxed
answer); up to ``verify_attempts`` calls with different seeds. If none is usable, the question
falls back to its plain correct path (counted as ``fallback: verify_unusable``), so one bad
reply does not lose a question that has a correct path.

**Merging** (kind ``merged``/``merged_root``)::

    shared prefix steps (their own tags) -> wrong tail steps (their own tags)
      -> <verify> cross-verification -> <refine> correct continuation -> <output> answer

The correct continuation becomes **one** ``<refine>`` step holding the texts of the correct
path's steps after the fork, in order, separated by blank lines. Why not map each step to its
own tag after ``<refine>``: phase 2's grammar allows only next_step, direct_answer, output,
subquestion and verify after refine, so a continuation that starts with clarify/analyze could
not keep its tags, and a partial mapping would make the tags lie about the step kind; the
paper's figure also draws a single refine before the output. The wrong tail always ends in an
answer step (direct_answer or an answering next_step), and both may be followed by ``<verify>``.

**Plain samples**: the correct path's steps in their tags, then ``<output>``.

**Output step**: ``The answer is \\boxed{<answer>}.`` with the correct path's extracted answer
(the last box of its final step), so the graded ``<output>`` block always carries a box.

**Checks before anything is written** (a failing sample is dropped and counted, never
written): the whole response passes ``tokens.validate`` (format, phase-2 grammar, depth cap,
an ``<output>`` step); parsing it gives back exactly the intended tags; the reward module
grades it correct against the gold; and, when a tokenizer and ``max_length`` are given, the
chat-templated conversation fits in ``max_length`` tokens (the SFT recipe refuses longer rows).

**Drops** (no sample for the question): ``empty_tree`` (no usable reply at the root),
``no_answer_path`` (the search never reached an answer), ``no_correct_path``,
``no_eligible_correct_path`` (correct only via the root's direct answer), ``invalid:<code>``,
``output_not_correct``, ``too_long``.

**Output file**: verl SFT parquet, one row per sample, column ``messages`` =
``[{"role": "user", "content": question}, {"role": "assistant", "content": tagged response}]``
(the question alone as the user turn, as in RL and evaluation), plus ``id``, ``source`` and
``kind`` for auditing. Written to a temporary file and renamed, so it is never half-written.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any, Awaitable, Callable, Sequence

from rftt_plugin.phase1.chat import ChatModel, ChatParams
from rftt_plugin.phase1.prompt_templates import clean_reply, verify_messages
from rftt_plugin.search.tree import Node, Tree
from rftt_plugin.tokens import GRAMMAR, ROOT, FunctionalTag, Step, parse, render, validate

__all__ = [
    "DROP_REASONS", "PICK_RULES", "SAMPLE_KINDS", "PathInfo", "SampleConfig", "SampleOutcome", "build_sample", "choose",
    "collect_paths", "merge_steps", "output_step", "plain_steps",
]

SAMPLE_KINDS = ("merged", "merged_root", "plain")
PICK_RULES = ("best", "opening")
DROP_REASONS = ("empty_tree", "no_answer_path", "no_correct_path", "no_eligible_correct_path", "invalid",
                "output_not_correct", "too_long")

GradeFn = Callable[[str, Any], "float | Awaitable[float]"]


@dataclass(frozen=True)
class SampleConfig:
    """Knobs of sample construction (see the module docstring for each rule)."""

    allow_root_fork: bool = True          # merge with a wrong path that shares only the question
    verify_max_tokens: int = 512          # cross-verification reply budget
    verify_temperature: float = 0.7
    verify_attempts: int = 2              # calls (different seeds) before falling back to plain
    max_length: int | None = None         # tokens of the templated conversation; None = unchecked
    seed: int = 0
    pick: str = "best"                    # PICK_RULES: how the correct path is chosen (module docstring)

    def __post_init__(self) -> None:
        if self.pick not in PICK_RULES:
            raise ValueError(f"pick must be one of {', '.join(PICK_RULES)} (got {self.pick!r})")
        if self.verify_attempts < 1:
            raise ValueError(f"verify_attempts must be >= 1 (got {self.verify_attempts})")
        if self.verify_max_tokens < 1:
            raise ValueError(f"verify_max_tokens must be >= 1 (got {self.verify_max_tokens})")
        if self.max_length is not None and self.max_length < 1:
            raise ValueError(f"max_length must be >= 1 or None (got {self.max_length})")


@dataclass
class PathInfo:
    """One answer path of a phase-1 tree."""

    leaf_id: int
    node_ids: list[int]
    steps: list[Step]
    answer: str | None        # extracted from the last step (None: no box)
    correct: bool
    search_value: float
    prm_scores: list[float] | None = None

    @property
    def eligible(self) -> bool:
        return bool(self.steps) and self.steps[0].tag in GRAMMAR[ROOT]

    @property
    def wrong(self) -> bool:
        return not self.correct and self.answer is not None

    def score(self, use_prm: bool) -> float:
        if use_prm:
            if not self.prm_scores:
                raise ValueError(f"path to node {self.leaf_id} has no PRM scores")
            return sum(self.prm_scores) / len(self.prm_scores)
        return self.search_value


@dataclass
class SampleOutcome:
    """What became of one question: a sample (``kind`` + ``response``) or a ``drop`` reason."""

    kind: str | None = None
    response: str | None = None
    drop: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.kind is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SampleOutcome":
        return cls(d.get("kind"), d.get("response"), d.get("drop"), dict(d.get("details") or {}))


# --------------------------------------------------------------------------------------------
# Paths and choice
# --------------------------------------------------------------------------------------------

def _node_value(node: Node) -> float:
    # A node never visited (an answer generated during expansion) is worth its own value.
    return node.Q / node.N if node.N else float(node.reward or 0.0)


def collect_paths(tree: Tree) -> list[PathInfo]:
    """Every answer path of ``tree``, in node-id order."""
    from rftt_plugin.reward.extract import extract_answer

    out = []
    for node in tree.nodes[1:]:
        if node.terminal_reason != "answer":
            continue
        path = tree.path(node.id)
        out.append(PathInfo(
            leaf_id=node.id,
            node_ids=[n.id for n in path],
            steps=[Step(n.tag, n.text) for n in path],
            answer=extract_answer(node.text).answer,
            correct=float(node.reward or 0.0) >= 1.0,
            search_value=sum(_node_value(n) for n in path) / len(path),
        ))
    return out


def shared_steps(a: PathInfo, b: PathInfo) -> int:
    """Number of leading steps (tree nodes) two paths have in common."""
    n = 0
    for x, y in zip(a.node_ids, b.node_ids):
        if x != y:
            break
        n += 1
    return n


@dataclass
class Choice:
    best: PathInfo
    wrong: PathInfo | None
    shared: int                       # steps shared with ``wrong`` (0 = only the question)


def choose(paths: Sequence[PathInfo], use_prm: bool = False, allow_root_fork: bool = True,
           pick: str = "best", rng: random.Random | None = None) -> Choice | None:
    """The best correct path and the wrong path to merge it with (None: no eligible correct path).

    ``pick="opening"`` first draws the opening with ``rng`` (see the module docstring).
    """
    correct = [p for p in paths if p.correct and p.eligible]
    if not correct:
        return None
    if pick == "opening":
        openings = sorted({p.steps[0].tag.value for p in correct})  # sorted: the draw must not depend on path order
        chosen = (rng or random.Random(0)).choice(openings)
        correct = [p for p in correct if p.steps[0].tag.value == chosen]
    elif pick != "best":
        raise ValueError(f"pick must be one of {', '.join(PICK_RULES)} (got {pick!r})")
    best = max(correct, key=lambda p: (p.score(use_prm), -len(p.steps), -p.leaf_id))
    wrong = [p for p in paths if p.wrong and p.eligible]
    forks = [(p, shared_steps(best, p)) for p in wrong]
    sharing = [(p, s) for p, s in forks if s >= 1]
    pool = sharing or (forks if allow_root_fork else [])
    if not pool:
        return Choice(best, None, 0)
    worst, shared = min(pool, key=lambda ps: (ps[0].score(use_prm), -ps[1], len(ps[0].steps) - ps[1], ps[0].leaf_id))
    return Choice(best, worst, shared)


# --------------------------------------------------------------------------------------------
# Merging
# --------------------------------------------------------------------------------------------

def output_step(answer: str) -> Step:
    return Step(FunctionalTag.OUTPUT, f"The answer is \\boxed{{{answer}}}.")


def plain_steps(best: PathInfo) -> list[Step]:
    if best.answer is None:
        raise ValueError(f"correct path to node {best.leaf_id} has no extractable answer")
    return list(best.steps) + [output_step(best.answer)]


def merge_steps(best: PathInfo, wrong: PathInfo, shared: int, verify_text: str) -> list[Step]:
    """prefix -> wrong tail -> <verify> -> <refine> (correct continuation as one step) -> <output>."""
    if best.answer is None:
        raise ValueError(f"correct path to node {best.leaf_id} has no extractable answer")
    if best.node_ids[:shared] != wrong.node_ids[:shared]:
        raise ValueError(f"paths to nodes {best.leaf_id} and {wrong.leaf_id} do not share {shared} steps")
    continuation = "\n\n".join(s.text.strip() for s in best.steps[shared:])
    return (list(best.steps[:shared]) + list(wrong.steps[shared:])
            + [Step(FunctionalTag.VERIFY, verify_text), Step(FunctionalTag.REFINE, continuation),
               output_step(best.answer)])


# --------------------------------------------------------------------------------------------
# Building one sample
# --------------------------------------------------------------------------------------------

async def _score_with_prm(question: str, paths: Sequence[PathInfo], scorer: Any) -> None:
    import asyncio

    todo = [p for p in paths if (p.correct or p.wrong) and p.eligible]
    results = await asyncio.gather(*(scorer.score_steps_async(question, [s.text for s in p.steps]) for p in todo))
    for p, scores in zip(todo, results):
        scores = [float(x) for x in scores]
        if len(scores) != len(p.steps):
            raise ValueError(f"PRM returned {len(scores)} scores for a path of {len(p.steps)} steps")
        p.prm_scores = scores


async def cross_verify(chat: ChatModel, question: str, best: PathInfo, wrong: PathInfo, shared: int,
                       cfg: SampleConfig) -> tuple[str | None, list[str]]:
    """The cleaned cross-verification text (None if no attempt was usable) and the attempt log."""
    messages = verify_messages(question, best.steps[:shared], wrong.steps[shared:], best.steps[shared:])
    salt = zlib.crc32(question.encode("utf-8"))
    log = []
    for attempt in range(cfg.verify_attempts):
        params = ChatParams(max_tokens=cfg.verify_max_tokens, temperature=cfg.verify_temperature,
                            seed=(cfg.seed * 1_000_003 + salt + 7 * attempt + 1) % (2**31 - 1))
        try:
            reply = await chat.complete(messages, params)
            cleaned = clean_reply("verify", reply.text, reply.finish_reason)
        except Exception as exc:  # noqa: BLE001 - counts as an unusable attempt
            log.append(f"error: {type(exc).__name__}: {exc}")
            continue
        log.append(cleaned.reason)
        if cleaned.ok:
            return cleaned.text, log
    return None, log


def _conversation_tokens(tokenizer: Any, question: str, response: str) -> int:
    """Token count of the whole conversation under the chat template (what the SFT row costs)."""
    messages = [{"role": "user", "content": question}, {"role": "assistant", "content": response}]
    out = tokenizer.apply_chat_template(messages, tokenize=True)
    if isinstance(out, dict) or hasattr(out, "keys"):  # transformers 5: a BatchEncoding
        out = out["input_ids"]
    if out and isinstance(out[0], (list, tuple)):
        out = out[0]
    return len(out)


async def build_sample(tree: Tree, chat: ChatModel | None, *, scorer: Any = None, cfg: SampleConfig | None = None,
                       tokenizer: Any = None, grade: GradeFn | None = None) -> SampleOutcome:
    """Turn one searched tree into a sample or a drop (see the module docstring for every rule).

    ``chat`` makes the cross-verification call (None: merging is impossible, plain samples only);
    ``scorer`` is an optional PRM :class:`~rftt_plugin.reward.prm.StepScorer`; ``grade`` defaults
    to the reward module's binary grader.
    """
    cfg = cfg or SampleConfig()
    question = tree.question
    if len(tree.nodes) == 1:
        return SampleOutcome(drop="empty_tree", details={"error": tree.meta.get("error")})
    paths = collect_paths(tree)
    details: dict[str, Any] = {
        "paths": len(paths),
        "correct": sum(p.correct for p in paths),
        "wrong": sum(p.wrong for p in paths),
        "ineligible": sum(not p.eligible for p in paths),
        "prm": scorer is not None,
    }
    if not paths:
        return SampleOutcome(drop="no_answer_path", details=details)
    if not any(p.correct for p in paths):
        return SampleOutcome(drop="no_correct_path", details=details)
    if scorer is not None:
        await _score_with_prm(question, paths, scorer)
    choice = choose(paths, use_prm=scorer is not None,
                    allow_root_fork=cfg.allow_root_fork and chat is not None,
                    pick=cfg.pick, rng=random.Random(f"{cfg.seed}:{zlib.crc32(question.encode('utf-8'))}"))
    if choice is None:
        return SampleOutcome(drop="no_eligible_correct_path", details=details)
    best = choice.best
    details.update(best_leaf=best.leaf_id, best_score=best.score(scorer is not None), best_steps=len(best.steps),
                   answer=best.answer, opening=best.steps[0].tag.value)
    kind, steps = "plain", None
    if choice.wrong is not None and chat is not None:
        wrong = choice.wrong
        details.update(wrong_leaf=wrong.leaf_id, wrong_score=wrong.score(scorer is not None),
                       wrong_answer=wrong.answer, shared_steps=choice.shared)
        text, log = await cross_verify(chat, question, best, wrong, choice.shared, cfg)
        details["verify_attempts"] = log
        if text is not None:
            kind = "merged" if choice.shared >= 1 else "merged_root"
            steps = merge_steps(best, wrong, choice.shared, text)
        else:
            details["fallback"] = "verify_unusable"
    if steps is None:
        steps = plain_steps(best)
    response = render(steps)
    return await _checked(SampleOutcome(kind, response, None, details), steps, tree.gold, question, cfg,
                          tokenizer, grade)


async def _checked(outcome: SampleOutcome, steps: list[Step], gold: Any, question: str, cfg: SampleConfig,
                   tokenizer: Any, grade: GradeFn | None) -> SampleOutcome:
    """The final checks; a failing sample becomes a drop (and keeps its text in the details)."""
    import inspect

    response = outcome.response or ""
    report = validate(response)
    if not report.ok:
        first = report.first
        outcome.details.update(rejected_response=response, problem=f"{first.code}: {first.message}")
        return SampleOutcome(drop=f"invalid:{first.code}", details=outcome.details)
    if [s.tag for s in parse(response)] != [s.tag for s in steps]:
        outcome.details.update(rejected_response=response, problem="parsed tags differ from the built steps")
        return SampleOutcome(drop="invalid:roundtrip", details=outcome.details)
    if grade is None:
        from rftt_plugin.reward import grade_async as grade
    value = grade(response, gold)
    if inspect.isawaitable(value):
        value = await value
    if float(value) < 1.0:
        outcome.details.update(rejected_response=response)
        return SampleOutcome(drop="output_not_correct", details=outcome.details)
    if tokenizer is not None and cfg.max_length is not None:
        n = _conversation_tokens(tokenizer, question, response)
        outcome.details["tokens"] = n
        if n > cfg.max_length:
            return SampleOutcome(drop="too_long", details=outcome.details)
    return outcome
