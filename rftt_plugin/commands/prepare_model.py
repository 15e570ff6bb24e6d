"""``rftt prepare-model``: add the 16 functional tokens to a Hugging Face checkpoint."""

from __future__ import annotations


def add_arguments(parser) -> None:
    from rftt_plugin.prepare import DTYPES, INIT_METHODS

    # The dispatcher uses RawDescriptionHelpFormatter, so the line breaks below are kept.
    parser.description = (
        "Add the 16 functional-token strings (<clarify> ... </output>) to a checkpoint as normal\n"
        "(non-special) added tokens, so decoding with skip_special_tokens keeps them.\n\n"
        "Spare rows of a padded vocabulary (Qwen2.5) are reused; otherwise the embeddings are resized to a\n"
        "multiple of 64. Each new row is the mean of the rows of the tag text's sub-word pieces (--init\n"
        "random for ablations). Writes a safetensors checkpoint, the tokenizer and rftt_tokens.json to --out.\n"
        "An already prepared checkpoint is left as it is. HF_HUB_OFFLINE=1 means local files only."
    )
    parser.add_argument("--model", required=True, help="base checkpoint: local directory or Hugging Face id")
    parser.add_argument("--out", required=True, help="directory to write the prepared checkpoint to")
    parser.add_argument("--init", choices=INIT_METHODS, default="mean",
                        help="new rows: mean of the tag text's pieces (default) or random (ablation)")
    parser.add_argument("--dtype", choices=DTYPES, default="auto",
                        help="dtype to load and save the weights in (default: the checkpoint's own)")
    parser.add_argument("--seed", type=int, default=0, help="seed for --init random (default 0)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the checkpoint files in a non-empty --out")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow custom model code from the checkpoint (transformers' trust_remote_code)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    from rftt_plugin.jobs.checks import check_model, check_out
    from rftt_plugin.errors import UserError
    from rftt_plugin.prepare import PrepareError, prepare_model

    # Before loading anything: a bad --model or an unwritable --out fails in milliseconds.
    check_model(args.model)
    check_out(args.out, create=False)
    try:
        result = prepare_model(args.model, args.out, init=args.init, dtype=args.dtype, overwrite=args.overwrite,
                               seed=args.seed, trust_remote_code=args.trust_remote_code,
                               progress=not args.quiet)
    except PrepareError as exc:
        raise UserError(str(exc)) from None
    print(result.summary())
    return 0
