"""Benchmark loaders: every shipped file loads with the right counts and golds that the reward
accepts; broken rows are named; sources resolve (local file, directory, data dir, dataset id)."""

from __future__ import annotations

import json
import os
import random
import re

import pytest

from rftt_plugin.data.benchmarks import (
    BENCHMARKS,
    BenchmarkError,
    default_data_dir,
    item_from_record,
    load_benchmark,
    parse_benchmark_list,
    resolve_source,
)
from rftt_plugin.data.rows import RowError
from rftt_plugin.data.sources import Record
from rftt_plugin.reward.extract import normalize_gold

EXPECTED = {"math500": 500, "gsm8k": 1319, "aime24": 30, "amc23": 40, "olympiadbench": 675}
RAW_GOLD_FIELD = {"math500": "answer", "gsm8k": "answer", "aime24": "answer", "amc23": "answer",
                  "olympiadbench": "final_answer"}
FILES = {"math500": "math500.jsonl", "gsm8k": "gsm8k_test.jsonl", "aime24": "aime24.jsonl",
         "amc23": "amc23.jsonl", "olympiadbench": "olympiadbench.jsonl"}


# Every loader test runs on the small files in tests/fixtures (always) and on the full public
# sets where a copy is at hand (marked fulldata; skipped on a user's clone).
@pytest.fixture(scope="module", params=["fixtures", pytest.param("full", marks=pytest.mark.fulldata)])
def eval_dir(request):
    root = request.getfixturevalue("bench_data_dir" if request.param == "fixtures" else "full_data_dir")
    return os.path.join(root, "eval")


@pytest.fixture(scope="module")
def loaded(eval_dir):
    return {name: load_benchmark(name, data_dir=eval_dir) for name in EXPECTED}


