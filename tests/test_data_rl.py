"""`rftt data rl`: verl RL parquet from local files, bad rows named, verl's dataset reads it."""

from __future__ import annotations

import json

import pyarrow.parquet as pq

from rftt_plugin.cli import main


def _jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_math_style_rows_become_verl_rows(tmp_path):
    src = _jsonl(tmp_path / "math.jsonl", [
        {"problem": "What is $1+1$?", "solution": "Clearly $1+1=\\boxed{2}$.", "level": "Level 1", "type": "Algebra"},
        {"problem": "Half of one?", "solution": "It is \\boxed{\\frac{1}{2}}."},
        {"question": "GSM: 3 apples?", "answer": "3 apples.\n#### 1,003"},
        {"problem": "Olympiad", "final_answer": ["$1$", "$2$"]},
    ])
    assert main(["data", "rl", "--source", str(src), "--out", str(tmp_path / "out")]) == 0
    rows = pq.read_table(tmp_path / "out" / "train.parquet").to_pylist()
    assert [r["prompt"] for r in rows][0] == [{"role": "user", "content": "What is $1+1$?"}]
    assert [r["reward_model"]["ground_truth"] for r in rows] == ["2", "\\frac{1}{2}", "3 apples.\n#### 1,003",
                                                                  '["$1$", "$2$"]']
    assert [r["extra_info"]["index"] for r in rows] == [0, 1, 2, 3]
    assert rows[0]["extra_info"]["level"] == "Level 1" and rows[0]["extra_info"]["subject"] == "Algebra"
    assert {r["data_source"] for r in rows} == {"rftt_math"}
    from rftt_plugin.reward.extract import normalize_gold

    assert normalize_gold(rows[2]["reward_model"]["ground_truth"]).items == ("1003",)


def test_bad_rows_are_named_and_kept(tmp_path, capsys):
    src = _jsonl(tmp_path / "bad.jsonl", [
        {"problem": "ok", "answer": "5"},
        "{not json",
        {"problem": "", "answer": "1"},
        {"problem": "no gold here"},
        {"problem": "unboxed", "solution": "no box at all"},
    ])
    out = tmp_path / "out"
    assert main(["data", "rl", "--source", str(src), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"{src}:2" in err and "invalid JSON" in err
    assert f"{src}:3: field 'problem': empty" in err
    assert f"{src}:5: field 'solution'" in err
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert [r["where"] for r in rejected] == [f"{src}:{i}" for i in (2, 3, 4, 5)]
    assert len(pq.read_table(out / "train.parquet")) == 1
    assert main(["data", "rl", "--source", str(src), "--out", str(tmp_path / "o2"), "--strict"]) == 1


def test_missing_file_and_all_bad_fail_clearly(tmp_path, capsys):
    assert main(["data", "rl", "--source", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o")]) == 2
    assert "no such file" in capsys.readouterr().err
    src = _jsonl(tmp_path / "allbad.jsonl", [{"x": 1}])
    assert main(["data", "rl", "--source", str(src), "--out", str(tmp_path / "o")]) == 2  # one error style: exit 2 (issue 17)


def test_holdout_split_and_verl_dataset_reads_it(tmp_path, bench_data_dir, tiny_model_dir):
    src = f"{bench_data_dir}/eval/math500.jsonl"
    out = tmp_path / "out"
    assert main(["data", "rl", "--source", src, "--out", str(out), "--limit", "3", "--test-size", "2"]) == 0
    train = pq.read_table(out / "train.parquet").to_pylist()
    test = pq.read_table(out / "test.parquet").to_pylist()
    assert (len(train), len(test)) == (3, 2)
    rows = [json.loads(line) for line in open(src, encoding="utf-8")]  # the fixture has 7 rows
    assert [r["prompt"][0]["content"] for r in test] == [r["problem"] for r in rows[-2:]]  # the tail of the source
    assert not {r["prompt"][0]["content"] for r in train} & {r["prompt"][0]["content"] for r in test}

    from omegaconf import OmegaConf
    from transformers import AutoTokenizer
    from verl.utils.dataset.rl_dataset import RLHFDataset

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    cfg = OmegaConf.create({"prompt_key": "prompt", "max_prompt_length": 4096, "filter_overlong_prompts": False,
                            "return_raw_chat": True, "truncation": "error"})
    ds = RLHFDataset(data_files=[str(out / "train.parquet")], tokenizer=tok, config=cfg)
    item = ds[0]
    assert item["raw_prompt"][0]["role"] == "user"
    assert item["reward_model"]["ground_truth"] == train[0]["reward_model"]["ground_truth"]
    assert item["extra_info"]["index"] == 0
