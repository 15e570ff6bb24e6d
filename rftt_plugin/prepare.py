"""Put the 16 functional tokens into a Hugging Face checkpoint (``rftt prepare-model``).

What it does, and why:

* The tag strings (``<clarify>`` ... ``</output>``) become *normal* added tokens
  (``AddedToken(normalized=False, special=False)``). Special tokens would be dropped by
  ``decode(..., skip_special_tokens=True)``, which vLLM and most detokenisers use, so the tags
  would vanish between rollout and reward (LlamaFactory#7253).
* Qwen2.5-style checkpoints pad the embedding matrix beyond the tokenizer (``config.vocab_size >
  len(tokenizer)``); new ids land at ``len(tokenizer)``..., inside the matrix, so the spare rows
  are reused and nothing is resized. Otherwise the matrix is resized to a multiple of 64.
  ``config.vocab_size`` always equals the number of embedding rows afterwards (LlamaFactory#8823).
* Each new input-embedding row (and output-head row when untied) is the mean of the rows of the
  sub-word pieces of the tag text as the ORIGINAL tokenizer splits it in running text, so the
  model starts from what it already reads in ``<clarify>``. ``init="random"`` (ablations) draws
  from N(0, std of the existing rows) with a fixed seed.
* Idempotent: a checkpoint whose tokenizer already has all 16 as single non-special tokens is
  left alone (nothing is written), and so is an ``--out`` that already holds this preparation.

The result directory holds a safetensors checkpoint, the tokenizer (chat template included) and
``rftt_tokens.json`` (the manifest: tag string -> id, mode, source, init, rows reused/resized).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from rftt_plugin import __version__
from rftt_plugin.tag_ids import TagIds, tag_piece_ids
from rftt_plugin.tokens import TAG_STRINGS, TAGS, Step, render

MANIFEST_NAME = "rftt_tokens.json"
INIT_METHODS = ("mean", "random")
DTYPES = ("auto", "float32", "bfloat16", "float16")
PAD_MULTIPLE = 64
# Checkpoint files an --overwrite removes from --out before moving the new ones in, so that a stale
# shard index or vocabulary file cannot shadow the new checkpoint. Other files are left alone.
_STALE_PATTERNS = ("model*.safetensors", "model.safetensors.index.json", "pytorch_model*.bin",
                   "pytorch_model.bin.index.json", "config.json", "generation_config.json",
                   "tokenizer*.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
                   "merges.txt", "tokenizer.model", "chat_template.jinja", "chat_template.json",
                   MANIFEST_NAME)


class PrepareError(RuntimeError):
    """prepare-model refused, with a message that says why and what to do."""


@dataclass(frozen=True)
class TagStatus:
    """How the 16 tag strings stand in a tokenizer before preparation."""

    present: dict[str, int] = field(default_factory=dict)   # ours already: non-special single ids
    missing: list[str] = field(default_factory=list)        # to add
    conflicts: list[str] = field(default_factory=list)      # exist with another meaning: refuse

    @property
    def complete(self) -> bool:
        return not self.missing and not self.conflicts


@dataclass(frozen=True)
class PrepareResult:
    """What :func:`prepare_model` did. ``written`` is False when nothing was (already prepared)."""

    source: str
    out_dir: Path | None
    written: bool
    token_ids: dict[str, int]
    message: str
    init: str | None = None
    resized: bool = False
    rows_before: int | None = None
    rows_after: int | None = None
    tokenizer_len_before: int | None = None
    tokenizer_len_after: int | None = None
    manifest_path: Path | None = None

    def summary(self) -> str:
        """Human-readable report of the ids and where they went."""
        lines = [self.message]
        if self.token_ids:
            ids = sorted(self.token_ids.values())
            contiguous = ids == list(range(ids[0], ids[0] + len(ids)))
            span = f"ids {ids[0]}..{ids[-1]}" if contiguous else f"ids {ids}"
            lines.append(f"functional tokens ({len(ids)}): {span}")
            lines.extend(f"  {s:<17} {i}" for s, i in self.token_ids.items())
        if self.written:
            how = (f"resized embeddings {self.rows_before} -> {self.rows_after} rows" if self.resized
                   else f"reused spare rows of the padded vocabulary ({self.rows_after} rows, no resize)")
            lines.append(f"{how}; init={self.init}")
            lines.append(f"wrote {self.out_dir} (manifest {self.manifest_path})")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Small pure helpers
# --------------------------------------------------------------------------------------------

def rows_needed(rows_before: int, new_ids: Sequence[int], multiple: int = PAD_MULTIPLE) -> int:
    """Embedding rows after adding ``new_ids``: unchanged when they fit (padded vocabulary),
    else the next multiple of ``multiple`` that holds the largest id.

    >>> rows_needed(576, range(465, 481))     # Qwen2.5-style padding: reuse rows, no resize
    576
    >>> rows_needed(465, range(465, 481))     # no spare rows: resize, rounded up to 64
    512
    >>> rows_needed(512, range(500, 516))     # partly fits: must still resize
    576
    """
    top = max(new_ids, default=-1) + 1
    if top <= rows_before:
        return rows_before
    return math.ceil(top / multiple) * multiple


def hub_offline(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether HF_HUB_OFFLINE asks for local files only (the values huggingface_hub accepts).

    >>> hub_offline({"HF_HUB_OFFLINE": "1"}), hub_offline({"HF_HUB_OFFLINE": "0"}), hub_offline({})
    (True, False, False)
    """
    return environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def tag_status(tokenizer: Any) -> TagStatus:
    """Classify the 16 tag strings in ``tokenizer``: ours (non-special single added tokens),
    missing, or conflicting (special tokens, or regular tokens of the base vocabulary that
    carry a trained meaning of their own)."""
    added = {tok.content: (idx, tok) for idx, tok in getattr(tokenizer, "added_tokens_decoder", {}).items()}
    special = set(getattr(tokenizer, "all_special_tokens", ()) or ())
    vocab = tokenizer.get_vocab()
    present: dict[str, int] = {}
    missing: list[str] = []
    conflicts: list[str] = []
    for s in TAG_STRINGS:
        if s in added:
            idx, tok = added[s]
            if getattr(tok, "special", False) or s in special:
                conflicts.append(f"{s} is already a special token (id {idx}); special tokens are dropped "
                                 "by skip_special_tokens, so it cannot serve as a functional token")
            elif list(tokenizer.encode(s, add_special_tokens=False)) != [idx]:
                conflicts.append(f"{s} is an added token (id {idx}) but does not encode to that single id")
            else:
                present[s] = idx
        elif s in vocab:
            conflicts.append(f"{s} is a regular token of the base vocabulary (id {vocab[s]}) with a "
                             "trained meaning of its own; refusing to repurpose it")
        else:
            missing.append(s)
    return TagStatus(present, missing, conflicts)


