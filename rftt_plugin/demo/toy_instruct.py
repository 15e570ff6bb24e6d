"""A scripted stand-in for phase 1's instruct model on the toy sums, served like ``vllm serve``.

Phase 1 (``rftt gen-sft``) prompts an *instruct* model for clarify / analyze / sub-question /
next-step / direct-answer / verify replies. A tiny random model never answers a question right, so
phase 1 on it yields no correct path and no SFT sample. To run the user's pipeline end to end on a
CPU (CI, ``examples/pipeline`` with ``presets/cpu-tiny.env``), this module plays the instruct
model on the toy task of :mod:`rftt_plugin.demo.synthetic` ("What is a + b + c - d?"): it reads the
request kind and the steps so far from the prompt and answers like a careful but fallible solver:

* next steps add one operand at a time (``3 + 4 = 7.``); the step that completes the sum states
  ``The answer is \\boxed{u}.`` (phase 1's terminal rule);
* a direct answer is right on all-plus sums and wrong on minus sums (it adds the last operand:
  the error a hurried solver makes), so minus questions grow a correct and a wrong branch that
  share a prefix, which is what ``rftt gen-sft`` stitches into a self-correcting sample;
* a verify reply names that mistake.

Everything else about phase 1 is real: the HTTP server speaks the ``/v1/completions`` dialect of
:mod:`rftt_plugin.backends.openai_server`, the prompts are rendered with the prepared model's chat
template by ``rftt gen-sft --backend openai``, and the replies go through the same cleaning,
search, grading and stitching. It is not a model and claims nothing about one::

    python -m rftt_plugin.demo.toy_instruct --tokenizer runs/pipeline/model --port 8011
    python -m rftt_plugin.demo.toy_instruct --toy strategies --slip-rate 0.1 --tokenizer ... # the strategies toy

>>> model = ToyInstructModel()
>>> model.reply("next_step", "What is 1 + 2 + 3 - 4?", "1. [step] 1 + 2 = 3.")
'3 + 3 = 6.'
>>> model.reply("direct_answer", "What is 1 + 2 + 3 - 4?", "(none yet)")
'1 + 2 + 3 - 4 = 10. The answer is \\\\boxed{10}.'
"""

from __future__ import annotations

import argparse
import asyncio
import re
from dataclasses import dataclass
from typing import Any, Sequence

from rftt_plugin.backends.base import BaseBackend, Generation, SamplingParams

__all__ = ["ScriptedChat", "ToyInstructModel", "ToyInstructBackend", "main", "scripted_model", "scripted_reply"]

_QUESTION_RE = re.compile(r"What is ((?:\d+ [+-] )+\d+)\?")
_DONE_STEP_RE = re.compile(r"^\d+\. \[step\] .*=\s*-?\d+", re.MULTILINE)
# The last user turn of a ChatML prompt (Qwen2.5's template and the tiny test tokenizer's).
_USER_TURN_RE = re.compile(r"<\|im_start\|>user\n(.*?)<\|im_end\|>", re.DOTALL)

VERIFY_TEXT = ("The answer written in one go treats the last operation as an addition, but the question "
               "subtracts the last number. The last number has to be subtracted, one operation at a time.")


class NotAToyPrompt(ValueError):
    """The prompt is not a phase-1 request about a toy sum."""


@dataclass(frozen=True)
class ToyInstructModel:
    """Replies by request kind to phase-1 prompts about "What is a + b + ... +/- z?" questions."""

    def reply(self, kind: str | None, question: str, steps_block: str, seed: int | None = None) -> str:
        # ``seed`` (the call's sampling seed) is accepted for a common interface; this solver never slips.
        m = _QUESTION_RE.search(question)
        if m is None:
            raise NotAToyPrompt(f"not a toy sum question: {question[:80]!r}")
        tokens = m.group(1).split()
        numbers = [int(t) for t in tokens[::2]]
        signs = tokens[1::2]
        partial = [numbers[0]]
        for sign, n in zip(signs, numbers[1:]):
            partial.append(partial[-1] + n if sign == "+" else partial[-1] - n)
        answer = partial[-1]
        expr = m.group(1)
        if kind == "clarify":
            return f"Find the value of {expr}."
        if kind == "analyze":
            return "Work from left to right, one operation at a time."
        if kind == "verify":
            return VERIFY_TEXT
        done = min(len(_DONE_STEP_RE.findall(steps_block)), len(signs) - 1)
        left, sign, right, result = partial[done], signs[done], numbers[done + 1], partial[done + 1]
        if kind == "subquestion":
            return f"What is {left} {sign} {right}?"
        if kind == "next_step":
            text = f"{left} {sign} {right} = {result}."
            return text + f" The answer is \\boxed{{{answer}}}." if done == len(signs) - 1 else text
        if kind == "direct_answer":
            hurried = sum(numbers)  # adds every operand: right exactly when there is no minus
            return f"{expr} = {hurried}. The answer is \\boxed{{{hurried}}}."
        raise NotAToyPrompt(f"unknown request kind {kind!r}")


    def verify(self, wrong_tail_block: str) -> str:
        """The cross-verification: the only mistake this solver makes is the hurried direct answer."""
        return VERIFY_TEXT


def _block(content: str, heading: str) -> str:
    """The text under ``heading`` in a phase-1 prompt, up to the next blank line ('' when absent)."""
    return content.split(heading, 1)[1].split("\n\n", 1)[0] if heading in content else ""


