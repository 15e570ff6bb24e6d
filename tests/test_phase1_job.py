"""The resumable gen-sft job: input rows, journals, resume, settings mismatch, the command (phase1/job.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rftt_plugin.phase1.job import GenSftJob, load_questions, question_key
from rftt_plugin.store.journal import Journal, JournalError
from rftt_plugin.store.run_dir import RunMismatch
from rftt_plugin.phase1.prompted_search import PromptedConfig
from rftt_plugin.phase1.prompt_templates import ACTIONS
from rftt_plugin.tokens import validate
from tests.helpers import REPO, clean_env
from tests.phase1_fakes import NARROW, Crash, ScriptedChat, make_question


def _write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# --------------------------------------------------------------------------------------------
# Input rows
# --------------------------------------------------------------------------------------------

def test_bad_rows_are_reported_by_file_and_row(tmp_path):
    src = _write_jsonl(tmp_path / "q.jsonl", [
        {"problem": "What is 1 + 2 * 3?", "answer": "7"},
        {"answer": "3"},                                           # no question
        "{not json",
        {"problem": "What is 2 + 2 * 2?", "solution": "It is six."},  # no boxed answer, no answer field
        {"problem": "What is 1 + 2 * 3?", "answer": "7"},          # duplicate of row 1
        {"problem": "What is 3 + 1 * 1?", "solution": "so \\boxed{4}"},
    ])
    loaded = load_questions(str(src))
    assert [q.where for q in loaded.questions] == [f"{src}:1", f"{src}:6"]
    assert loaded.duplicates == 1 and loaded.read == 6
    bad = {b["where"]: b for b in loaded.bad_rows}
    assert set(bad) == {f"{src}:2", f"{src}:3", f"{src}:4"}
    assert bad[f"{src}:2"]["reason"] == "missing" and "problem" in bad[f"{src}:2"]["field"]
    assert "invalid JSON" in bad[f"{src}:3"]["reason"]
    assert bad[f"{src}:4"]["field"] == "solution"
    assert load_questions(str(src), limit=1).questions[0].gold == "7"


# --------------------------------------------------------------------------------------------
# The resumable job
# --------------------------------------------------------------------------------------------

def _questions(tmp_path: Path, n: int) -> Path:
    rows = []
    for i in range(n):
        q, g = make_question(i + 1, i + 2, 3)
        rows.append({"problem": q, "answer": g})
    return _write_jsonl(tmp_path / "questions.jsonl", rows)


def _job(out, chat, grade=None, **search):
    cfg = PromptedConfig(**{"concurrency": 1, **NARROW, **search})
    return GenSftJob(out, chat, search=cfg, grade=grade, settings={"model": "scripted"}, progress=False)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_job_writes_parquet_and_report(tmp_path):
    import pyarrow.parquet as pq

    src = _questions(tmp_path, 4)
    chat = ScriptedChat(direct_answer_correct=lambda seed: False)
    report = await _job(tmp_path / "out", chat).run(load_questions(str(src)), source=str(src))
    assert report["samples"] == {"merged": 4, "merged_root": 0, "plain": 0, "total": 4}
    assert report["questions"]["done"] == 4 and not report["failed"] and not report["drops"]
    table = pq.read_table(tmp_path / "out" / "train.parquet").to_pylist()
    assert len(table) == 4
    row = table[0]
    assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
    assert row["messages"][0]["content"] == make_question(1, 2, 3)[0]
    assert validate(row["messages"][1]["content"]).ok
    assert row["source"] == f"{src}:1" and row["kind"] == "merged"
    on_disk = json.loads((tmp_path / "out" / "report.json").read_text())
    assert on_disk["rows"] == 4 and "EMPTY" not in on_disk["summary"]


async def test_crash_then_resume_redoes_nothing_and_loses_nothing(tmp_path):
    src = _questions(tmp_path, 5)
    loaded = load_questions(str(src))
    out = tmp_path / "out"
    graded_golds: list[str] = []

    async def crashing_grade(text, gold):
        if gold not in graded_golds:
            graded_golds.append(gold)
        if len(graded_golds) == 3:  # the third question is being searched: "kill" the process
            raise Crash("simulated kill")
        from rftt_plugin.reward import grade_async

        return await grade_async(text, gold)

    with pytest.raises(Crash):
        await _job(out, ScriptedChat(direct_answer_correct=lambda seed: False), grade=crashing_grade).run(loaded)
    done = [r["key"] for r in _lines(out / "samples.jsonl")]
    assert done == [q.key for q in loaded.questions[:2]]
    assert [r["key"] for r in _lines(out / "trees.jsonl")] == done
    assert not (out / "train.parquet").exists()

    chat = ScriptedChat(direct_answer_correct=lambda seed: False)
    report = await _job(out, chat).run(loaded)
    for q in loaded.questions[:2]:
        assert chat.calls_for(q.question) == []          # finished questions are not redone
    for q in loaded.questions[2:]:
        assert chat.calls_for(q.question)                # the rest are searched
    samples = [r["key"] for r in _lines(out / "samples.jsonl")]
    assert sorted(samples) == sorted(q.key for q in loaded.questions) and len(samples) == 5  # none lost, none twice
    assert report["questions"]["done"] == 5 and report["rows"] == 5
    assert report["this_run"] == {"searched": 3, "reused_trees": 0, "built": 3}


async def test_crash_during_verification_reuses_the_stored_tree(tmp_path):
    src = _questions(tmp_path, 2)
    loaded = load_questions(str(src))
    second = loaded.questions[1].question
    boom = ScriptedChat(direct_answer_correct=lambda seed: False,
                        raise_on=lambda kind, q: Crash() if (kind, q) == ("verify", second) else None)
    with pytest.raises(Crash):
        await _job(tmp_path / "out", boom).run(loaded)
    assert len(_lines(tmp_path / "out" / "trees.jsonl")) == 2
    assert len(_lines(tmp_path / "out" / "samples.jsonl")) == 1
    chat = ScriptedChat(direct_answer_correct=lambda seed: False)
    report = await _job(tmp_path / "out", chat).run(loaded)
    assert chat.calls_for(second) == ["verify"]          # no search call: the tree came from disk
    assert report["this_run"] == {"searched": 0, "reused_trees": 1, "built": 1} and report["rows"] == 2


async def test_torn_last_line_is_repaired_and_redone(tmp_path):
    src = _questions(tmp_path, 3)
    loaded = load_questions(str(src))
    out = tmp_path / "out"
    await _job(out, ScriptedChat()).run(loaded)
    # simulate a crash in the middle of writing the last question's sample line
    lines = (out / "samples.jsonl").read_text().splitlines(keepends=True)
    (out / "samples.jsonl").write_text("".join(lines[:2]) + lines[2][: len(lines[2]) // 2])
    chat = ScriptedChat()
    report = await _job(out, chat).run(loaded)
    assert report["journal_repaired_bytes"]["samples.jsonl"] > 0
    assert report["this_run"] == {"searched": 0, "reused_trees": 1, "built": 1}
    assert len(_lines(out / "samples.jsonl")) == 3 and report["questions"]["done"] == 3


def test_journal_refuses_damage_in_the_middle_and_a_second_writer(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text('{"key": "a"}\n{broken\n{"key": "c"}\n')
    with pytest.raises(JournalError, match=r"j\.jsonl:2"):
        Journal(path)
    path.write_text('{"key": "a"}\n')
    with Journal(path):
        with pytest.raises(JournalError, match="another process"):
            Journal(path)
    with Journal(path) as j:  # the lock is released on close
        assert j.records == [{"key": "a"}] and j.repaired_bytes == 0


async def test_rerun_with_other_settings_is_refused(tmp_path):
    src = _questions(tmp_path, 1)
    await _job(tmp_path / "out", ScriptedChat()).run(load_questions(str(src)))
    with pytest.raises(RunMismatch, match="search.iterations: the run has 4, this command has 5"):
        await _job(tmp_path / "out", ScriptedChat(), iterations=5).run(load_questions(str(src)))
    # concurrency is not a setting of the data: changing it resumes fine
    await _job(tmp_path / "out", ScriptedChat(), concurrency=3).run(load_questions(str(src)))


async def test_an_output_of_the_older_run_json_format_resumes(tmp_path):
    """Before the shared run directory, gen-sft wrote run.json as the bare fingerprint: such an
    output resumes (nothing redone) and a changed setting is still refused."""
    src = _questions(tmp_path, 2)
    out = tmp_path / "out"
    first = _job(out, ScriptedChat())
    await first.run(load_questions(str(src)))
    assert json.loads((out / "run.json").read_text())["format"] == "rftt-gen-sft-run/1"
    legacy = json.loads(json.dumps(first.fingerprint()))  # the old layout: the bare fingerprint
    (out / "run.json").write_text(json.dumps(legacy))
    samples_before = _lines(out / "samples.jsonl")
    chat = ScriptedChat()
    report = await _job(out, chat).run(load_questions(str(src)))
    assert report["this_run"] == {"searched": 0, "reused_trees": 0, "built": 0}
    assert _lines(out / "samples.jsonl") == samples_before
    (out / "run.json").write_text(json.dumps(legacy))
    with pytest.raises(RunMismatch, match="search.iterations: the run has 4, this command has 5"):
        await _job(out, ScriptedChat(), iterations=5).run(load_questions(str(src)))


async def test_failed_question_is_reported_and_retried(tmp_path):
    src = _questions(tmp_path, 3)
    loaded = load_questions(str(src))
    flaky_question = loaded.questions[1].question

    class FlakyScorer:
        fail = True

        async def score_steps_async(self, question, steps):
            if self.fail and question == flaky_question:
                raise RuntimeError("PRM service down")
            return [0.5] * len(steps)

    scorer = FlakyScorer()
    job = _job(tmp_path / "out", ScriptedChat())
    job.scorer = scorer
    report = await job.run(loaded)
    assert [f["where"] for f in report["failed"]] == [loaded.questions[1].where]
    assert "PRM service down" in report["failed"][0]["error"] and "FAILED" in report["summary"]
    assert report["questions"]["pending"] == 1
    scorer.fail = False
    report = await job.run(loaded)
    assert not report["failed"] and report["questions"]["done"] == 3
    assert report["this_run"] == {"searched": 0, "reused_trees": 1, "built": 1}


async def test_empty_result_is_explicit(tmp_path):
    import pyarrow.parquet as pq

    src = _questions(tmp_path, 2)
    dead = ScriptedChat(overrides={k.value: "" for k in ACTIONS})
    report = await _job(tmp_path / "out", dead).run(load_questions(str(src)))
    assert report["rows"] == 0 and report["drops"] == {"empty_tree": 2}
    assert "EMPTY" in report["summary"]
    table = pq.read_table(tmp_path / "out" / "train.parquet")
    assert table.num_rows == 0 and "messages" in table.column_names


# --------------------------------------------------------------------------------------------
# The command, from a fresh process, with the tiny random model
# --------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_gen_sft_command_with_the_tiny_hf_model(tiny_model_dir, tmp_path):
    src = _write_jsonl(tmp_path / "three.jsonl", [
        {"problem": "What is 2 + 3 * 4?", "solution": "First 3 * 4 = 12, then \\boxed{14}."},
        {"question": "Tom has 5 apples and buys 7 more. How many now?", "answer": "12"},
        {"problem": "Solve 2x + 4 = 10 for x.", "answer": "3"},
        {"problem": "A row without a gold answer."},
    ])
    out = tmp_path / "out"
    cmd = [str(Path(sys.executable).with_name("rftt")), "gen-sft", "--backend", "hf", "--model", str(tiny_model_dir),
           "--source", str(src), "--out", str(out), "--max-tokens", "8", "--iterations", "2", "--quiet"]
    proc = subprocess.run(["timeout", "120", *cmd], capture_output=True, text=True, env=clean_env(), cwd=REPO,
                          timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"skipping bad row {src}:4" in proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["questions"] == {"read_rows": 4, "usable": 3, "bad_rows": 1, "duplicates": 0, "done": 3, "pending": 0}
    assert (out / "train.parquet").exists() and len(_lines(out / "trees.jsonl")) == 3
    # a random model never answers correctly: the output says so instead of pretending
    assert report["rows"] == sum(report["samples"][k] for k in ("merged", "merged_root", "plain"))
    if report["rows"] == 0:
        assert "EMPTY" in proc.stdout and "EMPTY" in report["summary"]


@pytest.mark.slow
async def test_gen_sft_command_with_the_openai_backend(tiny_model_dir, tmp_path):
    """`--backend openai` from a fresh process, against a local vLLM-dialect server (tiny model)."""
    import asyncio

    from rftt_plugin.backends.hf import HFBackend
    from rftt_plugin.backends.openai_server import CompletionServer

    src = _write_jsonl(tmp_path / "one.jsonl", [{"problem": "What is 2 + 3 * 4?", "answer": "14"}])
    inner = HFBackend.from_pretrained(str(tiny_model_dir))
    server = CompletionServer(inner, "tiny", decode=inner._decode)
    await server.start()
    try:
        proc = await asyncio.create_subprocess_exec(
            "timeout", "120", str(Path(sys.executable).with_name("rftt")), "gen-sft", "--backend", "openai",
            "--base-url", server.base_url, "--model", "tiny", "--tokenizer", str(tiny_model_dir),
            "--source", str(src), "--out", str(tmp_path / "out"), "--max-tokens", "4", "--iterations", "1",
            "--quiet", env=clean_env(), cwd=str(REPO), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 150)
    finally:
        await server.close()
        await inner.aclose()
    assert proc.returncode == 0, stderr.decode()[-3000:]
    trees = _lines(tmp_path / "out" / "trees.jsonl")
    assert len(trees) == 1 and trees[0]["tree"]["llm_calls"] == 9
    assert "error" not in trees[0]["tree"]["meta"]["dropped"]   # every call reached the server and came back
    assert json.loads((tmp_path / "out" / "report.json").read_text())["settings"]["backend"] == "openai"


def test_question_key_is_stable():
    assert question_key("Q", "1") != question_key("Q", "2")
    assert len(question_key("Q", "1")) == 16


@pytest.mark.parametrize("module_name", ["rftt_plugin.phase1.prompt_templates", "rftt_plugin.store.journal",
                                         "rftt_plugin.phase1.job"])
def test_doctests(module_name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module_name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0
