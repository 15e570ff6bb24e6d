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

Output: ``OUT/trees/<index>.json`` (render with ``rftt show``), ``OUT/summary.json``,
``OUT/run.json`` (settings + fingerprints of the model files and the question file) and
``OUT/finished.jsonl`` (one line per finished tree). Resumable: rerunning the same command searches
only the questions without a finished tree (an interrupted run loses nothing). ``--out`` must be
new/empty or hold a run with the same fingerprint, so a directory never mixes trees of two runs;
``--overwrite`` discards another run's files. The job itself: :mod:`rftt_plugin.jobs.search`.

Input rows: invalid JSON, a non-UTF-8 byte, or a gold answer that is a dict / bool / null is an
error naming ``file:line`` (exit 2) before any model is loaded; rows without a question are
skipped with a note; ``[4]`` is the answer ``4`` (a longer list is a multi-part answer). A question
longer than the model's context window is an error too. A tree that fails during the search makes
the exit status 1 and is named on stderr.
"""

from __future__ import annotations

import argparse

from rftt_plugin.commands._compat import deprecated_alias
from rftt_plugin.commands._device import add_device_flags
from rftt_plugin.commands._search_flags import add_search_flags, search_values
from rftt_plugin.search.config import SearchConfig


SEARCH_FLAGS = ("token_mode", "iterations", "uct_c", "max_depth", "step_temperature", "step_top_p", "step_max_tokens",
                "direct_answer_max_tokens", "max_response_tokens", "distinct_leaves", "max_iterations",
                "min_tag_prior", "samples_per_tag", "blocked_tags", "cut_reward", "seed")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_argument_group("model and backend")
    src.add_argument("--model", help="checkpoint (hf backend) or tokenizer path (openai backend)")
    src.add_argument("--backend", choices=("hf", "openai", "fake"), default="hf")
    src.add_argument("--base-url", help="OpenAI-compatible server, e.g. http://localhost:8000/v1")
    src.add_argument("--served-model-name", help="model name on the server (default: --model)")
    src.add_argument("--api-key", default=None, help="default: $OPENAI_API_KEY")
    from rftt_plugin.backends.base import TAG_READOUTS as readouts  # one list for the flag and the recipe key
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


def build_job(args: argparse.Namespace):
    """The parsed flags as a :class:`~rftt_plugin.jobs.search.SearchRun` (values only: nothing is read)."""
    from rftt_plugin.errors import UserError
    from rftt_plugin.jobs import ModelSpec
    from rftt_plugin.jobs.search import QuestionSource, SearchRun

    try:
        config = SearchConfig(**search_values(args, SEARCH_FLAGS))
    except ValueError as exc:
        raise UserError(str(exc), "see rftt search --help for the allowed values") from None
    model = ModelSpec(args.backend, args.model, base_url=args.base_url, served_model=args.served_model_name,
                      api_key=args.api_key, device=args.device, dtype=args.dtype, tag_readout=args.logprob_method,
                      max_batch_size=args.max_batch_size, max_concurrency=max(4, 4 * args.concurrency),
                      seed=config.seed)
    source = QuestionSource(args.questions or args.benchmark_file, args.benchmark, args.limit)
    return SearchRun(model, config, source, args.out, overwrite=args.overwrite, concurrency=args.concurrency,
                     reward_rule=None if args.no_grade else args.reward_rule, progress=not args.quiet)


def run(args: argparse.Namespace) -> int:
    from rftt_plugin.jobs import EngineHandle

    job = build_job(args)
    job.check()
    return job.run(EngineHandle(job.model, "check --model, --base-url, --dtype and --device"))
