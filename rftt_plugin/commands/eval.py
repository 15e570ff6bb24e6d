"""``rftt eval``: chain (greedy pass@1) or tree (test-time search) evaluation, resumable."""

from __future__ import annotations

import shlex
import sys
import textwrap


def _sources(values: list[str] | None) -> dict[str, str]:
    out = {}
    for v in values or []:
        name, sep, src = v.partition("=")
        if not sep or not name.strip() or not src.strip():
            raise ValueError(f"--source {v!r}: expected NAME=FILE_OR_DATASET_ID, e.g. math500=data/math500.jsonl")
        out[name.strip()] = src.strip()
    return out


def _modes(text: str) -> list[str]:
    from rftt_plugin.evaluation.job import MODES

    modes = list(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        import argparse

        raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(MODES)} (comma-separated for several)")
    return modes


def _command_line() -> str | None:
    """The command as typed, for results.md (only when this process is `rftt eval ...`)."""
    if len(sys.argv) > 1 and sys.argv[1] == "eval":
        return "rftt " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    return None


def add_arguments(parser) -> None:
    from rftt_plugin.data.benchmarks import USER_FIELDS_HELP

    parser.description = (
        "Evaluate a model on math benchmarks and write results.json, results.md, records.jsonl,\n"
        "accuracy_vs_rollouts.png (and trees/ in tree mode) to --out.\n\n"
        "chain: greedy decoding, the question alone as the user turn of the chat template (pass@1).\n"
        "sc:    self-consistency: max(--iterations) chains sampled independently, majority answer.\n"
        "tree:  one functional MCTS per question with max(--iterations) iterations; budget k is scored on\n"
        "       the first k leaves (iterations are sequential, so they are a k-iteration search).\n\n"
        "Rerunning with the same --out resumes: finished questions are never redone.\n\n"
        "Data: each benchmark is read from --source NAME=FILE, else from --data-dir (default:\n"
        "$RFTT_DATA_DIR or ./data/eval when present), else from its public dataset id.\n"
        + textwrap.fill(f"Your own benchmark: --source NAME=FILE --benchmarks NAME, for any NAME; FILE has "
                        f"{USER_FIELDS_HELP}.", width=96, break_on_hyphens=False, break_long_words=False)
    )
    _model_flags(parser.add_argument_group("model"))
    _data_flags(parser.add_argument_group("data"))
    _protocol_flags(parser.add_argument_group("protocol"))
    r = parser.add_argument_group("run")
    r.add_argument("--out", required=True, help="output directory (resumable)")
    r.add_argument("--overwrite", action="store_true", help="discard an existing run in --out made with other settings")
    r.add_argument("--concurrency", type=int, default=8, help="questions in flight at once (default 8)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")


def _model_flags(g) -> None:
    from rftt_plugin.commands._device import add_device_flags

    g.add_argument("--model", required=True, help="checkpoint directory or hub id (hf); served model name or path (openai)")
    g.add_argument("--backend", choices=("hf", "openai"), default="hf",
                   help="hf: transformers in this process; openai: an OpenAI-compatible completions server (vllm serve)")
    g.add_argument("--base-url", default=None, help="openai: server URL, e.g. http://localhost:8000/v1")
    g.add_argument("--served-model-name", default=None, help="openai: model name on the server (default: --model)")
    g.add_argument("--tokenizer", default=None, help="tokenizer for the chat template and decoding (default: --model)")
    add_device_flags(g)


def _data_flags(d) -> None:
    from rftt_plugin.data.benchmarks import BENCHMARKS

    d.add_argument("--benchmarks", default=",".join(BENCHMARKS),
                   help=f"comma-separated, from: {', '.join(BENCHMARKS)}, or any NAME given with --source NAME=FILE")
    d.add_argument("--data-dir", default=None, help="directory with local benchmark files (math500.jsonl, ...)")
    d.add_argument("--source", action="append", metavar="NAME=SRC",
                   help="read benchmark NAME from a local file or a dataset id (repeatable); NAME may be one of "
                        "the listed benchmarks (its own field names) or any other name (fields: see above)")
    d.add_argument("--limit", type=int, default=None, help="first N questions of each benchmark")


