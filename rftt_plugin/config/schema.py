"""The typed schema of the recipes' ``rftt:`` section, checked before any heavy work starts.

Every key of ``rftt:`` is a field of one of the frozen dataclasses below (the search knobs are
:class:`rftt_plugin.search.config.SearchConfig`). :func:`settings_from_config` builds them from a
composed config and raises :class:`ConfigError` with one line that names the key, the value and
what is allowed, e.g.::

    rftt.serch: unknown key (did you mean rftt.search?)
    rftt.search.uct_c=-1.0: must be >= 0

:func:`check_composed_config` adds the checks that need the rest of verl's config (``rollout.n``,
the V1 trainer, rollout correction, a PRM for the rules that need one). It runs in the driver
before Ray starts (through the guard resolver, ``rftt_plugin.integration.guard``), in the agent
loop, and in ``rftt doctor --config``. Pure: no verl, no torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from rftt_plugin.backends.base import TAG_READOUTS
from rftt_plugin.reward.prm import AGGREGATES as PRM_AGGREGATES
from rftt_plugin.reward.rules import PRM_RULES, REWARD_RULES
from rftt_plugin.search.config import SearchConfig
from rftt_plugin.search.credit import CREDIT_MODES, NORMALIZE_MODES
from rftt_plugin.tag_ids import TOKEN_MODES

__all__ = ["ConfigError", "CreditSettings", "PrmSettings", "REWARD_RULES", "PRM_RULES", "RewardSettings",
           "RfttSettings", "check_composed_config", "settings_from_config", "settings_from_mapping"]

PHASE2_RECIPES = ("rftt", "rftt_tree")


class ConfigError(ValueError):
    """A bad value or key in the composed config; the message is one line naming the key."""


def _problem(key: str, value: Any, allowed: str) -> str:
    return f"{key}={value!r}: {allowed}"


@dataclass(frozen=True)
class PrmSettings:
    """``rftt.reward.prm``: the process reward model used by rules ``rftt_prm`` and ``blend``.

    url         HTTP scorer (Math-Shepherd style: POST ``{request_key: [path, ...]}`` -> ``{response_key:
                [[score per step], ...]}``; ``rftt_plugin.reward.prm.HttpStepScorer``).
    model       or an in-process causal-LM PRM (path or Hugging Face id), loaded in every agent-loop
                worker (``TransformersStepScorer``): only for small PRMs.
    aggregate   how step scores become the path's score: ``last`` (the final step's score, as the
                reference's blend), ``mean`` (its phase-1 ranking), ``min``.
    timeout_s, retries  bound one scoring call: each try (an HTTP request, or one in-process call)
                may take ``timeout_s``, and a failed call is tried ``retries`` more times; a leaf
                whose score is still missing is dropped from the loss and counted, never scored 0.
    max_consecutive_failures  that many failed PRM calls in a row (in one worker) stop the run
                with a message naming this section: a down PRM must not train a whole run.
    """

    url: Optional[str] = None
    model: Optional[str] = None
    step_tag: str = "ки"
    aggregate: str = "last"
    timeout_s: float = 30.0
    batch_size: int = 16
    retries: int = 3
    max_consecutive_failures: int = 8
    request_key: str = "query"
    response_key: str = "rewards"

    @property
    def configured(self) -> bool:
        return bool(self.url or self.model)

    def problems(self, path: str) -> list[str]:
        out = []
        if self.url and self.model:
            out.append(f"{path}.url and {path}.model are both set: choose one PRM")
        if self.aggregate not in PRM_AGGREGATES:
            out.append(_problem(f"{path}.aggregate", self.aggregate, f"must be one of {', '.join(PRM_AGGREGATES)}"))
        if self.timeout_s <= 0:
            out.append(_problem(f"{path}.timeout_s", self.timeout_s, "must be > 0"))
        if self.batch_size < 1:
            out.append(_problem(f"{path}.batch_size", self.batch_size, "must be >= 1"))
        if self.retries < 0:
            out.append(_problem(f"{path}.retries", self.retries, "must be >= 0"))
        if self.max_consecutive_failures < 1:
            out.append(_problem(f"{path}.max_consecutive_failures", self.max_consecutive_failures, "must be >= 1"))
        if self.url is not None and not str(self.url).startswith(("http://", "https://")):
            out.append(_problem(f"{path}.url", self.url, "must start with http:// or https://"))
        return out


@dataclass(frozen=True)
class RewardSettings:
    """``rftt.reward``: the outcome reward of a leaf (rules: ``rftt_plugin.reward.score``)."""

    rule: str = "rftt"
    format_penalty: float = 0.0
    timeout_s: float = 5.0
    prm: PrmSettings = field(default_factory=PrmSettings)

    @property
    def needs_prm(self) -> bool:
        return self.rule in PRM_RULES

    def problems(self, path: str) -> list[str]:
        out = []
        if self.rule not in REWARD_RULES:
            out.append(_problem(f"{path}.rule", self.rule, f"must be one of {', '.join(REWARD_RULES)}"))
        if not 0 <= self.format_penalty <= 1:
            out.append(_problem(f"{path}.format_penalty", self.format_penalty, "must be in [0, 1]"))
        if not 0 < self.timeout_s <= 60:
            out.append(_problem(f"{path}.timeout_s", self.timeout_s, "must be in (0, 60] seconds"))
        if self.needs_prm and not self.prm.configured:
            out.append(f"{path}.rule={self.rule!r} needs a PRM, but neither {path}.prm.url nor {path}.prm.model is set "
                       f"(set one, or use rule rftt/binary)")
        if self.prm.configured and not self.needs_prm:
            out.append(f"{path}.prm is set but {path}.rule={self.rule!r} does not use it "
                       f"(PRM rules: {', '.join(PRM_RULES)})")
        return out + self.prm.problems(f"{path}.prm")


@dataclass(frozen=True)
class CreditSettings:
    """``rftt.credit``: where rewards go and how the ``rftt_tree`` estimator normalises (formula:
    ``rftt_plugin.search.credit``)."""

    mode: str = "outcome"
    step_weight: float = 0.0
    normalize: str = "global"
    min_std: float = 0.1

    def problems(self, path: str) -> list[str]:
        out = []
        if self.mode not in CREDIT_MODES:
            out.append(_problem(f"{path}.mode", self.mode, f"must be one of {', '.join(CREDIT_MODES)}"))
        if self.normalize not in NORMALIZE_MODES:
            out.append(_problem(f"{path}.normalize", self.normalize, f"must be one of {', '.join(NORMALIZE_MODES)}"))
        if not 0 <= self.step_weight <= 10:
            out.append(_problem(f"{path}.step_weight", self.step_weight, "must be in [0, 10]"))
        if self.min_std < 0:
            out.append(_problem(f"{path}.min_std", self.min_std, "must be >= 0"))
        return out


@dataclass(frozen=True)
class RfttSettings:
    """The whole ``rftt:`` section of a phase-2 recipe."""

    recipe: str = "rftt"
    token_mode: str = "added"
    tag_readout_top_k: int = 20
    tag_readout: str = "auto"
    search: SearchConfig = field(default_factory=SearchConfig)
    reward: RewardSettings = field(default_factory=RewardSettings)
    credit: CreditSettings = field(default_factory=CreditSettings)

    def problems(self, path: str = "rftt") -> list[str]:
        out = []
        if self.token_mode not in TOKEN_MODES:
            out.append(_problem(f"{path}.token_mode", self.token_mode, f"must be one of {', '.join(TOKEN_MODES)}"))
        if self.search.token_mode != self.token_mode:
            out.append(_problem(f"{path}.search.token_mode", self.search.token_mode,
                                f"differs from {path}.token_mode={self.token_mode!r}: set {path}.token_mode only"))
        if self.tag_readout not in TAG_READOUTS:
            out.append(_problem(f"{path}.tag_readout", self.tag_readout, f"must be one of {', '.join(TAG_READOUTS)}"))
        if not 0 <= self.tag_readout_top_k <= 1000:
            out.append(_problem(f"{path}.tag_readout_top_k", self.tag_readout_top_k, "must be in [0, 1000]"))
        return out + self.reward.problems(f"{path}.reward") + self.credit.problems(f"{path}.credit")


@dataclass(frozen=True)
class SftSettings:
    """The ``rftt:`` section of the phase-1 SFT recipe (read by ``rftt doctor``)."""

    recipe: str = "rftt_sft"
    trainer: str = "sft"

    def problems(self, path: str = "rftt") -> list[str]:
        return [] if self.trainer == "sft" else [_problem(f"{path}.trainer", self.trainer, "must be 'sft'")]


# ------------------------------------------------------------------------------------------------
# building dataclasses from plain mappings, strictly
# ------------------------------------------------------------------------------------------------

def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    """``value`` as type ``tp`` (int, float, bool, str, Optional[...]); ints may stand for floats."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], key)
    if origin is tuple:  # tuple[str, ...]: a YAML / Hydra list of strings
        (item_type, *_rest) = typing.get_args(tp)
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise ConfigError(_problem(key, value, f"must be a list of {_type_name(item_type)}"))
        return tuple(_convert(v, item_type, f"{key}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(_problem(key, value, "must be true or false"))
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(_problem(key, value, "must be an integer"))
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(_problem(key, value, "must be a number"))
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(_problem(key, value, "must be a string"))
        return value
    raise ConfigError(_problem(key, value, f"must be a {_type_name(tp)}"))


def _unknown_key_message(key: str, known: list[str], path: str) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f"did you mean {path}.{close[0]}?" if close else f"known keys: {', '.join(known)}"
    return f"{path}.{key}: unknown key ({hint})"


def _build(cls: type, data: Any, path: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(_problem(path, data, "must be a mapping of keys"))
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in known:
            raise ConfigError(_unknown_key_message(str(key), known, path))
    values = {}
    for name in known:
        if name not in data:
            continue
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            values[name] = _build(tp, data[name], f"{path}.{name}")
        else:
            values[name] = _convert(data[name], tp, f"{path}.{name}")
    if cls is SearchConfig:
        problems = SearchConfig.problems_of(values)
        if problems:
            raise ConfigError(f"{path}.{problems[0]}")
    return cls(**values)


def settings_from_mapping(data: Mapping[str, Any] | None) -> RfttSettings | SftSettings:
    """Build and range-check the ``rftt:`` section from a plain mapping (first problem raised)."""
    data = dict(data or {})
    cls = SftSettings if data.get("trainer") == "sft" or data.get("recipe") == "rftt_sft" else RfttSettings
    if cls is RfttSettings and isinstance(data.get("search"), Mapping) and isinstance(data.get("token_mode"), str):
        data["search"] = {"token_mode": data["token_mode"], **data["search"]}  # one setting: rftt.token_mode
    settings = _build(cls, data, "rftt")
    problems = settings.problems("rftt")
    if problems:
        raise ConfigError(problems[0])
    return settings


def _plain(node: Any) -> Any:
    """A resolved plain container from an OmegaConf node (or the value itself)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf comes with hydra-core
        return node
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return node


def _get(config: Any, dotted: str, default: Any = None) -> Any:
    node = config
    for part in dotted.split("."):
        if node is None:
            return default
        try:
            node = node.get(part) if hasattr(node, "get") else None
        except Exception:  # noqa: BLE001 - a missing interpolation target is simply "not set"
            return default
    return default if node is None else node


def settings_from_config(config: Any) -> RfttSettings | SftSettings:
    """:func:`settings_from_mapping` of ``config.rftt`` (an OmegaConf config or a dict)."""
    section = _get(config, "rftt")
    if section is None:
        raise ConfigError("the config has no `rftt` section: compose it with +recipe=rftt (or rftt_tree, rftt_sft)")
    return settings_from_mapping(_plain(section))


def _ignored_settings(config: Any, settings: RfttSettings, n: Any) -> list[str]:
    """Settings the composed run would ignore, or that cannot train: each one line naming the key."""
    out = []
    estimator = _get(config, "algorithm.adv_estimator")
    credit = settings.credit
    defaults = CreditSettings()
    if estimator != "rftt_tree":
        for key in ("normalize", "min_std"):
            if getattr(credit, key) != getattr(defaults, key):
                out.append(f"rftt.credit.{key}={getattr(credit, key)!r} is ignored: algorithm.adv_estimator="
                           f"{estimator!r} does not read it (only the rftt_tree estimator does: use +recipe=rftt_tree)")
    if credit.mode == "outcome" and credit.step_weight != 0:
        out.append(f"rftt.credit.step_weight={credit.step_weight!r} is ignored: rftt.credit.mode='outcome' puts "
                   f"no step credit anywhere (set rftt.credit.mode=tree, or use +recipe=rftt_tree)")
    if estimator == "rftt_tree" and credit.normalize == "tree" and n == 1:
        out.append("rftt.credit.normalize='tree' with actor_rollout_ref.rollout.n=1 cannot train: each tree has "
                   "one leaf, its own baseline cancels its outcome (use rollout.n > 1, or normalize=global)")
    if isinstance(n, int) and not isinstance(n, bool) and settings.search.iterations != n:
        out.append(f"rftt.search.iterations={settings.search.iterations} is ignored: the rftt_tree agent loop runs one "
                   f"iteration per session, actor_rollout_ref.rollout.n={n} (set that instead)")
    return out


def check_composed_config(config: Any) -> RfttSettings | SftSettings | None:
    """All checks of a composed verl config that uses an rftt recipe; ``None`` if it uses none.

    Raises :class:`ConfigError` (one line) on the first problem.
    """
    if _get(config, "rftt") is None:
        return None
    rollout = "actor_rollout_ref.rollout"
    n = _get(config, f"{rollout}.n")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        # before the rftt section: the recipe's rftt.search.iterations follows rollout.n
        raise ConfigError(_problem(f"{rollout}.n", n, "must be an integer >= 1 (leaves = search iterations per prompt)"))
    settings = settings_from_config(config)
    if isinstance(settings, SftSettings):
        return settings
    problems: list[str] = []
    val_n = _get(config, f"{rollout}.val_kwargs.n")
    if val_n is not None and (isinstance(val_n, bool) or not isinstance(val_n, int) or val_n < 1):
        problems.append(_problem(f"{rollout}.val_kwargs.n", val_n, "must be an integer >= 1"))
    uses_tree_loop = _get(config, f"{rollout}.agent.default_agent_loop") == "rftt_tree"
    if uses_tree_loop:
        if _get(config, "trainer.use_v1", True) is False:
            problems.append("trainer.use_v1=False: the rftt_tree agent loop needs verl's V1 trainer, whose sessions "
                            "carry session_id (under V0 every rollout.n row would be the same leaf)")
        if settings.token_mode != "added":
            problems.append(_problem("rftt.token_mode", settings.token_mode,
                                     "must be 'added' inside verl: a step stops on a closing-tag id, so the tags "
                                     "must be single ids (run `rftt prepare-model`)"))
        correction = _get(config, "algorithm.rollout_correction") or {}
        enabled = [k for k in ("rollout_is", "rollout_rs") if _get(correction, k) not in (None, False, "null")]
        if _get(correction, "bypass_mode") is True:
            enabled.append("bypass_mode")
        if enabled:
            problems.append(f"algorithm.rollout_correction.{enabled[0]} is set, but the rftt_tree agent loop's "
                            "rollout log-probs are not the behaviour policy's at the actor's temperature (steps are "
                            "sampled at rftt.search.step_temperature, inserted ids carry 0.0): turn rollout "
                            "correction off")
    sampler_path = str(_get(config, "trainer.v1.sampler.custom_sampler.path") or "")
    mode = _get(config, "trainer.v1.trainer_mode", "sync")
    if sampler_path.endswith("rftt_plugin.integration.replay_order") and mode != "sync":
        problems.append(_problem("trainer.v1.trainer_mode", mode,
                                 "the recipe's dataset-order replay buffer (trainer.v1.sampler.custom_sampler) is "
                                 "verl's sync buffer; use sync, or set trainer.v1.sampler.custom_sampler.path=null"))
    if _get(config, "algorithm.adv_estimator") == "rftt_tree" and _get(config, "algorithm.rftt_normalize") is None:
        problems.append("algorithm.rftt_normalize is not set: the rftt_tree estimator needs it (use +recipe=rftt_tree)")
    problems += _ignored_settings(config, settings, n)
    if problems:
        raise ConfigError(problems[0])
    return settings
