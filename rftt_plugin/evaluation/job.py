"""Chain and tree evaluation on the math benchmarks, resumable, with scaling curves.

Example::

    from rftt_plugin.evaluation.job import EvalConfig, evaluate
    res = evaluate(EvalConfig(model="ckpt/rl", out="runs/eval", mode="tree", rollouts=[1, 2, 4, 8, 16],
                              benchmarks=["math500", "amc23"]))
    res.summary["benchmarks"]["math500"]["accuracy"]["k=16"]

**Chain mode** (the paper's protocol): greedy decoding, the question alone as the user turn of
the chat template, ``max_tokens`` 4096; pass@1.

**Tree mode** (test-time scaling): one functional MCTS per question with ``max(rollouts)``
iterations; budget *k* is scored on the first *k* leaves. The faithful search runs its
iterations sequentially and iteration *i* depends only on the back-ups before it, so the first
*k* leaves of a *K*-iteration search are exactly the leaves of a *k*-iteration search: one search
serves every budget. The answer at a budget is chosen by
:func:`rftt_plugin.evaluation.selection.select_answer` (majority vote over leaves ending in a
valid ``<output>``; ties to the policy's most probable tag path, then by summed leaf value; or
``value``: highest summed leaf value). The search backs up a gold-free reward (``search_reward``,
see :mod:`rftt_plugin.evaluation.runners`).

**Outputs** in ``out``: ``records.jsonl`` (one line per question, flushed as it finishes),
``trees/<id>.json`` (tree mode), ``results.json``, ``results.md``, ``accuracy_vs_rollouts.png``,
``run.json`` (the settings fingerprint). A rerun with the same ``out`` resumes: finished questions
are never redone; different settings are refused unless ``overwrite``
(:mod:`rftt_plugin.store.run_dir`). Selection and the budget list are not part of the
fingerprint: results are recomputed from the stored leaves, so they can change on a rerun
(budgets up to the searched maximum) without generating anything.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

from rftt_plugin.data.benchmarks import BENCHMARKS, BenchmarkItem, default_data_dir, load_benchmarks
from rftt_plugin.evaluation.provenance import provenance
from rftt_plugin.evaluation.aggregate import columns_for, running_accuracy, score_record, summarize
from rftt_plugin.evaluation.runners import (SEARCH_REWARDS, ChainSettings, QuestionFailed, SampleSettings, run_chain,
                                            run_self_consistency, run_tree)
from rftt_plugin.evaluation.selection import SELECTION_RULES, parse_budgets
from rftt_plugin.evaluation.records import EvalRunDir
from rftt_plugin.search.config import SearchConfig
from rftt_plugin.store.run_dir import RunMismatch

logger = logging.getLogger("rftt_plugin.evaluation.job")

MODES = ("chain", "sc", "tree")
BACKENDS = ("hf", "openai")
RESULT_FORMAT = "rftt-eval/1"
MAX_CONSECUTIVE_FAILURES = 20  # a dead server must not grind through 2,500 questions


class EvalError(RuntimeError):
    """The evaluation cannot run as configured (message says which setting and why)."""


_SEARCH = SearchConfig()


@dataclass
class EvalConfig:
    """Everything ``rftt eval`` takes. Only the fields in :meth:`fingerprint` decide answers."""

    # the SearchConfig knobs tree mode exposes (same names; flags and defaults come from there)
    SEARCH_FIELDS: ClassVar[tuple[str, ...]] = ("token_mode", "step_max_tokens", "direct_answer_max_tokens",
                                                "max_response_tokens", "max_depth", "uct_c", "step_temperature",
                                                "step_top_p", "min_tag_prior", "samples_per_tag")

    model: str
    out: str
    backend: str = "hf"
    base_url: str | None = None           # openai: e.g. http://localhost:8000/v1
    served_model: str | None = None       # openai: the model name the server serves (default: model)
    tokenizer: str | None = None          # chat template + decoding (default: model)
    benchmarks: list[str] = field(default_factory=lambda: list(BENCHMARKS))
    data_dir: str | None = None           # None: rftt_plugin.data.benchmarks.default_data_dir()
    sources: dict[str, str] = field(default_factory=dict)   # benchmark -> file / dataset id
    limit: int | None = None              # first N questions of each benchmark
    mode: str = "chain"
    rollouts: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])
    selection: str = "policy"
    search_reward: str = "answered"
    prm_url: str | None = None            # search_reward prm: a Math-Shepherd-style HTTP step scorer
    prm_aggregate: str = "min"            # path score from step scores: last | mean | min
    # chain decoding
    max_tokens: int = 4096
    temperature: float = 0.0
    seed: int = 0
    # self-consistency (mode sc): max(rollouts) chains sampled at this temperature / top-p, majority vote
    sc_temperature: float = 0.7
    sc_top_p: float = 1.0
    # tree search: defaults are SearchConfig's (one place); iterations = max(rollouts)
    token_mode: str = _SEARCH.token_mode
    step_max_tokens: int = _SEARCH.step_max_tokens
    direct_answer_max_tokens: int = _SEARCH.direct_answer_max_tokens
    max_response_tokens: int = _SEARCH.max_response_tokens
    max_depth: int = _SEARCH.max_depth
    uct_c: float = _SEARCH.uct_c
    step_temperature: float = _SEARCH.step_temperature
    step_top_p: float = _SEARCH.step_top_p
    min_tag_prior: float = _SEARCH.min_tag_prior  # 0 = faithful (every allowed tag is a child); > 0 prunes rare tags
    samples_per_tag: int = _SEARCH.samples_per_tag  # 1 = faithful; n > 1: n sampled children per kept tag
    # execution (do not change answers)
    concurrency: int = 8
    device: str = "cpu"
    dtype: str = "float32"
    overwrite: bool = False
    progress: bool = True
    command: str | None = None            # recorded in results (the CLI fills it in)
    device_line: str | None = None        # printed when the hf model loads: what --device/--dtype auto chose

    def validate(self) -> None:
        problems = []
        if self.mode not in MODES:
            problems.append(f"mode must be one of {MODES} (got {self.mode!r})")
        if self.backend not in BACKENDS:
            problems.append(f"backend must be one of {BACKENDS} (got {self.backend!r})")
        if self.backend == "openai" and not self.base_url:
            problems.append("--backend openai needs --base-url (e.g. http://localhost:8000/v1)")
        if self.selection not in SELECTION_RULES:
            problems.append(f"selection must be one of {SELECTION_RULES} (got {self.selection!r})")
        if self.search_reward not in SEARCH_REWARDS:
            problems.append(f"search_reward must be one of {SEARCH_REWARDS} (got {self.search_reward!r})")
        if self.mode == "sc" and not (self.sc_temperature > 0 and 0 < self.sc_top_p <= 1):
            problems.append(f"self-consistency needs sc_temperature > 0 and sc_top_p in (0, 1] (got "
                            f"{self.sc_temperature}, {self.sc_top_p}): identical samples cannot vote")
        if self.mode != "chain" and (self.search_reward == "prm") != bool(self.prm_url):
            problems.append("--search-reward prm and --prm-url go together (got search_reward "
                            f"{self.search_reward!r}, prm_url {self.prm_url!r})")
        if self.prm_aggregate not in ("last", "mean", "min"):
            problems.append(f"prm_aggregate must be one of last, mean, min (got {self.prm_aggregate!r})")
        if self.max_tokens < 1:
            problems.append(f"max_tokens must be >= 1 (got {self.max_tokens})")
        if self.concurrency < 1:
            problems.append(f"concurrency must be >= 1 (got {self.concurrency})")
        if self.limit is not None and self.limit < 1:
            problems.append(f"limit must be >= 1 (got {self.limit})")
        try:
            self.rollouts = parse_budgets(self.rollouts)
        except ValueError as exc:
            problems.append(str(exc))
        if problems:
            raise EvalError("invalid evaluation settings: " + "; ".join(problems))
        if self.mode == "tree":
            self.search_config()  # raises ValueError naming the bad search knob

    def search_config(self):
        try:
            return SearchConfig(iterations=max(self.rollouts), distinct_leaves=False, seed=self.seed,
                                **{name: getattr(self, name) for name in self.SEARCH_FIELDS})
        except ValueError as exc:
            raise EvalError(str(exc)) from exc

    def model_spec(self):
        """The model of this evaluation (:class:`rftt_plugin.jobs.model.ModelSpec`): tree mode reads
        the functional-token layout, chain mode only the chat template."""
        from rftt_plugin.jobs.model import ModelSpec

        return ModelSpec(self.backend, self.model, tokenizer=self.tokenizer, base_url=self.base_url,
                         served_model=self.served_model, device=self.device, dtype=self.dtype,
                         token_mode=self.token_mode if self.mode == "tree" else None,
                         max_batch_size=max(1, self.concurrency), max_concurrency=max(1, self.concurrency) * 2,
                         seed=self.seed, device_line=self.device_line)

    def fingerprint(self) -> dict[str, Any]:
        """The settings that decide the answers; a resumed run must match them exactly."""
        fp: dict[str, Any] = {"mode": self.mode, **self.model_spec().fingerprint(), "seed": self.seed}
        if self.mode == "chain":
            fp.update(max_tokens=self.max_tokens, temperature=self.temperature)
        elif self.mode == "sc":
            fp.update(max_tokens=self.max_tokens, samples=max(self.rollouts), temperature=self.sc_temperature,
                      top_p=self.sc_top_p)
            if self.search_reward == "prm":  # only a PRM changes what sc records; answered/none/oracle do not
                fp.update(prm_url=self.prm_url, prm_aggregate=self.prm_aggregate)
        else:
            fp.update(search=self.search_config().to_dict(), search_reward=self.search_reward)
            if self.search_reward == "prm":
                fp.update(prm_url=self.prm_url, prm_aggregate=self.prm_aggregate)
        return fp

    @property
    def columns(self):
        return columns_for(self.mode, self.rollouts)


@dataclass
class EvalResult:
    out: Path
    summary: dict[str, Any]
    payload: dict[str, Any]
    ran: int                  # questions answered by this invocation
    resumed: int              # questions found finished in records.jsonl
    failed: list[str]
    wall_s: float

    @property
    def ok(self) -> bool:
        return not self.failed


# ----------------------------------------------------------------------------------------------
# Model side
# ----------------------------------------------------------------------------------------------

def build_engine(cfg: EvalConfig, with_tokenizer: bool = True, engine: Any = None):
    """(backend, tokenizer, layout) for ``cfg`` through ``engine`` (an
    :class:`~rftt_plugin.jobs.model.EngineHandle`; built from ``cfg`` when None)."""
    from rftt_plugin.errors import UserError
    from rftt_plugin.jobs.model import EngineHandle

    try:
        built = (engine or EngineHandle(cfg.model_spec())).get(with_tokenizer=with_tokenizer)
    except UserError as exc:
        raise EvalError(f"{exc.cause}; {exc.hint}" if exc.hint else exc.cause) from None
    return built.backend, built.tokenizer, built.layout


def hardware() -> dict[str, Any]:
    """What the numbers were measured on (recorded in results.json)."""
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "cpu_count": os.cpu_count()}
    try:
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    desc = f"{info.get('cpus_usable', info['cpu_count'])} CPU cores"
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            desc = ", ".join(info["gpus"]) + f" + {desc}"
    except ImportError:
        pass
    info["description"] = desc
    return info


# ----------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------

def _check_done(items: list[BenchmarkItem], records: dict[str, dict], store: EvalRunDir, mode: str) -> None:
    for item in items:
        rec = records.get(item.id)
        if rec is None:
            continue
        if rec.get("mode") != mode:
            raise RunMismatch(f"{store.records_path}: record {item.id} is {rec.get('mode')!r} mode, this run is "
                              f"{mode!r}; use another --out or --overwrite")
        if rec.get("question_sha") != item.question_sha:
            raise RunMismatch(f"{store.records_path}: record {item.id} was made for another question text than "
                              f"{item.metadata.get('source', item.id)}: the benchmark data changed; use another "
                              f"--out or --overwrite")


class _Progress:
    """tqdm bar over the pending questions, postfix = running accuracy per benchmark."""

    def __init__(self, total: int, initial_scores: list, label: str, enabled: bool):
        self.scores = list(initial_scores)
        self.label = label
        self.bar = None
        if enabled and total:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="rftt eval", unit="q", dynamic_ncols=True)
            self._postfix()

    def _postfix(self) -> None:
        acc = running_accuracy(self.scores, self.label)
        text = " ".join(f"{b} {c}/{n}={100 * c / n:.1f}%" for b, (c, n) in acc.items() if n)
        self.bar.set_postfix_str(f"[{self.label}] {text}", refresh=False)

    def add(self, score) -> None:
        self.scores.append(score)
        if self.bar is not None:
            self._postfix()
            self.bar.update(1)

    def fail(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def write(self, msg: str) -> None:
        if self.bar is not None:
            self.bar.write(msg, file=sys.stderr)
        else:
            print(msg, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


async def _run_pending(cfg: EvalConfig, pending: list[BenchmarkItem], store: EvalRunDir, progress: _Progress,
                       backend: Any, tokenizer: Any, layout: Any = None, close: bool = True) -> tuple[int, list[str]]:
    """Answer ``pending`` with at most ``cfg.concurrency`` questions in flight; append records.
    With ``close`` the backend is closed on the way out, whatever happens."""
    try:
        return await _answer_all(cfg, pending, store, progress, backend, tokenizer, layout)
    finally:
        aclose = getattr(backend, "aclose", None)
        if close and aclose is not None:
            await aclose()


async def _answer_all(cfg: EvalConfig, pending: list[BenchmarkItem], store: EvalRunDir, progress: _Progress,
                      backend: Any, tokenizer: Any, layout: Any) -> tuple[int, list[str]]:
    from rftt_plugin.chat_prompt import chat_prompt_ids

    columns = cfg.columns
    prm = None
    if cfg.search_reward == "prm" and cfg.mode != "chain":
        from rftt_plugin.reward.prm import HttpStepScorer

        from rftt_plugin.reward.prm import PREFLIGHT_QUESTION, PREFLIGHT_STEPS

        prm = HttpStepScorer(url=cfg.prm_url, timeout_s=30.0, retries=2)
        try:  # one real call before any question: a dead PRM is one clear error, not 20 failed questions
            await asyncio.to_thread(prm.score_steps, PREFLIGHT_QUESTION, list(PREFLIGHT_STEPS))
        except Exception as exc:  # noqa: BLE001 - any failure is the --prm-url setting's
            raise EvalError(f"--prm-url {cfg.prm_url}: the PRM did not score a test path "
                            f"({type(exc).__name__}: {exc})") from None
    if cfg.mode == "tree":
        from rftt_plugin.search import FunctionalMCTS
        from rftt_plugin.tag_ids import TagIds, TagVocabularyError

        if layout is None:
            try:
                layout = TagIds.from_tokenizer(tokenizer, mode=cfg.token_mode)
            except TagVocabularyError as exc:
                raise EvalError(f"{cfg.model}: {exc}") from exc
        mcts = FunctionalMCTS(backend, layout, cfg.search_config())
        store.trees_dir.mkdir(parents=True, exist_ok=True)

        async def answer(item: BenchmarkItem) -> dict:
            rel = f"trees/{item.id}.json"
            return await run_tree(item, mcts, cfg.rollouts, cfg.selection, cfg.search_reward,
                                  tree_path=store.tree_path(item.id), tree_file=rel,
                                  prompt=lambda q: chat_prompt_ids(tokenizer, q), prm=prm,
                                  prm_aggregate=cfg.prm_aggregate)
    else:
        def decode(ids):
            # Tags are normal (not special) tokens: skipping special tokens drops only EOS/pad.
            return tokenizer.decode(list(ids), skip_special_tokens=True)

        def prompt(question: str) -> list[int]:
            return chat_prompt_ids(tokenizer, question)

        if cfg.mode == "sc":
            samples = SampleSettings(max(cfg.rollouts), cfg.max_tokens, cfg.sc_temperature, cfg.sc_top_p, cfg.seed)

            async def answer(item: BenchmarkItem) -> dict:
                return await run_self_consistency(item, backend, prompt, decode, samples, cfg.rollouts, cfg.selection,
                                                  prm=prm, prm_aggregate=cfg.prm_aggregate)
        else:
            settings = ChainSettings(cfg.max_tokens, cfg.temperature, cfg.seed)

            async def answer(item: BenchmarkItem) -> dict:
                return await run_chain(item, backend, prompt, decode, settings)

    gate = asyncio.Semaphore(cfg.concurrency)
    failed: list[str] = []
    done = 0
    consecutive = 0

    async def one(item: BenchmarkItem):
        async with gate:
            try:
                return item, await answer(item), None
            except QuestionFailed as exc:
                return item, None, str(exc)
            except Exception as exc:  # noqa: BLE001 - one question must not end the run
                logger.exception("question %s failed", item.id)
                return item, None, f"{item.id}: {type(exc).__name__}: {exc}"

    tasks = [asyncio.ensure_future(one(item)) for item in pending]
    try:
        for fut in asyncio.as_completed(tasks):
            item, record, error = await fut
            if error is not None:
                failed.append(error)
                consecutive += 1
                progress.fail()
                progress.write(f"rftt eval: {error} (no record; a rerun retries it)")
                if consecutive >= MAX_CONSECUTIVE_FAILURES:
                    raise EvalError(f"{consecutive} questions in a row failed; stopping. Last error: {error}")
                continue
            consecutive = 0
            store.append(record)
            done += 1
            progress.add(score_record(record, columns, cfg.selection))
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return done, failed


def build_payload(cfg: EvalConfig, items: list[BenchmarkItem], records: dict[str, dict], *, wall_s: float,
                  failed: list[str], sources: dict[str, str], ran: int, resumed: int = 0) -> dict[str, Any]:
    """results.json content for the questions of this run (records of other questions are ignored)."""
    columns = cfg.columns
    scores = [score_record(records[i.id], columns, cfg.selection) for i in items if i.id in records]
    expected: dict[str, int] = {}
    for item in items:
        expected[item.benchmark] = expected.get(item.benchmark, 0) + 1
    summary = summarize(scores, columns, expected)
    hw = hardware()
    if cfg.backend == "openai":  # the model runs elsewhere: say so next to this machine's cores
        hw["description"] += f" (client; the model is served at {cfg.base_url})"
    if cfg.mode == "chain":
        protocol = (f"greedy decoding (temperature {cfg.temperature:g}), question alone as the user turn of the chat "
                    f"template, max {cfg.max_tokens} new tokens; pass@1")
        selection_note = None
    elif cfg.mode == "sc":
        protocol = (f"self-consistency: {max(cfg.rollouts)} chains per question sampled independently (temperature "
                    f"{cfg.sc_temperature:g}, top-p {cfg.sc_top_p:g}, max {cfg.max_tokens} new tokens), budget k "
                    f"scored on the first k chains")
        selection_note = "majority vote over the chains' answers, ties to the answer seen first"
    else:
        protocol = (f"functional MCTS, {max(cfg.rollouts)} iterations per question, budget k scored on the first k "
                    f"leaves; step max {cfg.step_max_tokens} tokens, temperature {cfg.step_temperature:g}, "
                    f"token mode {cfg.token_mode}")
        selection_note = {"policy": "votes weighted by the policy's probability of each distinct leaf's tag path "
                                    "(ties: votes, then summed leaf value)",
                          "majority": "majority vote over leaves with a valid <output> answer, ties to the policy's most probable "
                                          "tag path, then by summed leaf value",
                          "value": "highest summed leaf value (mean node value along the path), ties by votes"}[cfg.selection]
    return {
        "format": RESULT_FORMAT,
        "mode": cfg.mode,
        "model": cfg.model,
        "backend": cfg.backend if cfg.backend == "hf" else f"openai ({cfg.base_url})",
        "protocol": protocol,
        "selection": cfg.selection if cfg.mode != "chain" else None,
        "selection_note": selection_note,
        "search_reward": cfg.search_reward if cfg.mode == "tree" else None,
        "rollouts": cfg.rollouts if cfg.mode != "chain" else None,
        "sources": sources,
        "fingerprint": cfg.fingerprint(),
        "settings": {k: v for k, v in asdict(cfg).items() if k not in ("progress", "overwrite", "device_line")},
        "command": cfg.command,
        "hardware": hw,
        **provenance(),  # versions (torch, verl, transformers, math-verify, ...) and git_revision
        "wall_s": wall_s,
        "ran": ran,
        "resumed": resumed,
        "failed": failed,
        "summary": summary,
    }


def write_reports(out: Path, payload: dict[str, Any], warn: Callable[[str], None] = print) -> None:
    from rftt_plugin.evaluation.report import PLOT_FILE, write_json, write_markdown, write_plot

    write_json(out / "results.json", payload)
    write_markdown(out / "results.md", payload)
    write_plot(out / PLOT_FILE, payload, warn=warn)


def evaluate(cfg: EvalConfig, *, backend: Any = None, tokenizer: Any = None, layout: Any = None,
             warn: Callable[[str], None] | None = None, engine: Any = None, close: bool = True) -> EvalResult:
    """Run (or resume) an evaluation and write every output file; see the module docstring.

    ``backend`` / ``tokenizer`` may be passed in (an already loaded model, a test double);
    otherwise they are built from ``cfg`` -- and only if some question still needs an answer.
    Tree mode takes ready :class:`~rftt_plugin.tag_ids.TagIds` as ``layout`` (the tokenizer still
    builds the prompts). ``close=False`` leaves the backend open for another evaluation on the same
    ``engine`` (``rftt eval --mode chain,sc,tree`` loads an ``hf`` model once); its owner closes it.
    """
    warn = warn or (lambda msg: print(f"rftt eval: {msg}", file=sys.stderr))
    cfg.validate()
    t0 = time.perf_counter()
    data_dir = cfg.data_dir if cfg.data_dir is not None else default_data_dir()
    benches = load_benchmarks(cfg.benchmarks, sources=cfg.sources, data_dir=data_dir, limit=cfg.limit)
    items = [item for b in benches for item in b.items]
    sources = {b.name: b.source.label for b in benches}
    from rftt_plugin.fingerprint import input_fingerprint

    fingerprint = {**cfg.fingerprint(), "inputs": {b.name: input_fingerprint(b.source.location) for b in benches}}
    with EvalRunDir(cfg.out, fingerprint, overwrite=cfg.overwrite, warn=warn) as store:
        records = store.loaded.records
        _check_done(items, records, store, cfg.mode)
        pending = [item for item in items if item.id not in records]
        resumed = len(items) - len(pending)
        if resumed and pending:
            warn(f"resuming {store.out}: {resumed} question(s) already done, {len(pending)} to go")
        ran, failed = 0, []
        if pending:
            be, tok = backend, tokenizer
            if be is None:
                need_tok = tok is None  # the tokenizer builds the prompts, in tree mode too
                be, built_tok, built_layout = build_engine(cfg, with_tokenizer=need_tok, engine=engine)
                tok, layout = tok or built_tok, layout or built_layout
            elif tok is None:
                from rftt_plugin.backends.engine import EngineError, load_tokenizer

                try:
                    tok = load_tokenizer(cfg.tokenizer or cfg.model, flag="--tokenizer" if cfg.tokenizer else "--model")
                except EngineError as exc:
                    raise EvalError(exc.with_hint()) from None
            initial = [score_record(records[i.id], cfg.columns, cfg.selection) for i in items if i.id in records]
            progress = _Progress(len(pending), initial, cfg.columns[-1].label, cfg.progress)
            try:
                ran, failed = asyncio.run(_run_pending(cfg, pending, store, progress, be, tok, layout, close))
            finally:
                progress.close()
        wall = time.perf_counter() - t0
        payload = build_payload(cfg, items, store.loaded.records, wall_s=wall, failed=failed, sources=sources,
                                ran=ran, resumed=resumed)
        write_reports(store.out, payload, warn=warn)
    return EvalResult(Path(cfg.out), payload["summary"], payload, ran, resumed, failed, wall)


class EvalRun:
    """``rftt eval`` as a job (:mod:`rftt_plugin.jobs`): :meth:`check` the model, ``--out``, the device
    and the settings; :meth:`run` is :func:`evaluate` (which reads the benchmarks and the run
    directory before it asks ``engine`` for the model) and returns its :class:`EvalResult`."""

    def __init__(self, cfg: EvalConfig):
        self.cfg = cfg
        self.model = cfg.model_spec()

    def check(self) -> None:
        from rftt_plugin.jobs.checks import check_out

        self.model.check()
        check_out(self.cfg.out)
        self.model = self.model.with_device("eval")
        m = self.model
        self.cfg.device, self.cfg.dtype, self.cfg.device_line = m.device, m.dtype, m.device_line
        self.cfg.validate()

    def run(self, engine: Any, close: bool = True) -> EvalResult:
        """:func:`evaluate` on ``engine``; ``close=False`` keeps its backend open for the next mode."""
        return evaluate(self.cfg, engine=engine, close=close)
