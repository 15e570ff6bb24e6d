"""The tag read-out in one cached request: vLLM's ``SamplingParams.logprob_token_ids`` (issue 28).

vLLM (0.24.0 -- verl 0.9.1's pin --, 0.27.1, 0.32.0) returns, for a request carrying
``logprob_token_ids=[ids]``, the log-prob of each listed id at the first generated position. The
request is an ordinary generate request on the context itself, so it reads the prefix cache, and
one request serves every candidate tag: P(tag | context) for all tags in one round trip, no
renormalisation, no anchor (compare :func:`~rftt_plugin.integration.server_backend.read_tag_logprobs_cached`,
two requests per expansion).

Contract with the rollout server (the plugin's subclass of verl's vLLM server,
:mod:`rftt_plugin.integration.vllm_readout`, and the CPU ``hfcpu`` server): a request whose
``sampling_params`` carry ``logprob_token_ids`` comes back with
``extra_fields["token_id_logprobs"] = {"ids": [...], "logprobs": [...]}``, the ids in the order
asked. verl's stock vLLM server passes the field on to vLLM but drops the values (it returns
sampled-token log-probs only): the field is then missing and the read-out is refused
(:class:`TokenIdsReadoutUnsupported`), which ``auto`` turns into a fall-back.

What the request must look like (vLLM's rules, checked on 0.27.1):

* ``logprobs`` falsy: verl maps it to ``None``; vLLM rejects any ``logprobs`` other than unset or
  ``len(ids)``, and verl would send 0;
* neutral sampling (temperature 1, top-p 1, top-k off, no penalties, no ``allowed_token_ids``):
  under verl's ``logprobs_mode=processed_logprobs`` the values are the processed distribution,
  which then equals the raw full-vocabulary softmax (after verl's OOV mask);
* at most 128 ids, each below the model's vocabulary size; the ranks vLLM returns are placeholders.

Trap (vLLM's sampler, measured): when any request in an engine step carries ``logprob_token_ids``,
the id-gathered log-probs are used for the whole batch, so a neighbour asking ``logprobs=k > 0``
(a top-k read-out) gets wrong values. Neighbours asking ``logprobs=0`` -- every rollout request
verl sends -- are unaffected. Hence the server subclass refuses to serve both kinds of read-out.
"""

from __future__ import annotations

from typing import Any, Sequence

TOKEN_IDS_KEY = "logprob_token_ids"     # vLLM's own SamplingParams field
RESULT_FIELD = "token_id_logprobs"      # extra_fields key the plugin's servers answer with
MAX_TOKEN_IDS = 128                     # vLLM's limit


class TokenIdsReadoutUnsupported(RuntimeError):
    """The rollout server did not return ``extra_fields["token_id_logprobs"]``."""


def token_ids_sampling_params(candidate_ids: Sequence[int]) -> dict[str, Any]:
    """The read-out request's ``sampling_params`` (see the module docstring for why each value).

    No seed: vLLM 0.27.1's CPU build kills the engine when a seeded request's prefill is chunked,
    and the one sampled token is discarded anyway.
    """
    return {"max_tokens": 1, "temperature": 1.0, "top_p": 1.0, "top_k": -1, "repetition_penalty": 1.0,
            "logprobs": False, TOKEN_IDS_KEY: [int(c) for c in candidate_ids]}


def check_candidates(candidate_ids: Sequence[int]) -> list[int]:
    candidates = [int(c) for c in candidate_ids]
    if not candidates:
        raise ValueError("tag read-out needs at least one candidate id")
    if len(set(candidates)) != len(candidates):
        raise ValueError(f"candidate ids must be distinct, got {candidates}")
    if len(candidates) > MAX_TOKEN_IDS:
        raise ValueError(f"{TOKEN_IDS_KEY} takes at most {MAX_TOKEN_IDS} ids (vLLM's limit), got {len(candidates)}")
    if min(candidates) < 0:
        raise ValueError(f"candidate ids must be >= 0, got {candidates}")
    return candidates


def parse_token_id_logprobs(extra_fields: dict | None, candidates: Sequence[int]) -> list[float]:
    """The values of a server's answer, in the order of ``candidates``."""
    found = (extra_fields or {}).get(RESULT_FIELD)
    if found is None:
        raise TokenIdsReadoutUnsupported(f"the rollout server ignored {TOKEN_IDS_KEY} (no extra_fields"
                                         f"[{RESULT_FIELD!r}]; verl's stock vLLM server drops the values)")
    ids, lps = [int(i) for i in found["ids"]], [float(x) for x in found["logprobs"]]
    if ids != list(candidates) or len(lps) != len(ids):
        raise RuntimeError(f"the server's {RESULT_FIELD} has ids {ids} ({len(lps)} values) for the asked ids "
                           f"{list(candidates)}")
    return lps


async def read_tag_logprobs_token_ids(server_manager: Any, request_id: str, context_ids: Sequence[int],
                                      candidate_ids: Sequence[int]) -> list[float]:
    """log P(candidate | context) for single-id candidates in one generate request on the context.

    Full-vocabulary softmax at temperature 1 (after verl's OOV mask on verl's servers): the same
    numbers as :func:`~rftt_plugin.integration.server_backend.read_tag_logprobs`.
    """
    context = [int(t) for t in context_ids]
    if not context:
        raise ValueError("tag read-out needs a non-empty context")
    candidates = check_candidates(candidate_ids)
    out = await server_manager.generate(request_id=request_id, prompt_ids=context,
                                        sampling_params=token_ids_sampling_params(candidates))
    return parse_token_id_logprobs(out.extra_fields, candidates)
