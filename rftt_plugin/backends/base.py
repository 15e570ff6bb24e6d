"""The one small async protocol every LLM backend implements.

A backend answers three questions about a causal LM, always in token ids (nothing here ever
re-tokenises text):

* :meth:`Backend.next_token_logprobs` -- log P(candidate | context) for single candidate tokens
  at the next position, normalised over the **full** vocabulary (not over the candidates), at
  temperature 1: this is the policy's own distribution, used to rank functional tags.
* :meth:`Backend.sequence_logprobs` -- log P(continuation | context) for multi-token
  continuations (sum of the per-token log-probs); used for tags written as plain text.
* :meth:`Backend.generate` -- sample a continuation with :class:`SamplingParams` and return the
  sampled ids with their log-probs (:class:`Generation`).

Finish reasons (:data:`FINISH_REASONS`):

``stop``   a token of ``stop_token_ids`` was sampled (``stop_reason`` = that id, the id is the
           last entry of ``token_ids``) or the decoded text now contains a string of ``stop``
           (``stop_reason`` = that string; ``token_ids`` end with the token that completed it,
           which may carry characters beyond the stop string).
``eos``    the model's end-of-sequence id was sampled (it is the last entry of ``token_ids``).
``length`` ``max_tokens`` (or the model's context window) was reached.
``error``  the backend failed for this request; ``stop_reason`` carries the message. Backends
           return this instead of raising where they can, so one bad request never takes down
           the other requests of a batch.

Backends must be safe to call from many asyncio tasks at once; batching across concurrent
requests is the backend's business.
"""

from __future__ import annotations

import abc
import asyncio
from dataclasses import dataclass, field, replace
from typing import Protocol, Sequence, runtime_checkable

FINISH_REASONS = ("stop", "length", "eos", "error")
# How a server-backed backend reads the log-probs of the candidate tag ids after a context
# (rftt.tag_readout for the agent loop's server, --logprob-method for an OpenAI server).
TAG_READOUTS = ("auto", "token_ids", "top_logprobs", "prompt_logprobs")


@dataclass(frozen=True)
class SamplingParams:
    """How to sample one continuation.

    ``temperature == 0`` means greedy. ``top_p`` = 1 and ``top_k`` <= 0 disable those filters.
    ``seed`` makes the sample reproducible for a deterministic backend (None: the backend's
    own stream).
    """

    max_tokens: int = 512
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    stop_token_ids: tuple[int, ...] = ()
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_tokens < 0:
            raise ValueError(f"max_tokens must be >= 0, got {self.max_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        # Tuples keep the params hashable and immutable even when callers pass lists.
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))
        object.__setattr__(self, "stop", tuple(str(s) for s in self.stop))

    def with_(self, **changes) -> "SamplingParams":
        return replace(self, **changes)


@dataclass
class Generation:
    """A sampled continuation: ids, the log-prob of each id, and why it ended."""

    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: str = "length"
    stop_reason: int | str | None = None

    def __post_init__(self) -> None:
        if self.finish_reason not in FINISH_REASONS:
            raise ValueError(f"finish_reason must be one of {FINISH_REASONS}, got {self.finish_reason!r}")
        if len(self.token_ids) != len(self.logprobs):
            raise ValueError(f"{len(self.token_ids)} token ids but {len(self.logprobs)} log-probs")

    @classmethod
    def failed(cls, message: str) -> "Generation":
        return cls([], [], "error", message)


@runtime_checkable
class Backend(Protocol):
    """Structural type of a backend (see the module docstring for the semantics)."""

    async def next_token_logprobs(self, context_ids: Sequence[int], candidate_ids: Sequence[int]) -> list[float]: ...

    async def sequence_logprobs(self, context_ids: Sequence[int], candidates: Sequence[Sequence[int]]) -> list[float]: ...

    async def generate(self, context_ids: Sequence[int], params: SamplingParams) -> Generation: ...

    async def aclose(self) -> None: ...


class BaseBackend(abc.ABC):
    """Convenience base: a default :meth:`sequence_logprobs` built on :meth:`next_token_logprobs`.

    The default scores a continuation ``c`` as ``sum_i log P(c_i | context + c_<i)``, asking
    for all positions of all candidates concurrently and sharing identical queries (candidates
    usually share their first pieces, e.g. ``<`` of every tag). Backends that can score a whole
    sequence in one forward pass override it.
    """

    @abc.abstractmethod
    async def next_token_logprobs(self, context_ids: Sequence[int], candidate_ids: Sequence[int]) -> list[float]:
        raise NotImplementedError

    @abc.abstractmethod
    async def generate(self, context_ids: Sequence[int], params: SamplingParams) -> Generation:
        raise NotImplementedError

    async def sequence_logprobs(self, context_ids: Sequence[int], candidates: Sequence[Sequence[int]]) -> list[float]:
        context = list(context_ids)
        # One query per distinct prefix, asking for every next id any candidate needs there.
        wanted: dict[tuple[int, ...], set[int]] = {}
        for cand in candidates:
            if not cand:
                raise ValueError("empty candidate continuation")
            for i, tok in enumerate(cand):
                wanted.setdefault(tuple(cand[:i]), set()).add(int(tok))
        prefixes = list(wanted)
        answers = await asyncio.gather(*(
            self.next_token_logprobs(context + list(p), sorted(wanted[p])) for p in prefixes))
        table = {p: dict(zip(sorted(wanted[p]), lps)) for p, lps in zip(prefixes, answers)}
        return [sum(table[tuple(cand[:i])][int(tok)] for i, tok in enumerate(cand)) for cand in candidates]

    async def aclose(self) -> None:
        """Release resources (HTTP clients, worker threads). Idempotent."""

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()
