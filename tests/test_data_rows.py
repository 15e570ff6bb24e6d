"""One question-row parser: `rftt data rl`, the benchmark loaders, `rftt search` and phase 1 read a
row the same way and name a broken row the same way (`file:row: field 'name': reason`)."""

from __future__ import annotations

import json

import pytest

from rftt_plugin.data.benchmarks import BENCHMARKS, item_from_record, user_spec
from rftt_plugin.data.rl import build_rows
from rftt_plugin.data.rows import RowError, RowFields, gold_of, question_and_gold, question_of, read_gold
from rftt_plugin.data.sources import Record


def rec(data, where="q.jsonl:3"):
    return Record(where, 3, data)


@pytest.mark.parametrize("data, question, as_written, items", [
    ({"problem": "1+1?", "answer": "2"}, "1+1?", "2", ("2",)),
    ({"Problem": " 1+1? ", "Answer": 2.0}, "1+1?", "2", ("2",)),                      # other spelling, float
    ({"question": "q", "answer": "x\n#### 1,003"}, "q", "x\n#### 1,003", ("1003",)),   # GSM8K
    ({"problem": "p", "solution": "so $\\boxed{\\frac12}$."}, "p", "\\frac12", ("\\frac12",)),
    ({"problem": "p", "final_answer": ["$1$", "$2$"]}, "p", '["$1$", "$2$"]', ("1", "2")),
    ({"problem": "p", "answer": [4]}, "p", "4", ("4",)),
    ({"prompt": [{"role": "user", "content": "chat q"}], "gold": "7"}, "chat q", "7", ("7",)),
])
def test_a_good_row_gives_its_question_and_gold(data, question, as_written, items):
    assert question_of(rec(data)) == question
    gold = read_gold(rec(data))
    assert (gold.text, gold.items) == (as_written, items)
    assert gold_of(rec(data)) == as_written
    assert question_and_gold(rec(data), []) == (question, as_written)


@pytest.mark.parametrize("data, message", [
    ({"answer": "2"}, "q.jsonl:3: field 'problem/question/prompt/query': missing"),
    ({"problem": "  ", "answer": "2"}, "q.jsonl:3: field 'problem': empty"),
    ({"problem": 5, "answer": "2"}, "q.jsonl:3: field 'problem': expected text, got int"),
    ({"problem": "p"}, "q.jsonl:3: field 'answer/final_answer/ground_truth/gold/solution/reference_solution': missing"),
    ({"problem": "p", "answer": None}, "q.jsonl:3: field 'answer': null; expected the answer as text or a number"),
    ({"problem": "p", "answer": True}, "q.jsonl:3: field 'answer': is a bool; expected the answer as text or a number"),
    ({"problem": "p", "answer": {"v": 1}}, "q.jsonl:3: field 'answer': is a dict; expected the answer as text or a number"),
    ({"problem": "p", "answer": []}, "q.jsonl:3: field 'answer': empty list; expected the answer as text or a number"),
    ({"problem": "p", "answer": [1, None]}, "q.jsonl:3: field 'answer': list holds a null; expected text or numbers"),
    ({"problem": "p", "answer": " "}, "q.jsonl:3: field 'answer': empty"),
    ({"problem": "p", "solution": "no box"},
     "q.jsonl:3: field 'solution': no gold field and no \\boxed{} answer in the solution"),
])
def test_a_broken_row_is_named_by_file_row_and_field(data, message):
    with pytest.raises(RowError) as exc:
        question_of(rec(data)), gold_of(rec(data))
    assert str(exc.value) == message
    rejected: list[dict] = []
    assert question_and_gold(rec(data), rejected) is None
    assert f"{rejected[0]['where']}: field {rejected[0]['field']!r}: {rejected[0]['reason']}" == message


def test_an_unreadable_line_is_an_error_on_every_field():
    rejected: list[dict] = []
    assert question_and_gold(rec({"__error__": "invalid JSON (x)"}), rejected) is None
    assert rejected == [{"where": "q.jsonl:3", "field": "*", "reason": "invalid JSON (x)"}]


def test_the_rl_parquet_and_a_user_benchmark_read_the_same_row_the_same_way():
    rows = [{"problem": "A?", "answer": "\\$1,250"}, {"problem": "B?", "solution": "\\boxed{3}"},
            {"problem": "C?", "final_answer": ["$1$", "$2$"]}, {"problem": "D?", "answer": None}]
    spec = user_spec("mine")
    items, bench_errors = [], []
    for i, data in enumerate(rows):
        try:
            items.append(item_from_record(rec(data, f"f:{i + 1}"), spec, i))
        except RowError as exc:
            bench_errors.append(str(exc))
    rl_rows = build_rows([rec(d, f"f:{i + 1}") for i, d in enumerate(rows)], split="train")
    assert [it.question for it in items] == [r["prompt"][0]["content"] for r in rl_rows] == ["A?", "B?", "C?"]
    # the parquet keeps the answer as written (the reward normalises it), the benchmark its items
    assert [r["reward_model"]["ground_truth"] for r in rl_rows] == ["\\$1,250", "3", '["$1$", "$2$"]']
    assert [it.gold for it in items] == ["1250", "3", '["1", "2"]']
    assert bench_errors == ["f:4: field 'answer': null; expected the answer as text or a number"]


def test_benchmark_fields_and_context_come_from_the_spec():
    spec = BENCHMARKS["olympiadbench"]
    data = {"question": "Find a.", "context": "Let a=1.", "final_answer": ["$1$"], "problem": "ignored"}
    assert item_from_record(rec(data), spec, 0).question == "Let a=1.\n\nFind a."
    assert question_of(rec(data)) == "ignored"  # the generic order puts 'problem' first, no context
    narrow = RowFields(("q",), ("a",), ())
    with pytest.raises(RowError, match="field 'a': missing"):
        read_gold(rec({"q": "x", "answer": "1"}), narrow)
    assert json.loads(read_gold(rec({"a": ["2", 3.0]}), narrow).text) == ["2", "3"]