def piece_ids(tokenizer: Any, strings: Sequence[str] = TAG_STRINGS) -> dict[str, tuple[int, ...]]:
    """Sub-word pieces of each string in running text (see :func:`tag_piece_ids`), unknown-token
    pieces dropped when others remain (an <unk> row says nothing about the tag)."""
    unk = getattr(tokenizer, "unk_token_id", None)
    out = {}
    for s in strings:
        ids = tag_piece_ids(tokenizer, s)
        known = tuple(i for i in ids if i != unk)
        out[s] = known or ids
    return out


def mean_rows(weight: Any, pieces: Mapping[str, Sequence[int]]) -> dict[str, Any]:
    """Mean (computed in float32, cast back) of the rows of each string's pieces."""
    return {s: weight[list(ids)].float().mean(dim=0).to(weight.dtype) for s, ids in pieces.items()}


def random_rows(weight: Any, count: int, reference_rows: int, seed: int) -> Any:
    """``count`` rows from N(0, std of the first ``reference_rows`` rows), seeded."""
    import torch

    std = weight[:reference_rows].float().std().item()
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(count, weight.shape[1], generator=gen) * std).to(weight.dtype)


# --------------------------------------------------------------------------------------------
# Loading, modifying, saving
# --------------------------------------------------------------------------------------------

