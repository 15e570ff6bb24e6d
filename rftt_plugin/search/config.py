"""Every knob of the functional tree search, in one dataclass.

The field names are mirrored one-to-one by the ``rftt.search`` section of the Hydra recipe, so
``SearchConfig.from_mapping(cfg.rftt.search)`` is the whole binding. Defaults reproduce the
reference implementation (rftt-method.md 3.2) except where a flag says otherwise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from rftt_plugin.tag_ids import TOKEN_MODES
from rftt_plugin.tokens import DEFAULT_MAX_DEPTH, FunctionalTag


@dataclass(frozen=True)
class SearchConfig:
    """Parameters of :class:`rftt_plugin.search.mcts.FunctionalMCTS`.

    iterations                MCTS iterations per question = root-to-leaf paths emitted (16).
                              With ``distinct_leaves`` it is the number of *distinct* leaves wanted.
    uct_c                     exploration constant c of UCT = Q/N + c*sqrt(ln N_parent / N_child).
    max_depth                 depth cap in steps (root = 0); a path has at most this many steps.
    step_temperature/top_p/top_k  sampling of each step's text (0.1 / 0.95 / off, as the reference).
    step_max_tokens           max sampled tokens of one step (512) ...
    direct_answer_max_tokens  ... and of a ``direct_answer`` step (1024).
    max_response_tokens       total budget of one path's response ids (inserted ids included); a
                              path that reaches it ends with terminal reason ``budget``.
    distinct_leaves           False (faithful): ``iterations`` iterations, a terminal leaf that
                              selection reaches again is re-emitted (duplicates kept). True:
                              search until ``iterations`` distinct leaves, or ``max_iterations``.
    max_iterations            guard for ``distinct_leaves`` (0 = 4 x iterations).
    min_tag_prior             0 (faithful): every allowed tag becomes a child. > 0: tags whose
                              renormalised prior is below it get no child (the most probable tag
                              is always kept), so low-entropy nodes branch little -- like the
                              reference's wired-in read-out, which drops tags outside the top 12.
    samples_per_tag           1 (faithful): one child per tag, so a node's step is sampled once. n > 1:
                              every kept tag gets n children, each its own sampled step (the
                              phase-1 search's several samples per action): the tree holds n
                              different continuations of one tag choice. Only useful with a
                              step temperature that makes samples differ.
    blocked_tags              tags the search never expands (an ablation: ``[verify, refine]`` trains
                              without self-correction); empty = every tag the grammar allows.
    cut_reward                reward backed up from a leaf that is not an ``<output>`` step (depth
                              or budget cut, failed generation).
    loss_on_inserted          loss mask of ids inserted by the search (opening tags, newlines,
                              EOS): 1 trains the tag choice as an action (the RFTT idea), 0 trains
                              only the sampled text.
    step_retries              how many times a failed backend call (generation or tag read-out:
                              an exception, an aborted request, an ``error`` result) is retried
                              before its leaf counts as a fault: a faulted leaf is pruned from
                              the tree, backs up nothing and is never emitted (an infrastructure
                              fault is not the policy's choice).
    seed                      base seed; each step's sampling seed is derived from it, the
                              question and the node id, so a search is reproducible.
    token_mode                ``added`` (tags are single added tokens, exact tag probabilities
                              from one next-token distribution) or ``text`` (tags are plain text).
    """

    iterations: int = 16
    uct_c: float = 2.0
    max_depth: int = DEFAULT_MAX_DEPTH
    step_temperature: float = 0.1
    step_top_p: float = 0.95
    step_top_k: int = -1
    step_max_tokens: int = 512
    direct_answer_max_tokens: int = 1024
    max_response_tokens: int = 8192
    distinct_leaves: bool = False
    max_iterations: int = 0
    min_tag_prior: float = 0.0
    samples_per_tag: int = 1
    blocked_tags: tuple[str, ...] = ()
    cut_reward: float = 0.0
    loss_on_inserted: bool = True
    step_retries: int = 2
    seed: int = 0
    token_mode: str = "added"

    def __post_init__(self) -> None:
        # Hydra hands lists (ListConfig); a tuple keeps the config hashable and comparable.
        object.__setattr__(self, "blocked_tags", tuple(str(t) for t in self.blocked_tags))
        problems = self.problems_of(asdict(self))
        if problems:
            raise ValueError("invalid rftt.search: " + "; ".join(problems))

    @staticmethod
    def problems_of(values: Mapping[str, Any]) -> list[str]:
        """Range problems of the given field values (missing fields take the defaults), each as
        ``key=value: allowed`` so that callers can prefix the config path."""
        v = {f.name: f.default for f in fields(SearchConfig)}
        v.update(values)
        problems = []

        def bad(name: str, allowed: str) -> None:
            problems.append(f"{name}={v[name]!r}: {allowed}")

        if v["iterations"] < 1:
            bad("iterations", "must be >= 1")
        if v["uct_c"] < 0:
            bad("uct_c", "must be >= 0")
        if v["max_depth"] < 1:
            bad("max_depth", "must be >= 1")
        if v["step_temperature"] < 0:
            bad("step_temperature", "must be >= 0")
        if not 0 < v["step_top_p"] <= 1:
            bad("step_top_p", "must be in (0, 1]")
        if v["step_top_k"] < -1 or v["step_top_k"] == 0:
            bad("step_top_k", "must be -1 (off) or >= 1")
        for name in ("step_max_tokens", "direct_answer_max_tokens", "max_response_tokens"):
            if v[name] < 1:
                bad(name, "must be >= 1")
        if v["max_iterations"] < 0:
            bad("max_iterations", "must be >= 0 (0 = 4 x iterations)")
        if not 0 <= v["step_retries"] <= 10:
            bad("step_retries", "must be in [0, 10]")
        unknown = [t for t in v["blocked_tags"] if t not in {tag.value for tag in FunctionalTag}]
        if unknown:
            bad("blocked_tags", f"unknown tags {unknown}; tags: {', '.join(t.value for t in FunctionalTag)}")
        elif FunctionalTag.OUTPUT.value in v["blocked_tags"]:
            bad("blocked_tags", "output cannot be blocked: no path could end")
        if not 1 <= v["samples_per_tag"] <= 64:
            bad("samples_per_tag", "must be in [1, 64]")
        if not 0 <= v["min_tag_prior"] < 1:
            bad("min_tag_prior", "must be in [0, 1)")
        if v["token_mode"] not in TOKEN_MODES:
            bad("token_mode", f"must be one of {', '.join(TOKEN_MODES)}")
        return problems

    @property
    def iteration_limit(self) -> int:
        """How many iterations may run at most."""
        if not self.distinct_leaves:
            return self.iterations
        return self.max_iterations or 4 * self.iterations

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["blocked_tags"] = list(self.blocked_tags)  # as JSON stores it: a resumed run compares equal
        return d

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> "SearchConfig":
        """Build from a dict or an OmegaConf node; unknown keys are an error (typos must not
        silently fall back to defaults)."""
        if data is None:
            return cls()
        items = dict(data.items())
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(items) - known)
        if unknown:
            raise ValueError(f"unknown rftt.search keys {unknown}; known keys: {sorted(known)}")
        return cls(**items)


# One line per knob for command-line help (``rftt search``, ``rftt eval`` build their flags from
# the fields above through rftt_plugin.commands._search_flags, so no default is restated there).
FIELD_HELP: dict[str, str] = {
    "iterations": "MCTS iterations per question = root-to-leaf paths",
    "uct_c": "UCT exploration constant c",
    "max_depth": "depth cap in steps",
    "step_temperature": "sampling temperature of each step's text",
    "step_top_p": "top-p of each step's text",
    "step_top_k": "top-k of each step's text (-1 = off)",
    "step_max_tokens": "max sampled tokens of one step",
    "direct_answer_max_tokens": "max sampled tokens of a <direct_answer> step",
    "max_response_tokens": "token budget of one path's response",
    "distinct_leaves": "search until this many distinct leaves (not iterations)",
    "max_iterations": "guard for --distinct-leaves (0 = 4 x iterations)",
    "min_tag_prior": "drop tags below this renormalised prior (0 = every allowed tag, faithful)",
    "samples_per_tag": "children per kept tag, each its own sampled step (1 = faithful)",
    "blocked_tags": "tags the search never expands, e.g. verify,refine (an ablation)",
    "cut_reward": "reward backed up from a leaf cut by depth or budget",
    "loss_on_inserted": "train the ids the search inserts (tags, EOS)",
    "step_retries": "retries of a failed backend call before its leaf is dropped as a fault",
    "seed": "base seed of the search",
    "token_mode": "added (prepared model, single-id tags) or text",
}

