"""rftt --version; --device/--dtype auto; one flag name per concept, old names as deprecated
aliases; rftt eval on a benchmark file of the user's own with any name."""

from __future__ import annotations

import json

import pytest

from rftt_plugin import __version__
from rftt_plugin.cli import main
from rftt_plugin.jobs.model import choose_device


def test_version(capsys):
    import re
    from pathlib import Path

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"rftt {__version__}"
    # one place: pyproject reads the version from rftt_plugin.__version__ and writes none itself
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in text and 'version = { attr = "rftt_plugin.__version__" }' in text
    assert not re.search(r'(?m)^version\s*=\s*"', text)


@pytest.mark.parametrize("device,dtype,cuda,want", [
    ("auto", "auto", True, ("cuda", "bfloat16")),
    ("auto", "auto", False, ("cpu", "float32")),
    ("cpu", "auto", True, ("cpu", "float32")),          # an explicit device wins over the GPU
    ("cuda:1", "auto", False, ("cuda:1", "bfloat16")),  # explicit values are kept as given
    ("auto", "float16", True, ("cuda", "float16")),
])
def test_device_auto(device, dtype, cuda, want):
    choice = choose_device(device, dtype, cuda)
    assert (choice.device, choice.dtype) == want
    assert choice.note.startswith("auto") == ("auto" in (device, dtype))


def test_eval_says_what_it_chose(tiny_model_dir, tmp_path, capsys):
    import torch

    src = tmp_path / "mine.jsonl"
    src.write_text(json.dumps({"question": "What is 2 + 2?", "answer": "4"}) + "\n")
    assert main(["eval", "--model", str(tiny_model_dir), "--source", f"mine={src}", "--benchmarks", "mine",
                 "--max-tokens", "2", "--out", str(tmp_path / "o"), "--quiet"]) == 0
    err = capsys.readouterr().err
    want = "device cuda, dtype bfloat16" if torch.cuda.is_available() else "device cpu, dtype float32"
    assert f"rftt eval: {want} (auto:" in err


def test_own_benchmark_with_any_name(tiny_model_dir, tmp_path, capsys):
    src = tmp_path / "my.jsonl"
    rows = [{"problem": "What is 3 + 4?", "answer": "7", "level": 1},
            {"question": "Half of 10?", "solution": "It is $\\boxed{5}$."},
            {"question": "Both roots of x^2 = 4?", "final_answer": ["2", "-2"]}]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "o"
    assert main(["eval", "--model", str(tiny_model_dir), "--source", f"my_set={src}", "--benchmarks", "my_set",
                 "--max-tokens", "2", "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    records = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in records) == ["my_set-0", "my_set-1", "my_set-2"]
    results = json.loads((out / "results.json").read_text())
    assert results["summary"]["benchmarks"]["my_set"]["n"] == 3


def test_own_benchmark_missing_field_names_file_row_field(tiny_model_dir, tmp_path, capsys):
    src = tmp_path / "my.jsonl"
    src.write_text(json.dumps({"question": "1 + 1?", "answer": "2"}) + "\n" + json.dumps({"text": "no question"}) + "\n")
    rc = main(["eval", "--model", str(tiny_model_dir), "--source", f"mine={src}", "--benchmarks", "mine",
               "--out", str(tmp_path / "o"), "--quiet", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and f"{src}:2: field 'problem/question': missing" in err
    src.write_text(json.dumps({"question": "1 + 1?"}) + "\n")
    rc = main(["eval", "--model", str(tiny_model_dir), "--source", f"mine={src}", "--benchmarks", "mine",
               "--out", str(tmp_path / "o2"), "--quiet", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and f"{src}:1: field 'answer/final_answer/solution': missing" in err


def test_unknown_name_without_a_source_says_how(tiny_model_dir, tmp_path, capsys):
    assert main(["eval", "--model", str(tiny_model_dir), "--benchmarks", "mydata", "--out", str(tmp_path / "o")]) == 2
    assert "--source mydata=FILE" in capsys.readouterr().err


def test_eval_help_states_the_fields(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for needed in ("--source NAME=FILE --benchmarks NAME", "'problem' or 'question'", "'answer' or 'final_answer'"):
        assert needed in text, needed
    assert "shared" not in text


@pytest.mark.parametrize("old,new,extra", [
    ("--no-progress", "--quiet", []),
    ("--logprob-method", "--tag-readout", ["top_logprobs"]),
])
def test_search_deprecated_aliases(tmp_path, capsys, old, new, extra):
    q = tmp_path / "q.jsonl"
    q.write_text(json.dumps({"question": "1 + 1?", "answer": "2"}) + "\n")
    base = ["search", "--backend", "fake", "--questions", str(q), "--iterations", "2"]
    assert main([*base, "--out", str(tmp_path / "a"), old, *extra]) == 0
    err = capsys.readouterr().err
    assert f"{old} is deprecated and will be removed in 0.3.0; use {new}" in err
    assert main([*base, "--out", str(tmp_path / "b"), new, *extra]) == 0
    assert "deprecated" not in capsys.readouterr().err


def test_parsed_values_of_alias_and_new_name_agree():
    import argparse

    from rftt_plugin.commands import eval as eval_cmd, search as search_cmd

    def parse(module, argv):
        p = argparse.ArgumentParser()
        module.add_arguments(p)
        return p.parse_args(argv)

    common = ["--model", "m", "--out", "o"]
    assert parse(eval_cmd, [*common, "--rollouts", "1,4"]).rollouts == parse(eval_cmd, [*common, "--iterations", "1,4"]).rollouts == "1,4"
    s = ["--questions", "q", "--out", "o"]
    assert parse(search_cmd, [*s, "--no-progress"]).quiet is True and parse(search_cmd, s).quiet is False
    assert parse(search_cmd, [*s, "--logprob-method", "top_logprobs"]).logprob_method == "top_logprobs"
    assert parse(search_cmd, s).logprob_method == "auto"  # the recipe's default too