def _load_tokenizer(source: str | os.PathLike, trust_remote_code: bool) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(source), local_files_only=hub_offline(),
                                         trust_remote_code=trust_remote_code)


def _load_model(source: str, dtype: str, trust_remote_code: bool) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    return AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, local_files_only=hub_offline(),
                                                trust_remote_code=trust_remote_code)


def _config_vocab_size(config: Any) -> int:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return int(text.vocab_size)


def _set_config_vocab_size(config: Any, rows: int) -> None:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    text.vocab_size = rows
    if text is not config and hasattr(config, "vocab_size"):
        config.vocab_size = rows


def _add_tokens(tokenizer: Any, strings: Sequence[str]) -> dict[str, int]:
    from transformers import AddedToken

    # normalized=False: the tag matches the raw text exactly; special=False: decoding with
    # skip_special_tokens=True keeps it.
    tokenizer.add_tokens([AddedToken(s, normalized=False, special=False) for s in strings],
                         special_tokens=False)
    ids = {s: tokenizer.convert_tokens_to_ids(s) for s in strings}
    for s, idx in ids.items():
        if list(tokenizer.encode(s, add_special_tokens=False)) != [idx]:
            raise PrepareError(f"after adding, {s} does not encode to its single id {idx}")
    return ids


def _init_rows(model: Any, new_ids: Mapping[str, int], pieces: Mapping[str, Sequence[int]],
               method: str, seed: int, reference_rows: int) -> None:
    import torch

    emb = model.get_input_embeddings().weight
    head_module = model.get_output_embeddings()
    tied = head_module is None or head_module.weight.data_ptr() == emb.data_ptr()
    targets = [(emb, None)] if tied else [(emb, None), (head_module.weight, getattr(head_module, "bias", None))]
    with torch.no_grad():
        for k, (weight, bias) in enumerate(targets):
            names = list(new_ids)
            if method == "mean":
                rows = mean_rows(weight, {s: pieces[s] for s in names})
                values = torch.stack([rows[s] for s in names])
            else:  # a different seed per matrix, so an untied head is not a copy of the input rows
                values = random_rows(weight, len(names), reference_rows, seed + k)
            index = torch.tensor([new_ids[s] for s in names])
            weight[index] = values
            if bias is not None:
                bias[index] = (torch.stack([bias[list(pieces[s])].float().mean() for s in names]).to(bias.dtype)
                               if method == "mean" else torch.zeros(len(names), dtype=bias.dtype))


