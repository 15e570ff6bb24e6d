"""Phase 1 prompts and chat: per-tag prompts, reply cleaning, the chat model over hf and an OpenAI server (phase1/prompt_templates.py, chat.py, prompted_search.py)."""

from __future__ import annotations


import pytest

from rftt_plugin.phase1.prompted_search import PromptedConfig, PromptedSearch
from rftt_plugin.phase1.prompt_templates import (
    ACTIONS, action_messages, clean_reply, request_kind, states_answer, verify_messages,
)
from rftt_plugin.tokens import ROOT, FunctionalTag, Step

T = FunctionalTag


# --------------------------------------------------------------------------------------------
# Prompts and cleaning
# --------------------------------------------------------------------------------------------

def test_prompts_render_with_a_real_chat_template(tiny_model_dir):
    from transformers import AutoTokenizer

    from rftt_plugin.phase1.chat import chat_ids

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    steps = [Step(T.ANALYZE, "Multiply first."), Step(T.SUBQUESTION, "What is 3 * 4?")]
    for action in ACTIONS:
        messages = action_messages(action, "What is 2 + 3 * 4?", steps)
        assert request_kind(messages) == action.value
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        assert text.startswith("<|im_start|>user\n") and text.endswith("<|im_start|>assistant\n")
        assert "What is 2 + 3 * 4?" in text and "1. [plan] Multiply first." in text
        assert "2. [sub-question] What is 3 * 4?" in text
        ids = chat_ids(tok, messages)
        assert tok.decode(ids) == text
        assert "\\box{" not in text  # B9: never ask for \box{}
    verify = verify_messages("Q?", steps[:1], [Step(T.DIRECT_ANSWER, "wrong")], [Step(T.NEXT_STEP, "right")])
    assert request_kind(verify) == "verify"
    assert "\\boxed" in action_messages(T.DIRECT_ANSWER, "Q", [])[0]["content"]


async def test_backend_chat_over_the_hf_backend(tiny_model_dir):
    from rftt_plugin.backends.hf import HFBackend
    from rftt_plugin.phase1.chat import BackendChat, ChatParams

    backend = HFBackend.from_pretrained(str(tiny_model_dir))
    try:
        chat = BackendChat(backend, backend.tokenizer, backend.eos_ids)
        reply = await chat.complete(action_messages(T.NEXT_STEP, "What is 2 + 3?", []),
                                    ChatParams(max_tokens=6, temperature=0.0, seed=1))
        assert reply.finish_reason in ("stop", "length") and reply.prompt_tokens > 20
        assert reply.completion_tokens <= 6
    finally:
        await backend.aclose()


async def test_phase1_search_through_an_openai_compatible_server(tiny_model_dir):
    """The --backend openai path: chat template applied locally, token ids over HTTP (vLLM dialect)."""
    from rftt_plugin.backends.hf import HFBackend
    from rftt_plugin.backends.openai import OpenAIBackend
    from rftt_plugin.backends.openai_server import CompletionServer
    from rftt_plugin.phase1.chat import BackendChat

    inner = HFBackend.from_pretrained(str(tiny_model_dir))
    server = CompletionServer(inner, "tiny", decode=inner._decode)
    await server.start()
    client = OpenAIBackend(server.base_url, "tiny", max_retries=0)
    try:
        chat = BackendChat(client, inner.tokenizer, inner.eos_ids)
        cfg = PromptedConfig(iterations=1, max_tokens={k: 4 for k in ("clarify", "analyze", "subquestion",
                                                                      "next_step", "direct_answer")})
        result = await PromptedSearch(chat, cfg).search("What is 2 + 3 * 4?", "14")
        assert result.tree.llm_calls == 9 and client.requests >= 9   # one expansion of the root, over HTTP
        dropped = sum(result.tree.meta["dropped"].values())
        assert dropped + len(result.tree.nodes) - 1 == 9 and "error" not in result.tree.meta["dropped"]
    finally:
        await client.aclose()
        await server.close()
        await inner.aclose()