def _protocol_flags(m) -> None:
    from rftt_plugin.commands._compat import deprecated_alias
    from rftt_plugin.commands._search_flags import add_search_flags
    from rftt_plugin.evaluation.job import EvalConfig

    m.add_argument("--mode", type=_modes, default="chain", metavar="MODE[,MODE...]",
                   help="chain (greedy pass@1), sc (self-consistency: majority over k sampled chains), tree "
                        "(functional MCTS); several, e.g. chain,sc,tree: each into OUT/<mode>/, then OUT/compare.md "
                        "and OUT/accuracy_vs_tokens.png compare them question by question (default chain)")
    m.add_argument("--max-tokens", type=int, default=4096, help="chain: max new tokens (default 4096, the paper's)")
    m.add_argument("--temperature", type=float, default=0.0, help="chain: 0 = greedy (default)")
    m.add_argument("--sc-temperature", type=float, default=0.7, help="sc: sampling temperature (default 0.7)")
    m.add_argument("--sc-top-p", type=float, default=1.0, help="sc: top-p (default 1.0)")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--iterations", dest="rollouts", default="1,2,4,8,16", metavar="K[,K...]",
                   help="tree: MCTS iteration budgets to score, comma-separated; the search runs the largest "
                        "(the rollouts per question; rftt.search.iterations in training) (default 1,2,4,8,16)")
    deprecated_alias(m, "--rollouts", "--iterations", "rollouts", metavar="K[,K...]")
    m.add_argument("--selection", choices=("policy", "majority", "value"), default="policy",
                   help="tree, sc: policy (default: each distinct answering leaf votes with the policy's "
                        "probability of its tag path; sc: plain majority), majority (one vote per leaf; ties: the "
                        "policy's most probable tag path, then summed leaf value), or value (summed leaf value: "
                        "with --search-reward prm, a PRM-weighted vote)")
    m.add_argument("--search-reward", choices=("answered", "none", "prm", "oracle"), default="answered",
                   help="tree: reward the search backs up; answered (gold-free, default), none, prm (a process "
                        "reward model's path score: --prm-url), or oracle (uses the gold answer: an upper bound, "
                        "not a result)")
    m.add_argument("--prm-url", default=None, help="tree, --search-reward prm: a Math-Shepherd-style HTTP step "
                                                   "scorer, e.g. http://127.0.0.1:8008/get_reward")
    m.add_argument("--prm-aggregate", choices=("last", "mean", "min"), default="min",
                   help="tree, --search-reward prm: path score from step scores (default min)")
    add_search_flags(m, EvalConfig.SEARCH_FIELDS, prefix_help="tree: ")


def build_jobs(args) -> list:
    """The parsed flags as one :class:`~rftt_plugin.evaluation.job.EvalRun` per ``--mode`` (values
    only: nothing is read). Several modes: each into OUT/<mode>/, same model, questions and seed."""
    import os

    from rftt_plugin.data.benchmarks import parse_benchmark_list
    from rftt_plugin.evaluation.job import EvalConfig, EvalRun
    from rftt_plugin.evaluation.selection import parse_budgets
    from rftt_plugin.commands._search_flags import search_values

    sources = _sources(args.source)
    benchmarks = parse_benchmark_list(args.benchmarks, user_names=sources)
    many = len(args.mode) > 1
    return [EvalRun(EvalConfig(
        model=args.model, out=os.path.join(args.out, mode) if many else args.out, backend=args.backend,
        base_url=args.base_url, served_model=args.served_model_name, tokenizer=args.tokenizer,
        benchmarks=benchmarks, data_dir=args.data_dir, sources=sources,
        limit=args.limit, mode=mode, rollouts=parse_budgets(args.rollouts), selection=args.selection,
        search_reward=args.search_reward, prm_url=args.prm_url, prm_aggregate=args.prm_aggregate,
        max_tokens=args.max_tokens, temperature=args.temperature,
        sc_temperature=args.sc_temperature, sc_top_p=args.sc_top_p,
        seed=args.seed, concurrency=args.concurrency, device=args.device, dtype=args.dtype,
        **search_values(args, EvalConfig.SEARCH_FIELDS),
        overwrite=args.overwrite, progress=not args.quiet,
        command=_command_line())) for mode in args.mode]


