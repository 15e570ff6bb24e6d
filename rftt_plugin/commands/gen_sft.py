"""``rftt gen-sft``: phase-1 SFT data (prompted tree search + branch merging) as verl SFT parquet."""

from __future__ import annotations

import asyncio
import json
import sys

DESCRIPTION = """\
Phase 1 of RFTT: search solution paths of every question with an instruct model driven by
prompts (clarify / analyze / subquestion / next_step / direct_answer), then merge the best correct
path with the worst wrong path that shares a prefix into one tagged, self-correcting response:
prefix -> wrong tail -> <verify> -> <refine> -> <output>. Questions with only correct paths give a
plain tagged path; questions without a correct path are dropped and counted.

Writes to --out: trees.jsonl and samples.jsonl (append-only journals; a killed run resumes where
it stopped: rerun the same command), train.parquet (verl SFT format, column `messages`) and
report.json. Train on it with:
  torchrun --nproc_per_node=N -m verl.trainer.sft_trainer +recipe=rftt_sft \\
      model.path=<rftt prepare-model output> data.train_files=<out>/train.parquet
"""


def add_arguments(parser) -> None:
    from rftt_plugin.commands._device import add_device_flags
    from rftt_plugin.phase1.prompted_search import PromptedConfig

    d = PromptedConfig()
    parser.description = DESCRIPTION
    g = parser.add_argument_group("model")
    g.add_argument("--backend", choices=("openai", "hf"), required=True,
                   help="openai: an OpenAI-compatible /v1/completions server (vllm serve); hf: transformers in-process")
    g.add_argument("--model", required=True, help="hf: checkpoint dir or hub id; openai: the served model name")
    g.add_argument("--base-url", default=None, help="openai: server URL, e.g. http://localhost:8000/v1")
    g.add_argument("--tokenizer", default=None,
                   help="tokenizer (chat template) to render prompts with; default: --model (openai needs it locally)")
    add_device_flags(g)
    g.add_argument("--prm-url", default=None,
                   help="Math-Shepherd-style PRM service; when given, paths are chosen by mean PRM step score")
    g = parser.add_argument_group("data")
    g.add_argument("--source", required=True, help="dataset id or a local .jsonl/.json/.parquet file")
    g.add_argument("--split", default="train", help="split of a dataset id (default train)")
    g.add_argument("--subset", default=None, help="dataset config name, if the dataset id needs one")
    g.add_argument("--limit", type=int, default=None, help="use the first N usable questions")
    g.add_argument("--out", required=True, help="output directory (created; reused to resume)")
    g.add_argument("--overwrite", action="store_true",
                   help="discard an earlier run in --out made with other settings or model files")
    g.add_argument("--max-length", type=int, default=8192,
                   help="drop samples whose chat-templated conversation is longer (tokens; the SFT recipe's max_length)")
    g = parser.add_argument_group("search")
    g.add_argument("--concurrency", type=int, default=d.concurrency, help=f"questions searched at once (default {d.concurrency})")
    g.add_argument("--iterations", type=int, default=d.iterations, help=f"MCTS iterations per question (default {d.iterations})")
    g.add_argument("--samples", default=None,
                   help="replies per action, e.g. clarify=2,analyze=2,subquestion=2,next_step=2,direct_answer=1 (the default)")
    g.add_argument("--temperature", type=float, default=d.temperature, help=f"default {d.temperature}")
    g.add_argument("--top-p", type=float, default=d.top_p)
    g.add_argument("--max-tokens", type=int, default=None,
                   help="one reply budget for every action (default: 512; sub-question 256; direct answer 4096)")
    g.add_argument("--max-depth", type=int, default=d.max_depth, help=f"depth cap in steps (default {d.max_depth})")
    g.add_argument("--uct-c", type=float, default=d.uct_c, help=f"UCT exploration constant (default {d.uct_c})")
    g.add_argument("--no-root-direct-answer", action="store_true", help="do not ask for a direct answer at the root")
    g.add_argument("--no-root-fork", action="store_true",
                   help="never merge with a wrong path that shares only the question (plain sample instead)")
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--quiet", action="store_true", help="no progress bar")


def _parse_samples(text: str | None) -> dict[str, int] | None:
    if text is None:
        return None
    out = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        if not sep or not value.strip().isdigit():
            raise ValueError(f"--samples: {item!r} is not NAME=COUNT")
        out[name.strip()] = int(value)
    return out


def _build_model(args):
    """(chat model, tokenizer, backend) through the one engine builder; phase 1 talks to the model
    as a plain chat model, so no functional-token layout is needed."""
    from rftt_plugin.backends.engine import make_engine
    from rftt_plugin.commands._device import announce_device
    from rftt_plugin.phase1.chat import BackendChat

    announce_device(args)

    if args.quiet:  # --quiet: no transformers "Loading weights" bar either
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    engine = make_engine(args.backend, args.model, tokenizer=args.tokenizer, token_mode=None, base_url=args.base_url,
                         device=args.device, dtype=args.dtype)
    return BackendChat(engine.backend, engine.tokenizer, engine.eos_ids), engine.tokenizer, engine.backend


