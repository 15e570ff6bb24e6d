"""Issue 17: every careless or hostile input gives ONE clear line (file/row/field + hint), exit 2,
no traceback unless ``--debug``, and nothing heavy before the checks. Each test is named after the
user mistake it covers; the expected messages are written out by hand."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rftt_plugin import cli
from rftt_plugin.errors import UserError
from tests.helpers import clean_env

REPO = Path(__file__).resolve().parents[1]


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _run(argv: list[str], capsys) -> tuple[int, str]:
    """rc and the stderr of an in-process ``rftt`` call; asserts the one-line error style."""
    rc = cli.main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if rc == 2:
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1, err
        assert lines[0].startswith(f"rftt {argv[0]}: error: ") and "; hint: " in lines[0], lines[0]
    return rc, err.strip()


@pytest.fixture
def no_model_loading(monkeypatch):
    """Any attempt to load a model or tokenizer fails the test: the checks must come first."""
    import transformers

    def boom(*a, **k):
        raise AssertionError("a model/tokenizer was loaded before the input checks")

    for cls in (transformers.AutoTokenizer, transformers.AutoModelForCausalLM, transformers.AutoConfig):
        monkeypatch.setattr(cls, "from_pretrained", boom)
    from rftt_plugin.backends import hf

    monkeypatch.setattr(hf.HFBackend, "from_pretrained", classmethod(lambda cls, *a, **k: boom()))


@pytest.fixture
def questions(tmp_path):
    return _jsonl(tmp_path / "q.jsonl", [{"question": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(3)])


def _search(out, questions, *extra):
    return ["search", "--backend", "fake", "--questions", str(questions), "--out", str(out), "--iterations", "2",
            "--quiet", *extra]


# ----------------------------------------------------------------------------------------------
# rftt search: input rows
# ----------------------------------------------------------------------------------------------

def test_search_question_file_with_an_invalid_json_line(tmp_path, capsys):
    q = tmp_path / "q.jsonl"
    q.write_text('{"question": "1 + 1?", "answer": "2"}\n{"question": "2 + 2?", "answer": 4\n')
    rc, err = _run(_search(tmp_path / "o", q), capsys)
    assert rc == 2
    assert f"{q}:2: invalid JSON (Expecting ',' delimiter at column 35); hint: fix or delete that line" in err
    assert "missing" not in err


@pytest.mark.parametrize("answer, kind", [({"value": 4}, "dict"), (True, "bool"), (None, "null")])
def test_search_answer_that_is_a_dict_bool_or_null(tmp_path, capsys, answer, kind):
    q = _jsonl(tmp_path / "q.jsonl", [{"question": "1 + 1?", "answer": "2"}, {"question": "2 + 2?", "answer": answer}])
    rc, err = _run(_search(tmp_path / "o", q), capsys)
    assert rc == 2
    expected = (f"{q}:2: field 'answer': null" if kind == "null"
                else f"{q}:2: field 'answer': is a {kind}; expected the answer as text or a number")
    assert expected in err


def test_search_list_answers_one_item_is_the_answer_longer_is_a_multi_part_answer(tmp_path, capsys):
    q = _jsonl(tmp_path / "q.jsonl", [{"question": "2 + 2?", "answer": [4]},
                                      {"question": "roots of x^2 = 1?", "answer": ["-1", 1.0]},
                                      {"question": "no gold at all"}])
    rc, _ = _run(_search(tmp_path / "o", q), capsys)
    assert rc == 0
    golds = [t["gold"] for t in json.loads((tmp_path / "o" / "summary.json").read_text())["trees"]]
    assert golds == ["4", '["-1", "1"]', None]


def test_search_question_longer_than_the_model_window(tmp_path, capsys, tiny_model_dir, monkeypatch):
    from rftt_plugin.backends import hf

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the length check")

    monkeypatch.setattr(hf.HFBackend, "from_pretrained", classmethod(lambda cls, *a, **k: no_load()))
    long_question = "What is 1 + 1? " * 1500  # ~ 10k tokens; the tiny model's window is 2048
    q = _jsonl(tmp_path / "q.jsonl", [{"question": "2 + 2?", "answer": "4"}, {"question": long_question, "answer": "2"}])
    t0 = time.perf_counter()
    rc, err = _run(["search", "--backend", "hf", "--model", str(tiny_model_dir), "--questions", str(q),
                    "--out", str(tmp_path / "o"), "--token-mode", "text", "--quiet"], capsys)
    assert rc == 2 and time.perf_counter() - t0 < 20
    assert f"{q}:2: field 'question': " in err and "but the model window is 2048 tokens" in err
    assert not (tmp_path / "o" / "trees").exists()


def test_search_tree_that_fails_mid_search_makes_the_exit_status_nonzero(tmp_path, capsys, monkeypatch):
    from rftt_plugin.search import mcts

    real = mcts.FunctionalMCTS.search

    async def failing(self, question, *a, **k):
        result = await real(self, question, *a, **k)
        if "1 + 1" in question:
            result.tree.meta["error"] = "ValueError: prompt does not fit"
        return result

    monkeypatch.setattr(mcts.FunctionalMCTS, "search", failing)
    q = _jsonl(tmp_path / "q.jsonl", [{"question": "0 + 1?", "answer": "1"}, {"question": "1 + 1?", "answer": "2"}])
    rc = cli.main(_search(tmp_path / "o", q))
    err = capsys.readouterr().err
    assert rc == 1
    assert "rftt search: error: 1 of 2 trees failed; first: trees/00001.json (question 1): " \
           "ValueError: prompt does not fit" in err


# ----------------------------------------------------------------------------------------------
# rftt search: --out holds one run only
# ----------------------------------------------------------------------------------------------

def test_search_rerun_into_an_out_of_a_larger_run(tmp_path, capsys, questions):
    out = tmp_path / "o"
    assert _run(_search(out, questions), capsys)[0] == 0
    assert len(list((out / "trees").iterdir())) == 3
    rc, err = _run(_search(out, questions, "--limit", "2"), capsys)
    assert rc == 2 and f"--out {out} holds trees of another search (questions: the run has 3, this command has 2)" in err
    assert len(list((out / "trees").iterdir())) == 3  # refused: nothing touched
    assert _run(_search(out, questions, "--limit", "2", "--overwrite"), capsys)[0] == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["totals"]["questions"] == 2
    assert sorted(p.name for p in (out / "trees").iterdir()) == ["00000.json", "00001.json"]  # no stale tree
    assert _run(_search(out, questions, "--limit", "2"), capsys)[0] == 0  # the same run again: fine


def test_search_into_a_directory_that_holds_other_files(tmp_path, capsys, questions):
    out = tmp_path / "o"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    rc, err = _run(_search(out, questions), capsys)
    assert rc == 2 and f"--out {out}: not empty and not an `rftt search` output (notes.txt)" in err


def test_search_after_the_model_weights_were_overwritten(tmp_path, capsys, tiny_model_dir):
    from rftt_plugin.tiny_model import build_tiny_model

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    q = _jsonl(tmp_path / "q.jsonl", [{"question": "2 + 2?", "answer": "4"}])
    argv = ["search", "--backend", "hf", "--model", str(model), "--questions", str(q), "--out", str(tmp_path / "o"),
            "--token-mode", "text", "--iterations", "1", "--step-max-tokens", "2", "--no-grade", "--quiet"]
    assert _run(argv, capsys)[0] == 0
    build_tiny_model(model, seed=1)  # same path, new weights
    capsys.readouterr()
    rc, err = _run(argv, capsys)
    assert rc == 2 and "holds trees of another search (weights: the run has sha256:" in err


# ----------------------------------------------------------------------------------------------
# Non-UTF-8 input: every reader names the file and line
# ----------------------------------------------------------------------------------------------

@pytest.fixture
def latin1_file(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"problem": "What is 1 + 1?", "answer": "2"}\n'
                     b'{"problem": "Caf\xe9 sells 3 cups; 2 more?", "answer": "5"}\n')
    return path


def _not_utf8(path) -> str:
    return f"{path}:2: not UTF-8 (byte 0xe9 at column 17); hint: re-encode the file as UTF-8"


def test_search_question_file_that_is_not_utf8(tmp_path, capsys, latin1_file):
    rc, err = _run(_search(tmp_path / "o", latin1_file), capsys)
    assert rc == 2 and _not_utf8(latin1_file) in err


def test_data_rl_source_that_is_not_utf8(tmp_path, capsys, latin1_file):
    rc, err = _run(["data", "rl", "--source", str(latin1_file), "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and _not_utf8(latin1_file) in err
    assert not (tmp_path / "o" / "train.parquet").exists()


def test_eval_benchmark_file_that_is_not_utf8(tmp_path, capsys, latin1_file, tiny_model_dir, no_model_loading):
    rc, err = _run(["eval", "--model", str(tiny_model_dir), "--benchmarks", "math500", "--source",
                    f"math500={latin1_file}", "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert rc == 2 and _not_utf8(latin1_file) in err


def test_gen_sft_source_that_is_not_utf8(tmp_path, capsys, latin1_file, tiny_model_dir, no_model_loading):
    rc, err = _run(["gen-sft", "--backend", "hf", "--model", str(tiny_model_dir), "--source", str(latin1_file),
                    "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert rc == 2 and _not_utf8(latin1_file) in err


def test_json_source_that_is_not_utf8_names_the_line(tmp_path, capsys):
    path = tmp_path / "rows.json"
    path.write_bytes(b'[\n {"problem": "1 + 1?", "answer": "2"},\n {"problem": "\xff", "answer": "1"}\n]\n')
    rc, err = _run(["data", "rl", "--source", str(path), "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and f"{path}:3: not UTF-8 (byte 0xff at column 15)" in err


# ----------------------------------------------------------------------------------------------
# Path mistakes: --model and --out, checked before anything heavy
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", [["search", "--backend", "hf", "--questions", "{q}"],
                                     ["gen-sft", "--backend", "hf", "--source", "{q}"], ["eval"], ["prepare-model"]])
def test_model_that_is_a_missing_directory(tmp_path, capsys, questions, no_model_loading, command):
    argv = [a.replace("{q}", str(questions)) for a in command]
    rc, err = _run([*argv, "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and f"--model {tmp_path / 'nope'}: no such directory; hint: " in err


def test_data_source_typo_in_a_relative_path_is_no_dataset_id(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    for source in ("data/math_train", "runs/data/train"):
        rc, err = _run(["data", "rl", "--source", source, "--out", "o"], capsys)
        assert rc == 2 and f"{source}: no such file" in err, err


@pytest.mark.parametrize("module_name", ["rftt_plugin.fingerprint", "rftt_plugin.errors", "rftt_plugin.tree_view.validate",
                                         "rftt_plugin.jobs.checks", "rftt_plugin.data.sources",
                                         "rftt_plugin.store.run_dir"])
def test_doctests(module_name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module_name))
    assert result.failed == 0 and result.attempted > 0


def test_model_that_is_a_data_directory(tmp_path, capsys, questions, no_model_loading):
    data = tmp_path / "data"
    data.mkdir()
    (data / "math500.jsonl").write_text("{}\n")
    for cmd in (["search", "--backend", "hf", "--questions", str(questions)],
                ["gen-sft", "--backend", "hf", "--source", str(questions)],
                ["eval"], ["prepare-model"]):
        rc, err = _run([*cmd, "--model", str(data), "--out", str(tmp_path / "o")], capsys)
        assert rc == 2, cmd
        assert (f"--model {data}: not a Hugging Face checkpoint directory (no config.json; it holds data files "
                f"(math500.jsonl))") in err
        assert "sentencepiece" not in err


def test_model_that_is_a_file(tmp_path, capsys, questions, no_model_loading):
    rc, err = _run(["search", "--backend", "hf", "--model", str(questions), "--questions", str(questions),
                    "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and f"--model {questions}: is a file, not a checkpoint directory" in err


@pytest.mark.parametrize("typo", ["ckpt/qwen-rfft", "./ckpt/qwen-rfft", "ckpt-rftt", "runs/ckpt/qwen"])
def test_model_typo_in_a_relative_path_never_goes_to_the_hub(tmp_path, capsys, questions, monkeypatch,
                                                               no_model_loading, typo):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # online: only the rule keeps it off the hub
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    (tmp_path / "ckpt" / "qwen-rftt").mkdir(parents=True)
    t0 = time.perf_counter()
    rc, err = _run(["search", "--backend", "hf", "--model", typo, "--questions", str(questions), "--out", "o"], capsys)
    assert rc == 2 and time.perf_counter() - t0 < 5
    assert f"--model {typo}: no such directory" in err
    if typo.endswith("qwen-rfft"):
        assert "did you mean ckpt/qwen-rftt?" in err
    if typo == "ckpt/qwen-rfft":
        assert "(ckpt/ is a local directory, so this is not a hub id)" in err


def test_hub_id_that_is_not_cached_while_offline(tmp_path, capsys, questions, monkeypatch, no_model_loading):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    rc, err = _run(["search", "--backend", "hf", "--model", "SomeOrg/not-downloaded-7B", "--questions",
                    str(questions), "--out", "o"], capsys)
    assert rc == 2 and "--model SomeOrg/not-downloaded-7B: no such local directory, and it is not in the " \
                       "Hugging Face cache (offline" in err


def test_hub_id_rule():
    from rftt_plugin.jobs.checks import looks_like_hub_id

    assert looks_like_hub_id("Qwen/Qwen2.5-Math-7B")
    for path in ("./ckpt", "../ckpt", "/abs/ckpt", "~/ckpt", "runs/a/b", "ckpt-rftt", "a/b/", "a\\b"):
        assert not looks_like_hub_id(path), path


@pytest.mark.parametrize("command", ["search", "gen-sft", "prepare-model", "eval", "data"])
def test_out_under_a_regular_file(tmp_path, capsys, questions, tiny_model_dir, no_model_loading, command):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    out = blocker / "run"
    argv = {"search": ["search", "--backend", "hf", "--model", str(tiny_model_dir), "--questions", str(questions)],
            "gen-sft": ["gen-sft", "--backend", "hf", "--model", str(tiny_model_dir), "--source", str(questions)],
            "prepare-model": ["prepare-model", "--model", str(tiny_model_dir)],
            "eval": ["eval", "--model", str(tiny_model_dir)],
            "data": ["data", "rl", "--source", str(questions)]}[command]
    rc, err = _run([*argv, "--out", str(out)], capsys)
    assert rc == 2 and f"--out {out}: is under {blocker}, which is a file, not a directory" in err


def test_out_on_a_location_that_cannot_be_written(tmp_path, capsys, questions, tiny_model_dir, no_model_loading):
    if os.geteuid() == 0:
        target = Path("/sys/rftt-out")  # sysfs: even root cannot create files there
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        target = ro / "out"
    for argv in (["search", "--backend", "hf", "--model", str(tiny_model_dir), "--questions", str(questions)],
                 ["gen-sft", "--backend", "hf", "--model", str(tiny_model_dir), "--source", str(questions)],
                 ["prepare-model", "--model", str(tiny_model_dir)]):
        rc, err = _run([*argv, "--out", str(target)], capsys)
        assert rc == 2 and f"--out {target}: cannot write in {target.parent} (" in err, err


# ----------------------------------------------------------------------------------------------
# rftt show
# ----------------------------------------------------------------------------------------------

@pytest.fixture
def tree_dict():
    import asyncio

    from rftt_plugin.backends.fake import FakeBackend, TagScript
    from rftt_plugin.search import FunctionalMCTS, SearchConfig
    from rftt_plugin.tag_ids import TagIds

    script = TagScript()
    mcts = FunctionalMCTS(FakeBackend.for_script(script), TagIds.from_fake(script.vocab),
                          SearchConfig(iterations=4), grade=script.grade)
    return asyncio.run(mcts.search("What is 1 + 1?", script.vocab.prompt_ids("What is 1 + 1?"))).tree.to_dict()


def _show(tmp_path, capsys, data, *extra):
    path = tmp_path / "t.json"
    path.write_text(json.dumps(data))
    return (*_run(["show", str(path), "--color", "never", *extra], capsys), path)


@pytest.mark.parametrize("data, expected", [([], "top level is a JSON list, expected a JSON object with 'nodes'"),
                                            (None, "top level is null, expected a JSON object with 'nodes'")])
def test_show_a_file_holding_an_empty_list_or_null(tmp_path, capsys, data, expected):
    rc, err, path = _show(tmp_path, capsys, data)
    assert rc == 2 and f"rftt show: error: cannot read {path}: {expected}" in err


def test_show_a_tree_with_a_dangling_child_id(tmp_path, capsys, tree_dict):
    n = len(tree_dict["nodes"])
    tree_dict["nodes"][1]["children"].append(n + 5)
    rc, err, _ = _show(tmp_path, capsys, tree_dict)
    assert rc == 2 and f"node 1: child id {n + 5} does not exist (the tree has nodes 0..{n - 1})" in err


def test_show_a_tree_with_a_parent_cycle(tmp_path, capsys, tree_dict):
    nodes = tree_dict["nodes"]
    a, b = nodes[1], nodes[nodes[1]["children"][0]] if nodes[1]["children"] else nodes[2]
    # a and b point at each other: neither is reachable from the root any more
    nodes[0]["children"].remove(a["id"])
    a["parent"], b["parent"] = b["id"], a["id"]
    b["children"] = [a["id"]]
    a["children"] = [b["id"]]
    rc, err, _ = _show(tmp_path, capsys, tree_dict)
    assert rc == 2 and "not reachable from the root (a parent cycle" in err


def test_show_a_tree_too_deep_to_draw(tmp_path, capsys, tree_dict):
    proto = tree_dict["nodes"][1]
    nodes = [dict(tree_dict["nodes"][0], children=[1])]
    for i in range(1, 601):  # a 600-step chain
        nodes.append(dict(proto, id=i, parent=i - 1, depth=i, children=[i + 1] if i < 600 else []))
    rc, err, _ = _show(tmp_path, capsys, dict(tree_dict, nodes=nodes, iterations=[]))
    assert rc == 2 and "node 501: deeper than 500 steps; no search writes such a tree" in err


def test_show_a_tree_whose_text_holds_terminal_escape_sequences(tmp_path, capsys, tree_dict):
    evil = "\x1b]0;pwned\x07\x1b[2J\x1b[31mred\x9b1m\u202eevil\x08"
    tree_dict["question"] = "Q " + evil
    for node in tree_dict["nodes"]:
        node["text"] = "step " + evil
    for color in ("never", "always"):
        rc, _, path = _show(tmp_path, capsys, tree_dict)
        assert rc == 0
        assert cli.main(["show", str(path), "--color", color]) == 0
        printed = capsys.readouterr().out
        assert "]0;pwned" in printed  # the text is kept ...
        for bad in ("\x1b]", "\x07", "\x1b[2J", "\x1b[31mred", "\x9b", "\u202e", "\x08"):  # ... the controls are not
            assert bad not in printed, (color, repr(bad))


def test_show_a_missing_file_and_a_directory(tmp_path, capsys):
    rc, err = _run(["show", str(tmp_path / "nope.json")], capsys)
    assert rc == 2 and f"{tmp_path / 'nope.json'}: no such file" in err
    rc, err = _run(["show", str(tmp_path)], capsys)
    assert rc == 2 and f"{tmp_path}: is a directory" in err


# ----------------------------------------------------------------------------------------------
# Resumable outputs refuse to mix models or inputs
# ----------------------------------------------------------------------------------------------

@pytest.fixture
def own_model(tmp_path, tiny_model_dir):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    return model


def test_eval_resume_after_the_weights_were_overwritten(tmp_path, capsys, own_model, bench_data_dir):
    from rftt_plugin.tiny_model import build_tiny_model

    base = ["eval", "--model", str(own_model), "--benchmarks", "math500", "--source",
            f"math500={bench_data_dir}/eval/math500.jsonl", "--max-tokens", "2", "--out", str(tmp_path / "o"),
            "--quiet"]
    assert cli.main(base + ["--limit", "1"]) == 0
    capsys.readouterr()
    build_tiny_model(own_model, seed=1)  # overwrite the weights at the same path
    capsys.readouterr()
    rc, err = _run(base + ["--limit", "2"], capsys)
    assert rc == 2
    assert f"rftt eval: error: {tmp_path / 'o'}: the files it was made from changed (weights" in err
    assert "weights: the run has sha256:" in err
    records = (tmp_path / "o" / "records.jsonl").read_text().splitlines()
    assert len(records) == 1  # nothing was added from the new checkpoint


def test_eval_resume_after_the_benchmark_file_changed(tmp_path, capsys, own_model, bench_data_dir):
    src = tmp_path / "math500.jsonl"
    lines = Path(bench_data_dir, "eval", "math500.jsonl").read_text().splitlines(keepends=True)
    src.write_text("".join(lines[:3]))
    base = ["eval", "--model", str(own_model), "--benchmarks", "math500", "--source", f"math500={src}",
            "--max-tokens", "2", "--out", str(tmp_path / "o"), "--quiet", "--limit", "1"]
    assert cli.main(base) == 0
    capsys.readouterr()
    src.write_text("".join(lines[:3]).replace('"solution": "', '"solution": "Edited. ', 1))
    rc, err = _run(base, capsys)
    assert rc == 2 and "the files it was made from changed (inputs.math500)" in err


def test_eval_rerun_that_adds_a_benchmark_still_resumes(tmp_path, capsys, own_model, bench_data_dir):
    base = ["eval", "--model", str(own_model), "--max-tokens", "2", "--out", str(tmp_path / "o"), "--quiet",
            "--limit", "1", "--source", f"math500={bench_data_dir}/eval/math500.jsonl",
            "--source", f"amc23={bench_data_dir}/eval/amc23.jsonl"]
    assert cli.main([*base, "--benchmarks", "math500"]) == 0
    assert cli.main([*base, "--benchmarks", "math500,amc23"]) == 0  # not a change of input: a new one
    assert "1 answered now, 1 resumed" in capsys.readouterr().out
    inputs = json.loads((tmp_path / "o" / "run.json").read_text())["fingerprint"]["inputs"]
    assert sorted(inputs) == ["amc23", "math500"]


def test_gen_sft_resume_after_the_weights_were_overwritten(tmp_path, capsys, own_model):
    from rftt_plugin.tiny_model import build_tiny_model

    src = _jsonl(tmp_path / "q.jsonl", [{"problem": "What is 2 + 3?", "answer": "5"}])
    argv = ["gen-sft", "--backend", "hf", "--model", str(own_model), "--source", str(src), "--out",
            str(tmp_path / "o"), "--max-tokens", "4", "--iterations", "1", "--quiet"]
    assert cli.main(argv) == 0
    capsys.readouterr()
    build_tiny_model(own_model, seed=1)
    capsys.readouterr()
    rc, err = _run(argv, capsys)
    assert rc == 2 and f"{tmp_path / 'o'}: the files it was made from changed (weights" in err
    # --overwrite discards the old trees and starts afresh under the new weights
    assert cli.main([*argv, "--overwrite"]) == 0


def test_fingerprint_of_a_small_file_is_its_sha256(tmp_path):
    import hashlib

    from rftt_plugin.fingerprint import file_digest

    p = tmp_path / "f.bin"
    p.write_bytes(b"x" * 1000)
    assert file_digest(p) == "sha256:" + hashlib.sha256(b"x" * 1000).hexdigest()[:16]


def test_fingerprint_of_a_large_file_changes_with_its_head_tail_and_sampled_chunks(tmp_path):
    from rftt_plugin.fingerprint import CHUNK, CHUNKS, EDGE, FULL_HASH_LIMIT, file_digest

    p = tmp_path / "big.safetensors"
    size = FULL_HASH_LIMIT + 10 * EDGE
    with p.open("wb") as f:
        f.truncate(size)  # sparse: fast to create
    base = file_digest(p)
    assert base.startswith("sha256s:")
    middle = EDGE + (size - 2 * EDGE - CHUNK) * 7 // (CHUNKS - 1) + 10  # inside the 8th sampled chunk
    for offset in (5, size - 5, middle):
        with p.open("r+b") as f:
            f.seek(offset)
            f.write(b"\x01")
        changed = file_digest(p)
        assert changed != base, offset
        base = changed


# ----------------------------------------------------------------------------------------------
# One error style: --debug, internal errors, Ctrl-C
# ----------------------------------------------------------------------------------------------

def test_debug_flag_shows_the_traceback(tmp_path, capsys):
    q = tmp_path / "q.jsonl"
    q.write_text("{not json\n")
    with pytest.raises(UserError, match="invalid JSON"):
        cli.main(["--debug", *_search(tmp_path / "o", q)])
    with pytest.raises(UserError, match="invalid JSON"):
        cli.main([*_search(tmp_path / "o", q), "--debug"])


def test_internal_error_is_one_line_with_a_hint(tmp_path, capsys, monkeypatch):
    from rftt_plugin.commands import show

    def broken(args):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(show, "run", broken)
    assert cli.main(["show", "x.json"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == ("rftt show: internal error: RuntimeError: boom second line; hint: rerun with "
                   "`rftt --debug ...` for the traceback and report it")


def test_subprocess_error_has_no_traceback_and_exit_code_2(tmp_path):
    q = tmp_path / "q.jsonl"
    q.write_text("{not json\n")
    cmd = [sys.executable, "-m", "rftt_plugin.cli", *_search(tmp_path / "o", q)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=clean_env(), cwd=REPO, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (f"rftt search: error: {q}:1: invalid JSON (Expecting property name enclosed in "
                                   f"double quotes at column 2); hint: fix or delete that line")
    proc = subprocess.run([*cmd[:3], "--debug", *cmd[3:]], capture_output=True, text=True, env=clean_env(),
                          cwd=REPO, timeout=120)
    assert proc.returncode == 1 and "Traceback" in proc.stderr


@pytest.mark.slow
def test_gen_sft_interrupted_with_ctrl_c(tmp_path, tiny_model_dir):
    n = 4
    src = _jsonl(tmp_path / "q.jsonl", [{"problem": f"What is {i} + {i + 1}?", "answer": str(2 * i + 1)}
                                        for i in range(n)])
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "rftt_plugin.cli", "gen-sft", "--backend", "hf", "--model", str(tiny_model_dir),
           "--source", str(src), "--out", str(out), "--max-tokens", "12", "--iterations", "2", "--concurrency", "1",
           "--quiet"]
    # A shell without job control starts background jobs with SIGINT ignored, and children inherit
    # that (CI launched as `bash .ci/run &` did: gen-sft ran to the end and exited 0); Ctrl-C in a
    # terminal always arrives, so the child gets the default disposition back.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(), cwd=REPO,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    samples = out / "samples.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if samples.exists() and samples.read_bytes().count(b"\n") >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "finished before it could be interrupted: " + proc.stderr.read()[-2000:]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "CancelledError" not in err
    # the line saying which device/dtype --device auto chose comes first, when the model loads
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("rftt gen-sft: device ")]
    assert len(lines) == 1 and lines[0].startswith("rftt gen-sft: interrupted; ")
    assert lines[0].endswith(f"of {n} questions are saved in {out}; rerun the same command to continue")
    saved = int(lines[0].split("interrupted; ")[1].split(" of ")[0])
    assert 1 <= saved < n
    # the resume is still right: every question exactly once (in-process: saves a second start-up)
    assert cli.main(cmd[3:]) == 0
    keys = [json.loads(x)["key"] for x in samples.read_text().splitlines()]
    assert len(keys) == n == len(set(keys))
    report = json.loads((out / "report.json").read_text())
    assert report["this_run"]["built"] == n - saved


def test_journal_edited_by_hand_in_the_middle_eval_policy_skips_gen_sft_policy_refuses(tmp_path):
    """One journal for both resumable outputs; the two damage policies side by side."""
    from rftt_plugin.store.journal import Journal, JournalError

    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"id": "a"}\n{edited by hand\n{"id": "c"}\n{"id": "d"}')  # last line lost its newline
    with pytest.raises(JournalError, match=r"r\.jsonl:2: damaged record"):
        Journal(path)
    warnings: list[str] = []
    with Journal(path, lock=False, damaged_middle="skip", unterminated_last="keep", require_key="id",
                 warn=warnings.append) as j:
        assert [r["id"] for r in j.records] == ["a", "c", "d"] and j.skipped and not j.torn_tail
        j.append({"id": "e"})
    assert warnings == [f"{path}:2: unreadable line skipped (Expecting property name enclosed in double quotes: "
                        f"line 1 column 2 (char 1)); it is redone"]
    assert path.read_bytes().endswith(b'{"id": "d"}\n{"id": "e"}\n')
    with pytest.raises(JournalError):  # the strict policy still refuses the hand-edited line
        Journal(path)


def test_prepare_model_library_call_with_an_out_under_a_file(tmp_path, tiny_model_dir, monkeypatch):
    """The library function checks --out before loading the model too (not only the CLI)."""
    from rftt_plugin import prepare

    monkeypatch.setattr(prepare, "_load_model", lambda *a, **k: pytest.fail("model loaded before the out check"))
    (tmp_path / "f").write_text("x")
    with pytest.raises(prepare.PrepareError, match=f"--out {tmp_path / 'f' / 'o'}: is under {tmp_path / 'f'}, "
                                                   "which is a file"):
        prepare.prepare_model(str(tiny_model_dir), tmp_path / "f" / "o", progress=False)


def test_model_directory_without_tokenizer_files(tmp_path, capsys, questions, tiny_model_dir, no_model_loading):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    shutil.copy(tiny_model_dir / "config.json", ckpt)
    shutil.copy(tiny_model_dir / "model.safetensors", ckpt)
    rc, err = _run(["search", "--backend", "hf", "--model", str(ckpt), "--questions", str(questions),
                    "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and f"--model {ckpt}: the checkpoint has no tokenizer files (tokenizer_config.json / " \
                       "tokenizer.json)" in err


def test_model_whose_tokenizer_has_no_chat_template(tmp_path, capsys, questions, tiny_model_dir):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_model_dir, ckpt)
    (ckpt / "chat_template.jinja").unlink()
    rc, err = _run(["search", "--backend", "hf", "--model", str(ckpt), "--questions", str(questions),
                    "--out", str(tmp_path / "o"), "--token-mode", "text", "--quiet"], capsys)
    assert rc == 2 and f"--model {ckpt}: the tokenizer has no chat template" in err
