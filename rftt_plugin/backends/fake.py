"""A scripted, deterministic backend for tests and benchmarks (no model, no torch).

The fake is a real (if silly) language model over a small synthetic vocabulary, so every
contract of :mod:`rftt_plugin.backends.base` holds exactly:

* The next-token distribution at a context is ``softmax(noise + bias)``: ``noise`` is a fixed
  pseudo-random Gaussian vector keyed by ``(seed, last 8 context ids)`` and ``bias`` comes from a
  pluggable ``logit_bias(context) -> {id: extra logit}`` (this is how tag distributions are
  scripted). :meth:`FakeBackend.next_token_logprobs` reads it.
* :meth:`FakeBackend.generate` either *samples* from that distribution (temperature / top-k /
  top-p, seeded) or, when a ``writer(context, params, rng) -> ids`` is given, emits the scripted
  ids ("teacher forcing"); in both cases the log-prob of each id is read from the same
  distribution divided by the temperature, exactly as the hf backend reports it, and generation
  ends by the shared :class:`~rftt_plugin.backends.stopping.StopChecker` rules. A writer that
  runs out of ids without a stop hands over to sampling.
* ``latency_s`` (per call) and ``latency_per_token_s`` (per generated id) are awaited with
  ``asyncio.sleep``: concurrent calls overlap as they would on a server with spare capacity.
* ``inject(kind, context) -> None | "raise" | "error"`` injects failures: ``raise`` raises
  :class:`FakeBackendError`, ``error`` returns a ``finish_reason="error"`` generation.

:class:`FakeVocab` is the synthetic vocabulary (ids for the 16 functional tags, newline, EOS,
digits, ``\\boxed{``, filler words) with ``decode`` and a chat-template-like ``prompt_ids``, and
:class:`TagScript` is a writer + logit bias that behaves like a tag-trained policy: it prefers
plausible successor tags, ends steps with the matching closing tag, boxes an answer in
``<output>`` steps (the right one with a fixed per-path probability), and can be told to fail
in specific ways for specific tags.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from rftt_plugin.backends.base import BaseBackend, Generation, SamplingParams
from rftt_plugin.backends.stopping import StopChecker
from rftt_plugin.tokens import TAGS, FunctionalTag

LogitBias = Callable[[Sequence[int]], Mapping[int, float]]
Writer = Callable[[Sequence[int], SamplingParams, random.Random], Sequence[int]]
Injector = Callable[[str, Sequence[int]], "str | None"]


class FakeBackendError(RuntimeError):
    """Raised by the fake backend when a failure of kind ``raise`` is injected."""


def _key(*parts) -> int:
    """A stable 64-bit hash (Python's hash() is salted per process)."""
    h = hashlib.blake2b(repr(parts).encode(), digest_size=8)
    return int.from_bytes(h.digest(), "little")


# --------------------------------------------------------------------------------------------
# Synthetic vocabulary
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FakeVocab:
    """Ids: 0 pad, 1 ``<|im_start|>``, 2 ``<|im_end|>`` (EOS), 3 newline, 4..11 opening tags,
    12..19 closing tags (in ``TAGS`` order), 20..29 digits, 30 ``\\boxed{``, 31 ``}``,
    32.. filler words ``w32 `` ... up to ``vocab_size - 1``."""

    vocab_size: int = 128

    PAD = 0
    IM_START = 1
    EOS = 2
    NEWLINE = 3
    OPEN0 = 4
    CLOSE0 = 12
    DIGIT0 = 20
    BOXED = 30
    RBRACE = 31
    WORD0 = 32

    def __post_init__(self) -> None:
        if self.vocab_size < self.WORD0 + 8:
            raise ValueError(f"vocab_size must be >= {self.WORD0 + 8}")

    @property
    def eos_id(self) -> int:
        return self.EOS

    @property
    def newline_ids(self) -> tuple[int, ...]:
        return (self.NEWLINE,)

    @property
    def open_ids(self) -> dict[FunctionalTag, tuple[int, ...]]:
        return {t: (self.OPEN0 + i,) for i, t in enumerate(TAGS)}

    @property
    def close_ids(self) -> dict[FunctionalTag, tuple[int, ...]]:
        return {t: (self.CLOSE0 + i,) for i, t in enumerate(TAGS)}

    @property
    def word_ids(self) -> range:
        return range(self.WORD0, self.vocab_size)

    def tag_of_open(self, token_id: int) -> FunctionalTag | None:
        i = token_id - self.OPEN0
        return TAGS[i] if 0 <= i < len(TAGS) else None

    def tag_of_close(self, token_id: int) -> FunctionalTag | None:
        i = token_id - self.CLOSE0
        return TAGS[i] if 0 <= i < len(TAGS) else None

    def piece(self, token_id: int) -> str:
        t = int(token_id)
        if not 0 <= t < self.vocab_size:
            raise ValueError(f"token id {t} outside the fake vocabulary (size {self.vocab_size})")
        fixed = {self.PAD: "<pad>", self.IM_START: "<|im_start|>", self.EOS: "<|im_end|>",
                 self.NEWLINE: "\n", self.BOXED: "\\boxed{", self.RBRACE: "}"}
        if t in fixed:
            return fixed[t]
        if self.tag_of_open(t) is not None:
            return self.tag_of_open(t).open
        if self.tag_of_close(t) is not None:
            return self.tag_of_close(t).close
        if self.DIGIT0 <= t < self.DIGIT0 + 10:
            return str(t - self.DIGIT0)
        return f"w{t} "

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.piece(t) for t in ids)

    def encode_number(self, text: str) -> list[int]:
        return [self.DIGIT0 + int(c) for c in text if c.isdigit()]

    def prompt_ids(self, question: str) -> list[int]:
        """A chat-template look-alike: ``<|im_start|>`` user words ``<|im_end|>`` ``<|im_start|>``
        + newline; the user words are a deterministic function of the question."""
        n_words = self.vocab_size - self.WORD0
        words = [self.WORD0 + (_key("q", w) % n_words) for w in question.split()] or [self.WORD0]
        return [self.IM_START, *words, self.EOS, self.NEWLINE, self.IM_START, self.NEWLINE]

    def apply_chat_template(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True,
                            tokenize: bool = True, **_: object) -> list[int]:
        """The tokenizer method :func:`rftt_plugin.chat_prompt.chat_prompt_ids` calls, so that the
        fake vocabulary can stand in for a tokenizer where prompts are built: one user turn ->
        :meth:`prompt_ids` of its content."""
        if not (tokenize and add_generation_prompt) or len(messages) != 1 or messages[0].get("role") != "user":
            raise ValueError("the fake vocabulary templates one user turn, tokenized, with the generation prompt")
        return self.prompt_ids(messages[0]["content"])


