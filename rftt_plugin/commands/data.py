"""``rftt data rl``: build verl RL parquet from the MATH training set (dataset id) or a local file."""

from __future__ import annotations

import json
import sys


def add_arguments(parser) -> None:
    parser.description = (
        "Build data for verl. `rftt data rl` writes train.parquet (and test.parquet) in verl's RL format: "
        "the question alone as the user turn, data_source, reward_model.ground_truth, extra_info.index. "
        "Bad rows are named (file:row, field, reason) and kept in rejected.jsonl."
    )
    sub = parser.add_subparsers(dest="what", required=True, metavar="WHAT")
    rl = sub.add_parser("rl", help="RL parquet (train/test) for `main_ppo +recipe=rftt`")
    rl.add_argument("--source", required=True,
                    help="dataset id (e.g. DigitalLearningGmbH/MATH-lighteval) or a local .jsonl/.json/.parquet file")
    rl.add_argument("--split", default="train", help="split of a dataset id (default: train)")
    rl.add_argument("--subset", default=None, help="dataset config name, if the dataset id needs one")
    rl.add_argument("--test-source", default=None,
                    help="source of test.parquet (dataset id or file); default: --test-size rows held out of --source")
    rl.add_argument("--test-split", default="test")
    rl.add_argument("--test-size", type=int, default=0,
                    help="hold out this many rows of --source as test.parquet (never trained on)")
    rl.add_argument("--limit", type=int, default=None, help="use at most this many training rows")
    rl.add_argument("--data-source", default="rftt_math", help="value of the data_source column (default rftt_math)")
    rl.add_argument("--out", required=True, help="output directory")
    rl.add_argument("--strict", action="store_true", help="fail (exit 1) if any row is rejected")


def run(args) -> int:
    from rftt_plugin.jobs.checks import check_out
    from rftt_plugin.data.rl import BuildReport, build_rows
    from rftt_plugin.data.sources import read_records
    from rftt_plugin.errors import UserError

    for flag, value in (("--limit", args.limit), ("--test-size", args.test_size)):
        if value is not None and value < 0:
            raise UserError(f"{flag} {value}: must be >= 0", "see rftt data rl --help")
    out = check_out(args.out)  # before reading: a bad --out fails at once
    report = BuildReport()
    # A SourceError (missing file, non-UTF-8 byte, bad format) propagates: rftt_plugin.cli prints it
    # as one line naming file:line, exit 2.
    rows = build_rows(read_records(args.source, split=args.split, subset=args.subset), split="train",
                      data_source=args.data_source, report=report)
    rows, test_rows = _test_split(args, rows, report)
    if args.limit is not None:
        rows = rows[: args.limit]
    if not rows:
        _print_rejected(report)
        rejected = f"{len(report.rejected)} rejected, listed above" if report.rejected else "no rows read"
        raise UserError(f"no usable rows in {args.source} ({rejected})",
                        "each row needs a question and a gold answer (answer, or a solution with \\boxed{})")
    _write(out, rows, test_rows, report)
    summary = {"train": len(rows), "test": len(test_rows), "rejected": len(report.rejected), "out": str(out)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {out / 'train.parquet'} ({len(rows)} rows)"
          + (f" and {out / 'test.parquet'} ({len(test_rows)} rows)" if test_rows else "")
          + (f"; {len(report.rejected)} rejected rows in {out / 'rejected.jsonl'}" if report.rejected else ""))
    return 1 if (args.strict and report.rejected) else 0


def _test_split(args, rows: list[dict], report) -> tuple[list[dict], list[dict]]:
    """(train rows, test rows): the test rows come from --test-source, or are the last --test-size rows."""
    from rftt_plugin.data.rl import build_rows
    from rftt_plugin.data.sources import read_records
    from rftt_plugin.errors import UserError

    test_rows: list[dict] = []
    if args.test_source:
        test_rows = build_rows(read_records(args.test_source, split=args.test_split, subset=args.subset),
                               split="test", data_source=args.data_source, report=report)
    elif args.test_size:
        if args.test_size >= len(rows):
            raise UserError(f"--test-size {args.test_size} leaves no training rows ({len(rows)} usable)",
                            "pass a smaller --test-size")
        rows, test_rows = rows[:-args.test_size], rows[-args.test_size:]
        for i, r in enumerate(test_rows):
            r["extra_info"].update(index=i, split="test")
    return rows, test_rows


def _write(out, rows: list[dict], test_rows: list[dict], report) -> None:
    from rftt_plugin.data.rl import write_parquet

    write_parquet(rows, out / "train.parquet")
    if test_rows:
        write_parquet(test_rows, out / "test.parquet")
    if report.rejected:
        with (out / "rejected.jsonl").open("w", encoding="utf-8") as fh:
            for item in report.rejected:
                fh.write(json.dumps(item, ensure_ascii=False) + "\n")
        _print_rejected(report)


def _print_rejected(report, shown: int = 10) -> None:
    for item in report.rejected[:shown]:
        print(f"rejected {item['where']}: field {item['field']!r}: {item['reason']}", file=sys.stderr)
    if len(report.rejected) > shown:
        print(f"... and {len(report.rejected) - shown} more (see rejected.jsonl)", file=sys.stderr)
