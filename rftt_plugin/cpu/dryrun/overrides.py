"""Compose the main_ppo command line of a dry run from the user's recipe overrides and the overlay.

Hydra applies command-line value overrides after composing configs, so a recipe override such as
``trainer.logger=[console,wandb]`` would beat the ``+dryrun=cpu`` overlay. The launcher therefore
re-appends the overlay's value for every key the user also set (the last duplicate wins), and
reports each one it replaced. The overlay YAML stays the single source of truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Iterable

OVERLAY_GROUP_OVERRIDE = "+dryrun=cpu"
MODEL_PATH_KEYS = ("actor_rollout_ref.model.path", "critic.model.path")
# Keys of the overlay a user may choose on purpose (launcher options set them).
USER_CHOOSABLE = frozenset({"trainer.n_gpus_per_node", "trainer.total_training_steps"})


@dataclass
class ComposedArgs:
    args: list[str]
    replaced: list[tuple[str, str, str]] = field(default_factory=list)  # (key, user value, overlay value)


def overlay_path():
    return resources.files("rftt_plugin.config").joinpath("dryrun/cpu.yaml")


def load_overlay() -> dict:
    import yaml

    with overlay_path().open() as f:
        return yaml.safe_load(f) or {}


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and scalars are leaves."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def format_value(value: Any) -> str:
    """A Hydra override value for a YAML leaf."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{}"
    return str(value)


def split_override(arg: str) -> tuple[str, str] | None:
    """``'+a.b=1'`` -> ``('a.b', '1')``; group/deletion overrides and flags -> ``None``."""
    if arg.startswith("-") or "=" not in arg:
        return None
    key, value = arg.split("=", 1)
    key = key.lstrip("+~")
    if "/" in key or "@" in key:
        return None  # config group selection, not a value
    return key, value


def user_values(user_args: Iterable[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for arg in user_args:
        parsed = split_override(arg)
        if parsed:
            values[parsed[0]] = parsed[1]
    return values


def compose(user_args: list[str], enforced: dict[str, str] | None = None) -> ComposedArgs:
    """``user_args + [+dryrun=cpu] + overlay values the user overrode + launcher choices``."""
    overlay = {k: format_value(v) for k, v in flatten(load_overlay()).items()}
    enforced = dict(enforced or {})
    mine = user_values(user_args)
    args = list(user_args)
    if OVERLAY_GROUP_OVERRIDE not in args:
        args.append(OVERLAY_GROUP_OVERRIDE)
    replaced = []
    for key, value in overlay.items():
        if key in mine and key not in USER_CHOOSABLE and key not in enforced and mine[key] != value:
            args.append(f"{key}={value}")
            replaced.append((key, mine[key], value))
    for key, value in enforced.items():
        if mine.get(key) != value:
            if key in mine:
                replaced.append((key, mine[key], value))
            args.append(f"{key}={value}")
    return ComposedArgs(args, replaced)