@pytest.mark.parametrize("kind,raw,finish,expected", [
    # B10: an exact label is removed, the words after it are untouched ("numbers" keeps its ending)
    ("analyze", "Brief analysis: numbers first, then add.", "stop", "numbers first, then add."),
    ("analyze", "Brief analyses numbers", "stop", "Brief analyses numbers"),   # no exact label: unchanged
    ("analyze", "Analysis of the problem: use symmetry.", "stop", "Analysis of the problem: use symmetry."),
    ("clarify", "**Restated problem:** Find x.", "stop", "Find x."),
    ("clarify", "Restatement: \n\nFind x.", "stop", "Find x."),
    ("subquestion", "\n\nSub-question: What is 3 * 4?\nAnswer: 12", "stop", "What is 3 * 4?"),
    ("next_step", "Step 2 (step): 3 * 4 = 12.\nStep 3: add 2.", "stop", "3 * 4 = 12."),
    ("next_step", "3. [step] Add them: 14.", "stop", "Add them: 14."),
    ("next_step", "Next step: add.\nNext step: multiply.", "stop", "add."),
    ("next_step", "<think>\nlet me see\n</think>\n\n12 / 4 = 3.", "stop", "12 / 4 = 3."),
    ("next_step", "12 / 4 = 3.<|im_end|>\n<|im_start|>user", "stop", "12 / 4 = 3."),
    ("direct_answer", "```\nx = 2, so \\boxed{2}\n```", "stop", "x = 2, so \\boxed{2}"),
    ("direct_answer", "If a<b and b>c then 1 < 2.", "stop", "If a<b and b>c then 1 < 2."),  # math, not tags
    ("verify", "Check: step 2 adds before multiplying.", "stop", "step 2 adds before multiplying."),
])
def test_clean_reply_keeps_the_right_text(kind, raw, finish, expected):
    cleaned = clean_reply(kind, raw, finish)
    assert cleaned.ok and cleaned.text == expected


@pytest.mark.parametrize("kind,raw,finish,reason", [
    ("next_step", "", "stop", "empty"),
    ("next_step", "   \n\t ", "stop", "empty"),
    ("analyze", "Plan:", "stop", "empty"),
    ("next_step", "3 * 4 = 12 and then", "length", "truncated"),
    ("next_step", None, "error", "error"),
    ("next_step", "<think>I am still thinking", "stop", "unclosed_think"),
    ("direct_answer", "<next_step>\n3 * 4\n</next_step>", "stop", "tag_in_text"),
    ("direct_answer", "So <answer>5</answer>", "stop", "tag_in_text"),
    ("verify", "It should be \\boxed{14}.", "stop", "boxed_in_check"),
    ("next_step", "<|im_end|>", "stop", "empty"),
])
def test_clean_reply_rejects_garbage(kind, raw, finish, reason):
    assert clean_reply(kind, raw, finish).reason == reason


def test_states_answer():
    assert states_answer("So the answer is \\boxed{5}.")
    assert states_answer("Therefore the final answer is 5.")
    assert states_answer("\\fbox{7}")
    assert not states_answer("Compute \\boxed{ first")       # an unclosed box is no answer
    assert not states_answer("Next, answer the sub-question.")


def test_config_rejects_bad_knobs():
    with pytest.raises(ValueError, match="unknown actions"):
        PromptedConfig(samples={"verify": 1})
    with pytest.raises(ValueError, match="nothing to search"):
        PromptedConfig(samples={"clarify": 0, "analyze": 0, "subquestion": 0, "next_step": 0})
    with pytest.raises(ValueError, match="unknown PromptedConfig keys"):
        PromptedConfig.from_mapping({"iteration": 3})
    assert PromptedConfig().samples == {"clarify": 2, "analyze": 2, "subquestion": 2, "next_step": 2,
                                        "direct_answer": 1}
    partial = PromptedConfig(max_tokens={"next_step": 100}).max_tokens
    assert partial["next_step"] == 100 and partial["direct_answer"] == 4096   # a partial budget overrides only what it names
    with pytest.raises(ValueError, match="max_tokens must be >= 1"):
        PromptedConfig(max_tokens={"next_step": 0})
    assert [a.value for a, _ in PromptedConfig(root_direct_answer=False).actions_after(ROOT)] == [
        "clarify", "analyze", "subquestion", "next_step"]