def _raw_rows(eval_dir, bench):
    with open(os.path.join(eval_dir, FILES[bench]), encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _is_full(eval_dir):
    return not eval_dir.startswith(os.path.dirname(__file__))


def test_registry_covers_the_five_benchmarks():
    assert set(BENCHMARKS) == set(EXPECTED)
    assert parse_benchmark_list("MATH-500, gsm8k,aime,amc23,olympiad,gsm8k") == [
        "math500", "gsm8k", "aime24", "amc23", "olympiadbench"]
    with pytest.raises(BenchmarkError, match="unknown benchmark 'mmlu'"):
        parse_benchmark_list("math500,mmlu")


@pytest.mark.parametrize("bench", list(EXPECTED))
def test_counts_ids_and_gold_roundtrip(loaded, eval_dir, bench):
    b = loaded[bench]
    raw = _raw_rows(eval_dir, bench)
    assert len(b) == len(raw)
    if _is_full(eval_dir):
        assert len(b) == EXPECTED[bench] == b.spec.expected_rows
    assert b.source.kind == "local" and b.source.location.startswith(eval_dir)
    assert [it.id for it in b] == [f"{bench}-{i}" for i in range(len(b))]
    for item, row in zip(b, raw):
        assert item.question and item.benchmark == bench
        assert item.metadata["source"].endswith(f":{int(item.id.rsplit('-', 1)[1]) + 1}")
        # The stored gold normalises to the same items as the raw field: nothing was lost.
        want = normalize_gold(row[RAW_GOLD_FIELD[bench]], bench).items
        assert normalize_gold(item.gold).items == want, (item.id, item.gold)


# First golds as written in each file (read by hand), after the loader's normalisation.
FIRST_GOLDS = {
    "full": {"amc23": "27", "gsm8k": "18", "math500": "\\left( 3, \\frac{\\pi}{2} \\right)"},
    "fixtures": {"amc23": "27", "gsm8k": "18", "math500": "10"},
}


def test_gold_formats(loaded, eval_dir):
    first = FIRST_GOLDS["full" if _is_full(eval_dir) else "fixtures"]
    assert all(re.fullmatch(r"-?\d+", it.gold) for it in loaded["amc23"]), "AMC golds are integers without .0"
    assert loaded["amc23"].items[0].gold == first["amc23"]
    assert all(re.fullmatch(r"[1-9]\d{0,2}|0", it.gold) for it in loaded["aime24"])  # "025" -> "25"
    assert "25" in {it.gold for it in loaded["aime24"]}
    assert all(re.fullmatch(r"-?\d+(\.\d+)?", it.gold) for it in loaded["gsm8k"]), "GSM8K: number after ####, no commas"
    assert loaded["gsm8k"].items[0].gold == first["gsm8k"]
    assert loaded["math500"].items[0].gold == first["math500"]


def test_metadata_for_breakdowns(loaded, eval_dir):
    # full sets: MATH-500's 5 levels and 7 subjects, OlympiadBench's 94 multi-answer rows;
    # the fixture files were written with the same spread (7 math500 rows, 2 multi-answer rows)
    levels = {it.metadata["level"] for it in loaded["math500"]}
    assert levels == {1, 2, 3, 4, 5}
    assert len({it.metadata["subject"] for it in loaded["math500"]}) == 7
    ob = loaded["olympiadbench"]
    assert {it.metadata["answer_type"] for it in ob} >= {"Numerical", "Expression", "Tuple", "Interval"}
    assert sum(it.metadata["is_multiple_answer"] for it in ob) == (94 if _is_full(eval_dir) else 2)
    assert any(it.metadata.get("unit") for it in ob)
    multi = [it for it in ob if it.metadata.get("gold_items", 1) > 1]
    assert multi and all(json.loads(it.gold) and len(json.loads(it.gold)) == it.metadata["gold_items"] for it in multi)


def _sample(items, n, seed):
    rng = random.Random(seed)
    return [items[0]] + rng.sample(items[1:], min(n, len(items) - 1))


@pytest.mark.parametrize("bench", list(EXPECTED))
def test_boxed_gold_scores_correct(loaded, bench):
    """The gold, boxed in an <output> block, is what the grader calls correct (a sample of rows)."""
    from rftt_plugin.reward import score_response

    items = loaded[bench].items
    sample = _sample(items, 6, seed=len(bench))
    if bench == "olympiadbench":  # include rows with several gold items
        sample += [it for it in items if it.metadata.get("gold_items", 1) > 1][:3]
    for item in sample:
        text = ", ".join(normalize_gold(item.gold).items)
        response = f"<next_step>\nwork\n</next_step>\n<output>\nThe answer is \\boxed{{{text}}}.\n</output>\n"
        result = score_response(response, item.gold, data_source=bench)
        assert result.acc, (item.id, item.gold, result)
        assert result.format_ok
        wrong = score_response(response.replace(text, "123456789"), item.gold, data_source=bench)
        assert not wrong.acc, item.id


# ----------------------------------------------------------------------------------------------
# sources
# ----------------------------------------------------------------------------------------------

def test_default_data_dir_is_the_env_var_or_the_working_directory(monkeypatch, tmp_path):
    """Only $RFTT_DATA_DIR and ./data/eval count: a user's clone has nothing beside it, so the
    product never looks outside (e.g. at a ../shared folder of a workplace)."""
    monkeypatch.delenv("RFTT_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shared" / "data" / "eval").mkdir(parents=True)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # ../shared/data/eval exists here and is ignored
    assert default_data_dir() is None
    (tmp_path / "cwd" / "data" / "eval").mkdir(parents=True)
    assert str(default_data_dir()) == str((tmp_path / "cwd" / "data" / "eval").resolve())
    monkeypatch.setenv("RFTT_DATA_DIR", str(tmp_path))
    assert str(default_data_dir()) == str(tmp_path.resolve())


def test_resolve_source_order(tmp_path, bench_data_dir):
    eval_dir = os.path.join(bench_data_dir, "eval")
    # data_dir may be the parent of eval/
    assert resolve_source("gsm8k", data_dir=bench_data_dir).location == os.path.join(eval_dir, "gsm8k_test.jsonl")
    # an explicit source wins; a directory source is searched for the benchmark's file names
    own = tmp_path / "mine.jsonl"
    own.write_text(json.dumps({"problem": "1+1?", "answer": 2.0}) + "\n")
    assert resolve_source("amc23", str(own), data_dir=eval_dir).location == str(own)
    assert resolve_source("amc23", eval_dir).location == os.path.join(eval_dir, "amc23.jsonl")
    # no local copy: the public dataset id with its subset and split
    hub = resolve_source("olympiadbench", data_dir=tmp_path)
    assert (hub.kind, hub.location, hub.subset, hub.split) == ("hub", "Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train")
    assert resolve_source("gsm8k").label == "openai/gsm8k/main[test]"
    assert resolve_source("aime24", "Maxwell-Jia/AIME_2024").kind == "hub"
    with pytest.raises(BenchmarkError, match="no such file"):
        resolve_source("amc23", str(tmp_path / "missing.jsonl"))
    with pytest.raises(BenchmarkError, match="no math500 file"):
        resolve_source("math500", str(tmp_path))
    loaded = load_benchmark("amc23", source=str(own))
    assert [(it.question, it.gold) for it in loaded] == [("1+1?", "2")]


def test_hub_id_offline_gives_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(BenchmarkError, match=r"aime24: .*HuggingFaceH4/aime_2024.*--data-dir"):
        load_benchmark("aime24")


def test_hub_style_rows(tmp_path):
    """Copies with other field spellings (AIME 'Problem'/'Answer' as int; parquet) load too."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "aime_2024.parquet"
    pq.write_table(pa.Table.from_pylist([{"ID": "2024-I-1", "Problem": "Find x.", "Solution": "...", "Answer": 25}]), path)
    b = load_benchmark("aime24", data_dir=tmp_path)
    assert b.source.location == str(path)
    assert (b.items[0].question, b.items[0].gold) == ("Find x.", "25")
    # OlympiadBench rows from the hub carry numpy arrays and physics-style context
    import numpy as np

    rec = Record("hub:1", 1, {"id": 7, "question": "Find $a$ and $b$.", "context": "Let $a+b=3$.",
                              "final_answer": np.array(["$1$", "$2$"], dtype=object), "is_multiple_answer": True,
                              "unit": None, "answer_type": "Numerical", "error": None})
    item = item_from_record(rec, BENCHMARKS["olympiadbench"], 0)
    assert item.question == "Let $a+b=3$.\n\nFind $a$ and $b$."
    assert json.loads(item.gold) == ["1", "2"] and item.metadata["is_multiple_answer"] is True
    assert "unit" not in item.metadata
    # MATH-lighteval style level strings
    rec = Record("x:1", 1, {"problem": "p", "solution": "so \\boxed{3}", "level": "Level 4", "type": "Algebra"})
    item = item_from_record(rec, BENCHMARKS["math500"], 0)
    assert (item.gold, item.metadata["level"], item.metadata["subject"]) == ("3", 4, "Algebra")


def test_broken_rows_are_named(tmp_path):
    path = tmp_path / "math500.jsonl"
    path.write_text("\n".join([
        json.dumps({"problem": "ok", "answer": "5", "level": 1, "subject": "Algebra"}),
        '{"problem": "torn',
        json.dumps({"problem": "no gold", "solution": "no box here"}),
        json.dumps({"problem": "", "answer": "1"}),
        json.dumps({"problem": "bad gold", "answer": "  "}),
    ]) + "\n")
    with pytest.raises(RowError, match=rf"{re.escape(str(path))}:2: field '\*': invalid JSON"):
        load_benchmark("math500", data_dir=tmp_path)
    b = load_benchmark("math500", data_dir=tmp_path, on_error="skip")
    assert [it.question for it in b] == ["ok"]
    assert [(e.where.rsplit(":", 1)[1], e.field) for e in b.rejected] == [
        ("2", "*"), ("3", "solution"), ("4", "problem"), ("5", "answer")]
    assert "no \\boxed{}" in b.rejected[1].reason
    # limit stops reading before the broken rows
    assert len(load_benchmark("math500", data_dir=tmp_path, limit=1)) == 1