# --------------------------------------------------------------------------------------------
# A tag-aware script that behaves like a trained RFTT policy
# --------------------------------------------------------------------------------------------

_T = FunctionalTag
# Extra logits for the next tag given the previous one (None = root): a trained model's habits.
DEFAULT_TAG_PREFERENCES: dict[FunctionalTag | None, dict[FunctionalTag, float]] = {
    None: {_T.ANALYZE: 6.0, _T.NEXT_STEP: 5.5, _T.CLARIFY: 4.5, _T.SUBQUESTION: 3.5},
    _T.CLARIFY: {_T.ANALYZE: 6.0, _T.NEXT_STEP: 5.0, _T.SUBQUESTION: 4.0, _T.DIRECT_ANSWER: 3.0},
    _T.ANALYZE: {_T.NEXT_STEP: 6.0, _T.SUBQUESTION: 4.5, _T.DIRECT_ANSWER: 4.0},
    _T.SUBQUESTION: {_T.NEXT_STEP: 6.0, _T.DIRECT_ANSWER: 4.0},
    _T.NEXT_STEP: {_T.NEXT_STEP: 6.0, _T.DIRECT_ANSWER: 4.5, _T.OUTPUT: 3.5, _T.VERIFY: 3.5, _T.SUBQUESTION: 2.0},
    _T.DIRECT_ANSWER: {_T.OUTPUT: 7.0, _T.VERIFY: 4.0},
    _T.VERIFY: {_T.OUTPUT: 5.5, _T.REFINE: 5.0, _T.NEXT_STEP: 4.0, _T.DIRECT_ANSWER: 3.0, _T.VERIFY: 1.0, _T.SUBQUESTION: 1.0},
    _T.REFINE: {_T.OUTPUT: 5.5, _T.DIRECT_ANSWER: 4.5, _T.NEXT_STEP: 3.0, _T.VERIFY: 2.0, _T.SUBQUESTION: 1.0},
}
del _T

