"""Backend for an OpenAI-compatible ``/v1/completions`` server, written for ``vllm serve``.

Token ids go in and come out; no text is ever re-tokenised. What is relied on (vLLM's
completions API; every item marked GPU-check must be confirmed against the vLLM version in use):

* ``prompt`` as a list of token ids, or a list of such lists (one choice per prompt, matched
  back by ``choice.index``).
* Generation: ``logprobs=1`` + ``return_tokens_as_token_ids=true`` -> ``logprobs.tokens`` are
  ``"token_id:<id>"`` strings and ``logprobs.token_logprobs`` their log-probs. Sent as well:
  ``stop_token_ids``, ``stop``, ``top_k``, ``seed``, ``skip_special_tokens=false``,
  ``include_stop_str_in_output=true`` (affects the text only). Finish: ``length`` -> length;
  ``stop`` with ``stop_reason`` an int -> stop on that id, a string -> stop string, ``null`` ->
  EOS. [GPU-check] that the stop/EOS id is the last entry of ``tokens`` (vLLM keeps the stop
  token in ``token_ids``; it only hides it from the text), and which distribution the
  log-probs come from: vLLM V1 returns ``raw_logprobs`` (temperature 1) by default; start it
  with ``--logprobs-mode processed_logprobs`` to match the hf backend's temperature-scaled
  values.
* Tag probabilities, ``logprob_method``:

  ``auto`` (default): ``token_ids`` where the server accepts it, else ``prompt_logprobs`` for the
  rest of the backend's life; the first read-out announces the path on stderr and
  :attr:`OpenAIBackend.readout_path` keeps it.

  ``token_ids`` (exact, cached, one request for all candidates): ``prompt=context, max_tokens=1,
  logprobs=1, logprob_token_ids=[ids]`` with neutral sampling (temperature 1, top-p 1); the
  values are read from ``choices[0].logprobs.top_logprobs[0]`` (``"token_id:<id>"`` keys). vLLM's
  OpenAI endpoint accepts the field from 0.27.1 on (it requires ``logprobs`` set, and returns the
  listed ids instead of the top-k); 0.24.0 ignores it, so its answer lacks some ids: that is how a
  refusal is recognised (an HTTP 400 too). The request is an ordinary generate request on the
  context, so it reads the prefix cache (``prompt_logprobs`` requests skip it). Single-id
  candidates only: multi-id continuations (text mode) take the ``prompt_logprobs`` request.

  ``prompt_logprobs`` (exact, uncached): one request whose prompts are ``context + [candidate]``
  for every candidate, with ``prompt_logprobs=0`` and ``max_tokens=1``; the log-prob of the last
  prompt id is read from ``choice.prompt_logprobs[-1][str(id)]``. This is the full-vocabulary,
  temperature-1 log-prob, so it is exact; multi-token candidates (text mode) read the last
  ``len(candidate)`` entries. [GPU-check] cost: vLLM may skip its prefix cache for requests
  that ask for prompt log-probs, i.e. one full prefill per candidate.

  ``top_logprobs`` (approximate, cheap): one request ``prompt=context, max_tokens=1,
  logprobs=k`` (k <= the server's ``--max-logprobs``, 20 by default); candidates outside the
  top k get ``-inf`` (ranked last, in grammar order). [GPU-check] that the top-k log-probs are
  the raw distribution.

* Robustness: at most ``max_concurrency`` requests in flight (semaphore), per-request
  ``timeout_s``, retries with exponential backoff on transport errors, timeouts, 408/409/425/429
  and 5xx; other 4xx fail at once. A generation that still fails returns
  ``finish_reason="error"``; scoring raises :class:`OpenAIBackendError`.
* Padded vocabulary rows (checked on vLLM 0.27.1's CPU build): a checkpoint whose embedding
  matrix has more rows than the tokenizer has ids (Qwen2.5-style, or resized by
  ``rftt prepare-model``) lets plain ``vllm serve`` sample an id ``>= len(tokenizer)``; with
  log-probs on, vLLM's detokenizer then crashes (``TypeError: 'NoneType' object is not
  iterable``). verl's own vLLM server masks those ids; ``vllm serve`` does not. Pass
  ``banned_ids=out_of_vocab_ids(tokenizer, config)``: every request then carries
  ``logit_bias={id: -100}`` for them (vLLM clamps biases to [-100, 100] and validates ids
  against the model's rows). The bias is applied after vLLM computes its default
  ``raw_logprobs``, so reported log-probs do not change; it only keeps the padded ids from being
  sampled (a probability below ``e**-100`` relative to the rest). ``allowed_token_ids`` would
  be exact but sends ``len(tokenizer)`` ids with every request (~1 MB for a 150k vocabulary).
* No address is built in: ``base_url`` (e.g. ``http://localhost:8000/v1``) and ``model`` (the
  served model name) are required; ``api_key`` defaults to ``$OPENAI_API_KEY`` if set.
"""

