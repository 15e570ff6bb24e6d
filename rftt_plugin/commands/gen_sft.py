"""``rftt gen-sft``: phase-1 SFT data (prompted tree search + branch merging) as verl SFT parquet."""

from __future__ import annotations

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
    _add_search_flags(parser.add_argument_group("search"), d)


def _add_search_flags(g, d) -> None:
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
    g.add_argument("--pick-path", choices=("best", "opening"), default="best",
                   help="which correct path becomes the sample: best = highest search value (ties: fewer steps; "
                        "the paper's rule); opening = first draw the first step's tag uniformly among those with "
                        "a correct path, then the best path under it (keeps the instruct model's different "
                        "openings in the warm-up data)")
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


def _search_config(args):
    from rftt_plugin.phase1.prompted_search import PromptedConfig

    knobs = dict(iterations=args.iterations, temperature=args.temperature, top_p=args.top_p,
                 max_depth=args.max_depth, uct_c=args.uct_c, seed=args.seed, concurrency=args.concurrency,
                 root_direct_answer=not args.no_root_direct_answer)
    if (samples := _parse_samples(args.samples)) is not None:
        knobs["samples"] = samples
    if args.max_tokens is not None:
        knobs["max_tokens"] = {k: args.max_tokens for k in PromptedConfig().max_tokens}
    return PromptedConfig(**knobs)


def build_job(args):
    """The parsed flags as a :class:`~rftt_plugin.phase1.job.GenSftRun` (values only: nothing is read)."""
    from rftt_plugin.errors import UserError
    from rftt_plugin.jobs import ModelSpec
    from rftt_plugin.phase1.job import GenSftRun
    from rftt_plugin.phase1.stitch import SampleConfig

    try:
        search = _search_config(args)
        sample = SampleConfig(allow_root_fork=not args.no_root_fork, max_length=args.max_length,
                              verify_temperature=args.temperature, seed=args.seed,
                              pick=args.pick_path)
    except ValueError as exc:
        raise UserError(str(exc), "see rftt gen-sft --help") from None
    model = ModelSpec(args.backend, args.model, tokenizer=args.tokenizer, base_url=args.base_url,
                      device=args.device, dtype=args.dtype)
    return GenSftRun(model, args.source, args.out, search, sample, split=args.split, subset=args.subset,
                     limit=args.limit, overwrite=args.overwrite, prm_url=args.prm_url, progress=not args.quiet)


def run(args) -> int:
    from rftt_plugin.jobs import EngineHandle

    job = build_job(args)
    job.check()
    return job.run(EngineHandle(job.model, "check --model / --tokenizer / --base-url"))
