"""Entry point of group ``verl.plugins``: imported by ``import verl`` in every verl process.

verl imports this module from the end of ``verl/__init__.py`` and swallows any exception at DEBUG
level, which would leave a run silently on verl's stock defaults. So registration is wrapped: a
failure is logged at ERROR on logger ``rftt_plugin`` with its traceback, then re-raised (and the
recipes' guard, ``rftt_plugin.integration.guard``, stops the run before Ray starts).

Keep this module to registrations. Anything heavy (torch models, math-verify pools, Ray, vLLM) is
imported lazily by the registered objects themselves.
"""

from __future__ import annotations

import importlib
import logging

logger = logging.getLogger("rftt_plugin")

LOADED = False  # set last; guard.plugin_loaded() reads it


def _register_all() -> None:
    from rftt_plugin import cpu, import_hooks
    from rftt_plugin.integration import estimator, guard, hydra_searchpath

    guard.register_resolver()
    hydra_searchpath.register()
    cpu.install()  # CPU platform + hfcpu rollout; acts only on hosts without CUDA/NPU
    # Registries live in heavy modules: register when verl itself imports them.
    import_hooks.when_imported("verl.trainer.ppo.core_algos", estimator.register)
    # importing our agent-loop module registers `rftt_tree` through verl's public @register
    import_hooks.when_imported("verl.experimental.agent_loop.agent_loop",
                               lambda _module: importlib.import_module("rftt_plugin.integration.agent_loop"))
    # verl's vLLM server learns the cached tag read-out key (rftt_top_logprobs); see vllm_readout
    import_hooks.when_imported("verl.workers.rollout.vllm_rollout.vllm_async_server",
                               lambda module: importlib.import_module("rftt_plugin.integration.vllm_readout").install(module))


try:
    _register_all()
except BaseException:
    logger.error("rftt-plugin failed to register with verl; this run would NOT use RFTT", exc_info=True)
    raise
else:
    LOADED = True
