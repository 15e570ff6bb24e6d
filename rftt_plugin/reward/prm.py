"""Process reward model (PRM) step scorers, Math-Shepherd style. Optional; nothing heavy at import.

A :class:`StepScorer` turns (question, steps) into one score in [0, 1] per step: the PRM's
probability that the step is good. Used by search credit and phase-1 selection, and by the
``blend`` reward rule via ``extra_info["prm_score"]``.

Math-Shepherd input format (what the reference RFTT code sends): the question, a space, then one
line per step ``"Step k: <text> ки\\n"`` where ``ки`` is the step tag; the PRM scores the position
of each tag by P("+") against P("-") for the next token.

>>> format_math_shepherd("What is 1+1?", ["1+1=2.", "So 2."])
'What is 1+1? Step 1: 1+1=2. ки\\nStep 2: So 2. ки\\n'
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

__all__ = [
    "DEFAULT_STEP_TAG",
    "HttpStepScorer",
    "PRMError",
    "StepScorer",
    "TransformersStepScorer",
    "build_step_scorer",
    "format_math_shepherd",
    "path_score",
    "preflight",
    "step_tag_spans",
]

logger = logging.getLogger("rftt_plugin.reward")

DEFAULT_STEP_TAG = "ки"


class PRMError(RuntimeError):
    """The PRM could not score a request (bad response shape, HTTP error after retries, ...)."""


@runtime_checkable
class StepScorer(Protocol):
    """Scores each step of a solution path; ``len(result) == len(steps)``, values in [0, 1]."""

    def score_steps(self, question: str, steps: list[str]) -> list[float]: ...

    async def score_steps_async(self, question: str, steps: list[str]) -> list[float]: ...


def _clean_step(text: str, step_tag: str) -> str:
    # A step tag or newline inside the step would shift every later score; flatten them.
    return " ".join(text.replace(step_tag, " ").split())


def format_math_shepherd(question: str, steps: Sequence[str], step_tag: str = DEFAULT_STEP_TAG) -> str:
    """Render a path in Math-Shepherd format (steps numbered from 1; tags inside steps removed).

    >>> format_math_shepherd("Q", ["a ки b"], step_tag="ки")
    'Q Step 1: a b ки\\n'
    """
    body = "".join(f"Step {k}: {_clean_step(s, step_tag)} {step_tag}\n" for k, s in enumerate(steps, 1))
    return f"{question.strip()} {body}"


def step_tag_spans(question: str, steps: Sequence[str], step_tag: str = DEFAULT_STEP_TAG) -> list[int]:
    """Character index of the *last* character of each step's tag in :func:`format_math_shepherd`.

    >>> text = format_math_shepherd("Q", ["a", "b"], "#")
    >>> [text[i] for i in step_tag_spans("Q", ["a", "b"], "#")]
    ['#', '#']
    """
    pos = len(question.strip()) + 1
    out = []
    for k, s in enumerate(steps, 1):
        line = f"Step {k}: {_clean_step(s, step_tag)} {step_tag}"
        out.append(pos + len(line) - 1)
        pos += len(line) + 1
    return out


def _check_scores(scores: Any, n_steps: int) -> list[float]:
    if not isinstance(scores, (list, tuple)) or len(scores) != n_steps:
        raise PRMError(f"PRM returned {scores!r:.200} for {n_steps} steps")
    out = []
    for s in scores:
        try:
            value = float(s)
        except (TypeError, ValueError) as exc:
            raise PRMError(f"PRM score {s!r} is not a number") from exc
        if not math.isfinite(value):
            raise PRMError(f"PRM score {s!r} is not finite")
        out.append(min(1.0, max(0.0, value)))
    return out


# ----------------------------------------------------------------------------------------------
# HTTP service
# ----------------------------------------------------------------------------------------------

@dataclass
class HttpStepScorer:
    """Client of a Math-Shepherd-style PRM HTTP service.

    Sends ``POST url`` with JSON ``{request_key: [formatted path, ...]}`` (at most ``batch_size``
    paths per request) and expects ``{response_key: [[score per step], ...]}`` in the same order.
    Connection errors, timeouts, HTTP 429 and 5xx are retried ``retries`` times with exponential
    backoff (``backoff_s``, doubling); other HTTP errors and malformed bodies raise
    :class:`PRMError` at once. Uses only the standard library (urllib).
    """

    url: str
    timeout_s: float = 30.0
    batch_size: int = 16
    retries: int = 3
    backoff_s: float = 0.5
    step_tag: str = DEFAULT_STEP_TAG
    request_key: str = "query"
    response_key: str = "rewards"
    headers: dict[str, str] = field(default_factory=dict)

    def _post(self, texts: list[str]) -> list:
        body = json.dumps({self.request_key: texts}).encode("utf-8")
        headers = {"Content-Type": "application/json", **self.headers}
        delay = self.backoff_s
        last_error: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(delay)
                delay *= 2
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    payload = json.loads(response.read().decode("utf-8"))
            except urllib.error.HTTPError as exc:
                if exc.code == 429 or exc.code >= 500:
                    last_error = exc
                    continue
                raise PRMError(f"PRM service answered HTTP {exc.code} at {self.url}") from exc
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                last_error = exc
                continue
            except json.JSONDecodeError as exc:
                raise PRMError(f"PRM service sent a body that is not JSON: {exc}") from exc
            if not isinstance(payload, dict) or not isinstance(payload.get(self.response_key), list):
                raise PRMError(f"PRM response lacks a list under {self.response_key!r}: {payload!r:.200}")
            return payload[self.response_key]
        raise PRMError(f"PRM service at {self.url} failed after {self.retries + 1} attempts: {last_error}")

    def score_many(self, paths: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        """Score several (question, steps) paths, ``batch_size`` paths per request."""
        results: list[list[float]] = []
        for start in range(0, len(paths), max(1, self.batch_size)):
            chunk = paths[start : start + max(1, self.batch_size)]
            texts = [format_math_shepherd(q, steps, self.step_tag) for q, steps in chunk]
            answers = self._post(texts)
            if len(answers) != len(chunk):
                raise PRMError(f"PRM returned {len(answers)} results for {len(chunk)} paths")
            results.extend(_check_scores(a, len(steps)) for a, (_, steps) in zip(answers, chunk))
        return results

    def score_steps(self, question: str, steps: list[str]) -> list[float]:
        if not steps:
            return []
        return self.score_many([(question, steps)])[0]

    async def score_steps_async(self, question: str, steps: list[str]) -> list[float]:
        return await asyncio.to_thread(self.score_steps, question, steps)


# ----------------------------------------------------------------------------------------------
# In-process transformers model
# ----------------------------------------------------------------------------------------------

def _last_piece_id(tokenizer: Any, text: str) -> int:
    ids = tokenizer.encode(text, add_special_tokens=False)
    if not ids:
        raise PRMError(f"tokenizer encodes {text!r} to nothing")
    return int(ids[-1])


class TransformersStepScorer:
    """PRM as an in-process causal LM: P("+") / (P("+") + P("-")) at each step tag.

    The score of step k is read from the logits *at* the last token of its step tag (they predict
    the token after the tag, where a Math-Shepherd PRM writes ``+`` or ``-``). Tokenizers may split
    ``+``, ``-`` and ``ки`` into several pieces; we use the **last** piece of each, and locate the tag
    by character offsets when the tokenizer provides them (fast tokenizers), so a tag merged with
    its neighbours is still found. Deterministic: eval mode, no sampling.

    ``model`` is a path / hub id (loaded with ``AutoModelForCausalLM``) or a loaded model, then
    ``tokenizer`` must be given too.
    """

    def __init__(self, model: Any, tokenizer: Any = None, *, step_tag: str = DEFAULT_STEP_TAG,
                 good_token: str = "+", bad_token: str = "-", device: str | None = None,
                 max_length: int | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if isinstance(model, str):
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(model)
            model = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
        if tokenizer is None:
            raise ValueError("pass the tokenizer together with a loaded model")
        self.model = model.eval()
        if device is not None:
            self.model.to(device)
        self.tokenizer = tokenizer
        self.step_tag = step_tag
        self.good_id = _last_piece_id(tokenizer, good_token)
        self.bad_id = _last_piece_id(tokenizer, bad_token)
        if self.good_id == self.bad_id:
            raise PRMError(f"{good_token!r} and {bad_token!r} end in the same token")
        self.tag_id = _last_piece_id(tokenizer, step_tag)
        self.max_length = max_length
        self._torch = torch

    def _tag_positions(self, question: str, steps: list[str], text: str) -> tuple[list[int], list[int]]:
        spans = step_tag_spans(question, steps, self.step_tag)
        try:
            enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            offsets = enc["offset_mapping"]
        except (NotImplementedError, TypeError, ValueError, KeyError):
            enc, offsets = self.tokenizer(text, add_special_tokens=False), None
        ids = list(enc["input_ids"])
        if offsets is not None:
            positions, t = [], 0
            for char_index in spans:
                while t < len(offsets) and offsets[t][1] <= char_index:
                    t += 1
                if t >= len(offsets):
                    raise PRMError("step tag lies beyond the tokenised text")
                # Byte-level tokenizers split one character into several pieces with the same
                # offsets: take the last piece covering the tag's last character.
                while t + 1 < len(offsets) and offsets[t + 1][0] <= char_index < offsets[t + 1][1]:
                    t += 1
                positions.append(t)
            return ids, positions
        positions = [i for i, tok in enumerate(ids) if tok == self.tag_id]
        if len(positions) != len(steps):
            raise PRMError(f"found {len(positions)} step tags for {len(steps)} steps")
        return ids, positions

    def score_steps(self, question: str, steps: list[str]) -> list[float]:
        if not steps:
            return []
        torch = self._torch
        text = format_math_shepherd(question, steps, self.step_tag)
        ids, positions = self._tag_positions(question, steps, text)
        if self.max_length is not None and len(ids) > self.max_length:
            raise PRMError(f"path has {len(ids)} tokens, more than max_length={self.max_length}")
        device = next(self.model.parameters()).device
        with torch.no_grad():
            logits = self.model(input_ids=torch.tensor([ids], device=device)).logits[0]
        pair = logits[positions][:, [self.good_id, self.bad_id]].float()
        return [float(x) for x in pair.softmax(dim=-1)[:, 0].cpu()]

    async def score_steps_async(self, question: str, steps: list[str]) -> list[float]:
        return await asyncio.to_thread(self.score_steps, question, steps)


# ----------------------------------------------------------------------------------------------
# From the recipe's `rftt.reward.prm` section
# ----------------------------------------------------------------------------------------------

AGGREGATES = ("last", "mean", "min")  # rftt.reward.prm.aggregate: how step scores become a path's score


def path_score(step_scores: Sequence[float], aggregate: str = "last") -> float:
    """One score for a path from its step scores (``rftt.reward.prm.aggregate``).

    >>> path_score([0.9, 0.2, 0.4], "last"), path_score([0.9, 0.2, 0.4], "min")
    (0.4, 0.2)
    >>> round(path_score([0.9, 0.2, 0.4], "mean"), 6)
    0.5
    >>> path_score([], "last")
    0.0
    """
    scores = [float(s) for s in step_scores]
    if not scores:
        return 0.0  # a path without a step has nothing a PRM could approve
    if aggregate == "last":
        return scores[-1]
    if aggregate == "mean":
        return sum(scores) / len(scores)
    if aggregate == "min":
        return min(scores)
    raise ValueError(f"unknown PRM aggregate {aggregate!r}; choose one of {', '.join(AGGREGATES)}")


def build_step_scorer(settings: Any) -> StepScorer:
    """A scorer for a :class:`rftt_plugin.config.schema.PrmSettings` (``url`` or ``model``)."""
    if getattr(settings, "url", None):
        return HttpStepScorer(url=settings.url, timeout_s=settings.timeout_s, batch_size=settings.batch_size,
                              retries=settings.retries, step_tag=settings.step_tag,
                              request_key=settings.request_key, response_key=settings.response_key)
    if getattr(settings, "model", None):
        return TransformersStepScorer(settings.model, step_tag=settings.step_tag)
    raise ValueError("rftt.reward.prm has neither url nor model set")


# A fixed two-step path: what one real scoring call before training sends.
PREFLIGHT_QUESTION = "What is 1 + 1?"
PREFLIGHT_STEPS = ["1 + 1 = 2.", "The answer is 2."]


def preflight(settings: Any, *, load_model: bool = False, where: str = "rftt.reward.prm") -> str:
    """One real scoring call to the configured PRM, before anything heavy starts.

    Returns a one-line report; raises :class:`PRMError` with one line naming the setting when the
    PRM cannot score (refused, unreachable, too slow for ``timeout_s``, an HTTP error, a malformed
    answer). An in-process ``model`` is only loaded and called with ``load_model`` (``rftt doctor``);
    the training driver leaves it to the workers, which load it anyway.
    """
    if getattr(settings, "url", None):
        key = f"{where}.url={settings.url}"
        scorer: Any = HttpStepScorer(url=settings.url, timeout_s=settings.timeout_s, batch_size=1, retries=0,
                                     step_tag=settings.step_tag, request_key=settings.request_key,
                                     response_key=settings.response_key)
    elif getattr(settings, "model", None):
        key = f"{where}.model={settings.model}"
        if not load_model:
            return f"{key}: in-process PRM, loaded by each agent-loop worker (check it with `rftt doctor --config`)"
        try:
            scorer = TransformersStepScorer(settings.model, step_tag=settings.step_tag)
        except Exception as exc:  # noqa: BLE001 - any load failure is the user's setting
            raise PRMError(f"{key}: the PRM model did not load ({type(exc).__name__}: {exc})") from exc
    else:
        raise PRMError(f"{where}: neither url nor model is set")
    t0 = time.perf_counter()
    try:
        scores = scorer.score_steps(PREFLIGHT_QUESTION, list(PREFLIGHT_STEPS))
    except Exception as exc:  # noqa: BLE001
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PRMError(f"{key}: the PRM did not score a test path ({type(exc).__name__}: {detail}); start it or fix "
                       f"the setting, or train without a PRM (rftt.reward.rule=rftt)") from exc
    return f"{key}: ok, scored a {len(scores)}-step test path in {time.perf_counter() - t0:.2f} s"
