"""Weight versions, digests and the stale-weight check of the hfcpu server.

The rollout must generate with the weights the actor just trained. In verl's hybrid (colocated)
mode a step is: generate -> ``sleep`` the rollout -> train -> ``update_weights`` -> generate ...
(verl/trainer/ppo/v1/trainer_sync.py). So:

* ``sleep`` (the trainer is about to change the weights) marks the served weights **stale**;
* ``load_weights`` installs the actor's weights, bumps ``version``, records the trainer's
  ``global_steps`` and clears the mark;
* ``generate`` on stale weights raises :class:`StaleWeightsError` instead of silently sampling
  from an old policy. Before the first sync the weights are stale too (hybrid mode loads
  ``load_format: dummy`` weights, like vLLM).

Each load is also verified end to end with a digest (BLAKE2b over names, dtypes, shapes and bytes):
the adapter digests what it sends, the server digests what it received (transport check) and what
its model holds afterwards, cast to the model's dtype (load check). Any mismatch is an error.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

import torch


class StaleWeightsError(RuntimeError):
    """The rollout was asked to generate with weights the trainer has moved past."""


class WeightSyncError(RuntimeError):
    """Weights arrived corrupted, incomplete, or did not end up in the model."""


def state_digest(tensors: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]) -> str:
    """Order-independent, exact digest of named tensors (16 hex chars)."""
    items = tensors.items() if isinstance(tensors, Mapping) else tensors
    h = hashlib.blake2b(digest_size=8)
    for name, tensor in sorted(items, key=lambda kv: kv[0]):
        t = tensor.detach().contiguous().cpu()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def l1_norm(tensors: Mapping[str, torch.Tensor]) -> float:
    """Human-readable companion of the digest for logs: sum of |w| in float64."""
    return float(sum(t.detach().double().abs().sum() for t in tensors.values()))


@dataclass
class WeightState:
    """Bookkeeping of which weights the server holds."""

    version: int = 0  # number of load_weights calls served (0 = the weights it started with)
    global_steps: Optional[int] = None  # trainer step of the last load (verl's "model version")
    digest: str = ""
    l1: float = 0.0
    stale: bool = False
    stale_reason: str = ""

    def mark_stale(self, reason: str) -> None:
        self.stale, self.stale_reason = True, reason

    def loaded(self, global_steps: Optional[int], digest: str, l1: float) -> None:
        if global_steps is not None and self.global_steps is not None and global_steps < self.global_steps:
            raise WeightSyncError(
                f"weight update goes backwards: global_steps {global_steps} after {self.global_steps}"
            )
        self.version += 1
        self.global_steps = global_steps
        self.digest, self.l1 = digest, l1
        self.stale, self.stale_reason = False, ""

    def check_fresh(self) -> None:
        if self.stale:
            raise StaleWeightsError(
                f"hfcpu refuses to generate with stale weights ({self.stale_reason}); weight version "
                f"{self.version}, global_steps {self.global_steps}. The actor->rollout weight sync did not "
                f"happen (check update_weights / checkpoint_engine.backend=naive)."
            )

    def as_dict(self) -> dict:
        return {
            "version": self.version,
            "global_steps": self.global_steps,
            "digest": self.digest,
            "l1": self.l1,
            "stale": self.stale,
        }
