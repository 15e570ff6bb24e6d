"""Cheap checks of ``--model`` / ``--tokenizer`` / ``--out`` that run BEFORE any model is loaded.

**Model paths vs hub ids** (the rule every command uses):

1. An existing path is local. A directory must hold ``config.json`` and tokenizer files (a
   checkpoint: every command loads its tokenizer from the same directory) -- or, for a
   tokenizer-only argument, tokenizer files alone; a file, or a directory of data files, is
   refused with a line saying what was found.
2. A value that does not exist is a hub id only when it is written ``org/name`` (one slash, the
   hub's characters, not starting with ``.``, ``/`` or ``~``) AND ``org`` is not an existing local
   directory. Everything else -- ``./ckpt``, ``../x``, ``runs/a/b``, a bare ``ckpt-rftt``, or
   ``ckpt/qwen-rfft`` next to a real ``ckpt/`` -- is a missing local path: one error line (with a
   "did you mean" from the parent directory), never a hub request. Legacy hub names without an
   org (``gpt2``) must be written with it (``openai-community/gpt2``).
3. With ``HF_HUB_OFFLINE=1`` / ``TRANSFORMERS_OFFLINE=1`` a hub id must be in the local cache.

**Output directories**: the nearest existing ancestor must be a directory in which a file can be
created (a probe file is created and removed), so a path under a regular file or on a read-only
mount fails in milliseconds instead of after the model has loaded.
"""

from __future__ import annotations

import difflib
import os
import re
import tempfile
from pathlib import Path

from rftt_plugin.errors import UserError

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
DATA_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "tokenizer.model", "vocab.json")


def _offline() -> bool:
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _did_you_mean(path: Path) -> str:
    parent = path.parent
    try:
        names = [p.name for p in parent.iterdir()] if parent.is_dir() else []
    except OSError:
        names = []
    close = difflib.get_close_matches(path.name, names, n=1, cutoff=0.6)
    if close:
        return f"did you mean {parent / close[0]}?"
    if not parent.exists():
        return f"{parent} does not exist either"
    return "pass an existing checkpoint directory, or a Hugging Face id written org/name"


def looks_like_hub_id(value: str) -> bool:
    """True when a value that is not a local path may be sent to the hub (rule 2 above).

    >>> [looks_like_hub_id(v) for v in ("Qwen/Qwen2.5-7B", "./ckpt", "runs/a/b", "ckpt-rftt", "~/m/x")]
    [True, False, False, False, False]
    """
    return bool(HUB_ID.match(value)) and not Path(value.split("/")[0]).is_dir()


def check_model(value: str | None, flag: str = "--model", *, tokenizer_only: bool = False) -> str | None:
    """Validate a checkpoint (or tokenizer) argument; return it unchanged. See the module rules."""
    if value is None:
        return None
    path = Path(value).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserError(f"{flag} {value}: is a file, not a checkpoint directory",
                            "pass the directory that holds config.json and the weights")
        names = {p.name for p in path.iterdir()}
        has_tokenizer = bool(names & set(TOKENIZER_FILES))
        ok = has_tokenizer if tokenizer_only else "config.json" in names
        if ok and not has_tokenizer:  # a checkpoint's tokenizer is loaded from the same directory
            raise UserError(f"{flag} {value}: the checkpoint has no tokenizer files "
                            f"({' / '.join(TOKENIZER_FILES[:2])})",
                            "save the tokenizer next to the weights (tokenizer.save_pretrained)")
        if not ok:
            data = sorted(n for n in names if n.endswith(DATA_SUFFIXES) and n not in TOKENIZER_FILES)
            what = "tokenizer files" if tokenizer_only else "config.json"
            found = (f"it holds data files ({', '.join(data[:3])}{', ...' if len(data) > 3 else ''})" if data
                     else "it is empty" if not names else f"it holds {', '.join(sorted(names)[:3])}")
            raise UserError(f"{flag} {value}: not a Hugging Face checkpoint directory (no {what}; {found})",
                            "pass the directory written by save_pretrained / `rftt prepare-model`")
        return value
    if not looks_like_hub_id(value):
        cause = f"{flag} {value}: no such directory"
        if HUB_ID.match(value):  # org/name shape, but org is a local directory: a path typo
            cause += f" ({value.split('/')[0]}/ is a local directory, so this is not a hub id)"
        raise UserError(cause, _did_you_mean(path))
    if _offline():
        from rftt_plugin.fingerprint import _cached_snapshot

        if _cached_snapshot(value) is None:
            raise UserError(f"{flag} {value}: no such local directory, and it is not in the Hugging Face cache "
                            "(offline: HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE is set)",
                            "pass a local checkpoint directory, or download the model first")
    return value


def check_out(value: str, flag: str = "--out", *, create: bool = True) -> Path:
    """Make sure ``value`` is (or can become) a writable directory; create it when ``create``."""
    out = Path(value).expanduser()
    probe_dir = out
    while not probe_dir.exists() and probe_dir != probe_dir.parent:
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        where = "is a file" if probe_dir == out else f"is under {probe_dir}, which is a file"
        raise UserError(f"{flag} {value}: {where}, not a directory", "choose a directory path for the output")
    try:
        with tempfile.TemporaryFile(dir=probe_dir, prefix=".rftt-write-check-"):
            pass
    except OSError as exc:
        raise UserError(f"{flag} {value}: cannot write in {probe_dir} ({exc.strerror or exc})",
                        "choose a writable location (not a read-only mount)") from None
    if create:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"{flag} {value}: cannot create the directory ({exc.strerror or exc})",
                            "choose a writable location") from None
    return out
