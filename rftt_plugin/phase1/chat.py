"""Chat calls for phase 1: messages in, text out, on top of any token-level backend.

Phase 1 talks to an instruct model with prompts (:mod:`rftt_plugin.phase1.prompt_templates`), while the
backends of :mod:`rftt_plugin.backends` speak token ids (so that phase 2 never re-tokenises).
:class:`BackendChat` bridges the two: it applies the model's own chat template locally
(``add_generation_prompt=True``), calls ``backend.generate`` and decodes the sampled ids.

Design choices:

* **The chat template is applied here, not by a server.** The same code path serves the ``hf``
  backend and an OpenAI-compatible ``/v1/completions`` server, and what the model saw is exactly
  reproducible from the tokenizer. (An OpenAI *chat* endpoint would apply the server's template,
  which may differ.)
* **Decoding skips special tokens**, so an end-of-turn id (``<|im_end|>``) never reaches the
  text; the functional tags of a prepared model are non-special and would survive, which the
  reply cleaning then rejects (a phase-1 step must not contain tags).
* **Failures come back as values** (:class:`Completion` with ``finish_reason="error"``), never
  as exceptions, for anything that goes wrong in one request (backend error, prompt longer than
  the context window): one bad request must not end a whole search. Exceptions that are not
  ``Exception`` (KeyboardInterrupt, cancellation) propagate.
* :class:`ChatModel` is a tiny protocol, so tests can script replies by request kind without a
  tokenizer (see ``tests/test_phase1.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

from rftt_plugin.backends.base import Backend, SamplingParams

__all__ = ["BackendChat", "ChatModel", "ChatParams", "Completion", "chat_ids"]


@dataclass(frozen=True)
class ChatParams:
    """Sampling of one chat reply. ``seed`` makes it reproducible on a deterministic backend."""

    max_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 1.0
    seed: int | None = None


@dataclass(frozen=True)
class Completion:
    """One reply. ``finish_reason``: ``stop`` (ended by itself), ``length`` (token limit) or
    ``error`` (``error`` says why)."""

    text: str
    finish_reason: str = "stop"
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @classmethod
    def failed(cls, message: str) -> "Completion":
        return cls("", "error", message)


@runtime_checkable
class ChatModel(Protocol):
    async def complete(self, messages: Sequence[Mapping[str, str]], params: ChatParams) -> Completion: ...


def chat_ids(tokenizer: Any, messages: Sequence[Mapping[str, str]]) -> list[int]:
    """Token ids of ``messages`` under the tokenizer's chat template, generation prompt added."""
    out = tokenizer.apply_chat_template([dict(m) for m in messages], add_generation_prompt=True, tokenize=True)
    # transformers 5 returns a BatchEncoding (dict-like); older versions a plain list.
    if isinstance(out, Mapping) or hasattr(out, "keys"):
        out = out["input_ids"]
    if out and isinstance(out[0], (list, tuple)):
        out = out[0]
    return [int(t) for t in out]


class BackendChat:
    """:class:`ChatModel` over a token-level :class:`~rftt_plugin.backends.base.Backend`."""

    def __init__(self, backend: Backend, tokenizer: Any, eos_ids: Sequence[int] | None = None):
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError("the tokenizer has no chat template; phase 1 prompts an instruct (chat) model")
        self.backend = backend
        self.tokenizer = tokenizer
        if eos_ids is None:
            eos = getattr(tokenizer, "eos_token_id", None)
            eos_ids = [eos] if isinstance(eos, int) else []
        self.eos_ids = frozenset(int(e) for e in eos_ids)

    async def complete(self, messages: Sequence[Mapping[str, str]], params: ChatParams) -> Completion:
        try:
            prompt = chat_ids(self.tokenizer, messages)
        except Exception as exc:  # noqa: BLE001 - a template failure is this request's error
            return Completion.failed(f"chat template: {type(exc).__name__}: {exc}")
        sampling = SamplingParams(max_tokens=params.max_tokens, temperature=params.temperature, top_p=params.top_p,
                                  stop_token_ids=tuple(self.eos_ids), seed=params.seed)
        try:
            gen = await self.backend.generate(prompt, sampling)
        except Exception as exc:  # noqa: BLE001
            return Completion.failed(f"{type(exc).__name__}: {exc}")
        if gen.finish_reason == "error":
            return Completion.failed(str(gen.stop_reason))
        ids = list(gen.token_ids)
        if gen.finish_reason in ("eos", "stop") and ids and ids[-1] in self.eos_ids:
            ids = ids[:-1]
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        reason = "length" if gen.finish_reason == "length" else "stop"
        return Completion(text, reason, None, len(prompt), len(gen.token_ids))
