"""The resumable job behind ``rftt search``: questions -> one tree file each + ``summary.json``.

The run directory (:class:`~rftt_plugin.store.run_dir.RunDir`, as for ``rftt eval`` and
``rftt gen-sft``)::

    run.json          the model, search settings, question file content and count (the fingerprint)
    finished.jsonl    one line per finished tree (its summary row), appended and fsync'ed as the
                      tree is saved: the journal a rerun resumes from
    trees/<index>.json
    summary.json      rebuilt from the journal at the end of every run

A rerun with the same settings searches only the questions without a journal line; an
interrupted run loses no finished tree. A tree that failed is saved for inspection, named on
stderr and not journaled, so the next run searches it again. A rerun with other settings is
refused once a tree is finished (``--overwrite`` discards them), so a directory never mixes
trees of two runs; a directory that holds other files is refused too.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rftt_plugin.errors import UserError
from rftt_plugin.fingerprint import input_fingerprint
from rftt_plugin.jobs.model import EngineHandle, ModelSpec
from rftt_plugin.search.config import SearchConfig
from rftt_plugin.store.run_dir import RUN_FILE, JournalSpec, RunDir, RunMismatch

RUN_FORMAT = "rftt-search-run/2"
JOURNAL_FILE = "finished.jsonl"
SUMMARY_FILE = "summary.json"
TREES_DIR = "trees"


@dataclass(frozen=True)
class QuestionSource:
    """Where the questions come from: a file as it is, or a benchmark by name; ``limit`` 0 = all."""

    file: str | None = None
    benchmark: str | None = None
    limit: int = 0


class SearchRunDir(RunDir):
    """The search's run directory. A tree file counts as a finished unit too: a directory written
    before the journal existed holds trees but no journal, and must not be replaced silently."""

    def __init__(self, out, fingerprint: dict[str, Any], overwrite: bool = False):
        super().__init__(out, fingerprint, tool="rftt search", run_format=RUN_FORMAT,
                         journals={"trees": JournalSpec(JOURNAL_FILE, damaged_middle="skip", require_key="index",
                                                        allow_nan=True)},
                         outputs=(TREES_DIR, SUMMARY_FILE), overwrite=overwrite)

    def _has_finished_units(self) -> bool:
        trees = self.out / TREES_DIR
        return super()._has_finished_units() or (trees.is_dir() and any(trees.iterdir()))


def load_requests(source: QuestionSource) -> tuple[list, str]:
    """(SearchRequests, the file or dataset they came from). Rows without a question are skipped
    with a note; a row that is not valid JSON or whose gold answer has an unusable type is a UserError."""
    from rftt_plugin.search.many import SearchRequest

    if source.benchmark:
        from rftt_plugin.data.benchmarks import BenchmarkError, default_data_dir, load_benchmark

        try:
            bench = load_benchmark(source.benchmark, data_dir=default_data_dir(), limit=source.limit or None)
        except BenchmarkError as exc:
            raise UserError(f"--benchmark {source.benchmark}: {exc}") from None
        return [SearchRequest(item.question, item.gold, item.id, {"source": bench.source.label, **item.metadata})
                for item in bench.items], bench.source.location
    from rftt_plugin.data.rows import RowError, gold_of, question_of
    from rftt_plugin.data.sources import read_records

    out = []
    for record in read_records(source.file):
        data = record.data
        if "__error__" in data:
            raise UserError(f"{record.where}: {data['__error__']}", "fix or delete that line")
        try:
            question = question_of(record)
        except RowError as exc:
            print(f"rftt search: skipping {exc}", file=sys.stderr)
            continue
        try:
            gold = gold_of(record)
        except RowError as exc:
            if exc.reason != "missing":  # a gold that is there but unusable is a mistake, not "no gold"
                raise UserError(str(exc), "give the answer as text or a number, or leave the field out") from None
            gold = None
        rid = next((str(data[k]) for k in ("unique_id", "id", "idx") if data.get(k) is not None), None)
        out.append(SearchRequest(question, gold, rid, {"source": record.where}))
        if source.limit and len(out) >= source.limit:
            break
    return out, source.file


def build_layout(spec: ModelSpec, token_mode: str):
    """(tokenizer or None, layout, fake script or None): the cheap half of the engine, so prompt
    lengths are checked before the model loads."""
    from rftt_plugin.backends.engine import EngineError, load_tokenizer, make_tag_ids

    if spec.backend == "fake":
        from rftt_plugin.backends.fake import TagScript
        from rftt_plugin.tag_ids import TagIds

        script = TagScript()
        return None, TagIds.from_fake(script.vocab, token_mode), script
    try:
        tokenizer = load_tokenizer(spec.model)
        return tokenizer, make_tag_ids(tokenizer, token_mode), None
    except EngineError as exc:
        raise UserError(str(exc), exc.hint.replace("use token mode text", "pass --token-mode text")
                        or "use a chat/instruct checkpoint") from None


def context_window(spec: ModelSpec, tokenizer=None) -> int | None:
    """The model's context window in tokens: hf from config.json; openai: the tokenizer's
    ``model_max_length`` when it is a real number (the server's limit may be lower); else None."""
    if spec.backend == "openai":
        limit = getattr(tokenizer, "model_max_length", None)
        return int(limit) if isinstance(limit, int) and 0 < limit < 10_000_000 else None
    if spec.backend != "hf":
        return None
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(spec.model)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    value = getattr(text, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None


def prompt_builder(tokenizer, script):
    """question -> prompt ids: the fake vocabulary's, or the tokenizer's chat template."""
    from rftt_plugin.chat_prompt import chat_prompt_ids

    return script.vocab.prompt_ids if script is not None else (lambda q: chat_prompt_ids(tokenizer, q))


def check_lengths(requests: list, prompt, window: int | None) -> None:
    """A question whose prompt alone fills the window cannot be searched: say so before loading."""
    if window is None:
        return
    for req in requests:
        # A 1 MB question would take seconds to tokenize: a prefix of 8 characters per window token
        # decides first (a cut-off last word adds at most a few tokens, hence the margin of 8).
        probe = req.question[: 8 * window]
        n = len(prompt(probe))
        at_least = len(probe) < len(req.question)
        if at_least and n < window + 8:
            n, at_least = len(prompt(req.question)), False
        if n >= window:
            raise UserError(f"{req.meta.get('source', req.id)}: field 'question': {'more than ' if at_least else ''}"
                            f"{n} tokens with the chat template, but the model window is {window} tokens",
                            "shorten the question or remove that row")


class SearchRun:
    """``rftt search`` as a job: :meth:`check`, then :meth:`run` (see the module docstring)."""

    def __init__(self, model: ModelSpec, config: SearchConfig, source: QuestionSource, out: str, *,
                 overwrite: bool = False, concurrency: int = 16, reward_rule: str | None = "rftt",
                 progress: bool = True):
        self.model, self.config, self.source = model, config, source
        self.out, self.overwrite = Path(out).expanduser(), overwrite
        self.concurrency, self.reward_rule, self.progress = concurrency, reward_rule, progress
        self.requests: list = []                 # read by check()
        self.input_file: str | None = None
        self._parts: tuple = (None, None, None)  # tokenizer, layout, fake script: loaded by check()
        # What decides the trees (made by check()): the model, the settings, the question file's
        # content and count.
        self._fingerprint: dict[str, Any] = {}

    # -- checks ------------------------------------------------------------------------------------
    def check(self) -> None:
        from rftt_plugin.jobs.checks import check_out

        for flag, value, low in (("--concurrency", self.concurrency, 1),
                                 ("--max-batch-size", self.model.max_batch_size, 1), ("--limit", self.source.limit, 0)):
            if value < low:
                raise UserError(f"{flag} {value}: must be >= {low}", "see rftt search --help")
        self.model.check()
        if self.reward_rule is not None and self.model.backend != "fake":  # the scripted demo grades itself
            self._grader(None)
        check_out(str(self.out))
        self.model = self.model.with_device("search")
        self.requests, self.input_file = load_requests(self.source)
        if not self.requests:
            raise UserError(f"no questions to search in {self.input_file}",
                            "each row needs a 'question' (or 'problem') field")
        self._fingerprint = self.model.run_fingerprint(
            config=self.config.to_dict(), questions=len(self.requests), reward_rule=self.reward_rule,
            inputs={"questions": input_fingerprint(self.input_file)})
        self._check_out_holds_this_run()
        self._parts = build_layout(self.model, self.config.token_mode)
        prompt = prompt_builder(self._parts[0], self._parts[2])
        check_lengths(self.requests, prompt, context_window(self.model, self._parts[0]))
        for req in self.requests:  # the search takes prompt ids
            req.prompt_ids = prompt(req.question)

    def _run_dir(self) -> SearchRunDir:
        return SearchRunDir(self.out, self._fingerprint, self.overwrite)

    def _check_out_holds_this_run(self) -> None:
        entries = sorted(p.name for p in self.out.iterdir()) if self.out.exists() else []
        if entries and not self.overwrite and not (self.out / RUN_FILE).exists():
            raise UserError(f"--out {self.out}: not empty and not an `rftt search` output ({', '.join(entries[:3])})",
                            "use a new --out directory")
        try:
            self._run_dir().check()
        except RunMismatch as exc:
            diff = exc.diff or [str(exc)]
            shown = "; ".join(diff[:3]) + (f"; and {len(diff) - 3} more" if len(diff) > 3 else "")
            raise UserError(f"--out {self.out} holds trees of another search ({shown})",
                            "use a new --out, or --overwrite to discard them") from None

    # -- the run -----------------------------------------------------------------------------------
    def run(self, engine: EngineHandle) -> int:
        t0 = time.perf_counter()
        with self._run_dir() as store:
            journal = store.journal("trees")
            done = {r["index"]: r for r in journal.records if r["index"] in range(len(self.requests))}
            self._remove_unfinished(done)
            fresh: list[dict[str, Any]] = []
            try:
                asyncio.run(self._search([i for i in range(len(self.requests)) if i not in done], engine,
                                         journal, fresh))
            except KeyboardInterrupt:
                saved = len(done) + sum(1 for r in fresh if not r["error"])
                print(f"\nrftt search: interrupted; {saved} of {len(self.requests)} trees are saved in {self.out}; "
                      f"rerun the same command to continue", file=sys.stderr)
                return 130
        rows = sorted([*done.values(), *fresh], key=lambda r: r["index"])
        return self._report(rows, time.perf_counter() - t0)

    def _remove_unfinished(self, done: dict[int, dict]) -> None:
        """Tree files without a journal line (a failed tree, one saved just before a kill) and the
        old summary: the directory then holds finished trees of this run only."""
        (self.out / SUMMARY_FILE).unlink(missing_ok=True)
        trees = self.out / TREES_DIR
        trees.mkdir(parents=True, exist_ok=True)
        kept = {Path(r["file"]).name for r in done.values()}
        for path in trees.iterdir():
            if path.is_file() and path.name not in kept:
                path.unlink()

    def _grader(self, fake_grade):
        from rftt_plugin.reward.score import leaf_grader

        if self.reward_rule is None:
            return None
        if fake_grade is not None:
            return lambda text, gold: fake_grade(text)  # the scripted demo grades by text alone
        try:
            return leaf_grader(self.reward_rule)
        except ValueError as exc:
            raise UserError(f"--reward-rule {self.reward_rule}: {exc}", "see rftt search --help") from None

    async def _search(self, pending: list[int], engine: EngineHandle, journal, rows: list) -> None:
        """Search ``pending`` (``concurrency`` trees at a time); save each tree and journal its row
        as it finishes."""
        from rftt_plugin.search.batch import tree_summary
        from rftt_plugin.search.many import search_many
        from rftt_plugin.search.mcts import FunctionalMCTS

        if not pending:
            return
        tokenizer, layout, script = self._parts
        built = engine.get(tokenizer=tokenizer, script=script, with_tokenizer=self.model.backend != "fake")
        meta = {"model": self.model.model, "backend": self.model.backend}
        bar = _progress_bar(len(self.requests), len(self.requests) - len(pending), self.progress)

        def finished(k: int, result) -> None:
            index = pending[k]
            name = f"{TREES_DIR}/{index:05d}.json"
            for key, value in meta.items():
                result.tree.meta.setdefault(key, value)
            result.tree.save(self.out / name)
            row = tree_summary(index, result, name)
            if not row["error"]:  # a failed tree is searched again by the next run
                journal.append(row)
            rows.append(row)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(reward=f"{row['mean_reward']:.2f}", nodes=row["nodes"])

        try:
            await search_many([self.requests[i] for i in pending], FunctionalMCTS(built.backend, layout, self.config),
                              grade=self._grader(built.fake_grade), max_concurrent_trees=self.concurrency,
                              on_result=finished)
        finally:
            if bar is not None:
                bar.close()
            await engine.aclose()

    # -- the report --------------------------------------------------------------------------------
    def _report(self, rows: list[dict[str, Any]], wall_s: float) -> int:
        from rftt_plugin.search.batch import totals

        summary = {"config": self.config.to_dict(), "backend": self.model.backend, "model": self.model.model,
                   "totals": totals(rows, wall_s), "trees": rows}
        (self.out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, ensure_ascii=False))
        t = summary["totals"]
        print(f"{t['questions']} trees -> {self.out}: {self._accuracy(rows, t)}, "
              f"token ratio {t['token_ratio']:.2f}, {t['llm_calls']} LLM calls, {t['wall_s']:.1f}s")
        failed = [r for r in rows if r["error"]]
        if not failed:
            return 0
        from rftt_plugin.errors import one_line

        first = failed[0]
        print(f"rftt search: error: {len(failed)} of {len(rows)} trees failed; first: {first['file']} "
              f"(question {first['index']}): {one_line(first['error'])[:300]}; "
              f"hint: rftt show {self.out / first['file']}", file=sys.stderr)
        return 1

    def _accuracy(self, rows: list[dict[str, Any]], t: dict[str, Any]) -> str:
        if self.model.backend != "fake":
            return (f"first-leaf acc {t['first_leaf_accuracy']:.3f}, any-leaf acc {t['any_leaf_accuracy']:.3f}, "
                    f"mean reward {t['mean_reward']:.3f}")
        # the scripted demo's search reward is the script's (any boxed answer), not correctness:
        # grade the saved trees against their gold answers, as the HTML page does
        from rftt_plugin.search.tree import Tree
        from rftt_plugin.tree_view.render import gold_accuracy

        gold = gold_accuracy([Tree.load(self.out / r["file"]) for r in rows if not r["error"]])
        acc = ("not graded (no gold answers)" if gold["graded"] == 0 else
               f"first-leaf acc {gold['first_leaf_accuracy']:.3f}, any-leaf acc {gold['any_leaf_accuracy']:.3f} "
               f"(against the gold, {gold['graded']} graded)")
        return f"{acc}, mean search reward {t['mean_reward']:.3f}"


def _progress_bar(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="trees", unit="tree")
