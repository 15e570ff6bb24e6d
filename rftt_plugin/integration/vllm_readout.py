"""verl's vLLM server answering the plugin's tag read-outs: ``logprob_token_ids`` and ``rftt_top_logprobs``.

**One-request read-out (issue 28, the default):** vLLM's own ``SamplingParams.logprob_token_ids``
passes through verl's ``generate`` untouched, but verl returns sampled-token log-probs only, so the
values would be lost. For a request carrying it, the subclass below captures the first output
position's log-probs of the listed ids and returns them in ``extra_fields["token_id_logprobs"] =
{"ids": [...], "logprobs": [...]}`` (the ids in the order asked). It checks that ``logprobs`` is
falsy (vLLM rejects anything but unset or ``len(ids)``, and verl would send 0). Because vLLM's
sampler uses the id-gathered log-probs for the **whole batch** once one request in an engine step
carries the field, a server that has served one kind of read-out refuses the other
(``MixedReadoutError``): a top-k read-out next to it would silently get wrong values. Rollout
requests (``logprobs=0``) are unaffected (tests/test_vllm_offline.py puts both in one step).

**Top-k read-out (issue 14):**

verl 0.9.1's ``vLLMHttpServer.generate`` forces vLLM's ``logprobs`` to the sampled token only
(vllm_async_server.py: ``sampling_params["logprobs"] = 0 if ... else None``), so the only exact
way to read P(tag | context) through it is ``prompt_logprobs``, which in vLLM 0.27.1 skips the
prefix cache (see :mod:`rftt_plugin.integration.server_backend`). This module lets a request ask
for the top-k of its first generated position instead -- an ordinary generate request on the
context, which reads the prefix cache:

* ``RfttVLLMHttpServer`` subclasses verl's ``vLLMHttpServer``. A request whose ``sampling_params``
  carry ``rftt_top_logprobs=k`` is served by verl's own ``generate``; while it runs, the engine's
  ``generate`` sees ``SamplingParams.logprobs = k`` (a context variable scopes this to that one
  request) and the first output's top-k are returned in ``extra_fields["top_logprobs"]`` as
  ``{"ids": [...], "logprobs": [...]}``, most likely first. verl's own ``log_probs`` of the sampled
  token still come out as before. Requests without the key are untouched.
* With ``temperature=1, top_p=1, top_k=-1, repetition_penalty=1`` (what the read-out sends) vLLM's
  processed log-probs (verl's ``logprobs_mode``) equal the raw ones: the full-vocabulary softmax
  after verl's OOV mask, the same numbers ``prompt_logprobs`` gives (tests/test_vllm_offline.py).
* Installed from a post-import hook on ``verl.workers.rollout.vllm_rollout.vllm_async_server``:
  the module global ``vLLMHttpServer`` is rebound to the subclass before verl's ``vLLMReplica``
  wraps it with ``ray.remote`` (the same kind of private rebinding as the CPU patches in ``rftt_plugin.cpu.patches``), only on
  tested verl versions (``rftt_plugin.cpu.compat``), after checking ``generate``'s signature;
  ``RFTT_VLLM_TOPK_READOUT=off`` leaves verl's class alone.
"""

from __future__ import annotations

import contextvars
import logging
import os
from typing import Any

from rftt_plugin.cpu.compat import PatchSignatureError, parameter_names, private_patches_allowed

logger = logging.getLogger("rftt_plugin")

TOP_LOGPROBS_KEY = "rftt_top_logprobs"
TOKEN_IDS_KEY = "logprob_token_ids"      # == readout_token_ids.TOKEN_IDS_KEY (vLLM's field)
RESULT_FIELD = "token_id_logprobs"       # == readout_token_ids.RESULT_FIELD
TARGET = "verl.workers.rollout.vllm_rollout.vllm_async_server"
OFF_ENV = "RFTT_VLLM_TOPK_READOUT"
GENERATE_PREFIX = ("self", "prompt_ids", "sampling_params", "request_id")
MARK = "_rftt_topk_readout"

_BOX: contextvars.ContextVar[dict | None] = contextvars.ContextVar("rftt_top_logprobs", default=None)
_CLASS = None
STATUS = {"state": "pending", "detail": ""}


def _enter(box: dict):
    # Module-level helpers, not the ContextVar itself, are what the methods reference: Ray copies an
    # actor class's methods by value, and a ContextVar cannot be pickled (functions are by reference).
    return _BOX.set(box)


def _leave(token) -> None:
    _BOX.reset(token)


class MixedReadoutError(ValueError):
    """A top-k read-out and a ``logprob_token_ids`` read-out on the same vLLM engine."""


def _top_entries(logprobs_at_first: dict, k: int) -> dict[str, list]:
    first = sorted(logprobs_at_first.items(), key=lambda kv: kv[1].rank)[:k]
    return {"ids": [int(t) for t, _ in first], "logprobs": [float(v.logprob) for _, v in first]}


def token_id_entries(logprobs_at_first: dict, ids: list[int]) -> dict[str, list]:
    """The asked ids' log-probs from vLLM's first-position ``{id: Logprob}`` (ranks are placeholders)."""
    missing = [t for t in ids if t not in logprobs_at_first]
    if missing:
        raise RuntimeError(f"vLLM returned no log-prob for the {TOKEN_IDS_KEY} {missing} (got ids "
                           f"{sorted(logprobs_at_first)})")
    return {"ids": list(ids), "logprobs": [float(logprobs_at_first[t].logprob) for t in ids]}


