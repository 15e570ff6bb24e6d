"""Content fingerprints of model checkpoints and input files, for resumable outputs.

A resumable run (``rftt eval``, ``rftt gen-sft``, ``rftt search``) stores these next to its
results and refuses to continue when they change, so one table can never be built from two
checkpoints or two versions of a data file.

Why this scheme (and not a plain path, mtime or a full hash):

* **Content, not mtime.** Copying a checkpoint (``cp`` without ``-p``, ``rsync``, a fresh
  download) changes mtimes but not the weights; refusing then would be a false alarm. A file
  overwritten with new weights changes its bytes, which is what decides the answers.
* **Full hash up to 64 MiB per file.** Config, tokenizer, data files and small models are hashed
  completely (sha256 runs at ~1 GB/s: under 0.1 s per file).
* **Sampled hash above that.** Hashing a 15 GB checkpoint would take 10-30 s on every start,
  defeating "errors within a few seconds". Large files are fingerprinted by their size, the first
  and last MiB (safetensors headers with every tensor's offset and dtype sit at the start) and 16
  chunks of 64 KiB spread evenly through the file. Training touches essentially every weight, so
  retrained or merged weights change the sampled chunks; a change confined to bytes that no
  sample covers (with the same file size) would be missed -- the accepted trade-off.

The fingerprint of a checkpoint covers the files that decide its outputs (weights, config,
tokenizer, chat template, generation config); checkpoints named by a hub id use the cached
snapshot when there is one, else the id alone (the hub's revision is then not pinned).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

FULL_HASH_LIMIT = 64 * 1024 * 1024
EDGE = 1024 * 1024
CHUNK = 64 * 1024
CHUNKS = 16
# Files of a checkpoint directory that decide what it generates.
MODEL_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".json", ".model", ".txt", ".jinja", ".tiktoken")


def file_digest(path: str | os.PathLike) -> str:
    """``sha256:<16 hex>`` of a file: full content up to 64 MiB, else size + sampled chunks.

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile(delete=False) as f:
    ...     _ = f.write(b"abc")
    >>> file_digest(f.name) == "sha256:" + hashlib.sha256(b"abc").hexdigest()[:16]
    True
    """
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256()
    with path.open("rb") as fh:
        if size <= FULL_HASH_LIMIT:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
            return "sha256:" + h.hexdigest()[:16]
        h.update(f"sampled:{size}:".encode())
        h.update(fh.read(EDGE))
        for k in range(CHUNKS):
            fh.seek(EDGE + (size - 2 * EDGE - CHUNK) * k // (CHUNKS - 1))
            h.update(fh.read(CHUNK))
        fh.seek(size - EDGE)
        h.update(fh.read(EDGE))
    return "sha256s:" + h.hexdigest()[:16]


def _checkpoint_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.name.endswith(MODEL_SUFFIXES))


def _cached_snapshot(repo_id: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on it
        return None
    try:
        hit = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # noqa: BLE001 - a malformed id is simply "not cached"
        return None
    return Path(hit).parent if isinstance(hit, str) else None


def model_fingerprint(model: str | os.PathLike | None) -> str | None:
    """One string naming the content of checkpoint ``model`` (a directory or a hub id).

    ``sha256:<16 hex> (<n> files)`` over the names and digests of its files; for a hub id that
    is not in the local cache, ``hub:<id> (revision not pinned)``. None for None.
    """
    if model is None:
        return None
    directory = Path(os.fspath(model)).expanduser()
    if not directory.is_dir():
        directory = _cached_snapshot(str(model)) or directory
    if not directory.is_dir():
        return f"hub:{model} (revision not pinned)"
    files = _checkpoint_files(directory)
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.name}\0{file_digest(p)}\n".encode())
    return f"sha256:{h.hexdigest()[:16]} ({len(files)} files)"


def input_fingerprint(source: str | os.PathLike) -> str:
    """Digest of a local input file, or ``dataset:<id>`` for a dataset id (not pinned)."""
    path = Path(os.fspath(source)).expanduser()
    if path.is_file():
        return file_digest(path)
    return f"dataset:{source}"

