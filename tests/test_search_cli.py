"""`rftt search` / `rftt show` and the renderers."""

from __future__ import annotations

import json

import pytest

from rftt_plugin import cli
from rftt_plugin.search.tree import Tree
from rftt_plugin.tree_view.render import render_html, render_text


@pytest.fixture
def questions(tmp_path):
    path = tmp_path / "q.jsonl"
    rows = [{"question": "What is 3 + 4? <script>alert(1)</script>", "answer": "7", "id": "a"},
            {"problem": "Compute 2 * 5.", "solution": "It is \\boxed{10}."},
            {"nothing": "here"}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def test_search_fake_backend_writes_trees_and_summary(questions, tmp_path, capsys):
    out = tmp_path / "run"
    rc = cli.main(["search", "--backend", "fake", "--questions", str(questions), "--out", str(out),
                   "--iterations", "6", "--quiet", "--seed", "3"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["totals"]["questions"] == 2 and summary["config"]["iterations"] == 6
    first, second = summary["trees"]
    assert first["id"] == "a" and first["gold"] == "7" and second["gold"] == "10"
    assert first["leaves"] == 6 and 0 < first["token_ratio"] <= 1
    tree = Tree.load(out / first["file"])
    assert len(tree.paths()) == 6 and tree.meta["backend"] == "fake"
    assert "skipping" in capsys.readouterr().err  # the row without a question is named, not fatal

    html_path = tmp_path / "t.html"
    assert cli.main(["show", str(out / first["file"]), "--html", str(html_path), "--color", "never"]) == 0
    printed = capsys.readouterr().out
    assert "Q: What is 3 + 4?" in printed and "<output>" in printed and "Q/N=" in printed
    page = html_path.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("<details") == tree.stats().nodes - sum(
        1 for n in tree.nodes[1:] if not n.generated)
    assert "<script>alert" not in page and "&lt;script&gt;alert" in page  # question text is escaped
    assert "http" not in page.replace("http://www.w3.org", "")  # self-contained: nothing fetched


def test_show_reports_unreadable_files(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{\"format\": \"other\"}")
    assert cli.main(["show", str(bad)]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_search_hf_text_mode_on_tiny_model(tiny_model_dir, tmp_path):
    out = tmp_path / "hf"
    q = tmp_path / "one.jsonl"
    q.write_text(json.dumps({"question": "What is 2 + 3?", "answer": "5"}))
    rc = cli.main(["search", "--backend", "hf", "--model", str(tiny_model_dir), "--questions", str(q),
                   "--out", str(out), "--token-mode", "text", "--iterations", "3", "--step-max-tokens", "4",
                   "--no-grade", "--quiet"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trees"][0]["leaves"] == 3 and summary["trees"][0]["llm_calls"] >= 2


def test_search_added_mode_needs_prepared_model(tiny_model_dir, tmp_path, questions, capsys):
    assert cli.main(["search", "--backend", "hf", "--model", str(tiny_model_dir), "--questions", str(questions),
                     "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "prepare-model" in capsys.readouterr().err


def test_text_rendering_marks_leaves_and_limits_depth():
    from rftt_plugin.backends.fake import FakeBackend, TagScript
    from rftt_plugin.search import FunctionalMCTS, SearchConfig
    from rftt_plugin.tag_ids import TagIds
    import asyncio

    script = TagScript()
    mcts = FunctionalMCTS(FakeBackend.for_script(script), TagIds.from_fake(script.vocab),
                          SearchConfig(iterations=5), grade=script.grade)
    tree = asyncio.run(mcts.search("q", script.vocab.prompt_ids("q"))).tree
    full = render_text(tree)
    assert full.count("it=") == len({it.leaf for it in tree.iterations})
    assert "unexplored" in full and "\x1b[" not in full
    short = render_text(tree, max_depth=1, color=True)
    assert "more below" in short and "\x1b[" in short
    assert len(short.splitlines()) < len(full.splitlines())
    page = render_html(tree.to_dict(), open_depth=1)
    assert "<details open>" in page and "<details>" in page


def test_search_benchmark_shortcut_reads_the_local_benchmark(bench_data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("RFTT_DATA_DIR", f"{bench_data_dir}/eval")
    out = tmp_path / "bench"
    rc = cli.main(["search", "--backend", "fake", "--benchmark", "amc23", "--limit", "2", "--out", str(out),
                   "--iterations", "2", "--quiet"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [t["id"] for t in summary["trees"]] == ["amc23-0", "amc23-1"]
    assert summary["trees"][0]["gold"] == "27"  # AMC's 27.0 printed as an integer


def test_search_unknown_benchmark_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["search", "--backend", "fake", "--benchmark", "mat500", "--out", str(tmp_path / "x")]) == 2
    assert "unknown benchmark" in capsys.readouterr().err


def test_every_search_knob_has_help_and_a_flag():
    # the flags are built from SearchConfig's fields: a new field without help would break --help
    import argparse
    from dataclasses import fields

    from rftt_plugin.commands._search_flags import add_search_flags
    from rftt_plugin.search.config import FIELD_HELP, SearchConfig

    names = [f.name for f in fields(SearchConfig)]
    assert sorted(FIELD_HELP) == sorted(names)
    parser = argparse.ArgumentParser()
    add_search_flags(parser, names)
    args = parser.parse_args(["--step-max-tokens", "7", "--no-loss-on-inserted", "--token-mode", "text"])
    assert (args.step_max_tokens, args.loss_on_inserted, args.token_mode, args.uct_c) == (7, False, "text", 2.0)



def _boxed(text):
    return text.rsplit("\\boxed{", 1)[1].split("}", 1)[0] if "\\boxed{" in text else None


def test_fake_backend_summary_grades_against_the_gold_not_the_search_reward(tmp_path, capsys):
    from rftt_plugin.backends.fake import TagScript

    script_answer = TagScript().answer
    path = tmp_path / "q.jsonl"
    rows = [{"question": "What is 3 + 4?", "answer": "999"},              # the script never boxes 999
            {"question": "What is 2 + 2?", "answer": script_answer}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "run"
    assert cli.main(["search", "--backend", "fake", "--questions", str(path), "--out", str(out),
                     "--iterations", "6", "--quiet", "--seed", "3"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    summary = json.loads((out / "summary.json").read_text())
    # independent reference: the last box of each emitted <output> leaf, compared as text with the gold
    first_ok, any_ok = [], []
    for row in summary["trees"]:
        tree = Tree.load(out / row["file"])
        emitted = [it.leaf for it in tree.iterations if it.emitted]
        right = [tree[i].terminal_reason == "output" and _boxed(tree[i].text) == str(row["gold"]) for i in emitted]
        first_ok.append(right[0])
        any_ok.append(any(right))
    assert any_ok == [False, True], "the fixture should give one unsolved and one solved tree"
    assert summary["trees"][0]["solved"]  # the script's own reward calls the 999 tree solved ...
    want = (f"first-leaf acc {sum(first_ok) / 2:.3f}, any-leaf acc {sum(any_ok) / 2:.3f} "
            f"(against the gold, 2 graded)")
    assert want in line, line  # ... the summary line does not


def test_terminal_marks_follow_the_gold_not_the_search_reward():
    from rftt_plugin.search.tree import Iteration
    from rftt_plugin.tokens import FunctionalTag as T

    tree = Tree("What is 2 + 3?", [1, 2], 0, gold="5")
    right = tree.add_child(tree.root, T.OUTPUT, generated=True, text="\\boxed{5}")
    wrong = tree.add_child(tree.root, T.OUTPUT, generated=True, text="\\boxed{6}")
    for node in (right, wrong):  # eval's "answered" search reward: 1 for any boxed answer
        node.terminal_reason, node.reward = "output", 1.0
        tree.iterations.append(Iteration(node.id))
    text = render_text(tree)
    line_of = {n.id: next(ln for ln in text.splitlines() if f"#{n.id} " in ln) for n in (right, wrong)}
    assert "✓ output" in line_of[right.id] and "✗ output" in line_of[wrong.id]
    tree.gold = None
    assert "✓" not in render_text(tree) and "✗" not in render_text(tree)
