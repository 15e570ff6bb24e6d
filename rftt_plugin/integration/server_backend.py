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

:func:`read_tag_logprobs_cached` reads the same numbers from ordinary generate requests on the
context itself -- which reuse the prefix cache -- through the plugin's extension key
``rftt_top_logprobs=k``: the server returns the top-k of the next-token distribution (full
vocabulary, temperature 1, after verl's OOV mask) in ``extra_fields["top_logprobs"]``. Tags
outside the top-k come from a request restricted to the tags (``allowed_token_ids``, renormalised
over them) sent concurrently with it, anchored on a tag inside the top-k: one round trip per
expansion, exact. The ``hfcpu`` server implements the key; verl's stock vLLM server does not (it
forces ``logprobs`` to the sampled token and rejects unknown keys), the plugin's subclass of it
does (:mod:`rftt_plugin.integration.vllm_readout`). :class:`VerlServerBackend`'s ``readout``:
``"auto"`` (the default: the one-request read-out below, falling back for good to
:func:`read_tag_logprobs` when the server refuses it), ``"token_ids"`` (that one; errors if
refused), ``"top_logprobs"`` (this cached one; errors if the server refuses),
``"prompt_logprobs"`` (the uncached read-out above); ``$RFTT_TAG_READOUT`` overrides.

:func:`~rftt_plugin.integration.readout_token_ids.read_tag_logprobs_token_ids` (issue 28) reads all
candidates in ONE cached request through vLLM's own ``SamplingParams.logprob_token_ids``; ``"auto"``
now tries it first and falls back (once, announced) to the uncached ``prompt_logprobs`` read-out --
never to the top-k one, which must not share an engine with it (see that module). ``"token_ids"``
selects it strictly.