def _shared_engine(jobs: list):
    """One engine for every mode when the model is loaded here (``hf``, ``fake``) and every mode names
    the same one: a 7B checkpoint is then read once, not once per mode. Tree mode also reads the
    functional-token layout, which chain and sc ignore, so the engine is built with it. ``openai`` keeps
    one client per mode (nothing is loaded here, and an HTTP client's connections belong to one event loop)."""
    from dataclasses import replace

    from rftt_plugin.jobs import EngineHandle

    specs = [job.model for job in jobs]
    if len(specs) < 2 or specs[0].backend == "openai" or len({replace(s, token_mode=None) for s in specs}) > 1:
        return None
    return EngineHandle(next((s for s in specs if s.token_mode), specs[0]))


def run(args) -> int:
    from rftt_plugin.data.benchmarks import BenchmarkError
    from rftt_plugin.data.rows import RowError
    from rftt_plugin.evaluation.job import EvalError
    from rftt_plugin.jobs import EngineHandle
    from rftt_plugin.store.run_dir import RunLocked, RunMismatch

    try:
        jobs = build_jobs(args)
        for job in jobs:
            job.check()  # cheap checks of every mode before any data or model is read
        results = []
        shared = _shared_engine(jobs)
        try:
            for i, job in enumerate(jobs):
                if len(jobs) > 1:
                    print(f"== rftt eval --mode {job.cfg.mode} -> {job.cfg.out}", file=sys.stderr)
                if shared is None:
                    results.append(job.run(EngineHandle(job.model)))
                else:
                    results.append(job.run(shared, close=i == len(jobs) - 1))
        finally:
            if shared is not None and shared.built:
                import asyncio

                asyncio.run(shared.aclose())  # after an error; closing twice is harmless
    except (BenchmarkError, RowError, EvalError, RunMismatch, RunLocked):
        raise  # rftt_plugin.cli prints them as one line with a hint, exit 2
    except ValueError as exc:
        from rftt_plugin.errors import UserError

        raise UserError(str(exc), "see rftt eval --help") from None
    except KeyboardInterrupt:
        # Every finished question is already on disk (records.jsonl is flushed per question).
        print(f"\nrftt eval: interrupted; rerun the same command to continue in {args.out}", file=sys.stderr)
        return 130
    return _report(results, args)


def _report(results: list, args) -> int:
    from rftt_plugin.evaluation.report import markdown

    for result in results:
        print(markdown(result.payload))
        print(f"wrote {result.out}/results.json, results.md, records.jsonl, accuracy_vs_rollouts.png"
              + (", trees/" if result.payload["mode"] == "tree" else "")
              + f" ({result.ran} answered now, {result.resumed} resumed, {len(result.failed)} failed, "
                f"{result.wall_s:.1f} s)")
    if len(results) > 1:
        from rftt_plugin.evaluation.compare import COMPARE_PLOT, markdown as compare_markdown, write_comparison

        budgets = results[-1].payload.get("rollouts") or [1]
        comparison = write_comparison(results[0].out.parent, args.mode, budgets, args.selection)
        print(compare_markdown(comparison))
        print(f"wrote {args.out}/compare.json, compare.md, {COMPARE_PLOT}")
    return 1 if any(r.failed for r in results) else 0
