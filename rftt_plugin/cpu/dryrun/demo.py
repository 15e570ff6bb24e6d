"""Assets for ``rftt dry-run --demo`` and the CPU end-to-end test: a tiny model and a tiny RL parquet.

The parquet has verl's RL layout (verl's ``RLHFDataset`` columns): ``prompt``
(chat messages), ``data_source``, ``reward_model.ground_truth``, ``extra_info.index``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

DEMO_DATA_SOURCE = "rftt_dryrun/addition"
TOY_REWARD = "pkg://rftt_plugin.cpu.dryrun.toy_reward"


@dataclass(frozen=True)
class DemoAssets:
    model_dir: Path
    train_parquet: Path
    val_parquet: Path


def addition_rows(n: int, seed: int = 0, split: str = "train") -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        rows.append(
            {
                "data_source": DEMO_DATA_SOURCE,
                "prompt": [{"role": "user", "content": f"What is {a} plus {b}?"}],
                "ability": "math",
                "reward_model": {"style": "rule", "ground_truth": str(a + b)},
                "extra_info": {"index": i, "split": split},
            }
        )
    return rows


def write_parquet(rows: list[dict], path: Path) -> Path:
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path)
    return path


def build_demo_assets(root: str | Path, n_train: int = 32, n_val: int = 8) -> DemoAssets:
    """Build (or reuse) the tiny Qwen2-style model and the parquet files under ``root``."""
    from rftt_plugin.tiny_model import build_tiny_model

    root = Path(root)
    model_dir = root / "tiny_qwen2"
    if not (model_dir / "config.json").exists():
        build_tiny_model(model_dir)
    train = root / "train.parquet"
    val = root / "val.parquet"
    if not train.exists():
        write_parquet(addition_rows(n_train, seed=0, split="train"), train)
    if not val.exists():
        write_parquet(addition_rows(n_val, seed=1, split="test"), val)
    return DemoAssets(model_dir, train, val)


def demo_overrides(assets: DemoAssets) -> list[str]:
    """main_ppo overrides of the demo recipe: stock GRPO with the single-turn agent loop."""
    return [
        "algorithm.adv_estimator=grpo",
        f"data.train_files={assets.train_parquet}",
        f"data.val_files={assets.val_parquet}",
        f"actor_rollout_ref.model.path={assets.model_dir}",
        "actor_rollout_ref.rollout.n=2",
        "actor_rollout_ref.actor.optim.lr=1e-3",
        "actor_rollout_ref.rollout.agent.default_agent_loop=single_turn_agent",
        f"reward.custom_reward_function.path={TOY_REWARD}",
        "reward.custom_reward_function.name=compute_score",
    ]
