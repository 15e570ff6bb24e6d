"""Find the Hugging Face model in a verl checkpoint directory, for the next pipeline stage.

verl writes checkpoints under ``trainer.default_local_dir`` as ``global_step_<N>/``:

* the SFT trainer (``+recipe=rftt_sft``, ``checkpoint.save_contents`` with ``hf_model``):
  ``global_step_<N>/huggingface/``;
* ``main_ppo`` (``+recipe=rftt`` / ``rftt_tree``, whose actor checkpoint saves ``hf_model`` too):
  ``global_step_<N>/actor/huggingface/``, beside the FSDP shards in ``global_step_<N>/actor/``.

:func:`locate` picks the step (the newest unless one is asked for) and says what it holds: a
ready Hugging Face copy, or only FSDP shards, which verl's model merger
(``python -m verl.model_merger merge --backend fsdp``) turns into one. Pure path logic, no verl
import: ``rftt export`` (``rftt_plugin.commands.export``) does the copying and runs the merger.

>>> import tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> for step in (10, 20):
...     d = root / f"global_step_{step}" / "actor" / "huggingface"; d.mkdir(parents=True)
...     _ = (d / "config.json").write_text("{}"); _ = (d / "model.safetensors").write_bytes(b"")
>>> found = locate(root)
>>> found.step, found.hf_dir.relative_to(root).as_posix(), found.kind
(20, 'global_step_20/actor/huggingface', 'hf')
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CheckpointNotFound", "Located", "locate", "merger_command"]

_STEP_RE = re.compile(r"^global_step_(\d+)$")


class CheckpointNotFound(ValueError):
    """The directory holds no usable verl checkpoint (the message says what was looked for)."""


@dataclass(frozen=True)
class Located:
    """One checkpoint step: ``kind`` ``hf`` (``hf_dir`` is a ready copy) or ``fsdp`` (shards in
    ``shard_dir``, to be merged)."""

    step: int
    step_dir: Path
    kind: str
    hf_dir: Path | None = None
    shard_dir: Path | None = None


def _steps(ckpt_dir: Path) -> dict[int, Path]:
    return {int(m.group(1)): p for p in ckpt_dir.iterdir() if p.is_dir() and (m := _STEP_RE.match(p.name))}


def locate(ckpt_dir: str | Path, step: int | None = None) -> Located:
    """The checkpoint of ``step`` (default: the newest) under ``ckpt_dir`` (verl's default_local_dir).

    A directory that is itself a ``global_step_<N>`` directory is accepted too.
    """
    root = Path(ckpt_dir)
    if not root.is_dir():
        raise CheckpointNotFound(f"{root}: no such directory (the trainer's trainer.default_local_dir)")
    if _STEP_RE.match(root.name) and step is None:
        step_dirs = {int(_STEP_RE.match(root.name).group(1)): root}
    else:
        step_dirs = _steps(root)
    if not step_dirs:
        raise CheckpointNotFound(f"{root}: no global_step_<N> directory; did the training stage save a checkpoint "
                                 f"(trainer.save_freq, or the run's last step)?")
    if step is None:
        step = max(step_dirs)
    elif step not in step_dirs:
        raise CheckpointNotFound(f"{root}: no global_step_{step} (have {sorted(step_dirs)})")
    step_dir = step_dirs[step]
    for hf in (step_dir / "huggingface", step_dir / "actor" / "huggingface"):
        if (hf / "config.json").is_file() and (any(hf.glob("*.safetensors")) or any(hf.glob("*.bin"))):
            return Located(step, step_dir, "hf", hf_dir=hf)
    for shards in (step_dir / "actor", step_dir):
        if any(shards.glob("model_world_size_*_rank_*.pt")):
            return Located(step, step_dir, "fsdp", shard_dir=shards)
    raise CheckpointNotFound(f"{step_dir}: neither a Hugging Face copy (huggingface/ or actor/huggingface/ with "
                             f"config.json and weights) nor FSDP shards (model_world_size_*_rank_*.pt)")


def merger_command(python: str, shard_dir: Path, target: Path) -> list[str]:
    """verl's model merger: FSDP shards of one step -> a Hugging Face checkpoint in ``target``."""
    return [python, "-m", "verl.model_merger", "merge", "--backend", "fsdp",
            "--local_dir", str(shard_dir), "--target_dir", str(target)]