from __future__ import annotations

import asyncio
import math
import os
import sys
from typing import Any, Sequence

from rftt_plugin.backends.base import TAG_READOUTS, BaseBackend, Generation, SamplingParams

TOKEN_IDS_KEY = "logprob_token_ids"  # vLLM's request field (OpenAI endpoints: 0.27.1+)
RETRY_STATUS = frozenset({408, 409, 425, 429})


class OpenAIBackendError(RuntimeError):
    """The server refused or kept failing a request."""


class TokenIdsRefused(OpenAIBackendError):
    """The server does not answer ``logprob_token_ids`` (refused it, or returned other ids)."""


def parse_token(token: str) -> int:
    """``"token_id:123"`` -> 123 (the ``return_tokens_as_token_ids`` format)."""
    if isinstance(token, int):
        return token
    if not token.startswith("token_id:"):
        raise OpenAIBackendError(f"token {token!r} is not 'token_id:<id>'; the server must honour "
                                 "return_tokens_as_token_ids (vLLM does)")
    return int(token.split(":", 1)[1])


def out_of_vocab_ids(tokenizer: Any, config: Any) -> list[int]:
    """Ids of embedding rows the tokenizer cannot produce: ``range(len(tokenizer), rows)``.

    ``config``: a transformers config (or a path to a checkpoint directory holding config.json).
    """
    if isinstance(config, (str, os.PathLike)):
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(config)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    rows = int(text.vocab_size)
    return list(range(len(tokenizer), rows))


def out_of_vocab_ids_at(path: str | os.PathLike) -> list[int]:
    """:func:`out_of_vocab_ids` for a checkpoint directory (tokenizer and config.json both there)."""
    from transformers import AutoTokenizer

    return out_of_vocab_ids(AutoTokenizer.from_pretrained(path), path)


def _entry_logprob(entry: Any) -> float:
    # vLLM serialises a prompt log-prob as {"logprob": x, "rank": r, "decoded_token": s}.
    if isinstance(entry, dict):
        return float(entry["logprob"])
    return float(entry)