def _split_request(content: str) -> tuple[str, str]:
    """(problem text, steps block) of a phase-1 request (see ``phase1.prompt_templates``)."""
    return _block(content, "Problem:\n"), _block(content, "Steps so far:\n")


_ATTEMPT_HEADING = "Attempt under review (continues after the shared steps):\n"


def scripted_reply(model: Any, content: str, seed: int | None = None) -> str:
    """``model``'s reply to one phase-1 user turn (a step request or the cross-verification).

    ``model`` has ``reply(kind, question, steps_block, seed)`` and ``verify(wrong_tail_block)``
    (:class:`ToyInstructModel`, :class:`rftt_plugin.demo.strategies_instruct.StrategiesInstructModel`).
    """
    from rftt_plugin.phase1.prompt_templates import request_kind

    kind = request_kind([{"content": content}])
    if kind == "verify":
        return model.verify(_block(content, _ATTEMPT_HEADING))
    problem, steps = _split_request(content)
    return model.reply(kind, problem, steps, seed=seed)


class ScriptedChat:
    """A :class:`rftt_plugin.phase1.chat.ChatModel` over a scripted model, in process (no server,
    no tokenizer): what ``rftt quickstart --phase1-data search`` hands to the gen-sft job.

    A reply the model refuses (not a toy prompt) comes back as a failed call, which phase 1 counts
    as a dropped reply, as it would a server error.
    """

    def __init__(self, model: Any):
        self.model = model

    async def complete(self, messages, params):
        from rftt_plugin.phase1.chat import Completion

        content = str(messages[-1].get("content", "")) if messages else ""
        try:
            return Completion(scripted_reply(self.model, content, params.seed))
        except ValueError as exc:
            return Completion.failed(f"scripted instruct model: {exc}")


class ToyInstructBackend(BaseBackend):
    """A token-level backend over a scripted model (default :class:`ToyInstructModel`; see
    :func:`scripted_model`): decode the prompt, reply, encode.

    Only :meth:`generate` is meaningful (phase 1 never reads tag probabilities).
    """

    def __init__(self, tokenizer: Any, model: Any = None):
        self.tokenizer = tokenizer
        self.model = model or ToyInstructModel()
        self.eos_id = tokenizer.eos_token_id

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    async def next_token_logprobs(self, context_ids: Sequence[int], candidate_ids: Sequence[int]) -> list[float]:
        raise NotImplementedError("the toy instruct stand-in only generates (phase 1); it has no probabilities")

    async def generate(self, context_ids: Sequence[int], params: SamplingParams) -> Generation:
        text = self.tokenizer.decode(list(context_ids), skip_special_tokens=False)
        turns = _USER_TURN_RE.findall(text)
        if not turns:
            return Generation.failed("toy instruct: no ChatML user turn in the prompt")
        try:
            reply = scripted_reply(self.model, turns[-1], params.seed)
        except ValueError as exc:
            return Generation.failed(f"toy instruct: {exc}")
        ids = self.tokenizer(reply, add_special_tokens=False)["input_ids"]
        if len(ids) >= params.max_tokens:
            ids = ids[:params.max_tokens]
            return Generation(ids, [0.0] * len(ids), "length")
        ids = ids + [self.eos_id]
        return Generation(ids, [0.0] * len(ids), "eos")


def scripted_model(toy: str, slip_rate: float | None = None) -> Any:
    """The scripted instruct model of a quickstart toy: ``sums`` (:class:`ToyInstructModel`, never slips)
    or ``strategies`` (:class:`~rftt_plugin.demo.strategies_instruct.StrategiesInstructModel`)."""
    if toy == "sums":
        if slip_rate:
            raise ValueError("the sums toy's scripted solver has no slips; --slip-rate is for --toy strategies")
        return ToyInstructModel()
    if toy == "strategies":
        from rftt_plugin.demo.strategies_instruct import StrategiesInstructModel

        return StrategiesInstructModel() if slip_rate is None else StrategiesInstructModel(slip_rate=slip_rate)
    raise ValueError(f"unknown toy {toy!r}; known: sums, strategies")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rftt_plugin.demo.toy_instruct",
        description="Serve a scripted toy instruct model (phase 1 on a quickstart toy: CPU pipeline and CI) "
                    "over a vLLM-style /v1/completions API.")
    parser.add_argument("--tokenizer", required=True, help="tokenizer directory (the prepared model)")
    parser.add_argument("--toy", choices=("sums", "strategies"), default="sums",
                        help="sums (default): the default toy's solver (left to right; a hurried direct answer "
                             "that is wrong on minus sums); strategies: the strategies toy's solver (the method "
                             "each opening tag asks for, last steps that slip at --slip-rate)")
    parser.add_argument("--slip-rate", type=float, default=None,
                        help="strategies toy: the share of last steps that slip by 1 or 2 (default 0.1)")
    parser.add_argument("--served-model-name", default="toy-instruct")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8011)
    args = parser.parse_args(argv)
    try:
        model = scripted_model(args.toy, args.slip_rate)
    except ValueError as exc:
        parser.error(str(exc))

    async def run() -> None:
        from transformers import AutoTokenizer

        from rftt_plugin.backends.openai_server import CompletionServer

        backend = ToyInstructBackend(AutoTokenizer.from_pretrained(args.tokenizer), model)
        server = CompletionServer(backend, args.served_model_name, decode=backend.decode,
                                  host=args.host, port=args.port)
        print(f"serving {args.served_model_name} (scripted {args.toy} instruct model) at {await server.start()}", flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