def _settings(args) -> dict:
    """The model side of the run fingerprint: names AND file contents (see rftt_plugin.fingerprint).
    The input file is not part of it: questions are keyed by the hash of their text and gold
    answer, so an extended or edited source resumes without mixing (each sample belongs to the
    question text it was made for)."""
    from rftt_plugin.fingerprint import model_fingerprint

    tokenizer = args.tokenizer or args.model
    settings = {"backend": args.backend, "model": args.model, "tokenizer": tokenizer}
    if args.tokenizer or args.backend != "hf":  # hf without --tokenizer: covered by "weights"
        settings["tokenizer_files"] = model_fingerprint(tokenizer)
    if args.backend == "hf":
        settings["weights"] = model_fingerprint(args.model)
    else:
        settings["weights"] = f"served by {args.base_url} (not checked)"
    return settings


def _saved(out) -> int:
    from pathlib import Path

    try:
        return Path(out, "samples.jsonl").read_bytes().count(b"\n")
    except OSError:
        return 0


def run(args) -> int:
    from rftt_plugin.backends.engine import EngineError
    from rftt_plugin.commands._checks import check_backend_paths
    from rftt_plugin.commands._device import resolve_device_flags
    from rftt_plugin.phase1.job import GenSftJob, load_questions
    from rftt_plugin.phase1.stitch import SampleConfig
    from rftt_plugin.errors import UserError
    from rftt_plugin.phase1.prompted_search import PromptedConfig

    # Cheap checks first: numbers, output directory, model paths, input rows -- then the model.
    for flag, value in (("--limit", args.limit), ("--max-length", args.max_length)):
        if value is not None and value < 1:
            raise UserError(f"{flag} {value}: must be >= 1", "see rftt gen-sft --help")
    if args.backend == "openai" and not args.base_url:
        raise UserError("--backend openai needs --base-url", "e.g. --base-url http://localhost:8000/v1")
    check_backend_paths(args)
    resolve_device_flags(args, "gen-sft")
    try:
        knobs = dict(iterations=args.iterations, temperature=args.temperature, top_p=args.top_p,
                     max_depth=args.max_depth, uct_c=args.uct_c, seed=args.seed, concurrency=args.concurrency,
                     root_direct_answer=not args.no_root_direct_answer)
        if (samples := _parse_samples(args.samples)) is not None:
            knobs["samples"] = samples
        if args.max_tokens is not None:
            knobs["max_tokens"] = {k: args.max_tokens for k in PromptedConfig().max_tokens}
        search_cfg = PromptedConfig(**knobs)
        sample_cfg = SampleConfig(allow_root_fork=not args.no_root_fork, max_length=args.max_length,
                                  verify_temperature=args.temperature, seed=args.seed)
    except ValueError as exc:
        raise UserError(str(exc), "see rftt gen-sft --help") from None
    loaded = load_questions(args.source, args.split, args.subset, args.limit)
    for row in loaded.bad_rows[:20]:
        print(f"rftt gen-sft: skipping bad row {row['where']}: field {row['field']!r}: {row['reason']}", file=sys.stderr)
    if len(loaded.bad_rows) > 20:
        print(f"rftt gen-sft: ... and {len(loaded.bad_rows) - 20} more bad rows (listed in report.json)", file=sys.stderr)
    if not loaded.questions:
        raise UserError(f"no usable question in {args.source} ({len(loaded.bad_rows)} bad rows)",
                        "each row needs a question and a gold answer (answer, or a solution with \\boxed{})")
    settings = _settings(args)
    from rftt_plugin.phase1.job import run_dir, run_fingerprint

    # A resume that would mix settings or model files is refused before the model loads.
    run_dir(args.out, run_fingerprint(search_cfg, sample_cfg, bool(args.prm_url), settings), args.overwrite).check()
    try:
        chat, tokenizer, backend = _build_model(args)
    except EngineError as exc:
        raise UserError(str(exc), exc.hint or "check --model / --tokenizer / --base-url") from None
    scorer = None
    if args.prm_url:
        from rftt_plugin.reward.prm import HttpStepScorer

        scorer = HttpStepScorer(args.prm_url)
    job = GenSftJob(args.out, chat, search=search_cfg, sample=sample_cfg, scorer=scorer, tokenizer=tokenizer,
                    settings=settings, progress=not args.quiet, overwrite=args.overwrite)

    async def main() -> dict:
        try:
            return await job.run(loaded, source=args.source)
        finally:
            await backend.aclose()

    try:
        report = asyncio.run(main())
    except KeyboardInterrupt:
        # Every finished question is already in the journals (flushed per question).
        print(f"\nrftt gen-sft: interrupted; {_saved(args.out)} of {len(loaded.questions)} questions are saved in "
              f"{args.out}; rerun the same command to continue", file=sys.stderr)
        return 130
    print(report["summary"])
    print(f"report: {job.out / 'report.json'}")
    print(json.dumps({"samples": report["samples"], "drops": report["drops"], "failed": len(report["failed"])}))
    return 1 if report["failed"] else 0