class OpenAIBackend(BaseBackend):
    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, max_concurrency: int = 64,
                 timeout_s: float = 300.0, max_retries: int = 3, backoff_s: float = 0.5, backoff_max_s: float = 10.0,
                 logprob_method: str = "auto", top_logprobs: int = 20,
                 extra_body: dict[str, Any] | None = None, banned_ids: Sequence[int] = ()):
        if not base_url:
            raise ValueError("base_url is required, e.g. http://localhost:8000/v1")
        if logprob_method not in TAG_READOUTS:
            raise ValueError(f"logprob_method must be one of {TAG_READOUTS}")
        self.url = base_url.rstrip("/") + "/completions"
        self.model = model
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.max_concurrency = max_concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.logprob_method = logprob_method
        # the read-out actually used: "token_ids" / "prompt_logprobs" / "top_logprobs" (None until the
        # first read-out under "auto"); refusal_reason says why "auto" left token_ids
        self.readout_path: str | None = None
        self.refusal_reason: str | None = None
        self.top_k_logprobs = top_logprobs
        self.extra_body = dict(extra_body or {})
        # padded rows (see the module docstring): never sampled, not even by read-out requests
        self.logit_bias = {str(int(i)): -100.0 for i in banned_ids}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client = None
        self._gate: asyncio.Semaphore | None = None
        self.requests = 0  # HTTP requests sent, retries included

    # -- HTTP ------------------------------------------------------------------------------------
    def _bind(self) -> None:
        # httpx clients and semaphores belong to one event loop; rebuild them for a new one.
        import httpx

        loop = asyncio.get_running_loop()
        if self._loop is loop and self._client is not None:
            return
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        limits = httpx.Limits(max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency)
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout_s), headers=headers, limits=limits)
        self._gate = asyncio.Semaphore(self.max_concurrency)
        self._loop = loop

    async def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        import httpx

        self._bind()
        body = {"model": self.model, **self.extra_body, **payload}
        if self.logit_bias:
            body["logit_bias"] = {**self.logit_bias, **(body.get("logit_bias") or {})}
        last: str = ""
        async with self._gate:  # type: ignore[union-attr]
            for attempt in range(self.max_retries + 1):
                if attempt:
                    await asyncio.sleep(min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1)))
                self.requests += 1
                try:
                    resp = await self._client.post(self.url, json=body)  # type: ignore[union-attr]
                except (httpx.TransportError, httpx.TimeoutException) as exc:
                    last = f"{type(exc).__name__}: {exc}"
                    continue
                if resp.status_code == 200:
                    return resp.json()
                last = f"HTTP {resp.status_code}: {resp.text[:500]}"
                if resp.status_code not in RETRY_STATUS and resp.status_code < 500:
                    break
        raise OpenAIBackendError(f"{self.url}: {last}")

    # -- protocol --------------------------------------------------------------------------------
    async def generate(self, context_ids: Sequence[int], params: SamplingParams) -> Generation:
        if params.max_tokens == 0:
            return Generation([], [], "length")
        payload: dict[str, Any] = {
            "prompt": [int(t) for t in context_ids],
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "logprobs": 1,
            "return_tokens_as_token_ids": True,
            "skip_special_tokens": False,
            "spaces_between_special_tokens": False,
            "include_stop_str_in_output": True,
        }
        if params.top_k and params.top_k > 0:
            payload["top_k"] = params.top_k
        if params.seed is not None:
            payload["seed"] = params.seed
        if params.stop:
            payload["stop"] = list(params.stop)
        if params.stop_token_ids:
            payload["stop_token_ids"] = list(params.stop_token_ids)
        try:
            data = await self._post(payload)
            return self._parse_generation(data["choices"][0], params)
        except (OpenAIBackendError, KeyError, IndexError, TypeError, ValueError) as exc:
            return Generation.failed(f"{type(exc).__name__}: {exc}")

    def _parse_generation(self, choice: dict[str, Any], params: SamplingParams) -> Generation:
        lp = choice.get("logprobs") or {}
        tokens = lp.get("tokens")
        if tokens is None:
            raise OpenAIBackendError("the response has no logprobs.tokens")
        ids = [parse_token(t) for t in tokens]
        lps = [float(x) if x is not None else 0.0 for x in lp.get("token_logprobs") or []]
        reason, stop = choice.get("finish_reason"), choice.get("stop_reason")
        if reason == "length":
            return Generation(ids, lps, "length")
        if reason != "stop":
            return Generation(ids, lps, "error", f"finish_reason {reason!r}")
        if isinstance(stop, int):
            return Generation(ids, lps, "stop", stop)
        if isinstance(stop, str):
            return Generation(ids, lps, "stop", stop)
        # stop_reason null: EOS. A server that reports stop ids only through finish_reason
        # still gets classified by the last id.
        if ids and ids[-1] in params.stop_token_ids:
            return Generation(ids, lps, "stop", ids[-1])
        return Generation(ids, lps, "eos")

    async def next_token_logprobs(self, context_ids: Sequence[int], candidate_ids: Sequence[int]) -> list[float]:
        ctx = [int(t) for t in context_ids]
        cands = [int(c) for c in candidate_ids]
        if not cands:
            return []
        if self.logprob_method == "top_logprobs":
            self._use("top_logprobs")
            top = await self.top_logprobs(ctx, self.top_k_logprobs)
            return [top.get(c, -math.inf) for c in cands]
        if self._try_token_ids():
            try:
                values = await self.token_id_logprobs(ctx, cands)
            except TokenIdsRefused as exc:
                if self.logprob_method == "token_ids":
                    raise
                self._use("prompt_logprobs", f"{exc}")
            else:
                self._use("token_ids")
                return values
        return await self._prompt_logprobs_scores(ctx, [[c] for c in cands])

    def _try_token_ids(self) -> bool:
        return self.logprob_method == "token_ids" or (self.logprob_method == "auto"
                                                      and self.readout_path in (None, "token_ids"))

    def _use(self, path: str, reason: str | None = None) -> None:
        """Record which read-out this backend uses; under ``auto``, also say it once on stderr."""
        if self.readout_path == path:
            return
        self.readout_path, self.refusal_reason = path, reason
        if self.logprob_method != "auto":
            return
        why = f" (the server refused {TOKEN_IDS_KEY}: {reason})" if reason else ""
        print(f"[rftt_plugin] openai backend: tag read-out via {path}{why}", file=sys.stderr, flush=True)

    async def token_id_logprobs(self, context_ids: Sequence[int], candidate_ids: Sequence[int]) -> list[float]:
        """One request on the context: every candidate's log-prob at the next position (see the module docstring)."""
        cands = [int(c) for c in candidate_ids]
        if len(set(cands)) != len(cands) or len(cands) > 128:
            raise ValueError(f"{TOKEN_IDS_KEY} needs at most 128 distinct ids, got {cands}")
        try:
            data = await self._post({"prompt": [int(t) for t in context_ids], "max_tokens": 1, "temperature": 1.0,
                                     "top_p": 1.0, "logprobs": 1, TOKEN_IDS_KEY: cands,
                                     "return_tokens_as_token_ids": True})
        except OpenAIBackendError as exc:
            if "HTTP 400" in str(exc) or "HTTP 422" in str(exc):  # validation errors: the field is not served
                raise TokenIdsRefused(str(exc)) from exc
            raise
        top = ((data["choices"][0].get("logprobs") or {}).get("top_logprobs") or [None])[0] or {}
        values = {parse_token(t): float(v) for t, v in top.items()}
        missing = [c for c in cands if c not in values]
        if missing:
            raise TokenIdsRefused(f"its answer lacks the asked ids {missing[:8]} (a server that ignores the field)")
        return [values[c] for c in cands]

    async def sequence_logprobs(self, context_ids: Sequence[int], candidates: Sequence[Sequence[int]]) -> list[float]:
        if self.logprob_method == "top_logprobs":
            return await super().sequence_logprobs(context_ids, candidates)
        if candidates and all(len(c) == 1 for c in candidates) and self._try_token_ids():
            firsts = [int(c[0]) for c in candidates]
            distinct = sorted(set(firsts))
            table = dict(zip(distinct, await self.next_token_logprobs(context_ids, distinct)))
            return [table[t] for t in firsts]
        return await self._prompt_logprobs_scores(context_ids, candidates)

    async def _prompt_logprobs_scores(self, context_ids: Sequence[int],
                                      candidates: Sequence[Sequence[int]]) -> list[float]:
        ctx = [int(t) for t in context_ids]
        cands = [[int(t) for t in c] for c in candidates]
        if any(not c for c in cands):
            raise ValueError("empty candidate continuation")
        if not cands:
            return []
        if self.readout_path is None:
            self._use("prompt_logprobs")
        data = await self._post({"prompt": [ctx + c for c in cands], "max_tokens": 1, "temperature": 0.0,
                                 "prompt_logprobs": 0})
        choices = sorted(data["choices"], key=lambda ch: ch.get("index", 0))
        if len(choices) != len(cands):
            raise OpenAIBackendError(f"{len(choices)} choices for {len(cands)} prompts")
        out = []
        for choice, cand in zip(choices, cands):
            plp = choice.get("prompt_logprobs")
            if not plp or len(plp) < len(ctx) + len(cand):
                raise OpenAIBackendError("the server returned no prompt_logprobs (vLLM supports them)")
            total = 0.0
            for k, tok in enumerate(cand):
                entry = plp[len(ctx) + k]
                if entry is None or str(tok) not in entry:
                    raise OpenAIBackendError(f"prompt log-prob of id {tok} missing")
                total += _entry_logprob(entry[str(tok)])
            out.append(total)
        return out

    async def top_logprobs(self, context_ids: Sequence[int], k: int) -> dict[int, float]:
        data = await self._post({"prompt": [int(t) for t in context_ids], "max_tokens": 1, "temperature": 0.0,
                                 "logprobs": k, "return_tokens_as_token_ids": True})
        top = ((data["choices"][0].get("logprobs") or {}).get("top_logprobs") or [None])[0]
        if not top:
            raise OpenAIBackendError("the server returned no top_logprobs")
        return {parse_token(t): float(v) for t, v in top.items()}

    async def aclose(self) -> None:
        if self._client is not None and self._loop is asyncio.get_running_loop():
            await self._client.aclose()
        self._client = None
        self._loop = None