FAILURE_MODES = ("eos", "no_close", "empty", "wrong_close", "error", "raise")


@dataclass
class TagScript:
    """Writer + logit bias + failure injector for :class:`FakeBackend` over a :class:`FakeVocab`.

    The state of a context is read from its ids: the last opening-tag id is the step being
    written (or the previous step when a tag is being chosen), the number of opening-tag ids is
    the depth. ``step_words`` (or ``step_words_by_tag``) bounds the words of a step.
    ``next_step_decay`` lowers the next_step preference per step of depth so that
    paths end; ``p_correct`` is the chance that an ``<output>`` step boxes ``answer`` (decided
    by a hash of the context, so it is deterministic per path). ``failures`` maps a tag to one
    of :data:`FAILURE_MODES`; ``fail_when(context, tag, depth)`` may return one per call.
    """

    vocab: FakeVocab = field(default_factory=FakeVocab)
    preferences: Mapping[FunctionalTag | None, Mapping[FunctionalTag, float]] = field(
        default_factory=lambda: DEFAULT_TAG_PREFERENCES)
    next_step_decay: float = 0.6
    step_words: tuple[int, int] = (4, 24)
    step_words_by_tag: Mapping[FunctionalTag, tuple[int, int]] = field(default_factory=dict)
    answer: str = "7"
    wrong_answer: str = "8"
    p_correct: float = 0.5
    failures: Mapping[FunctionalTag, str] = field(default_factory=dict)
    fail_when: Callable[[Sequence[int], FunctionalTag, int], "str | None"] | None = None

    def __post_init__(self) -> None:
        bad = {m for m in self.failures.values() if m not in FAILURE_MODES}
        if bad:
            raise ValueError(f"unknown failure modes {sorted(bad)}; choose from {FAILURE_MODES}")

    # -- reading a context --------------------------------------------------------------------
    def state(self, context: Sequence[int]) -> tuple[FunctionalTag | None, int]:
        """(last opened tag or None, number of steps opened) in ``context``."""
        ids = np.asarray(context, dtype=np.int64)  # vectorised: this runs once per generated id
        opens = ids[(ids >= self.vocab.OPEN0) & (ids < self.vocab.OPEN0 + len(TAGS))]
        if not len(opens):
            return None, 0
        return self.vocab.tag_of_open(int(opens[-1])), int(len(opens))

    def _failure(self, context: Sequence[int]) -> str | None:
        tag, depth = self.state(context)
        if tag is None:
            return None
        if self.fail_when is not None:
            mode = self.fail_when(context, tag, depth)
            if mode is not None:
                return mode
        return self.failures.get(tag)

    # -- hooks for FakeBackend ------------------------------------------------------------------
    def logit_bias(self, context: Sequence[int]) -> dict[int, float]:
        prev, depth = self.state(context)
        prefs = dict(self.preferences.get(prev, {}))
        if FunctionalTag.NEXT_STEP in prefs:
            prefs[FunctionalTag.NEXT_STEP] -= self.next_step_decay * depth
        opens = self.vocab.open_ids
        return {opens[tag][0]: bonus for tag, bonus in prefs.items()}

    def inject(self, kind: str, context: Sequence[int]) -> str | None:
        if kind != "generate":
            return None
        mode = self._failure(context)
        return mode if mode in ("error", "raise") else None

    def write(self, context: Sequence[int], params: SamplingParams, rng: random.Random) -> list[int]:
        tag, _ = self.state(context)
        v = self.vocab
        if tag is None:  # not inside a step: just some words, then EOS
            return [rng.choice(v.word_ids) for _ in range(3)] + [v.EOS]
        low, high = self.step_words_by_tag.get(tag, self.step_words)
        words = [rng.choice(v.word_ids) for _ in range(rng.randint(low, high))]
        close = v.close_ids[tag][0]
        mode = self._failure(context)
        if mode == "eos":
            return words[:2] + [v.EOS]
        if mode == "no_close":
            return words * (params.max_tokens // max(1, len(words)) + 2)
        if mode == "empty":
            return [close]
        if mode == "wrong_close":
            other = next(t for t in TAGS if t is not tag)
            return words + [v.NEWLINE, v.close_ids[other][0]]
        if tag is FunctionalTag.OUTPUT:
            correct = (_key("answer", tuple(context)) % 10_000) < self.p_correct * 10_000
            boxed = [v.BOXED, *v.encode_number(self.answer if correct else self.wrong_answer), v.RBRACE]
            words = words[:4] + boxed
        return words + [v.NEWLINE, close]

    def grade(self, response_text: str) -> float:
        """The reward rule on fake text: 1 if the last <output> boxes ``answer``, 0.1 if it
        boxes something else, 0 if no output."""
        from rftt_plugin.tokens import final_answer_block

        block = final_answer_block(response_text)
        if block is None or "\\boxed{" not in block:
            return 0.0
        boxed = block.rsplit("\\boxed{", 1)[1].split("}", 1)[0]
        return 1.0 if boxed == self.answer else 0.1


# --------------------------------------------------------------------------------------------
# The backend
# --------------------------------------------------------------------------------------------

class FakeBackend(BaseBackend):
    """Deterministic scripted backend; see the module docstring."""

    def __init__(self, vocab_size: int = 128, *, eos_ids: Sequence[int] = (FakeVocab.EOS,), seed: int = 0,
                 noise_scale: float = 1.0, logit_bias: LogitBias | None = None, writer: Writer | None = None,
                 inject: Injector | None = None, decode: Callable[[Sequence[int]], str] | None = None,
                 latency_s: float = 0.0, latency_per_token_s: float = 0.0, context_window: int = 1 << 20):
        self.vocab_size = int(vocab_size)
        self.eos_ids = tuple(int(e) for e in eos_ids)
        self.seed = seed
        self.noise_scale = noise_scale
        self.logit_bias = logit_bias
        self.writer = writer
        self.inject = inject
        self.decode = decode
        self.latency_s = latency_s
        self.latency_per_token_s = latency_per_token_s
        self.context_window = context_window
        self.calls: Counter[str] = Counter()

    @classmethod
    def for_script(cls, script: TagScript, **kwargs) -> "FakeBackend":
        """A fake over ``script.vocab`` that behaves as ``script`` says."""
        return cls(script.vocab.vocab_size, eos_ids=(script.vocab.EOS,), logit_bias=script.logit_bias,
                   writer=script.write, inject=script.inject, decode=script.vocab.decode, **kwargs)

    # -- the model ------------------------------------------------------------------------------
    def logits(self, context: Sequence[int]) -> np.ndarray:
        rng = np.random.default_rng(_key(self.seed, tuple(int(t) for t in context[-8:])))
        out = rng.standard_normal(self.vocab_size) * self.noise_scale
        if self.logit_bias is not None:
            for tok, bonus in self.logit_bias(context).items():
                out[tok] += bonus
        return out

    def logprobs(self, context: Sequence[int], temperature: float = 1.0) -> list[float]:
        """Full-vocabulary log-probs at the next position, of ``logits / temperature`` (greedy,
        temperature 0, reports the temperature-1 values)."""
        scaled = self.logits(context) / (temperature if temperature > 0 else 1.0)
        m = scaled.max()
        return (scaled - (m + np.log(np.exp(scaled - m).sum()))).tolist()

    def _check_ids(self, ids: Sequence[int]) -> None:
        bad = [t for t in ids if not 0 <= int(t) < self.vocab_size]
        if bad:
            raise ValueError(f"token ids {bad[:5]} outside the vocabulary (size {self.vocab_size})")

    async def _sleep(self, n_tokens: int = 0) -> None:
        delay = self.latency_s + self.latency_per_token_s * n_tokens
        # sleep(0) still yields, so concurrency interleaves the same way with or without latency.
        await asyncio.sleep(delay)

    def _maybe_inject(self, kind: str, context: Sequence[int]) -> str | None:
        mode = self.inject(kind, context) if self.inject is not None else None
        if mode == "raise":
            raise FakeBackendError(f"injected failure in {kind}")
        return mode

    # -- protocol --------------------------------------------------------------------------------
    async def next_token_logprobs(self, context_ids: Sequence[int], candidate_ids: Sequence[int]) -> list[float]:
        self.calls["next_token_logprobs"] += 1
        self._check_ids(list(context_ids) + list(candidate_ids))
        await self._sleep()
        self._maybe_inject("next_token_logprobs", context_ids)
        lp = self.logprobs(context_ids)
        return [lp[int(c)] for c in candidate_ids]

    async def top_logprobs(self, context_ids: Sequence[int], k: int) -> dict[int, float]:
        """The ``k`` most probable next ids with their log-probs (for the test HTTP server)."""
        lp = self.logprobs(context_ids)
        best = sorted(range(self.vocab_size), key=lambda t: (-lp[t], t))[:k]
        return {t: lp[t] for t in best}

    async def generate(self, context_ids: Sequence[int], params: SamplingParams) -> Generation:
        self.calls["generate"] += 1
        context = [int(t) for t in context_ids]
        try:
            self._check_ids(context)
        except ValueError as exc:
            return Generation.failed(str(exc))
        mode = self._maybe_inject("generate", context)
        if mode == "error":
            await self._sleep()
            return Generation.failed("injected error")
        seed = params.seed if params.seed is not None else _key("gen", self.seed, tuple(context))
        rng = random.Random(seed)
        script = list(self.writer(context, params, rng)) if self.writer is not None else []
        checker = StopChecker(params, self.eos_ids, self.decode,
                              max_tokens=max(0, self.context_window - len(context)))
        ids: list[int] = []
        lps: list[float] = []
        finish = checker.check(ids)
        while finish is None:
            full = context + ids
            logp = self.logprobs(full, params.temperature)
            if len(ids) < len(script):
                tok = int(script[len(ids)])
                if not 0 <= tok < self.vocab_size:
                    raise ValueError(f"the writer produced id {tok} outside the vocabulary")
            else:
                tok = self._sample(full, logp, params, rng)
            ids.append(tok)
            lps.append(logp[tok])
            finish = checker.check(ids)
        await self._sleep(len(ids))
        return Generation(ids, lps, finish[0], finish[1])

    def _sample(self, full: Sequence[int], logp: list[float], params: SamplingParams, rng: random.Random) -> int:
        if params.temperature == 0:
            return max(range(self.vocab_size), key=lambda t: (logp[t], -t))
        order = sorted(range(self.vocab_size), key=lambda t: (-logp[t], t))
        if params.top_k and params.top_k > 0:
            order = order[:params.top_k]
        kept, mass = [], 0.0
        for t in order:  # smallest prefix of the sorted ids whose mass reaches top_p
            kept.append(t)
            mass += math.exp(logp[t])
            if mass >= params.top_p:
                break
        weights = [math.exp(logp[t]) for t in kept]
        return rng.choices(kept, weights=weights, k=1)[0]
