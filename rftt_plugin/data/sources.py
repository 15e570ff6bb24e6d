"""Read records from a local file (jsonl / json / parquet) or a Hugging Face dataset id.

Every record comes with its 1-based row number and a source label, so errors can name the exact
bad row (``file.jsonl:17``). Local files are read lazily where the format allows; a dataset id
goes through ``datasets.load_dataset`` (network, or the local HF cache when offline).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")


class SourceError(ValueError):
    """The source itself cannot be read (missing file, unknown format, unreachable dataset id)."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint  # what to do, for the one-line CLI error


@dataclass(frozen=True)
class Record:
    where: str           # "path:row" or "dataset_id[split]:row", for error messages
    row: int             # 1-based
    data: dict[str, Any]


def is_local(source: str) -> bool:
    """A source is a local path unless it can only be a dataset id: ``name`` or ``org/name`` whose
    ``org`` is not a local directory. ``runs/a/b``, ``./x``, ``data/train`` next to a real
    ``data/`` are paths, so a typo gives "no such file" at once instead of a hub lookup.

    >>> [is_local(s) for s in ("DigitalLearningGmbH/MATH-lighteval", "gsm8k", "a/b/c", "./x", "m.jsonl")]
    [False, False, True, True, True]
    """
    if os.path.exists(source) or source.endswith(LOCAL_SUFFIXES) or source.startswith((".", "/", "~")):
        return True
    parts = source.split("/")
    return len(parts) > 2 or (len(parts) == 2 and (not all(parts) or os.path.isdir(parts[0])))


def _not_utf8(path: Path, line: int, exc: UnicodeDecodeError, line_start: int = 0) -> SourceError:
    byte = exc.object[exc.start:exc.start + 1].hex()
    return SourceError(f"{path}:{line}: not UTF-8 (byte 0x{byte} at column {exc.start - line_start + 1})",
                       hint="re-encode the file as UTF-8, e.g. iconv -f latin1 -t utf-8")


def _read_jsonl(path: Path) -> Iterator[Record]:
    # Bytes in, strict UTF-8 per line: a bad byte names its line instead of becoming U+FFFD.
    with path.open("rb") as fh:
        for i, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8-sig" if i == 1 else "utf-8")  # a leading BOM is not data
            except UnicodeDecodeError as exc:
                raise _not_utf8(path, i, exc) from None
            if not line.strip():
                continue
            try:
                data = json.loads(line.rstrip("\r\n"))  # so an error's column stays on this line
            except json.JSONDecodeError as exc:
                yield Record(f"{path}:{i}", i, {"__error__": f"invalid JSON ({exc.msg} at column {exc.colno})"})
                continue
            if not isinstance(data, dict):
                yield Record(f"{path}:{i}", i, {"__error__": f"expected a JSON object, got {type(data).__name__}"})
                continue
            yield Record(f"{path}:{i}", i, data)


def _read_json(path: Path) -> Iterator[Record]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line_start = raw.rfind(b"\n", 0, exc.start) + 1
        raise _not_utf8(path, raw.count(b"\n", 0, exc.start) + 1, exc, line_start) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SourceError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from exc
    if isinstance(data, dict):
        for key in ("data", "rows", "examples"):
            if isinstance(data.get(key), list):
                data = data[key]
                break
    if not isinstance(data, list):
        raise SourceError(f"{path}: expected a JSON list of objects (or {{'data': [...]}})")
    for i, item in enumerate(data, start=1):
        yield Record(f"{path}:{i}", i, item if isinstance(item, dict) else {"__error__": "not a JSON object"})


def _read_parquet(path: Path) -> Iterator[Record]:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except Exception as exc:
        raise SourceError(f"{path}: not a readable parquet file ({exc})") from exc
    row = 0
    for batch in table.iter_batches(batch_size=1024):
        for data in batch.to_pylist():
            row += 1
            yield Record(f"{path}:{row}", row, data)


def _read_hub(dataset_id: str, split: str, subset: str | None) -> Iterator[Record]:
    import datasets

    try:
        ds = datasets.load_dataset(dataset_id, subset, split=split)
    except Exception as exc:
        raise SourceError(f"cannot load dataset {dataset_id!r} (split {split!r}): {exc}. Offline? Pass a local "
                          f"jsonl/parquet file instead.") from exc
    for i, data in enumerate(ds, start=1):
        yield Record(f"{dataset_id}[{split}]:{i}", i, dict(data))


def read_records(source: str, *, split: str = "train", subset: str | None = None) -> Iterator[Record]:
    """Yield the records of ``source`` (a local file or a dataset id)."""
    if is_local(source):
        path = Path(source).expanduser()
        if not path.exists():
            raise SourceError(f"{path}: no such file")
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            return _read_jsonl(path)
        if suffix == ".json":
            return _read_json(path)
        if suffix == ".parquet":
            return _read_parquet(path)
        raise SourceError(f"{path}: unknown format {suffix!r}; use .jsonl, .json or .parquet")
    return _read_hub(source, split, subset)
