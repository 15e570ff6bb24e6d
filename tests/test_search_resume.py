"""`rftt search` resumes like `rftt eval` and `rftt gen-sft`: a journal line per finished tree, a
rerun searches only what is missing, an interrupted run loses nothing, and the trees are the ones
the library's own search writes."""

from __future__ import annotations

import asyncio
import json
import signal

import pytest

from rftt_plugin import cli
from rftt_plugin.search import mcts

QUESTIONS = [{"question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(4)]


@pytest.fixture
def questions(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in QUESTIONS))
    return path


def _argv(questions, out, *extra):
    return ["search", "--backend", "fake", "--questions", str(questions), "--out", str(out), "--iterations", "4",
            "--seed", "3", "--concurrency", "1", "--quiet", *extra]


def _tree(path) -> dict:
    tree = json.loads(path.read_text())
    tree["meta"].pop("wall_s")  # the one field that depends on the clock
    return tree


def _trees(out) -> dict[str, dict]:
    return {p.name: _tree(p) for p in sorted((out / "trees").iterdir())}


def _rows(out) -> list[dict]:
    rows = json.loads((out / "summary.json").read_text())["trees"]
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]


@pytest.fixture
def searched(monkeypatch):
    """The questions the search is run on, in order; a question in ``stop_at`` gets a Ctrl-C (a real
    SIGINT: asyncio.run cancels the running search, then raises KeyboardInterrupt)."""
    real = mcts.FunctionalMCTS.search
    seen: list[str] = []
    stop_at: set[str] = set()

    async def spy(self, question, *a, **k):
        if question in stop_at:
            stop_at.discard(question)
            signal.raise_signal(signal.SIGINT)
            await asyncio.sleep(60)  # cancelled by the interrupt long before
            raise AssertionError("the interrupt did not stop the search")
        seen.append(question)
        return await real(self, question, *a, **k)

    monkeypatch.setattr(mcts.FunctionalMCTS, "search", spy)
    # Ctrl-C must reach asyncio.run as it does in a fresh process: earlier tests in the same session
    # (Ray, verl, vLLM) can leave another SIGINT handler installed, and asyncio.run only takes over
    # SIGINT from Python's default handler.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield seen, stop_at
    signal.signal(signal.SIGINT, previous)


def test_interrupted_search_resumes_and_ends_with_the_trees_of_an_uninterrupted_run(tmp_path, questions, searched,
                                                                                   capsys):
    seen, stop_at = searched
    assert cli.main(_argv(questions, tmp_path / "ref")) == 0
    seen.clear()

    out = tmp_path / "run"
    stop_at.add(QUESTIONS[2]["question"])
    assert cli.main(_argv(questions, out)) == 130
    err = capsys.readouterr().err
    assert f"rftt search: interrupted; 2 of 4 trees are saved in {out}; rerun the same command to continue" in err
    assert "Traceback" not in err
    assert [json.loads(x)["index"] for x in (out / "finished.jsonl").read_text().splitlines()] == [0, 1]
    assert sorted(p.name for p in (out / "trees").iterdir()) == ["00000.json", "00001.json"]
    assert not (out / "summary.json").exists() and not (out / ".lock").exists()

    seen.clear()
    assert cli.main(_argv(questions, out)) == 0
    assert seen == [QUESTIONS[2]["question"], QUESTIONS[3]["question"]]  # the finished two are not redone
    assert _trees(out) == _trees(tmp_path / "ref")
    assert _rows(out) == _rows(tmp_path / "ref")
    assert "4 trees -> " in capsys.readouterr().out


def test_a_finished_run_reruns_without_loading_a_model(tmp_path, questions, searched, monkeypatch):
    from rftt_plugin.jobs.model import EngineHandle

    seen, _ = searched
    out = tmp_path / "run"
    assert cli.main(_argv(questions, out)) == 0
    before = _trees(out)
    seen.clear()
    monkeypatch.setattr(EngineHandle, "get", lambda *a, **k: pytest.fail("an engine was built with nothing to do"))
    assert cli.main(_argv(questions, out)) == 0
    assert seen == [] and _trees(out) == before
    assert json.loads((out / "summary.json").read_text())["totals"]["questions"] == 4


