"""The resumable phase-1 job behind ``rftt gen-sft``: questions -> trees -> samples -> parquet.

Pipeline per question (``concurrency`` questions at a time, tqdm progress bar):

1. search (:class:`~rftt_plugin.phase1.prompted_search.PromptedSearch`) -> one line in ``trees.jsonl``;
2. build the sample (:func:`rftt_plugin.phase1.stitch.build_sample`, incl. the cross-verification
   call) -> one line in ``samples.jsonl`` (a sample or the reason it was dropped);

and once every question is through: ``train.parquet`` (verl SFT format) and ``report.json``,
both written atomically from ``samples.jsonl``.

Resumability (the job can be killed at any moment and restarted with the same command):

* both journals are append-only, one line per finished question, flushed and fsync'ed
  (:class:`~rftt_plugin.store.run_dir.RunDir`, the run directory ``rftt eval`` uses too); a torn
  last line is cut off on restart;
* a question with a line in ``samples.jsonl`` is done and skipped; one with a tree but no sample
  line (killed during the cross-verification) reuses its stored tree, so a search is never run
  twice; anything else is searched;
* a question is identified by a hash of its text and gold answer (:func:`question_key`), not by
  its row number, so a reordered or extended source resumes correctly; exact duplicates in the
  source are searched once (counted in the report);
* ``run.json`` records the search and sample settings and the model of the first run; a restart
  with different settings is refused (:class:`~rftt_plugin.store.run_dir.RunMismatch`: mixing
  trees from two settings would be silent), naming the fields that differ; a second live writer is
  refused too (:class:`~rftt_plugin.store.run_dir.RunLocked`);
* a question that fails with an unexpected ``Exception`` is reported (``failed`` in the report,
  on stderr) and written nowhere, so the next run retries it; the exit status says so.
  Interrupts (any ``BaseException``) stop the job at once, with everything finished so far
  on disk.

Bad input rows (no question, no usable gold, not JSON) are reported by ``file:row`` with the
field and reason (reusing :mod:`rftt_plugin.data.rows`) and skipped.

:class:`GenSftRun` is the command's job (:mod:`rftt_plugin.jobs`): its ``check()`` reads the
questions and the run directory before any model loads, its ``run(engine)`` drives :class:`GenSftJob`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from rftt_plugin.jobs.model import ModelSpec
from rftt_plugin.store.run_dir import JournalSpec, RunDir
from rftt_plugin.data.sft_parquet import sft_row, write_sft_parquet
from rftt_plugin.phase1.stitch import SAMPLE_KINDS, SampleConfig, SampleOutcome, build_sample
from rftt_plugin.phase1.chat import ChatModel
from rftt_plugin.phase1.prompted_search import PromptedConfig, PromptedSearch
from rftt_plugin.search.tree import Tree

__all__ = ["GenSftJob", "GenSftRun", "LoadResult", "Question", "run_dir", "load_questions", "question_key",
           "run_fingerprint"]

logger = logging.getLogger("rftt_plugin.gen_sft")

TREES_FILE = "trees.jsonl"
SAMPLES_FILE = "samples.jsonl"
RUN_FORMAT = "rftt-gen-sft-run/1"
PARQUET_FILE = "train.parquet"
REPORT_FILE = "report.json"


@dataclass(frozen=True)
class Question:
    key: str
    where: str          # "file:row" of its first occurrence
    question: str
    gold: str


@dataclass
class LoadResult:
    questions: list[Question] = field(default_factory=list)
    bad_rows: list[dict[str, str]] = field(default_factory=list)
    duplicates: int = 0
    read: int = 0


def question_key(question: str, gold: str) -> str:
    """Stable id of a question: sha256 of the text and the gold answer (16 hex digits).

    >>> question_key("What is 1 + 1?", "2") == question_key("What is 1 + 1?", "2")
    True
    """
    return hashlib.sha256(f"{question}\x00{gold}".encode("utf-8")).hexdigest()[:16]


def load_questions(source: str, split: str = "train", subset: str | None = None,
                   limit: int | None = None) -> LoadResult:
    """Usable questions of ``source`` in order (first ``limit`` of them), bad rows by ``file:row``."""
    from rftt_plugin.data.rows import question_and_gold
    from rftt_plugin.data.sources import read_records

    out = LoadResult()
    seen: set[str] = set()
    for record in read_records(source, split=split, subset=subset):
        if limit is not None and len(out.questions) >= limit:
            break
        out.read += 1
        usable = question_and_gold(record, out.bad_rows)
        if usable is None:
            continue
        question, gold = usable
        key = question_key(question, gold)
        if key in seen:
            out.duplicates += 1
            continue
        seen.add(key)
        out.questions.append(Question(key, record.where, question, gold))
    return out


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def run_fingerprint(search: PromptedConfig, sample: SampleConfig, prm: bool, settings: dict[str, Any]) -> dict[str, Any]:
    """What decides the trees and samples of a run (``run.json``); ``settings`` adds the model's
    names and file fingerprints (:meth:`rftt_plugin.jobs.model.ModelSpec.fingerprint`). The input
    file is not part of it: questions are keyed by the hash of their text and gold answer, so an
    extended or edited source resumes without mixing (each sample belongs to the question text it
    was made for)."""
    search_d = search.to_dict()
    search_d.pop("concurrency")  # how fast, not what: may change between runs
    sample_d = asdict(sample)
    if sample_d["pick"] == "best":  # the rule before the option existed: such runs still resume
        del sample_d["pick"]
    return {"search": search_d, "sample": sample_d, "prm": prm, **settings}


def run_dir(out: str | os.PathLike, fingerprint: dict[str, Any], overwrite: bool = False) -> RunDir:
    """The gen-sft output directory: run.json, trees.jsonl and samples.jsonl (strict journals: a
    damaged middle line is an error naming it, since a sample line cannot be told apart from its
    tree by guessing), with train.parquet and report.json rebuilt from them."""
    return RunDir(out, fingerprint, tool="rftt gen-sft", run_format=RUN_FORMAT,
                  journals={"trees": JournalSpec(TREES_FILE, require_key="key"),
                            "samples": JournalSpec(SAMPLES_FILE, require_key="key")},
                  outputs=(PARQUET_FILE, REPORT_FILE), overwrite=overwrite)


class GenSftJob:
    """Search questions, build samples, write the parquet and the report, resumably (see the
    module docstring)."""

    def __init__(self, out_dir: str | os.PathLike, chat: ChatModel, *, search: PromptedConfig | None = None,
                 sample: SampleConfig | None = None, scorer: Any = None, tokenizer: Any = None,
                 grade: Callable | None = None, settings: dict[str, Any] | None = None, progress: bool = True,
                 overwrite: bool = False):
        self.out = Path(out_dir)
        self.overwrite = overwrite
        self.search_cfg = search or PromptedConfig()
        self.sample_cfg = sample or SampleConfig()
        self.scorer = scorer
        self.tokenizer = tokenizer
        self.grade = grade
        self.settings = dict(settings or {})
        self.progress = progress
        self._on_call: Callable[[], None] | None = None  # set while run() shows a progress bar
        self.chat = _CountingChat(chat, lambda: self._on_call and self._on_call())
        self.searcher = PromptedSearch(self.chat, self.search_cfg, grade=grade)

    # -- settings --------------------------------------------------------------------------------
    def fingerprint(self) -> dict[str, Any]:
        return run_fingerprint(self.search_cfg, self.sample_cfg, self.scorer is not None, self.settings)

    # -- the job ---------------------------------------------------------------------------------
    async def run(self, loaded: LoadResult, source: str = "") -> dict[str, Any]:
        t0 = time.perf_counter()
        with run_dir(self.out, self.fingerprint(), self.overwrite) as store:
            trees, samples = store.journal("trees"), store.journal("samples")
            tree_records = {r["key"]: r for r in trees.records}
            sample_records = {r["key"]: r for r in samples.records}
            wanted = {q.key for q in loaded.questions}
            todo = [q for q in loaded.questions if q.key not in sample_records]
            counters = {"searched": 0, "reused_trees": 0, "built": 0}
            failed: list[dict[str, str]] = []
            bar = _progress(len(loaded.questions), len(loaded.questions) - len(todo), self.progress)
            gate = asyncio.Semaphore(self.search_cfg.concurrency)
            calls = [0]

            def show() -> None:
                # One question can take minutes; the model-call count shows the job is alive.
                bar.set_postfix({**_postfix(sample_records, wanted, failed), "calls": calls[0]}, refresh=False)

            def on_call() -> None:
                calls[0] += 1
                show()
                bar.update(0)  # redraws at most every tqdm mininterval

            async def one(q) -> None:
                async with gate:
                    try:
                        record = tree_records.get(q.key)
                        if record is None:
                            result = await self.searcher.search(q.question, q.gold, {"key": q.key, "where": q.where})
                            record = {"key": q.key, "where": q.where, "tree": result.tree.to_dict()}
                            trees.append(record)
                            tree_records[q.key] = record
                            counters["searched"] += 1
                        else:
                            counters["reused_trees"] += 1
                        tree = Tree.from_dict(record["tree"])
                        outcome = await build_sample(tree, self.chat, scorer=self.scorer, cfg=self.sample_cfg,
                                                     tokenizer=self.tokenizer, grade=self.grade)
                        line = {"key": q.key, "where": q.where, "outcome": outcome.to_dict()}
                        samples.append(line)
                        sample_records[q.key] = line
                        counters["built"] += 1
                    except Exception as exc:  # noqa: BLE001 - reported; the next run retries it
                        logger.error("gen-sft: %s failed: %s: %s", q.where, type(exc).__name__, exc)
                        failed.append({"key": q.key, "where": q.where, "error": f"{type(exc).__name__}: {exc}"})
                show()
                bar.update(1)

            self._on_call = on_call
            tasks = [asyncio.ensure_future(one(q)) for q in todo]
            try:
                await asyncio.gather(*tasks)
            except BaseException:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
            finally:
                bar.close()
                self._on_call = None
            repaired = {TREES_FILE: trees.repaired_bytes, SAMPLES_FILE: samples.repaired_bytes}

        rows, report = self._assemble(loaded, tree_records, sample_records, failed, counters, repaired, source)
        write_sft_parquet(rows, self.out / PARQUET_FILE)
        report["wall_s"] = round(time.perf_counter() - t0, 3)
        _write_json_atomic(self.out / REPORT_FILE, report)
        return report

    # -- report ----------------------------------------------------------------------------------
    def _assemble(self, loaded: LoadResult, tree_records: dict, sample_records: dict, failed: list, counters: dict,
                  repaired: dict, source: str) -> tuple[list[dict], dict[str, Any]]:
        rows: list[dict] = []
        kinds: Counter[str] = Counter()
        drops: Counter[str] = Counter()
        fallbacks: Counter[str] = Counter()
        search: Counter[str] = Counter()
        dropped_replies: Counter[str] = Counter()
        for q in loaded.questions:
            if q.key in tree_records:
                tree = tree_records[q.key]["tree"]
                stats = tree.get("stats", {})
                search["trees"] += 1
                search["nodes"] += int(stats.get("nodes", 0))
                search["llm_calls"] += int(tree.get("llm_calls", 0))
                dropped_replies.update(tree.get("meta", {}).get("dropped", {}))
            line = sample_records.get(q.key)
            if line is None:
                continue
            outcome = SampleOutcome.from_dict(line["outcome"])
            search["answer_paths"] += int(outcome.details.get("paths", 0))
            search["correct_paths"] += int(outcome.details.get("correct", 0))
            if outcome.ok:
                kinds[outcome.kind] += 1
                if "fallback" in outcome.details:
                    fallbacks[outcome.details["fallback"]] += 1
                rows.append(sft_row(q.question, outcome.response, key=q.key, source=q.where, kind=outcome.kind))
            else:
                drops[outcome.drop] += 1
        done = sum(1 for q in loaded.questions if q.key in sample_records)
        from rftt_plugin.fingerprint import input_fingerprint

        report: dict[str, Any] = {
            "source": source,
            # provenance only: samples are keyed by question text + gold, so an edited source
            # cannot mix (a changed question is a new key; its old sample is not written)
            "source_content": input_fingerprint(source) if source else None,
            "out": str(self.out),
            "parquet": str(self.out / PARQUET_FILE),
            "rows": len(rows),
            "questions": {"read_rows": loaded.read, "usable": len(loaded.questions), "bad_rows": len(loaded.bad_rows),
                          "duplicates": loaded.duplicates, "done": done, "pending": len(loaded.questions) - done},
            "this_run": dict(counters),
            "samples": {**{k: kinds.get(k, 0) for k in SAMPLE_KINDS}, "total": len(rows)},
            "drops": dict(sorted(drops.items())),
            "fallbacks": dict(fallbacks),
            "failed": failed,
            "search": {**dict(search), "dropped_replies": dict(sorted(dropped_replies.items()))},
            "journal_repaired_bytes": repaired,
            "bad_rows": loaded.bad_rows,
            "settings": self.fingerprint(),
        }
        report["summary"] = _summary(report)
        return rows, report


class _CountingChat:
    """Passes calls through to a chat model and reports each finished call (progress display)."""

    def __init__(self, chat: ChatModel, on_call: Callable[[], Any]):
        self.inner = chat
        self.on_call = on_call

    async def complete(self, messages, params):
        try:
            return await self.inner.complete(messages, params)
        finally:
            self.on_call()


def _postfix(sample_records: dict, wanted: set, failed: list) -> dict[str, int]:
    ok = sum(1 for k, r in sample_records.items() if k in wanted and r["outcome"].get("kind"))
    return {"samples": ok, "dropped": sum(1 for k in wanted if k in sample_records) - ok, "failed": len(failed)}


def _progress(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="gen-sft", unit="question", disable=not enabled,
                file=sys.stderr, dynamic_ncols=True)


def _summary(report: dict[str, Any]) -> str:
    """One honest paragraph for the terminal and the report."""
    q = report["questions"]
    parts = [f"{report['rows']} samples written to {report['parquet']} "
             f"({', '.join(f'{k} {v}' for k, v in report['samples'].items() if k != 'total')})"
             f" from {q['done']} of {q['usable']} questions"]
    if report["drops"]:
        parts.append("dropped: " + ", ".join(f"{k} {v}" for k, v in report["drops"].items()))
    if q["bad_rows"]:
        parts.append(f"{q['bad_rows']} bad input rows skipped")
    if report["failed"]:
        parts.append(f"{len(report['failed'])} questions FAILED and were not written; rerun the same command to retry them")
    text = "; ".join(parts) + "."
    if report["rows"] == 0:
        text += (" The parquet is EMPTY: no question produced a usable sample, so it cannot be trained on."
                 " This is expected with a random or very weak model (it never answers correctly);"
                 " look at 'drops' and 'search.dropped_replies' in report.json for why.")
    return text


@dataclass
class GenSftRun:
    """``rftt gen-sft`` as a job (:mod:`rftt_plugin.jobs`): :meth:`check` reads the questions and the
    run directory, :meth:`run` loads the model and drives :class:`GenSftJob`."""

    model: ModelSpec
    source: str
    out: str
    search: PromptedConfig
    sample: SampleConfig
    split: str = "train"
    subset: str | None = None
    limit: int | None = None
    overwrite: bool = False
    prm_url: str | None = None
    progress: bool = True
    loaded: LoadResult = field(default_factory=LoadResult)    # read by check()
    settings: dict[str, Any] = field(default_factory=dict)   # the model's fingerprint, made by check()

    def check(self) -> None:
        from rftt_plugin.errors import UserError
        from rftt_plugin.jobs.checks import check_out

        for flag, value in (("--limit", self.limit), ("--max-length", self.sample.max_length)):
            if value is not None and value < 1:
                raise UserError(f"{flag} {value}: must be >= 1", "see rftt gen-sft --help")
        self.model.check()
        check_out(self.out)
        self.model = self.model.with_device("gen-sft")
        self.settings = self.model.fingerprint()
        self.loaded = load_questions(self.source, self.split, self.subset, self.limit)
        for row in self.loaded.bad_rows[:20]:
            print(f"rftt gen-sft: skipping bad row {row['where']}: field {row['field']!r}: {row['reason']}",
                  file=sys.stderr)
        if len(self.loaded.bad_rows) > 20:
            print(f"rftt gen-sft: ... and {len(self.loaded.bad_rows) - 20} more bad rows (listed in report.json)",
                  file=sys.stderr)
        if not self.loaded.questions:
            raise UserError(f"no usable question in {self.source} ({len(self.loaded.bad_rows)} bad rows)",
                            "each row needs a question and a gold answer (answer, or a solution with \\boxed{})")
        # A resume that would mix settings or model files is refused before the model loads.
        run_dir(self.out, self.fingerprint(), self.overwrite).check()

    def fingerprint(self) -> dict[str, Any]:
        return run_fingerprint(self.search, self.sample, bool(self.prm_url), self.settings)

    def run(self, engine) -> int:
        from rftt_plugin.phase1.chat import BackendChat

        if not self.progress:  # --quiet: no transformers "Loading weights" bar either
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        built = engine.get()
        scorer = None
        if self.prm_url:
            from rftt_plugin.reward.prm import HttpStepScorer

            scorer = HttpStepScorer(self.prm_url)
        job = GenSftJob(self.out, BackendChat(built.backend, built.tokenizer, built.eos_ids), search=self.search,
                        sample=self.sample, scorer=scorer, tokenizer=built.tokenizer, settings=self.settings,
                        progress=self.progress, overwrite=self.overwrite)

        async def main() -> dict:
            try:
                return await job.run(self.loaded, source=self.source)
            finally:
                await engine.aclose()

        try:
            report = asyncio.run(main())
        except KeyboardInterrupt:
            # Every finished question is already in the journals (flushed per question).
            print(f"\nrftt gen-sft: interrupted; {_saved(self.out)} of {len(self.loaded.questions)} questions are "
                  f"saved in {self.out}; rerun the same command to continue", file=sys.stderr)
            return 130
        print(report["summary"])
        print(f"report: {job.out / REPORT_FILE}")
        print(json.dumps({"samples": report["samples"], "drops": report["drops"], "failed": len(report["failed"])}))
        return 1 if report["failed"] else 0


def _saved(out: str | os.PathLike) -> int:
    try:
        return Path(out, SAMPLES_FILE).read_bytes().count(b"\n")
    except OSError:
        return 0