What the cached read-out still prefills (bench/rollout.py, vLLM, 16-token blocks): only first-touch
ids (the root prompt, the inserted tag and newline ids) and the partial last KV block of each
request (vLLM caches whole blocks and always computes a prompt's last id) -- about half a block per
request whatever the context length, so the cached share grows with the context.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Sequence

from rftt_plugin.backends.base import TAG_READOUTS, BaseBackend, Generation, SamplingParams
from rftt_plugin.integration.readout_token_ids import TOKEN_IDS_KEY, read_tag_logprobs_token_ids


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
_REFUSED: dict[str, str] = {}  # read-out -> why the server refused it (once per process)
_ANNOUNCED: set[str] = set()


class ReadoutUnsupported(RuntimeError):
    """The rollout server does not implement ``rftt_top_logprobs``."""


async def read_tag_logprobs_cached(server_manager: Any, request_id: str, context_ids: Sequence[int],
                                   candidate_ids: Sequence[int], top_k: int = 20) -> list[float]:
    """Same values as :func:`read_tag_logprobs`, from generate requests on the context (cacheable).

    One round trip of two concurrent requests on the same context (both read the prefix cache,
    neither asks for ``prompt_logprobs``):

    1. ``rftt_top_logprobs=k``, no mask: the top-k of the full next-token distribution, with
       full-vocabulary log-probs ``lp``;
    2. (two or more candidates) ``allowed_token_ids = candidates``, ``rftt_top_logprobs =
       len(candidates)``: the server's processed log-probs are renormalised over that set ``S``,
       ``lp_S(t) = lp(t) - log P(S)``.

    Candidates in the top-k are read from 1. Any other candidate ``t`` is
    ``lp(t) = lp_S(t) - lp_S(a) + lp(a)`` exactly (float rounding aside), with the anchor ``a``
    the most likely candidate found in 1. Only when no candidate is in the top-k is there no anchor
    in ``S``: then a third request restricted to the missing candidates plus the top-1 token (whose
    ``lp`` 1. gave) follows -- a second round trip, exact too. In the bench (issue 14) every
    expansion had some tag outside the top-20 but never all of them.
    """
    context = [int(t) for t in context_ids]
    candidates = [int(c) for c in candidate_ids]
    if not context:
        raise ValueError("tag read-out needs a non-empty context")
    if not 1 <= top_k <= 20:
        raise ValueError(f"top_k must be in [1, 20] for the cached read-out, got {top_k}")
    if len(set(candidates)) != len(candidates):
        raise ValueError(f"candidate ids must be distinct, got {candidates}")

    async def ask(k: int, allowed: list[int] | None = None) -> tuple[list[int], list[float]]:
        # Neutral sampling: the server's top-k is then the raw next-token distribution. The one sampled
        # token is discarded. No seed (as the prompt_logprobs read-out): vLLM's CPU build crashes on a
        # seeded request whose prefill is chunked ("CPU Generator does not use offset", 0.27.1), and
        # the search's own steps carry their seeds, so this draw cannot change a tree.
        params: dict[str, Any] = {"max_tokens": 1, "temperature": 1.0, "top_p": 1.0, "top_k": -1,
                                  "repetition_penalty": 1.0, "logprobs": False, TOP_LOGPROBS_KEY: k}
        if allowed is not None:
            params["allowed_token_ids"] = allowed
        out = await server_manager.generate(request_id=request_id, prompt_ids=context, sampling_params=params)
        top = (out.extra_fields or {}).get("top_logprobs")
        if top is None:
            raise ReadoutUnsupported(f"the rollout server ignored {TOP_LOGPROBS_KEY} (no extra_fields['top_logprobs'])")
        ids, lps = [int(i) for i in top["ids"]], [float(x) for x in top["logprobs"]]
        if allowed is not None and not set(allowed) <= set(ids):
            raise RuntimeError(f"the server's allowed_token_ids read-out returned ids {sorted(ids)}, "
                               f"expected {sorted(allowed)}")
        return ids, lps

    if len(candidates) > 1:
        (ids, lps), (sub_ids, sub_lps) = await asyncio.gather(ask(top_k), ask(len(candidates), candidates))
        renorm = dict(zip(sub_ids, sub_lps))
    else:
        ids, lps = await ask(top_k)
        renorm = {}
    full = dict(zip(ids, lps))
    found = {c: full[c] for c in candidates if c in full}
    missing = [c for c in candidates if c not in found]
    if missing:
        if found and renorm:
            anchor = max(found, key=lambda c: found[c])
            anchor_lp = found[anchor]
        else:  # no candidate in the top-k: anchor on the top-1 token, one more (cacheable) request
            anchor, anchor_lp = ids[0], lps[0]
            sub_ids, sub_lps = await ask(len(missing) + 1, missing + [anchor])
            renorm = dict(zip(sub_ids, sub_lps))
        for c in missing:
            found[c] = renorm[c] - renorm[anchor] + anchor_lp
    return [found[c] for c in candidates]


class _UsageCounter:
    """Wraps verl's server manager to count prompt tokens and, where the engine reports them
    (vLLM: ``extra_fields["num_cached_tokens"]``), the prefix-cache hits of every call of a tree."""

    def __init__(self, server_manager: Any):
        self._inner = server_manager
        self.reported_prompt_tokens = 0   # prompt tokens of the calls that reported a cache count
        self.cached_tokens = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def generate(self, *args, **kwargs):
        out = await self._inner.generate(*args, **kwargs)
        cached = (getattr(out, "extra_fields", None) or {}).get("num_cached_tokens")
        if isinstance(cached, int) and not isinstance(cached, bool):
            self.reported_prompt_tokens += len(kwargs.get("prompt_ids") or ())
            self.cached_tokens += cached
        return out


class VerlServerBackend(BaseBackend):
    """Backend for one tree: every call goes through ``server_manager`` with the tree's request id."""

    def __init__(self, server_manager: Any, request_id: str, eos_id: int, *, readout_top_k: int = 20,
                 max_model_len: int | None = None, readout: str | None = None):
        # default: $RFTT_TAG_READOUT, else "auto" (as the recipe's rftt.tag_readout)
        readout = readout or os.environ.get("RFTT_TAG_READOUT", "").strip() or "auto"
        if readout not in TAG_READOUTS:
            raise ValueError(f"readout must be one of {TAG_READOUTS}, got {readout!r}")
        self.readout = readout
        self.usage = _UsageCounter(server_manager)
        self.server_manager = self.usage
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
        if self.readout == "token_ids" or (self.readout == "auto" and "token_ids" not in _REFUSED):
            try:
                values = await read_tag_logprobs_token_ids(self.server_manager, self.request_id, context_ids,
                                                           candidate_ids)
                self._announce("token_ids", f"tag read-out via {TOKEN_IDS_KEY} (one cached request per expansion)")
                return values
            except Exception as exc:  # verl's stock vLLM server drops the values; other servers may raise
                if self.readout == "token_ids":
                    raise
                if "token_ids" not in _REFUSED:  # concurrent trees may all fail once; say it once
                    _REFUSED["token_ids"] = f"{type(exc).__name__}: {exc}"
                    # never the top-k read-out here: it must not share an engine with logprob_token_ids
                    print(f"[rftt_plugin] rftt_tree: the rollout server refused the {TOKEN_IDS_KEY} tag read-out "
                          f"({_REFUSED['token_ids']}); using prompt_logprobs read-outs (exact, but uncached) from now "
                          f"on in this process", flush=True)
        if self.readout == "top_logprobs" and self.readout_top_k > 0:
            values = await read_tag_logprobs_cached(self.server_manager, self.request_id, context_ids, candidate_ids,
                                                    top_k=min(self.readout_top_k, 20))
            self._announce("top_logprobs", f"tag read-out via {TOP_LOGPROBS_KEY} (cached; tags outside the top-"
                                           f"{min(self.readout_top_k, 20)} via allowed_token_ids, same round trip)")
            return values
        return await read_tag_logprobs(self.server_manager, self.request_id, context_ids, candidate_ids,
                                       top_k=self.readout_top_k)

    @staticmethod
    def _announce(readout: str, line: str) -> None:
        if readout not in _ANNOUNCED:  # once per process: which read-out a run used
            _ANNOUNCED.add(readout)
            # print, not logging: in a process that imported vLLM, its logging set-up can silence
            # other loggers, and this line is how a run shows which read-out it used
            print(f"[rftt_plugin] rftt_tree: {line}", flush=True)

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
