"""The scripted toy instruct stand-in that phase 1 of the CPU pipeline talks to."""

from __future__ import annotations

import pytest

from rftt_plugin.backends.base import SamplingParams
from rftt_plugin.demo.toy_instruct import NotAToyPrompt, ToyInstructBackend, ToyInstructModel
from rftt_plugin.phase1.chat import BackendChat, ChatParams
from rftt_plugin.phase1.prompt_templates import action_messages, request_kind
from rftt_plugin.tokens import Step

Q = "What is 5 + 4 + 3 - 2?"     # by hand: 5 + 4 = 9, 9 + 3 = 12, 12 - 2 = 10


@pytest.mark.parametrize("steps, reply", [
    ("(none yet)", "5 + 4 = 9."),
    ("1. [plan] Work from left to right.\n2. [step] 5 + 4 = 9.", "9 + 3 = 12."),
    ("1. [step] 5 + 4 = 9.\n2. [sub-question] What is 9 + 3?\n3. [step] 9 + 3 = 12.",
     "12 - 2 = 10. The answer is \\boxed{10}."),
])
def test_next_steps_add_one_operand_at_a_time(steps, reply):
    assert ToyInstructModel().reply("next_step", Q, steps) == reply


def test_direct_answer_is_right_without_a_minus_and_wrong_with_one():
    model = ToyInstructModel()
    assert model.reply("direct_answer", "What is 1 + 2 + 3 + 4?", "(none yet)").endswith("\\boxed{10}.")
    assert model.reply("direct_answer", Q, "(none yet)").endswith("\\boxed{14}.")  # 5+4+3+2, not 10
    assert model.reply("subquestion", Q, "1. [step] 5 + 4 = 9.") == "What is 9 + 3?"


def test_other_questions_are_refused():
    with pytest.raises(NotAToyPrompt):
        ToyInstructModel().reply("next_step", "Solve 2x + 4 = 10.", "(none yet)")


async def test_served_through_the_phase1_chat_path(tiny_model_dir):
    """The real phase-1 prompts, rendered with a chat template and sent as token ids, come back as
    the scripted reply (what `rftt gen-sft --backend openai` sees from the server)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    backend = ToyInstructBackend(tok)
    chat = BackendChat(backend, tok)
    steps = [Step("next_step", "5 + 4 = 9.")]
    messages = action_messages("next_step", Q, steps)
    assert request_kind(messages) == "next_step"
    reply = await chat.complete(messages, ChatParams(max_tokens=64))
    assert (reply.text, reply.finish_reason) == ("9 + 3 = 12.", "stop")
    prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    cut = await backend.generate(tok(prompt, add_special_tokens=False)["input_ids"], SamplingParams(max_tokens=2))
    assert cut.finish_reason == "length" and len(cut.token_ids) == 2
    other = await chat.complete(action_messages("next_step", "Solve 2x + 4 = 10.", []), ChatParams())
    assert other.finish_reason == "error" and "not a toy sum" in other.error


async def test_the_server_plays_the_strategies_toy_when_asked(tiny_model_dir):
    """`--toy strategies`: the same backend answers with the strategies solver (a first sub-question
    pairs the operands; worked by hand: 5 + 4 and 3 - 2), and a bad --slip-rate or a slip rate for the
    sums toy is refused before anything is served."""
    from transformers import AutoTokenizer

    from rftt_plugin.demo.strategies_instruct import StrategiesInstructModel
    from rftt_plugin.demo.toy_instruct import main, scripted_model

    model = scripted_model("strategies", 0.0)
    assert isinstance(model, StrategiesInstructModel) and model.slip_rate == 0.0
    assert scripted_model("strategies").slip_rate == StrategiesInstructModel().slip_rate
    assert isinstance(scripted_model("sums"), ToyInstructModel)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    chat = BackendChat(ToyInstructBackend(tok, model), tok)
    reply = await chat.complete(action_messages("subquestion", Q, []), ChatParams(max_tokens=64))
    assert reply.text == "What are 5 + 4 and 3 - 2?"
    reply = await chat.complete(action_messages("next_step", Q, [Step("subquestion", "What are 5 + 4 and 3 - 2?")]),
                                ChatParams(max_tokens=64))
    assert reply.text == "5 + 4 = 9"
    with pytest.raises(SystemExit):
        main(["--tokenizer", str(tiny_model_dir), "--toy", "strategies", "--slip-rate", "1.5"])
    with pytest.raises(SystemExit):
        main(["--tokenizer", str(tiny_model_dir), "--slip-rate", "0.1"])
    with pytest.raises(ValueError, match="unknown toy 'words'"):
        scripted_model("words")
