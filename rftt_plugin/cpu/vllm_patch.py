"""vLLM on CPU: keep Linear weights live so verl's weight sync can replace them (patch V1).

The blocker (docs/vllm-cpu.md): after loading, vLLM's CPU build prepacks every unquantized
Linear weight for oneDNN (``dispatch_cpu_unquantized_gemm`` in
vllm/model_executor/layers/utils.py, called from ``process_weights_after_loading`` in linear.py
and vocab_parallel_embedding.py). For Linear layers it then replaces ``layer.weight`` with an
empty ``Parameter`` (``remove_weight=True``); the lm-head keeps its weight but computes with the
prepacked copy. verl's weight sync calls ``model.load_weights`` on the live model after every
training step, so it fails (``'Parameter' object has no attribute 'weight_loader'``, then a
``BufferError``, then a hang) -- or, for the lm-head, silently keeps the old weights.

The fix: ``vllm._custom_ops._supports_onednn = False`` before the model loads. The dispatcher then
takes its own fallback, ``torch.nn.functional.linear`` on the live weight (no prepacked copy;
in fp32 also the same kernel a transformers forward uses).

How it is applied, like the verl patches in :mod:`rftt_plugin.cpu.patches`:

* through vLLM's public plugin hook: the ``vllm.general_plugins`` entry point ``rftt_cpu`` runs
  :func:`register` in every vLLM process (the API/engine process and each worker, before any
  model is built; vllm/v1/worker/worker_base.py calls ``load_general_plugins``);
* only where vLLM's platform is the CPU one (GPU processes are left exactly as they are);
* only on tested vLLM versions (``TESTED_VLLM_VERSIONS``); elsewhere skipped with a warning unless
  ``RFTT_CPU_UNTESTED_VLLM=apply``;
* only after checking that the symbols still look as written for: ``_supports_onednn`` is a
  module-level bool and ``dispatch_cpu_unquantized_gemm(layer, remove_weight)`` still reads it
  (else :class:`~rftt_plugin.cpu.compat.PatchSignatureError`, which stops vLLM loudly);
* ``RFTT_VLLM_ONEDNN=keep`` opts out (e.g. a ``vllm serve`` that never reloads weights and wants
  oneDNN's speed).

Each process logs one line on logger ``vllm.rftt_plugin`` (vLLM prints its own loggers) and
records the step in :data:`rftt_plugin.cpu.state.STATE` for ``rftt doctor``.
"""

from __future__ import annotations

import inspect
import logging
import os

from rftt_plugin.cpu.compat import PatchSignatureError, require_signature
from rftt_plugin.cpu.state import APPLIED, FAILED, SKIPPED, STATE

logger = logging.getLogger("vllm.rftt_plugin")

TESTED_VLLM_VERSIONS: tuple[str, ...] = ("0.27.1",)
UNTESTED_ENV = "RFTT_CPU_UNTESTED_VLLM"
OPT_OUT_ENV = "RFTT_VLLM_ONEDNN"  # "keep": leave vLLM's oneDNN prepacking on
STEP = "V1 vLLM oneDNN prepack off"
TARGET = "vllm._custom_ops"
DISPATCH_PARAMS = ("layer", "remove_weight")


def vllm_version() -> str:
    """vLLM's release without a local label: ``0.27.1+cpu`` -> ``0.27.1``."""
    import vllm

    return str(getattr(vllm, "__version__", "unknown")).split("+", 1)[0]


def decide(version: str, on_cpu: bool, environ=os.environ) -> tuple[bool, str]:
    """(apply?, why) for this process. Pure: unit-tested without vLLM."""
    if not on_cpu:
        return False, "vLLM's platform in this process is not cpu"
    if environ.get(OPT_OUT_ENV, "").strip().lower() == "keep":
        return False, f"{OPT_OUT_ENV}=keep: oneDNN prepacking left on (weights cannot be re-synced)"
    if version in TESTED_VLLM_VERSIONS:
        return True, f"vllm {version} is a tested version"
    if environ.get(UNTESTED_ENV, "").strip().lower() == "apply":
        return True, f"vllm {version} is untested; applied because {UNTESTED_ENV}=apply"
    return False, (f"vllm {version} is not a tested version ({', '.join(TESTED_VLLM_VERSIONS)}); skipped. "
                   f"Set {UNTESTED_ENV}=apply to apply it anyway (the symbols are still checked).")


def check_symbols(ops, layer_utils) -> None:
    """Raise PatchSignatureError unless the flag and its reader look as this patch was written for."""
    flag = getattr(ops, "_supports_onednn", None)
    if not isinstance(flag, bool):
        raise PatchSignatureError(f"vllm._custom_ops._supports_onednn is {flag!r}, not a bool: vLLM changed how "
                                  f"it chooses oneDNN; update rftt_plugin/cpu/vllm_patch.py")
    dispatch = getattr(layer_utils, "dispatch_cpu_unquantized_gemm", None)
    if dispatch is None:
        raise PatchSignatureError("vllm.model_executor.layers.utils.dispatch_cpu_unquantized_gemm is gone; "
                                  "update rftt_plugin/cpu/vllm_patch.py")
    require_signature(dispatch, DISPATCH_PARAMS, "vllm.model_executor.layers.utils.dispatch_cpu_unquantized_gemm")
    if "_supports_onednn" not in inspect.getsource(dispatch):
        raise PatchSignatureError("dispatch_cpu_unquantized_gemm no longer reads ops._supports_onednn: the flag "
                                  "would not turn prepacking off; update rftt_plugin/cpu/vllm_patch.py")


def apply(ops, layer_utils) -> str:
    check_symbols(ops, layer_utils)
    before = ops._supports_onednn
    ops._supports_onednn = False
    return (f"vllm._custom_ops._supports_onednn {before} -> False: CPU Linear layers keep live weights "
            f"(torch.nn.functional.linear) so verl's weight sync can load into them")


def register() -> None:
    """``vllm.general_plugins`` entry point: runs once in every vLLM process."""
    try:
        from vllm.platforms import current_platform

        on_cpu = bool(current_platform.is_cpu())
        version = vllm_version()
    except Exception as exc:  # cannot tell: leave vLLM alone, say why
        STATE.record(STEP, TARGET, SKIPPED, f"could not resolve vLLM's platform: {exc}")
        logger.warning("rftt_plugin: %s skipped: could not resolve vLLM's platform: %s", STEP, exc)
        return
    ok, why = decide(version, on_cpu)
    if not ok:
        STATE.record(STEP, TARGET, SKIPPED, why)
        if on_cpu:  # on a GPU this is the expected, silent case
            logger.warning("rftt_plugin: %s skipped: %s", STEP, why)
        return
    try:
        from vllm import _custom_ops as ops
        from vllm.model_executor.layers import utils as layer_utils

        detail = apply(ops, layer_utils)
    except Exception as exc:
        STATE.record(STEP, TARGET, FAILED, f"{type(exc).__name__}: {exc}")
        logger.error("rftt_plugin: %s failed: %s", STEP, exc)
        raise
    STATE.record(STEP, TARGET, APPLIED, detail)
    # WARNING, not INFO: verl runs vLLM with VLLM_LOGGING_LEVEL=WARN, and a changed kernel path
    # (torch linear instead of oneDNN) must be visible in the run log.
    logger.warning("rftt_plugin: %s applied in pid %d (%s): %s", STEP, os.getpid(), why, detail)
