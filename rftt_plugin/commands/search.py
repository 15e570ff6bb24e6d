"""``rftt search``: functional tree search over a set of questions; one JSON per tree + a summary.

    rftt search --model ckpt/qwen-rftt --backend hf --benchmark-file data/eval/math500.jsonl \\
        --limit 8 --out runs/search
    rftt search --model ckpt/qwen-rftt --backend openai --base-url http://localhost:8000/v1 \\
        --questions my.jsonl --out runs/search
    rftt search --backend fake --questions my.jsonl --out /tmp/demo   # scripted demo, no model

Questions: a jsonl/json/parquet file with ``question`` (or ``problem``) and optionally ``answer``
(or ``final_answer``, or a ``solution`` with ``\\boxed{}``; GSM8K's ``####`` works too). Leaves
are graded with ``rftt_plugin.reward`` (rule ``--reward-rule``, the paper's 1 / 0.1 / 0 by
default); questions without a gold answer get reward 0. ``--benchmark NAME`` reads a benchmark
through ``rftt_plugin.data.benchmarks.load_benchmark`` (a local copy from ``RFTT_DATA_DIR`` or
``data/eval``, else the hub); ``--benchmark-file`` reads a file as it is.

Output: ``OUT/trees/<index>.json`` (render with ``rftt show``), ``OUT/summary.json`` and
``OUT/run.json`` (settings + fingerprints of the model files and the question file). ``--out`` must
be new/empty or hold a run with the same fingerprint (then its old trees are removed and the
search is redone), so a directory never mixes trees of two runs; ``--overwrite`` discards another
run's files.

Input rows: invalid JSON, a non-UTF-8 byte, or a gold answer that is a dict / bool / null is an
error naming ``file:line`` (exit 2) before any model is loaded; rows without a question are
skipped with a note; ``[4]`` is the answer ``4`` (a longer list is a multi-part answer). A question
longer than the model's context window is an error too. A tree that fails during the search makes
the exit status 1 and is named on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rftt_plugin.commands._compat import deprecated_alias
from rftt_plugin.commands._device import add_device_flags, announce_device, resolve_device_flags
from rftt_plugin.commands._search_flags import add_search_flags, search_values
from rftt_plugin.search.config import SearchConfig


SEARCH_FLAGS = ("token_mode", "iterations", "uct_c", "max_depth", "step_temperature", "step_top_p", "step_max_tokens",
                "direct_answer_max_tokens", "max_response_tokens", "distinct_leaves", "max_iterations",
                "min_tag_prior", "cut_reward", "seed")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_argument_group("model and backend")
    src.add_argument("--model", help="checkpoint (hf backend) or tokenizer path (openai backend)")
    src.add_argument("--backend", choices=("hf", "openai", "fake"), default="hf")
    src.add_argument("--base-url", help="OpenAI-compatible server, e.g. http://localhost:8000/v1")
    src.add_argument("--served-model-name", help="model name on the server (default: --model)")
    src.add_argument("--api-key", default=None, help="default: $OPENAI_API_KEY")
    readouts = ("auto", "token_ids", "prompt_logprobs", "top_logprobs")
    src.add_argument("--tag-readout", dest="logprob_method", choices=readouts, default="auto",
                     help="openai: how tag probabilities are read from the server: auto (default: token_ids, "
                          "falling back once, announced, to prompt_logprobs where the server does not accept "
                          "it), token_ids (vLLM's logprob_token_ids: one cached request, vLLM >= 0.27.1 on the "
                          "OpenAI endpoint), prompt_logprobs (exact, skips the prefix cache) or top_logprobs "
                          "(top-k of one sampled token). Same name and values as the recipe's rftt.tag_readout")
    deprecated_alias(src, "--logprob-method", "--tag-readout", "logprob_method", choices=readouts)
    add_device_flags(src)
    src.add_argument("--max-batch-size", type=int, default=16, help="hf backend micro-batch size")

    data = parser.add_argument_group("questions")
    which = data.add_mutually_exclusive_group(required=True)
    which.add_argument("--questions", help="jsonl/json/parquet with question[, answer]")
    which.add_argument("--benchmark-file", help="a benchmark file (e.g. math500.jsonl)")
    which.add_argument("--benchmark", help="benchmark name (math500, gsm8k, ...): read from $RFTT_DATA_DIR or "
                                           "./data/eval when there, else its public dataset id")
    data.add_argument("--limit", type=int, default=0, help="first N questions only (0 = all)")
    data.add_argument("--out", required=True, help="output directory (new, empty, or a run with the same settings)")
    data.add_argument("--overwrite", action="store_true", help="discard the trees of another run in --out")

    s = parser.add_argument_group("search (mirrors rftt.search; defaults from SearchConfig)")
    add_search_flags(s, SEARCH_FLAGS, aliases={"step_temperature": ["--temperature"], "step_top_p": ["--top-p"]})
    s.add_argument("--concurrency", type=int, default=16, help="trees searched at the same time")
    s.add_argument("--reward-rule", default="rftt", help="reward rule for <output> leaves (rftt, binary)")
    s.add_argument("--no-grade", action="store_true", help="do not grade (all rewards 0)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    deprecated_alias(s, "--no-progress", "--quiet", "quiet", flag=True)


def search_config(args: argparse.Namespace) -> SearchConfig:
    return SearchConfig(**search_values(args, SEARCH_FLAGS))


# -- questions ------------------------------------------------------------------------------------

def load_requests(args: argparse.Namespace) -> list:
    """SearchRequests from the chosen source. Rows without a question are skipped with a note;
    a row that is not valid JSON or whose gold answer has an unusable type is a UserError."""
    from rftt_plugin.errors import UserError
    from rftt_plugin.search.many import SearchRequest

    if args.benchmark:
        from rftt_plugin.data.benchmarks import BenchmarkError, default_data_dir, load_benchmark

        try:
            bench = load_benchmark(args.benchmark, data_dir=default_data_dir(), limit=args.limit or None)
        except BenchmarkError as exc:
            raise UserError(f"--benchmark {args.benchmark}: {exc}") from None
        args._input_file = bench.source.location
        return [SearchRequest(item.question, item.gold, item.id, {"source": bench.source.label, **item.metadata})
                for item in bench.items]
    from rftt_plugin.data.sources import read_records

    args._input_file = args.questions or args.benchmark_file
    records = read_records(args._input_file)
    from rftt_plugin.data.rl import RowError, gold_of, question_of

    out = []
    for record in records:
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
        if args.limit and len(out) >= args.limit:
            break
    return out


# -- backend + layout -----------------------------------------------------------------------------

def build_layout(args: argparse.Namespace, config: SearchConfig):
    """(tokenizer or None, layout, fake script or None): the cheap half of the engine, so prompt
    lengths are checked before the model loads."""
    from rftt_plugin.backends.engine import EngineError, load_tokenizer, make_tag_ids
    from rftt_plugin.errors import UserError

    if args.backend == "fake":
        from rftt_plugin.backends.fake import TagScript
        from rftt_plugin.tag_ids import TagIds

        script = TagScript()
        return None, TagIds.from_fake(script.vocab, config.token_mode), script
    try:
        tokenizer = load_tokenizer(args.model)
        return tokenizer, make_tag_ids(tokenizer, config.token_mode), None
    except EngineError as exc:
        raise UserError(str(exc), exc.hint.replace("use token mode text", "pass --token-mode text")
                        or "use a chat/instruct checkpoint") from None


def context_window(args: argparse.Namespace, tokenizer=None) -> int | None:
    """The model's context window in tokens: hf from config.json; openai: the tokenizer's
    ``model_max_length`` when it is a real number (the server's limit may be lower); else None."""
    if args.backend == "openai":
        limit = getattr(tokenizer, "model_max_length", None)
        return int(limit) if isinstance(limit, int) and 0 < limit < 10_000_000 else None
    if args.backend != "hf":
        return None
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(args.model)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    value = getattr(text, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None


def check_lengths(requests: list, prompt, window: int | None) -> None:
    """A question whose prompt alone fills the window cannot be searched: say so before loading."""
    from rftt_plugin.errors import UserError

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


def build_engine(args: argparse.Namespace, config: SearchConfig, layout=None, script=None, tokenizer=None):
    """(backend, layout, grade_fn or None) for the chosen backend, through the one engine builder."""
    from rftt_plugin.backends.engine import EngineError, make_engine
    from rftt_plugin.errors import UserError

    announce_device(args)

    if layout is None:
        tokenizer, layout, script = build_layout(args, config)
    try:
        engine = make_engine(args.backend, args.model, tokenizer=tokenizer, token_mode=None, base_url=args.base_url,
                             served_model=args.served_model_name, api_key=args.api_key, device=args.device,
                             dtype=args.dtype, max_batch_size=args.max_batch_size,
                             max_concurrency=max(4, 4 * args.concurrency), seed=config.seed,
                             logprob_method=args.logprob_method, script=script,
                             with_tokenizer=args.backend != "fake")
    except EngineError as exc:
        raise UserError(str(exc), exc.hint or "check --model, --base-url, --dtype and --device") from None
    return engine.backend, layout, engine.fake_grade


# -- summary --------------------------------------------------------------------------------------

# -- run ------------------------------------------------------------------------------------------

RUN_FILE = "run.json"
RUN_FORMAT = "rftt-search-run/1"


def run_fingerprint(args: argparse.Namespace, config: SearchConfig, requests: list) -> dict[str, Any]:
    """What decides the trees: settings, model file contents, question file contents and count."""
    from rftt_plugin.fingerprint import input_fingerprint, model_fingerprint

    model = None
    if args.backend == "hf":
        model = model_fingerprint(args.model)
    elif args.backend == "openai":
        model = f"served:{args.served_model_name or args.model}@{args.base_url}; tokenizer {model_fingerprint(args.model)}"
    return {"config": asdict(config), "backend": args.backend, "model": args.model, "weights": model,
            "input": {"file": str(args._input_file), "content": input_fingerprint(args._input_file)},
            "questions": len(requests), "reward_rule": None if args.no_grade else args.reward_rule}


def check_out_matches(out: Path, fingerprint: dict[str, Any], overwrite: bool) -> None:
    """Refuse an ``out`` that holds anything but this same run (unless ``overwrite``). No side effects."""
    from rftt_plugin.errors import UserError
    from rftt_plugin.store.run_dir import fingerprint_diff

    entries = [p.name for p in out.iterdir()] if out.exists() else []
    run_file = out / RUN_FILE
    if not entries or overwrite:
        return
    if not run_file.exists():
        raise UserError(f"--out {out}: not empty and not an `rftt search` output ({', '.join(sorted(entries)[:3])})",
                        "use a new --out directory")
    try:
        old = json.loads(run_file.read_text(encoding="utf-8")).get("fingerprint", {})
    except (ValueError, OSError, AttributeError):
        old = {}
    diff = fingerprint_diff(old, json.loads(json.dumps(fingerprint)))
    if diff:
        shown = "; ".join(diff[:3]) + (f"; and {len(diff) - 3} more" if len(diff) > 3 else "")
        raise UserError(f"--out {out} holds trees of another search ({shown})",
                        "use a new --out, or --overwrite to discard them")


def reset_out(out: Path, fingerprint: dict[str, Any]) -> None:
    """Remove our own files of an earlier run (never anything else) and record this run's fingerprint,
    so ``out`` ends up holding this run's trees only."""
    import shutil

    for name in ("trees", "summary.json", RUN_FILE):
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    (out / "trees").mkdir(parents=True, exist_ok=True)
    (out / RUN_FILE).write_text(json.dumps({"format": RUN_FORMAT, "fingerprint": fingerprint}, indent=2,
                                           ensure_ascii=False), encoding="utf-8")


async def _search_all(args, requests, config, engine) -> list[dict[str, Any]]:
    from rftt_plugin.reward.score import leaf_grader
    from rftt_plugin.search.batch import search_into_dir
    from rftt_plugin.search.mcts import FunctionalMCTS

    backend, layout, fake_grade = engine
    if args.no_grade:
        grade = None
    elif fake_grade is not None:
        grade = lambda text, gold: fake_grade(text)  # noqa: E731 - the scripted demo grades by text alone
    else:
        grade = leaf_grader(args.reward_rule)
    try:
        return await search_into_dir(requests, FunctionalMCTS(backend, layout, config), Path(args.out), grade=grade,
                                     concurrency=args.concurrency, meta={"model": args.model, "backend": args.backend},
                                     progress=not args.quiet)
    finally:
        await backend.aclose()


def run(args: argparse.Namespace) -> int:
    from rftt_plugin.commands._checks import check_model, check_out
    from rftt_plugin.errors import UserError

    try:
        config = search_config(args)
    except ValueError as exc:
        raise UserError(str(exc), "see rftt search --help for the allowed values") from None
    for flag, value, low in (("--concurrency", args.concurrency, 1), ("--max-batch-size", args.max_batch_size, 1),
                             ("--limit", args.limit, 0)):
        if value < low:
            raise UserError(f"{flag} {value}: must be >= {low}", "see rftt search --help")
    # Cheap checks first: nothing heavy happens before every one of them passed.
    if args.backend != "fake":
        if not args.model:
            raise UserError(f"--model is required with --backend {args.backend}",
                            "pass a checkpoint directory (hf) or the served model's tokenizer (openai)")
        check_model(args.model, tokenizer_only=args.backend == "openai")
        if args.backend == "openai" and not args.base_url:
            raise UserError("--base-url is required with --backend openai", "e.g. --base-url http://localhost:8000/v1")
    out = check_out(args.out)
    resolve_device_flags(args, "search")
    requests = load_requests(args)
    if not requests:
        raise UserError(f"no questions to search in {args._input_file}",
                        "each row needs a 'question' (or 'problem') field")
    fingerprint = run_fingerprint(args, config, requests)
    check_out_matches(out, fingerprint, args.overwrite)
    tokenizer, layout, script = build_layout(args, config)
    from rftt_plugin.chat_prompt import chat_prompt_ids

    prompt = script.vocab.prompt_ids if script is not None else (lambda q: chat_prompt_ids(tokenizer, q))
    check_lengths(requests, prompt, context_window(args, tokenizer))
    for req in requests:  # the search takes prompt ids (issue #30)
        req.prompt_ids = prompt(req.question)
    reset_out(out, fingerprint)  # every check passed: only now are old trees removed
    engine = build_engine(args, config, layout, script, tokenizer)
    t0 = time.perf_counter()
    rows = asyncio.run(_search_all(args, requests, config, engine))
    from rftt_plugin.search.batch import totals

    summary = {"config": asdict(config), "backend": args.backend, "model": args.model,
               "totals": totals(rows, time.perf_counter() - t0), "trees": rows}
    Path(args.out, "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    t = summary["totals"]
    if args.backend == "fake":
        # the scripted demo's search reward is the script's (any boxed answer), not correctness:
        # grade the saved trees against their gold answers, as the HTML page does
        from rftt_plugin.search.tree import Tree
        from rftt_plugin.tree_view.render import gold_accuracy

        gold = gold_accuracy([Tree.load(out / r["file"]) for r in rows if not r["error"]])
        acc = ("not graded (no gold answers)" if gold["graded"] == 0 else
               f"first-leaf acc {gold['first_leaf_accuracy']:.3f}, any-leaf acc {gold['any_leaf_accuracy']:.3f} "
               f"(against the gold, {gold['graded']} graded)")
        print(f"{t['questions']} trees -> {args.out}: {acc}, mean search reward {t['mean_reward']:.3f}, "
              f"token ratio {t['token_ratio']:.2f}, {t['llm_calls']} LLM calls, {t['wall_s']:.1f}s")
    else:
        print(f"{t['questions']} trees -> {args.out}: first-leaf acc {t['first_leaf_accuracy']:.3f}, "
              f"any-leaf acc {t['any_leaf_accuracy']:.3f}, mean reward {t['mean_reward']:.3f}, "
              f"token ratio {t['token_ratio']:.2f}, {t['llm_calls']} LLM calls, {t['wall_s']:.1f}s")
    failed = [r for r in rows if r["error"]]
    if failed:
        from rftt_plugin.errors import one_line

        first = failed[0]
        print(f"rftt search: error: {len(failed)} of {len(rows)} trees failed; first: {first['file']} "
              f"(question {first['index']}): {one_line(first['error'])[:300]}; hint: rftt show {out / first['file']}",
              file=sys.stderr)
        return 1
    return 0
