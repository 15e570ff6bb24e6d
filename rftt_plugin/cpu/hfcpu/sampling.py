"""vLLM-style sampling parameters for the hfcpu server: parsing (with verl's defaults) and logits processing.

Parsing mirrors what verl 0.9.1's vLLM server does before it builds ``vllm.SamplingParams``
(verl/workers/rollout/vllm_rollout/vllm_async_server.py:589-621):

* ``max_tokens`` (or SGLang-style ``max_new_tokens``) if given, else
  ``min(response_length, prompt_length + response_length - len(prompt))``; then clamped to
  ``[1, max_model_len - len(prompt)]``; a prompt with no room left is a ``ValueError``.
* ``logprobs``: any truthy value means "the log-prob of each sampled token" (verl passes
  ``logprobs=0`` to vLLM, i.e. no top-k alternatives); falsy means no log-probs.
* ``repetition_penalty`` and ``ignore_eos`` default to the rollout config's values; with
  ``full_determinism`` a ``seed`` defaults to ``replica_rank + config.seed``.

Logits processing mirrors vLLM's V1 sampler with ``logprobs_mode=processed_logprobs`` (verl's
default, rollout.yaml ``logprobs_mode``): ``allowed_token_ids`` mask -> repetition penalty ->
greedy (``temperature < 1e-5``: argmax, log-probs of the masked/penalised logits) or
temperature -> top-k -> top-p -> sample, log-probs of that final distribution.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import torch

GREEDY_EPS = 1e-5  # vLLM's _SAMPLING_EPS: temperatures below this are greedy
MAX_PROMPT_LOGPROBS = 20  # vLLM's default max_logprobs; larger requests fail there, so here too
# rftt-plugin's extension (not a vLLM key): the top-k of the first generated position's distribution,
# full vocabulary at temperature 1 after the OOV mask, in extra_fields["top_logprobs"]. The tag
# read-out uses it to read P(tag | context) from a request that reuses the prefix cache on vLLM.
TOP_LOGPROBS_KEY = "rftt_top_logprobs"
# vLLM's own field (0.24.0+): the log-prob of each listed id at the first generated position, in
# extra_fields["token_id_logprobs"] (what the plugin's subclass of verl's vLLM server returns; verl's
# stock server drops the values). The one-request tag read-out (issue 28) uses it.
TOKEN_IDS_KEY = "logprob_token_ids"
MAX_TOKEN_IDS = 128  # vLLM's MAX_LOGPROB_TOKEN_IDS

# vLLM parameters that only shape the *text* vLLM would return. verl's server reads token ids,
# so they cannot change anything here; accepted and ignored.
TEXT_ONLY_PARAMS = frozenset(
    {"include_stop_str_in_output", "skip_special_tokens", "spaces_between_special_tokens", "detokenize", "output_kind"}
)

# vLLM parameters hfcpu does not implement: accepted only at their neutral value.
NEUTRAL_ONLY_PARAMS: Mapping[str, tuple[Any, ...]] = {
    "presence_penalty": (0, 0.0),
    "frequency_penalty": (0, 0.0),
    "min_p": (0, 0.0),
    "min_tokens": (0,),
    "best_of": (None, 1),
    "bad_words": (None, []),
    "logit_bias": (None, {}),
    "truncate_prompt_tokens": (None,),
    "structured_outputs": (None,),
    "guided_decoding": (None,),
    "logits_processors": (None, []),
    "extra_args": (None, {}),
}

SUPPORTED_PARAMS = frozenset(
    {
        "n", "temperature", "top_p", "top_k", "max_tokens", "max_new_tokens", "stop", "stop_token_ids",
        "ignore_eos", "allowed_token_ids", "logprobs", "prompt_logprobs", "repetition_penalty", "seed",
        TOP_LOGPROBS_KEY, TOKEN_IDS_KEY,
    }
)


class UnsupportedRequest(ValueError):
    """A request hfcpu cannot serve faithfully (it would silently differ from vLLM)."""


@dataclass(frozen=True)
class ServerLimits:
    """What the server knows that shapes a request's defaults (from RolloutConfig + the model)."""

    max_model_len: int
    prompt_length: int
    response_length: int
    vocab_size: int
    repetition_penalty: float = 1.0
    ignore_eos: bool = False
    default_seed: Optional[int] = None  # set when full_determinism is on
    # rollout.skip_tokenizer_init (verl's default True) leaves SGLang/TRT-LLM without a detokenizer,
    # so they cannot match stop *strings*. verl 0.9.1's vLLM server ignores the key (it hard-codes
    # skip_tokenizer_init=False, vllm_async_server.py:328) and would match them. hfcpu follows the
    # key, so a request that only works on vLLM fails here too instead of passing a CPU test.
    stop_strings_allowed: bool = True


@dataclass(frozen=True)
class SamplingSpec:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1  # <= 0 disables
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    allowed_token_ids: Optional[tuple[int, ...]] = None
    logprobs: bool = False
    prompt_logprobs: Optional[int] = None
    top_logprobs: Optional[int] = None  # TOP_LOGPROBS_KEY
    logprob_token_ids: Optional[tuple[int, ...]] = None  # TOKEN_IDS_KEY
    repetition_penalty: float = 1.0
    seed: Optional[int] = None
    ignored: tuple[str, ...] = field(default=())  # text-only params that were present

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_EPS


