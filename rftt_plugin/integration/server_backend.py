"""The search engine's :class:`~rftt_plugin.backends.base.Backend` on top of verl's rollout servers.

Inside verl, the ``rftt_tree`` agent loop searches through ``server_manager.generate`` (verl's
``LLMServerClient``): token ids in, token ids and sampled log-probs out, routed to a server by a
sticky ``request_id`` -- one id per tree, so every call of a tree lands on the same vLLM server
and its shared prefixes hit the prefix cache (verl gives vLLM a fresh per-call id, so concurrent
calls of one tree do not collide).

Tag read-out (:func:`read_tag_logprobs`) is isolated here because it is the one place that
depends on how a server reports probabilities. verl's vLLM server forces ``logprobs`` to the
sampled token only, so the next-token distribution is read through ``prompt_logprobs``: the
request is ``context + [candidate]`` with ``max_tokens=1``; verl returns, per prompt position
``j >= 1``, the ids and log-probs predicting token ``j`` in ``extra_fields["prompt_ids"][j-1]``
/ ``extra_fields["prompt_logprobs"][j-1]`` (verl/workers/rollout/vllm_rollout/utils.py,
``extract_prompt_logprobs``). With ``prompt_logprobs=k > 0`` that row holds the top-k of the
distribution at the candidate's position (the candidate itself is dropped when it is not in the
top-k); with ``k = 0`` it holds exactly the candidate's own log-prob. So: one request with the
top-k; any allowed tag missing from it gets its own ``k = 0`` request (exact, never a guess).
The CPU ``hfcpu`` server reproduces this layout; the vLLM lane checks it on vLLM's CPU build.

Cost (measured with bench/rollout.py): in vLLM 0.27.1 a request that asks for
``prompt_logprobs`` skips reading the prefix cache (``SamplingParams.skip_reading_prefix_cache``
defaults to ``prompt_logprobs is not None``) and computes log-probs at every prompt position, so
each read-out re-prefills its whole context. (Forcing ``skip_reading_prefix_cache=False`` is not
an option: vLLM then returns prompt log-prob rows only for the uncached positions and its
detokenizer crashes on the rest, ``OverflowError``, checked on 0.27.1.)

:func:`read_tag_logprobs_cached` reads the same numbers from an ordinary generate request on the
context itself -- which reuses the prefix cache -- through the plugin's extension key
``rftt_top_logprobs=k``: the server returns the top-k of the next-token distribution (full
vocabulary, temperature 1, after verl's OOV mask) in ``extra_fields["top_logprobs"]``; tags
outside the top-k still get their exact ``k = 0`` ``prompt_logprobs`` request. The ``hfcpu``
server implements the key; verl's stock vLLM server does not (it forces ``logprobs`` to the
sampled token and rejects unknown keys), the plugin's subclass of it does
(:mod:`rftt_plugin.integration.vllm_readout`). :class:`VerlServerBackend`'s ``readout``:
``"prompt_logprobs"`` (default, the read-out above), ``"top_logprobs"`` (the cached one; errors
if the server refuses), ``"auto"`` (tries the key once per process and falls back to
:func:`read_tag_logprobs` for good when the server refuses); ``$RFTT_TAG_READOUT`` sets the
default. On vLLM the key is served by :mod:`rftt_plugin.integration.vllm_readout`.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Sequence

from rftt_plugin.backends.base import BaseBackend, Generation, SamplingParams


async def read_tag_logprobs(server_manager: Any, request_id: str, context_ids: Sequence[int],
                            candidate_ids: Sequence[int], top_k: int = 20) -> list[float]:
    """log P(candidate | context) for single-id candidates, full-vocabulary softmax at temperature 1."""
    context = [int(t) for t in context_ids]
    candidates = [int(c) for c in candidate_ids]
    if not context:
        raise ValueError("tag read-out needs a non-empty context")
    position = len(context) - 1  # row of extra_fields["prompt_logprobs"] predicting the appended token

    async def ask(token: int, k: int) -> tuple[list[int], list[float]]:
        out = await server_manager.generate(
            request_id=request_id, prompt_ids=context + [token],
            sampling_params={"max_tokens": 1, "temperature": 1.0, "top_p": 1.0, "top_k": -1,
                             "prompt_logprobs": k, "logprobs": False},
        )
        fields = out.extra_fields or {}
        if "prompt_logprobs" not in fields or "prompt_ids" not in fields:
            raise RuntimeError("the rollout server returned no prompt_logprobs: rftt_tree needs a server that "
                               "honours sampling_params['prompt_logprobs'] (vLLM, or the CPU 'hfcpu' server)")
        ids, lps = fields["prompt_ids"][position], fields["prompt_logprobs"][position]
        return [int(i) if i is not None else -1 for i in ids], [float(x) if x is not None else float("-inf")
                                                                   for x in lps]

    found: dict[int, float] = {}
    if top_k > 0:
        ids, lps = await ask(candidates[0], top_k)
        found.update({i: lp for i, lp in zip(ids, lps) if i in candidates})
    missing = [c for c in candidates if c not in found]
    if missing:
        rows = await asyncio.gather(*(ask(c, 0) for c in missing))
        for c, (ids, lps) in zip(missing, rows):
            if ids[0] != c:
                raise RuntimeError(f"server returned the log-prob of token {ids[0]} for candidate {c}")
            found[c] = lps[0]
    return [found[c] for c in candidates]


TOP_LOGPROBS_KEY = "rftt_top_logprobs"  # == rftt_plugin.cpu.hfcpu.sampling.TOP_LOGPROBS_KEY
READOUTS = ("auto", "top_logprobs", "prompt_logprobs")
_REFUSED: dict[str, str] = {}  # "top_logprobs" -> why the server refused it (once per process)
_ANNOUNCED: set[str] = set()


class ReadoutUnsupported(RuntimeError):
    """The rollout server does not implement ``rftt_top_logprobs``."""


async def read_tag_logprobs_cached(server_manager: Any, request_id: str, context_ids: Sequence[int],
                                   candidate_ids: Sequence[int], top_k: int = 20) -> list[float]:
    """Same values as :func:`read_tag_logprobs`, from generate requests on the context (cacheable).

    1. ``rftt_top_logprobs=k``, no mask: the top-k of the full next-token distribution. Its most
       likely entry is the *anchor* ``a`` with a known full-vocabulary log-prob ``lp(a)``.
    2. Only if some tags are outside the top-k: one more request on the same context with
       ``allowed_token_ids = missing + [a]`` and ``rftt_top_logprobs = len(those)``. The server's
       processed log-probs are then renormalised over that set: ``lp_S(t) = lp(t) - log P(S)``, so
       ``lp(t) = lp_S(t) - lp_S(a) + lp(a)`` exactly (float rounding aside). Both requests share the
       context's prefix; neither asks for ``prompt_logprobs``.
    """
    context = [int(t) for t in context_ids]
    candidates = [int(c) for c in candidate_ids]
    if not context:
        raise ValueError("tag read-out needs a non-empty context")
    if not 1 <= top_k <= 20:
        raise ValueError(f"top_k must be in [1, 20] for the cached read-out, got {top_k}")
    # Neutral sampling: the server's top-k is then the raw next-token distribution. A fixed seed
    # keeps the one sampled token (discarded) from drawing on the server's shared generator.
    out = await server_manager.generate(
        request_id=request_id, prompt_ids=context,
        sampling_params={"max_tokens": 1, "temperature": 1.0, "top_p": 1.0, "top_k": -1, "repetition_penalty": 1.0,
                         "seed": 0, "logprobs": False, TOP_LOGPROBS_KEY: top_k},
    )
    top = (out.extra_fields or {}).get("top_logprobs")
    if top is None:
        raise ReadoutUnsupported(f"the rollout server ignored {TOP_LOGPROBS_KEY} (no extra_fields['top_logprobs'])")
    found = {int(i): float(lp) for i, lp in zip(top["ids"], top["logprobs"]) if int(i) in candidates}
    missing = [c for c in candidates if c not in found]
    if missing:
        anchor, anchor_lp = int(top["ids"][0]), float(top["logprobs"][0])
        allowed = missing + [anchor]
        out = await server_manager.generate(
            request_id=request_id, prompt_ids=context,
            sampling_params={"max_tokens": 1, "temperature": 1.0, "top_p": 1.0, "top_k": -1,
                             "repetition_penalty": 1.0, "seed": 0, "logprobs": False,
                             "allowed_token_ids": allowed, TOP_LOGPROBS_KEY: len(allowed)},
        )
        sub = (out.extra_fields or {}).get("top_logprobs")
        if sub is None:
            raise ReadoutUnsupported(f"the rollout server ignored {TOP_LOGPROBS_KEY} (no extra_fields['top_logprobs'])")
        renorm = {int(i): float(lp) for i, lp in zip(sub["ids"], sub["logprobs"])}
        if anchor not in renorm or any(c not in renorm for c in missing):
            raise RuntimeError(f"the server's allowed_token_ids read-out returned ids {sorted(renorm)}, "
                               f"expected {sorted(allowed)}")
        for c in missing:
            found[c] = renorm[c] - renorm[anchor] + anchor_lp
    return [found[c] for c in candidates]


class VerlServerBackend(BaseBackend):
    """Backend for one tree: every call goes through ``server_manager`` with the tree's request id."""

    def __init__(self, server_manager: Any, request_id: str, eos_id: int, *, readout_top_k: int = 20,
                 max_model_len: int | None = None, readout: str | None = None):
        # default: $RFTT_TAG_READOUT, else the uncached prompt_logprobs read-out (until the agent
        # loop passes a config value)
        readout = readout or os.environ.get("RFTT_TAG_READOUT", "").strip() or "prompt_logprobs"
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
        self.readout = readout
        self.server_manager = server_manager
        self.request_id = request_id
        self.eos_id = int(eos_id)
        self.readout_top_k = int(readout_top_k)
        self.max_model_len = max_model_len
        self.calls = 0
        # weight versions seen by this tree's calls (verl tags each trajectory with them)
        self.min_global_steps: int | None = None
        self.max_global_steps: int | None = None

    def _track_version(self, extra_fields: dict | None) -> None:
        fields = extra_fields or {}
        lo, hi = fields.get("min_global_steps", fields.get("global_steps")), fields.get("max_global_steps",
                                                                                          fields.get("global_steps"))
        if lo is not None:
            self.min_global_steps = lo if self.min_global_steps is None else min(self.min_global_steps, lo)
        if hi is not None:
            self.max_global_steps = hi if self.max_global_steps is None else max(self.max_global_steps, hi)

    async def next_token_logprobs(self, context_ids: Sequence[int], candidate_ids: Sequence[int]) -> list[float]:
        self.calls += 1
        cached = self.readout == "top_logprobs" or (self.readout == "auto" and "top_logprobs" not in _REFUSED)
        if cached and self.readout_top_k > 0:
            try:
                values = await read_tag_logprobs_cached(self.server_manager, self.request_id, context_ids,
                                                        candidate_ids, top_k=min(self.readout_top_k, 20))
                if "top_logprobs" not in _ANNOUNCED:  # once per process: which read-out a run used
                    _ANNOUNCED.add("top_logprobs")
                    # print, not logging: in a process that imported vLLM, its logging set-up can
                    # silence other loggers, and this line is how a run shows which read-out it used
                    print(f"[rftt_plugin] rftt_tree: tag read-out via {TOP_LOGPROBS_KEY} (cached; tags outside "
                          f"the top-{min(self.readout_top_k, 20)} via allowed_token_ids)", flush=True)
                return values
            except Exception as exc:  # stock vLLM server: unknown sampling key (TypeError) or ignored
                if self.readout == "top_logprobs":
                    raise
                _REFUSED["top_logprobs"] = f"{type(exc).__name__}: {exc}"
                print(f"[rftt_plugin] rftt_tree: the rollout server refused the cached tag read-out "
                      f"({_REFUSED['top_logprobs']}); using prompt_logprobs read-outs (exact, but uncached) from now "
                      f"on in this process", flush=True)
        return await read_tag_logprobs(self.server_manager, self.request_id, context_ids, candidate_ids,
                                       top_k=self.readout_top_k)

    async def generate(self, context_ids: Sequence[int], params: SamplingParams) -> Generation:
        if params.stop:
            # verl runs vLLM with skip_tokenizer_init: stop strings cannot be matched there
            return Generation.failed("stop strings are not supported through verl's rollout server "
                                     "(use token_mode=added, i.e. a model prepared with `rftt prepare-model`)")
        self.calls += 1
        sampling: dict[str, Any] = {"max_tokens": int(params.max_tokens), "temperature": float(params.temperature),
                                    "top_p": float(params.top_p), "top_k": int(params.top_k),
                                    "stop_token_ids": list(params.stop_token_ids), "logprobs": True}
        if params.seed is not None:
            sampling["seed"] = int(params.seed)
        try:
            out = await self.server_manager.generate(request_id=self.request_id, prompt_ids=list(context_ids),
                                                     sampling_params=sampling)
        except Exception as exc:  # one failed call ends one step, not the tree (see the search docs)
            return Generation.failed(f"{type(exc).__name__}: {exc}")
        self._track_version(out.extra_fields)
        ids = [int(t) for t in out.token_ids]
        if out.stop_reason == "aborted":
            return Generation.failed("request aborted by the rollout server")
        lps = [float(x) for x in out.log_probs] if out.log_probs is not None else None
        if lps is None or len(lps) != len(ids):
            return Generation.failed("the rollout server returned no per-token log-probs (logprobs=True ignored)")
        stop_ids = set(params.stop_token_ids)
        if ids and ids[-1] in stop_ids:
            return Generation(ids, lps, "stop", ids[-1])
        if ids and ids[-1] == self.eos_id:
            return Generation(ids, lps, "eos", ids[-1])
        return Generation(ids, lps, "length", None)
