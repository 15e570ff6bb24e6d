"""Functional tokens: grammar, render/parse/validate, final answer block, TagIds (text mode).

The added-token mode of TagIds needs a prepared checkpoint: see test_prepare.py.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time

import pytest

from rftt_plugin.tokens import (
    CLOSE_STRINGS, DEFAULT_MAX_DEPTH, GRAMMAR, ROOT, TAG_STRINGS, TAGS, FunctionalTag, Step,
    TagFormatError, allowed_next, final_answer_block, is_terminal, looks_like_tag, parse, render, render_step,
    validate,
)
from rftt_plugin.tag_ids import TagIds, TagVocabularyError

T = FunctionalTag

# design.md section 3, written out here as the contract the module must match (order = fallback order).
SPEC = {
    "root": "clarify analyze subquestion next_step",
    "clarify": "analyze subquestion next_step direct_answer",
    "analyze": "subquestion next_step direct_answer",
    "subquestion": "next_step direct_answer",
    "next_step": "next_step direct_answer subquestion verify output",
    "direct_answer": "output verify",
    "verify": "next_step refine direct_answer subquestion verify output",
    "refine": "next_step direct_answer output subquestion verify",
    "output": "",
}


# ------------------------------------------------------------------ tags and grammar

def test_tags_order_and_strings():
    assert [t.value for t in TAGS] == ["clarify", "analyze", "subquestion", "next_step", "direct_answer",
                                      "verify", "refine", "output"]
    assert [t.open for t in TAGS] == [f"<{t.value}>" for t in TAGS]
    assert CLOSE_STRINGS == tuple(f"</{t.value}>" for t in TAGS)
    assert TAG_STRINGS[:8] == tuple(t.open for t in TAGS) and TAG_STRINGS[8:] == CLOSE_STRINGS
    assert len(set(TAG_STRINGS)) == 16
    assert T("next_step") is T.NEXT_STEP and f"{T.VERIFY}" == "verify"


def test_grammar_matches_design_table():
    assert set(GRAMMAR) == {ROOT, *TAGS}
    for key, expected in SPEC.items():
        tag = ROOT if key == "root" else T(key)
        assert [t.value for t in GRAMMAR[tag]] == expected.split(), key


def test_grammar_structural_rules():
    # clarify only first; refine only after verify; output terminal and reachable only from 4 tags
    assert [k for k, v in GRAMMAR.items() if T.CLARIFY in v] == [ROOT]
    assert [k for k, v in GRAMMAR.items() if T.REFINE in v] == [T.VERIFY]
    assert {k for k, v in GRAMMAR.items() if T.OUTPUT in v} == {T.NEXT_STEP, T.DIRECT_ANSWER, T.VERIFY, T.REFINE}
    assert GRAMMAR[T.OUTPUT] == ()
    for nxt in GRAMMAR.values():
        assert len(set(nxt)) == len(nxt)
    with pytest.raises(TypeError):
        GRAMMAR[T.OUTPUT] = (T.VERIFY,)  # read-only: a shared contract must not be edited in place


def test_allowed_next_depth_cap_and_terminal():
    assert DEFAULT_MAX_DEPTH == 18
    for prev in (ROOT, *TAGS):
        for depth in range(0, 22):
            got = allowed_next(prev, depth)
            assert got == (() if depth >= 18 else GRAMMAR[prev])
            assert is_terminal(prev, depth) == (not got)
    assert allowed_next(T.NEXT_STEP, 4, max_depth=5) and not allowed_next(T.NEXT_STEP, 5, max_depth=5)
    assert allowed_next("verify", 1) == GRAMMAR[T.VERIFY]  # plain names accepted


# ------------------------------------------------------------------ render / parse

def test_render_step_reference_format():
    assert render_step(Step(T.VERIFY, "  x = 1 \n")) == "<verify>\nx = 1\n</verify>\n"
    text = render([Step(T.NEXT_STEP, "a"), Step(T.OUTPUT, "")])
    assert text == "<next_step>\na\n</next_step>\n<output>\n\n</output>\n"  # empty step kept
    assert parse(text) == [Step(T.NEXT_STEP, "a"), Step(T.OUTPUT, "")]


_WORDS = ["2 + 3 = 5", "x", "π ≈ 3.14159", "日本語の問題", "🙂", "a<b>c", "x < y > z", "\\boxed{\\frac{1}{2}}",
          "$a_{n}$", "<", ">", "  ", "\n", "let's", "</b>", "if a<bc>d"]


def _random_path(rng: random.Random, max_depth: int = DEFAULT_MAX_DEPTH) -> list[Step]:
    steps, prev = [], ROOT
    while allowed_next(prev, len(steps), max_depth):
        options = allowed_next(prev, len(steps), max_depth)
        tag = T.OUTPUT if T.OUTPUT in options and rng.random() < 0.25 else rng.choice(options)
        text = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(0, 6)))
        steps.append(Step(tag, text))
        prev = tag
    return steps


def test_round_trip_random_valid_paths():
    rng = random.Random(1234)
    seen_tags, ended_by_cap = set(), 0
    for _ in range(400):
        max_depth = rng.choice((3, 6, DEFAULT_MAX_DEPTH))
        steps = _random_path(rng, max_depth)
        text = render(steps)
        expected = [Step(s.tag, s.text.strip()) for s in steps]
        assert parse(text) == expected
        assert render(parse(text)) == text
        has_output = steps[-1].tag is T.OUTPUT
        report = validate(text, max_depth=max_depth, require_output=has_output)
        assert report.ok, (report.problems, text)
        assert report.steps == expected and not report.truncated
        if not has_output:  # the walk hit the depth cap before choosing output
            ended_by_cap += 1
            assert len(steps) == max_depth
            assert validate(text, max_depth=max_depth).codes == ["missing_output"]
        seen_tags.update(s.tag for s in steps)
    assert seen_tags == set(TAGS)  # the walk covers the whole grammar
    assert ended_by_cap > 0


def test_whitespace_between_steps_is_fine():
    text = "\n  <next_step>\n1\n</next_step>\n\n\t<output>\n1\n</output>  \n"
    assert [s.text for s in parse(text)] == ["1", "1"]
    assert validate(text).ok


@pytest.mark.parametrize("text, code, marker", [
    ("<next_step>\n1 + 1\n</next_st", "unclosed", "<next_step>"),  # also partial_tag, later
    ("<next_step>\n1 + 1\n", "unclosed", "<next_step>"),
    ("<next_step>\nx\n</next_step>\n<outp", "partial_tag", "<outp"),
    ("<next_step>\nx\n<verify>\ny\n</verify>\n</next_step>\n", "nested", "<verify>"),
    ("<next_step>\nx\n</verify>\n", "mismatched", "</verify>"),
    ("</next_step>\n", "unexpected_close", "</next_step>"),
    ("Sure! <next_step>\nx\n</next_step>\n", "text_outside", "Sure!"),
    ("<next_step>\nx\n</next_step>\ntrailing words", "text_outside", "trailing"),
    ("<next_step>\nwe <think>hmm</think>\n</next_step>\n", "unknown_tag", "<think>"),
    ("<Verify>\nx\n</Verify>\n", "unknown_tag", "<Verify>"),
])
def test_parse_rejects_and_validate_reports(text, code, marker):
    with pytest.raises(TagFormatError) as err:
        parse(text)
    position = text.index(marker)
    assert err.value.code == code and err.value.position == position
    report = validate(text, require_output=False)
    assert not report.ok and report.first.code == code and report.first.position == position


def test_truncated_reports():
    text = render([Step(T.NEXT_STEP, "a"), Step(T.OUTPUT, "The answer is 7")])
    spans = [(text.index(tag.open), text.index(tag.close) + len(tag.close)) for tag in (T.NEXT_STEP, T.OUTPUT)]
    for cut in range(len(text) + 1):
        prefix = text[:cut]
        report = validate(prefix)
        inside = any(a < cut < b for a, b in spans)  # cut inside a step or one of its tags
        assert report.truncated == inside, prefix
        assert report.ok == (prefix.rstrip() == text.rstrip()), prefix
    cut_inside = text[: text.index("answer")]
    report = validate(cut_inside)
    assert report.truncated and report.partial == Step(T.OUTPUT, "The")
    assert report.first.code == "unclosed" and report.first.position == cut_inside.index("<output>")
    assert report.steps == [Step(T.NEXT_STEP, "a")]
    cut_tag = text[: text.index("</output>") + 5]
    report = validate(cut_tag)
    assert report.truncated and report.codes == ["unclosed", "partial_tag"]
    assert report.problems[1].position == cut_tag.rindex("<") and report.partial.text == "The answer is 7"


def test_math_is_not_an_unknown_tag():
    for body in ["a<b>c", "x<n>", "<br>", "a < b > c", "<x+1>", "1<2>0", "</b>"]:
        text = render([Step(T.NEXT_STEP, body), Step(T.OUTPUT, "1")])
        assert validate(text).ok, body
        assert parse(text)[0].text == body
    assert looks_like_tag("answer") and looks_like_tag("im_end") and not looks_like_tag("ab")
    assert not looks_like_tag("1abc") and not looks_like_tag("añb")


def test_empty_and_blank():
    assert parse("") == [] and parse(" \n ") == []
    for text in ("", "  \n\t"):
        report = validate(text)
        assert not report.ok and report.codes == ["empty"] and report.first.position == 0
        assert report.steps == [] and not report.truncated


def test_grammar_problems_and_positions():
    def text_of(*tags):
        return render(Step(t, "s") for t in tags)

    cases = [
        ((T.NEXT_STEP, T.CLARIFY, T.DIRECT_ANSWER, T.OUTPUT), "grammar", 1),  # clarify only first
        ((T.NEXT_STEP, T.REFINE, T.OUTPUT), "grammar", 1),                    # refine only after verify
        ((T.OUTPUT,), "grammar", 0),                                 # cannot start with output
        ((T.ANALYZE, T.OUTPUT), "grammar", 1),
        ((T.NEXT_STEP, T.OUTPUT, T.VERIFY), "after_output", 2),
        ((T.NEXT_STEP, T.VERIFY), "missing_output", None),
    ]
    for tags, code, index in cases:
        text = text_of(*tags)
        report = validate(text)
        assert report.codes == [code], (tags, report.problems)
        expected = len(text) if index is None else len(text_of(*tags[:index]))
        assert report.first.position == expected
    assert validate(text_of(T.NEXT_STEP, T.VERIFY, T.REFINE, T.OUTPUT)).ok
    assert "refine may only follow verify" in validate(text_of(T.NEXT_STEP, T.REFINE, T.OUTPUT)).first.message


def test_depth_cap():
    ok = [T.NEXT_STEP] * 17 + [T.OUTPUT]
    assert validate(render(Step(t, "s") for t in ok)).ok
    too_deep = [T.NEXT_STEP] * 18 + [T.OUTPUT]
    text = render(Step(t, "s") for t in too_deep)
    report = validate(text)
    assert report.codes == ["too_deep"]
    assert report.first.position == len(render(Step(t, "s") for t in too_deep[:18]))
    assert validate(text, max_depth=19).ok
    assert validate(render(Step(t, "s") for t in [T.NEXT_STEP] * 3 + [T.OUTPUT]), max_depth=3).codes == ["too_deep"]


def test_unicode_positions_are_code_points():
    text = "<next_step>\n日本語 🙂 π\n<verify>\nx\n</verify>\n"
    with pytest.raises(TagFormatError) as err:
        parse(text)
    assert err.value.position == text.index("<verify>")
    steps = [Step(T.CLARIFY, "Ünïcödé 問題 🙂"), Step(T.NEXT_STEP, "∑ᵢ xᵢ = 10"), Step(T.OUTPUT, "\\boxed{10}")]
    assert parse(render(steps)) == steps and validate(render(steps)).ok


def test_large_inputs_are_linear():
    big = render([Step(T.NEXT_STEP, "1 + 1 = 2 " * 10_000), Step(T.OUTPUT, "2")])
    assert len(big) > 100_000
    adversarial = ["<a" * 50_000, "<" + "a" * 100_000, "<next_step>" + "<ab" * 40_000, "</" * 50_000,
                   "<think>" * 15_000, ("x<y>z " * 20_000) + "<outp"]
    start = time.perf_counter()
    assert validate(big).ok and len(parse(big)) == 2
    for text in adversarial:
        report = validate(text)
        assert not report.ok
    many = render(Step(T.NEXT_STEP, "s") for _ in range(8_000))
    assert validate(many).first.code == "too_deep"
    assert time.perf_counter() - start < 2.0


def test_final_answer_block():
    full = render([Step(T.NEXT_STEP, "x"), Step(T.OUTPUT, "first"), Step(T.OUTPUT, "The answer is \\boxed{7}")])
    assert final_answer_block(full) == "The answer is \\boxed{7}"
    truncated = render([Step(T.NEXT_STEP, "x")]) + "<output>\nSo \\boxed{8}\n</outp"
    assert final_answer_block(truncated) == "So \\boxed{8}"
    assert final_answer_block(truncated.rsplit("</outp", 1)[0]) == "So \\boxed{8}"
    assert final_answer_block(render([Step(T.DIRECT_ANSWER, "\\boxed{3}")])) is None
    assert final_answer_block("") is None
    assert final_answer_block("<output>\n\n</output>\n") == ""


def test_tokens_module_imports_nothing_heavy():
    code = "import sys, rftt_plugin.tokens; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------ TagIds on unprepared tokenizers

@pytest.fixture(scope="module", params=["tiny_model_dir", "tiny_llama_dir"])
def base_tokenizer(request):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(request.getfixturevalue(request.param)))


def test_added_mode_needs_prepared_tokenizer(base_tokenizer):
    with pytest.raises(TagVocabularyError, match="rftt prepare-model"):
        TagIds.from_tokenizer(base_tokenizer)
    with pytest.raises(ValueError):
        TagIds.from_tokenizer(base_tokenizer, mode="special")


def test_text_mode(base_tokenizer):
    vocab = TagIds.from_tokenizer(base_tokenizer, mode="text")
    assert vocab.mode == "text" and vocab.stop_token_ids == () and vocab.stop_strings == CLOSE_STRINGS
    assert vocab.eos_id == base_tokenizer.eos_token_id
    for tag in TAGS:
        assert len(vocab.open_ids[tag]) > 1
        assert base_tokenizer.decode(list(vocab.open_ids[tag])) == tag.open
        assert base_tokenizer.decode(list(vocab.close_ids[tag])) == tag.close
        assert vocab.tag_for_open_id(vocab.open_ids[tag][0]) is None
    assert base_tokenizer.decode(list(vocab.newline_ids)) == "\n"
    assert vocab.check(base_tokenizer) == []
    # the text-mode ids are what the tokenizer produces for a tag inside a response
    text = "<next_step>\nx\n</next_step>\n<output>\n1\n</output>\n"
    ids = base_tokenizer.encode(text, add_special_tokens=False)
    out_ids = list(vocab.open_ids[T.OUTPUT])
    assert any(ids[i:i + len(out_ids)] == out_ids for i in range(len(ids)))