def _get(params: Mapping[str, Any], key: str, default):
    """``params[key]``, with ``None`` meaning "not given" (as vLLM's dataclass defaults do)."""
    value = params.get(key)
    return default if value is None else value


def _as_tuple_of_str(value, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value else ()
    values = tuple(value)
    if not all(isinstance(v, str) for v in values):
        raise UnsupportedRequest(f"sampling param {name!r} must be a string or a list of strings, got {value!r}")
    return tuple(v for v in values if v)


def _as_tuple_of_int(value, name: str) -> tuple[int, ...]:
    if value is None:
        return ()
    try:
        return tuple(int(v) for v in value)
    except TypeError as exc:
        raise UnsupportedRequest(f"sampling param {name!r} must be a list of token ids, got {value!r}") from exc


def parse_sampling_params(params: Mapping[str, Any], prompt_len: int, limits: ServerLimits) -> SamplingSpec:
    """Validate a verl/vLLM ``sampling_params`` dict and resolve it against verl's defaults."""
    params = dict(params)  # never mutate the caller's dict (agent loops reuse theirs)
    unknown = set(params) - SUPPORTED_PARAMS - TEXT_ONLY_PARAMS - set(NEUTRAL_ONLY_PARAMS)
    if unknown:
        raise UnsupportedRequest(
            f"hfcpu does not know the sampling params {sorted(unknown)}; supported: {sorted(SUPPORTED_PARAMS)} "
            f"(text-only, ignored: {sorted(TEXT_ONLY_PARAMS)})"
        )
    for name, neutral in NEUTRAL_ONLY_PARAMS.items():
        if name in params and params[name] not in neutral:
            raise UnsupportedRequest(
                f"hfcpu does not implement sampling param {name}={params[name]!r} (only {neutral[0]!r} is accepted)"
            )

    n = params.get("n", 1)
    if n not in (None, 1):
        raise UnsupportedRequest(
            f"hfcpu returns one sequence per request (n=1), got n={n}. verl's agent loops sample "
            f"rollout.n responses as separate requests; do the same."
        )

    max_possible = limits.max_model_len - prompt_len
    if max_possible < 1:
        raise ValueError(
            f"Prompt length ({prompt_len}) leaves no room to generate within the model's maximum context "
            f"length ({limits.max_model_len}); need at least 1 token of headroom."
        )
    if params.get("max_tokens") is not None:
        max_tokens = int(params["max_tokens"])
    elif params.get("max_new_tokens") is not None:
        max_tokens = int(params["max_new_tokens"])
    else:
        max_tokens = min(limits.response_length, limits.prompt_length + limits.response_length - prompt_len)
    max_tokens = max(1, min(max_tokens, max_possible))

    temperature = float(_get(params, "temperature", 1.0))
    top_p = float(_get(params, "top_p", 1.0))
    top_k = int(_get(params, "top_k", -1))
    if temperature < 0:
        raise UnsupportedRequest(f"temperature must be >= 0, got {temperature}")
    if not 0.0 < top_p <= 1.0:
        raise UnsupportedRequest(f"top_p must be in (0, 1], got {top_p}")

    allowed = params.get("allowed_token_ids")
    if allowed is not None:
        allowed = _as_tuple_of_int(allowed, "allowed_token_ids")
        if not allowed:
            raise UnsupportedRequest("allowed_token_ids must not be empty")
        bad = [t for t in allowed if not 0 <= t < limits.vocab_size]
        if bad:
            raise UnsupportedRequest(f"allowed_token_ids out of vocabulary (size {limits.vocab_size}): {bad[:5]}")

    prompt_logprobs = params.get("prompt_logprobs")
    if prompt_logprobs is not None:
        prompt_logprobs = int(prompt_logprobs)
        if not 0 <= prompt_logprobs <= MAX_PROMPT_LOGPROBS:
            raise UnsupportedRequest(
                f"prompt_logprobs must be in [0, {MAX_PROMPT_LOGPROBS}] (vLLM's default max_logprobs), "
                f"got {prompt_logprobs}"
            )

    top_logprobs = params.get(TOP_LOGPROBS_KEY)
    if top_logprobs is not None:
        top_logprobs = int(top_logprobs)
        if not 1 <= top_logprobs <= MAX_PROMPT_LOGPROBS:
            raise UnsupportedRequest(f"{TOP_LOGPROBS_KEY} must be in [1, {MAX_PROMPT_LOGPROBS}], got {top_logprobs}")

    token_ids = params.get(TOKEN_IDS_KEY)
    if token_ids is not None:
        token_ids = _as_tuple_of_int(token_ids, TOKEN_IDS_KEY)
        # vLLM's checks (SamplingParams._validate_logprobs), with verl's mapping of a truthy
        # ``logprobs`` to 0 in front of them
        if len(token_ids) > MAX_TOKEN_IDS:
            raise UnsupportedRequest(f"{TOKEN_IDS_KEY} of length {len(token_ids)}, more than vLLM allows ({MAX_TOKEN_IDS})")
        bad = [t for t in token_ids if not 0 <= t < limits.vocab_size]
        if bad:
            raise UnsupportedRequest(f"{TOKEN_IDS_KEY} out of vocabulary (size {limits.vocab_size}): {bad[:5]}")
        if params.get("logprobs"):
            raise UnsupportedRequest(f"{TOKEN_IDS_KEY} with a truthy logprobs: verl sends vLLM logprobs=0, which vLLM "
                                     f"rejects (logprobs must be unset or equal len({TOKEN_IDS_KEY})); send logprobs=False")
        token_ids = token_ids or None

    seed = _get(params, "seed", limits.default_seed)
    stop = _as_tuple_of_str(params.get("stop"), "stop")
    if stop and not limits.stop_strings_allowed:
        raise UnsupportedRequest(
            f"stop strings {list(stop)} need a detokenizer, but actor_rollout_ref.rollout.skip_tokenizer_init=True "
            f"(verl's default): SGLang/TRT-LLM cannot match stop strings then (verl's vLLM server ignores the key). "
            f"Use stop_token_ids, or set actor_rollout_ref.rollout.skip_tokenizer_init=False."
        )
    return SamplingSpec(
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        stop=stop,
        stop_token_ids=_as_tuple_of_int(params.get("stop_token_ids"), "stop_token_ids"),
        ignore_eos=bool(_get(params, "ignore_eos", limits.ignore_eos)),
        allowed_token_ids=allowed,
        logprobs=bool(params.get("logprobs", False)),
        prompt_logprobs=prompt_logprobs,
        top_logprobs=top_logprobs,
        logprob_token_ids=token_ids,
        repetition_penalty=float(_get(params, "repetition_penalty", limits.repetition_penalty)),
        seed=None if seed is None else int(seed),
        ignored=tuple(sorted(set(params) & TEXT_ONLY_PARAMS)),
    )


# ---------------------------------------------------------------------------------------------
# Logits processing (one row at a time: requests in a batch have their own parameters)
# ---------------------------------------------------------------------------------------------


def request_seed(base: int, weights_version: int, prompt_ids: tuple[int, ...], occurrence: int) -> int:
    """A sampling seed for a request that brought none, from what the request *is* rather than when it came.

    ``occurrence`` counts the identical prompts served before it on the same weights, so the ``n``
    samples of one prompt differ while the set of samples a step draws does not depend on the order
    in which concurrent requests reached the server (agent loops send them all at once).

    >>> a = request_seed(0, 3, (1, 2, 3), 0)
    >>> a == request_seed(0, 3, (1, 2, 3), 0), a == request_seed(0, 3, (1, 2, 3), 1), a == request_seed(0, 4, (1, 2, 3), 0)
    (True, False, False)
    >>> 0 <= a < 2**63
    True
    """
    key = f"{base}|{weights_version}|{occurrence}|" + ",".join(map(str, prompt_ids))
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") >> 1


def apply_allowed_and_penalty(logits: torch.Tensor, spec: SamplingSpec, seen_ids: torch.Tensor) -> torch.Tensor:
    """vLLM steps before sampling: allowed-token whitelist, then repetition penalty. 1-D fp32 in/out."""
    logits = logits.float().clone()
    if spec.allowed_token_ids is not None:
        mask = torch.full_like(logits, float("-inf"))
        idx = torch.tensor(spec.allowed_token_ids, dtype=torch.long)
        mask[idx] = 0.0
        logits = logits + mask
    if spec.repetition_penalty != 1.0 and seen_ids.numel():
        ids = torch.unique(seen_ids)
        vals = logits[ids]
        logits[ids] = torch.where(vals > 0, vals / spec.repetition_penalty, vals * spec.repetition_penalty)
    return logits


def apply_top_k_top_p(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Mask (to -inf) what top-k, then top-p, exclude. Always keeps the most likely token."""
    if 0 < top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        before = torch.cumsum(probs, dim=-1) - probs  # mass strictly above each token
        drop_sorted = before >= top_p
        drop_sorted[0] = False
        drop = torch.zeros_like(drop_sorted)
        drop[order] = drop_sorted
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def choose_token(
    logits: torch.Tensor, spec: SamplingSpec, seen_ids: torch.Tensor, generator: Optional[torch.Generator]
) -> tuple[int, float]:
    """Pick the next token for one row; return (token_id, processed log-prob of that token)."""
    logits = apply_allowed_and_penalty(logits, spec, seen_ids)
    if spec.greedy:
        logprobs = torch.log_softmax(logits, dim=-1)
        token = int(torch.argmax(logits))
        return token, float(logprobs[token])
    logits = apply_top_k_top_p(logits / spec.temperature, spec.top_k, spec.top_p)
    logprobs = torch.log_softmax(logits, dim=-1)
    token = int(torch.multinomial(logprobs.exp(), 1, generator=generator))
    return token, float(logprobs[token])