def test_a_torn_journal_line_and_a_failed_tree_are_searched_again(tmp_path, questions, monkeypatch, capsys):
    real = mcts.FunctionalMCTS.search
    seen: list[str] = []
    failures = [QUESTIONS[1]["question"]]

    async def failing_once(self, question, *a, **k):
        seen.append(question)
        result = await real(self, question, *a, **k)
        if question in failures:
            failures.remove(question)
            result.tree.meta["error"] = "ValueError: backend went away"
        return result

    monkeypatch.setattr(mcts.FunctionalMCTS, "search", failing_once)
    out = tmp_path / "run"
    assert cli.main(_argv(questions, out)) == 1  # tree 1 failed: saved for a look, not journaled
    assert "1 of 4 trees failed; first: trees/00001.json" in capsys.readouterr().err
    journal = out / "finished.jsonl"
    assert [json.loads(x)["index"] for x in journal.read_text().splitlines()] == [0, 2, 3]
    lines = journal.read_text().splitlines(keepends=True)
    journal.write_text("".join(lines[:2]) + lines[2][: len(lines[2]) // 2])  # killed while writing tree 3's line

    seen.clear()
    assert cli.main(_argv(questions, out)) == 0
    assert seen == [QUESTIONS[1]["question"], QUESTIONS[3]["question"]]
    assert sorted(json.loads(x)["index"] for x in journal.read_text().splitlines()) == [0, 1, 2, 3]
    assert [r["error"] for r in _rows(out)] == [None] * 4


def test_search_trees_are_the_library_search_trees(tmp_path, questions):
    """The command adds only the model/backend/source/id meta to what FunctionalMCTS itself writes."""
    from rftt_plugin.backends.fake import FakeBackend, TagScript
    from rftt_plugin.search import SearchConfig
    from rftt_plugin.tag_ids import TagIds

    out = tmp_path / "run"
    assert cli.main(_argv(questions, out)) == 0
    script = TagScript()
    search = mcts.FunctionalMCTS(FakeBackend.for_script(script), TagIds.from_fake(script.vocab),
                                 SearchConfig(iterations=4, seed=3))
    for index, row in enumerate(QUESTIONS):
        result = asyncio.run(search.search(row["question"], script.vocab.prompt_ids(row["question"]),
                                           grade=script.grade, gold=row["answer"]))
        want = json.loads(json.dumps(result.tree.to_dict()))
        want["meta"].pop("wall_s")
        got = _tree(out / "trees" / f"{index:05d}.json")
        assert {k: got["meta"].pop(k) for k in ("model", "backend", "source")} == \
            {"model": None, "backend": "fake", "source": f"{questions}:{index + 1}"}
        assert got == want, index


def test_search_trees_on_the_hf_backend_are_the_library_search_trees(tmp_path, tiny_model_dir):
    from rftt_plugin.backends.hf import HFBackend
    from rftt_plugin.chat_prompt import chat_prompt_ids
    from rftt_plugin.search import SearchConfig
    from rftt_plugin.tag_ids import TagIds

    rows = QUESTIONS[:2]
    q = tmp_path / "q.jsonl"
    q.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    assert cli.main(["search", "--backend", "hf", "--model", str(tiny_model_dir), "--questions", str(q), "--out",
                     str(out), "--token-mode", "text", "--iterations", "2", "--step-max-tokens", "4", "--seed", "3",
                     "--concurrency", "1", "--device", "cpu", "--dtype", "float32", "--no-grade", "--quiet"]) == 0

    async def library_trees() -> list[dict]:
        backend = HFBackend.from_pretrained(str(tiny_model_dir), device="cpu", dtype="float32", seed=3)
        search = mcts.FunctionalMCTS(backend, TagIds.from_tokenizer(backend.tokenizer, mode="text"),
                                     SearchConfig(iterations=2, step_max_tokens=4, seed=3, token_mode="text"))
        try:
            return [(await search.search(r["question"], chat_prompt_ids(backend.tokenizer, r["question"]),
                                         gold=r["answer"])).tree.to_dict() for r in rows]
        finally:
            await backend.aclose()

    for index, want in enumerate(asyncio.run(library_trees())):
        want = json.loads(json.dumps(want))
        want["meta"].pop("wall_s")
        got = _tree(out / "trees" / f"{index:05d}.json")
        assert {k: got["meta"].pop(k) for k in ("model", "backend", "source")} == \
            {"model": str(tiny_model_dir), "backend": "hf", "source": f"{q}:{index + 1}"}
        assert got == want, index