def _claim(server: Any, kind: str) -> None:
    """One kind of read-out per engine (see the module docstring)."""
    held = getattr(server, "_rftt_readout_kind", None)
    if held is None:
        server._rftt_readout_kind = kind
    elif held != kind:
        raise MixedReadoutError(
            f"this vLLM server has served {held} read-outs; a {kind} read-out on the same engine is refused: when one "
            f"request of an engine step carries {TOKEN_IDS_KEY}, vLLM returns id-gathered log-probs for the whole "
            f"batch, so top-k read-outs next to it get wrong values. Use one rftt.tag_readout per run.")


def _wrap_engine(server: Any) -> None:
    """Make ``server.engine.generate`` honour the current request's ``rftt_top_logprobs`` (once)."""
    engine = server.engine
    if getattr(engine, MARK, False):
        return
    original = engine.generate

    async def capture(agen, box):
        async for out in agen:
            if box["top"] is None and out.outputs and out.outputs[0].logprobs:
                first = out.outputs[0].logprobs[0]
                box["top"] = token_id_entries(first, box["ids"]) if box["ids"] else _top_entries(first, box["k"])
            yield out

    def generate(*args, **kwargs):
        box = _BOX.get()
        params = kwargs.get("sampling_params")
        if box is None or params is None:
            return original(*args, **kwargs)
        if not box["ids"]:  # logprob_token_ids needs no logprobs (vLLM: unset or len(ids))
            params.logprobs = max(box["k"], params.logprobs or 0)
        return capture(original(*args, **kwargs), box)

    engine.generate = generate
    setattr(engine, MARK, True)


def server_class(base: type) -> type:
    """The subclass of verl's ``vLLMHttpServer`` (built once; importable by name for Ray)."""
    global _CLASS
    if _CLASS is not None:
        return _CLASS

    class RfttVLLMHttpServer(base):
        async def generate(self, prompt_ids, sampling_params, request_id, *args, **kwargs):
            is_dict = isinstance(sampling_params, dict)
            k = sampling_params.pop(TOP_LOGPROBS_KEY, None) if is_dict else None
            ids = sampling_params.get(TOKEN_IDS_KEY) if is_dict else None
            if not k and not ids:
                return await super().generate(prompt_ids, sampling_params, request_id, *args, **kwargs)
            if k and ids:
                raise MixedReadoutError(f"a request carries both {TOP_LOGPROBS_KEY} and {TOKEN_IDS_KEY}")
            if ids:
                ids = [int(t) for t in ids]
                if sampling_params.get("logprobs"):
                    raise ValueError(f"{TOKEN_IDS_KEY} needs logprobs=False: verl would send vLLM logprobs=0, and vLLM "
                                     f"accepts only unset or len({TOKEN_IDS_KEY})")
                _claim(self, TOKEN_IDS_KEY)
                field = RESULT_FIELD
            else:
                k = int(k)
                if not 1 <= k <= 20:
                    raise ValueError(f"{TOP_LOGPROBS_KEY} must be in [1, 20], got {k}")
                _claim(self, TOP_LOGPROBS_KEY)
                field = "top_logprobs"
            _wrap_engine(self)
            box = {"k": k, "ids": ids, "top": None}
            token = _enter(box)
            try:
                out = await super().generate(prompt_ids, sampling_params, request_id, *args, **kwargs)
            finally:
                _leave(token)
            if box["top"] is not None and out.extra_fields is not None:
                out.extra_fields[field] = box["top"]
            return out

    RfttVLLMHttpServer.__module__ = __name__
    RfttVLLMHttpServer.__qualname__ = RfttVLLMHttpServer.__name__
    setattr(RfttVLLMHttpServer, MARK, True)
    _CLASS = RfttVLLMHttpServer
    return _CLASS


def __getattr__(name: str):
    # Ray pickles the actor class by module + name: resolve it in the actor's process.
    if name == "RfttVLLMHttpServer":
        import importlib

        return server_class(importlib.import_module(TARGET).vLLMHttpServer)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def install(module) -> None:
    """Post-import hook on verl's vLLM server module."""
    if os.environ.get(OFF_ENV, "").strip().lower() in ("off", "0", "false"):
        STATUS.update(state="skipped", detail=f"{OFF_ENV}=off")
        return
    allowed, reason = private_patches_allowed()
    if not allowed:
        STATUS.update(state="skipped", detail=reason)
        logger.warning("rftt_plugin: cached tag read-out on vLLM not installed: %s", reason)
        return
    base = getattr(module, "vLLMHttpServer", None)
    if base is None or getattr(base, MARK, False):
        STATUS.update(state="applied" if base is not None else "failed", detail="already applied" if base else "no class")
        return
    names = parameter_names(base.generate)
    if names[:len(GENERATE_PREFIX)] != GENERATE_PREFIX:
        raise PatchSignatureError(f"{TARGET}.vLLMHttpServer.generate has parameters {names}; the cached tag "
                                  f"read-out was written for {GENERATE_PREFIX}...: update {__name__}")
    module.vLLMHttpServer = server_class(base)
    STATUS.update(state="applied", detail=f"{TARGET}.vLLMHttpServer -> {__name__}.RfttVLLMHttpServer")