def _is_nonempty_dir(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def _check_out_dir(out: Path, source: str, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise PrepareError(f"--out {out} exists and is not a directory")
    # Before the model loads: the save needs a writable directory next to --out (the temporary copy).
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise PrepareError(f"--out {out}: is under {parent}, which is a file, not a directory")
    try:
        import tempfile

        with tempfile.TemporaryFile(dir=parent, prefix=".rftt-write-check-"):
            pass
    except OSError as exc:
        raise PrepareError(f"--out {out}: cannot write in {parent} ({exc.strerror or exc})") from None
    if Path(source).exists() and Path(source).resolve() == out.resolve():
        raise PrepareError(f"--out {out} is the source checkpoint itself; write to a new directory "
                           "(the source's weights are still being read while saving)")
    if _is_nonempty_dir(out) and not overwrite:
        raise PrepareError(f"--out {out} exists and is not empty; pass --overwrite to replace the "
                           "checkpoint files in it, or choose another directory")


def _read_manifest(out: Path) -> dict | None:
    try:
        return json.loads((out / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None


def _install(tmp: Path, out: Path) -> None:
    """Move the freshly saved files from ``tmp`` into ``out`` (removing stale checkpoint files)."""
    if not out.exists():
        os.replace(tmp, out)
        return
    for pattern in _STALE_PATTERNS:
        for stale in out.glob(pattern):
            if stale.is_file():
                stale.unlink()
    for item in tmp.iterdir():
        os.replace(item, out / item.name)
    tmp.rmdir()


def _verify_saved(path: Path, token_ids: Mapping[str, int], rows: int, trust_remote_code: bool) -> None:
    """Reload what was written and check the contract before it replaces anything in --out."""
    from transformers import AutoConfig

    tokenizer = _load_tokenizer(path, trust_remote_code)
    vocab = TagIds.from_tokenizer(tokenizer, "added")
    problems = vocab.check(tokenizer)
    got = {t.open: vocab.open_ids[t][0] for t in TAGS} | {t.close: vocab.close_ids[t][0] for t in TAGS}
    if got != dict(token_ids):
        problems.append(f"reloaded ids {got} differ from the added ids {dict(token_ids)}")
    config_rows = _config_vocab_size(AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code))
    if config_rows != rows:
        problems.append(f"config.vocab_size is {config_rows}, the embedding has {rows} rows")
    if getattr(tokenizer, "chat_template", None):
        reply = render([Step(TAGS[3], "1 + 1 = 2"), Step(TAGS[-1], "2")])
        chat = tokenizer.apply_chat_template([{"role": "user", "content": "1 + 1?"},
                                              {"role": "assistant", "content": reply}], tokenize=False)
        if reply.strip() not in chat:
            problems.append("the chat template no longer renders an assistant turn with functional tokens")
    if problems:
        raise PrepareError("the prepared checkpoint failed its checks:\n  " + "\n  ".join(problems))


class _Progress:
    """One tqdm bar over the stages (the heavy ones: load and save)."""

    STAGES = ("load tokenizer", "load model", "add tokens", "initialise rows", "save", "verify")

    def __init__(self, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=len(self.STAGES), desc="prepare-model", unit="stage", disable=not enabled)

    def stage(self, name: str) -> None:
        self.bar.set_postfix_str(name)

    def done(self) -> None:
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def prepare_model(model: str | os.PathLike, out: str | os.PathLike, init: str = "mean", dtype: str = "auto",
                  overwrite: bool = False, seed: int = 0, trust_remote_code: bool = False,
                  progress: bool = True, log: Callable[[str], None] | None = None) -> PrepareResult:
    """Add the functional tokens to checkpoint ``model`` (local path or hub id) and write ``out``.

    Raises :class:`PrepareError` on refusal: a tag string that already means something else, a
    partly prepared tokenizer, an ``out`` that is non-empty without ``overwrite`` or is the source.
    Returns without writing when ``model`` (or ``out``, from the same source and settings) is
    already prepared.
    """
    if init not in INIT_METHODS:
        raise PrepareError(f"--init must be one of {INIT_METHODS}, got {init!r}")
    if dtype not in DTYPES:
        raise PrepareError(f"--dtype must be one of {DTYPES}, got {dtype!r}")
    log = log or (lambda _msg: None)
    # Absolute: the temporary directory is created next to --out, which needs a real parent.
    source, out = str(model), Path(os.path.abspath(os.path.expanduser(out)))

    bar = _Progress(progress)
    try:
        bar.stage("load tokenizer")
        tokenizer = _load_tokenizer(source, trust_remote_code)
        status = tag_status(tokenizer)
        bar.done()
        if status.conflicts:
            raise PrepareError("cannot add the functional tokens to this tokenizer:\n  "
                               + "\n  ".join(status.conflicts))
        if status.complete:
            return _already_prepared(source, status.present, trust_remote_code)
        if status.present:
            raise PrepareError(
                f"the tokenizer already has {len(status.present)} of the 16 functional tokens "
                f"({', '.join(status.present)}) but lacks {', '.join(status.missing)}; it was modified "
                "by something else. Start from the base model.")
        reused = _matching_output(out, source, init, dtype, seed)
        if reused is not None and not overwrite:
            return reused
        _check_out_dir(out, source, overwrite)

        pieces = piece_ids(tokenizer)  # the ORIGINAL split, before the tags become single tokens
        len_before = len(tokenizer)
        bar.stage("load model")
        lm = _load_model(source, dtype, trust_remote_code)
        bar.done()

        bar.stage("add tokens")
        token_ids = _add_tokens(tokenizer, status.missing)
        rows_before = lm.get_input_embeddings().weight.shape[0]
        rows_after = rows_needed(rows_before, list(token_ids.values()))
        if rows_after != rows_before:
            lm.resize_token_embeddings(rows_after, pad_to_multiple_of=PAD_MULTIPLE, mean_resizing=False)
        rows_after = lm.get_input_embeddings().weight.shape[0]
        _set_config_vocab_size(lm.config, rows_after)  # also fixes a config that disagreed before
        bar.done()

        bar.stage("initialise rows")
        _init_rows(lm, token_ids, pieces, init, seed, reference_rows=min(len_before, rows_before))
        bar.done()

        bar.stage("save")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.parent / f".{out.name}.rftt-tmp-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)  # our own leftover from a crashed run of this process id
        try:
            lm.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            manifest = _manifest(source, token_ids, pieces, init, seed, str(lm.dtype).replace("torch.", ""),
                                 rows_before, rows_after, len_before, len(tokenizer), lm)
            (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
            bar.done()
            bar.stage("verify")
            _verify_saved(tmp, token_ids, rows_after, trust_remote_code)
            _install(tmp, out)
            bar.done()
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
    finally:
        bar.close()

    resized = rows_after != rows_before
    result = PrepareResult(
        source=source, out_dir=out, written=True, token_ids=token_ids, init=init, resized=resized,
        rows_before=rows_before, rows_after=rows_after, tokenizer_len_before=len_before,
        tokenizer_len_after=len(tokenizer), manifest_path=out / MANIFEST_NAME,
        message=f"added 16 functional tokens to {source}")
    log(result.summary())
    return result


def _manifest(source: str, token_ids: Mapping[str, int], pieces: Mapping[str, Sequence[int]], init: str,
              seed: int, dtype: str, rows_before: int, rows_after: int, len_before: int, len_after: int,
              lm: Any) -> dict:
    head = lm.get_output_embeddings()
    tied = head is None or head.weight.data_ptr() == lm.get_input_embeddings().weight.data_ptr()
    return {
        "format": 1,
        "plugin_version": __version__,
        "mode": "added",
        "source_model": source,
        "init": init,
        "seed": seed if init == "random" else None,
        "dtype": dtype,
        "tokens": dict(token_ids),
        "pieces": {s: list(p) for s, p in pieces.items()},
        "rows": {
            "strategy": "resized" if rows_after != rows_before else "reused",
            "rows_before": rows_before,
            "rows_after": rows_after,
            "reused_ids": [i for i in token_ids.values() if i < rows_before],
            "tokenizer_len_before": len_before,
            "tokenizer_len_after": len_after,
        },
        "tied_embeddings": tied,
    }


def _already_prepared(source: str, present: Mapping[str, int], trust_remote_code: bool) -> PrepareResult:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(source, local_files_only=hub_offline(), trust_remote_code=trust_remote_code)
    rows = _config_vocab_size(config)
    beyond = {s: i for s, i in present.items() if i >= rows}
    if beyond:
        raise PrepareError(f"the tokenizer has the functional tokens but config.vocab_size is {rows}, "
                           f"too small for {beyond}; the checkpoint is inconsistent")
    return PrepareResult(source=source, out_dir=None, written=False, token_ids=dict(present),
                         message=f"{source} is already prepared (all 16 functional tokens are single "
                                 "non-special tokens); nothing was written. Use it as it is.")


def _matching_output(out: Path, source: str, init: str, dtype: str, seed: int) -> PrepareResult | None:
    """An --out already prepared from the same source with the same settings: nothing to do."""
    manifest = _read_manifest(out)
    if not manifest or manifest.get("source_model") != source or manifest.get("init") != init:
        return None
    if init == "random" and manifest.get("seed") != seed:
        return None
    if dtype != "auto" and manifest.get("dtype") != dtype:
        return None
    try:
        status = tag_status(_load_tokenizer(out, trust_remote_code=False))
    except Exception:  # an unreadable --out is not "already prepared"; the normal checks report it
        return None
    if not status.complete or status.present != manifest.get("tokens"):
        return None
    return PrepareResult(source=source, out_dir=out, written=False, token_ids=dict(status.present), init=init,
                         manifest_path=out / MANIFEST_NAME,
                         message=f"{out} already holds {source} prepared with init={init}; nothing was "
                                 "written (pass --overwrite to redo it)")
